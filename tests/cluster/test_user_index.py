"""The registry's users (docs/contract.md, section 9), on both backends: each session's
``user`` field, the per-user index of sessions, ``Directory.user_sessions``, and the
``userId`` of room events and participant lists."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from test_contract import (
    LONG_TTL,
    NOW,
    R1,
    R2,
    SHORT_TTL,
    K,
    event_probe,
    in_rooms,
    incarnation_of,
    session,
    state,
)

from stomprelay.cluster.registry import Participant, SessionRecord

if TYPE_CHECKING:
    from conftest import Cluster


def of(record: SessionRecord, user: str) -> SessionRecord:
    return replace(record, user=user)


def row(record: SessionRecord) -> dict[str, object]:
    return {
        "sessionId": record.session_id,
        "serverId": record.server_id,
        "connectedAt": record.connected_at,
        "rooms": list(record.rooms),
    }


async def two_users(cluster: Cluster, r1_ttl: int = LONG_TTL) -> list[SessionRecord]:
    """alice: s1 on r1 and s2 on r2 (a slash in her id); bob: s3 on r1."""
    reg = cluster.registry
    await reg.register_server(R1, r1_ttl, NOW, "reg")
    await reg.register_server(R2, LONG_TTL, NOW, "reg")
    records = [
        of(session("s1", "r1", "Alice", NOW + 1), "al/ice"),
        of(session("s2", "r2", "Alice", NOW), "al/ice"),
        of(session("s3", "r1", "Bob"), "bob"),
    ]
    for i, rec in enumerate(records):
        assert await reg.add_session(rec, f"ev-add{i}", incarnation_of(rec))
    return records


async def test_sessions_are_indexed_by_user(cluster: Cluster) -> None:
    reg = cluster.registry
    s1, s2, s3 = await two_users(cluster)
    snapshot = await cluster.snapshot()
    assert snapshot == state(servers=[R1, R2], sessions=[s1, s2, s3])
    assert snapshot[K.user_sessions("al/ice")] == {"s1", "s2"}
    assert "stomp:user:{al%2Fice}:sessions" in snapshot
    assert snapshot[K.session("s1")]["user"] == "al/ice"
    # oldest first
    assert await reg.user_sessions("al/ice") == [row(s2), row(s1)]
    assert await reg.user_sessions("bob") == [row(s3)]
    assert await reg.user_sessions("nobody") == []
    assert await reg.session("s1") == s1

    await reg.remove_session("s2", "r2", [], "disconnected", NOW + 9, "ev-rm")
    assert await reg.user_sessions("al/ice") == [row(s1)]
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 9, "ev-rm2")
    assert await reg.user_sessions("al/ice") == []
    assert K.user_sessions("al/ice") not in await cluster.snapshot()


async def test_a_session_without_a_user_is_in_no_index(cluster: Cluster) -> None:
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    anonymous = session("s9")
    await reg.add_session(anonymous, "ev", incarnation_of(anonymous))
    assert await cluster.snapshot() == state(servers=[R1], sessions=[anonymous])
    assert await reg.user_sessions("") == []


async def test_room_events_and_participants_carry_the_user(cluster: Cluster) -> None:
    reg = cluster.registry
    s1, _, s3 = await two_users(cluster)
    probe = await event_probe(cluster, ["lobby"])
    assert await reg.join("s1", "lobby", "Alice", "r1", NOW + 5, "ev-j1", "al/ice") == (True, 1)
    assert await reg.join("s3", "lobby", "Bob", "r1", NOW + 6, "ev-j3", "bob") == (True, 2)
    await reg.leave("s3", "lobby", "r1", "left", NOW + 7, "ev-l3")
    envs = await probe.wait_count(K.join_channel("lobby"), 2)
    (leave,) = await probe.wait_count(K.leave_channel("lobby"), 1)
    assert [json.loads(e.body)["userId"] for e in envs] == ["al/ice", "bob"]
    assert json.loads(leave.body)["userId"] == "bob"
    assert await reg.participants("lobby") == [Participant("s1", "Alice", "r1", "al/ice")]
    assert await reg.user_sessions("al/ice") == [
        row(of(session("s2", "r2", "Alice", NOW), "al/ice")),
        row(in_rooms(s1, ["lobby"], NOW + 5)),
    ]
    # a session that disconnects leaves with its userId too
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 8, "ev-rm")
    (_, gone) = await probe.wait_count(K.leave_channel("lobby"), 2)
    assert json.loads(gone.body)["userId"] == "al/ice"
    assert s3.user == "bob"


async def test_the_reaper_unlists_a_dead_relays_sessions(cluster: Cluster) -> None:
    reg = cluster.registry
    s1, s2, s3 = await two_users(cluster, r1_ttl=SHORT_TTL)
    await cluster.expire("r1")
    (dead,) = await reg.dead_servers()
    assert await reg.reap(dead, "r2", NOW + 50, "ev-reap") == 2
    assert await reg.user_sessions("al/ice") == [row(s2)]
    assert await reg.user_sessions("bob") == []
    assert await cluster.snapshot() == state(servers=[R2], sessions=[s2])
    assert s1.user == s2.user != s3.user


async def test_a_restore_puts_the_index_back(cluster: Cluster) -> None:
    reg = cluster.registry
    s1, s2, s3 = await two_users(cluster)
    await cluster.wipe()
    assert await reg.user_sessions("al/ice") == []
    r1b = replace(R1, incarnation="inc-1b")
    await reg.restore(r1b, [s1, s3], LONG_TTL, False, NOW + 60, "ev-restore")
    assert await reg.user_sessions("al/ice") == [row(s1)]
    assert await reg.user_sessions("bob") == [row(s3)]
    assert await cluster.snapshot() == state(servers=[r1b], sessions=[s1, s3])
    assert s2.server_id == "r2"


async def test_an_id_left_by_a_removal_cut_short_is_dropped_when_read(cluster: Cluster) -> None:
    reg = cluster.registry
    s1, _, _ = await two_users(cluster)
    # the index entry of a session whose hash is gone (a removal that stopped there)
    await reg.store.user_index("al/ice", "s-gone", True)
    assert await reg.user_sessions("al/ice") == [
        row(of(session("s2", "r2", "Alice", NOW), "al/ice")),
        row(s1),
    ]
    assert "s-gone" not in (await cluster.snapshot())[K.user_sessions("al/ice")]
