"""Log reads and appends that fail at the worst moment, on one in-process relay.

The backend is the memory one behind a switch (:class:`Flaky`) that makes log
reads, appends and the probe fail, the way a Redis timeout does, so each seam of
the feed and the replay is driven deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from clusterhelpers import eventually
from stompclient import StompClient

from stomprelay.cluster.backends import Backends
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, LogSlice, MemoryLog
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryBus, MemoryHub, MemoryRegistry
from stomprelay.errors import BackendUnavailable
from stomprelay.factory import build_relay
from stomprelay.settings import Settings
from stomprelay.transport import RelayServer

LOBBY = "/topic/room/lobby"


class Flaky:
    """A memory log whose reads fail ``fail_reads`` times and whose appends and
    probes fail while ``down`` is set."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self.fail_reads = 0
        #: Fail the read with this number (counted from 1), once.
        self.fail_read_number = 0
        self.reads = 0
        self.down = False

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        if self.down:
            raise BackendUnavailable("redis: simulated outage")
        return await self.log.append(log_id, channel, envelope, now)

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        if self.down:
            raise BackendUnavailable("redis: simulated outage")
        return await self.log.append_many(items, now)

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        self.reads += 1
        if self.reads == self.fail_read_number:
            raise BackendUnavailable("redis: simulated read timeout")
        if self.fail_reads > 0 or self.down:
            self.fail_reads = max(0, self.fail_reads - 1)
            raise BackendUnavailable("redis: simulated read timeout")
        return await self.log.read(log_id, after, limit, tail)


class FlakyRegistry(MemoryRegistry):
    flaky: Flaky

    async def ping(self) -> None:
        if self.flaky.down:
            raise BackendUnavailable("redis: simulated outage")


@pytest.fixture
async def flaky_relay() -> AsyncIterator[tuple[RelayServer, Flaky]]:
    hub = MemoryHub(policy=HistoryPolicy(size=1000))
    registry = FlakyRegistry(hub)
    flaky = registry.flaky = Flaky(hub.log)
    relay = build_relay(
        Settings(probe_interval=0.05, history_size=1000, frame_rate=0),
        server_id="flaky",
        backends=Backends(MemoryBus(hub), registry, flaky, Keys()),
    )
    server = RelayServer(relay, host="127.0.0.1", port=0)
    await server.start()
    yield server, flaky
    await server.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Any]:
    made: list[StompClient] = []

    async def factory(server: RelayServer, name: str) -> StompClient:
        client = await StompClient.connect(f"ws://127.0.0.1:{server.port}/ws", name=name)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


def offsets(client: StompClient, sub: str) -> list[int]:
    return [int(f.get("x-offset") or 0) for f in client.received(sub) if f.get("x-offset")]


async def test_a_replay_that_cannot_read_on_says_what_it_misses(flaky_relay, connect) -> None:
    server, flaky = flaky_relay
    pub = await connect(server, "pub")
    watcher = await connect(server, "watcher")
    await watcher.subscribe(LOBBY, "w")
    for i in range(700):
        await pub.send(LOBBY, f"m{i}".encode(), receipt=i % 100 == 99)
    await eventually(lambda: len(watcher.received("w")) == 700, what="700 delivered")
    epoch = watcher.received("w")[0].get("x-epoch") or ""
    resumer = await connect(server, "resumer")
    flaky.fail_read_number = flaky.reads + 2  # the first page reads, the second fails
    receipt = await resumer.subscribe_receipt(
        LOBBY, "r", [("x-since-offset", "0"), ("x-since-epoch", epoch)]
    )
    assert receipt.get("x-recovered") == "true"
    (notice,) = await resumer.collect(1, "r", lambda f: f.get("x-gap") is not None)
    assert notice.get("x-gap") == "501-700"
    assert offsets(resumer, "r") == list(range(1, 501))
    await eventually(lambda: not server.relay.outage.down, what="recovered")
    await pub.send(LOBBY, b"live", receipt=True)
    (live,) = await resumer.collect(1, "r", lambda f: f.body == b"live")
    assert live.get("x-offset") == "701"


async def test_a_subscriber_that_came_during_an_outage_gets_the_journaled_message(
    flaky_relay, connect
) -> None:
    server, flaky = flaky_relay
    early, pub = await connect(server, "early"), await connect(server, "pub")
    await early.subscribe(LOBBY, "e")
    await pub.send(LOBBY, b"first", receipt=True)
    flaky.down = True
    await pub.send(LOBBY, b"while down", receipt=True)
    (degraded,) = await early.collect(
        1, "e", lambda f: f.body == b"while down"
    )  # delivered at once
    assert degraded.get("x-degraded") == "true"
    late = await connect(server, "late")
    await late.subscribe(LOBBY, "l")
    flaky.down = False
    (got,) = await late.collect(1, "l", lambda f: f.body == b"while down", timeout=5)
    assert got.get("x-offset") == "2"
    assert got.get("message-id") == degraded.get("message-id")
    await pub.send(LOBBY, b"after", receipt=True)
    await early.collect(1, "e", lambda f: f.body == b"after")
    assert [f.body for f in early.received("e")] == [b"first", b"while down", b"after"]


async def test_a_failed_head_read_loses_nothing_published_after_the_subscribe(
    flaky_relay, connect
) -> None:
    server, flaky = flaky_relay
    pub = await connect(server, "pub")
    await pub.send(LOBBY, b"before", receipt=True)
    sub = await connect(server, "sub")
    flaky.fail_reads = 1
    receipt = await sub.subscribe_receipt(LOBBY, "s")
    assert receipt.get("x-offset") is None  # the head could not be read
    # a failed read counts Redis as down until the probe has resynced: what is sent
    # meanwhile is delivered at once (degraded), and not again once it has its offset
    for body in (b"one", b"two"):
        await pub.send(LOBBY, body, receipt=True)
    await eventually(lambda: not server.relay.outage.down, what="recovered")
    await pub.send(LOBBY, b"three", receipt=True)
    await sub.collect(3, "s", timeout=5)
    await sub.expect_no_message("s", within=0.3)
    got = sub.received("s")
    assert [f.body for f in got] == [b"one", b"two", b"three"]
    assert got[-1].get("x-offset") == "4"


async def test_a_failed_gap_read_is_retried(flaky_relay, connect) -> None:
    server, flaky = flaky_relay
    sub = await connect(server, "sub")
    await sub.subscribe(LOBBY, "s")
    hub_log = flaky.log
    base = Envelope("x1", "elsewhere", LOBBY, (), b"one", 0)
    # offset 1 and 3 reach this relay, offset 2 only the log (a lost bus message)
    hub_log.append_now("room:lobby", "stomp:broadcast:room:{lobby}", base)
    flaky.fail_reads = 1
    log_ = hub_log.logs["room:lobby"]
    missing = Envelope("x2", "elsewhere", LOBBY, (), b"two", 0, log_.seq + 1, log_.epoch)
    log_.seq += 1
    log_.entries.append(missing)
    log_.ids["x2"] = log_.seq
    hub_log.append_now(
        "room:lobby", "stomp:broadcast:room:{lobby}", Envelope("x3", "e", LOBBY, (), b"three", 0)
    )
    got = await sub.collect(3, "s", timeout=5)
    assert [f.body for f in got] == [b"one", b"two", b"three"]
    assert not any(f.get("x-gap") for f in sub.received("s"))
    await asyncio.sleep(0)
