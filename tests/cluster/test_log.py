"""The destination-log contract (docs/history.md), over the memory and the Redis log.

Append and publish are one step; offsets are contiguous from 1; an append of a
known message id adds nothing and publishes nothing; the log keeps its last
``size`` entries and every younger one than ``min_age``, under a hard cap (ids
outlive the entries); an emptied store starts a new
epoch; topic logs are capped; reads give first/last and pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, Log
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryHub, MemoryRegistry
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.settings import Settings

if TYPE_CHECKING:
    from conftest import Cluster

K = Keys()
CHANNEL = K.room_channel("lobby")


@dataclass
class Logs:
    cluster: Cluster
    log: Log
    wipe: Any


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def logs(request: pytest.FixtureRequest, backend_classes: Any) -> AsyncIterator[Any]:
    """``await logs(policy)`` -> a :class:`Logs` of that backend with that policy."""
    memory_cluster, redis_cluster = backend_classes
    made: list[Cluster] = []

    async def factory(policy: HistoryPolicy) -> Logs:
        cluster: Cluster
        if request.param == "memory":
            mem = memory_cluster()
            mem.hub = MemoryHub(clock=mem.clock, policy=policy)
            mem.registry = MemoryRegistry(mem.hub, mem.keys)
            cluster = mem
            made.append(cluster)

            async def wipe() -> None:
                mem.hub.wipe()

            return Logs(cluster, mem.hub.log, wipe)
        server = request.getfixturevalue("redis_server")
        red = redis_cluster(server.url)
        await red.raw.flushall()
        await red.registry.close()
        red.registry = RedisRegistry(server.url, red.keys, policy=policy)
        made.append(red)
        return Logs(red, red.registry.log, red.raw.flushall)

    yield factory
    for cluster in made:
        await cluster.close()


def message(n: int, dest: str = "/topic/room/lobby") -> Envelope:
    return Envelope(f"m{n}", "r1", dest, (("content-type", "text/plain"),), f"b{n}".encode(), n)


async def test_appends_get_contiguous_offsets_and_are_published_with_them(logs) -> None:
    it = await logs(HistoryPolicy())
    probe = await it.cluster.probe(CHANNEL)
    got = [await it.log.append("room:lobby", CHANNEL, message(i), i) for i in range(1, 4)]
    assert [e.offset for e in got] == [1, 2, 3]
    assert len({e.epoch for e in got}) == 1
    assert got[0].epoch
    published = await probe.wait_count(CHANNEL, 3)
    assert published == got
    assert [replace(e, offset=0, epoch="") for e in published] == [message(i) for i in (1, 2, 3)]
    read = await it.log.read("room:lobby", 1, 10)
    assert (read.epoch, read.first, read.last, read.length) == (got[0].epoch, 1, 3, 3)
    assert list(read.entries) == got[1:]


async def test_an_append_is_idempotent_by_message_id(logs) -> None:
    it = await logs(HistoryPolicy())
    probe = await it.cluster.probe(CHANNEL)
    first = await it.log.append("room:lobby", CHANNEL, message(1), 1)
    again = await it.log.append("room:lobby", CHANNEL, message(1), 1)
    assert again == first
    await it.log.append("room:lobby", CHANNEL, message(2), 2)
    await probe.barrier()
    assert [e.id for e in probe.on(CHANNEL)] == ["m1", "m2"]
    assert (await it.log.read("room:lobby", 0, 10)).last == 2


async def test_the_log_is_trimmed_exactly_and_forgets_trimmed_ids(logs) -> None:
    it = await logs(HistoryPolicy(size=3, min_age_ms=0))
    for i in range(1, 6):
        await it.log.append("room:lobby", CHANNEL, message(i), i)
    read = await it.log.read("room:lobby", 0, 10)
    assert (read.first, read.last, [e.offset for e in read.entries]) == (3, 5, [3, 4, 5])
    # ids outlive their entries: a trimmed message appended again is still known
    assert (await it.log.append("room:lobby", CHANNEL, message(4), 9)).offset == 4
    assert (await it.log.append("room:lobby", CHANNEL, message(1), 9)).offset == 1
    assert (await it.log.read("room:lobby", 0, 10)).last == 5
    tail = await it.log.read("room:lobby", 0, 10, tail=2)
    assert [e.offset for e in tail.entries] == [4, 5]
    page = await it.log.read("room:lobby", 3, 1)
    assert [e.offset for e in page.entries] == [4]


async def test_ids_are_forgotten_past_the_id_window(logs) -> None:
    policy = HistoryPolicy(size=3, min_age_ms=0)
    it = await logs(policy)
    for i in range(1, policy.id_window + 3):
        await it.log.append("room:lobby", CHANNEL, message(i), i)
    assert (await it.log.append("room:lobby", CHANNEL, message(1), 0)).offset == (
        policy.id_window + 3
    )
    assert (await it.log.append("room:lobby", CHANNEL, message(10), 0)).offset == 10


async def age(it: Logs, seconds: float) -> None:
    """Let the log's entries grow older: the memory log's clock moves; Redis's
    own TIME (which stamps each append) has to really pass."""
    clock = getattr(it.cluster, "clock", None)
    if clock is not None:
        clock.advance(seconds)
    else:
        await asyncio.sleep(seconds)


async def test_young_entries_are_kept_past_the_size_up_to_the_hard_cap(logs) -> None:
    """Two journals appended at once after an outage outgrow ``size``: nothing of
    them goes while younger than ``min_age``; ``max_size`` still bounds the log."""
    it = await logs(HistoryPolicy(size=3, min_age_ms=60_000, max_size=8))
    for i in range(1, 8):
        await it.log.append("room:lobby", CHANNEL, message(i), i)
    read = await it.log.read("room:lobby", 0, 20)
    assert (read.first, read.last) == (1, 7)
    assert [e.offset for e in read.entries] == list(range(1, 8))
    for i in range(8, 12):
        await it.log.append("room:lobby", CHANNEL, message(i), i)
    read = await it.log.read("room:lobby", 0, 20)
    assert (read.first, read.last, read.length) == (4, 11, 8)


async def test_entries_past_both_rules_are_dropped_oldest_first(logs) -> None:
    it = await logs(HistoryPolicy(size=3, min_age_ms=400, max_size=100))
    for i in range(1, 7):
        await it.log.append("room:lobby", CHANNEL, message(i), i)
    await age(it, 0.5)
    await it.log.append("room:lobby", CHANNEL, message(7), 7)
    read = await it.log.read("room:lobby", 0, 20)
    # 1..4 are old and past the last 3; 5 and 6 are old but within the last 3
    assert (read.first, read.last) == (5, 7)
    for i in range(8, 11):
        await it.log.append("room:lobby", CHANNEL, message(i), i)
    read = await it.log.read("room:lobby", 0, 20)
    assert [e.offset for e in read.entries] == [7, 8, 9, 10]  # 7 is young


async def test_the_id_window_covers_the_hard_cap() -> None:
    assert HistoryPolicy(size=200).cap == 2000
    assert HistoryPolicy(size=10, max_size=50_000).id_window == 50_000
    assert HistoryPolicy(size=500, max_size=10).cap == 500


def test_the_default_retention_is_the_documented_one() -> None:
    """docs/history.md: the last 200, every message younger than 120 s, under a cap
    of ten times the size; ids remembered for at least the cap."""
    policy = HistoryPolicy.of(Settings())
    assert (policy.size, policy.min_age_ms, policy.cap) == (200, 120_000, 2000)
    assert policy.id_window >= policy.cap
    assert HistoryPolicy.of(Settings(history_size=50)).cap == 500
    assert HistoryPolicy.of(Settings(history_size=50, history_max_size=1000)).cap == 1000


async def test_a_lost_store_starts_a_new_epoch(logs) -> None:
    it = await logs(HistoryPolicy())
    old = await it.log.append("room:lobby", CHANNEL, message(1), 1)
    await it.wipe()
    assert (await it.log.read("room:lobby", 0, 10)).epoch == ""
    new = await it.log.append("room:lobby", CHANNEL, message(2), 2)
    assert new.offset == 1
    assert new.epoch
    assert new.epoch != old.epoch


async def test_topic_logs_are_capped_rooms_are_not(logs) -> None:
    it = await logs(HistoryPolicy(max_topics=1))
    a = await it.log.append("topic:a", K.topic_channel("a"), message(1, "/topic/a"), 1)
    b = await it.log.append("topic:b", K.topic_channel("b"), message(2, "/topic/b"), 2)
    room = await it.log.append("room:lobby", CHANNEL, message(3), 3)
    assert (a.offset, b.offset, room.offset) == (1, 0, 1)
    assert (await it.log.read("topic:b", 0, 10)).epoch == ""


async def test_the_topic_cap_forgets_a_topic_one_ttl_after_its_last_admission(logs) -> None:
    """One rule counts the cap (``history.admit_topic``, the ``TOPIC_ADMIT`` script):
    the topics index, by the time the appends carry, not the logs alive in a store."""
    it = await logs(HistoryPolicy(max_topics=1, ttl_ms=60_000))
    a = await it.log.append("topic:a", K.topic_channel("a"), message(1, "/topic/a"), 1_000)
    b = await it.log.append("topic:b", K.topic_channel("b"), message(2, "/topic/b"), 2_000)
    c = await it.log.append("topic:c", K.topic_channel("c"), message(3, "/topic/c"), 61_000)
    assert (a.offset, b.offset, c.offset) == (1, 0, 1)


async def test_rooms_only_and_size_zero_log_nothing_else(logs) -> None:
    it = await logs(HistoryPolicy(rooms_only=True))
    topic = await it.log.append("topic:a", K.topic_channel("a"), message(1, "/topic/a"), 1)
    assert topic.offset == 0
    off = await logs(HistoryPolicy(size=0))
    assert (await off.log.append("room:lobby", CHANNEL, message(1), 1)).offset == 0


@pytest.mark.redis
async def test_redis_log_keys_expire_after_the_ttl_and_read_like_the_docs(redis_server) -> None:
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await raw.flushall()
    reg = RedisRegistry(redis_server.url, K, policy=HistoryPolicy(ttl_ms=60_000))
    try:
        await reg.log.append("room:lobby", CHANNEL, message(1), 1)
        for key in (K.history("room:lobby"), K.history_meta("room:lobby")):
            assert 0 < await raw.pttl(key) <= 60_000
        entries = await raw.xrange(K.history("room:lobby"))
        assert entries[0][0] == "1-0"
        assert entries[0][1]["i"] == "m1"
        assert Envelope.from_json(entries[0][1]["e"]) == message(1)
        meta = await raw.hgetall(K.history_meta("room:lobby"))
        assert meta["seq"] == "1"
        assert meta["epoch"]
    finally:
        await reg.close()
        await raw.aclose()


@pytest.mark.redis
async def test_a_busy_pool_makes_commands_wait_not_fail(redis_server) -> None:
    """More concurrent operations than connections: they queue (a connect storm must
    not look like Redis being down)."""
    reg = RedisRegistry(redis_server.url, K, pool_size=2)
    try:
        results = await asyncio.gather(
            *(reg.log.append("room:pool", CHANNEL, message(i), i) for i in range(1, 201))
        )
        assert sorted(e.offset for e in results) == list(range(1, 201))
    finally:
        await reg.close()


async def test_a_batch_of_appends_is_the_appends_one_by_one(logs) -> None:
    it = await logs(HistoryPolicy())
    other = K.room_channel("den")
    probe = await it.cluster.probe(CHANNEL, other)
    items = [
        ("room:lobby" if i % 2 else "room:den", CHANNEL if i % 2 else other, message(i))
        for i in range(1, 9)
    ]
    items.append(("room:lobby", CHANNEL, message(1)))  # a known id: its offset, nothing new
    got = await it.log.append_many(items, 5)
    assert [(e.destination, e.offset) for e in got if isinstance(e, Envelope)] == [
        ("/topic/room/lobby", n) for n in (1, 1, 2, 2, 3, 3, 4, 4, 1)
    ]
    assert len({e.epoch for e in got[::2] if isinstance(e, Envelope)}) == 1
    await probe.barrier()
    assert [e.id for e in probe.on(CHANNEL)] == ["m1", "m3", "m5", "m7"]
    assert [e.id for e in probe.on(other)] == ["m2", "m4", "m6", "m8"]
    assert (await it.log.read("room:lobby", 0, 10)).last == 4
    assert (await it.log.read("room:den", 0, 10)).last == 4


@pytest.mark.redis
async def test_an_append_of_a_batch_fails_alone_and_a_lost_script_is_loaded(
    redis_server: Any,
) -> None:
    """On Redis: one log whose key Redis cannot append to fails its append only;
    after SCRIPT FLUSH the batch script is loaded again."""
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.flushall()
    registry = RedisRegistry(redis_server.url, K, policy=HistoryPolicy())
    try:
        _, meta, _ = K.log_keys("room:broken")
        await raw.set(meta, "not a hash")
        items = [
            ("room:lobby", CHANNEL, message(1)),
            ("room:broken", K.room_channel("broken"), message(2, "/topic/room/broken")),
            ("room:lobby", CHANNEL, message(3)),
        ]
        got = await registry.log.append_many(items, 1)
        assert [getattr(e, "offset", None) for e in got] == [1, None, 2]
        assert "WRONGTYPE" in str(got[1])
        await raw.script_flush()
        again = await registry.log.append_many(
            [items[0], items[2], ("room:lobby", CHANNEL, message(4))], 1
        )
        assert [getattr(e, "offset", None) for e in again] == [1, 2, 3]
    finally:
        await registry.close()
        await raw.aclose()
