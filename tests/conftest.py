"""Fixtures shared by every test directory: relays (in-process and as processes) and stompjs.

``tests/`` is on ``sys.path`` (pytest's default rootdir-less import mode puts a conftest's
directory there), so test modules import the helpers as ``procs`` and ``jsclient``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import jsclient
import pytest
from procs import RelayProcess
from stompclient import StompClient

from stomprelay.bounded import bounded
from stomprelay.cluster.connect import RedisTarget
from stomprelay.cluster.redis_bus import RedisBus
from stomprelay.factory import build_backends, build_relay
from stomprelay.settings import Settings
from stomprelay.transport import RelayServer

#: Per test: (title, read log) pairs whose text goes into the report when the test fails.
_FAILURE_LOGS = pytest.StashKey[list[tuple[str, Callable[[], str]]]]()
_LOG_TAIL = 20_000
#: Seconds beyond its drain time that an in-process relay's stop may take at teardown.
STOP_SLACK = 15.0


def _on_failure_show(request: pytest.FixtureRequest, title: str, read: Callable[[], str]) -> None:
    request.node.stash.setdefault(_FAILURE_LOGS, []).append((title, read))


class MakeRelay(Protocol):
    def __call__(self, *, server_id: str = ..., **settings: Any) -> Awaitable[RelayServer]: ...


@pytest.fixture
async def make_relay() -> AsyncIterator[MakeRelay]:
    """Start in-process relays in the test's event loop: ``await make_relay(**settings)``.

    Keyword arguments are :class:`Settings` fields (``connect_timeout=0.5``,
    ``limits=Limits(...)``, ...), plus ``server_id``, the relay's ``auth``, ``acl``,
    ``dev_tokens`` and static ``users``, and the HTTP API's ``admin_token`` and
    ``api_key``. Each relay listens on free ports for HTTP/WebSocket (``.port``) and plain STOMP/TCP
    (``.stomp_port``) and is stopped after the test.
    """
    servers: list[RelayServer] = []

    async def factory(
        *,
        server_id: str = "test-relay",
        auth: Any = None,
        acl: Any = None,
        dev_tokens: bool = False,
        admin_token: str | None = None,
        api_key: str | None = None,
        users: Any = None,
        **settings: Any,
    ) -> RelayServer:
        relay = build_relay(
            Settings(**settings),
            server_id=server_id,
            auth=auth,
            acl=acl,
            dev_tokens=dev_tokens,
            users=users,
        )
        server = RelayServer(
            relay,
            host="127.0.0.1",
            port=0,
            stomp_port=0,
            admin_token=admin_token,
            api_key=api_key,
        )
        await server.start()
        servers.append(server)
        return server

    yield factory
    await stop_all(servers)


async def stop_all(servers: list[RelayServer], *, errors_too: bool = False) -> None:
    """Stop relays, the last started first, each within its drain time plus STOP_SLACK
    (a relay's stop is bounded: this bounds the fixture whatever happens). A stop that
    does not finish fails the test, after the others had their turn; ``errors_too``
    ignores a stop that raised."""
    stuck = []
    for server in reversed(servers):
        within = server.relay.settings.drain_timeout + STOP_SLACK
        try:
            if not await bounded(f"relay {server.relay.server_id} stop", server.stop(), within):
                stuck.append(server.relay.server_id)
        except Exception:
            if not errors_too:
                raise
    if stuck:
        pytest.fail(f"relays {stuck} did not stop within their drain time + {STOP_SLACK:g} s")


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[StompClient]]]:
    """``await clients(server, login=..., name=...)``: a connected :class:`StompClient`
    on an in-process relay (its ``/ws``); all closed after the test."""
    made: list[StompClient] = []

    async def factory(server: RelayServer, **kwargs: Any) -> StompClient:
        client = await StompClient.connect(f"ws://127.0.0.1:{server.port}/ws", **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


@pytest.fixture
async def relay(make_relay: MakeRelay) -> RelayServer:
    """One in-process relay with default settings."""
    return await make_relay()


@pytest.fixture
def relay_proc(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RelayProcess]]:
    """Start ``python -m stomprelay serve`` processes: ``relay_proc("r1", extra=[...])``.

    Arguments go to :class:`procs.RelayProcess` (``cls=`` picks a subclass; ``start=False``
    returns it unstarted). Every process is killed at teardown; a failing test's report
    carries the tail of each process's log.
    """
    started: list[RelayProcess] = []

    def factory(
        server_id: str = "relay-1",
        *,
        cls: type[RelayProcess] = RelayProcess,
        start: bool = True,
        **kwargs: Any,
    ) -> RelayProcess:
        proc = cls(tmp_path, server_id, **kwargs)
        started.append(proc)
        _on_failure_show(request, f"relay {server_id} log", proc.log)
        return proc.start() if start else proc

    yield factory
    for proc in reversed(started):
        proc.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for title, read in item.stash.get(_FAILURE_LOGS, []):
            text = read()
            if text:
                report.sections.append((title, text[-_LOG_TAIL:]))
    return report


# -- stompjs (tests marked `node`) ---------------------------------------------------------


@pytest.fixture(scope="session")
def node_modules() -> None:
    """tests/js dependencies installed (``npm ci`` on first use); skip without node."""
    if not jsclient.node_available():
        pytest.skip(f"node >= {jsclient.MIN_NODE_MAJOR} is not on PATH")
    jsclient.ensure_node_modules()


@pytest.fixture(autouse=True)
def _node_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("node") is not None:
        request.getfixturevalue("node_modules")


@pytest.fixture
async def stompjs(
    node_modules: None, request: pytest.FixtureRequest
) -> AsyncIterator[jsclient.StompJsClient]:
    """A started @stomp/stompjs driver (not connected yet); closed after the test.

    A failing test's report shows the driver's events and stderr.
    """
    client = await jsclient.StompJsClient.start()
    _on_failure_show(request, "stompjs events", lambda: "\n".join(map(str, client.history)))
    _on_failure_show(request, "stompjs driver stderr", lambda: client.stderr_tail)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def inproc() -> AsyncIterator[Callable[..., Awaitable[RelayServer]]]:
    """In-process relays on Redis, in the test's event loop (so a test can reach inside):
    ``await inproc(url, server_id, bus=..., **settings)``."""
    servers: list[RelayServer] = []

    async def factory(
        url: str,
        server_id: str,
        *,
        bus: RedisBus | None = None,
        **settings: Any,
    ) -> RelayServer:
        config = Settings(**settings)
        # the relays' own backends (their stall, fence and lock), a test's bus if it has one
        backends = build_backends(config, RedisTarget.of(url))
        if bus is not None:
            backends = dataclasses.replace(backends, bus=bus)
        relay = build_relay(config, server_id=server_id, backends=backends)
        server = RelayServer(relay, host="127.0.0.1", port=0)
        await server.start()
        servers.append(server)
        return server

    yield factory
    await stop_all(servers, errors_too=True)
