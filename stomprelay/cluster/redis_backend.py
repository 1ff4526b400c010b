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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stomprelay.bounded import bounded, stop_task
from stomprelay.cluster.base import BusHandler
from stomprelay.cluster.connect import (
    CLOSE_TIMEOUT,
    COMMAND_TIMEOUT,
    POOL_SIZE,
    RedisTarget,
    make_client,
)
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, LogSlice
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.lua import LIBRARY, SCRIPTS
from stomprelay.cluster.operations import GONE, REAPER_LOCK_MS, Gone, StepRegistry
from stomprelay.cluster.registry import (
    KICK_MEMORY_MS,
    EventTemplate,
    OperatorCommand,
    Participant,
    RoomRecord,
    ServerRecord,
    SessionRecord,
    Suspensions,
)
from stomprelay.errors import BackendTimeout, BackendUnavailable, ProtocolError

log = logging.getLogger(__name__)

T = TypeVar("T")


async def _guard(call: Awaitable[T]) -> T:
    try:
        return await call
    except (RedisTimeoutError, TimeoutError) as exc:
        raise BackendTimeout("redis: no answer in time") from exc
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc


class RedisBus:
    """Pub/sub over Redis with self-managed reconnection and resubscription.

    :meth:`close` returns within ``close_timeout`` seconds, whatever Redis and the tasks do.
    """

    def __init__(
        self,
        url: RedisTarget | str,
        reconnect_interval: float = 0.5,
        ping_interval: float = 1.0,
        dead_after: float = 3.0,
    ) -> None:
        self.target = RedisTarget.of(url)
        self.url = self.target.url
        self.reconnect_interval = reconnect_interval
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        #: Called with True/False when availability changes.
        self.on_state_change: Callable[[bool], None] | None = None
        self._client = make_client(self.target, decode=False, health_check=1)
        #: The pub/sub connection's own client: this module watches it with PINGs.
        self._sub_client = make_client(self.target, decode=False)
        self._handler: BusHandler | None = None
        self._wanted: set[str] = set()
        self._pubsub: PubSub | None = None
        self._available = False
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._closing = False
        #: Sentinel announced a new master: the pub/sub connection is dropped.
        self._switched = False
        #: Until when a failover in progress keeps the bus down (monotonic s).
        self._hold_until = 0.0
        self._watch: asyncio.Task[None] | None = None
        self.close_timeout = CLOSE_TIMEOUT

    @property
    def available(self) -> bool:
        return self._available

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._run(), name="redis-bus")
        if self.target.mode == "sentinel":
            self._watch = asyncio.create_task(self._watch_sentinels(), name="sentinel-watch")
        await self._first_attempt.wait()

    async def close(self) -> None:
        """Stop the reader and the sentinel watch, then drop the connections, each in half
        of ``close_timeout``: what has not finished by then (a paused Redis, a reader that
        swallowed its cancellation) is logged and left behind (:mod:`stomprelay.bounded`)."""
        self._closing = True
        step = self.close_timeout / 2
        names = {"reader": self._task, "sentinel watch": self._watch}
        await asyncio.gather(
            *(stop_task(task, f"redis bus: {name}", step) for name, task in names.items() if task)
        )
        with contextlib.suppress(RedisError, OSError):
            await bounded("redis bus: closing its connections", self._close_clients(), step)

    async def _close_clients(self) -> None:
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
            if self._closing:
                return
            self._set_available(False)
            await self._drop_pubsub()
            self._first_attempt.set()
            await asyncio.sleep(self.reconnect_interval)

    async def _session(self) -> None:
        """One pub/sub connection's life: subscribe all, then read until it fails."""
        if self.failover_pending():
            raise RedisConnectionError("sentinel failover in progress")
        pubsub = self._sub_client.pubsub(ignore_subscribe_messages=False)
        await pubsub.connect()
        sentinel = self.target.mode == "sentinel"
        if sentinel:
            await self._check_role(pubsub)
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
        # _closing ends a reader that swallowed its cancellation (stomprelay.bounded)
        while not self._closing:
            message = await pubsub.get_message(timeout=min(self.ping_interval, 0.5))
            now = time.monotonic()
            if message is not None:
                unanswered_since = None
            elif unanswered_since is not None and now - unanswered_since > self.dead_after:
                raise TimeoutError(f"no reply from redis for {self.dead_after:g} s")
            if self._switched:
                self._switched = False
                raise RedisConnectionError("sentinel announced a new master")
            if now - last_ping >= self.ping_interval:
                if sentinel:
                    await self._check_master(pubsub)
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

    def failover_pending(self) -> bool:
        """A sentinel is promoting a replica and has not announced it yet: writes
        would still reach the old master and be lost (docs/redis.md, "Sentinel")."""
        return time.monotonic() < self._hold_until

    async def _watch_sentinels(self) -> None:
        """Follow a sentinel's failover events for this master. From the moment it
        promotes a replica until it announces the switch, the bus stays down (the
        relay journals what its clients send, ``RedisRegistry.ping`` refuses), so
        nothing is written to a master on its way out; at ``+switch-master`` the
        pub/sub connection is dropped and the relay resynchronises against the new one."""
        name = self.target.master_name
        while not self._closing:
            for host, port in self.target.sentinels:
                client = aioredis.Redis(host=host, port=port, socket_connect_timeout=1)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(*SENTINEL_EVENTS)
                    while not self._closing:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is None or message.get("type") != "message":
                            continue
                        event, data = _text(message["channel"]), _text(message["data"])
                        if not (data.startswith(name + " ") or f" @ {name} " in data):
                            continue
                        log.warning("sentinel %s:%d: %s %s", host, port, event, data)
                        if event == "+switch-master":
                            self._hold_until = 0.0
                            self._switched = True
                        elif event.startswith("-failover-abort"):
                            self._hold_until = 0.0
                        else:
                            self._hold_until = time.monotonic() + FAILOVER_HOLD
                            self._switched = True
                except (RedisError, OSError) as exc:
                    log.info("sentinel %s:%d not watched: %s", host, port, exc)
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                        await client.aclose()
            await asyncio.sleep(self.reconnect_interval)

    @staticmethod
    async def _check_role(pubsub: PubSub) -> None:
        """Before subscribing: a connection that reached a replica (a demoted master
        the sentinels have not caught up with) is dropped."""
        connection = pubsub.connection
        assert connection is not None
        await connection.send_command("ROLE")
        role = await connection.read_response()
        if _text(role[0]) != "master":
            raise RedisConnectionError(f"pub/sub connection reached a {_text(role[0])}")

    async def _check_master(self, pubsub: PubSub) -> None:
        """Subscribed, a connection cannot ask ROLE: ask the sentinels whether the
        master is still the one this connection is on (a graceful failover leaves
        it connected to a replica that hears no publish)."""
        connection = pubsub.connection
        pool = self._sub_client.connection_pool
        try:
            master = await pool.get_master_address()
        except (RedisError, OSError) as exc:
            log.info("sentinels not answering, keeping the pub/sub connection: %s", exc)
            return
        if connection is not None and (connection.host, connection.port) != tuple(master):
            raise RedisConnectionError(f"the master moved to {master[0]}:{master[1]}")

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
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await future
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
                await pipe.reset()
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


class RedisStore:
    """The registry's steps (``operations.Store``) as Lua scripts, one slot each."""

    def __init__(self, client: Any, keys: Keys, policy: HistoryPolicy, mode: str) -> None:
        self.keys = keys
        self._client = client
        publish = "SPUBLISH" if mode == "cluster" else "PUBLISH"
        # Where a master can change under a log (a failover, a slot moved), the
        # log's epoch follows the master: no (epoch, offset) names two messages.
        follow = "true" if mode != "standalone" else "false"
        adopt = "true" if mode == "cluster" else "false"
        prelude = (
            policy.lua()
            + f"local ROOM_PUBLISH = {publish!r}\nlocal EPOCH_PER_MASTER = {follow}\n"
            + f"local EPOCH_ADOPT_MOVED = {adopt}\n"
            + LIBRARY
        )
        self._scripts = {
            name: client.register_script(prelude + body) for name, body in SCRIPTS.items()
        }

        #: (replicas, timeout ms) for WAIT after an append; (0, _): no WAIT.
        self.wait = (0, 0)
        #: WAITs that returned fewer replicas than asked for.
        self.wait_short = 0
        self._wait_off_until = 0.0

        #: Under Sentinel: True while a failover is under way (the bus hears it);
        #: no step runs then, so nothing is written to a master on its way out.
        self.hold: Callable[[], bool] | None = None

    def check_hold(self) -> None:
        if self.hold is not None and self.hold():
            raise BackendUnavailable("redis: sentinel failover in progress")

    async def script(self, name: str, keys: Sequence[str], *args: str | int | bytes) -> Any:
        self.check_hold()
        return await _guard(self._scripts[name](keys=list(keys), args=list(args)))

    async def acked(self, name: str, keys: Sequence[str], *args: str | int | bytes) -> Any:
        """:meth:`script`, then (with ``wait`` set) WAIT on the same connection, so
        its reply comes once the replicas hold the append."""
        replicas, timeout = self.wait
        if not replicas or time.monotonic() < self._wait_off_until:
            return await self.script(name, keys, *args)
        self.check_hold()
        script = self._scripts[name]
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, timeout)
            try:
                reply, got = await _guard(pipe.execute(raise_on_error=False))
            finally:
                await pipe.reset()
            if isinstance(reply, NoScriptError) and attempt == 1:
                await _guard(self._client.script_load(script.script))
                continue
            break
        if isinstance(reply, BaseException):
            raise BackendUnavailable(f"redis: {type(reply).__name__}: {reply}")
        if not isinstance(got, BaseException) and int(got) < replicas:
            # a replica is missing (a failover took it): acknowledge without waiting
            # for a while rather than make every message wait out the timeout
            self._wait_off_until = time.monotonic() + WAIT_BACKOFF
            self.wait_short += 1
            if self.wait_short in (1, 100) or self.wait_short % 10_000 == 0:
                log.warning(
                    "WAIT: %s of %d replicas acknowledged in %d ms (%d times so far)",
                    got,
                    replicas,
                    timeout,
                    self.wait_short,
                )
        return reply

    def _server(self, server_id: str) -> tuple[str, str, str]:
        k = self.keys
        return k.server_info(server_id), k.server_heartbeat(server_id), k.server_sessions(server_id)

    # -- one relay ----------------------------------------------------------

    async def server_put(
        self, server: ServerRecord, ttl_ms: int, sessions: Sequence[str]
    ) -> list[str]:
        before = await self.script(
            "server_put",
            self._server(server.server_id),
            server.incarnation,
            server.host,
            server.port,
            server.version,
            server.started_at,
            ttl_ms,
            ",".join(sessions),
        )
        return _texts(before)

    async def server_sessions(self, server_id: str) -> list[str]:
        return _texts(await _guard(self._client.smembers(self.keys.server_sessions(server_id))))

    async def heartbeat(self, server_id: str, incarnation: str, ttl_ms: int) -> bool:
        info, beat, _ = self._server(server_id)
        keys = (info, beat, self.keys.reaped(server_id))
        return bool(await self.script("heartbeat", keys, incarnation, ttl_ms))

    async def server_add_session(self, server_id: str, incarnation: str, session_id: str) -> bool:
        info, _, listed = self._server(server_id)
        keys = (info, listed, self.keys.reaped(server_id))
        return bool(await self.script("server_add_session", keys, incarnation, session_id))

    async def server_remove_session(self, server_id: str, session_id: str) -> None:
        await _guard(self._client.srem(self.keys.server_sessions(server_id), session_id))

    async def lock(self, server_id: str, token: str, ttl_ms: int) -> bool:
        key = (self.keys.reaper_lock(server_id),)
        return bool(await self.script("lock_take", key, token, ttl_ms))

    async def keep_lock(self, server_id: str, token: str, ttl_ms: int) -> bool:
        lock = (self.keys.reaper_lock(server_id),)
        return bool(await self.script("lock_keep", lock, token, ttl_ms))

    async def unlock(self, server_id: str, token: str) -> None:
        # a lock that expired and was taken by someone else meanwhile stays theirs
        await self.script("lock_keep", (self.keys.reaper_lock(server_id),), token, 0)

    async def reap_begin(
        self, server_id: str, incarnation: str, token: str
    ) -> list[str] | Gone | None:
        k = self.keys
        reply = await self.script(
            "reap_begin",
            (
                k.reaper_lock(server_id),
                k.server_heartbeat(server_id),
                k.server_info(server_id),
                k.reaped(server_id),
                k.server_sessions(server_id),
            ),
            token,
            incarnation,
        )
        code = int(reply[0])
        if code == -4:
            return GONE
        return _texts(reply[1:]) if code > 0 else None

    async def server_drop(self, server_id: str, incarnation: str, token: str) -> bool:
        keys = (*self._server(server_id), self.keys.reaper_lock(server_id))
        return bool(await self.script("server_drop", keys, incarnation, token))

    async def alive(self, server_ids: Sequence[str]) -> list[tuple[bool, str]]:
        pipe = self._client.pipeline(transaction=False)
        for server_id in server_ids:
            pipe.exists(self.keys.server_heartbeat(server_id))
            pipe.hget(self.keys.server_info(server_id), "incarnation")
        replies = await _guard(pipe.execute())
        return [
            (bool(replies[2 * i]), _text(replies[2 * i + 1] or "")) for i in range(len(server_ids))
        ]

    # -- indexes ------------------------------------------------------------

    def _index(self, name: str) -> str:
        return self.keys.servers_active if name == "servers" else self.keys.sessions_active

    async def index(self, name: str, member: str, present: bool) -> None:
        key = self._index(name)
        await _guard(self._client.sadd(key, member) if present else self._client.srem(key, member))

    async def members(self, name: str) -> list[str]:
        return _texts(await _guard(self._client.smembers(self._index(name))))

    async def pulse(self, ttl_ms: int, stall_ms: int) -> None:
        await self.script("pulse", (self.keys.liveness,), ttl_ms, stall_ms)

    async def may_reap(self, stall_ms: int, fence_ms: int) -> bool:
        return bool(await self.script("may_reap", (self.keys.liveness,), stall_ms, fence_ms))

    # -- one session --------------------------------------------------------

    async def session_read(self, session_id: str) -> SessionRecord | None:
        fields = _fields(await _guard(self._client.hgetall(self.keys.session(session_id))))
        return SessionRecord.from_fields(session_id, fields) if fields else None

    async def session_put(
        self, record: SessionRecord, connect: Envelope | None, merge: bool
    ) -> tuple[bool, list[str]]:
        existed, before = await self.script(
            "session_put",
            self.keys.session_keys(record.session_id),
            json.dumps(record.to_fields()),
            connect.to_json() if connect is not None else "",
            self.keys.session_connect_channel,
            "1" if merge else "0",
        )
        return bool(existed), [r for r in _text(before).split(",") if r]

    async def session_join(self, session_id: str, room_id: str, username: str, now: int) -> bool:
        keys = self.keys.session_keys(session_id)
        return bool(await self.script("session_join", keys, room_id, username, now))

    async def session_leave(self, session_id: str, rooms: Sequence[str], last_seen: int) -> None:
        keys = self.keys.session_keys(session_id)
        await self.script("session_leave", keys, ",".join(rooms), last_seen)

    async def session_drop(self, session_id: str, disconnect: Envelope, force: bool) -> bool:
        return bool(
            await self.script(
                "session_drop",
                self.keys.session_keys(session_id),
                disconnect.to_json(),
                self.keys.session_disconnect_channel,
                "1" if force else "0",
            )
        )

    async def session_touch(self, session_id: str, now: int) -> None:
        await self.script("session_touch", (self.keys.session(session_id),), now)

    # -- one room -----------------------------------------------------------

    async def room_change(
        self,
        join: bool,
        session_id: str,
        room_id: str,
        now: int,
        event: EventTemplate,
        announce: bool,
    ) -> tuple[bool, int]:
        channel = (self.keys.join_channel if join else self.keys.leave_channel)(room_id)
        changed, count = await self.script(
            "room_change",
            self.keys.room_keys(room_id),
            "1" if join else "0",
            session_id,
            now,
            event.head,
            event.tail,
            event.id,
            channel,
            "1" if announce else "0",
        )
        return bool(changed), int(count)

    async def chat(self, room_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        epoch, offset = await self.acked(
            "chat", self.keys.room_keys(room_id), channel, envelope.to_json(), now, envelope.id
        )
        return replace(envelope, epoch=_text(epoch), offset=int(offset))


class RedisRegistry(StepRegistry):
    """The registry in Redis hashes and sets (contract section 4)."""

    def __init__(
        self,
        url: RedisTarget | str,
        keys: Keys | None = None,
        lock_ttl_ms: int = REAPER_LOCK_MS,
        policy: HistoryPolicy | None = None,
        timeout: float = COMMAND_TIMEOUT,
        stall_ms: int = 1_500,
        fence_ms: int = 10_000,
        pool_size: int = POOL_SIZE,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        self.policy = policy or HistoryPolicy()
        self.target = RedisTarget.of(url)
        self._client = make_client(
            self.target, decode=True, health_check=1, timeout=timeout, pool_size=pool_size
        )
        self.sharded = self.target.sharded
        store = RedisStore(self._client, keys or Keys(), self.policy, self.target.mode)
        store.wait = (wait_replicas, wait_timeout_ms)
        super().__init__(store, lock_ttl_ms, stall_ms, fence_ms)
        self.redis = store
        self.log = RedisLog(self)
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
            await _guard(self._client.ping())
            return
        if self.failover_pending is not None and self.failover_pending():
            raise BackendUnavailable("redis: sentinel failover in progress")
        role = await _guard(self._client.execute_command("ROLE"))
        if _text(role[0]) != "master":
            await self.reset()
            raise BackendUnavailable(f"redis: connected to a {_text(role[0])}, not the master")

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
        """The Redis ``run_id`` (a cluster: of every master, so a failover changes it)."""
        if self.sharded:
            from redis.asyncio.cluster import RedisCluster

            infos = await _guard(self._client.info("server", target_nodes=RedisCluster.PRIMARIES))
            return ",".join(sorted(str(i.get("run_id", "")) for i in infos.values()))
        info = await _guard(self._client.info("server"))
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
        live = _texts(await _guard(self._client.smembers(self.keys.sessions_active)))
        if live:
            pipe = self._client.pipeline(transaction=False)
            for sid in live:
                pipe.exists(self.keys.session(sid))
            gone = [
                sid
                for sid, there in zip(live, await _guard(pipe.execute()), strict=True)
                if not there
            ]
            if gone:
                await _guard(self._client.srem(self.keys.sessions_active, *gone))
        if done:
            log.warning("moved or removed %d keys of the layout before hash tags", done)
        return done

    async def participants(self, room_id: str) -> list[Participant]:
        members = _texts(await _guard(self._client.smembers(self.keys.room_participants(room_id))))
        pipe = self._client.pipeline(transaction=False)
        for sid in members:
            pipe.hmget(self.keys.session(sid), "username", "server-id")
        replies = await _guard(pipe.execute()) if members else []
        return sorted(
            (
                Participant(sid, _text(f[0] or ""), _text(f[1] or ""))
                for sid, f in zip(members, replies, strict=True)
            ),
            key=lambda p: (p.username, p.session_id),
        )

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


#: Sentinel events that mean a failover of the master is under way or over.
SENTINEL_EVENTS = (
    "+failover-state-send-slaveof-noone",
    "+promoted-slave",
    "+switch-master",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
)
#: Longest a failover in progress keeps a relay off Redis (s) without a switch.
FAILOVER_HOLD = 15.0

#: Seconds a relay appends without WAIT after one found too few replicas.
WAIT_BACKOFF = 5.0

#: How long a relay trusts that a topic's log is admitted under the topic cap (s).
TOPIC_ADMIT_CACHE = 30.0


class RedisLog:
    """Destination logs in Redis Streams (docs/history.md), through the registry's scripts.

    A log's keys share its destination's hash tag; the cap on logged topics is
    a separate index, asked before a topic's first append (and every
    :data:`TOPIC_ADMIT_CACHE` seconds after), since it lives in another slot.
    """

    def __init__(self, registry: RedisRegistry) -> None:
        self._registry = registry
        self._store = registry.redis
        self._keys = registry.keys
        self._policy = registry.policy
        #: topic log id -> (admitted, until when that answer holds, monotonic s)
        self._admitted: dict[str, tuple[bool, float]] = {}

    async def _logged(self, log_id: str, now: int) -> bool:
        if not self._policy.logs(log_id):
            return False
        if not log_id.startswith("topic:"):
            return True
        clock = time.monotonic()
        known = self._admitted.get(log_id)
        if known is not None and known[1] > clock:
            return known[0]
        admitted = bool(
            await self._store.script("topic_admit", (self._keys.history_topics,), log_id, now)
        )
        if len(self._admitted) > 4 * self._policy.max_topics:
            self._admitted.clear()
        self._admitted[log_id] = (admitted, clock + TOPIC_ADMIT_CACHE)
        return admitted

    def _args(
        self, log_id: str, channel: str, envelope: Envelope, now: int, logged: bool
    ) -> tuple[tuple[str, str, str], tuple[str | int | bytes, ...]]:
        return self._keys.log_keys(log_id), (
            channel,
            envelope.to_json(),
            envelope.id,
            now,
            "1" if logged else "0",
        )

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        keys, args = self._args(log_id, channel, envelope, now, await self._logged(log_id, now))
        epoch, offset, _dup = await self._store.acked("append", keys, *args)
        return replace(envelope, epoch=_text(epoch), offset=int(offset))

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        """One pipeline of EVALSHA (non-transactional: each append stays atomic on
        its own, and Redis runs them in order; on a cluster redis-py splits it per
        master, in order, and routes the raw command by its first key, since its
        cluster pipeline refuses ``evalsha()``); a script Redis lost is loaded and
        the append run again, alone."""
        store = self._store
        sha = store._scripts["append"].sha
        calls = [
            self._args(log_id, channel, envelope, now, await self._logged(log_id, now))
            for log_id, channel, envelope in items
        ]
        store.check_hold()
        pipe = store._client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        replicas, timeout = store.wait
        if replicas:
            pipe.execute_command("WAIT", replicas, timeout)
        try:
            replies = await _guard(pipe.execute(raise_on_error=False))
        finally:
            await pipe.reset()
        if replicas:
            replies = replies[:-1]
        out: list[Envelope | BackendUnavailable] = []
        for (_, _, envelope), (keys, args), reply in zip(items, calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                reply = await store.script("append", keys, *args)
            if isinstance(reply, BaseException):
                out.append(BackendUnavailable(f"redis: {type(reply).__name__}: {reply}"))
                continue
            epoch, offset, _dup = reply
            out.append(replace(envelope, epoch=_text(epoch), offset=int(offset)))
        return out

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        stream, meta, _ = self._keys.log_keys(log_id)
        reply = await self._store.script("read", (stream, meta), after, limit, tail)
        epoch = _text(reply[0])
        entries = []
        for i in range(5, len(reply), 2):
            try:
                envelope = Envelope.from_json(reply[i + 1])
            except ProtocolError as exc:
                log.warning("skipping malformed log entry of %s: %s", log_id, exc.detail)
                continue
            entries.append(replace(envelope, offset=int(reply[i]), epoch=epoch))
        return LogSlice(
            epoch, int(reply[1]), int(reply[2]), tuple(entries), _text(reply[3]), int(reply[4])
        )
