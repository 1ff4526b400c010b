"""The dashboard's reads (stomprelay.dashboard) over the in-memory backends: pages
of rooms and sessions, relays' states, the sampler with a fake clock, the
cluster-wide series; and ``?q=&offset=&limit=`` checked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from stomprelay.api import ApiError
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.cluster.registry import ServerRecord, SessionRecord
from stomprelay.cluster.samples import (
    Period,
    Ring,
    Sample,
    period_json,
    period_of,
    sample_json,
    sample_of,
)
from stomprelay.dashboard import (
    DEFAULT_LIMIT,
    MAX_SAMPLES,
    Dashboard,
    MemoryDashboardStore,
    PageQuery,
    Reading,
    Sampler,
    cluster_series,
    page_query,
)
from stomprelay.errors import BackendUnavailable
from stomprelay.factory import build_backends
from stomprelay.settings import Settings

NOW = 1_800_000_000_000


# -- ?q=&offset=&limit= -----------------------------------------------------------------


def test_a_query_without_paging_parameters_asks_for_no_page() -> None:
    assert page_query("") is None
    assert page_query("other=1") is None


def test_paging_parameters_and_their_defaults() -> None:
    assert page_query("q=") == PageQuery("", 0, DEFAULT_LIMIT)
    assert page_query("q=lob&offset=20&limit=10") == PageQuery("lob", 20, 10)
    assert page_query("offset=5") == PageQuery("", 5, DEFAULT_LIMIT)
    assert page_query("limit=100") == PageQuery("", 0, 100)
    assert page_query("q=a%20b") == PageQuery("a b", 0, DEFAULT_LIMIT)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=1e3", "offset"),
        ("offset=%C2%B2", "offset"),
        ("offset=" + "9" * 5000, "offset"),
        ("q=" + "x" * 129, "q"),
        ("q=%00", "q"),
    ],
)
def test_bad_paging_parameters_are_400s_naming_the_field(query: str, field: str) -> None:
    with pytest.raises(ApiError) as raised:
        page_query(query)
    assert raised.value.status == 400
    assert raised.value.field == field


def test_a_page_window_past_the_end_is_empty() -> None:
    assert list(range(10))[PageQuery("", 8, 5).window(10)] == [8, 9]
    assert list(range(10))[PageQuery("", 50, 5).window(10)] == []


# -- the views over one node's registry ----------------------------------------------------


async def populated() -> Dashboard:
    settings = Settings()
    backends = build_backends(settings)
    registry = backends.registry
    await registry.register_server(
        ServerRecord("relay-a", "127.0.0.1", 8080, "1.0", NOW - 60_000, "inc-a"), 10_000, NOW, "r"
    )
    for i, user in enumerate(["alice", "bob", "alicia", "carol"]):
        sid = f"s{i}"
        record = SessionRecord(sid, "relay-a", user, "127.0.0.1", "1.2", NOW, user=user)
        assert await registry.add_session(record, f"e{i}", "inc-a")
        # rooms joined in order: the later, the more recently active
        room = ["lobby", "kitchen", "lobby-2", "attic"][i]
        assert await registry.join(sid, room, user, "relay-a", NOW + i, f"j{i}", user)
    store = MemoryDashboardStore(registry)
    return Dashboard(
        backends,
        HistoryPolicy.of(settings),
        store,
        self_id="relay-a",
        liveness_interval=3.0,
        liveness_ttl=10.0,
        wall_ms=lambda: NOW + 1_000,
    )


async def test_rooms_most_recently_active_first_searched_and_paged() -> None:
    dashboard = await populated()
    everything = await dashboard.rooms(PageQuery())
    assert [r["roomId"] for r in everything["rooms"]] == ["attic", "lobby-2", "kitchen", "lobby"]  # type: ignore[union-attr]
    assert everything["total"] == 4
    found = await dashboard.rooms(PageQuery("lobby", 0, 1))
    assert found["total"] == 2
    assert [r["roomId"] for r in found["rooms"]] == ["lobby-2"]  # type: ignore[union-attr]
    second = await dashboard.rooms(PageQuery("lobby", 1, 1))
    assert [r["roomId"] for r in second["rooms"]] == ["lobby"]  # type: ignore[union-attr]
    row = second["rooms"][0]  # type: ignore[index]
    assert row["participants"] == 1
    assert row["history"]["epoch"]  # the JOIN took its place in the room's log
    assert row["history"]["lastOffset"] == 1
    assert (await dashboard.rooms(PageQuery("cellar")))["rooms"] == []


async def test_sessions_searched_by_user_or_session_id_and_paged() -> None:
    dashboard = await populated()
    alices = await dashboard.sessions(PageQuery("ali"))
    assert alices["total"] == 2
    assert {s["user"] for s in alices["sessions"]} == {"alice", "alicia"}  # type: ignore[union-attr]
    assert [s["sessionId"] for s in (await dashboard.sessions(PageQuery("s3")))["sessions"]] == [  # type: ignore[union-attr]
        "s3"
    ]
    page = await dashboard.sessions(PageQuery("", 1, 2))
    assert [s["sessionId"] for s in page["sessions"]] == ["s1", "s2"]  # type: ignore[union-attr]
    assert page["total"] == 4


async def test_servers_on_one_node_are_up_with_their_uptime_and_sessions() -> None:
    dashboard = await populated()
    view = await dashboard.servers()
    (relay,) = view["servers"]  # type: ignore[misc]
    assert relay["serverId"] == "relay-a"
    assert relay["state"] == "up"
    assert relay["sessions"] == 4
    assert relay["uptime"] == 61.0
    assert relay["self"] is True
    assert relay["degradedPeriods"] == []


# -- the sampler ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return NOW + int(self.now * 1000)


def sampler_with(
    readings: list[Reading], down: list[bool], store: MemoryDashboardStore, clock: Clock
) -> Sampler:
    async def ping() -> None:
        clock.now += 0.002  # a 2 ms round trip

    async def guard(call: Callable[[], Awaitable[None]]) -> None:
        if down[0]:
            raise BackendUnavailable("redis down")
        await call()

    return Sampler(
        "relay-a",
        store,
        lambda: readings[0],
        ping,
        guard,
        interval=5.0,
        window=60.0,
        wall_ms=clock.ms,
        clock=clock,
    )


def test_the_sample_interval_has_a_floor_and_the_ring_a_cap() -> None:
    from stomprelay.options import OptionError, check

    with pytest.raises(OptionError, match=r"--dashboard-interval must be at least 0\.05"):
        check({"dashboard_interval": 0.01})
    check({"dashboard_interval": 0.05})
    store = MemoryDashboardStore(build_backends(Settings()).registry)

    async def ping() -> None:
        return None

    async def guard(call: Callable[[], Awaitable[None]]) -> None:
        await call()

    fast = Sampler("relay-a", store, lambda: Reading(0, 0, 0, 0), ping, guard, interval=0.05)
    assert fast.keep == MAX_SAMPLES == 1800
    assert fast.samples.maxlen == MAX_SAMPLES
    assert Sampler("relay-a", store, lambda: Reading(0, 0, 0, 0), ping, guard).keep == 180


async def test_samples_are_rates_over_the_interval_and_reach_the_store_once_redis_is_back() -> None:
    settings = Settings()
    store = MemoryDashboardStore(build_backends(settings).registry)
    clock = Clock()
    readings = [Reading(3, 100.0, 1000.0, 0.0)]
    down = [False]
    sampler = sampler_with(readings, down, store, clock)
    first = await sampler.tick()
    assert (first.connections, first.sends, first.deliveries, first.rtt_ms) == (3, 0.0, 0.0, 2.0)

    clock.now += 4.998
    readings[0] = Reading(5, 150.0, 1500.0, 0.0)
    second = await sampler.tick()
    assert (second.sends, second.deliveries) == (10.0, 100.0)

    # Redis goes: the sampler's round trip is None, the sample stays on the relay
    down[0] = True
    went = clock.ms()
    sampler.outage(up=False)
    clock.now += 5
    readings[0] = Reading(5, 150.0, 1500.0, 4.0)
    third = await sampler.tick()
    assert third.rtt_ms is None
    assert third.degraded == 4.0
    assert len((await store.rings(["relay-a"]))["relay-a"].samples) == 2
    assert sampler.current_periods()[-1].end == 0  # the outage goes on

    # back: the period is over and everything the store missed reaches it
    clock.now += 2
    down[0] = False
    back = clock.ms()
    sampler.outage(up=True)
    clock.now += 3
    await sampler.tick()
    ring = (await store.rings(["relay-a"]))["relay-a"]
    assert len(ring.samples) == 4
    assert [(p.start, p.end) for p in ring.periods] == [(went, back)]
    assert ring.periods == sampler.current_periods()


async def test_the_ring_keeps_the_window() -> None:
    store = MemoryDashboardStore(build_backends(Settings()).registry)
    clock = Clock()
    sampler = sampler_with([Reading(0, 0, 0, 0)], [False], store, clock)
    for _ in range(20):
        clock.now += 5
        await sampler.tick()
    assert sampler.keep == 12
    assert len(sampler.samples) == 12
    assert len((await store.rings(["relay-a"]))["relay-a"].samples) == 12
    await sampler.stop()
    assert await store.rings(["relay-a"]) == {}


def test_the_cluster_series_adds_relays_up_per_interval() -> None:
    a = Ring([Sample(10_000, 2, 1.0, 4.0, 0.5, 0.0), Sample(15_000, 3, 2.0, 6.0, 0.7, 0.0)], [])
    # relay b sampled twice within one interval: its latest sample counts
    b = Ring(
        [
            Sample(11_000, 1, 1.0, 1.0, 2.0, 1.0),
            Sample(14_000, 5, 3.0, 3.0, None, 0.0),
            Sample(16_000, 4, 3.0, 3.0, 0.1, 0.0),
        ],
        [],
    )
    series = cluster_series([a, b], 5.0)
    assert series == [
        {
            "t": 10_000,
            "connections": 7,
            "sends": 4.0,
            "deliveries": 7.0,
            "rttMs": 0.5,
            "degraded": 0.0,
            "relays": 2,
        },
        {
            "t": 15_000,
            "connections": 7,
            "sends": 5.0,
            "deliveries": 9.0,
            "rttMs": 0.7,
            "degraded": 0.0,
            "relays": 2,
        },
    ]


def test_a_relay_missing_from_one_interval_counts_with_its_sample_before() -> None:
    a = Ring([Sample(t, 2, 0.0, 0.0, 1.0, 0.0) for t in (10_000, 15_000, 20_000)], [])
    # b's clock ticks late: no sample in the bucket of 15 s, two in the one of 20 s
    b = Ring([Sample(14_900, 3, 0.0, 0.0, 1.0, 0.0), Sample(20_100, 5, 0.0, 0.0, 1.0, 0.0)], [])
    series = cluster_series([a, b], 5.0)
    assert [(row["t"], row["connections"]) for row in series] == [
        (10_000, 5),
        (15_000, 5),
        (20_000, 7),
    ]
    # a relay gone counts one interval more, no longer
    gone = Ring([Sample(10_000, 3, 0.0, 0.0, 1.0, 0.0)], [])
    assert [row["connections"] for row in cluster_series([a, gone], 5.0)] == [5, 5, 2]


def test_ring_entries_round_trip_and_garbage_is_skipped() -> None:
    sample = Sample(NOW, 2, 1.5, 3.25, None, 0.5)
    assert sample_of(sample_json(sample)) == sample
    assert period_of(period_json(Period(1, 2))) == Period(1, 2)
    assert sample_of("not json") is None
    assert sample_of('{"t": 1}') is None
    assert period_of("[1]") is None
