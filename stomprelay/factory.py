"""The one place the backends and the relay are built.

The CLI (``serve`` and ``--workers``), the admin commands and the tests all come
here: :func:`build_backends` chooses the backends once (memory when no Redis is
given, as centrifuge's ``New`` installs its memory defaults; Redis standalone,
Sentinel or a sharded cluster otherwise) and :func:`build_relay` hands them to a
:class:`~stomprelay.relay.Relay`, which builds nothing itself.
"""

from __future__ import annotations

import secrets
import socket
from typing import TYPE_CHECKING

from stomprelay.access import check_access
from stomprelay.cluster.backends import Backends
from stomprelay.cluster.base import Bus, stall_ms
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.webhook_steps import WebhookSteps
from stomprelay.relay import Relay
from stomprelay.settings import Settings

if TYPE_CHECKING:
    from stomprelay.auth import Acl
    from stomprelay.cluster.connect import RedisTarget
    from stomprelay.hook import AuthHook
    from stomprelay.passwords import UserFile
    from stomprelay.tokens import Authenticator
    from stomprelay.webhooks import Delivery


def default_server_id() -> str:
    """Hostname plus a short random suffix, so restarted relays never collide."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:40] or 'relay'}-{secrets.token_hex(3)}"


def build_backends(
    settings: Settings, target: RedisTarget | None = None, keys: Keys | None = None
) -> Backends:
    """The backends for ``target``: in memory (one process) when it is None, else
    Redis in its mode (standalone, Sentinel, or a cluster with a sharded bus)."""
    keys = keys or Keys()
    policy = HistoryPolicy.of(settings)
    webhooks = build_webhook_steps(settings)
    if target is None:
        from stomprelay.cluster.memory import MemoryBus, MemoryHub, MemoryRegistry

        hub = MemoryHub(policy=policy, webhooks=webhooks)
        memory = MemoryRegistry(
            hub,
            keys,
            stall_ms=stall_ms(settings.liveness_interval),
            fence_ms=int(settings.liveness_ttl * 1000),
            lock_ttl_ms=settings.reaper_lock_ms,
        )
        from stomprelay.cluster.queue_store import MemoryQueues

        return Backends(
            MemoryBus(hub),
            memory,
            memory.log,
            keys,
            webhook_log=hub.webhook_log,
            webhooks=webhooks,
            queues=MemoryQueues(),
        )
    from stomprelay.cluster.redis_backend import RedisRegistry
    from stomprelay.cluster.redis_bus import RedisBus

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
        stall_ms=stall_ms(settings.liveness_interval),
        fence_ms=int(settings.liveness_ttl * 1000),
        pool_size=settings.redis_pool_size,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
        webhooks=webhooks,
    )
    if isinstance(bus, RedisBus) and target.mode == "sentinel":
        registry.failover_pending = bus.failover_pending
    from stomprelay.cluster.redis_queues import RedisQueues

    queues = RedisQueues(target, keys, timeout=settings.redis_timeout)
    return Backends(bus, registry, registry.log, keys, webhooks=webhooks, queues=queues)


def build_webhook_steps(settings: Settings) -> WebhookSteps | None:
    """The webhook events the registry's steps append (None: no ``--webhook-url``,
    so no event is made nor kept)."""
    if not settings.webhook_url:
        return None
    return WebhookSteps(settings.webhook_partitions, settings.webhook_messages)


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
    users: UserFile | None = None,
) -> Relay:
    """A relay on ``backends`` (built from ``target`` and ``keys`` when not given).

    Raises ValueError for an access configuration that would open the relay by
    mistake (an ACL without authentication, dev tokens without a secret)."""
    settings = settings or Settings()
    hook = build_hook(settings)
    check_access(auth, acl, dev_tokens, hook, users)
    if backends is None:
        backends = build_backends(settings, target, keys)
    server_id = server_id or default_server_id()
    return Relay(
        settings,
        server_id,
        backends,
        auth=auth,
        acl=acl,
        dev_tokens=dev_tokens,
        hook=hook,
        users=users,
        webhook_delivery=build_webhook_delivery(settings, server_id, backends),
    )


def build_webhook_delivery(
    settings: Settings, server_id: str, backends: Backends
) -> Delivery | None:
    """The webhook delivery the settings ask for (None: no ``--webhook-url``): over
    the registry's Redis, with leases, else over the single node's in-memory partitions."""
    if not settings.webhook_url:
        return None
    from stomprelay.webhooks import build_delivery

    return build_delivery(
        settings,
        server_id,
        keys=backends.keys,
        target=getattr(backends.registry, "target", None),
        memory_log=backends.webhook_log,
    )


def build_hook(settings: Settings) -> AuthHook | None:
    """The back-end authorization hook the settings ask for (None: no hook)."""
    if not settings.auth_hook_url:
        return None
    from stomprelay.hook import AuthHook

    return AuthHook(
        settings.auth_hook_url,
        actions=settings.auth_hook_actions,
        timeout=settings.auth_hook_timeout,
        # the webhook secret signs the hook's requests too, unless it has its own
        secret=settings.auth_hook_secret or settings.webhook_secret,
    )
