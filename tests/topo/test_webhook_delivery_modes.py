"""Webhook delivery on a Redis Cluster and under Sentinel: the leases, the cursors and
the fenced Lua steps each touch one partition's slot (``{w<p>}``), the dead-letter
stream another; a real receiver gets every event, in order per room."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest
from clusterhelpers import eventually
from webhookreceiver import WebhookReceiver

from stomprelay.cluster.connect import RedisTarget
from stomprelay.cluster.keys import Keys
from stomprelay.settings import Settings
from stomprelay.webhook_events import event_json, make_event, partition_key, partition_of
from stomprelay.webhooks import build_delivery

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

PARTITIONS = 4
SECRET = "whsec-modes"


async def test_two_deliveries_share_the_partitions_and_deliver_in_room_order(
    deployment: tuple[RedisTarget, Any],
) -> None:
    target, raw = deployment
    keys = Keys()
    with WebhookReceiver(SECRET) as receiver:
        settings = Settings(
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            webhook_partitions=PARTITIONS,
            webhook_linger_ms=10,
            liveness_ttl=1.0,
        )
        members = ["d1", "d2"]
        # the two share the partitions through the members hash each renews
        deliveries = [build_delivery(settings, sid, keys=keys, target=target) for sid in members]
        for delivery in deliveries:
            delivery.start()
        try:
            sent = []
            seq: dict[str, int] = defaultdict(int)
            for n in range(60):
                room = f"room-{n % 6}"
                seq[room] += 1
                event = make_event(
                    "room.joined",
                    f"m{n}",
                    int(time.time() * 1000),
                    "r1",
                    room_id=room,
                    session_id=f"s{n}",
                    extra={"seq": seq[room]},
                )
                p = partition_of(partition_key(room), PARTITIONS)
                raw.xadd(keys.webhook_events(p), {"e": event_json(event)})
                sent.append(event)
            await eventually(
                lambda: len(receiver.snapshot()) == len(sent), timeout=60, what="every event"
            )
            per_room: dict[str, list[int]] = defaultdict(list)
            for event in receiver.snapshot():
                per_room[event["roomId"]].append(event["seq"])
            assert all(seqs == sorted(seqs) for seqs in per_room.values())
            assert receiver.bad_signatures == 0

            def holders() -> set[str]:
                leases = [raw.get(keys.webhook_lease(p)) for p in range(PARTITIONS)]
                return {lease.split(":")[0] for lease in leases if lease}

            # spread over both (the first to start held all of them until the other came)
            await eventually(lambda: holders() == {"d1", "d2"}, timeout=30, what="both holding")
            await eventually(
                lambda: all(raw.xlen(keys.webhook_events(p)) == 0 for p in range(PARTITIONS)),
                timeout=30,
                what="delivered entries deleted",
            )
            assert all(raw.get(keys.webhook_cursor(p)) for p in range(PARTITIONS))
        finally:
            await asyncio.gather(*(d.stop(drain=0) for d in deliveries))
        # a stop hands the leases back
        assert not any(raw.get(keys.webhook_lease(p)) for p in range(PARTITIONS))
