"""The one contract suite for the cluster backends: Bus and Registry (contract 3-4).

Every test runs against the in-memory reference (``memory``) and the Redis
implementation (``redis``, a private redis-server). State is compared through
``cluster.snapshot()``, which renders either backend as the contract's Redis
keys, so an assertion means the same thing for both; events are awaited on a
bus subscribed before acting, and ``probe.barrier()`` proves that nothing
else was published.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from procs import free_port

from stomprelay.cluster.base import REAP_TOMBSTONE_MS
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryRegistry
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.registry import (
    DeadServer,
    OperatorCommand,
    Participant,
    Pending,
    Registry,
    RoomRecord,
    ServerRecord,
    SessionRecord,
    Suspensions,
    event_headers,
)
from stomprelay.errors import BackendUnavailable

if TYPE_CHECKING:
    from conftest import Cluster, Probe

NOW = 1_700_000_000_000
#: A display name that JSON encoders escape differently (cjson in Lua vs Python).
ALICE = 'Zoë "A/W" ✓'
LONG_TTL = 60_000
SHORT_TTL = 300
K = Keys()

R1 = ServerRecord("r1", "10.0.0.1", 8001, "0.1.0", NOW - 5_000, "inc-1")
R2 = ServerRecord("r2", "10.0.0.2", 8002, "0.1.0", NOW - 4_000, "inc-2")


def incarnation_of(record: SessionRecord) -> str:
    """The incarnation its relay registered with (add_session is fenced by it)."""
    return {"r1": R1.incarnation, "r2": R2.incarnation}[record.server_id]


#: Fields of a room event that the contract names (section 3).
ROOM_EVENT_FIELDS = {
    "type",
    "roomId",
    "sessionId",
    "username",
    "userId",
    "serverId",
    "timestamp",
    "message",
    "participants",
    "reason",
}


def session(sid: str, server: str = "r1", username: str = "alice", at: int = NOW) -> SessionRecord:
    return SessionRecord(sid, server, username, f"192.0.2.7:{40000 + len(sid)}", "1.2", at, at)


def state(
    *,
    servers: Iterable[ServerRecord] = (),
    sessions: Iterable[SessionRecord] = (),
    rooms: Iterable[tuple[str, set[str], int, int]] = (),
    expired: Iterable[str] = (),
) -> dict[str, Any]:
    """The keys a registry holding exactly this must have (contract section 4).

    ``rooms`` are ``(room id, participants, created-at, last-activity)``; relays in
    ``expired`` have no heartbeat key.
    """
    servers, sessions, expired = list(servers), list(sessions), set(expired)
    out: dict[str, Any] = {}
    if servers:
        out[K.servers_active] = {s.server_id for s in servers}
    for s in servers:
        out[K.server_info(s.server_id)] = {
            "host": s.host,
            "port": str(s.port),
            "version": s.version,
            "started-at": str(s.started_at),
            "incarnation": s.incarnation,
        }
        if s.server_id not in expired:
            out[K.server_heartbeat(s.server_id)] = "<heartbeat>"
    owned: dict[str, set[str]] = defaultdict(set)
    for r in sessions:
        owned[r.server_id].add(r.session_id)
        out[K.session(r.session_id)] = {
            "server-id": r.server_id,
            "user": r.user,
            "username": r.username,
            "remote-address": r.remote_address,
            "version": r.version,
            "connected-at": str(r.connected_at),
            "last-seen": str(r.last_seen),
            "rooms": ",".join(r.rooms),
        }
        if r.rooms:
            out[K.current_room(r.session_id)] = r.rooms[-1]
        if r.user:
            out.setdefault(K.user_sessions(r.user), set()).add(r.session_id)
    if sessions:
        out[K.sessions_active] = {r.session_id for r in sessions}
    for server_id, sids in owned.items():
        out[K.server_sessions(server_id)] = sids
    for room_id, members, created, last in rooms:
        out[K.room_participants(room_id)] = set(members)
        out[K.room_info(room_id)] = {
            "created-at": str(created),
            "last-activity": str(last),
            "participants": str(len(members)),
        }
    return out


def in_rooms(
    record: SessionRecord, rooms: list[str], last_seen: int, **changes: Any
) -> SessionRecord:
    return replace(record, rooms=list(rooms), last_seen=last_seen, **changes)


def room_event(env: Envelope, *, origin: str, event_id: str) -> dict[str, Any]:
    """Check a room event's envelope and return its body without ``message``.

    A room event's id is the operation's event id, or ``<event id>/...`` when
    one operation makes several (a LEAVE per room of a removed session)."""
    assert env.id == event_id or env.id.startswith(f"{event_id}/"), env.id
    assert env.offset > 0, "room events go through the room's log"
    assert env.epoch
    assert env.origin == origin
    body = json.loads(env.body)
    # x-event-type is reserved: only relay-made events carry it (docs/security.md)
    assert env.headers == event_headers(body["type"])
    assert env.destination == f"/topic/room/{body['roomId']}"
    assert set(body) <= ROOM_EVENT_FIELDS, body
    assert isinstance(body.pop("message", ""), str)
    return dict(body)


def join_body(
    room: str, sid: str, username: str, server: str, ts: int, count: int
) -> dict[str, Any]:
    return {
        "type": "JOIN",
        "roomId": room,
        "sessionId": sid,
        "username": username,
        "userId": "",
        "serverId": server,
        "timestamp": ts,
        "participants": count,
    }


def leave_body(
    room: str, sid: str, username: str, server: str, ts: int, count: int, reason: str
) -> dict[str, Any]:
    return {
        "type": "LEAVE",
        "roomId": room,
        "sessionId": sid,
        "username": username,
        "userId": "",
        "serverId": server,
        "timestamp": ts,
        "participants": count,
        "reason": reason,
    }


def disconnect_body(sid: str, server: str, username: str, reason: str, ts: int) -> dict[str, Any]:
    return {
        "type": "DISCONNECT",
        "sessionId": sid,
        "serverId": server,
        "username": username,
        "reason": reason,
        "timestamp": ts,
    }


def envelope(ident: str, body: bytes = b"x", origin: str = "r1") -> Envelope:
    return Envelope(ident, origin, "/topic/t", (("content-type", "text/plain"),), body, NOW)


def all_event_ids(probe: Probe) -> list[str]:
    return [env.id for ch, env in probe.received if ch != "test:barrier"]


async def event_probe(cluster: Cluster, rooms: Iterable[str] = ()) -> Probe:
    """A bus on every event channel of ``rooms`` and the session channels."""
    channels = [K.session_connect_channel, K.session_disconnect_channel]
    for room in rooms:
        channels += [K.join_channel(room), K.leave_channel(room)]
    return await cluster.probe(*channels)


async def populate(cluster: Cluster, r1_ttl: int = LONG_TTL) -> dict[str, SessionRecord]:
    """r1 holds s1 (alice: lobby, games) and s2 (bob: lobby); r2 holds s3 (carol: lobby)."""
    reg = cluster.registry
    await reg.register_server(R1, r1_ttl, NOW, "reg")
    await reg.register_server(R2, LONG_TTL, NOW, "reg")
    s1, s2, s3 = session("s1"), session("s2", username="bob"), session("s3", "r2", "carol")
    for i, rec in enumerate((s1, s2, s3)):
        await reg.add_session(rec, f"ev-add{i}", incarnation_of(rec))
    assert await reg.join("s1", "lobby", "alice", "r1", NOW + 1, "ev-j1") == (True, 1)
    assert await reg.join("s2", "lobby", "bob", "r1", NOW + 2, "ev-j2") == (True, 2)
    assert await reg.join("s3", "lobby", "carol", "r2", NOW + 3, "ev-j3") == (True, 3)
    assert await reg.join("s1", "games", "alice", "r1", NOW + 4, "ev-j4") == (True, 1)
    return {
        "s1": in_rooms(s1, ["lobby", "games"], NOW + 4),
        "s2": in_rooms(s2, ["lobby"], NOW + 2),
        "s3": in_rooms(s3, ["lobby"], NOW + 3),
    }


# -- Bus -------------------------------------------------------------------------------


async def test_subscribe_returns_once_the_subscription_is_live(cluster: Cluster) -> None:
    a, b = await cluster.probe(), await cluster.probe()
    assert a.bus.available
    assert b.bus.available
    channels = [f"stomp:test:live:{i}" for i in range(20)]
    for i, channel in enumerate(channels):
        await a.bus.subscribe(channel)
        await b.bus.publish(channel, envelope(f"m{i}", origin="b"))
    for i, channel in enumerate(channels):
        assert [env.id for env in await a.wait_count(channel, 1)] == [f"m{i}"]


async def test_unsubscribe_stops_delivery(cluster: Cluster) -> None:
    a = await cluster.probe("stomp:test:one", "stomp:test:two")
    b = await cluster.probe()
    await b.bus.publish("stomp:test:one", envelope("first"))
    await a.wait_count("stomp:test:one", 1)

    await a.bus.unsubscribe("stomp:test:one")
    await b.bus.publish("stomp:test:one", envelope("dropped"))
    await b.bus.publish("stomp:test:two", envelope("kept"))
    await a.wait_count("stomp:test:two", 1)
    await a.barrier()
    assert [env.id for env in a.on("stomp:test:one")] == ["first"]
    assert b.on("stomp:test:one") == []  # b never subscribed
    await a.bus.unsubscribe("stomp:test:never-subscribed")

    await a.bus.subscribe("stomp:test:one")
    await b.bus.publish("stomp:test:one", envelope("again"))
    assert [env.id for env in await a.wait_count("stomp:test:one", 2)] == ["first", "again"]


async def test_a_relay_receives_its_own_publishes_through_the_channel(cluster: Cluster) -> None:
    a = await cluster.probe("stomp:test:mine")
    await a.bus.publish("stomp:test:mine", envelope("own"))
    assert a.on("stomp:test:mine") == []  # not delivered re-entrantly, but through the channel
    assert [env.id for env in await a.wait_count("stomp:test:mine", 1)] == ["own"]

    await a.bus.publish("stomp:test:not-subscribed", envelope("elsewhere"))
    await a.barrier()
    assert a.on("stomp:test:not-subscribed") == []


async def test_envelope_round_trip_keeps_bytes_and_header_order(cluster: Cluster) -> None:
    headers = (
        ("x-b", "1"),
        ("content-type", "application/octet-stream"),
        ("x-a", "é:\\n ✓"),
        ("x-b", "2"),
    )
    binary = Envelope(
        "bin", "r1", "/topic/room/lobby", headers, b"\x00\xff\xfe\x00\x80end\x00", NOW
    )
    text = Envelope("txt", "r2", "/topic/broadcast", (), "héllo ✓\n{}".encode(), NOW + 1)
    empty = Envelope("empty", "r2", "/topic/broadcast", (("a", ""),), b"", NOW + 2)
    a = await cluster.probe("stomp:test:rt")
    b = await cluster.probe()
    for env in (binary, text, empty):
        await b.bus.publish("stomp:test:rt", env)
    assert await a.wait_count("stomp:test:rt", 3) == [binary, text, empty]

    wire = json.loads(binary.to_json())
    assert wire["encoding"] == "base64"
    assert base64.b64decode(wire["body"]) == binary.body
    assert wire["headers"] == [list(pair) for pair in headers]
    assert json.loads(text.to_json())["encoding"] == "utf-8"
    assert json.loads(text.to_json())["body"] == "héllo ✓\n{}"


async def test_two_buses_see_the_same_order_of_interleaved_publishes(cluster: Cluster) -> None:
    channel = "stomp:test:order"
    a, b = await cluster.probe(channel), await cluster.probe(channel)

    async def pump(probe: Probe, name: str) -> None:
        for i in range(100):
            await probe.bus.publish(channel, envelope(f"{name}-{i:03}", origin=name))
            await asyncio.sleep(0)

    await asyncio.gather(pump(a, "a"), pump(b, "b"))
    seen_a = [env.id for env in await a.wait_count(channel, 200)]
    seen_b = [env.id for env in await b.wait_count(channel, 200)]
    assert seen_a == seen_b
    assert len(set(seen_a)) == 200
    for name in ("a", "b"):
        assert [i for i in seen_a if i.startswith(name)] == [f"{name}-{i:03}" for i in range(100)]
    await a.barrier()
    assert len(a.on(channel)) == 200


# -- Registry: servers and sessions -------------------------------------------------------


async def test_register_server(cluster: Cluster) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    assert await cluster.snapshot() == state(servers=[R1])
    assert 0 < await cluster.pttl(K.server_heartbeat("r1")) <= LONG_TTL
    assert await reg.servers() == [(R1, True, 0)]
    assert await reg.dead_servers() == []

    assert await reg.refresh_server("r1", "inc-1", LONG_TTL) is True
    assert await reg.refresh_server("r1", "inc-other", LONG_TTL) is False
    assert await reg.refresh_server("nobody", "inc-1", LONG_TTL) is False
    assert await cluster.snapshot() == state(servers=[R1])

    again = replace(R1, host="10.9.9.9", port=9, incarnation="inc-9")
    await reg.register_server(again, LONG_TTL, NOW, "reg")
    assert await cluster.snapshot() == state(servers=[again])
    assert await reg.refresh_server("r1", "inc-1", LONG_TTL) is False
    assert await reg.servers() == [(again, True, 0)]


async def test_backend_id_is_stable(cluster: Cluster) -> None:
    first = await cluster.registry.backend_id()
    assert first
    assert await cluster.registry.backend_id() == first


async def test_add_session(cluster: Cluster) -> None:
    reg = cluster.registry
    probe = await event_probe(cluster)
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    s1 = session("s1")
    await reg.add_session(s1, "ev-add", incarnation_of(s1))
    assert await cluster.snapshot() == state(servers=[R1], sessions=[s1])

    (env,) = await probe.wait_count(K.session_connect_channel, 1)
    assert env.id == "ev-add-1"
    assert env.origin == "r1"
    assert json.loads(env.body) == {
        "type": "CONNECT",
        "sessionId": "s1",
        "serverId": "r1",
        "username": "alice",
        "timestamp": NOW,
    }
    await probe.barrier()
    assert all_event_ids(probe) == ["ev-add-1"]
    assert await reg.session("s1") == s1
    assert await reg.sessions() == [s1]
    assert await reg.servers() == [(R1, True, 1)]


async def test_add_session_without_last_seen_stores_connected_at(cluster: Cluster) -> None:
    await cluster.registry.register_server(R1, LONG_TTL, NOW, "reg")
    await cluster.registry.add_session(
        replace(session("s1"), last_seen=0),
        "ev",
        incarnation_of(replace(session("s1"), last_seen=0)),
    )
    assert await cluster.snapshot() == state(servers=[R1], sessions=[session("s1")])


# -- Registry: rooms ----------------------------------------------------------------------


async def test_join(cluster: Cluster) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    await reg.register_server(R2, LONG_TTL, NOW, "reg")
    s1, s2 = session("s1"), session("s2", "r2", "bob")
    await reg.add_session(s1, "ev-a1", incarnation_of(s1))
    await reg.add_session(s2, "ev-a2", incarnation_of(s2))
    probe = await event_probe(cluster, ["lobby"])

    assert await reg.join("s1", "lobby", ALICE, "r1", NOW + 10, "ev-j1") == (True, 1)
    s1 = in_rooms(s1, ["lobby"], NOW + 10, username=ALICE)
    assert await cluster.snapshot() == state(
        servers=[R1, R2], sessions=[s1, s2], rooms=[("lobby", {"s1"}, NOW + 10, NOW + 10)]
    )
    (env,) = await probe.wait_count(K.join_channel("lobby"), 1)
    assert env.id == "ev-j1"
    assert room_event(env, origin="r1", event_id="ev-j1") == join_body(
        "lobby", "s1", ALICE, "r1", NOW + 10, 1
    )

    assert await reg.join("s2", "lobby", "bob", "r2", NOW + 20, "ev-j2") == (True, 2)
    s2 = in_rooms(s2, ["lobby"], NOW + 20)
    assert await cluster.snapshot() == state(
        servers=[R1, R2], sessions=[s1, s2], rooms=[("lobby", {"s1", "s2"}, NOW + 10, NOW + 20)]
    )
    envs = await probe.wait_count(K.join_channel("lobby"), 2)
    assert room_event(envs[1], origin="r2", event_id="ev-j2") == join_body(
        "lobby", "s2", "bob", "r2", NOW + 20, 2
    )
    await probe.barrier()
    assert all_event_ids(probe) == ["ev-j1", "ev-j2"]


async def test_join_the_same_room_again_announces_nothing(cluster: Cluster) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    await reg.add_session(session("s1"), "ev-a", incarnation_of(session("s1")))
    probe = await event_probe(cluster, ["lobby"])
    assert await reg.join("s1", "lobby", "alice", "r1", NOW + 10, "ev-j1") == (True, 1)
    assert await reg.join("s1", "lobby", "alice", "r1", NOW + 20, "ev-j2") == (False, 1)

    assert await cluster.snapshot() == state(
        servers=[R1],
        sessions=[in_rooms(session("s1"), ["lobby"], NOW + 20)],
        rooms=[("lobby", {"s1"}, NOW + 10, NOW + 20)],
    )
    await probe.barrier()
    assert all_event_ids(probe) == ["ev-j1"]
    assert await reg.room("lobby") == RoomRecord("lobby", 1, NOW + 10, NOW + 20)


async def test_join_a_second_room_changes_the_current_room(cluster: Cluster) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    await reg.add_session(session("s1"), "ev-a", incarnation_of(session("s1")))
    probe = await event_probe(cluster, ["lobby", "games"])
    await reg.join("s1", "lobby", "alice", "r1", NOW + 10, "ev-j1")
    assert await reg.join("s1", "games", "alice", "r1", NOW + 20, "ev-j2") == (True, 1)
    assert await cluster.snapshot() == state(
        servers=[R1],
        sessions=[in_rooms(session("s1"), ["lobby", "games"], NOW + 20)],
        rooms=[("lobby", {"s1"}, NOW + 10, NOW + 10), ("games", {"s1"}, NOW + 20, NOW + 20)],
    )
    (env,) = await probe.wait_count(K.join_channel("games"), 1)
    assert room_event(env, origin="r1", event_id="ev-j2") == join_body(
        "games", "s1", "alice", "r1", NOW + 20, 1
    )

    # Joining the first room again makes it current without announcing anything.
    assert await reg.join("s1", "lobby", "alice", "r1", NOW + 30, "ev-j3") == (False, 1)
    assert await cluster.snapshot() == state(
        servers=[R1],
        sessions=[in_rooms(session("s1"), ["games", "lobby"], NOW + 30)],
        rooms=[("lobby", {"s1"}, NOW + 10, NOW + 30), ("games", {"s1"}, NOW + 20, NOW + 20)],
    )
    await probe.barrier()
    assert all_event_ids(probe) == ["ev-j1", "ev-j2"]


async def test_join_of_an_unregistered_session_changes_nothing(cluster: Cluster) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    probe = await event_probe(cluster, ["lobby"])
    assert await reg.join("ghost", "lobby", "casper", "r1", NOW, "ev-j") is None
    assert await cluster.snapshot() == state(servers=[R1])
    await probe.barrier()
    assert all_event_ids(probe) == []


async def test_every_bus_sees_a_rooms_events_in_the_order_of_the_changes(
    cluster: Cluster,
) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    await reg.register_server(R2, LONG_TTL, NOW, "reg")
    for i, (sid, server) in enumerate([("s1", "r1"), ("s2", "r2"), ("s3", "r1")]):
        await reg.add_session(
            session(sid, server, f"user{i}"),
            f"ev-a{i}",
            incarnation_of(session(sid, server, f"user{i}")),
        )
    a = await event_probe(cluster, ["lobby"])
    b = await event_probe(cluster, ["lobby"])
    await reg.join("s1", "lobby", "user0", "r1", NOW + 1, "ev1")
    await reg.join("s2", "lobby", "user1", "r2", NOW + 2, "ev2")
    await reg.leave("s1", "lobby", "r1", "left", NOW + 3, "ev3")
    await reg.join("s3", "lobby", "user2", "r1", NOW + 4, "ev4")
    await reg.remove_session("s2", "r2", ["lobby"], "disconnected", NOW + 5, "ev5")
    await reg.join("s1", "lobby", "user0", "r1", NOW + 6, "ev6")
    expected = [
        ("JOIN", "s1", 1),
        ("JOIN", "s2", 2),
        ("LEAVE", "s1", 1),
        ("JOIN", "s3", 2),
        ("LEAVE", "s2", 1),
        ("JOIN", "s1", 2),
    ]
    seen = []
    for probe in (a, b):
        await probe.barrier()
        seen.append(
            [
                (body["type"], body["sessionId"], body["participants"])
                for ch, env in probe.received
                if ch in (K.join_channel("lobby"), K.leave_channel("lobby"))
                for body in [json.loads(env.body)]
            ]
        )
    assert seen == [expected, expected]


async def test_leave(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster)
    probe = await event_probe(cluster, ["lobby", "games"])

    assert await reg.leave("s1", "games", "r1", "left", NOW + 30, "ev-l1") == (True, 0)
    (env,) = await probe.wait_count(K.leave_channel("games"), 1)
    assert env.id == "ev-l1"
    assert room_event(env, origin="r1", event_id="ev-l1") == leave_body(
        "games", "s1", "alice", "r1", NOW + 30, 0, "left"
    )
    s1 = in_rooms(records["s1"], ["lobby"], NOW + 30)
    assert await cluster.snapshot() == state(
        servers=[R1, R2],
        sessions=[s1, records["s2"], records["s3"]],
        rooms=[("lobby", {"s1", "s2", "s3"}, NOW + 1, NOW + 3)],
    )

    assert await reg.leave("s1", "lobby", "r1", "left", NOW + 40, "ev-l2") == (True, 2)
    (env,) = await probe.wait_count(K.leave_channel("lobby"), 1)
    assert room_event(env, origin="r1", event_id="ev-l2") == leave_body(
        "lobby", "s1", "alice", "r1", NOW + 40, 2, "left"
    )
    s1 = in_rooms(records["s1"], [], NOW + 40)
    assert await cluster.snapshot() == state(
        servers=[R1, R2],
        sessions=[s1, records["s2"], records["s3"]],
        rooms=[("lobby", {"s2", "s3"}, NOW + 1, NOW + 40)],
    )

    # Leaving a room one is not in: no event, nothing changes but last-seen.
    assert await reg.leave("s1", "lobby", "r1", "left", NOW + 50, "ev-l3") == (False, 2)
    await probe.barrier()
    assert all_event_ids(probe) == ["ev-l1", "ev-l2"]
    assert await reg.participants("lobby") == [
        Participant("s2", "bob", "r1"),
        Participant("s3", "carol", "r2"),
    ]


async def test_remove_session(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster)
    probe = await event_probe(cluster, ["lobby", "games", "other"])

    await reg.remove_session(
        "s1", "r1", ["lobby", "games", "other"], "disconnected", NOW + 40, "ev-r"
    )
    await probe.wait_count(K.session_disconnect_channel, 1)
    await probe.barrier()
    (lobby,) = probe.on(K.leave_channel("lobby"))
    (games,) = probe.on(K.leave_channel("games"))
    assert probe.on(K.leave_channel("other")) == []
    assert room_event(lobby, origin="r1", event_id="ev-r") == leave_body(
        "lobby", "s1", "alice", "r1", NOW + 40, 2, "disconnected"
    )
    assert room_event(games, origin="r1", event_id="ev-r") == leave_body(
        "games", "s1", "alice", "r1", NOW + 40, 0, "disconnected"
    )
    (gone,) = probe.on(K.session_disconnect_channel)
    assert gone.origin == "r1"
    assert json.loads(gone.body) == disconnect_body("s1", "r1", "alice", "disconnected", NOW + 40)
    ids = all_event_ids(probe)
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert sorted(i for i in ids if "/" in i) == ["ev-r/games", "ev-r/lobby"]
    assert next(i for i in ids if "/" not in i).startswith("ev-r-")

    assert await cluster.snapshot() == state(
        servers=[R1, R2],
        sessions=[records["s2"], records["s3"]],
        rooms=[("lobby", {"s2", "s3"}, NOW + 1, NOW + 40)],
    )
    assert await reg.session("s1") is None


async def test_remove_unknown_session_announces_nothing(cluster: Cluster) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    probe = await event_probe(cluster, ["lobby"])
    await reg.remove_session("ghost", "r1", [], "disconnected", NOW, "ev-r")
    await probe.barrier()
    assert all_event_ids(probe) == []
    assert await cluster.snapshot() == state(servers=[R1])


async def test_participants(cluster: Cluster) -> None:
    reg = cluster.registry
    await populate(cluster)
    await reg.add_session(
        session("s4", "r2", "aaron"), "ev-a4", incarnation_of(session("s4", "r2", "aaron"))
    )
    await reg.join("s4", "lobby", "aaron", "r2", NOW + 5, "ev-j5")
    assert await reg.participants("lobby") == [
        Participant("s4", "aaron", "r2"),
        Participant("s1", "alice", "r1"),
        Participant("s2", "bob", "r1"),
        Participant("s3", "carol", "r2"),
    ]
    assert await reg.participants("games") == [Participant("s1", "alice", "r1")]
    assert await reg.participants("empty") == []


async def test_chat_publishes_and_records_activity(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster)
    probe = await cluster.probe(K.room_channel("lobby"))
    message = Envelope("m-1", "r1", "/topic/room/lobby", (("x", "1"),), b'{"message":"hi"}', NOW)
    logged = await reg.chat("s2", "lobby", K.room_channel("lobby"), message, NOW + 90)
    (got,) = await probe.wait_count(K.room_channel("lobby"), 1)
    assert got == logged
    assert replace(got, offset=0, epoch="") == message
    assert got.offset > 0
    assert got.epoch
    assert await cluster.snapshot() == state(
        servers=[R1, R2],
        sessions=[records["s1"], in_rooms(records["s2"], ["lobby"], NOW + 90), records["s3"]],
        rooms=[
            ("lobby", {"s1", "s2", "s3"}, NOW + 1, NOW + 90),
            ("games", {"s1"}, NOW + 4, NOW + 4),
        ],
    )


async def test_queries_return_what_is_stored(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster, r1_ttl=SHORT_TTL)
    await cluster.expire("r1")
    assert await reg.servers() == [(R1, False, 2), (R2, True, 1)]
    assert await reg.sessions() == [records["s1"], records["s2"], records["s3"]]
    assert await reg.session("s3") == records["s3"]
    assert await reg.session("nobody") is None
    assert await reg.rooms() == [
        RoomRecord("games", 1, NOW + 4, NOW + 4),
        RoomRecord("lobby", 3, NOW + 1, NOW + 3),
    ]
    assert await reg.room("lobby") == RoomRecord("lobby", 3, NOW + 1, NOW + 3)
    assert await reg.room("nowhere") is None


# -- Registry: liveness, reaping, restoring -----------------------------------------------


def lost_events(probe: Probe) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """(room, session) -> LEAVE count and session -> disconnect count."""
    leaves: Counter[tuple[str, str]] = Counter()
    for channel, env in probe.received:
        if channel.startswith(f"{K.prefix}:event:leave:"):
            body = json.loads(env.body)
            leaves[(body["roomId"], body["sessionId"])] += 1
    disconnects = Counter(
        json.loads(e.body)["sessionId"] for e in probe.on(K.session_disconnect_channel)
    )
    return leaves, disconnects


def leaves_count(leaves: list[dict[str, Any]], room: str, sid: str) -> int:
    (count,) = [b["participants"] for b in leaves if b["roomId"] == room and b["sessionId"] == sid]
    return int(count)


async def test_reap_cleans_up_a_dead_relay(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster, r1_ttl=SHORT_TTL)
    probe = await event_probe(cluster, ["lobby", "games"])
    assert await reg.dead_servers() == []
    await cluster.expire("r1")
    dead = await reg.dead_servers()
    assert dead == [DeadServer("r1", "inc-1")]
    assert await cluster.snapshot() == state(
        servers=[R1, R2],
        sessions=records.values(),
        rooms=[
            ("lobby", {"s1", "s2", "s3"}, NOW + 1, NOW + 3),
            ("games", {"s1"}, NOW + 4, NOW + 4),
        ],
        expired=["r1"],
    )

    assert await reg.reap(dead[0], "r2", NOW + 50, "ev-reap") == 2
    await probe.wait_count(K.session_disconnect_channel, 2)
    await probe.barrier()

    leaves = [
        room_event(env, origin="r1", event_id="ev-reap")
        for ch, env in probe.received
        if ch in (K.leave_channel("lobby"), K.leave_channel("games"))
    ]
    assert sorted(leaves, key=lambda b: (b["roomId"], b["sessionId"])) == [
        leave_body("games", "s1", "alice", "r1", NOW + 50, 0, "server-lost"),
        leave_body(
            "lobby",
            "s1",
            "alice",
            "r1",
            NOW + 50,
            leaves_count(leaves, "lobby", "s1"),
            "server-lost",
        ),
        leave_body(
            "lobby", "s2", "bob", "r1", NOW + 50, leaves_count(leaves, "lobby", "s2"), "server-lost"
        ),
    ]
    assert sorted(leaves_count(leaves, "lobby", s) for s in ("s1", "s2")) == [1, 2]
    disconnects = probe.on(K.session_disconnect_channel)
    assert all(env.origin == "r2" for env in disconnects)
    assert sorted((json.loads(env.body) for env in disconnects), key=lambda b: b["sessionId"]) == [
        disconnect_body("s1", "r1", "alice", "server-lost", NOW + 50),
        disconnect_body("s2", "r1", "bob", "server-lost", NOW + 50),
    ]
    ids = all_event_ids(probe)
    assert len(ids) == len(set(ids)) == 5

    assert await cluster.snapshot() == state(
        servers=[R2], sessions=[records["s3"]], rooms=[("lobby", {"s3"}, NOW + 1, NOW + 50)]
    )
    assert await reg.dead_servers() == []
    assert await reg.servers() == [(R2, True, 1)]


async def test_register_drops_sessions_of_an_earlier_process_with_the_same_id(
    cluster: Cluster,
) -> None:
    """A relay restarted under the same id right after a crash: what the dead process
    held leaves as lost, once, at registration (the reaper never sees it dead)."""
    reg = cluster.registry
    records = await populate(cluster)
    probe = await event_probe(cluster, ["lobby", "games"])
    restarted = replace(R1, incarnation="inc-restart", started_at=NOW + 40)
    await reg.register_server(restarted, LONG_TTL, NOW + 50, "ev-reg")
    await probe.wait_count(K.session_disconnect_channel, 2)
    await probe.barrier()
    leaves, disconnects = lost_events(probe)
    assert leaves == {("lobby", "s1"): 1, ("lobby", "s2"): 1, ("games", "s1"): 1}
    assert disconnects == {"s1": 1, "s2": 1}
    assert all(
        json.loads(env.body)["reason"] == "server-lost"
        for ch, env in probe.received
        if ch != "test:barrier"
    )
    assert await cluster.snapshot() == state(
        servers=[restarted, R2],
        sessions=[records["s3"]],
        rooms=[("lobby", {"s3"}, NOW + 1, NOW + 50)],
    )


async def test_concurrent_sweepers_reap_once(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster, r1_ttl=SHORT_TTL)
    probe = await event_probe(cluster, ["lobby", "games"])
    await cluster.expire("r1")
    (dead,) = await reg.dead_servers()

    results = await asyncio.gather(
        *(reg.reap(dead, f"sweeper-{i}", NOW + 50, f"ev-reap{i}") for i in range(3))
    )
    assert 2 in results
    assert sum(r or 0 for r in results) == 2
    await probe.wait_count(K.session_disconnect_channel, 2)
    await probe.barrier()
    leaves, disconnects = lost_events(probe)
    assert leaves == {("lobby", "s1"): 1, ("lobby", "s2"): 1, ("games", "s1"): 1}
    assert disconnects == {"s1": 1, "s2": 1}
    assert await cluster.snapshot() == state(
        servers=[R2], sessions=[records["s3"]], rooms=[("lobby", {"s3"}, NOW + 1, NOW + 50)]
    )


async def test_reap_of_a_relay_already_reaped_reports_nothing(cluster: Cluster) -> None:
    reg = cluster.registry
    await populate(cluster, r1_ttl=SHORT_TTL)
    await cluster.expire("r1")
    (dead,) = await reg.dead_servers()
    assert await reg.reap(dead, "r2", NOW + 50, "ev-reap1") == 2
    assert await reg.reap(dead, "r3", NOW + 60, "ev-reap2") is None


async def test_reap_is_fenced_by_a_refresh(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster, r1_ttl=SHORT_TTL)
    probe = await event_probe(cluster, ["lobby", "games"])
    await cluster.expire("r1")
    (dead,) = await reg.dead_servers()

    assert await reg.refresh_server("r1", "inc-1", LONG_TTL) is True
    assert await reg.reap(dead, "r2", NOW + 50, "ev-reap") is None
    await probe.barrier()
    assert all_event_ids(probe) == []
    assert await cluster.snapshot() == state(
        servers=[R1, R2],
        sessions=records.values(),
        rooms=[
            ("lobby", {"s1", "s2", "s3"}, NOW + 1, NOW + 3),
            ("games", {"s1"}, NOW + 4, NOW + 4),
        ],
    )
    assert await reg.dead_servers() == []


async def test_reap_is_fenced_by_a_new_incarnation(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster, r1_ttl=SHORT_TTL)
    probe = await event_probe(cluster, ["lobby", "games"])
    await cluster.expire("r1")
    (dead,) = await reg.dead_servers()
    reborn = replace(R1, incarnation="inc-1b")

    # Re-registered (what a relay that was paused does) and alive: fenced by the heartbeat.
    held = [r for r in records.values() if r.server_id == "r1"]
    await reg.restore(reborn, held, SHORT_TTL, False, NOW + 5, "reg")
    assert await reg.reap(dead, "r2", NOW + 50, "ev-reap1") is None
    # Dead again, but as another incarnation: the stale verdict is fenced by incarnation.
    await cluster.expire("r1")
    assert await reg.dead_servers() == [DeadServer("r1", "inc-1b")]
    assert await reg.reap(dead, "r2", NOW + 60, "ev-reap2") is None
    await probe.barrier()
    assert all_event_ids(probe) == []
    expected = state(
        servers=[reborn, R2],
        sessions=records.values(),
        rooms=[
            ("lobby", {"s1", "s2", "s3"}, NOW + 1, NOW + 5),
            ("games", {"s1"}, NOW + 4, NOW + 5),
        ],
        expired=["r1"],
    )
    assert await cluster.snapshot() == expected

    # The current verdict still reaps.
    assert await reg.reap(DeadServer("r1", "inc-1b"), "r2", NOW + 70, "ev-reap3") == 2


async def test_restore_without_announce_recreates_every_key_silently(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster)
    await cluster.wipe()
    assert await cluster.snapshot() == {}
    probe = await event_probe(cluster, ["lobby", "games"])

    r1b = replace(R1, incarnation="inc-1b")
    held = [records["s1"], records["s2"]]
    await reg.restore(r1b, held, LONG_TTL, False, NOW + 60, "ev-restore")
    assert await cluster.snapshot() == state(
        servers=[r1b],
        sessions=held,
        rooms=[("lobby", {"s1", "s2"}, NOW + 60, NOW + 60), ("games", {"s1"}, NOW + 60, NOW + 60)],
    )
    assert 0 < await cluster.pttl(K.server_heartbeat("r1")) <= LONG_TTL
    await probe.barrier()
    assert all_event_ids(probe) == []
    assert await reg.refresh_server("r1", "inc-1b", LONG_TTL) is True


async def test_restore_with_announce_joins_only_missing_memberships(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster)
    s4 = session("s4", username="dave")
    await reg.add_session(s4, "ev-a4", incarnation_of(s4))
    await reg.join("s4", "lobby", "dave", "r1", NOW + 5, "ev-j5")
    # What went missing: s1's membership of games, and s2 entirely.
    await reg.leave("s1", "games", "r1", "left", NOW + 6, "ev-l")
    await reg.remove_session("s2", "r1", ["lobby"], "disconnected", NOW + 7, "ev-r")
    probe = await event_probe(cluster, ["lobby", "games"])

    # The relay holds s1 (lobby, games) and s2 (lobby), no longer s4.
    r1b = replace(R1, incarnation="inc-1b")
    held = [records["s1"], records["s2"]]
    await reg.restore(r1b, held, LONG_TTL, True, NOW + 70, "ev-rs")
    await probe.wait_count(K.session_disconnect_channel, 1)
    await probe.barrier()

    joins = [
        room_event(env, origin="r1", event_id="ev-rs")
        for ch, env in probe.received
        if ch in (K.join_channel("lobby"), K.join_channel("games"))
    ]
    assert sorted((b["roomId"], b["sessionId"], b["username"]) for b in joins) == [
        ("games", "s1", "alice"),
        ("lobby", "s2", "bob"),
    ]
    assert all(b["timestamp"] == NOW + 70 and b["serverId"] == "r1" for b in joins)
    leaves, disconnects = lost_events(probe)
    assert leaves == {("lobby", "s4"): 1}
    assert disconnects == {"s4": 1}
    (left,) = probe.on(K.leave_channel("lobby"))
    assert json.loads(left.body)["reason"] == "disconnected"
    assert json.loads(probe.on(K.session_disconnect_channel)[0].body) == disconnect_body(
        "s4", "r1", "dave", "disconnected", NOW + 70
    )
    assert probe.on(K.session_connect_channel) == []

    assert await cluster.snapshot() == state(
        servers=[r1b, R2],
        sessions=[*held, records["s3"]],
        rooms=[
            ("lobby", {"s1", "s2", "s3"}, NOW + 1, NOW + 70),
            ("games", {"s1"}, NOW + 70, NOW + 70),
        ],
    )


async def test_restore_drops_memberships_the_relay_no_longer_holds(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster)
    # The relay's truth: s1 left games while the registry was unreachable.
    s1 = in_rooms(records["s1"], ["lobby"], NOW)
    await reg.restore(
        replace(R1, incarnation="inc-1b"), [s1, records["s2"]], LONG_TTL, True, NOW + 70, "ev"
    )
    assert await reg.participants("games") == []
    await reg.remove_session("s1", "r1", ["lobby"], "disconnected", NOW + 80, "ev-r")
    assert await reg.participants("games") == []


@pytest.mark.parametrize(
    "cluster",
    [
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
    indirect=True,
)
async def test_restore_without_last_seen_stores_connected_at(cluster: Cluster) -> None:
    reg = cluster.registry
    held = replace(session("s1"), last_seen=0)
    await reg.restore(R1, [held], LONG_TTL, False, NOW + 60, "ev")
    assert await reg.session("s1") == session("s1")
    assert await cluster.snapshot() == state(servers=[R1], sessions=[session("s1")])


async def test_unregister_server_removes_everything_of_that_relay(cluster: Cluster) -> None:
    reg = cluster.registry
    records = await populate(cluster)
    probe = await event_probe(cluster, ["lobby", "games"])
    await reg.unregister_server("r1", NOW + 80, "ev-u")
    await probe.wait_count(K.session_disconnect_channel, 2)
    await probe.barrier()

    leaves, disconnects = lost_events(probe)
    assert leaves == {("lobby", "s1"): 1, ("lobby", "s2"): 1, ("games", "s1"): 1}
    assert disconnects == {"s1": 1, "s2": 1}
    for channel, env in probe.received:
        if channel.startswith(f"{K.prefix}:event:leave:"):
            body = room_event(env, origin="r1", event_id="ev-u")
            assert body["reason"] == "disconnected"
            assert body["serverId"] == "r1"
    assert all(env.origin == "r1" for env in probe.on(K.session_disconnect_channel))
    assert await cluster.snapshot() == state(
        servers=[R2], sessions=[records["s3"]], rooms=[("lobby", {"s3"}, NOW + 1, NOW + 80)]
    )
    assert await reg.servers() == [(R2, True, 1)]


# -- Redis only: what crosses the wire, and errors at the boundary ------------------------


@pytest.mark.parametrize("cluster", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_redis_registry_honours_the_key_prefix(cluster: Cluster) -> None:
    assert cluster.raw is not None
    keys = Keys("chat")
    reg = RedisRegistry(cluster.url, keys)  # type: ignore[attr-defined]
    try:
        await reg.register_server(R1, LONG_TTL, NOW, "reg")
        await reg.add_session(session("s1"), "ev", incarnation_of(session("s1")))
        assert await reg.join("s1", "lobby", "alice", "r1", NOW, "ev") == (True, 1)
        names = {key async for key in cluster.raw.scan_iter(match="*")}
        assert names == {
            keys.servers_active,
            keys.server_info("r1"),
            keys.server_heartbeat("r1"),
            keys.server_sessions("r1"),
            keys.sessions_active,
            keys.session("s1"),
            keys.current_room("s1"),
            keys.room_participants("lobby"),
            keys.room_info("lobby"),
            keys.history("room:lobby"),
            keys.history_meta("room:lobby"),
            keys.history_ids("room:lobby"),
        }
        assert all(name.startswith("chat:") for name in names)
        assert await reg.rooms() == [RoomRecord("lobby", 1, NOW, NOW)]
    finally:
        await reg.close()


REDIS_ONLY = pytest.mark.parametrize(
    "cluster", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True
)


@REDIS_ONLY
async def test_redis_bus_payload_is_readable_json(cluster: Cluster) -> None:
    """What ``redis-cli SUBSCRIBE`` shows: the documented JSON envelope (contract 4)."""
    assert cluster.raw is not None
    pubsub = cluster.raw.pubsub()
    try:
        await pubsub.subscribe("stomp:test:wire")
        probe = await cluster.probe()
        env = Envelope("w1", "r1", "/topic/t", (("b", "1"), ("a", "2")), b"\x00\xff", NOW)
        await probe.bus.publish("stomp:test:wire", env)
        message = None
        while message is None or message["type"] != "message":
            message = await pubsub.get_message(timeout=5)
            assert message is not None, "nothing published"
        assert json.loads(message["data"]) == {
            "v": 1,
            "id": "w1",
            "origin": "r1",
            "destination": "/topic/t",
            "headers": [["b", "1"], ["a", "2"]],
            "body": base64.b64encode(b"\x00\xff").decode(),
            "encoding": "base64",
            "ts": NOW,
        }
    finally:
        await pubsub.aclose()


@REDIS_ONLY
async def test_redis_bus_ignores_malformed_payloads(cluster: Cluster) -> None:
    assert cluster.raw is not None
    probe = await cluster.probe("stomp:test:junk")
    await cluster.raw.publish("stomp:test:junk", "not json")
    await cluster.raw.publish("stomp:test:junk", '{"v":1,"id":"x"}')
    await cluster.raw.publish("stomp:test:junk", envelope("good").to_json())
    assert [e.id for e in await probe.wait_count("stomp:test:junk", 1)] == ["good"]
    await probe.barrier()
    assert len(probe.on("stomp:test:junk")) == 1


UNREACHABLE_CALLS = {
    "backend_id": lambda reg: reg.backend_id(),
    "register_server": lambda reg: reg.register_server(R1, LONG_TTL, NOW, "reg"),
    "join": lambda reg: reg.join("s1", "lobby", "alice", "r1", NOW, "ev"),
    "dead_servers": lambda reg: reg.dead_servers(),
    "servers": lambda reg: reg.servers(),
    "sessions": lambda reg: reg.sessions(),
    "rooms": lambda reg: reg.rooms(),
    "room": lambda reg: reg.room("lobby"),
}


@pytest.mark.parametrize(
    "call",
    [name for name in UNREACHABLE_CALLS],
)
async def test_redis_registry_translates_connection_errors(call: str) -> None:
    reg = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(BackendUnavailable):
            await UNREACHABLE_CALLS[call](reg)
    finally:
        await reg.close()


async def test_add_session_is_fenced_by_the_relay_registration(cluster: Cluster) -> None:
    """A relay that was reaped (or has a stale incarnation) cannot add sessions the
    reaper would never see: add_session refuses and writes nothing."""
    reg = cluster.registry
    probe = await event_probe(cluster)
    assert await reg.add_session(session("s1"), "ev", "inc-1") is False  # r1 not registered
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    assert await reg.add_session(session("s1"), "ev", "inc-stale") is False
    await probe.barrier()
    assert all_event_ids(probe) == []
    assert await cluster.snapshot() == state(servers=[R1])
    assert await reg.add_session(session("s1"), "ev", "inc-1") is True


async def test_restore_publishes_pending_changes_under_their_ids(cluster: Cluster) -> None:
    """What happened while Redis was unreachable is announced once, under the ids the
    relay already used locally: a join, a leave, a session that ended, one that began."""
    reg = cluster.registry
    records = await populate(cluster)
    probe = await event_probe(cluster, ["lobby", "games", "kitchen"])
    s1 = in_rooms(records["s1"], ["lobby", "kitchen"], NOW + 10)  # left games, joined kitchen
    s4 = session("s4", username="dave")  # connected during the outage, joined nothing
    pending = Pending(
        joins={("s1", "kitchen"): "local-join"},
        leaves={("s1", "games"): "local-leave", ("s2", "lobby"): "local-gone"},
        new_sessions={"s4"},
    )
    published = await reg.restore(
        replace(R1, incarnation="inc-1b"), [s1, s4], LONG_TTL, False, NOW + 20, "ev-r", pending
    )
    assert sorted(published) == ["local-gone", "local-join", "local-leave"]
    await probe.wait_count(K.session_disconnect_channel, 1)
    await probe.barrier()
    ids = {
        (json.loads(env.body)["type"], json.loads(env.body).get("roomId"), env.id)
        for ch, env in probe.received
        if ch != "test:barrier"
    }
    assert ("JOIN", "kitchen", "local-join") in ids
    assert ("LEAVE", "games", "local-leave") in ids
    assert ("LEAVE", "lobby", "local-gone") in ids
    assert any(kind == "CONNECT" for kind, _, _ in ids)
    assert any(kind == "DISCONNECT" for kind, _, _ in ids)
    assert len(ids) == 5
    assert await reg.participants("kitchen") == [Participant("s1", "alice", "r1")]
    assert await reg.participants("games") == []
    assert {p.session_id for p in await reg.participants("lobby")} == {"s1", "s3"}


# -- fences and tombstones (docs/redis.md "Liveness and the reaper") ----------------------


def fenced_registry(cluster: Cluster, stall_ms: int, fence_ms: int) -> Registry:
    if cluster.kind == "memory":
        return MemoryRegistry(cluster.hub, K, stall_ms, fence_ms)  # type: ignore[attr-defined]
    return RedisRegistry(cluster.url, K, stall_ms=stall_ms, fence_ms=fence_ms)  # type: ignore[attr-defined]


async def pause(cluster: Cluster, seconds: float) -> None:
    if cluster.kind == "memory":
        cluster.clock.advance(seconds)  # type: ignore[attr-defined]
    else:
        await asyncio.sleep(seconds)


async def test_nobody_is_reaped_right_after_every_relay_was_silent(cluster: Cluster) -> None:
    """A stall of Redis itself: no refresh from anyone for longer than stall_ms."""
    reg = fenced_registry(cluster, stall_ms=300, fence_ms=900)
    try:
        await reg.register_server(R1, SHORT_TTL, NOW, "reg")
        await reg.register_server(R2, LONG_TTL, NOW, "reg")
        assert await reg.refresh_server("r2", "inc-2", 900)
        await pause(cluster, 0.5)  # nobody refreshes: r1's heartbeat expires meanwhile
        await cluster.expire("r1")
        (dead,) = await reg.dead_servers()
        # the first reap after the silence fences itself; so does the first refresh
        # (its fence lasts one TTL, the refresh's own: 900 ms here)
        assert await reg.reap(dead, "r2", NOW, "ev") is None
        assert await reg.refresh_server("r2", "inc-2", 900)
        assert await reg.reap(dead, "r2", NOW, "ev") is None
        assert await reg.servers() == [(R1, False, 0), (R2, True, 0)]
        assert not await reg.was_reaped("r1", "inc-1")
        # once the fence is over, with r2 refreshing all along, r1 is reaped for real
        for _ in range(6):
            await pause(cluster, 0.2)
            assert await reg.refresh_server("r2", "inc-2", 900)
        assert await reg.reap(dead, "r2", NOW, "ev") == 0
        assert await reg.was_reaped("r1", "inc-1")
        assert not await reg.was_reaped("r1", "inc-other")
        assert not await reg.was_reaped("r2", "inc-2")
    finally:
        await reg.close()


# -- no drift between the backends (issue 17) ----------------------------------------------


async def test_the_tombstone_lives_the_same_time_in_every_backend(cluster: Cluster) -> None:
    """After REAP_TOMBSTONE_MS a relay coming back is no longer told it was reaped:
    memory forgets the tombstone as Redis expires it (one re-registers silently, the
    other would announce, if they disagreed)."""
    reg = cluster.registry
    await populate(cluster, r1_ttl=SHORT_TTL)
    await cluster.expire("r1")
    (dead,) = await reg.dead_servers()
    assert await reg.reap(dead, "r2", NOW + 50, "ev-reap") == 2
    assert await reg.was_reaped("r1", "inc-1")
    remaining = await cluster.pttl(K.reaped("r1"))
    assert REAP_TOMBSTONE_MS - 5_000 < remaining <= REAP_TOMBSTONE_MS
    await cluster.outlive(K.reaped("r1"))
    assert not await reg.was_reaped("r1", "inc-1")


async def test_servers_and_sessions_are_read_from_the_active_indexes(cluster: Cluster) -> None:
    """Mid-operation (records written, index steps not yet run, or the reverse) both
    backends list what the ``servers:active`` and ``sessions:active`` indexes hold."""
    reg = cluster.registry
    store = reg.store  # type: ignore[attr-defined]
    s1 = session("s1")
    await store.server_put(R1, LONG_TTL, ["s1"])
    await store.session_put(s1, None, False)
    assert await reg.servers() == []
    assert await reg.sessions() == []
    unlisted = state(servers=[R1], sessions=[s1])
    del unlisted[K.servers_active], unlisted[K.sessions_active]
    assert await cluster.snapshot() == unlisted
    for name, member in (("servers", "r1"), ("sessions", "s1"), ("servers", "r9")):
        await store.index(name, member, True)
    await store.index("sessions", "s9", True)
    assert await reg.servers() == [(R1, True, 1), (ServerRecord("r9", "", 0, "", 0, ""), False, 0)]
    assert await reg.sessions() == [s1]


async def test_a_wipe_loses_what_flushall_loses(cluster: Cluster) -> None:
    """Suspensions, kicks, tombstones, the fence, locks and indexes go with the
    records: the memory twin of FLUSHALL answers as Redis does after it."""
    reg = cluster.registry
    store = reg.store  # type: ignore[attr-defined]
    until = NOW + LONG_TTL
    await reg.suspend(OperatorCommand("mallory", NOW, until), "test:control", envelope("k"))
    await populate(cluster, r1_ttl=SHORT_TTL)
    await cluster.expire("r1")
    (dead,) = await reg.dead_servers()
    assert await reg.reap(dead, "r2", NOW + 50, "ev-reap") == 2
    assert await store.lock("r2", "sweeper-a", LONG_TTL)
    await store.pulse(LONG_TTL, 1)
    await pause(cluster, 0.05)
    await store.pulse(LONG_TTL, 1)  # a silence longer than the stall: a fence
    assert not await store.may_reap(LONG_TTL, LONG_TTL)
    assert await reg.suspensions(NOW) == Suspensions({"mallory": until}, {"mallory": NOW})
    assert await reg.was_reaped("r1", "inc-1")

    await cluster.wipe()
    assert await cluster.snapshot() == {}
    assert await reg.servers() == []
    assert await reg.sessions() == []
    assert await reg.suspensions(NOW) == Suspensions({}, {})
    assert not await reg.was_reaped("r1", "inc-1")
    assert await store.may_reap(LONG_TTL, LONG_TTL)
    assert await store.lock("r2", "sweeper-b", LONG_TTL)
    assert await store.members("servers") == []
