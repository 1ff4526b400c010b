"""The publish pipeline: order per publisher, turns between publishers, journal."""

from __future__ import annotations

import asyncio

from stomprelay.factory import build_relay
from stomprelay.settings import Settings


async def test_publishers_take_turns_and_keep_their_order() -> None:
    relay = build_relay(Settings(history_size=1000), server_id="pipe")
    router = relay.router
    publisher = relay.sender.pipeline
    flood = [
        publisher.submit(
            "room:a",
            "stomp:broadcast:room:a",
            router.envelope("/topic/room/a", (), b"f%d" % i),
            "flooder",
        )
        for i in range(200)
    ]
    calm = publisher.submit(
        "room:a", "stomp:broadcast:room:a", router.envelope("/topic/room/a", (), b"calm"), "calm"
    )
    await asyncio.wait_for(asyncio.gather(*flood, calm), 5)
    assert relay.log is not None
    read = await relay.log.read("room:a", 0, 1000)
    bodies = [e.body for e in read.entries]
    # the flooder's messages in its order, the calm one in the first batch, not after 200
    assert [b for b in bodies if b != b"calm"] == [b"f%d" % i for i in range(200)]
    assert bodies.index(b"calm") < 16
    assert relay.metrics.publish_batches._value.get() < 200 / 4
