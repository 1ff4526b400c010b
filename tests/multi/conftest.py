"""Fixtures of the multi-process cluster tests: a private redis-server, relay processes
with scaled-down liveness timings, and client factories that clean up after themselves.

The timings are in :mod:`clusterhelpers` (``RELAY_ARGS``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jsclient
import pytest
import redis
from clusterhelpers import RELAY_ARGS, PyStompClient
from procs import RedisServer, RelayProcess, redis_server_binary
from stompclient import StompClient

_MULTI_PROCS = pytest.StashKey[list[RelayProcess]]()
_MULTI_REDIS = pytest.StashKey[RedisServer]()
_LOG_TAIL = 30_000


@pytest.fixture
def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private redis-server on a free port (the test may stop and restart it)."""
    try:
        redis_server_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    server = RedisServer(tmp_path).start()
    request.node.stash[_MULTI_REDIS] = server
    yield server
    server.stop()


@pytest.fixture
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain (synchronous) redis-py client of that server, strings decoded."""
    client = redis.Redis(
        host="127.0.0.1", port=redis_server.port, decode_responses=True, socket_timeout=5
    )
    yield client
    client.close()


MakeRelays = Callable[..., RelayProcess]


@pytest.fixture
def start_relay(
    tmp_path: Path, redis_server: RedisServer, request: pytest.FixtureRequest
) -> Iterator[MakeRelays]:
    """``start_relay("A", extra=[...])``: a ``stomprelay serve`` process on the test's
    redis-server with the scaled-down liveness timings; waits until /ready says 200.

    Every relay is killed at teardown; a failing test's report shows each relay's log.
    """
    started: list[RelayProcess] = []
    request.node.stash[_MULTI_PROCS] = started

    def factory(server_id: str, *, extra: list[str] | None = None, **kwargs: Any) -> RelayProcess:
        proc = RelayProcess(
            tmp_path,
            server_id,
            redis_url=redis_server.url,
            extra=[*RELAY_ARGS, *(extra or [])],
            **kwargs,
        )
        started.append(proc)
        return proc.start()

    yield factory
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
async def stomp_clients() -> AsyncIterator[Callable[..., Awaitable[StompClient]]]:
    """``await stomp_clients(relay, name=...)``: a connected :class:`StompClient`
    (heart-beat 0,0) on ``relay``; all closed at teardown."""
    clients: list[StompClient] = []

    async def factory(relay: RelayProcess, **kwargs: Any) -> StompClient:
        client = await StompClient.connect(relay.ws_url, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def pystomp_clients() -> AsyncIterator[Callable[..., Awaitable[PyStompClient]]]:
    """``await pystomp_clients(relay)``: a connected stomp.py WebSocket client
    (``login=``: its CONNECT login)."""
    clients: list[PyStompClient] = []

    async def factory(
        relay: RelayProcess, name: str = "stomp.py", login: str | None = None
    ) -> PyStompClient:
        client = PyStompClient(relay.port, name, login)
        clients.append(client)
        await client.connect()
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture(scope="session")
def _multi_node_modules() -> None:
    if not jsclient.node_available():
        pytest.skip(f"node >= {jsclient.MIN_NODE_MAJOR} is not on PATH")
    jsclient.ensure_node_modules()


@pytest.fixture
async def stompjs_clients(
    _multi_node_modules: None,
) -> AsyncIterator[Callable[[], Awaitable[jsclient.StompJsClient]]]:
    """``await stompjs_clients()``: a started (not yet connected) @stomp/stompjs driver."""
    clients: list[jsclient.StompJsClient] = []

    async def factory() -> jsclient.StompJsClient:
        client = await jsclient.StompJsClient.start()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for proc in item.stash.get(_MULTI_PROCS, []):
            text = proc.log()
            if text:
                report.sections.append((f"relay {proc.server_id} log", text[-_LOG_TAIL:]))
    return report
