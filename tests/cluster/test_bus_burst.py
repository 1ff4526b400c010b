"""The Redis bus under a burst: the messages that arrive in one read are taken
from the parser in order, none lost or reordered, with subscription replies and
malformed envelopes among them handled as one by one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from procs import RedisServer
from redis.asyncio.client import PubSub

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.redis_bus import RedisBus

COUNT = 3000


@pytest.mark.redis
async def test_a_burst_arrives_whole_and_in_order(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    get_message = PubSub.get_message

    async def counted(self: PubSub, *args: object, **kwargs: object) -> object:
        nonlocal reads
        message = await get_message(self, *args, **kwargs)  # type: ignore[arg-type]
        reads += message is not None
        return message

    monkeypatch.setattr(PubSub, "get_message", counted)
    bus = RedisBus(redis_server.url)
    got: list[tuple[str, str]] = []
    await bus.start(lambda channel, envelope: got.append((channel, envelope.id)))
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.subscribe("test:a")
        await bus.subscribe("test:b")
        pipe = client.pipeline(transaction=False)
        expected = []
        for n in range(COUNT):
            channel = "test:a" if n % 3 else "test:b"
            envelope = Envelope(f"m{n}", "o", "/topic/t", (("k", "v" * (n % 50)),), b"x" * n, n)
            pipe.publish(channel, envelope.to_json())
            expected.append((channel, f"m{n}"))
            if n == COUNT // 2:
                pipe.publish("test:a", b"{not json")  # logged and skipped
                pipe.publish("test:c", envelope.to_json())  # not subscribed: dropped
        await pipe.execute()
        subscribing = asyncio.ensure_future(bus.subscribe("test:c"))
        deadline = asyncio.get_running_loop().time() + 10
        while len(got) < COUNT and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.wait_for(subscribing, 5)
        await bus.publish("test:c", Envelope("after", "o", "/topic/t", (), b"", 0))
        while len(got) <= COUNT and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert got == [*expected, ("test:c", "after")]
        assert reads < COUNT // 2, "the burst was read one get_message per message"
    finally:
        await client.aclose()
        await bus.close()
