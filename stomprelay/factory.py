"""The one place a relay's backends, and the relay, are built.

:func:`build_backends` chooses the in-memory backends (a single node) or the
Redis ones (standalone, Sentinel or a sharded Redis Cluster) from a
:class:`~stomprelay.cluster.connect.RedisTarget`; :func:`build_relay` hands
them to a :class:`~stomprelay.relay.Relay`. The command line, ``--workers``,
the admin commands and the tests all build through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stomprelay.cluster.base import Bus
from stomprelay.cluster.history import HistoryPolicy, Log
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import Registry
from stomprelay.settings import Settings

if TYPE_CHECKING:
    from stomprelay.auth import Acl
    from stomprelay.cluster.connect import RedisTarget
    from stomprelay.relay import Relay
    from stomprelay.tokens import Authenticator


@dataclass(frozen=True)
class Backends:
    """What a relay (or an admin command) talks to: the bus, the registry, the
    log (None: no history) and the key names."""

    bus: Bus
    registry: Registry
    log: Log | None
    keys: Keys


def build_backends(
    settings: Settings, target: RedisTarget | None = None, keys: Keys | None = None
) -> Backends:
    """Memory backends when ``target`` is None, else the Redis ones ``target`` names."""
    from stomprelay.relay import stall_ms

    keys = keys or Keys()
    policy = HistoryPolicy.of(settings)
    if target is None:
        from stomprelay.cluster.memory import MemoryBus, MemoryHub, MemoryRegistry

        hub = MemoryHub(policy=policy)
        memory = MemoryRegistry(
            hub,
            keys,
            stall_ms(settings),
            int(settings.liveness_ttl * 1000),
            settings.reaper_lock_ms,
        )
        return Backends(MemoryBus(hub), memory, hub.log, keys)
    from stomprelay.cluster.redis_backend import RedisBus, RedisRegistry

    bus: Bus
    if target.sharded:
        from stomprelay.cluster.sharded import ShardedBus

        bus = ShardedBus(target.url, dead_after=settings.redis_timeout)
    else:
        bus = RedisBus(target, dead_after=settings.redis_timeout)
    registry = RedisRegistry(
        target,
        keys,
        settings.reaper_lock_ms,
        policy=policy,
        timeout=settings.redis_timeout,
        stall_ms=stall_ms(settings),
        fence_ms=int(settings.liveness_ttl * 1000),
        pool_size=settings.redis_pool_size,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    if isinstance(bus, RedisBus) and target.mode == "sentinel":
        registry.failover_pending = bus.failover_pending
    return Backends(bus, registry, registry.log, keys)


def build_relay(
    settings: Settings | None = None,
    *,
    server_id: str | None = None,
    backends: Backends | None = None,
    target: RedisTarget | None = None,
    keys: Keys | None = None,
    auth: Authenticator | None = None,
    acl: Acl | None = None,
    dev_tokens: bool = False,
) -> Relay:
    """A relay over ``backends`` (built from ``target`` when not given)."""
    from stomprelay.relay import Relay

    settings = settings or Settings()
    backends = backends or build_backends(settings, target, keys)
    return Relay(
        settings=settings,
        server_id=server_id,
        bus=backends.bus,
        registry=backends.registry,
        keys=backends.keys,
        log_=backends.log,
        auth=auth,
        acl=acl,
        dev_tokens=dev_tokens,
    )
