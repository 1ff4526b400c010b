"""The dashboard's store (stomprelay.cluster.samples.DashboardStore) on both backends:
the same rooms and sessions found for a search, the rings capped; on Redis, the
rings' TTL and the relays' heartbeats as the dashboard shows them (up, late, dead,
being reaped)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from test_contract import LONG_TTL, NOW, R1, R2, incarnation_of, session

from stomprelay.cluster.backends import Backends
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.cluster.memory import MemoryBus
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.samples import MAX_PERIODS, RING_TTL, DashboardStore, Period, Sample
from stomprelay.dashboard import Dashboard, MemoryDashboardStore, PageQuery

if TYPE_CHECKING:
    from conftest import Cluster
    from procs import RedisServer


def store_of(cluster: Cluster) -> DashboardStore:
    registry = cluster.registry
    if isinstance(registry, RedisRegistry):
        return registry.dashboard()
    return MemoryDashboardStore(registry)


async def populate(cluster: Cluster) -> None:
    """r1: alice (lobby, games), alicia (lobby); r2: bob (kitchen), most recent."""
    reg = cluster.registry
    await reg.register_server(R1, LONG_TTL, NOW, "reg")
    await reg.register_server(R2, LONG_TTL, NOW, "reg")
    people = [("s1", "r1", "alice"), ("s2", "r1", "alicia"), ("s3", "r2", "bob")]
    for i, (sid, server, user) in enumerate(people):
        record = replace(session(sid, server, user), user=user)
        assert await reg.add_session(record, f"ev-add{i}", incarnation_of(record))
    await reg.join("s1", "lobby", "alice", "r1", NOW + 1, "ev-j1", "alice")
    await reg.join("s2", "lobby", "alicia", "r1", NOW + 2, "ev-j2", "alicia")
    await reg.join("s1", "games", "alice", "r1", NOW + 3, "ev-j3", "alice")
    await reg.join("s3", "kitchen", "bob", "r2", NOW + 4, "ev-j4", "bob")


async def test_rooms_and_sessions_found_for_a_search(cluster: Cluster) -> None:
    await populate(cluster)
    store = store_of(cluster)
    rooms = {r.room_id: r for r in await store.room_index("")}
    assert set(rooms) == {"lobby", "games", "kitchen"}
    assert (rooms["lobby"].participants, rooms["lobby"].last_activity) == (2, NOW + 2)
    assert {r.room_id for r in await store.room_index("itch")} == {"kitchen"}
    # glob characters are matched as themselves (no room id can hold them)
    assert await store.room_index("*") == []
    assert await store.room_index("l?bby") == []

    assert sorted(await store.session_ids("")) == ["s1", "s2", "s3"]
    assert sorted(await store.session_ids("ali")) == ["s1", "s2"]
    assert sorted(await store.session_ids("s3")) == ["s3"]  # a session id
    assert await store.session_ids("*") == []
    records = await store.sessions_of(["s3", "gone", "s1"])
    assert [(r.session_id, r.user, r.rooms) for r in records] == [
        ("s3", "bob", ["kitchen"]),
        ("s1", "alice", ["lobby", "games"]),
    ]


async def test_the_rings_keep_their_last_entries(cluster: Cluster) -> None:
    store = store_of(cluster)
    samples = [Sample(NOW + i, i, 1.0, 2.0, 0.5, 0.0) for i in range(8)]
    periods = [Period(NOW + i, NOW + i + 1) for i in range(MAX_PERIODS + 3)]
    await store.push("r1", samples[:5], periods[:2], keep=6)
    await store.push("r1", samples[5:], periods[2:], keep=6)
    rings = await store.rings(["r1", "r2"])
    assert rings["r1"].samples == samples[2:]
    assert rings["r1"].periods == periods[3:]
    assert rings.get("r2") is None or rings["r2"].samples == []
    if cluster.raw is not None:
        ttl = await cluster.pttl(cluster.keys.server_samples("r1"))
        assert 0 < ttl <= RING_TTL * 1000
        assert await cluster.pttl(cluster.keys.server_degraded("r1")) > 0
    # a relay that stops deletes its rings
    await store.forget("r1")
    gone = (await store.rings(["r1"])).get("r1")
    assert gone is None or (gone.samples, gone.periods) == ([], [])
    if cluster.raw is not None:
        assert not await cluster.raw.exists(
            cluster.keys.server_samples("r1"), cluster.keys.server_degraded("r1")
        )


@pytest.mark.redis
async def test_relays_up_late_dead_and_being_reaped(
    redis_server: RedisServer, backend_classes: tuple[type[Cluster], type[Cluster]]
) -> None:
    """Redis only: a heartbeat's age is read from its TTL."""
    cluster = backend_classes[1](redis_server.url)  # type: ignore[call-arg]
    try:
        await cluster.raw.flushall()
        await relays_as_shown(cluster)
    finally:
        await cluster.close()


async def relays_as_shown(cluster: Cluster) -> None:
    await populate(cluster)
    registry = cluster.registry
    assert isinstance(registry, RedisRegistry)
    dashboard = Dashboard(
        Backends(MemoryBus(), registry, registry.log, cluster.keys),
        HistoryPolicy(),
        registry.dashboard(),
        self_id="r1",
        liveness_interval=3.0,
        liveness_ttl=60.0,
    )
    keys = cluster.keys
    # r1 refreshed a moment ago; r2's heartbeat is 20 s old (40 s of 60 left)
    await cluster.raw.pexpire(keys.server_heartbeat("r2"), 40_000)
    states = {s["serverId"]: s for s in (await dashboard.servers())["servers"]}  # type: ignore[attr-defined]
    assert states["r1"]["state"] == "up"
    assert states["r2"]["state"] == "late"
    assert 19_000 <= states["r1"]["lastHeartbeat"] - states["r2"]["lastHeartbeat"] <= 21_000
    assert states["r2"]["sessions"] == 1

    # r2's heartbeat expires; a sweeper takes its lock
    await cluster.raw.delete(keys.server_heartbeat("r2"))
    await cluster.raw.set(keys.reaper_lock("r2"), "sweeper", px=60_000)
    states = {s["serverId"]: s for s in (await dashboard.servers())["servers"]}  # type: ignore[attr-defined]
    assert (states["r2"]["state"], states["r2"]["reaping"]) == ("dead", True)
    assert states["r2"]["uptime"] is None

    page = await dashboard.sessions(PageQuery("", 1, 5))
    assert [s["sessionId"] for s in page["sessions"]] == ["s2", "s3"]  # type: ignore[union-attr]
    rooms = await dashboard.rooms(PageQuery("", 0, 2))
    assert [r["roomId"] for r in rooms["rooms"]] == ["kitchen", "games"]  # type: ignore[union-attr]
    assert rooms["total"] == 3
