"""Webhook events of real relays on a real Redis (one node: the Lua steps append them),
read back from the partition streams with XRANGE (docs/webhooks.md).

Clients connect, join, leave and end in the ways a session ends; a relay is SIGKILLed
and its sessions' ``server-lost`` events are appended once, by the sweeper; a relay
that stops gracefully reports ``shutdown``. Nothing here delivers the events (the
webhook URL points at a port nobody listens on), so the streams hold all of them.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from typing import Any

import pytest
from apiclient import call
from clusterhelpers import REAP_DEADLINE, SWEEP_INTERVAL, eventually
from procs import free_port

from stomprelay.cluster.keys import Keys
from stomprelay.webhook_events import partition_key, partition_of

pytestmark = pytest.mark.redis

PARTITIONS = 4
#: Long enough for a duplicate (a second sweeper, a repeated step) to show up.
QUIET = 3 * SWEEP_INTERVAL
#: What a reap appends.
LOST_TYPES = ("room.left", "room.vacated", "user.offline", "session.disconnected")


def webhook_args() -> list[str]:
    return [
        "--webhook-url",
        f"http://127.0.0.1:{free_port()}/hooks",
        "--webhook-partitions",
        str(PARTITIONS),
    ]


def read_partitions(rdb: Any) -> list[list[dict[str, Any]]]:
    keys = Keys()
    out = []
    for p in range(PARTITIONS):
        entries = rdb.xrange(keys.webhook_events(p))
        assert all(list(fields) == ["e"] for _, fields in entries), entries
        out.append([json.loads(fields["e"]) for _, fields in entries])
    return out


def read_events(rdb: Any) -> list[dict[str, Any]]:
    return [e for part in read_partitions(rdb) for e in part]


def of(events: list[dict[str, Any]], kind: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e for e in events if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())
    ]


async def test_sessions_rooms_and_users_of_real_clients(start_relay, stomp_clients, rdb) -> None:
    a = start_relay("relay-a", extra=webhook_args())
    b = start_relay("relay-b", extra=webhook_args())
    ann = await stomp_clients(a, name="ann", login="ann")
    ann2 = await stomp_clients(b, name="ann2", login="ann")
    bob = await stomp_clients(b, name="bob", login="bob")
    await ann.join("lobby", "Ann")
    await bob.join("lobby", "Bob")
    await ann2.join("games", "Ann")
    await bob.leave("lobby")
    await ann.disconnect()
    await ann2.close()
    await bob.disconnect()

    def all_out() -> list[dict[str, Any]]:
        events = read_events(rdb)
        assert len(of(events, "session.disconnected")) == 3, events
        return events

    events = await eventually(all_out, timeout=10, what="three sessions to end")
    sids = {"ann": ann.session_id, "ann2": ann2.session_id, "bob": bob.session_id}
    assert Counter(e["type"] for e in events) == {
        "session.connected": 3,
        "user.online": 2,
        "room.joined": 3,
        "room.occupied": 2,
        "room.left": 3,
        "room.vacated": 2,
        "user.offline": 2,
        "session.disconnected": 3,
    }
    assert len({e["id"] for e in events}) == len(events)
    for name, sid in sids.items():
        (connected,) = of(events, "session.connected", sessionId=sid)
        assert connected["user"] == name.rstrip("2")
        assert connected["serverId"] == ("relay-a" if name == "ann" else "relay-b")
        (gone,) = of(events, "session.disconnected", sessionId=sid)
        assert gone["reason"] == "closed"
    assert of(events, "room.left", sessionId=sids["bob"])[0]["reason"] == "left"
    assert of(events, "room.left", sessionId=sids["ann"])[0]["reason"] == "disconnected"
    # ann is online from her first session to her last, on either relay
    (online,) = of(events, "user.online", user="ann")
    (offline,) = of(events, "user.offline", user="ann")
    assert {online["sessionId"], offline["sessionId"]} <= {sids["ann"], sids["ann2"]}
    # a room's events are in one partition, in the order of its changes
    parts = read_partitions(rdb)
    lobby = [
        (e["type"], e["sessionId"])
        for e in parts[partition_of(partition_key("lobby"), PARTITIONS)]
        if e.get("roomId") == "lobby"
    ]
    assert lobby == [
        ("room.joined", sids["ann"]),
        ("room.occupied", sids["ann"]),
        ("room.joined", sids["bob"]),
        ("room.left", sids["bob"]),
        ("room.left", sids["ann"]),
        ("room.vacated", sids["ann"]),
    ]
    # each relay counted what its own steps appended
    assert a.metric("stomprelay_webhook_events_queued_total") + b.metric(
        "stomprelay_webhook_events_queued_total"
    ) == len(events)


async def test_a_session_ended_for_its_heartbeat_reports_timeout(
    start_relay, stomp_clients, rdb
) -> None:
    a = start_relay("relay-a", extra=webhook_args())
    quiet = await stomp_clients(a, name="quiet", login="quiet", heartbeat=(200, 0))
    # the client promised a heart-beat every 200 ms and sends none: the relay ends it
    gone = await eventually(
        lambda: of(read_events(rdb), "session.disconnected", sessionId=quiet.session_id),
        timeout=10,
        what="the silent session to end",
    )
    assert [e["reason"] for e in gone] == ["timeout"]


async def test_a_sigkilled_relays_sessions_are_reported_lost_once_by_the_sweeper(
    start_relay, stomp_clients, rdb
) -> None:
    a = start_relay("relay-a", extra=webhook_args())
    b = start_relay("relay-b", extra=webhook_args())
    c = start_relay("relay-c", extra=webhook_args())
    lost = [await stomp_clients(a, name=f"a{i}", login=f"user{i % 3}") for i in range(6)]
    stays = await stomp_clients(b, name="stays", login="user0")
    for i, client in enumerate(lost):
        await client.join(f"room{i % 2}", f"A{i}")
        if i < 2:
            await client.join("shared", f"A{i}")
    await stays.join("shared", "B")
    before = read_events(rdb)
    assert len(of(before, "session.connected")) == 7
    counted = [r.metric("stomprelay_webhook_events_queued_total") for r in (b, c)]

    a.kill()
    lost_ids = {client.session_id for client in lost}

    def reaped() -> list[dict[str, Any]]:
        events = read_events(rdb)
        assert len(of(events, "session.disconnected", reason="server-lost")) == len(lost_ids)
        return events

    await eventually(reaped, timeout=REAP_DEADLINE + 5, what="relay-a's sessions to be reaped")
    await asyncio.sleep(QUIET)  # another sweep, and another sweeper, add nothing
    events = read_events(rdb)
    new = [e for e in events if e not in before]
    assert {e["sessionId"] for e in of(new, "session.disconnected")} == lost_ids
    assert {e["reason"] for e in of(new, "session.disconnected")} == {"server-lost"}
    assert len(of(new, "session.disconnected")) == len(lost_ids)
    left = Counter((e["sessionId"], e["roomId"]) for e in of(new, "room.left"))
    expected_left = {(cl.session_id, f"room{i % 2}") for i, cl in enumerate(lost)} | {
        (cl.session_id, "shared") for cl in lost[:2]
    }
    assert set(left) == expected_left
    assert set(left.values()) == {1}
    assert {e["reason"] for e in of(new, "room.left")} == {"server-lost"}
    # room0 and room1 emptied; shared still holds "stays"
    assert sorted(e["roomId"] for e in of(new, "room.vacated")) == ["room0", "room1"]
    # user0 still has "stays" on relay-b; user1 and user2 had sessions on relay-a only
    assert sorted(e["user"] for e in of(new, "user.offline")) == ["user1", "user2"]
    assert {e["serverId"] for e in new} == {"relay-a"}
    assert len({e["id"] for e in events}) == len(events)
    assert len(new) == sum(len(of(new, kind)) for kind in LOST_TYPES)
    # the sweeper counted what it appended
    swept = [r.metric("stomprelay_webhook_events_queued_total") for r in (b, c)]
    assert sum(swept) - sum(counted) == len(new)


async def test_a_graceful_stop_reports_shutdown(start_relay, stomp_clients, rdb) -> None:
    a = start_relay("relay-a", extra=webhook_args())
    clients = [await stomp_clients(a, name=f"c{i}", login=f"u{i}") for i in range(3)]
    for client in clients:
        await client.join("lobby", client.name)
    assert a.terminate() == 0
    events = read_events(rdb)
    gone = of(events, "session.disconnected")
    assert sorted(e["sessionId"] for e in gone) == sorted(c.session_id for c in clients)
    assert {e["reason"] for e in gone} == {"shutdown"}
    assert len(of(events, "room.vacated", roomId="lobby")) == 1


async def test_what_happened_during_a_redis_outage_is_appended_once_on_recovery(
    start_relay, stomp_clients, redis_server, rdb
) -> None:
    """Redis paused (its data kept): the relay serves its clients alone and the restore
    on recovery registers what happened meanwhile, with its events, once. A session
    that connected and ended within the outage never reached Redis: its connected and
    disconnected are appended from the journal (no room or user events). A chat message
    journaled meanwhile is reported once its journal is appended."""
    a = start_relay("relay-a", extra=[*webhook_args(), "--webhook-messages", "/topic/room/*"])
    ann = await stomp_clients(a, name="ann", login="ann")
    zed = await stomp_clients(a, name="zed", login="zed")
    await ann.join("lobby", "Ann")
    await zed.join("lobby", "Zed")
    before = read_events(rdb)

    redis_server.pause()
    try:
        await eventually(lambda: not a.ready(), timeout=10, what="relay-a degraded")
        bob = await stomp_clients(a, name="bob", login="bob")
        await bob.join("lobby", "Bob")
        await bob.chat("lobby", "during")
        await ann.leave("lobby")
        cat = await stomp_clients(a, name="cat", login="cat")
        await cat.disconnect()
        await zed.disconnect()
    finally:
        redis_server.resume()
    await eventually(a.ready, timeout=15, what="relay-a ready again")

    def restored() -> list[dict[str, Any]]:
        new = [e for e in read_events(rdb) if e not in before]
        assert of(new, "session.disconnected"), new
        assert of(new, "room.joined"), new
        assert of(new, "message.published"), new
        return new

    await eventually(restored, timeout=10, what="the restore's events")
    await asyncio.sleep(QUIET)  # a later refresh or restore adds nothing
    events = read_events(rdb)
    new = [e for e in events if e not in before]
    assert sorted((e["type"], e.get("user", ""), e.get("reason", "")) for e in new) == sorted(
        [
            ("session.connected", "bob", ""),
            ("user.online", "bob", ""),
            ("room.joined", "bob", ""),
            ("room.left", "ann", "left"),
            ("room.left", "zed", "disconnected"),
            ("user.offline", "zed", "closed"),
            ("session.disconnected", "zed", "closed"),
            ("message.published", "bob", ""),
            ("session.connected", "cat", ""),
            ("session.disconnected", "cat", "closed"),
        ]
    )
    (during,) = of(new, "message.published")
    assert json.loads(during["body"])["message"] == "during"
    assert [e["type"] for e in new if e.get("sessionId") == cat.session_id] == [
        "session.connected",
        "session.disconnected",
    ]
    assert len({e["id"] for e in events}) == len(events)


async def test_a_reaped_relay_that_comes_back_reports_its_sessions_restored(
    start_relay, stomp_clients, rdb
) -> None:
    a = start_relay("relay-a", extra=webhook_args())
    b = start_relay("relay-b", extra=webhook_args())
    ann = await stomp_clients(a, name="ann", login="ann")
    await ann.join("lobby", "Ann")
    ben = await stomp_clients(b, name="ben", login="ben")
    await ben.join("lobby", "Ben")
    before = read_events(rdb)

    a.signal(signal.SIGSTOP)
    try:
        await eventually(
            lambda: of(read_events(rdb), "session.disconnected", sessionId=ann.session_id),
            timeout=REAP_DEADLINE + 5,
            what="relay-a reaped",
        )
    finally:
        a.signal(signal.SIGCONT)

    def back() -> list[dict[str, Any]]:
        new = [e for e in read_events(rdb) if e not in before]
        assert of(new, "room.joined", sessionId=ann.session_id), new
        return new

    await eventually(back, timeout=15, what="relay-a to restore its session")
    await asyncio.sleep(QUIET)
    parts = [[e for e in part if e not in before] for part in read_partitions(rdb)]
    # per partition, in order: the room's, then ann's (by her user)
    lobby = parts[partition_of(partition_key("lobby"), PARTITIONS)]
    user = parts[partition_of(partition_key(user="ann"), PARTITIONS)]
    assert [(e["type"], e.get("reason", "")) for e in lobby if e.get("roomId")] == [
        ("room.left", "server-lost"),
        ("room.joined", "restored"),
    ]
    assert [(e["type"], e.get("reason", "")) for e in user if not e.get("roomId")] == [
        ("user.offline", "server-lost"),
        ("session.disconnected", "server-lost"),
        ("session.connected", "restored"),
        ("user.online", "restored"),
    ]
    new = [e for part in parts for e in part]
    assert len(new) == 6
    assert {e["sessionId"] for e in new} == {ann.session_id}


async def test_messages_to_the_chosen_destinations_are_reported(
    start_relay, stomp_clients, rdb
) -> None:
    """A room's chat (``/app/room/{id}/message``) and clients' SENDs to topics, by
    ``--webhook-messages`` globs; each message once, with its log offset."""
    extra = [
        *webhook_args(),
        "--webhook-messages",
        "/topic/room/*",
        "--webhook-messages",
        "/topic/news.*",
    ]
    a = start_relay("relay-a", extra=extra)
    ann = await stomp_clients(a, name="ann", login="ann")
    await ann.join("lobby", "Ann")
    await ann.chat("lobby", "hello")
    for i in range(5):
        await ann.send("/topic/news.eu", f"n{i}".encode(), receipt=True)
    await ann.send("/topic/weather", b"rain", receipt=True)
    await ann.send("/topic/room/lobby", b"\xff raw", receipt=True)

    def reported() -> list[dict[str, Any]]:
        events = read_events(rdb)
        assert len(of(events, "message.published")) >= 7, events
        return events

    events = await eventually(reported, timeout=10, what="seven messages reported")
    published = of(events, "message.published")
    assert sorted(e["destination"] for e in published) == [
        *["/topic/news.eu"] * 5,
        "/topic/room/lobby",
        "/topic/room/lobby",
    ]
    news = [e for e in published if e["destination"] == "/topic/news.eu"]
    assert [e["body"] for e in news] == [f"n{i}" for i in range(5)]
    assert [e["offset"] for e in news] == [1, 2, 3, 4, 5]
    assert {(e["sessionId"], e["user"]) for e in published} == {(ann.session_id, "ann")}
    lobby = [e for e in published if e.get("roomId") == "lobby"]
    chat, raw = lobby
    assert json.loads(chat["body"])["message"] == "hello"
    assert raw["binary"] is True
    assert [chat["offset"], raw["offset"]] == [2, 3]  # after the JOIN
    assert len({e["id"] for e in events}) == len(events)


async def test_a_user_disconnected_by_the_back_end_is_reported_kicked(
    start_relay, stomp_clients, rdb
) -> None:
    key = "back-end-key"
    a = start_relay("relay-a", extra=[*webhook_args(), "--api-key", key])
    b = start_relay("relay-b", extra=[*webhook_args(), "--api-key", key])
    alice = [await stomp_clients(relay, name="alice", login="alice") for relay in (a, b)]
    await alice[0].join("lobby", "Alice")
    status, answer, _ = await call(
        a.http, "POST", "/api/users/alice/disconnect", {"reason": "account closed"}, key
    )
    assert (status, answer["sessions"]) == (200, 2)

    def ended() -> list[dict[str, Any]]:
        gone = of(read_events(rdb), "session.disconnected")
        assert len(gone) == 2, gone
        return gone

    gone = await eventually(ended, timeout=10, what="alice's sessions to end")
    assert sorted(e["sessionId"] for e in gone) == sorted(c.session_id for c in alice)
    assert {e["reason"] for e in gone} == {"kicked"}
    (offline,) = of(read_events(rdb), "user.offline", user="alice")
    assert offline["reason"] == "kicked"


async def test_sessions_that_came_and_went_during_an_outage_are_kept_up_to_the_journal_size(
    start_relay, stomp_clients, redis_server, rdb
) -> None:
    a = start_relay("relay-a", extra=[*webhook_args(), "--journal-size", "2"])
    redis_server.pause()
    try:
        await eventually(lambda: not a.ready(), timeout=10, what="relay-a degraded")
        came = [await stomp_clients(a, name=f"c{i}", login=f"u{i}") for i in range(4)]
        for client in came:
            await client.disconnect()
    finally:
        redis_server.resume()
    await eventually(a.ready, timeout=15, what="relay-a ready again")

    def reported() -> list[dict[str, Any]]:
        gone = of(read_events(rdb), "session.disconnected")
        assert len(gone) >= 2, gone
        return gone

    await eventually(reported, timeout=10, what="the journaled sessions")
    await asyncio.sleep(QUIET)
    events = read_events(rdb)
    kept = [c.session_id for c in came[:2]]
    assert sorted((e["type"], e["sessionId"]) for e in events) == sorted(
        (kind, sid) for sid in kept for kind in ("session.connected", "session.disconnected")
    )
    assert "their webhook events are not kept (1 so far)" in a.log()
