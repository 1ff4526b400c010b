"""Redis outage (contract section 4): local-only delivery and /ready 503 while Redis is
down; on its return every relay resubscribes and re-registers its sessions, announcing
only what happened meanwhile, never twice."""

from __future__ import annotations

import asyncio
import time

import pytest
from clusterhelpers import TTL_MS, RelaySpec, SessionSpec, assert_registry, eventually
from stompclient import StompClient, event_of, is_event

pytestmark = pytest.mark.redis

ROOM = "lobby"
TOPIC = f"/topic/room/{ROOM}"
OUTAGE = 5.0


def _spec(client: StompClient, username: str) -> SessionSpec:
    host, port = client.ws.local_address[:2]
    return SessionSpec(
        client.session_id, client.server_id, f"{host}:{port}", username, rooms=[ROOM]
    )


async def test_redis_outage_local_delivery_then_silent_rebuild(
    start_relay, stomp_clients, redis_server, rdb
) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    a1 = await stomp_clients(a, name="a1@A")
    a2 = await stomp_clients(a, name="a2@A")
    b1 = await stomp_clients(b, name="b1@B")
    everyone = [a1, a2, b1]
    names = ["ann", "amy", "ben"]
    for client in everyone:
        await client.subscribe(TOPIC, "room")
    for client, name in zip(everyone, names, strict=True):
        await client.join(ROOM, name)
    for client in everyone:
        await client.collect(3, "room", lambda f: is_event(f, type="JOIN"))
    await a1.chat(ROOM, "before")
    for client in everyone:
        await client.next_event("room", type="CHAT", message="before")

    redis_server.stop()
    down_at = time.monotonic()

    def degraded(relay) -> None:  # type: ignore[no-untyped-def]
        status, body = relay.get_json("/ready")
        assert status == 503, (status, body)
        assert body == {"status": "degraded"}, body  # no cause: the log and /metrics say it

    await eventually(lambda: degraded(a), timeout=4, what="relay-a /ready 503")
    await eventually(lambda: degraded(b), timeout=4, what="relay-b /ready 503")

    # clients on the same relay still reach each other (room events and raw SENDs)
    await a1.chat(ROOM, "local only")
    for client in (a1, a2):
        await client.next_event("room", type="CHAT", message="local only")
    await a2.send(TOPIC, b"raw local", [("x-k", "v")], receipt=True)
    for client in (a1, a2):
        frame = await client.next_message("room", lambda f: f.body == b"raw local")
        assert frame.get("x-k") == "v"
    await b1.chat(ROOM, "alone on b")
    await b1.next_event("room", type="CHAT", message="alone on b")
    # a session connecting and joining during the outage is announced locally ...
    a3 = await stomp_clients(a, name="a3@A")
    await a3.subscribe(TOPIC, "room")
    await a3.join(ROOM, "abe")
    for client in (a1, a2, a3):
        await client.next_event("room", type="JOIN", sessionId=a3.session_id)
    # ... and one leaving during the outage too
    await a2.disconnect()
    for client in (a1, a3):
        await client.next_event(
            "room", type="LEAVE", sessionId=a2.session_id, reason="disconnected"
        )
    everyone = [a1, a3, b1]
    names = ["ann", "abe", "ben"]

    await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
    seen_before = {c.name: len(c.history) for c in everyone}
    redis_server.start()  # same port, empty data set

    def ready(relay) -> None:  # type: ignore[no-untyped-def]
        status, body = relay.get_json("/ready")
        assert status == 200, (status, body)

    await eventually(lambda: ready(a), timeout=8, what="relay-a /ready again")
    await eventually(lambda: ready(b), timeout=8, what="relay-b /ready again")
    both = [RelaySpec("relay-a", a.port), RelaySpec("relay-b", b.port)]
    sessions = [_spec(c, n) for c, n in zip(everyone, names, strict=True)]
    await eventually(
        lambda: assert_registry(rdb, both, sessions, TTL_MS), timeout=5, what="registry rebuilt"
    )

    # chat across relays resumes without any client action
    await a1.chat(ROOM, "after, from A")
    for client in everyone:
        await client.next_event("room", timeout=3, type="CHAT", message="after, from A")
    await b1.chat(ROOM, "after, from B")
    for client in everyone:
        await client.next_event("room", timeout=3, type="CHAT", message="after, from B")

    # The restoration re-announced nothing anyone had seen: relay-a's clients saw abe join
    # and amy leave during the outage and get no second copy; ann and ben, known to all,
    # are not announced again. Only relay-b, cut off meanwhile, may now learn of abe's
    # JOIN and amy's LEAVE, once each (if it had resubscribed before relay-a restored).
    await asyncio.sleep(1.0)
    for client in everyone:
        since = client.history[seen_before[client.name] :]
        membership = [
            (event_of(f)["type"], event_of(f)["sessionId"])
            for f in since
            if is_event(f, type="JOIN") or is_event(f, type="LEAVE")
        ]
        if client is b1:
            assert len(membership) == len(set(membership)), membership
            assert set(membership) <= {("JOIN", a3.session_id), ("LEAVE", a2.session_id)}
        else:
            assert not membership, f"{client.name} got membership events again: {membership}"
    # What each side sent during the outage was journaled and appended once Redis was
    # back: the other side gets it once, the sender's side does not get it again.
    await eventually(
        lambda: len(b1.events("room", message="local only")) == 1, timeout=5, what="journal A"
    )
    await eventually(
        lambda: len(a1.events("room", message="alone on b")) == 1, timeout=5, what="journal B"
    )
    assert len(a1.events("room", message="local only")) == 1
    assert len(b1.events("room", message="alone on b")) == 1
