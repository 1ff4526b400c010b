"""Webhook events on a single node (no Redis): the in-memory registry's steps append them
to the hub's partitions (``Backends.webhook_log``) as real clients come and go."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from stompclient import StompClient

from stomprelay.transport import RelayServer
from stomprelay.webhook_events import partition_key, partition_of


def events_of(server: RelayServer) -> list[dict[str, Any]]:
    kept = server.relay.registry.hub.webhook_log  # type: ignore[attr-defined]
    return [json.loads(text) for entries in kept.entries for _, text in entries]


async def until(check: Any, what: str) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the relay appends from its own tasks
            await asyncio.sleep(0.02)


async def test_a_single_node_keeps_its_events_in_memory(make_relay) -> None:
    server = await make_relay(
        webhook_url="http://127.0.0.1:9/hooks",
        webhook_partitions=4,
        webhook_messages=("/topic/room/*",),
    )
    url = f"ws://127.0.0.1:{server.port}/ws"
    ann = await StompClient.connect(url, login="ann", name="ann")
    bob = await StompClient.connect(url, login="bob", name="bob", heartbeat=(100, 0))
    try:
        await ann.join("lobby", "Ann")
        await bob.join("lobby", "Bob")
        await ann.chat("lobby", "hi")
        await ann.disconnect()
        # bob promised heart-beats and sends none: the relay ends his session
        await until(lambda: len(events_of(server)) >= 15, "every event")
    finally:
        await ann.close()
        await bob.close()
    events = events_of(server)
    assert Counter(e["type"] for e in events) == {
        "session.connected": 2,
        "user.online": 2,
        "room.joined": 2,
        "room.occupied": 1,
        "message.published": 1,
        "room.left": 2,
        "room.vacated": 1,
        "user.offline": 2,
        "session.disconnected": 2,
    }
    reasons = {e["sessionId"]: e["reason"] for e in events if e["type"] == "session.disconnected"}
    assert reasons == {ann.session_id: "closed", bob.session_id: "timeout"}
    kept = server.relay.registry.hub.webhook_log  # type: ignore[attr-defined]
    lobby = [json.loads(t) for _, t in kept.entries[partition_of(partition_key("lobby"), 4)]]
    assert [(e["type"], e["sessionId"]) for e in lobby if e.get("roomId") == "lobby"] == [
        ("room.joined", ann.session_id),
        ("room.occupied", ann.session_id),
        ("room.joined", bob.session_id),
        ("message.published", ann.session_id),
        ("room.left", ann.session_id),
        ("room.left", bob.session_id),
        ("room.vacated", bob.session_id),
    ]
    metrics = server.relay.metrics.registry
    name = "stomprelay_webhook_events_queued_total"
    counted = {
        kind: metrics.get_sample_value(name, {"type": kind}) for kind in {e["type"] for e in events}
    }
    assert counted == {kind: float(n) for kind, n in Counter(e["type"] for e in events).items()}
