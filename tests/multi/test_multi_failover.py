"""Relays dying (SIGKILL), freezing (SIGSTOP/SIGCONT) and stopping (SIGTERM).

Contract section 4: a dead relay is cleaned up within the liveness TTL plus one sweep by
exactly one sweeper (one LEAVE "server-lost" per lost participant, however many relays
sweep); a relay reaped while alive re-registers what it holds; a graceful stop closes
clients with 1001 and removes this relay's sessions (LEAVE "disconnected") and keys.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import pytest
from clusterhelpers import (
    DRAIN_TIMEOUT,
    LIVENESS_TTL,
    REAP_DEADLINE,
    SWEEP_INTERVAL,
    TTL_MS,
    RelaySpec,
    SessionSpec,
    assert_registry,
    check_room_event,
    eventually,
    owned_keys,
    right_after_refresh,
    snapshot,
)
from stompclient import StompClient

pytestmark = pytest.mark.redis

ROOM = "lobby"
TOPIC = f"/topic/room/{ROOM}"
#: Long enough for any duplicate event (a second sweeper, a repeated restore) to show up.
QUIET = 3 * SWEEP_INTERVAL


def _events(client: StompClient, kind: str, session_id: str) -> list[dict[str, Any]]:
    return client.events("room", type=kind, sessionId=session_id)


async def _participants(
    clients: list[StompClient], names: list[str], watchers: Sequence[StompClient] = ()
) -> None:
    """Subscribe everyone (clients and watchers) to the room, then join the clients;
    return once every subscriber has seen every JOIN."""
    for client in [*clients, *watchers]:
        await client.subscribe(TOPIC, "room")
    for client, name in zip(clients, names, strict=True):
        await client.join(ROOM, name)
    for client in [*clients, *watchers]:
        await client.collect(len(clients), "room", lambda f: b'"JOIN"' in f.body)


async def _expect_one_leave_each(
    watchers: list[StompClient],
    lost: dict[str, str],
    server_id: str,
    reason: str,
    timeout: float,
) -> None:
    """Every watcher gets one LEAVE with ``reason`` for each lost session, and no more."""
    for watcher in watchers:
        for session_id, username in lost.items():
            event = await watcher.next_event(
                "room", timeout=timeout, type="LEAVE", sessionId=session_id
            )
            check_room_event(
                event,
                type="LEAVE",
                room=ROOM,
                session_id=session_id,
                username=username,
                server_id=server_id,
                reason=reason,
            )
    await asyncio.sleep(QUIET)
    for watcher in watchers:
        for session_id in lost:
            leaves = _events(watcher, "LEAVE", session_id)
            assert len(leaves) == 1, f"{watcher.name} got {len(leaves)} LEAVEs: {leaves}"


def _gone(rdb, server_id: str, session_ids: list[str]) -> None:
    left = owned_keys(snapshot(rdb), server_id, session_ids)
    assert not left, f"still in the registry: {left}"


async def test_sigkill_relay_is_reaped_within_ttl_and_sweep(
    start_relay, stomp_clients, rdb
) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    lost = [await stomp_clients(a, name=f"a{i}@A") for i in (1, 2)]
    watchers = [await stomp_clients(b, name=f"b{i}@B") for i in (1, 2)]
    await _participants([*lost, *watchers], ["ann", "amy", "ben", "bea"])

    killed_at = time.monotonic()
    a.kill()
    lost_ids = {c.session_id: name for c, name in zip(lost, ["ann", "amy"], strict=True)}
    await eventually(
        lambda: _gone(rdb, "relay-a", list(lost_ids)),
        timeout=REAP_DEADLINE,
        what="relay-a's sessions to leave the registry",
    )
    elapsed = time.monotonic() - killed_at
    assert elapsed <= REAP_DEADLINE, elapsed
    await _expect_one_leave_each(watchers, lost_ids, "relay-a", "server-lost", timeout=1)
    # what is left is exactly relay-b and its sessions
    assert_registry(
        rdb,
        [RelaySpec("relay-b", b.port)],
        [_spec(w, name) for w, name in zip(watchers, ["ben", "bea"], strict=True)],
        TTL_MS,
    )


async def test_two_sweepers_one_leave_per_lost_participant(start_relay, stomp_clients, rdb) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    c = start_relay("relay-c")
    lost = [await stomp_clients(a, name=f"a{i}@A") for i in (1, 2, 3)]
    watchers = [
        await stomp_clients(relay, name=f"w{i}@{relay.server_id}")
        for relay in (b, c)
        for i in (1, 2)
    ]
    names = ["ann", "amy", "abe"]
    # one survivor participant, on relay-b
    await _participants([*lost, watchers[0]], [*names, "ben"], watchers[1:])

    a.kill()
    lost_ids = {cl.session_id: n for cl, n in zip(lost, names, strict=True)}
    await eventually(
        lambda: _gone(rdb, "relay-a", list(lost_ids)), timeout=REAP_DEADLINE, what="reap"
    )
    await _expect_one_leave_each(watchers, lost_ids, "relay-a", "server-lost", timeout=1)
    # the LEAVEs count down the room one by one, the same on every watcher
    counts = [
        [e["participants"] for e in w.events("room", type="LEAVE", reason="server-lost")]
        for w in watchers
    ]
    assert all(seq == [3, 2, 1] for seq in counts), counts  # ben stays
    reaps = [line for r in (b, c) for line in r.log().splitlines() if "reaped dead relay" in line]
    assert len(reaps) == 1, reaps


def _spec(client: StompClient, username: str, rooms: list[str] | None = None) -> SessionSpec:
    host, port = client.ws.local_address[:2]
    return SessionSpec(
        client.session_id,
        client.server_id,
        f"{host}:{port}",
        username,
        rooms=[ROOM] if rooms is None else rooms,
    )


async def test_sigstop_relay_is_reaped_then_reregisters_on_sigcont(
    start_relay, stomp_clients, rdb
) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    paused = [await stomp_clients(a, name=f"a{i}@A") for i in (1, 2)]
    b1 = await stomp_clients(b, name="b1@B")
    await _participants([*paused, b1], ["ann", "amy", "ben"])
    ids = {cl.session_id: n for cl, n in zip(paused, ["ann", "amy"], strict=True)}

    a.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        await eventually(
            lambda: _gone(rdb, "relay-a", list(ids)), timeout=REAP_DEADLINE, what="reap"
        )
        for session_id, name in ids.items():
            event = await b1.next_event("room", timeout=1, type="LEAVE", sessionId=session_id)
            check_room_event(
                event,
                type="LEAVE",
                room=ROOM,
                session_id=session_id,
                username=name,
                server_id="relay-a",
                reason="server-lost",
            )
        # the point: frozen for longer than its TTL plus a sweep
        await asyncio.sleep(max(0.0, stopped_at + LIVENESS_TTL + SWEEP_INTERVAL - time.monotonic()))
    finally:
        a.signal(signal.SIGCONT)

    # relay-a finds it was reaped and re-registers its live sessions, announcing them
    for session_id, name in ids.items():
        event = await b1.next_event(
            "room", timeout=REAP_DEADLINE, type="JOIN", sessionId=session_id
        )
        check_room_event(
            event,
            type="JOIN",
            room=ROOM,
            session_id=session_id,
            username=name,
            server_id="relay-a",
        )
    expected = [_spec(c, n) for c, n in zip(paused, ["ann", "amy"], strict=True)]
    expected.append(_spec(b1, "ben"))
    both = [RelaySpec("relay-a", a.port), RelaySpec("relay-b", b.port)]
    await eventually(lambda: assert_registry(rdb, both, expected, TTL_MS), timeout=3)

    def listed_on_b() -> None:
        status, room = b.get_json(f"/api/rooms/{ROOM}")
        assert status == 200, room
        assert isinstance(room, dict)
        people = {p["sessionId"]: (p["username"], p["serverId"]) for p in room["participants"]}
        assert people == {
            **{sid: (n, "relay-a") for sid, n in ids.items()},
            b1.session_id: ("ben", "relay-b"),
        }

    await eventually(listed_on_b, timeout=2)

    # chat works again both ways, without any client action
    await paused[0].chat(ROOM, "back from the freeze")
    await b1.next_event("room", timeout=3, type="CHAT", message="back from the freeze")
    await b1.chat(ROOM, "welcome back")
    for client in paused:
        await client.next_event("room", timeout=3, type="CHAT", message="welcome back")
    await asyncio.sleep(QUIET)
    for session_id in ids:
        joins = _events(b1, "JOIN", session_id)
        assert len(joins) == 2, f"b1 saw {len(joins)} JOINs for {session_id} (initial + restore)"
    assert all(not c.closed for c in [*paused, b1])


@pytest.mark.node
async def test_sigterm_drains_and_cleans_up(
    start_relay, stomp_clients, stompjs_clients, rdb
) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    leaving = [await stomp_clients(a, name=f"a{i}@A") for i in (1, 2)]
    b1 = await stomp_clients(b, name="b1@B")
    await _participants([*leaving, b1], ["ann", "amy", "ben"])
    ids = {cl.session_id: n for cl, n in zip(leaving, ["ann", "amy"], strict=True)}
    # a browser-like client too
    js = await stompjs_clients()
    js_sid = (await js.connect(a.ws_url))["headers"]["session"]
    await js.send(f"/app/room/{ROOM}/join", body='{"username": "ada"}')
    await b1.next_event("room", type="JOIN", sessionId=js_sid)
    ids[js_sid] = "ada"

    started = time.monotonic()
    code = await asyncio.to_thread(a.terminate, DRAIN_TIMEOUT + 10)
    elapsed = time.monotonic() - started
    # keys gone at once: looked at right after the exit, before any sweep could run
    after_exit = snapshot(rdb)
    assert code == 0, a.log()[-3000:]
    assert elapsed < DRAIN_TIMEOUT, f"took {elapsed:.2f}s to exit"
    left = owned_keys(after_exit, "relay-a", list(ids))
    assert not left, f"relay-a's keys outlived it: {left}"
    for client in leaving:
        assert await client.wait_closed(2) == 1001, client.close_code
    closed = await js.expect("ws_close", timeout=2)
    assert closed["code"] == 1001, closed
    await _expect_one_leave_each([b1], ids, "relay-a", "disconnected", timeout=2)
    assert not b1.events("room", type="LEAVE", reason="server-lost")
    assert_registry(rdb, [RelaySpec("relay-b", b.port)], [_spec(b1, "ben")], TTL_MS)


async def test_reaped_while_alive_first_op_a_join_announces_restored_participants(
    start_relay, stomp_clients, rdb
) -> None:
    # relay-a refreshes its heartbeat only every 4 s (TTL 8 s): once its heartbeat key
    # expires early (as after a freeze longer than the TTL), a client's join can be the
    # first thing relay-a does in Redis after being reaped, before its own heartbeat.
    a = start_relay("relay-a", extra=["--liveness-interval", "4", "--liveness-ttl", "8"])
    b = start_relay("relay-b")
    a1 = await stomp_clients(a, name="a1@A")
    a2 = await stomp_clients(a, name="a2@A")
    b1 = await stomp_clients(b, name="b1@B")
    await _participants([a1, a2, b1], ["ann", "amy", "ben"])
    heartbeat = "stomp:servers:{relay-a}:heartbeat"
    await right_after_refresh(rdb, heartbeat)
    rdb.pexpire(heartbeat, 1)  # the key expires: relay-a looks dead to the sweepers
    for session_id in (a1.session_id, a2.session_id):
        await b1.next_event("room", timeout=REAP_DEADLINE, type="LEAVE", sessionId=session_id)
    await a1.join("kitchen", "ann")  # relay-a finds itself reaped, re-registers

    def in_lobby() -> None:
        members = rdb.smembers(f"stomp:rooms:{{{ROOM}}}:participants")
        assert members == {a1.session_id, a2.session_id, b1.session_id}, members

    await eventually(in_lobby, timeout=2, what="relay-a's participants back in the lobby")
    # they are participants again, so the other relay must be told: one JOIN each
    for session_id, name in ((a1.session_id, "ann"), (a2.session_id, "amy")):
        event = await b1.next_event("room", timeout=2, type="JOIN", sessionId=session_id)
        check_room_event(
            event,
            type="JOIN",
            room=ROOM,
            session_id=session_id,
            username=name,
            server_id="relay-a",
        )


@pytest.mark.node
async def test_sigterm_exits_within_drain_time_despite_a_frozen_client(
    start_relay, stomp_clients, stompjs_clients, rdb
) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    b1 = await stomp_clients(b, name="b1@B")
    await b1.subscribe(TOPIC, "room")
    js = await stompjs_clients()
    js_sid = (await js.connect(a.ws_url))["headers"]["session"]
    await js.send(f"/app/room/{ROOM}/join", body='{"username": "ada"}')
    await b1.next_event("room", type="JOIN", sessionId=js_sid)
    frozen = js._proc.pid  # the client's host stops answering (no close handshake)
    os.kill(frozen, signal.SIGSTOP)
    try:
        started = time.monotonic()
        a.signal(signal.SIGTERM)
        assert a.proc is not None
        try:
            code = await asyncio.to_thread(a.proc.wait, DRAIN_TIMEOUT + 1)
        except subprocess.TimeoutExpired:
            pytest.fail(f"relay-a still running {DRAIN_TIMEOUT + 1}s after SIGTERM")
        assert code == 0
        assert time.monotonic() - started < DRAIN_TIMEOUT + 1
        assert not owned_keys(snapshot(rdb), "relay-a", [js_sid])
        await b1.next_event("room", type="LEAVE", sessionId=js_sid, reason="disconnected")
    finally:
        os.kill(frozen, signal.SIGCONT)


async def test_sigkill_then_restart_with_same_id_drops_the_old_sessions(
    start_relay, stomp_clients, rdb
) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    a1 = await stomp_clients(a, name="a1@A")
    b1 = await stomp_clients(b, name="b1@B")
    await _participants([a1, b1], ["ann", "ben"])
    a.kill()
    a = start_relay("relay-a")  # e.g. a container restarted with a fixed SERVER_ID
    await eventually(
        lambda: _gone(rdb, "no-such-relay", [a1.session_id]),
        timeout=REAP_DEADLINE,
        what="the dead incarnation's session to leave the registry",
    )
    event = await b1.next_event("room", timeout=1, type="LEAVE", sessionId=a1.session_id)
    check_room_event(
        event,
        type="LEAVE",
        room=ROOM,
        session_id=a1.session_id,
        username="ann",
        server_id="relay-a",
    )
    assert event["reason"] in ("server-lost", "disconnected"), event
    assert_registry(
        rdb,
        [RelaySpec("relay-a", a.port), RelaySpec("relay-b", b.port)],
        [_spec(b1, "ben")],
        TTL_MS,
    )
