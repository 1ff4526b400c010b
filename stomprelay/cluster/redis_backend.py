"""Redis implementations of :class:`Bus` and :class:`Registry` (redis-py asyncio).

Redis errors never leave this module: they become
:class:`~stomprelay.errors.BackendUnavailable` (registry) or local-only
delivery (bus). The bus owns one dedicated pub/sub connection and rebuilds it
itself after any failure, re-subscribing every wanted channel before it
reports itself available again; it does not rely on redis-py's PubSub to
resubscribe on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from stomprelay.cluster.base import BusHandler
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, LogSlice
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.lua import LIBRARY, SCRIPTS
from stomprelay.cluster.registry import (
    KICK_MEMORY_MS,
    DeadServer,
    OperatorCommand,
    Participant,
    Pending,
    RoomRecord,
    ServerRecord,
    SessionRecord,
    Suspensions,
)
from stomprelay.errors import BackendTimeout, BackendUnavailable, ProtocolError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to wait for a connection, and for any one command.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 3.0


#: Most connections one client (registry and log, or the bus) opens to Redis.
POOL_SIZE = 64


def make_client(
    url: str,
    decode: bool,
    health_check: int = 0,
    timeout: float = COMMAND_TIMEOUT,
    pool_size: int = POOL_SIZE,
) -> aioredis.Redis:
    """A client that fails fast on a dead Redis, and queues on a busy pool.

    ``health_check``: PING a pooled connection idle this long (s) before using
    it, so one left stale by a Redis restart fails the check, not a command.
    A command that fails on a broken connection ("Connection closed by
    server") is retried once on a fresh one; every script is idempotent (an
    append by message id, a membership change only when SADD/SREM changed
    something), so a retry never doubles an event. A timeout is never retried.
    The pool is bounded and blocking: past ``pool_size`` connections a command
    waits (up to ``timeout``) for one to come free, rather than failing as if
    Redis were down (a thousand clients connecting at once).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout,
        decode_responses=decode,
        socket_connect_timeout=min(CONNECT_TIMEOUT, timeout),
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=health_check,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


async def _guard(call: Awaitable[T]) -> T:
    try:
        return await call
    except (RedisTimeoutError, TimeoutError) as exc:
        raise BackendTimeout("redis: no answer in time") from exc
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc


class RedisBus:
    """Pub/sub over Redis with self-managed reconnection and resubscription."""

    def __init__(
        self,
        url: str,
        reconnect_interval: float = 0.5,
        ping_interval: float = 1.0,
        dead_after: float = 3.0,
    ) -> None:
        self.url = url
        self.reconnect_interval = reconnect_interval
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        #: Called with True/False when availability changes.
        self.on_state_change: Callable[[bool], None] | None = None
        self._client = make_client(url, decode=False, health_check=1)
        #: The pub/sub connection's own client: this module watches it with PINGs.
        self._sub_client = make_client(url, decode=False)
        self._handler: BusHandler | None = None
        self._wanted: set[str] = set()
        self._pubsub: PubSub | None = None
        self._available = False
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._closing = False

    @property
    def available(self) -> bool:
        return self._available

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._run(), name="redis-bus")
        await self._first_attempt.wait()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_pubsub()
        for client in (self._client, self._sub_client):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    def _set_available(self, value: bool) -> None:
        if value == self._available:
            return
        self._available = value
        log.warning("redis bus %s", "available" if value else "unavailable: local delivery only")
        if self.on_state_change is not None:
            self.on_state_change(value)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for futures in self._confirm.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._confirm.clear()
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                log.info("redis pub/sub connection lost: %s", exc)
            self._set_available(False)
            await self._drop_pubsub()
            self._first_attempt.set()
            await asyncio.sleep(self.reconnect_interval)

    async def _session(self) -> None:
        """One pub/sub connection's life: subscribe all, then read until it fails."""
        pubsub = self._sub_client.pubsub(ignore_subscribe_messages=False)
        await pubsub.connect()  # type: ignore[no-untyped-call]
        self._pubsub = pubsub
        wanted = sorted(self._wanted)
        waiting: set[str] = set(wanted)
        if wanted:
            await pubsub.subscribe(*wanted)
        else:
            self._set_available(True)
            self._first_attempt.set()
        # A PING goes out every ping_interval; any reply clears it. One left
        # unanswered for dead_after means Redis hangs (paused, or a dead link
        # that TCP has not noticed yet). Replies are read before judging, so a
        # pause of this process itself does not count against Redis.
        last_ping = 0.0
        unanswered_since: float | None = None
        while True:
            message = await pubsub.get_message(timeout=min(self.ping_interval, 0.5))
            now = time.monotonic()
            if message is not None:
                unanswered_since = None
            elif unanswered_since is not None and now - unanswered_since > self.dead_after:
                raise TimeoutError(f"no reply from redis for {self.dead_after:g} s")
            if now - last_ping >= self.ping_interval:
                await pubsub.ping()
                last_ping = now
                if unanswered_since is None:
                    unanswered_since = now
            if message is None:
                continue
            kind = message["type"]
            if kind == "subscribe":
                channel = _text(message["channel"])
                waiting.discard(channel)
                for future in self._confirm.pop(channel, []):
                    if not future.done():
                        future.set_result(None)
                if not waiting and not self._available:
                    self._set_available(True)
                    self._first_attempt.set()
            elif kind == "message" and message["channel"] is not None:
                self._dispatch(_text(message["channel"]), message["data"])

    def _dispatch(self, channel: str, data: bytes) -> None:
        if self._handler is None or channel not in self._wanted:
            return
        try:
            envelope = Envelope.from_json(data)
        except ProtocolError as exc:
            log.warning("ignoring malformed envelope on %s: %s", channel, exc.detail)
            return
        self._handler(channel, envelope)

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns after Redis confirmed (or at once when degraded)."""
        self._wanted.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # the next connection subscribes every wanted channel
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(future)
        try:
            await pubsub.subscribe(channel)
            await asyncio.wait_for(future, COMMAND_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("subscribe %s not confirmed: %s", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await pubsub.unsubscribe(channel)

    async def publish(self, channel: str, envelope: Envelope) -> None:
        """PUBLISH; when Redis is unreachable, deliver to local subscribers only."""
        if self._available:
            try:
                await self._client.publish(channel, envelope.to_json())
                return
            except (RedisTimeoutError, TimeoutError):
                # Redis may still run it and send it back: delivering it here
                # too would deliver it twice.
                log.warning("publish on %s timed out; not delivered locally", channel)
                return
            except (RedisError, OSError) as exc:
                log.info("publish on %s failed, delivering locally: %s", channel, exc)
        self.deliver_local(channel, envelope)

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        """PUBLISH each in one pipeline (Redis runs them in order); as :meth:`publish`
        when Redis is unreachable or fails."""
        if self._available:
            pipe = self._client.pipeline(transaction=False)
            for channel, envelope in items:
                pipe.publish(channel, envelope.to_json())
            try:
                await pipe.execute()
                return
            except (RedisTimeoutError, TimeoutError):
                log.warning("%d publishes timed out; not delivered locally", len(items))
                return
            except (RedisError, OSError) as exc:
                log.info("%d publishes failed, delivering locally: %s", len(items), exc)
            finally:
                await pipe.reset()  # type: ignore[no-untyped-call]
        for channel, envelope in items:
            self.deliver_local(channel, envelope)

    def deliver_local(self, channel: str, envelope: Envelope) -> None:
        if self._handler is not None and channel in self._wanted:
            asyncio.get_running_loop().call_soon(self._handler, channel, envelope)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _texts(values: Any) -> list[str]:
    return sorted(_text(v) for v in values)


def _fields(mapping: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in mapping.items()}


class RedisRegistry:
    """The registry in Redis hashes and sets (contract section 4)."""

    def __init__(
        self,
        url: str,
        keys: Keys | None = None,
        lock_ttl_ms: int = 5_000,
        policy: HistoryPolicy | None = None,
        timeout: float = COMMAND_TIMEOUT,
        stall_ms: int = 1_500,
        fence_ms: int = 10_000,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.keys = keys or Keys()
        self.lock_ttl_ms = lock_ttl_ms
        self.policy = policy or HistoryPolicy()
        self.stall_ms = stall_ms
        #: How long a fence found by a reap holds (one liveness TTL).
        self.fence_ms = fence_ms
        self._client = make_client(
            url, decode=True, health_check=1, timeout=timeout, pool_size=pool_size
        )
        prelude = self.keys.lua_prelude() + self.policy.lua() + LIBRARY
        self._scripts = {
            name: self._client.register_script(prelude + body) for name, body in SCRIPTS.items()
        }
        self.log = RedisLog(self)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    async def reset(self) -> None:
        """Drop every pooled connection (after an outage: none of them is trusted)."""
        with contextlib.suppress(RedisError, OSError):
            await self._client.connection_pool.disconnect()

    async def ping(self) -> None:
        await _guard(self._client.ping())

    async def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None when CONFIG is not allowed."""
        try:
            reply = await _guard(self._client.config_get("maxmemory-policy"))
        except BackendUnavailable:
            raise
        except Exception:
            return None
        return str(reply.get("maxmemory-policy", "")) or None

    async def was_reaped(self, server_id: str, incarnation: str) -> bool:
        """Did a sweeper reap this incarnation (its tombstone), as opposed to
        Redis having lost everything?"""
        return bool(await _guard(self._client.get(self.keys.reaped(server_id))) == incarnation)

    async def _scan(self, pattern: str) -> list[str]:
        async def scan() -> list[str]:
            return [_text(k) async for k in self._client.scan_iter(match=pattern, count=500)]

        return await _guard(scan())

    async def backend_id(self) -> str:
        info = await _guard(self._client.info("server"))
        return str(info.get("run_id", ""))

    async def _script(self, name: str, *args: str | int | bytes) -> Any:
        return await _guard(self._scripts[name](keys=[], args=list(args)))

    async def register_server(
        self, server: ServerRecord, ttl_ms: int, now: int, event_id: str
    ) -> None:
        await self._script(
            "register_server",
            server.server_id,
            server.incarnation,
            server.host,
            server.port,
            server.version,
            server.started_at,
            ttl_ms,
            now,
            event_id,
        )

    async def refresh_server(self, server_id: str, incarnation: str, ttl_ms: int) -> bool:
        return bool(
            await self._script("refresh_server", server_id, incarnation, ttl_ms, self.stall_ms)
        )

    async def add_session(self, record: SessionRecord, event_id: str, incarnation: str) -> bool:
        fields = {"session-id": record.session_id, **record.to_fields()}
        return bool(await self._script("add_session", json.dumps(fields), event_id, incarnation))

    async def remove_session(
        self,
        session_id: str,
        server_id: str,
        rooms: list[str],
        reason: str,
        now: int,
        event_id: str,
    ) -> None:
        await self._script(
            "remove_session", session_id, server_id, reason, now, event_id, ",".join(rooms)
        )

    async def join(
        self, session_id: str, room_id: str, username: str, server_id: str, now: int, event_id: str
    ) -> tuple[bool, int] | None:
        added, count = await self._script(
            "join", session_id, room_id, username, server_id, now, event_id
        )
        if added == -1:
            return None
        return bool(added), int(count)

    async def leave(
        self, session_id: str, room_id: str, server_id: str, reason: str, now: int, event_id: str
    ) -> tuple[bool, int]:
        removed, count = await self._script(
            "leave", session_id, room_id, server_id, reason, now, event_id
        )
        return bool(removed), int(count)

    async def chat(
        self, session_id: str, room_id: str, channel: str, envelope: Envelope, now: int
    ) -> Envelope:
        epoch, offset = await self._script(
            "chat", session_id, room_id, channel, envelope.to_json(), now, envelope.id
        )
        return replace(envelope, epoch=_text(epoch), offset=int(offset))

    async def participants(self, room_id: str) -> list[Participant]:
        flat = await self._script("participants", room_id)
        return sorted(
            (Participant(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)),
            key=lambda p: (p.username, p.session_id),
        )

    async def dead_servers(self) -> list[DeadServer]:
        keys = self.keys
        ids = _texts(await _guard(self._client.smembers(keys.servers_active)))
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for server_id in ids:
            pipe.exists(keys.server_heartbeat(server_id))
            pipe.hget(keys.server_info(server_id), "incarnation")
        replies = await _guard(pipe.execute())
        return [
            DeadServer(server_id, replies[2 * i + 1] or "")
            for i, server_id in enumerate(ids)
            if not replies[2 * i]
        ]

    async def reap(self, dead: DeadServer, sweeper_id: str, now: int, event_id: str) -> int | None:
        token = f"{sweeper_id}:{secrets.token_hex(8)}"
        lock = self.keys.reaper_lock(dead.server_id)
        acquired = await _guard(self._client.set(lock, token, nx=True, px=self.lock_ttl_ms))
        if not acquired:
            return None
        result = int(
            await self._script(
                "reap",
                dead.server_id,
                dead.incarnation,
                token,
                sweeper_id,
                now,
                event_id,
                self.stall_ms,
                self.fence_ms,
            )
        )
        return result if result >= 0 else None

    async def unregister_server(self, server_id: str, now: int, event_id: str) -> None:
        await self._script("unregister", server_id, now, event_id)

    async def restore(
        self,
        server: ServerRecord,
        sessions: list[SessionRecord],
        ttl_ms: int,
        announce: bool,
        now: int,
        event_id: str,
        pending: Pending | None = None,
    ) -> list[str]:
        pending = pending or Pending()
        held = {s.session_id for s in sessions}
        payload = json.dumps(
            [
                {
                    "session-id": s.session_id,
                    **s.to_fields(),
                    "joins": {r: i for (sid, r), i in pending.joins.items() if sid == s.session_id},
                    "leaves": {
                        r: i for (sid, r), i in pending.leaves.items() if sid == s.session_id
                    },
                    "new": "1" if s.session_id in pending.new_sessions else "0",
                }
                for s in sessions
            ]
        )
        gone: dict[str, dict[str, str]] = {}
        for (sid, room), ident in pending.leaves.items():
            if sid not in held:
                gone.setdefault(sid, {})[room] = ident
        published = await self._script(
            "restore",
            server.server_id,
            server.incarnation,
            server.host,
            server.port,
            server.version,
            server.started_at,
            ttl_ms,
            "1" if announce else "0",
            now,
            event_id,
            payload,
            json.dumps(gone),
        )
        return [_text(i) for i in published or []]

    async def servers(self) -> list[tuple[ServerRecord, bool, int]]:
        keys = self.keys
        ids = _texts(await _guard(self._client.smembers(keys.servers_active)))
        pipe = self._client.pipeline(transaction=False)
        for server_id in ids:
            pipe.hgetall(keys.server_info(server_id))
            pipe.exists(keys.server_heartbeat(server_id))
            pipe.scard(keys.server_sessions(server_id))
        replies = await _guard(pipe.execute()) if ids else []
        out = []
        for i, server_id in enumerate(ids):
            raw_info, alive, count = replies[3 * i : 3 * i + 3]
            info = _fields(raw_info)
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
        ids = _texts(await _guard(self._client.smembers(self.keys.sessions_active)))
        pipe = self._client.pipeline(transaction=False)
        for session_id in ids:
            pipe.hgetall(self.keys.session(session_id))
        replies = await _guard(pipe.execute()) if ids else []
        return [
            SessionRecord.from_fields(sid, _fields(fields))
            for sid, fields in zip(ids, replies, strict=True)
            if fields
        ]

    async def suspend(self, command: OperatorCommand, channel: str, envelope: Envelope) -> None:
        keys = self.keys
        pipe = self._client.pipeline(transaction=True)
        if command.lift:
            pipe.hdel(keys.users_suspended, command.user)
        if command.kicked_at is not None:
            pipe.hset(keys.users_kicked, command.user, str(command.kicked_at))
        if command.until_ms is not None:
            pipe.hset(keys.users_suspended, command.user, str(command.until_ms))
        pipe.publish(channel, envelope.to_json())
        await _guard(pipe.execute())

    async def suspensions(self, now_ms: int) -> Suspensions:
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(keys.users_suspended)
        pipe.hgetall(keys.users_kicked)
        until_raw, kicked_raw = await _guard(pipe.execute())
        until = await self._live(keys.users_suspended, _fields(until_raw), now_ms)
        kicked = await self._live(keys.users_kicked, _fields(kicked_raw), now_ms - KICK_MEMORY_MS)
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
            await _guard(self._client.hdel(key, *over))
        return live

    async def session(self, session_id: str) -> SessionRecord | None:
        fields = _fields(await _guard(self._client.hgetall(self.keys.session(session_id))))
        return SessionRecord.from_fields(session_id, fields) if fields else None

    async def rooms(self) -> list[RoomRecord]:
        pattern = self.keys.room_info_pattern()
        names = await self._scan(pattern)
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        replies = await _guard(pipe.execute()) if names else []
        prefix, _, suffix = pattern.partition("*")
        rooms = [
            _room(name[len(prefix) : len(name) - len(suffix)], _fields(info))
            for name, info in zip(names, replies, strict=True)
            if info
        ]
        return sorted(rooms, key=lambda r: r.room_id)

    async def dump(self) -> list[tuple[str, str, int, object]]:
        """Every key of the prefix: (name, type, TTL in ms or -1, content), sorted."""
        names = sorted(await self._scan(self.keys.pattern))
        out: list[tuple[str, str, int, object]] = []
        for name in names:
            kind = _text(await _guard(self._client.type(name)))
            ttl = int(await _guard(self._client.pttl(name)))
            content: object
            if kind == "hash":
                content = dict(sorted(_fields(await _guard(self._client.hgetall(name))).items()))
            elif kind == "set":
                content = _texts(await _guard(self._client.smembers(name)))
            elif kind == "string":
                content = await _guard(self._client.get(name))
            else:
                content = f"<{kind}>"
            out.append((name, kind, ttl, content))
        return out

    async def room(self, room_id: str) -> RoomRecord | None:
        info = _fields(await _guard(self._client.hgetall(self.keys.room_info(room_id))))
        return _room(room_id, info) if info else None


def _room(room_id: str, info: dict[str, str]) -> RoomRecord:
    return RoomRecord(
        room_id,
        int(info.get("participants") or 0),
        int(info.get("created-at") or 0),
        int(info.get("last-activity") or 0),
    )


class RedisLog:
    """Destination logs in Redis Streams (docs/history.md), through the registry's scripts."""

    def __init__(self, registry: RedisRegistry) -> None:
        self._registry = registry

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        epoch, offset, _dup = await self._registry._script(
            "append", log_id, channel, envelope.to_json(), envelope.id, now
        )
        return replace(envelope, epoch=_text(epoch), offset=int(offset))

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        """One pipeline of EVALSHA (non-transactional: each append stays atomic on
        its own, and Redis runs them in order); a script Redis lost is loaded and
        the append run again, alone."""
        registry = self._registry
        script = registry._scripts["append"]
        pipe = registry._client.pipeline(transaction=False)
        for log_id, channel, envelope in items:
            pipe.evalsha(script.sha, 0, log_id, channel, envelope.to_json(), envelope.id, now)
        try:
            replies = await _guard(pipe.execute(raise_on_error=False))
        finally:
            await pipe.reset()  # type: ignore[no-untyped-call]
        out: list[Envelope | BackendUnavailable] = []
        for (log_id, channel, envelope), reply in zip(items, replies, strict=True):
            if isinstance(reply, NoScriptError):
                reply = await registry._script(
                    "append", log_id, channel, envelope.to_json(), envelope.id, now
                )
            if isinstance(reply, BaseException):
                out.append(BackendUnavailable(f"redis: {type(reply).__name__}: {reply}"))
                continue
            epoch, offset, _dup = reply
            out.append(replace(envelope, epoch=_text(epoch), offset=int(offset)))
        return out

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        reply = await self._registry._script("read", log_id, after, limit, tail)
        epoch = _text(reply[0])
        entries = []
        for i in range(3, len(reply), 2):
            try:
                envelope = Envelope.from_json(reply[i + 1])
            except ProtocolError as exc:
                log.warning("skipping malformed log entry of %s: %s", log_id, exc.detail)
                continue
            entries.append(replace(envelope, offset=int(reply[i]), epoch=epoch))
        return LogSlice(epoch, int(reply[1]), int(reply[2]), tuple(entries))
