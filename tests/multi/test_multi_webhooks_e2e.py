"""Webhook events end to end: real clients on relay processes, the registry's steps
appending the events, the relays delivering them to a real HTTP receiver.

The receiver checks each batch's signature with its own HMAC code, keeps the first
copy of each event id and counts the repeats; :func:`check_room_order` replays each
room's events and fails on an impossible order. Figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from clusterhelpers import REAP_DEADLINE, SWEEP_INTERVAL, K, eventually
from procs import RelayProcess
from stompclient import StompClient
from webhookreceiver import WebhookReceiver, check_room_order

pytestmark = pytest.mark.redis

SECRET = "whsec-e2e"
FAST = ["--webhook-retry-base", "0.1", "--webhook-retry-cap", "0.5", "--webhook-linger-ms", "20"]
SESSION_TYPES = ("session.connected", "room.joined", "room.left", "session.disconnected")


def webhook_args(receiver: WebhookReceiver) -> list[str]:
    return ["--webhook-url", receiver.url, "--webhook-secret", SECRET, *FAST]


def by_session(events: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        if "sessionId" in event:
            out[event["sessionId"]][event["type"]] += 1
    return out


def check_users(events: list[dict[str, Any]]) -> list[str]:
    """Each user's online/offline events alternate, starting online."""
    problems = []
    state: dict[str, bool] = {}
    for event in events:
        if event["type"] in ("user.online", "user.offline"):
            user, online = event["user"], event["type"] == "user.online"
            if state.get(user, False) == online:
                problems.append(f"{user}: {event['type']} twice in a row")
            state[user] = online
    return problems


def figures(
    label: str, receiver: WebhookReceiver, expected: str, got: int, since: float = 0.0
) -> None:
    events = receiver.snapshot()
    late = [receiver.acked_at[e["id"]] - since for e in events] if since else []
    print(
        f"\n[{label}] events expected {expected}, delivered {got}, "
        f"duplicates seen by id {sum(receiver.duplicates.values())}, "
        f"max delivery lag {receiver.max_lag():.2f} s"
        + (f", last event {max(late):.2f} s after the kill" if late else "")
    )


async def test_three_relays_300_clients_every_event_once_in_room_order(
    start_relay: Any,
) -> None:
    """300 clients over three relays connect, join one of 10 rooms, chat, leave and
    disconnect: every session's four events arrive once per id, each room's events in
    an order that is possible, each user's online/offline alternating, all signed."""
    with WebhookReceiver(SECRET) as receiver:
        relays = [start_relay(f"wh-{n}", extra=webhook_args(receiver)) for n in range(3)]
        limit = asyncio.Semaphore(40)
        sessions: list[str] = []

        async def one(i: int) -> None:
            async with limit:
                relay = relays[i % 3]
                client = await StompClient.connect(
                    relay.ws_url, login=f"user-{i % 150}", timeout=30
                )
                sessions.append(client.session_id)
                room = f"room-{i % 10}"
                await client.join(room, f"user-{i % 150}")
                await client.chat(room, f"hello from {i}")
                await client.leave(room)
                await client.disconnect(timeout=30)

        await asyncio.gather(*(one(i) for i in range(300)))
        expected_min = 4 * 300

        def complete() -> None:
            counts = by_session(receiver.snapshot())
            for session in sessions:
                assert all(counts[session][t] == 1 for t in SESSION_TYPES), (
                    session,
                    counts[session],
                )

        await eventually(complete, timeout=120, what="every session's four events")
        await asyncio.sleep(2 * SWEEP_INTERVAL)  # any stray repeat shows up meanwhile
        events = receiver.snapshot()
        counts = by_session(events)
        assert set(counts) == set(sessions)
        for session in sessions:
            kinds = counts[session]
            assert all(kinds[t] == 1 for t in SESSION_TYPES), (session, kinds)
        assert not check_room_order(events)
        assert not check_users(events)
        per_room = Counter((e["roomId"], e["type"]) for e in events if "roomId" in e)
        for room in (f"room-{n}" for n in range(10)):
            assert per_room[room, "room.occupied"] == per_room[room, "room.vacated"] >= 1
        users = Counter((e["user"], e["type"]) for e in events if e["type"].startswith("user."))
        for user in (f"user-{n}" for n in range(150)):
            assert users[user, "user.online"] == users[user, "user.offline"] >= 1
        assert receiver.bad_signatures == 0
        disconnected = [e for e in events if e["type"] == "session.disconnected"]
        assert {e["reason"] for e in disconnected} == {"closed"}
        session_events = sum(1 for e in events if e["type"] in SESSION_TYPES)
        figures(
            "three relays, 300 clients",
            receiver,
            f"{expected_min} session/room events (+ balanced edges)",
            session_events,
        )
        print(f"  all events delivered {len(events)} (occupied/vacated, online/offline included)")
        assert len(events) >= expected_min


async def test_sigkilled_relay_sessions_are_reported_server_lost(
    start_relay: Any, rdb: Any
) -> None:
    """A relay with 50 sessions in 5 rooms is SIGKILLed: once reaped, each session has
    exactly one session.disconnected (server-lost) and one room.left; the rooms it
    emptied are vacated, the users without another session go offline."""
    with WebhookReceiver(SECRET) as receiver:
        victim = start_relay("wh-victim", extra=webhook_args(receiver))
        others = [start_relay(f"wh-other-{n}", extra=webhook_args(receiver)) for n in range(2)]
        doomed: dict[str, tuple[str, str]] = {}  # session -> (user, room)
        clients: list[StompClient] = []
        for i in range(50):
            client = await StompClient.connect(victim.ws_url, login=f"user-{i}", timeout=30)
            clients.append(client)
            room = f"room-{i % 5}"
            await client.join(room, f"user-{i}")
            doomed[client.session_id] = (f"user-{i}", room)
        # room-0 and room-1 keep a participant elsewhere; user-0 and user-1 keep a session
        survivors = []
        for n in range(2):
            client = await StompClient.connect(others[n].ws_url, login=f"user-{n}", timeout=30)
            await client.join(f"room-{n}", f"user-{n}")
            survivors.append(client)

        # 50 x (connected, online, joined), 5 rooms occupied, the survivors' 2 x 2
        before = 50 * 3 + 5 + 4
        await eventually(
            lambda: len(receiver.snapshot()) == before, timeout=60, what="the joins delivered"
        )
        held = [
            p for p in range(16) if (rdb.get(K.webhook_lease(p)) or "").startswith("wh-victim:")
        ]
        assert held, "the victim delivers some partitions: they must be taken over"
        killed_at = time.time()
        victim.kill()
        for client in clients:
            await client.close()

        def reported() -> None:
            counts = by_session(receiver.snapshot())
            for session in doomed:
                assert counts[session]["session.disconnected"] == 1, session
                assert counts[session]["room.left"] == 1, session

        await eventually(reported, timeout=REAP_DEADLINE + 60, what="the server-lost events")
        await asyncio.sleep(3 * SWEEP_INTERVAL)  # repeats (a second sweeper) would show now
        taken = [rdb.get(K.webhook_lease(p)) or "" for p in held]
        assert not any(holder.startswith("wh-victim:") for holder in taken)
        events = receiver.snapshot()
        after = [e for e in events if e.get("sessionId") in doomed and e["type"] in SESSION_TYPES]
        gone = [e for e in after if e["type"] in ("session.disconnected", "room.left")]
        assert len(gone) == 100
        assert {e["reason"] for e in gone} == {"server-lost"}
        vacated = {e["roomId"] for e in events if e["type"] == "room.vacated"}
        assert vacated == {"room-2", "room-3", "room-4"}
        offline = {e["user"] for e in events if e["type"] == "user.offline"}
        assert offline == {f"user-{i}" for i in range(2, 50)}
        assert not check_room_order(events)
        assert not check_users(events)
        assert receiver.bad_signatures == 0
        expected = 100 + 3 + 48
        figures(
            "SIGKILL, 50 sessions in 5 rooms",
            receiver,
            str(expected),
            len(events) - before,
            since=killed_at,
        )
        assert len(events) - before == expected
        for client in survivors:
            await client.disconnect()


async def test_single_node_delivers_from_memory(tmp_path: Any) -> None:
    """Without Redis, the same events are delivered from the in-memory partitions; a
    graceful stop sends what it queued last (the sessions it closed) before exiting."""
    with WebhookReceiver(SECRET) as receiver:
        relay = RelayProcess(tmp_path, "wh-single", extra=webhook_args(receiver)).start()
        try:
            client = await StompClient.connect(relay.ws_url, login="solo")
            await client.join("lobby", "solo")
            await client.leave("lobby")
            await client.disconnect()
            order = [
                "session.connected",
                "user.online",
                "room.joined",
                "room.occupied",
                "room.left",
                "room.vacated",
                "session.disconnected",
                "user.offline",
            ]
            await eventually(
                lambda: len(receiver.snapshot()) == len(order), timeout=30, what="8 events"
            )
            events = receiver.snapshot()
            assert sorted(e["type"] for e in events) == sorted(order)
            assert not check_room_order(events)
            assert receiver.bad_signatures == 0
            assert relay.metric("stomprelay_webhook_events_delivered_total") == len(order)

            stayer = await StompClient.connect(relay.ws_url, login="stayer")
            await stayer.join("lobby", "stayer")
            await eventually(
                lambda: len(receiver.snapshot()) == len(order) + 4, timeout=30, what="joined"
            )
            assert await asyncio.to_thread(relay.terminate) == 0
            kinds = [e["type"] for e in receiver.snapshot()[len(order) + 4 :]]
            assert sorted(kinds) == [
                "room.left",
                "room.vacated",
                "session.disconnected",
                "user.offline",
            ]
            ended = receiver.of_type("session.disconnected")[-1]
            assert (ended["user"], ended["reason"]) == ("stayer", "shutdown")
            await stayer.close()
        finally:
            relay.stop()


async def test_messages_of_chosen_destinations_are_events(start_relay: Any) -> None:
    """--webhook-messages: a room's chat messages are message.published events, after
    the sender's room.joined in the room's order; other destinations are not."""
    with WebhookReceiver(SECRET) as receiver:
        extra = [*webhook_args(receiver), "--webhook-messages", "/topic/room/*"]
        relays = [start_relay(f"wh-msg-{n}", extra=extra) for n in range(2)]
        alice = await StompClient.connect(relays[0].ws_url, login="alice")
        bob = await StompClient.connect(relays[1].ws_url, login="bob")
        await alice.join("lobby", "alice")
        await bob.join("lobby", "bob")
        for n in range(5):
            await (alice if n % 2 else bob).chat("lobby", f"message {n}")
        await bob.send("/topic/elsewhere", "not reported")
        await eventually(
            lambda: len(receiver.of_type("message.published")) == 5,
            timeout=30,
            what="five message.published",
        )
        published = receiver.of_type("message.published")
        assert {e["destination"] for e in published} == {"/topic/room/lobby"}
        assert [f"message {n}" in e["body"] for n, e in enumerate(published)] == [True] * 5
        events = receiver.snapshot()
        lobby = [e["type"] for e in events if e.get("roomId") == "lobby"]
        assert lobby.index("message.published") > lobby.index("room.joined")
        assert not check_room_order(events)
        await alice.disconnect()
        await bob.disconnect()
