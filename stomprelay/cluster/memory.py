"""In-memory cluster backend: the single-node default (no Redis process).

:class:`MemoryStore` offers the same steps as the Redis scripts, on dicts;
the operations made of them (``operations.py``) and every event
(``registry.py``) are shared with the Redis backend, and one contract test
suite runs over both. Several in-process relays may share one :class:`MemoryHub`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from stomprelay.cluster.base import (
    FENCE_MS,
    REAP_TOMBSTONE_MS,
    REAPER_LOCK_MS,
    STALL_MS,
    BusHandler,
)
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, MemoryLog
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.operations import GONE, SERVERS, SESSIONS, Gone, StepRegistry
from stomprelay.cluster.registry import (
    KICK_MEMORY_MS,
    Added,
    EventTemplate,
    LoggedRegistry,
    OperatorCommand,
    Participant,
    RoomRecord,
    ServerRecord,
    SessionRecord,
    Suspensions,
)
from stomprelay.cluster.webhook_steps import StepEvents, WebhookSteps
from stomprelay.webhook_events import MemoryWebhookLog


@dataclass(slots=True)
class _Room:
    participants: set[str] = field(default_factory=set)
    created_at: int = 0
    last_activity: int = 0


class MemoryHub:
    """What in-process relays share: the buses and the registry's data."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        policy: HistoryPolicy | None = None,
        webhooks: WebhookSteps | None = None,
    ) -> None:
        self.buses: set[MemoryBus] = set()
        #: Deliveries :meth:`publish` scheduled that have not run yet.
        self._queued = 0
        self.clock = clock
        #: The webhook events (None: webhooks off) and their partitions, appended to by
        #: the registry's steps and the log as the Redis streams are.
        self.webhooks = webhooks
        self.webhook_log = MemoryWebhookLog(webhooks.partitions) if webhooks else None
        reports = webhooks is not None and bool(webhooks.messages)
        self.log = MemoryLog(
            policy or HistoryPolicy(),
            self.publish,
            clock,
            self._message_published if reports else None,
            publish_now=self.publish_now,
        )
        self.wipe()

    def wipe(self) -> None:
        """Lose every key, as FLUSHALL does (a Redis restarted without its data): the
        records, the indexes, the tombstones, locks and fence, the suspensions, the
        logs and their topic index. The buses (pub/sub connections) stay."""
        #: server id -> (incarnation reaped, until when the tombstone lives, clock s)
        self.reaped: dict[str, tuple[str, float]] = {}
        #: The ``servers:liveness`` hash: when any relay last refreshed, and until
        #: when nobody may reap (clock s).
        self.pulse = 0.0
        self.fence_until = 0.0
        self.servers: dict[str, ServerRecord] = {}
        #: server id -> heartbeat expiry (clock seconds)
        self.heartbeats: dict[str, float] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.server_sessions: dict[str, set[str]] = {}
        self.rooms: dict[str, _Room] = {}
        self.current_room: dict[str, str] = {}
        self.locks: dict[str, tuple[str, float]] = {}
        #: the ``servers:active`` and ``sessions:active`` indexes, which the
        #: directory reads (as Redis does), not the records
        self.indexes: dict[str, set[str]] = {"servers": set(), "sessions": set()}
        #: user -> its session ids (the ``user:{u}:sessions`` sets)
        self.user_sessions: dict[str, set[str]] = {}
        #: user -> refused until, and user -> latest kick (ms since the epoch)
        self.suspended: dict[str, int] = {}
        self.kicked: dict[str, int] = {}
        #: user -> destinations of its server-side subscriptions
        self.user_subscriptions: dict[str, set[str]] = {}
        self.log.wipe()
        if self.webhook_log is not None:
            for entries in self.webhook_log.entries:
                entries.clear()

    def _message_published(self, envelope: Envelope) -> None:
        """A message published through the log: its ``message.published``, if reported."""
        hooks, kept = self.webhooks, self.webhook_log
        event = hooks.message(envelope) if hooks is not None else None
        if event is not None and hooks is not None and kept is not None:
            kept.append(event.partition, event.text(envelope.offset))
            hooks.counted([("message.published", "")])

    def webhook_append(self, events: StepEvents, fired: list[tuple[str, str]]) -> None:
        """Append a step's webhook events to their partition (in the step's own code)."""
        if self.webhook_log is not None:
            for _, event in fired:
                self.webhook_log.append(events.partition, event)

    def tombstone(self, server_id: str) -> str | None:
        """The incarnation a sweeper reaped, while its tombstone lives."""
        found = self.reaped.get(server_id)
        if found is None:
            return None
        if found[1] <= self.clock():
            del self.reaped[server_id]
            return None
        return found[0]

    def publish(self, channel: str, envelope: Envelope) -> None:
        """Deliver ``envelope`` to every bus listening on ``channel``, each a loop turn
        later (``call_soon``: no publisher's own handler is re-entered)."""
        loop = asyncio.get_running_loop()
        for bus in list(self.buses):
            if channel in bus.channels and bus.handler is not None:
                self._queued += 1
                loop.call_soon(self._deliver_queued, bus, channel, envelope)

    def publish_now(self, channel: str, envelope: Envelope) -> None:
        """:meth:`publish`, but delivered in this call when no earlier delivery is
        still queued (so every bus still sees envelopes in publish order): a quiet
        publisher's message reaches its subscribers in the read that brought it,
        without waiting a turn behind a flooded room's fan-out. Only for callers
        that hold nothing a handler could touch (the pipeline's lone append)."""
        if self._queued:
            self.publish(channel, envelope)
            return
        for bus in list(self.buses):
            bus.deliver(channel, envelope)

    def _deliver_queued(self, bus: MemoryBus, channel: str, envelope: Envelope) -> None:
        self._queued -= 1
        bus.deliver(channel, envelope)


class MemoryBus:
    """Channels inside one process; delivery is asynchronous and FIFO.

    Delivery goes through ``loop.call_soon`` so a publisher's own handler is
    not re-entered, and every bus of the hub sees envelopes in publish order.
    """

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub or MemoryHub()
        self.handler: BusHandler | None = None
        self.channels: set[str] = set()
        self.on_state_change: Callable[[bool], None] | None = None

    @property
    def available(self) -> bool:
        return True

    async def start(self, handler: BusHandler) -> None:
        self.handler = handler
        self.hub.buses.add(self)

    async def close(self) -> None:
        self.hub.buses.discard(self)
        self.channels.clear()

    async def subscribe(self, channel: str) -> None:
        self.channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)

    async def publish(self, channel: str, envelope: Envelope) -> None:
        self.hub.publish(channel, envelope)

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        for channel, envelope in items:
            self.hub.publish(channel, envelope)

    def deliver(self, channel: str, envelope: Envelope) -> None:
        if channel in self.channels and self.handler is not None:
            self.handler(channel, envelope)


class MemoryStore:
    """The registry's steps on the hub's dicts (each one runs without awaiting)."""

    def __init__(self, hub: MemoryHub, keys: Keys) -> None:
        self.hub = hub
        self.keys = keys

    # -- one relay ----------------------------------------------------------

    async def server_put(
        self, server: ServerRecord, ttl_ms: int, sessions: Sequence[str]
    ) -> list[str]:
        hub = self.hub
        before = sorted(hub.server_sessions.get(server.server_id, set()))
        hub.servers[server.server_id] = server
        hub.heartbeats[server.server_id] = hub.clock() + ttl_ms / 1000
        if sessions:
            hub.server_sessions.setdefault(server.server_id, set()).update(sessions)
        return before

    async def server_sessions(self, server_id: str) -> list[str]:
        return sorted(self.hub.server_sessions.get(server_id, set()))

    def _runs(self, server_id: str, incarnation: str) -> bool:
        current = self.hub.servers.get(server_id)
        return current is not None and current.incarnation == incarnation

    async def heartbeat(self, server_id: str, incarnation: str, ttl_ms: int) -> bool:
        if not self._runs(server_id, incarnation) or self.hub.tombstone(server_id) == incarnation:
            return False
        self.hub.heartbeats[server_id] = self.hub.clock() + ttl_ms / 1000
        return True

    async def server_add_session(self, server_id: str, incarnation: str, session_id: str) -> bool:
        if not self._runs(server_id, incarnation) or self.hub.tombstone(server_id) == incarnation:
            return False
        self.hub.server_sessions.setdefault(server_id, set()).add(session_id)
        return True

    async def server_remove_session(self, server_id: str, session_id: str) -> None:
        listed = self.hub.server_sessions.get(server_id)
        if listed is not None:
            listed.discard(session_id)
            if not listed:
                del self.hub.server_sessions[server_id]

    async def lock(self, server_id: str, token: str, ttl_ms: int) -> bool:
        held = self.hub.locks.get(server_id)
        if held is not None and held[1] > self.hub.clock() and held[0] != token:
            return False
        self.hub.locks[server_id] = (token, self.hub.clock() + ttl_ms / 1000)
        return True

    def _holds(self, server_id: str, token: str) -> bool:
        held = self.hub.locks.get(server_id)
        return held is not None and held[0] == token and held[1] > self.hub.clock()

    async def keep_lock(self, server_id: str, token: str, ttl_ms: int) -> bool:
        if not self._holds(server_id, token):
            return False
        self.hub.locks[server_id] = (token, self.hub.clock() + ttl_ms / 1000)
        return True

    async def unlock(self, server_id: str, token: str) -> None:
        if self._holds(server_id, token):
            del self.hub.locks[server_id]

    def _alive(self, server_id: str) -> bool:
        return self.hub.heartbeats.get(server_id, 0.0) > self.hub.clock()

    async def reap_begin(
        self, server_id: str, incarnation: str, token: str
    ) -> list[str] | Gone | None:
        hub = self.hub
        if not self._holds(server_id, token) or self._alive(server_id):
            return None
        current = hub.servers.get(server_id)
        if current is not None and current.incarnation != incarnation:
            return None
        if current is None and not hub.server_sessions.get(server_id):
            return GONE
        reaped = current.incarnation if current else incarnation
        hub.reaped[server_id] = (reaped, hub.clock() + REAP_TOMBSTONE_MS / 1000)
        return sorted(hub.server_sessions.get(server_id, set()))

    async def server_drop(self, server_id: str, incarnation: str, token: str) -> bool:
        hub = self.hub
        current = hub.servers.get(server_id)
        if incarnation and current is not None and current.incarnation != incarnation:
            return False
        if token and not self._holds(server_id, token):
            return False
        for table in (hub.servers, hub.heartbeats, hub.server_sessions, hub.locks):
            table.pop(server_id, None)
        return True

    async def alive(self, server_ids: Sequence[str]) -> list[tuple[bool, str]]:
        out = []
        for server_id in server_ids:
            current = self.hub.servers.get(server_id)
            out.append((self._alive(server_id), current.incarnation if current else ""))
        return out

    # -- indexes --------------------------------------------------------------

    async def index(self, name: str, member: str, present: bool) -> None:
        if present:
            self.hub.indexes[name].add(member)
        else:
            self.hub.indexes[name].discard(member)

    async def members(self, name: str) -> list[str]:
        return sorted(self.hub.indexes[name])

    async def user_index(
        self, user: str, session_id: str, present: bool, events: StepEvents | None = None
    ) -> tuple[bool, int]:
        found = self.hub.user_sessions
        ids = found.setdefault(user, set()) if present else found.get(user, set())
        changed = (session_id not in ids) if present else (session_id in ids)
        if present:
            ids.add(session_id)
        else:
            ids.discard(session_id)
            if not ids:
                found.pop(user, None)
        if events is not None:
            self.hub.webhook_append(events, events.fired(changed, len(ids), present))
        return changed, len(ids)

    async def user_members(self, user: str) -> list[str]:
        return sorted(self.hub.user_sessions.get(user, ()))

    async def pulse(self, ttl_ms: int, stall_ms: int) -> None:
        hub = self.hub
        now = hub.clock()
        if hub.pulse and now - hub.pulse > stall_ms / 1000:
            hub.fence_until = now + ttl_ms / 1000
        hub.pulse = now

    async def may_reap(self, stall_ms: int, fence_ms: int) -> bool:
        hub = self.hub
        now = hub.clock()
        if now < hub.fence_until:
            return False
        if hub.pulse and now - hub.pulse > stall_ms / 1000:
            hub.fence_until = now + fence_ms / 1000
            return False
        return True

    # -- one session ------------------------------------------------------------

    async def session_read(self, session_id: str) -> SessionRecord | None:
        record = self.hub.sessions.get(session_id)
        return replace(record, rooms=list(record.rooms)) if record else None

    def _set_current(self, session_id: str, rooms: list[str]) -> None:
        if rooms:
            self.hub.current_room[session_id] = rooms[-1]
        else:
            self.hub.current_room.pop(session_id, None)

    async def session_put(
        self,
        record: SessionRecord,
        connect: Envelope | None,
        merge: bool,
        events: StepEvents | None = None,
    ) -> tuple[bool, list[str]]:
        hub = self.hub
        previous = hub.sessions.get(record.session_id)
        before = list(previous.rooms) if previous else []
        rooms = list(record.rooms)
        if merge:
            rooms = [r for r in before if r not in rooms] + rooms
        hub.sessions[record.session_id] = replace(record, rooms=rooms)
        self._set_current(record.session_id, rooms)
        if previous is None and connect is not None:
            hub.publish(self.keys.session_connect_channel, connect)
        if events is not None:
            hub.webhook_append(events, events.fired(previous is None))
        return previous is not None, before

    async def session_join(self, session_id: str, room_id: str, username: str, now: int) -> bool:
        record = self.hub.sessions.get(session_id)
        if record is None:
            return False
        record.rooms = [r for r in record.rooms if r != room_id] + [room_id]
        record.username = username
        record.last_seen = now
        self._set_current(session_id, record.rooms)
        return True

    async def session_leave(self, session_id: str, rooms: Sequence[str], last_seen: int) -> None:
        record = self.hub.sessions.get(session_id)
        if record is not None:
            record.rooms = [r for r in record.rooms if r not in rooms]
            record.last_seen = last_seen
            self._set_current(session_id, record.rooms)

    async def session_drop(
        self,
        session_id: str,
        disconnect: Envelope,
        force: bool,
        events: StepEvents | None = None,
    ) -> bool:
        existed = self.hub.sessions.pop(session_id, None) is not None
        self.hub.current_room.pop(session_id, None)
        if existed or force:
            self.hub.publish(self.keys.session_disconnect_channel, disconnect)
        if events is not None:
            self.hub.webhook_append(events, events.fired(existed or force))
        return existed

    async def session_touch(self, session_id: str, now: int) -> None:
        record = self.hub.sessions.get(session_id)
        if record is not None:
            record.last_seen = now

    # -- one room -----------------------------------------------------------------

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
        hub = self.hub
        room = hub.rooms.setdefault(room_id, _Room())
        changed = (
            (session_id not in room.participants) if join else (session_id in room.participants)
        )
        if join:
            room.participants.add(session_id)
        else:
            room.participants.discard(session_id)
        count = len(room.participants)
        if count == 0:
            del hub.rooms[room_id]
        else:
            room.created_at = room.created_at or now
            room.last_activity = now
        if changed and announce:
            channel = (self.keys.join_channel if join else self.keys.leave_channel)(room_id)
            hub.log.append_now(f"room:{room_id}", channel, Envelope.from_json(event.fill(count)))
        if events is not None:
            hub.webhook_append(events, events.fired(changed, count, join))
        return changed, count

    async def webhook_add(self, events: Sequence[tuple[int, str]]) -> None:
        if self.hub.webhook_log is not None:
            for partition, event in events:
                self.hub.webhook_log.append(partition, event)

    async def chat(self, room_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        room = self.hub.rooms.get(room_id)
        if room is not None:
            room.last_activity = now
        return self.hub.log.append_now(f"room:{room_id}", channel, envelope)


class MemoryRegistry(StepRegistry):
    """The registry of one process (or of in-process relays sharing a hub)."""

    def __init__(
        self,
        hub: MemoryHub,
        keys: Keys | None = None,
        stall_ms: int = STALL_MS,
        fence_ms: int = FENCE_MS,
        lock_ttl_ms: int = REAPER_LOCK_MS,
    ) -> None:
        store = MemoryStore(hub, keys or Keys())
        super().__init__(store, lock_ttl_ms, stall_ms, fence_ms, hub.webhooks)
        self.hub = hub
        self.log = hub.log

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def eviction_policy(self) -> str | None:
        return "noeviction"

    async def was_reaped(self, server_id: str, incarnation: str) -> bool:
        return self.hub.tombstone(server_id) == incarnation

    async def backend_id(self) -> str:
        return f"memory-{id(self.hub):x}"

    async def migrate(self) -> int:
        return 0

    async def participants(self, room_id: str) -> list[Participant]:
        room = self.hub.rooms.get(room_id)
        out = []
        for sid in room.participants if room else ():
            record = self.hub.sessions.get(sid)
            out.append(
                Participant(sid, record.username, record.server_id, record.user)
                if record
                else Participant(sid, "", "")
            )
        return sorted(out, key=lambda p: (p.username, p.session_id))

    async def servers(self) -> list[tuple[ServerRecord, bool, int]]:
        hub = self.hub
        return [
            (
                hub.servers.get(sid) or ServerRecord(sid, "", 0, "", 0, ""),
                hub.heartbeats.get(sid, 0.0) > hub.clock(),
                len(hub.server_sessions.get(sid, ())),
            )
            for sid in sorted(hub.indexes[SERVERS])
        ]

    async def sessions(self) -> list[SessionRecord]:
        hub = self.hub
        return [
            replace(record, rooms=list(record.rooms))
            for sid in sorted(hub.indexes[SESSIONS])
            if (record := hub.sessions.get(sid)) is not None
        ]

    async def suspend(self, command: OperatorCommand, channel: str, envelope: Envelope) -> None:
        hub = self.hub
        if command.lift:
            hub.suspended.pop(command.user, None)
        if command.kicked_at is not None:
            hub.kicked[command.user] = command.kicked_at
        if command.until_ms is not None:
            hub.suspended[command.user] = command.until_ms
        hub.publish(channel, envelope)

    async def suspensions(self, now_ms: int) -> Suspensions:
        hub = self.hub
        hub.suspended = {u: t for u, t in hub.suspended.items() if t > now_ms}
        hub.kicked = {u: t for u, t in hub.kicked.items() if t > now_ms - KICK_MEMORY_MS}
        return Suspensions(dict(hub.suspended), dict(hub.kicked))

    async def add_server_subscription(self, user: str, destination: str, most: int) -> Added:
        kept = self.hub.user_subscriptions.setdefault(user, set())
        if destination in kept:
            return "present"
        if len(kept) >= most:
            if not kept:
                del self.hub.user_subscriptions[user]
            return "full"
        kept.add(destination)
        return "added"

    async def remove_server_subscription(self, user: str, destination: str) -> bool:
        kept = self.hub.user_subscriptions.get(user)
        if kept is None or destination not in kept:
            return False
        kept.discard(destination)
        if not kept:
            del self.hub.user_subscriptions[user]
        return True

    async def server_subscriptions(self, user: str) -> list[str]:
        return sorted(self.hub.user_subscriptions.get(user, ()))

    async def session(self, session_id: str) -> SessionRecord | None:
        record = self.hub.sessions.get(session_id)
        return replace(record, rooms=list(record.rooms)) if record else None

    async def rooms(self) -> list[RoomRecord]:
        return [
            RoomRecord(rid, len(r.participants), r.created_at, r.last_activity)
            for rid, r in sorted(self.hub.rooms.items())
            if r.participants
        ]

    async def room(self, room_id: str) -> RoomRecord | None:
        r = self.hub.rooms.get(room_id)
        if r is None or not r.participants:
            return None
        return RoomRecord(room_id, len(r.participants), r.created_at, r.last_activity)


if TYPE_CHECKING:
    # mypy --strict checks that the memory backend implements every role
    def _roles(registry: MemoryRegistry) -> LoggedRegistry:
        return registry
