"""The registry's steps (``operations.Store``) on Redis: one Lua script each.

Every script's KEYS share one hash tag (:mod:`keys`), so the same steps run on a
single Redis, under Sentinel and on Redis Cluster. Appends may wait for replicas
(WAIT) and, under Sentinel, no step runs while a failover is under way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from redis.exceptions import NoScriptError

from stomprelay.cluster.base import REAP_TOMBSTONE_MS
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.lua import LIBRARY, SCRIPTS
from stomprelay.cluster.operations import GONE, Gone
from stomprelay.cluster.redis_io import as_fields, as_text, as_texts, guard
from stomprelay.cluster.registry import EventTemplate, ServerRecord, SessionRecord
from stomprelay.cluster.webhook_steps import MessageEvent, StepEvents, WebhookSteps
from stomprelay.errors import BackendUnavailable

log = logging.getLogger(__name__)

#: Seconds a relay appends without WAIT after one found too few replicas.
WAIT_BACKOFF = 5.0


class RedisStore:
    """The registry's steps (``operations.Store``) as Lua scripts, one slot each."""

    def __init__(self, client: Any, keys: Keys, policy: HistoryPolicy, mode: str) -> None:
        self.keys = keys
        self._client = client
        #: Whether one script may touch several logs (one node holds every key).
        self.one_node = mode != "cluster"
        publish = "SPUBLISH" if mode == "cluster" else "PUBLISH"
        # Where a master can change under a log (a failover, a slot moved), the
        # log's epoch follows the master: no (epoch, offset) names two messages.
        follow = "true" if mode != "standalone" else "false"
        adopt = "true" if mode == "cluster" else "false"
        prelude = (
            policy.lua()
            + f"local ROOM_PUBLISH = {publish!r}\nlocal EPOCH_PER_MASTER = {follow}\n"
            + f"local EPOCH_ADOPT_MOVED = {adopt}\n"
            + f"local REAP_TOMBSTONE_MS = {REAP_TOMBSTONE_MS}\n"
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

        #: The webhook events of ``message.published`` (the log steps make them; the
        #: registry's steps are handed theirs); None: none.
        self.webhooks: WebhookSteps | None = None

        #: Under Sentinel: True while a failover is under way (the bus hears it);
        #: no step runs then, so nothing is written to a master on its way out.
        self.hold: Callable[[], bool] | None = None

    def sha(self, name: str) -> str:
        """The SHA1 a script runs under (EVALSHA in a pipeline)."""
        return str(self._scripts[name].sha)

    def pipeline(self) -> Any:
        """A non-transactional pipeline on the store's client."""
        return self._client.pipeline(transaction=False)

    def check_hold(self) -> None:
        """Refuse while a Sentinel failover is under way (see :attr:`hold`)."""
        if self.hold is not None and self.hold():
            raise BackendUnavailable("redis: sentinel failover in progress")

    async def script(self, name: str, keys: Sequence[str], *args: str | int | bytes) -> Any:
        self.check_hold()
        return await guard(self._scripts[name](keys=list(keys), args=list(args)))

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
                reply, got = await guard(pipe.execute(raise_on_error=False))
            finally:
                await pipe.reset()
            if isinstance(reply, NoScriptError) and attempt == 1:
                await guard(self._client.script_load(script.script))
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

    # -- webhook events (webhook_steps.py) ------------------------------------

    def _hooked(
        self, keys: Sequence[str], args: Sequence[str | int | bytes], events: StepEvents | None
    ) -> tuple[Sequence[str], Sequence[str | int | bytes]]:
        """A step's KEYS and ARGV with its webhook events, where one node holds every
        key: the script appends them itself (``webhook_append``)."""
        if events is None or not self.one_node:
            return keys, args
        stream = self.keys.webhook_events(events.partition)
        return (*keys, stream), (*args, events.change, events.edge)

    async def _after(self, events: StepEvents | None, fired: list[tuple[str, str]]) -> None:
        """On a cluster, where the partition's stream sits in another slot than the
        step's keys: XADD the events the step fired, right after it. A crash between
        the two loses them (docs/webhooks.md, "Redis Cluster")."""
        if events is None or self.one_node or not fired:
            return
        await self.webhook_add([(events.partition, event) for _, event in fired])

    async def webhook_add(self, events: Sequence[tuple[int, str]]) -> None:
        """XADD each ``(partition, event JSON)`` (on a cluster, after their step)."""
        for partition, event in events:
            await guard(self._client.xadd(self.keys.webhook_events(partition), {"e": event}))

    async def message_published(self, event: MessageEvent, offset: int, dup: bool) -> None:
        """After a log step that had ``event``: on a cluster XADD it (unless the step
        knew the message already), and count it."""
        if dup or self.webhooks is None:
            return
        if not self.one_node:
            await self.webhook_add([(event.partition, event.text(offset))])
        self.webhooks.counted([("message.published", "")])

    def message_args(
        self, keys: tuple[str, ...], args: tuple[str | int | bytes, ...], event: MessageEvent | None
    ) -> tuple[tuple[str, ...], tuple[str | int | bytes, ...]]:
        """A log step's KEYS and ARGV with its ``message.published`` event, where one
        node holds every key (the step appends it with the message)."""
        if event is None or not self.one_node:
            return keys, args
        return (*keys, self.keys.webhook_events(event.partition)), (*args, event.head, event.tail)

    async def _step(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[str | int | bytes],
        events: StepEvents | None,
    ) -> Any:
        keys, args = self._hooked(keys, args, events)
        return await self.script(name, keys, *args)

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
        return as_texts(before)

    async def server_sessions(self, server_id: str) -> list[str]:
        return as_texts(await guard(self._client.smembers(self.keys.server_sessions(server_id))))

    async def heartbeat(self, server_id: str, incarnation: str, ttl_ms: int) -> bool:
        info, beat, _ = self._server(server_id)
        keys = (info, beat, self.keys.reaped(server_id))
        return bool(await self.script("heartbeat", keys, incarnation, ttl_ms))

    async def server_add_session(self, server_id: str, incarnation: str, session_id: str) -> bool:
        info, _, listed = self._server(server_id)
        keys = (info, listed, self.keys.reaped(server_id))
        return bool(await self.script("server_add_session", keys, incarnation, session_id))

    async def server_remove_session(self, server_id: str, session_id: str) -> None:
        await guard(self._client.srem(self.keys.server_sessions(server_id), session_id))

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
        return as_texts(reply[1:]) if code > 0 else None

    async def server_drop(self, server_id: str, incarnation: str, token: str) -> bool:
        keys = (*self._server(server_id), self.keys.reaper_lock(server_id))
        return bool(await self.script("server_drop", keys, incarnation, token))

    async def alive(self, server_ids: Sequence[str]) -> list[tuple[bool, str]]:
        pipe = self._client.pipeline(transaction=False)
        for server_id in server_ids:
            pipe.exists(self.keys.server_heartbeat(server_id))
            pipe.hget(self.keys.server_info(server_id), "incarnation")
        replies = await guard(pipe.execute())
        return [
            (bool(replies[2 * i]), as_text(replies[2 * i + 1] or ""))
            for i in range(len(server_ids))
        ]

    # -- indexes ------------------------------------------------------------

    def _index(self, name: str) -> str:
        return self.keys.servers_active if name == "servers" else self.keys.sessions_active

    async def index(self, name: str, member: str, present: bool) -> None:
        key = self._index(name)
        await guard(self._client.sadd(key, member) if present else self._client.srem(key, member))

    async def members(self, name: str) -> list[str]:
        return as_texts(await guard(self._client.smembers(self._index(name))))

    async def user_index(
        self, user: str, session_id: str, present: bool, events: StepEvents | None = None
    ) -> tuple[bool, int]:
        key = self.keys.user_sessions(user)
        client = self._client
        if events is None:
            changed = await guard(
                client.sadd(key, session_id) if present else client.srem(key, session_id)
            )
            return bool(changed), -1
        args = (session_id, "1" if present else "0")
        changed, count = await self._step("user_index", (key,), args, events)
        await self._after(events, events.fired(bool(changed), int(count), present))
        return bool(changed), int(count)

    async def user_members(self, user: str) -> list[str]:
        return sorted(as_texts(await guard(self._client.smembers(self.keys.user_sessions(user)))))

    async def pulse(self, ttl_ms: int, stall_ms: int) -> None:
        await self.script("pulse", (self.keys.liveness,), ttl_ms, stall_ms)

    async def may_reap(self, stall_ms: int, fence_ms: int) -> bool:
        return bool(await self.script("may_reap", (self.keys.liveness,), stall_ms, fence_ms))

    # -- one session --------------------------------------------------------

    async def session_read(self, session_id: str) -> SessionRecord | None:
        fields = as_fields(await guard(self._client.hgetall(self.keys.session(session_id))))
        return SessionRecord.from_fields(session_id, fields) if fields else None

    async def session_put(
        self,
        record: SessionRecord,
        connect: Envelope | None,
        merge: bool,
        events: StepEvents | None = None,
    ) -> tuple[bool, list[str]]:
        existed, before = await self._step(
            "session_put",
            self.keys.session_keys(record.session_id),
            (
                json.dumps(record.to_fields()),
                connect.to_json() if connect is not None else "",
                self.keys.session_connect_channel,
                "1" if merge else "0",
            ),
            events,
        )
        if events is not None:
            await self._after(events, events.fired(not existed))
        return bool(existed), [r for r in as_text(before).split(",") if r]

    async def session_join(self, session_id: str, room_id: str, username: str, now: int) -> bool:
        keys = self.keys.session_keys(session_id)
        return bool(await self.script("session_join", keys, room_id, username, now))

    async def session_leave(self, session_id: str, rooms: Sequence[str], last_seen: int) -> None:
        keys = self.keys.session_keys(session_id)
        await self.script("session_leave", keys, ",".join(rooms), last_seen)

    async def session_drop(
        self,
        session_id: str,
        disconnect: Envelope,
        force: bool,
        events: StepEvents | None = None,
    ) -> bool:
        existed = bool(
            await self._step(
                "session_drop",
                self.keys.session_keys(session_id),
                (disconnect.to_json(), self.keys.session_disconnect_channel, "1" if force else "0"),
                events,
            )
        )
        if events is not None:
            await self._after(events, events.fired(existed or force))
        return existed

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
        events: StepEvents | None = None,
    ) -> tuple[bool, int]:
        channel = (self.keys.join_channel if join else self.keys.leave_channel)(room_id)
        changed, count = await self._step(
            "room_change",
            self.keys.room_keys(room_id),
            (
                "1" if join else "0",
                session_id,
                now,
                event.head,
                event.tail,
                event.id,
                channel,
                "1" if announce else "0",
            ),
            events,
        )
        if events is not None:
            await self._after(events, events.fired(bool(changed), int(count), join))
        return bool(changed), int(count)

    async def chat(self, room_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        keys, args = self.keys.room_keys(room_id), (channel, envelope.to_json(), now, envelope.id)
        if self.webhooks is None:  # the common case, without a step more
            epoch, offset, _ = await self.acked("chat", keys, *args)
            return replace(envelope, epoch=as_text(epoch), offset=int(offset))
        return await self.log_step("chat", keys, args, envelope)

    async def log_step(
        self,
        name: str,
        keys: tuple[str, ...],
        args: tuple[str | int | bytes, ...],
        envelope: Envelope,
    ) -> Envelope:
        """Run a log's step (``chat``, ``append``: {epoch, offset, duplicate}) for
        ``envelope``, with its ``message.published`` if webhooks report it; the
        envelope with its epoch and offset."""
        hooks = self.webhooks
        event = hooks.message(envelope) if hooks is not None else None
        if event is None:
            epoch, offset, _ = await self.acked(name, keys, *args)
        else:
            keys, args = self.message_args(keys, args, event)
            epoch, offset, dup = await self.acked(name, keys, *args)
            await self.message_published(event, int(offset), bool(dup))
        return replace(envelope, epoch=as_text(epoch), offset=int(offset))
