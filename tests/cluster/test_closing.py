"""Closing a bus or a registry is bounded, whatever its tasks and Redis do.

A pub/sub reader can run on after its cancellation: on Python 3.11, redis-py sends every
command through ``asyncio.wait_for``, which drops a cancellation that arrives just after the
command went out (CPython gh-86296), so a reader cancelled while its PING is sent carries on.
``ShardedBus.close`` used to await such a task forever (a test's teardown hung until the CI
run was killed). The readers here are stand-ins that swallow their cancellation once (what
wait_for does) or every time (anything worse), deterministically; a paused (SIGSTOPped)
Redis is the other way a close can be held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import RedisServer, free_port, redis_server_binary
from topology import ClusterTopology, require_redis7

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.redis_bus import RedisBus
from stomprelay.cluster.shard_link import Link
from stomprelay.cluster.sharded import ShardedBus

TIMING: dict[str, float] = {"reconnect_interval": 0.1, "ping_interval": 0.2, "dead_after": 1.0}
#: The bound the buses are given here, and how much later than it a close may return on a
#: busy machine.
BOUND = 1.0
SLACK = 1.5


class StubbornReader:
    """Stands in for a bus's reader loop (``Link._session``, ``RedisBus._session``): it
    reports its first attempt, then waits until released, swallowing the first ``times``
    cancellations it gets."""

    def __init__(self, times: float) -> None:
        self.times = times
        self.swallowed = 0
        self.release = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []

    async def run(self, attempted: asyncio.Event) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        attempted.set()
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                if self.swallowed >= self.times:
                    raise
                self.swallowed += 1

    async def finish(self) -> None:
        """Let every reader go (a test that failed leaves none running)."""
        self.release.set()
        await asyncio.wait(self.tasks, timeout=5)

    @property
    def running(self) -> list[asyncio.Task[Any]]:
        return [task for task in self.tasks if not task.done()]


async def start_sharded(monkeypatch: pytest.MonkeyPatch, reader: StubbornReader) -> ShardedBus:
    async def session(link: Link) -> None:
        await reader.run(link.attempted)

    monkeypatch.setattr(Link, "_session", session)
    bus = ShardedBus(f"redis://127.0.0.1:{free_port()}", **TIMING)
    await bus.start(lambda channel, envelope: None)
    return bus


async def start_redis_bus(monkeypatch: pytest.MonkeyPatch, reader: StubbornReader) -> RedisBus:
    async def session(bus: RedisBus) -> None:
        await reader.run(bus._first_attempt)

    monkeypatch.setattr(RedisBus, "_session", session)
    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", **TIMING)
    await bus.start(lambda channel, envelope: None)
    return bus


StartBus = Callable[[pytest.MonkeyPatch, StubbornReader], Awaitable[ShardedBus | RedisBus]]


async def close_within(close: Awaitable[None], limit: float) -> float:
    """Run ``close``; fail unless it returns within ``limit`` s; the seconds it took."""
    began = time.monotonic()
    closing = asyncio.ensure_future(close)
    done, _ = await asyncio.wait({closing}, timeout=limit)
    if not done:
        # leave no close running behind the test: give it its tasks back
        closing.cancel()
        raise AssertionError(f"close did not return within {limit:g} s")
    closing.result()
    return time.monotonic() - began


@pytest.mark.parametrize("start", [start_sharded, start_redis_bus], ids=["sharded", "redis"])
async def test_close_ends_a_reader_that_swallowed_its_cancellation(
    monkeypatch: pytest.MonkeyPatch, start: StartBus
) -> None:
    reader = StubbornReader(times=1)  # what asyncio.wait_for does on Python 3.11
    try:
        bus = await start(monkeypatch, reader)
        bus.close_timeout = BOUND
        await close_within(bus.close(), BOUND + SLACK)
        assert reader.swallowed == 1
        assert not reader.running, "the reader runs on after close"
    finally:
        await reader.finish()


@pytest.mark.parametrize("start", [start_sharded, start_redis_bus], ids=["sharded", "redis"])
async def test_close_leaves_behind_a_reader_that_never_stops(
    monkeypatch: pytest.MonkeyPatch, start: StartBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stomprelay")
    reader = StubbornReader(times=math.inf)
    try:
        bus = await start(monkeypatch, reader)
        bus.close_timeout = BOUND
        await close_within(bus.close(), BOUND + SLACK)
        assert reader.running, "the stand-in stopped after all"
        assert "left behind at" in caplog.text
        assert "StubbornReader.run" in caplog.text, "the log does not say where it is stuck"
    finally:
        await reader.finish()


async def test_unsubscribe_closes_an_emptied_link_whose_reader_swallowed_its_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last channel of a node gone, its link is closed inside unsubscribe (and inside
    the repair task, after a migration or a failover): a stuck close there held the
    unsubscribe, or stalled every repair of the bus, for good."""
    reader = StubbornReader(times=1)
    try:
        bus = await start_sharded(monkeypatch, reader)
        bus.close_timeout = BOUND
        # the slot map says where the channel goes, with no cluster to ask
        monkeypatch.setattr(ShardedBus, "_owner", lambda self, channel: "127.0.0.1:1")
        channel = "stomp:broadcast:room:{stuck}"
        await bus.subscribe(channel)  # degraded: returns at once, its link started
        await asyncio.sleep(0)
        assert len(reader.tasks) == 2, "no link for the channel"
        link_task = reader.tasks[1]
        await close_within(bus.unsubscribe(channel), BOUND + SLACK)
        assert link_task.done(), "the emptied link's reader runs on"
        await close_within(bus.close(), BOUND + SLACK)
    finally:
        await reader.finish()


# -- a paused Redis -------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    try:
        redis_server_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterTopology]:
    require_redis7()
    with ClusterTopology(tmp_path / "cluster", masters=3, replicas=0) as topo:
        yield topo


@contextlib.contextmanager
def paused(server: Any) -> Iterator[None]:
    server.pause()
    try:
        yield
    finally:
        server.resume()


@pytest.mark.redis
async def test_redis_bus_and_registry_close_with_redis_paused(redis_server: RedisServer) -> None:
    bus = RedisBus(redis_server.url, **TIMING)
    registry = RedisRegistry(redis_server.url, timeout=1.0)
    got: list[str] = []
    await bus.start(lambda channel, envelope: got.append(envelope.id))
    await bus.subscribe("stomp:session:connect")
    await bus.publish("stomp:session:connect", Envelope("e1", "o", "/d", (), b"", 0))
    await registry.ping()
    bus.close_timeout = registry.close_timeout = BOUND
    with paused(redis_server):
        pending = asyncio.ensure_future(registry.ping())
        await asyncio.sleep(0.1)  # a command on its way to a Redis that answers nothing
        await close_within(bus.close(), BOUND + SLACK)
        await close_within(registry.close(), BOUND + SLACK)
        pending.cancel()
        await asyncio.wait({pending}, timeout=5)


@pytest.mark.redis
async def test_sharded_bus_closes_with_a_master_paused(cluster: ClusterTopology) -> None:
    bus = ShardedBus(cluster.seeds, **TIMING)
    await bus.start(lambda channel, envelope: None)
    rooms = [f"stomp:broadcast:room:{{paused-{i}}}" for i in range(9)]
    for channel in rooms:
        await bus.subscribe(channel)
    assert bus.available
    victim = cluster.node_for_key(rooms[0])
    bus.close_timeout = BOUND
    with paused(victim):
        # a publish on its way to the paused master, and the bus noticing the outage
        pending = asyncio.ensure_future(
            bus.publish(rooms[0], Envelope("e1", "o", "/d", (), b"", 0))
        )
        await asyncio.sleep(TIMING["dead_after"] + 0.5)
        await close_within(bus.close(), BOUND + SLACK)
        pending.cancel()
        await asyncio.wait({pending}, timeout=5)
