"""Operator notifications: ``stomprelay notify`` reaches /topic/system (contract 3 and 5)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from procs import ROOT

pytestmark = pytest.mark.redis


async def run_notify(redis_url: str, *args: str) -> str:
    return await run_stomprelay("notify", "--redis-url", redis_url, *args)


async def run_stomprelay(*args: str) -> str:
    """``python -m stomprelay ARGS``; its output (it must exit 0)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stomprelay",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_notify_reaches_system_subscribers_on_every_relay(
    start_relay, stomp_clients, redis_server
) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    on_a, on_b = await stomp_clients(a, name="on-a"), await stomp_clients(b, name="on-b")
    sub_a = await on_a.subscribe("/topic/system")
    sub_b = await on_b.subscribe("/topic/system")

    out = await run_notify(redis_server.url, "maintenance at noon")
    assert "2 relay(s) listening" in out
    for client, sub in ((on_a, sub_a), (on_b, sub_b)):
        event = await client.next_event(sub, type="SYSTEM")
        assert event["message"] == "maintenance at noon"
        assert event["serverId"] == "operator"
        assert isinstance(event["timestamp"], int)


async def test_notify_into_a_room_and_to_one_relay(
    start_relay, stomp_clients, redis_server
) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    on_a, on_b = await stomp_clients(a, name="on-a"), await stomp_clients(b, name="on-b")
    room_a = await on_a.subscribe("/topic/room/lobby")
    room_b = await on_b.subscribe("/topic/room/lobby")
    await run_notify(redis_server.url, "the lobby closes soon", "--room", "lobby")
    for client, sub in ((on_a, room_a), (on_b, room_b)):
        event = await client.next_event(sub, type="SYSTEM")
        assert (event["roomId"], event["message"]) == ("lobby", "the lobby closes soon")

    system_a = await on_a.subscribe("/topic/system")
    system_b = await on_b.subscribe("/topic/system")
    await run_notify(redis_server.url, "relay-b restarts", "--server", "relay-b")
    event = await on_b.next_event(system_b, type="SYSTEM")
    assert event["message"] == "relay-b restarts"
    await on_a.expect_no_message(system_a, within=0.5)


async def test_notify_refuses_a_bad_room_id(redis_server) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stomprelay",
        "notify",
        "--redis-url",
        redis_server.url,
        "hi",
        "--room",
        "bad*room",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"Room ids match" in err


async def test_notify_into_a_room_trims_and_expires_its_log_as_the_relays_do(
    redis_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment configured by environment (HISTORY_SIZE=1000, ...): the notification
    takes its place in a 1000-entry log without trimming it to the default 200 or
    resetting its expiry to the default 24 h."""
    import redis.asyncio as aioredis

    from stomprelay.cluster.envelope import Envelope
    from stomprelay.cluster.history import HistoryPolicy
    from stomprelay.cluster.keys import Keys
    from stomprelay.cluster.redis_backend import RedisRegistry
    from stomprelay.settings import Settings

    deployment = {"HISTORY_SIZE": "1000", "HISTORY_MIN_AGE": "0", "HISTORY_TTL": "600"}
    for name, value in deployment.items():
        monkeypatch.setenv(name, value)
    policy = HistoryPolicy.of(Settings(history_size=1000, history_min_age=0, history_ttl=600))
    keys = Keys()
    registry = RedisRegistry(redis_server.url, keys, policy=policy)
    try:
        channel = keys.room_channel("lobby")
        items = [
            ("room:lobby", channel, Envelope(f"m{i}", "relay-a", "/topic/room/lobby", (), b"x", i))
            for i in range(1000)
        ]
        assert len(await registry.log.append_many(items, 0)) == 1000
    finally:
        await registry.close()
    out = await run_notify(redis_server.url, "the lobby closes soon", "--room", "lobby")
    assert "at offset 1001" in out
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        stream = keys.history("room:lobby")
        assert await raw.xlen(stream) == 1000  # 2-1001: the relays' size, not 200
        assert 0 < await raw.pttl(stream) <= 600_000
    finally:
        await raw.aclose()
