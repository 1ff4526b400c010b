"""The queue store's steps (docs/queues.md), one suite for the in-memory store and the
Redis Streams one: bounded pushes, reads that hand each entry to one consumer,
acknowledgements, requeues that count deliveries and dead-letter at the most, a dead
consumer's release, and the numbers operators see."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from procs import RedisServer
from topology import ClusterTopology, require_redis7

from stomprelay.cluster import redis_queues
from stomprelay.cluster.connect import RedisTarget
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.queue_store import MemoryQueues, QueueStats, QueueStore, Requeue
from stomprelay.cluster.redis_queues import RedisQueues

MOST = 3


def envelope(i: int) -> Envelope:
    return Envelope(f"id-{i}", "relay", "/queue/q", (("k", "v"),), f"m{i}".encode(), 1)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """Three Redis Cluster masters: each step must keep to one slot."""
    require_redis7()
    with ClusterTopology(tmp_path_factory.mktemp("queue-cluster"), masters=3, replicas=0) as topo:
        yield topo


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QueueStore]:
    made: QueueStore
    if request.param == "memory":
        made = MemoryQueues()
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        raw = aioredis.Redis.from_url(server.url)
        await raw.flushall()
        await raw.aclose()
        made = RedisQueues(server.url, Keys())
    else:
        topo: ClusterTopology = request.getfixturevalue("redis_cluster")
        prefix = f"t{uuid.uuid4().hex[:8]}"  # a fresh key space per test
        made = RedisQueues(RedisTarget(topo.seeds, mode="cluster"), Keys(prefix))
    yield made
    await made.close()


async def test_push_is_bounded(store: QueueStore) -> None:
    assert await store.stats("q") is None
    for i in range(3):
        assert await store.push("q", envelope(i), 3)
    assert not await store.push("q", envelope(3), 3)
    assert await store.stats("q") == QueueStats("q", 3, 0, 0, 0)
    assert await store.names() == ["q"]


async def test_each_entry_goes_to_one_consumer_and_ack_removes_it(store: QueueStore) -> None:
    for i in range(4):
        await store.push("q", envelope(i), 0)
    first = await store.read("q", "r1/a", 3, 0)
    second = await store.read("q", "r2/b", 3, 0)
    assert [i.envelope.body for i in first] == [b"m0", b"m1", b"m2"]
    assert [i.envelope.body for i in second] == [b"m3"]
    assert first[0].envelope == envelope(0)
    assert all(i.deliveries == 0 and not i.excluded for i in first + second)
    assert await store.read("q", "r2/b", 3, 0) == []
    assert await store.stats("q") == QueueStats("q", 0, 0, 4, 0)
    await store.ack("q", [first[0].id, first[1].id])
    await store.ack("q", [first[0].id])  # again: nothing
    assert await store.stats("q") == QueueStats("q", 0, 0, 2, 0)
    assert await store.push("q", envelope(9), 3)
    assert not await store.push("q", envelope(10), 3)  # two pending and one waiting


async def test_requeue_counts_deliveries_then_dead_letters(store: QueueStore) -> None:
    await store.push("q", envelope(0), 0)
    (item,) = await store.read("q", "r1/a", 10, 0)
    assert await store.requeue("q", [Requeue(item.id, 1, "s1/x")], MOST) == 0
    (again,) = await store.read("q", "r2/b", 10, 0)
    assert (again.envelope, again.deliveries, again.excluded) == (envelope(0), 1, "s1/x")
    assert again.id != item.id
    assert await store.requeue("q", [Requeue(item.id, 2)], MOST) == 0  # not pending: no-op
    assert await store.requeue("q", [Requeue(again.id, MOST)], MOST) == 1
    assert await store.stats("q") == QueueStats("q", 0, 0, 0, 1)
    (dead,) = await store.read("q.dlq", "r1/a", 10, 0)
    assert (dead.envelope, dead.deliveries) == (envelope(0), 0)


async def test_release_gives_back_what_a_dead_consumer_held(store: QueueStore) -> None:
    for i in range(3):
        await store.push("q", envelope(i), 0)
    await store.consumers("q", "dead/1", 2)
    await store.consumers("q", "live/2", 1)
    held = await store.read("q", "dead/1", 2, 0)
    assert await store.consumer_counts("q") == {"dead/1": 2, "live/2": 1}
    assert "dead/1" in await store.consumer_names("q")
    assert (await store.stats("q")) == QueueStats("q", 1, 3, 2, 0)
    assert await store.release("q", "dead/1", MOST) == 2
    assert await store.consumer_counts("q") == {"live/2": 1}
    taken = await store.read("q", "live/2", 10, 0)
    assert sorted(i.envelope.body for i in taken) == [b"m0", b"m1", b"m2"]
    assert {i.envelope.body for i in taken if i.deliveries == 1} == {i.envelope.body for i in held}
    await store.consumers("q", "live/2", -1)
    assert await store.consumer_counts("q") == {}


async def test_a_blocking_read_waits_for_a_push(store: QueueStore) -> None:
    await store.consumers("q", "r/1", 1)
    reading = asyncio.ensure_future(store.read("q", "r/1", 5, 5000))
    await asyncio.sleep(0.1)
    assert not reading.done()
    await store.push("q", envelope(0), 0)
    (item,) = await asyncio.wait_for(reading, 10)
    assert item.envelope == envelope(0)


@pytest.mark.redis
async def test_entries_deleted_while_pending_are_released(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries someone deleted from the stream while a consumer held them: a requeue
    and a release acknowledge them (nothing stays pending), and a release of more
    than a page of them ends."""
    monkeypatch.setattr(redis_queues, "RELEASE_PAGE", 2)
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.flushall()
    store = RedisQueues(redis_server.url, Keys())
    try:
        for i in range(6):
            await store.push("q", envelope(i), 0)
        held = await store.read("q", "gone/1", 6, 0)
        stream = Keys().queue("q")
        await raw.xdel(stream, *(item.id for item in held))
        assert await store.requeue("q", [Requeue(held[0].id, 1)], MOST) == 0
        assert (await raw.xpending(stream, "g"))["pending"] == 5
        await asyncio.wait_for(store.release("q", "gone/1", MOST), 10)
        assert (await raw.xpending(stream, "g"))["pending"] == 0
        assert await store.stats("q") == QueueStats("q", 0, 0, 0, 0)
    finally:
        await store.close()
        await raw.aclose()
