"""Operators see the room logs: inspect room, /api/rooms/{id}, /metrics (docs/history.md)."""

from __future__ import annotations

import json

import pytest
from clusterhelpers import eventually
from test_multi_notify import run_stomprelay

pytestmark = pytest.mark.redis

ROOM = "lobby"
TOPIC = f"/topic/room/{ROOM}"


async def run_cli(*args: str) -> str:
    return await run_stomprelay(*args)


def metric(relay, name: str) -> float:  # type: ignore[no-untyped-def]
    return float(relay.metric(name))


async def test_operators_see_the_log_of_a_room(start_relay, stomp_clients, redis_server) -> None:
    a = start_relay("relay-a")
    alice = await stomp_clients(a, name="alice")
    await alice.subscribe(TOPIC, "room")
    await alice.join(ROOM, "alice")
    for i in range(4):
        await alice.chat(ROOM, f"hello {i}")
    await alice.collect(5, "room")

    out = await run_cli("inspect", "room", ROOM, "--json", "--redis-url", redis_server.url)
    (row,) = json.loads(out)
    assert row["history.lastOffset"] == 5
    assert row["history.firstOffset"] == 1
    assert row["history.length"] == 5
    assert row["history.epoch"]
    assert row["username"] == "alice"

    status, body = a.get_json(f"/api/rooms/{ROOM}")
    assert status == 200
    assert isinstance(body, dict)
    assert body["history"] == {
        "epoch": row["history.epoch"],
        "firstOffset": 1,
        "lastOffset": 5,
        "length": 5,
    }

    # a room everyone left keeps its history, and says so
    await alice.leave(ROOM)
    status, body = a.get_json(f"/api/rooms/{ROOM}")
    assert status == 200
    assert isinstance(body, dict)
    assert body["participants"] == []
    assert body["history"]["lastOffset"] == 6

    # a resume is counted, recovered or not
    bob = await stomp_clients(a, name="bob")
    frame = await bob.subscribe_receipt(
        TOPIC, "s", [("x-since-offset", "3"), ("x-since-epoch", row["history.epoch"])]
    )
    assert frame.get("x-recovered") == "true"
    assert len(await bob.collect(3, "s")) == 3
    assert metric(a, 'stomprelay_resumes_total{recovered="true"}') == 1
    assert metric(a, "stomprelay_log_appends_total") == 4  # the chats; JOIN/LEAVE by scripts
    assert metric(a, "stomprelay_degraded ") == 0

    # a room notification takes its place in the log
    await run_cli("notify", "closing soon", "--room", ROOM, "--redis-url", redis_server.url)
    event = await bob.next_message("s", lambda f: b"closing soon" in f.body)
    assert event.get("x-offset") == "7"


async def test_a_relay_warns_when_redis_may_evict_history(start_relay, rdb) -> None:
    rdb.config_set("maxmemory-policy", "allkeys-lru")
    try:
        relay = start_relay("relay-a")
        await eventually(
            lambda: "maxmemory-policy is 'allkeys-lru'" in relay.log(), what="the warning"
        )
        assert "set it to noeviction" in relay.log()
    finally:
        rdb.config_set("maxmemory-policy", "noeviction")
