"""Fixtures of the fault matrix: a private redis-server (optionally with an fsynced AOF),
relay processes with the fault-matrix liveness timings, and a TCP proxy that can cut one
relay's link to Redis.

Everything that blocks (starting processes, the synchronous redis-py client) is run in a
thread by the callers, so the :class:`Proxy` and the STOMP clients, which live in the
test's event loop, keep being served while a relay starts or Redis is being restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from checker import (
    DRAIN_TIMEOUT,
    HISTORY_SIZE,
    LIVENESS_INTERVAL,
    LIVENESS_TTL,
    SWEEP_INTERVAL,
    Cluster,
)
from procs import ROOT, RedisServer, RelayProcess, redis_server_binary, wait_for

_FAULT_PROCS = pytest.StashKey[list[Any]]()
_LOG_TAIL = 40_000


class AofRedisServer(RedisServer):
    """:class:`procs.RedisServer` that can persist: ``aof=True`` starts redis-server with
    ``--appendonly yes --appendfsync always`` (every write fsynced before the reply), so a
    SIGKILL and restart on the same directory loses nothing that was acknowledged."""

    def __init__(self, workdir: Path, port: int | None = None, *, aof: bool = False) -> None:
        super().__init__(workdir, port)
        self.aof = aof

    def start(self) -> AofRedisServer:
        if not self.aof:
            super().start()
            return self
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # loading the AOF may take a moment: PING answers -LOADING meanwhile
        wait_for(self.ping, timeout=20, what=f"redis-server (AOF) on {self.port}")
        return self

    def log(self) -> str:
        path = self.workdir / f"redis-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Proxy:
    """A TCP proxy in front of Redis (after tests/chaos/test_partitions.py): :meth:`cut`
    drops every connection and refuses new ones until :meth:`heal` (a partition of the
    relays that reach Redis through it)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self.is_cut:  # cut while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._transports.update((writer.transport, up_writer.transport))
        for task in (
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.is_cut:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()

    def cut(self) -> None:
        self.is_cut = True
        for transport in list(self._transports):
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()

    def heal(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


@functools.cache
def serve_flags() -> frozenset[str]:
    """The ``--flags`` this checkout's ``stomprelay serve`` accepts."""
    out = subprocess.run(
        [sys.executable, "-m", "stomprelay", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    return frozenset(word.rstrip(",") for word in out.split() if word.startswith("--"))


def relay_args() -> list[str]:
    args = [
        "--liveness-interval",
        str(LIVENESS_INTERVAL),
        "--liveness-ttl",
        str(LIVENESS_TTL),
        "--sweep-interval",
        str(SWEEP_INTERVAL),
        "--drain-timeout",
        str(DRAIN_TIMEOUT),
    ]
    if "--history-size" in serve_flags():
        args += ["--history-size", str(HISTORY_SIZE)]
    return args


@pytest.fixture
async def make_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """``await make_cluster(["relay-a", "relay-b"], aof=False, proxied={"relay-a"})``:
    a private redis-server and relay processes started in parallel (in threads), each
    waited for until /ready says 200. Everything is killed at teardown; a failing test's
    report carries the tail of every relay's log and of Redis's."""
    try:
        redis_server_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    made: list[Cluster] = []
    shown: list[Any] = []
    request.node.stash[_FAULT_PROCS] = shown

    async def factory(
        server_ids: list[str],
        *,
        aof: bool = False,
        proxied: set[str] | frozenset[str] = frozenset(),
    ) -> Cluster:
        server = AofRedisServer(tmp_path, aof=aof)
        await asyncio.to_thread(server.start)
        shown.append(server)
        rdb = redis.Redis(
            host="127.0.0.1", port=server.port, decode_responses=True, socket_timeout=5
        )
        proxy = await Proxy(server.port).start() if proxied else None
        relays = [
            RelayProcess(
                tmp_path,
                sid,
                redis_url=proxy.url if proxy is not None and sid in proxied else server.url,
                extra=relay_args(),
            )
            for sid in server_ids
        ]
        cluster = Cluster(server, rdb, relays, proxy, set(proxied))
        made.append(cluster)
        shown.extend(relays)
        await asyncio.gather(*(asyncio.to_thread(r.start) for r in relays))
        return cluster

    yield factory
    for cluster in made:
        for proc in reversed(cluster.relays):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(proc.stop)
        if cluster.proxy is not None:
            await cluster.proxy.close()
        with contextlib.suppress(Exception):
            cluster.rdb.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(cluster.redis.stop)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for proc in item.stash.get(_FAULT_PROCS, []):
            if isinstance(proc, RelayProcess):
                title, text = f"relay {proc.server_id} log", proc.log()
            else:
                title, text = f"redis {proc.port} log", proc.log()
            if text:
                report.sections.append((title, text[-_LOG_TAIL:]))
    return report
