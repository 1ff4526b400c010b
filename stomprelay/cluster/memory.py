"""In-memory cluster backend: the single-node default and the reference model.

:class:`MemoryRegistry` mirrors the Redis scripts in plain Python (same
records, same events, same order), so one contract test suite holds both to
the same behaviour. Several in-process relays may share one :class:`MemoryHub`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from stomprelay.cluster.base import BusHandler
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, MemoryLog
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import (
    EVENT_CONTENT_TYPE,
    KICK_MEMORY_MS,
    DeadServer,
    OperatorCommand,
    Participant,
    Pending,
    RoomRecord,
    ServerRecord,
    SessionRecord,
    Suspensions,
    event_headers,
    join_event,
    leave_event,
    session_event,
)


@dataclass(slots=True)
class _Room:
    participants: set[str] = field(default_factory=set)
    created_at: int = 0
    last_activity: int = 0


class MemoryHub:
    """What in-process relays share: the buses and the registry's data."""

    def __init__(
        self, clock: Callable[[], float] = time.time, policy: HistoryPolicy | None = None
    ) -> None:
        self.buses: set[MemoryBus] = set()
        self.clock = clock
        self.log = MemoryLog(policy or HistoryPolicy(), self.publish, clock)
        #: server id -> incarnation reaped (the sweeper's tombstone)
        self.reaped: dict[str, str] = {}
        #: When any relay last refreshed, and until when nobody may reap (clock s).
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
        #: user -> refused until, and user -> latest kick (ms since the epoch)
        self.suspended: dict[str, int] = {}
        self.kicked: dict[str, int] = {}

    def publish(self, channel: str, envelope: Envelope) -> None:
        loop = asyncio.get_running_loop()
        for bus in list(self.buses):
            if channel in bus.channels and bus.handler is not None:
                loop.call_soon(bus.deliver, channel, envelope)


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


class _Events:
    """Numbered event envelopes for one registry operation, as the scripts make them."""

    def __init__(self, hub: MemoryHub, event_id: str, origin: str, now: int) -> None:
        self.hub = hub
        self.event_id = event_id
        self.origin = origin
        self.now = now
        self.seq = 0
        self.fixed_published: list[str] = []

    def publish(
        self,
        channel: str,
        destination: str,
        body: bytes,
        origin: str = "",
        fixed_id: str | None = None,
        event_id: str | None = None,
    ) -> None:
        """Room events (``event_id`` given: their exact id) go through the room's
        log; session events are numbered ``<event id>-<n>``, as in the scripts."""
        self.seq += 1
        if fixed_id is not None:
            self.fixed_published.append(fixed_id)
        room_event = destination.startswith("/topic/room/")
        envelope = Envelope(
            id=fixed_id or event_id or f"{self.event_id}-{self.seq}",
            origin=origin or self.origin,
            destination=destination,
            headers=event_headers(json.loads(body)["type"])
            if room_event
            else (("content-type", EVENT_CONTENT_TYPE),),
            body=body,
            ts=self.now,
        )
        if room_event:
            log_id = "room:" + destination[len("/topic/room/") :]
            self.hub.log.append_now(log_id, channel, envelope)
        else:
            self.hub.publish(channel, envelope)


class MemoryRegistry:
    def __init__(
        self,
        hub: MemoryHub,
        keys: Keys | None = None,
        stall_ms: int = 1_500,
        fence_ms: int = 10_000,
    ) -> None:
        self.hub = hub
        self.keys = keys or Keys()
        self.stall_ms = stall_ms
        self.fence_ms = fence_ms
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
        return self.hub.reaped.get(server_id) == incarnation

    async def backend_id(self) -> str:
        return f"memory-{id(self.hub):x}"

    # -- helpers mirroring the Lua library ----------------------------------

    def _room_count(self, room_id: str, now: int) -> int:
        room = self.hub.rooms.get(room_id)
        if room is None or not room.participants:
            self.hub.rooms.pop(room_id, None)
            return 0
        room.created_at = room.created_at or now
        room.last_activity = now
        return len(room.participants)

    def _join_room(
        self,
        sid: str,
        room_id: str,
        username: str,
        server: str,
        ev: _Events,
        announce: bool,
        fixed_id: str | None = None,
        event_id: str | None = None,
    ) -> tuple[bool, int]:
        room = self.hub.rooms.setdefault(room_id, _Room())
        added = sid not in room.participants
        room.participants.add(sid)
        count = self._room_count(room_id, ev.now)
        if added and announce:
            body = join_event(room_id, sid, username, server, ev.now, count)
            ev.publish(
                self.keys.join_channel(room_id),
                f"/topic/room/{room_id}",
                body,
                server,
                fixed_id,
                event_id or ev.event_id,
            )
        return added, count

    def _leave_room(
        self,
        sid: str,
        room_id: str,
        username: str,
        server: str,
        reason: str,
        ev: _Events,
        fixed_id: str | None = None,
        event_id: str | None = None,
    ) -> tuple[bool, int]:
        room = self.hub.rooms.get(room_id)
        removed = room is not None and sid in room.participants
        if room is not None:
            room.participants.discard(sid)
        count = self._room_count(room_id, ev.now)
        if removed:
            body = leave_event(room_id, sid, username, server, ev.now, count, reason)
            ev.publish(
                self.keys.leave_channel(room_id),
                f"/topic/room/{room_id}",
                body,
                server,
                fixed_id,
                event_id or ev.event_id,
            )
        return removed, count

    def _set_current(self, sid: str, rooms: list[str]) -> None:
        if rooms:
            self.hub.current_room[sid] = rooms[-1]
        else:
            self.hub.current_room.pop(sid, None)

    def _remove_session(
        self,
        sid: str,
        server: str,
        extra_rooms: list[str],
        reason: str,
        ev: _Events,
        leave_ids: dict[str, str] | None = None,
        event_id: str | None = None,
    ) -> bool:
        eid = event_id or ev.event_id
        record = self.hub.sessions.pop(sid, None)
        owner = record.server_id if record else server
        username = record.username if record else ""
        rooms = list(record.rooms) if record else []
        rooms += [r for r in extra_rooms if r not in rooms]
        ids = leave_ids or {}
        left = False
        for room_id in rooms:
            removed, _ = self._leave_room(
                sid, room_id, username, owner, reason, ev, ids.get(room_id), f"{eid}/{room_id}"
            )
            left = left or removed
        self.hub.current_room.pop(sid, None)
        self.hub.server_sessions.get(owner, set()).discard(sid)
        if not self.hub.server_sessions.get(owner):
            self.hub.server_sessions.pop(owner, None)
        if record is not None or left:
            body = session_event("DISCONNECT", sid, owner, username, ev.now, reason)
            ev.publish(self.keys.session_disconnect_channel, "", body)
        return record is not None

    def _remove_server(self, server: str, reason: str, ev: _Events) -> int:
        sids = sorted(self.hub.server_sessions.get(server, set()))
        for sid in sids:
            self._remove_session(sid, server, [], reason, ev, event_id=f"{ev.event_id}/{sid}")
        self.hub.server_sessions.pop(server, None)
        self.hub.servers.pop(server, None)
        self.hub.heartbeats.pop(server, None)
        return len(sids)

    def _add_server(self, server: ServerRecord, ttl_ms: int) -> None:
        self.hub.servers[server.server_id] = server
        self.hub.heartbeats[server.server_id] = self.hub.clock() + ttl_ms / 1000

    def _alive(self, server_id: str) -> bool:
        return self.hub.heartbeats.get(server_id, 0.0) > self.hub.clock()

    # -- Registry ---------------------------------------------------------

    async def register_server(
        self, server: ServerRecord, ttl_ms: int, now: int, event_id: str
    ) -> None:
        ev = _Events(self.hub, event_id, server.server_id, now)
        for sid in sorted(self.hub.server_sessions.get(server.server_id, set())):
            self._remove_session(
                sid, server.server_id, [], "server-lost", ev, event_id=f"{event_id}/{sid}"
            )
        self._add_server(server, ttl_ms)

    async def refresh_server(self, server_id: str, incarnation: str, ttl_ms: int) -> bool:
        now = self.hub.clock()
        if self.hub.pulse and now - self.hub.pulse > self.stall_ms / 1000:
            self.hub.fence_until = now + ttl_ms / 1000
        self.hub.pulse = now
        current = self.hub.servers.get(server_id)
        if current is None or current.incarnation != incarnation:
            return False
        self.hub.heartbeats[server_id] = self.hub.clock() + ttl_ms / 1000
        return True

    async def add_session(self, record: SessionRecord, event_id: str, incarnation: str) -> bool:
        server = self.hub.servers.get(record.server_id)
        if server is None or server.incarnation != incarnation:
            return False
        stored = replace(record, rooms=list(record.rooms))
        stored.last_seen = stored.last_seen or stored.connected_at
        self.hub.sessions[record.session_id] = stored
        self.hub.server_sessions.setdefault(record.server_id, set()).add(record.session_id)
        body = session_event(
            "CONNECT", record.session_id, record.server_id, record.username, record.connected_at
        )
        ev = _Events(self.hub, event_id, record.server_id, record.connected_at)
        ev.publish(self.keys.session_connect_channel, "", body)
        return True

    async def remove_session(
        self,
        session_id: str,
        server_id: str,
        rooms: list[str],
        reason: str,
        now: int,
        event_id: str,
    ) -> None:
        ev = _Events(self.hub, event_id, server_id, now)
        self._remove_session(session_id, server_id, rooms, reason, ev)

    async def join(
        self, session_id: str, room_id: str, username: str, server_id: str, now: int, event_id: str
    ) -> tuple[bool, int] | None:
        record = self.hub.sessions.get(session_id)
        if record is None:
            return None
        ev = _Events(self.hub, event_id, server_id, now)
        added, count = self._join_room(session_id, room_id, username, server_id, ev, True)
        record.rooms = [r for r in record.rooms if r != room_id] + [room_id]
        record.username = username
        record.last_seen = now
        self._set_current(session_id, record.rooms)
        return added, count

    async def leave(
        self, session_id: str, room_id: str, server_id: str, reason: str, now: int, event_id: str
    ) -> tuple[bool, int]:
        record = self.hub.sessions.get(session_id)
        ev = _Events(self.hub, event_id, server_id, now)
        username = record.username if record else ""
        result = self._leave_room(session_id, room_id, username, server_id, reason, ev)
        if record is not None:
            record.rooms = [r for r in record.rooms if r != room_id]
            record.last_seen = now
            self._set_current(session_id, record.rooms)
        return result

    async def chat(
        self, session_id: str, room_id: str, channel: str, envelope: Envelope, now: int
    ) -> Envelope:
        room = self.hub.rooms.get(room_id)
        if room is not None:
            room.last_activity = now
        record = self.hub.sessions.get(session_id)
        if record is not None:
            record.last_seen = now
        return self.hub.log.append_now(f"room:{room_id}", channel, envelope)

    async def participants(self, room_id: str) -> list[Participant]:
        room = self.hub.rooms.get(room_id)
        out = []
        for sid in room.participants if room else ():
            record = self.hub.sessions.get(sid)
            out.append(
                Participant(
                    sid, record.username if record else "", record.server_id if record else ""
                )
            )
        return sorted(out, key=lambda p: (p.username, p.session_id))

    async def dead_servers(self) -> list[DeadServer]:
        return [
            DeadServer(server_id, record.incarnation)
            for server_id, record in sorted(self.hub.servers.items())
            if not self._alive(server_id)
        ]

    async def reap(self, dead: DeadServer, sweeper_id: str, now: int, event_id: str) -> int | None:
        if dead.server_id not in self.hub.servers:
            return None
        held = self.hub.locks.get(dead.server_id)
        if held is not None and held[1] > self.hub.clock():
            return None
        self.hub.locks[dead.server_id] = (secrets.token_hex(4), self.hub.clock() + 15)
        try:
            current = self.hub.servers.get(dead.server_id)
            if self._alive(dead.server_id):
                return None
            if current is not None and current.incarnation != dead.incarnation:
                return None
            now_s = self.hub.clock()
            if now_s < self.hub.fence_until:
                return None
            if self.hub.pulse and now_s - self.hub.pulse > self.stall_ms / 1000:
                self.hub.fence_until = now_s + self.fence_ms / 1000
                return None
            self.hub.reaped[dead.server_id] = current.incarnation if current else ""
            ev = _Events(self.hub, event_id, sweeper_id, now)
            return self._remove_server(dead.server_id, "server-lost", ev)
        finally:
            self.hub.locks.pop(dead.server_id, None)

    async def unregister_server(self, server_id: str, now: int, event_id: str) -> None:
        ev = _Events(self.hub, event_id, server_id, now)
        self._remove_server(server_id, "disconnected", ev)

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
        self._add_server(server, ttl_ms)
        ev = _Events(self.hub, event_id, server.server_id, now)
        held = set()
        for session in sessions:
            sid = session.session_id
            held.add(sid)
            stored = replace(session, server_id=server.server_id, rooms=list(session.rooms))
            stored.last_seen = stored.last_seen or stored.connected_at
            previous = self.hub.sessions.get(sid)
            for room_id in previous.rooms if previous else []:
                if room_id not in stored.rooms:
                    self._leave_room(
                        sid,
                        room_id,
                        session.username,
                        server.server_id,
                        "left",
                        ev,
                        pending.leaves.get((sid, room_id)),
                        f"{event_id}/{sid}/{room_id}",
                    )
            self.hub.sessions[sid] = stored
            self.hub.server_sessions.setdefault(server.server_id, set()).add(sid)
            if previous is None and sid in pending.new_sessions:
                body = session_event(
                    "CONNECT", sid, server.server_id, session.username, session.connected_at
                )
                ev.publish(self.keys.session_connect_channel, "", body)
            for room_id in stored.rooms:
                fixed = pending.joins.get((sid, room_id))
                self._join_room(
                    sid,
                    room_id,
                    session.username,
                    server.server_id,
                    ev,
                    announce or fixed is not None,
                    fixed,
                    f"{event_id}/{sid}/{room_id}",
                )
            self._set_current(sid, stored.rooms)
        for sid in sorted(self.hub.server_sessions.get(server.server_id, set()) - held):
            leave_ids = {room: i for (s, room), i in pending.leaves.items() if s == sid}
            self._remove_session(
                sid, server.server_id, [], "disconnected", ev, leave_ids, f"{event_id}/{sid}"
            )
        return ev.fixed_published

    async def servers(self) -> list[tuple[ServerRecord, bool, int]]:
        return [
            (record, self._alive(sid), len(self.hub.server_sessions.get(sid, ())))
            for sid, record in sorted(self.hub.servers.items())
        ]

    async def sessions(self) -> list[SessionRecord]:
        return [replace(r, rooms=list(r.rooms)) for _, r in sorted(self.hub.sessions.items())]

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
