"""The factory: the one place backends and relays are built."""

from __future__ import annotations

from stomprelay.cluster.connect import RedisTarget
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryBus, MemoryRegistry
from stomprelay.cluster.redis_backend import RedisBus, RedisRegistry
from stomprelay.cluster.sharded import ShardedBus
from stomprelay.factory import Backends, build_backends, build_relay
from stomprelay.settings import Settings


def test_memory_backends_share_one_hub_and_hand_their_log_over() -> None:
    keys = Keys("p")
    backends = build_backends(Settings(history_size=1000), keys=keys)
    assert isinstance(backends.bus, MemoryBus)
    assert isinstance(backends.registry, MemoryRegistry)
    assert backends.log is backends.registry.log
    assert backends.keys is keys
    relay = build_relay(Settings(), server_id="one", backends=backends)
    assert (relay.server_id, relay.bus, relay.log, relay.keys) == (
        "one",
        backends.bus,
        backends.log,
        keys,
    )
    assert build_relay().server_id, "a default server id"


async def test_redis_backends_follow_the_mode() -> None:
    settings = Settings()
    made: list[Backends] = []
    standalone = build_backends(settings, RedisTarget("redis://127.0.0.1:1"))
    made.append(standalone)
    assert isinstance(standalone.bus, RedisBus)
    assert isinstance(standalone.registry, RedisRegistry)
    assert standalone.log is standalone.registry.log
    assert standalone.registry.failover_pending is None
    sentinel = build_backends(
        settings, RedisTarget("redis://x", mode="sentinel", sentinels=(("127.0.0.1", 1),))
    )
    made.append(sentinel)
    assert isinstance(sentinel.bus, RedisBus)
    assert isinstance(sentinel.registry, RedisRegistry)
    assert sentinel.registry.failover_pending == sentinel.bus.failover_pending
    cluster = build_backends(settings, RedisTarget("redis://127.0.0.1:1", mode="cluster"))
    made.append(cluster)
    assert isinstance(cluster.bus, ShardedBus)
    for backends in made:
        await backends.bus.close()
        await backends.registry.close()
