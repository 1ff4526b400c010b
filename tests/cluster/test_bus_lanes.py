"""The Redis bus when dispatching falls behind (issue 18): what the socket holds is
read ahead into room lanes, so a quiet channel's message is not dispatched after a
whole backlog of another channel's published before it; each channel's order stays
the publish order, the read-ahead stays within its bound, and a connection lost with
a backlog dispatches it before the bus reports itself down."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from conftest import wait_until
from procs import RedisServer

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.redis_bus import RedisBus

FLOOD, CALM = "test:room:{flood}", "test:room:{calm}"
COUNT = 2000


def envelope(ident: str) -> bytes:
    return Envelope(ident, "o", "/topic/t", (), b"x" * 100, 0).to_json()


def spin(seconds: float) -> None:
    """A handler's cost: a fan-out to many subscribers."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def flood(client: aioredis.Redis, calm: int = 0) -> None:
    """COUNT envelopes on FLOOD, then ``calm`` on CALM, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for n in range(COUNT):
        pipe.publish(FLOOD, envelope(f"f{n}"))
    for n in range(calm):
        pipe.publish(CALM, envelope(f"c{n}"))
    await pipe.execute()


@pytest.mark.redis
async def test_a_quiet_channel_is_not_dispatched_after_a_backlog(
    redis_server: RedisServer,
) -> None:
    bus = RedisBus(redis_server.url)
    got: list[tuple[str, str]] = []

    def handler(channel: str, env: Envelope) -> None:
        got.append((channel, env.id))
        spin(0.00005)

    await bus.start(handler)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.subscribe(FLOOD)
        await bus.subscribe(CALM)
        await flood(client, calm=5)
        await wait_until(lambda: len(got) >= COUNT + 5)
        assert [i for c, i in got if c == FLOOD] == [f"f{n}" for n in range(COUNT)]
        assert [i for c, i in got if c == CALM] == [f"c{n}" for n in range(5)]
        # published after all 2000, dispatched before the flood's second half
        assert got.index((CALM, "c4")) < COUNT // 2, got.index((CALM, "c4"))
        assert bus._lanes.backlog == 0
    finally:
        await client.aclose()
        await bus.close()


@pytest.mark.redis
async def test_the_read_ahead_stays_within_its_bound(redis_server: RedisServer) -> None:
    bus = RedisBus(redis_server.url)
    bus._lanes.limit = 100
    got: list[str] = []
    held: list[int] = []

    def handler(channel: str, env: Envelope) -> None:
        got.append(env.id)
        held.append(bus._lanes.backlog)
        spin(0.00005)

    await bus.start(handler)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.subscribe(FLOOD)
        await flood(client)
        await wait_until(lambda: len(got) >= COUNT)
        assert got == [f"f{n}" for n in range(COUNT)]
        assert 50 <= max(held) <= 100
    finally:
        await client.aclose()
        await bus.close()


@pytest.mark.redis
async def test_a_backlog_is_dispatched_before_the_bus_reports_a_lost_connection(
    redis_server: RedisServer,
) -> None:
    bus = RedisBus(redis_server.url, reconnect_interval=0.1)
    got: list[str] = []
    reports: list[tuple[bool, int, int]] = []

    def handler(channel: str, env: Envelope) -> None:
        got.append(env.id)
        spin(0.0002)

    await bus.start(handler)
    bus.on_state_change = lambda up: reports.append((up, len(got), bus._lanes.backlog))
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.subscribe(FLOOD)
        await flood(client)
        await wait_until(lambda: bus._lanes.backlog > 200)
        assert bus._lanes.backlog > 200
        await client.client_kill_filter(_type="pubsub")
        await wait_until(lambda: len(reports) >= 2)
        down, dispatched, backlog = reports[0]
        assert not down
        assert backlog == 0
        assert dispatched > 200
        # what was read is dispatched, in order; the rest may be lost with the connection
        assert got[:dispatched] == [f"f{n}" for n in range(dispatched)]
        assert reports[1][0]
    finally:
        await client.aclose()
        await bus.close()
