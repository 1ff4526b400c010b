"""The publish pipeline: order per publisher, turns between publishers, journal."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import Log, LogSlice
from stomprelay.cluster.memory import MemoryBus
from stomprelay.errors import BackendUnavailable
from stomprelay.factory import build_relay
from stomprelay.publish import Pipeline
from stomprelay.relay import Relay
from stomprelay.settings import Settings


class RoundTripLog:
    """The relay's in-memory log behind an await, as a Redis log is: appends wait
    for a reply, so the pipeline queues and batches them."""

    def __init__(self, inner: Log) -> None:
        self.inner = inner

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        await asyncio.sleep(0)
        return await self.inner.append(log_id, channel, envelope, now)

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        await asyncio.sleep(0)
        return await self.inner.append_many(items, now)

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        return await self.inner.read(log_id, after, limit, tail)


def pipeline_of(relay: Relay, log: Log) -> Pipeline:
    sender = relay.sender
    return Pipeline(
        log,
        relay.bus.publish_many,
        relay.outage,
        sender.journal,
        relay.metrics,
        lambda: 0,
    )


def room_a(relay: Relay, body: bytes) -> tuple[str, str, Envelope]:
    envelope = relay.router.envelope("/topic/room/a", (), body)
    return "room:a", "stomp:broadcast:room:a", envelope


async def test_publishers_take_turns_and_keep_their_order() -> None:
    relay = build_relay(Settings(history_size=1000), server_id="pipe")
    assert relay.log is not None
    publisher = pipeline_of(relay, RoundTripLog(relay.log))
    flood = [publisher.submit(*room_a(relay, b"f%d" % i), "flooder") for i in range(200)]
    calm = publisher.submit(*room_a(relay, b"calm"), "calm")
    await asyncio.wait_for(asyncio.gather(*flood, calm), 5)
    read = await relay.log.read("room:a", 0, 1000)
    bodies = [e.body for e in read.entries]
    # the flooder's messages in its order, the calm one in the first batch, not after 200
    assert [b for b in bodies if b != b"calm"] == [b"f%d" % i for i in range(200)]
    assert bodies.index(b"calm") < 16
    assert relay.metrics.publish_batches._value.get() < 200 / 4


async def test_one_node_appends_a_lone_send_at_once() -> None:
    """On one node (the in-memory log) a SEND of a client with nothing queued is
    appended in the submit itself, not a turn later behind other clients' batches."""
    relay = build_relay(Settings(history_size=1000), server_id="pipe")
    assert relay.log is not None
    publisher = relay.sender.pipeline
    for i in range(3):
        assert publisher.submit(*room_a(relay, b"m%d" % i), "calm").done()
    read = await relay.log.read("room:a", 0, 10)
    assert [e.body for e in read.entries] == [b"m0", b"m1", b"m2"]
    assert len(publisher) == 0
    assert relay.metrics.appends._value.get() == 3


async def test_one_node_delivers_a_lone_send_in_the_submit() -> None:
    """The lone SEND's message reaches the bus's handler in the submit itself (no
    loop turn behind a flooded room's fan-out); with a delivery still queued it
    waits its turn, so handlers see messages in publish order."""
    relay = build_relay(Settings(history_size=1000), server_id="pipe")
    hub = relay.bus.hub  # type: ignore[attr-defined]
    seen: list[bytes] = []
    listener = MemoryBus(hub)
    await listener.start(lambda channel, envelope: seen.append(envelope.body))
    await listener.subscribe("stomp:broadcast:room:a")
    publisher = relay.sender.pipeline
    publisher.submit(*room_a(relay, b"lone"), "calm")
    assert seen == [b"lone"]

    # a delivery queued by an ordinary publish: the next lone SEND does not overtake it
    _, channel, queued = room_a(relay, b"queued")
    hub.publish(channel, queued)
    publisher.submit(*room_a(relay, b"after"), "calm")
    assert seen == [b"lone"]
    await asyncio.sleep(0)
    assert seen == [b"lone", b"queued", b"after"]
    publisher.submit(*room_a(relay, b"again"), "calm")
    assert seen == [b"lone", b"queued", b"after", b"again"]
