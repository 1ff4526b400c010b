"""Webhook events of the registry's steps on a Redis Cluster (appended right after each
step: the partition's stream sits in another slot) and under Sentinel (inside the
step's script, as on one Redis), read back with XRANGE (docs/webhooks.md)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from stomprelay.cluster.connect import RedisTarget
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.registry import ServerRecord, SessionRecord
from stomprelay.cluster.webhook_steps import WebhookSteps
from stomprelay.webhook_events import partition_key, partition_of

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

NOW = 1_700_000_000_000
PARTITIONS = 4
R1 = ServerRecord("r1", "10.0.0.1", 8001, "0.1.0", NOW, "inc-1")
ROOMS = [f"room-{n}" for n in range(6)]


async def test_every_step_appends_its_events_once(deployment: tuple[RedisTarget, Any]) -> None:
    target, raw = deployment
    keys = Keys()
    steps = WebhookSteps(PARTITIONS)
    seen: Counter[str] = Counter()
    steps.observe = lambda kind: seen.update([kind])
    registry = RedisRegistry(target, keys, webhooks=steps)
    try:
        await registry.register_server(R1, 60_000, NOW, "reg")
        users = ["ann", "bob", "ann"]
        for i, user in enumerate(users):
            record = SessionRecord(f"s{i}", "r1", user, "-", "1.2", NOW, NOW, user=user)
            assert await registry.add_session(record, f"add{i}", "inc-1")
        for room in ROOMS:
            for i, user in enumerate(users):
                await registry.join(f"s{i}", room, user, "r1", NOW + 1, f"j{i}-{room}", user)
            # a step run again appends nothing
            await registry.join("s0", room, "ann", "r1", NOW + 1, f"j0-{room}", "ann")
        await registry.leave("s1", ROOMS[0], "r1", "left", NOW + 2, "l1")
        for i in range(len(users)):
            await registry.remove_session(f"s{i}", "r1", [], "disconnected", NOW + 3, f"rm{i}")
    finally:
        await registry.close()

    parts = []
    for p in range(PARTITIONS):
        entries = raw.xrange(keys.webhook_events(p))
        parts.append([json.loads(fields["e"]) for _, fields in entries])
    events = [e for part in parts for e in part]
    rooms = len(ROOMS)
    assert Counter(e["type"] for e in events) == {
        "session.connected": 3,
        "user.online": 2,
        "room.joined": 3 * rooms,
        "room.occupied": rooms,
        "room.left": 3 * rooms,
        "room.vacated": rooms,
        "user.offline": 2,
        "session.disconnected": 3,
    }
    assert seen == Counter(e["type"] for e in events)
    assert len({e["id"] for e in events}) == len(events)
    for room in ROOMS:
        part = parts[partition_of(partition_key(room), PARTITIONS)]
        assert [(e["type"], e["sessionId"]) for e in part if e.get("roomId") == room] == [
            ("room.joined", "s0"),
            ("room.occupied", "s0"),
            ("room.joined", "s1"),
            ("room.joined", "s2"),
            *([("room.left", "s1")] if room == ROOMS[0] else []),
            ("room.left", "s0"),
            *([] if room == ROOMS[0] else [("room.left", "s1")]),
            ("room.left", "s2"),
            ("room.vacated", "s2"),
        ]
