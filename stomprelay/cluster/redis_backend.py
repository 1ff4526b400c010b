"""The Redis implementation of :class:`~stomprelay.cluster.registry.Registry` (redis-py asyncio).

Redis errors never leave the Redis modules: they become
:class:`~stomprelay.errors.BackendUnavailable`. The steps are in ``redis_store.py``,
the logs in ``redis_log.py``, the bus in ``redis_bus.py``; this module holds the
registry itself: its connections, its reads, moderation and key migration.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from stomprelay.bounded import bounded
from stomprelay.cluster.base import FENCE_MS, REAPER_LOCK_MS, STALL_MS
from stomprelay.cluster.connect import (
    CLOSE_TIMEOUT,
    COMMAND_TIMEOUT,
    POOL_SIZE,
    RedisTarget,
    make_client,
)
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.operations import StepRegistry
from stomprelay.cluster.redis_bus import RedisBus
from stomprelay.cluster.redis_io import as_fields, as_text, as_texts, guard
from stomprelay.cluster.redis_log import RedisLog
from stomprelay.cluster.redis_store import RedisStore
from stomprelay.cluster.registry import (
    KICK_MEMORY_MS,
    Added,
    LoggedRegistry,
    OperatorCommand,
    Participant,
    RoomRecord,
    ServerRecord,
    SessionRecord,
    Suspensions,
)
from stomprelay.cluster.webhook_steps import WebhookSteps
from stomprelay.errors import BackendUnavailable

#: RedisBus lives in ``redis_bus.py``; re-exported for the imports not yet moved there.
__all__ = ["RedisBus", "RedisRegistry"]

log = logging.getLogger(__name__)


class RedisRegistry(StepRegistry):
    """The registry in Redis hashes and sets (contract section 4)."""

    def __init__(
        self,
        url: RedisTarget | str,
        keys: Keys | None = None,
        lock_ttl_ms: int = REAPER_LOCK_MS,
        policy: HistoryPolicy | None = None,
        timeout: float = COMMAND_TIMEOUT,
        stall_ms: int = STALL_MS,
        fence_ms: int = FENCE_MS,
        pool_size: int = POOL_SIZE,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
        webhooks: WebhookSteps | None = None,
    ) -> None:
        self.policy = policy or HistoryPolicy()
        self.target = RedisTarget.of(url)
        self._client = make_client(
            self.target, decode=True, health_check=1, timeout=timeout, pool_size=pool_size
        )
        self.sharded = self.target.sharded
        store = RedisStore(self._client, keys or Keys(), self.policy, self.target.mode)
        store.wait = (wait_replicas, wait_timeout_ms)
        store.webhooks = webhooks
        super().__init__(store, lock_ttl_ms, stall_ms, fence_ms, webhooks)
        self.redis = store
        self.log = RedisLog(store, store.keys, self.policy)
        self.close_timeout = CLOSE_TIMEOUT

    @property
    def failover_pending(self) -> Callable[[], bool] | None:
        """Under Sentinel, the bus's ``failover_pending``: while it says True no
        probe succeeds and no step runs (docs/redis.md, "Failover and epochs")."""
        return self.redis.hold

    @failover_pending.setter
    def failover_pending(self, check: Callable[[], bool] | None) -> None:
        self.redis.hold = check

    async def close(self) -> None:
        """Drop the connections within ``close_timeout`` (a paused Redis cannot hold it)."""
        with contextlib.suppress(RedisError, OSError):
            await bounded("redis registry: closing", self._client.aclose(), self.close_timeout)

    async def reset(self) -> None:
        """Drop every pooled connection (after an outage: none of them is trusted)."""
        with contextlib.suppress(RedisError, OSError):
            if self.sharded:
                for node in self._client.get_nodes():
                    await node.disconnect()
            else:
                await self._client.connection_pool.disconnect()

    async def ping(self) -> None:
        """Reachable, and (under Sentinel) still a master: a connection to a demoted
        master is dropped, so the next one asks the sentinels again."""
        if self.target.mode != "sentinel":
            await guard(self._client.ping())
            return
        if self.failover_pending is not None and self.failover_pending():
            raise BackendUnavailable("redis: sentinel failover in progress")
        role = await guard(self._client.execute_command("ROLE"))
        if as_text(role[0]) != "master":
            await self.reset()
            raise BackendUnavailable(f"redis: connected to a {as_text(role[0])}, not the master")

    async def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None when CONFIG is not allowed."""
        try:
            reply = await guard(self._client.config_get("maxmemory-policy"))
        except BackendUnavailable:
            raise
        except Exception:
            return None
        return str(reply.get("maxmemory-policy", "")) or None

    async def was_reaped(self, server_id: str, incarnation: str) -> bool:
        """Did a sweeper reap this incarnation (its tombstone), as opposed to
        Redis having lost everything?"""
        return bool(await guard(self._client.get(self.keys.reaped(server_id))) == incarnation)

    async def _scan(self, pattern: str) -> list[str]:
        async def scan() -> list[str]:
            return [as_text(k) async for k in self._client.scan_iter(match=pattern, count=500)]

        return await guard(scan())

    async def backend_id(self) -> str:
        """The Redis ``run_id`` (a cluster: of every master, so a failover changes it)."""
        if self.sharded:
            from redis.asyncio.cluster import RedisCluster

            infos = await guard(self._client.info("server", target_nodes=RedisCluster.PRIMARIES))
            return ",".join(sorted(str(i.get("run_id", "")) for i in infos.values()))
        info = await guard(self._client.info("server"))
        return str(info.get("run_id", ""))

    async def migrate(self) -> int:
        """Move what releases before hash tags left under the old names (docs/redis.md,
        "Upgrading"): room and topic logs are renamed to the tagged names, the old
        registry keys (of relays that have stopped) are deleted, and index entries of
        sessions that no longer exist are dropped. Returns the keys moved or deleted.
        A cluster is a new deployment: nothing to move."""
        if self.sharded:
            return 0
        prefix = self.keys.prefix
        done = 0
        for name in await self._scan(f"{prefix}:*"):
            if "{" in name:
                continue
            rest = name[len(prefix) + 1 :].split(":")
            new = _tagged(self.keys, rest)
            if new is None:
                continue
            try:
                if new:
                    moved = await self._client.renamenx(name, new)
                    if not moved:
                        await self._client.delete(name)
                else:
                    await self._client.delete(name)
            except RedisError as exc:
                log.warning("key migration: %s: %s", name, exc)
                continue
            done += 1
        live = as_texts(await guard(self._client.smembers(self.keys.sessions_active)))
        if live:
            pipe = self._client.pipeline(transaction=False)
            for sid in live:
                pipe.exists(self.keys.session(sid))
            gone = [
                sid
                for sid, there in zip(live, await guard(pipe.execute()), strict=True)
                if not there
            ]
            if gone:
                await guard(self._client.srem(self.keys.sessions_active, *gone))
        if done:
            log.warning("moved or removed %d keys of the layout before hash tags", done)
        return done

    async def participants(self, room_id: str) -> list[Participant]:
        members = as_texts(await guard(self._client.smembers(self.keys.room_participants(room_id))))
        pipe = self._client.pipeline(transaction=False)
        for sid in members:
            pipe.hmget(self.keys.session(sid), "username", "server-id", "user")
        replies = await guard(pipe.execute()) if members else []
        return sorted(
            (
                Participant(sid, as_text(f[0] or ""), as_text(f[1] or ""), as_text(f[2] or ""))
                for sid, f in zip(members, replies, strict=True)
            ),
            key=lambda p: (p.username, p.session_id),
        )

    async def servers(self) -> list[tuple[ServerRecord, bool, int]]:
        keys = self.keys
        ids = as_texts(await guard(self._client.smembers(keys.servers_active)))
        pipe = self._client.pipeline(transaction=False)
        for server_id in ids:
            pipe.hgetall(keys.server_info(server_id))
            pipe.exists(keys.server_heartbeat(server_id))
            pipe.scard(keys.server_sessions(server_id))
        replies = await guard(pipe.execute()) if ids else []
        out = []
        for i, server_id in enumerate(ids):
            raw_info, alive, count = replies[3 * i : 3 * i + 3]
            info = as_fields(raw_info)
            out.append(
                (
                    ServerRecord(
                        server_id,
                        info.get("host", ""),
                        int(info.get("port") or 0),
                        info.get("version", ""),
                        int(info.get("started-at") or 0),
                        info.get("incarnation", ""),
                    ),
                    bool(alive),
                    int(count),
                )
            )
        return out

    async def sessions(self) -> list[SessionRecord]:
        ids = as_texts(await guard(self._client.smembers(self.keys.sessions_active)))
        pipe = self._client.pipeline(transaction=False)
        for session_id in ids:
            pipe.hgetall(self.keys.session(session_id))
        replies = await guard(pipe.execute()) if ids else []
        return [
            SessionRecord.from_fields(sid, as_fields(fields))
            for sid, fields in zip(ids, replies, strict=True)
            if fields
        ]

    async def suspend(self, command: OperatorCommand, channel: str, envelope: Envelope) -> None:
        keys = self.keys
        # two keys in two slots: one MULTI on a single Redis, in order on a cluster
        pipe = self._client.pipeline(transaction=not self.sharded)
        if command.lift:
            pipe.hdel(keys.users_suspended, command.user)
        if command.kicked_at is not None:
            pipe.hset(keys.users_kicked, command.user, str(command.kicked_at))
        if command.until_ms is not None:
            pipe.hset(keys.users_suspended, command.user, str(command.until_ms))
        # (a cluster pipeline refuses .publish(); the command itself is routed fine)
        pipe.execute_command("PUBLISH", channel, envelope.to_json())
        await guard(pipe.execute())

    async def suspensions(self, now_ms: int) -> Suspensions:
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(keys.users_suspended)
        pipe.hgetall(keys.users_kicked)
        until_raw, kicked_raw = await guard(pipe.execute())
        until = await self._live(keys.users_suspended, as_fields(until_raw), now_ms)
        kicked = await self._live(keys.users_kicked, as_fields(kicked_raw), now_ms - KICK_MEMORY_MS)
        return Suspensions(until, kicked)

    async def _live(self, key: str, found: dict[str, str], after: int) -> dict[str, int]:
        """Entries of a user -> ms hash later than ``after``; older ones removed."""
        live: dict[str, int] = {}
        over = []
        for user, value in found.items():
            moment = int(value) if value.isdigit() else 0
            if moment > after:
                live[user] = moment
            else:
                over.append(user)
        if over:
            await guard(self._client.hdel(key, *over))
        return live

    async def add_server_subscription(self, user: str, destination: str, most: int) -> Added:
        """SADD then SCARD in one MULTI (one key, the user's slot); past ``most``
        the member just added is taken back."""
        key = self.keys.user_subscriptions(user)
        pipe = self._client.pipeline(transaction=True)
        pipe.sadd(key, destination)
        pipe.scard(key)
        added, count = await guard(pipe.execute())
        if not added:
            return "present"
        if int(count) > most:
            await guard(self._client.srem(key, destination))
            return "full"
        return "added"

    async def remove_server_subscription(self, user: str, destination: str) -> bool:
        key = self.keys.user_subscriptions(user)
        return bool(await guard(self._client.srem(key, destination)))

    async def server_subscriptions(self, user: str) -> list[str]:
        key = self.keys.user_subscriptions(user)
        return as_texts(await guard(self._client.smembers(key)))

    async def session(self, session_id: str) -> SessionRecord | None:
        fields = as_fields(await guard(self._client.hgetall(self.keys.session(session_id))))
        return SessionRecord.from_fields(session_id, fields) if fields else None

    async def rooms(self) -> list[RoomRecord]:
        pattern = self.keys.room_info_pattern()
        names = await self._scan(pattern)
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        replies = await guard(pipe.execute()) if names else []
        prefix, _, suffix = pattern.partition("*")
        rooms = [
            _room(name[len(prefix) : len(name) - len(suffix)], as_fields(info))
            for name, info in zip(names, replies, strict=True)
            if info
        ]
        return sorted(rooms, key=lambda r: r.room_id)

    async def dump(self) -> list[tuple[str, str, int, object]]:
        """Every key of the prefix: (name, type, TTL in ms or -1, content), sorted."""
        names = sorted(await self._scan(self.keys.pattern))
        out: list[tuple[str, str, int, object]] = []
        for name in names:
            kind = as_text(await guard(self._client.type(name)))
            ttl = int(await guard(self._client.pttl(name)))
            content: object
            if kind == "hash":
                content = dict(sorted(as_fields(await guard(self._client.hgetall(name))).items()))
            elif kind == "set":
                content = as_texts(await guard(self._client.smembers(name)))
            elif kind == "string":
                content = await guard(self._client.get(name))
            else:
                content = f"<{kind}>"
            out.append((name, kind, ttl, content))
        return out

    async def room(self, room_id: str) -> RoomRecord | None:
        info = as_fields(await guard(self._client.hgetall(self.keys.room_info(room_id))))
        return _room(room_id, info) if info else None

    def dashboard(self) -> RedisDashboardStore:
        """The dashboard's reads and rings, on this registry's connections."""
        from stomprelay.cluster.redis_dashboard import RedisDashboardStore

        return RedisDashboardStore(self._client, self.keys)


#: Old names (no hash tags) -> what becomes of them: "" delete, else the kind of log.
_LEGACY_REGISTRY = {"sessions", "rooms", "users", "servers"}
_INDEXES = {
    "sessions:active",
    "servers:active",
    "servers:liveness",
    "users:suspended",
    "users:kicked",
    "history:topics",
}


def _tagged(keys: Keys, rest: list[str]) -> str | None:
    """The new name of an old key (split after the prefix): a log's tagged name,
    "" for a registry key to delete, None for a key that is not old."""
    if ":".join(rest) in _INDEXES:
        return None
    if rest[0] == "history" and len(rest) >= 2:
        suffix = ""
        if rest[-1] in ("meta", "ids"):
            suffix, rest = ":" + rest[-1], rest[:-1]
        log_id = ":".join(rest[1:])
        if log_id.startswith(("room:", "topic:")) or log_id == "global":
            return keys.history(log_id) + suffix
        return None
    return "" if rest[0] in _LEGACY_REGISTRY and len(rest) >= 2 else None


def _room(room_id: str, info: dict[str, str]) -> RoomRecord:
    return RoomRecord(
        room_id,
        int(info.get("participants") or 0),
        int(info.get("created-at") or 0),
        int(info.get("last-activity") or 0),
    )


if TYPE_CHECKING:
    from stomprelay.cluster.redis_dashboard import RedisDashboardStore

    # mypy --strict checks that the Redis backend implements every role
    def _roles(registry: RedisRegistry) -> LoggedRegistry:
        return registry
