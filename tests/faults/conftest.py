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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.sentinel
from checker import (
    DRAIN_TIMEOUT,
    HISTORY_SIZE,
    LIVENESS_INTERVAL,
    LIVENESS_TTL,
    SWEEP_INTERVAL,
    Cluster,
)
from clusterhelpers import liveness_args
from procs import Proxy, RedisServer, RelayProcess, redis_server_binary
from topology import ClusterTopology, SentinelTopology, require_redis7

_FAULT_PROCS = pytest.StashKey[list[Any]]()
_LOG_TAIL = 40_000


def relay_args() -> list[str]:
    return [
        *liveness_args(LIVENESS_INTERVAL, LIVENESS_TTL, SWEEP_INTERVAL, DRAIN_TIMEOUT),
        "--history-size",
        str(HISTORY_SIZE),
    ]


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
        topology: str = "single",
        extra: list[str] | None = None,
        replicas: int = 1,
    ) -> Cluster:
        """``topology``: one redis-server ("single"), a 3-master Redis Cluster with a
        replica each ("cluster"), or a master, a replica and three sentinels ("sentinel")."""
        mode_args: list[str] = []
        server: Any
        rdb: Any
        if topology == "single":
            server = RedisServer(tmp_path, aof=aof)
            await asyncio.to_thread(server.start)
            rdb = redis.Redis(
                host="127.0.0.1", port=server.port, decode_responses=True, socket_timeout=5
            )
            url = server.url
        elif topology == "cluster":
            require_redis7()
            server = ClusterTopology(tmp_path / "cluster", masters=3, replicas=replicas)
            await asyncio.to_thread(server.start)
            rdb = await asyncio.to_thread(server.client)
            url = server.seeds
            mode_args = ["--redis-mode", "cluster"]
        else:
            server = SentinelTopology(tmp_path / "sentinel", replicas=replicas, sentinels=3)
            await asyncio.to_thread(server.start)
            rdb = redis.sentinel.Sentinel(
                [("127.0.0.1", n.port) for n in server.sentinels], socket_timeout=5
            ).master_for(server.master_name, decode_responses=True, socket_timeout=5)
            url = "redis://"
            mode_args = [
                "--redis-mode",
                "sentinel",
                "--redis-sentinel",
                server.sentinel_arg,
                "--redis-master-name",
                server.master_name,
            ]
        shown.append(server)
        proxy = await Proxy(server.port).start() if proxied else None
        relays = [
            RelayProcess(
                tmp_path,
                sid,
                redis_url=proxy.url if proxy is not None and sid in proxied else url,
                extra=[*relay_args(), *mode_args, *(extra or [])],
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
            elif isinstance(proc, (ClusterTopology, SentinelTopology)):
                nodes = (
                    proc.nodes
                    if isinstance(proc, ClusterTopology)
                    else [*proc.servers, *proc.sentinels]
                )
                parts = [f"--- {n.port}\n{n.log()[-4000:]}" for n in nodes]
                title, text = "redis nodes' logs", "\n".join(parts)
            else:
                title, text = f"redis {proc.port} log", proc.log()
            if text:
                report.sections.append((title, text[-_LOG_TAIL:]))
    return report
