"""The registry's operations, written once, as steps on one slot each.

Every backend offers the same small set of steps (:class:`Store`): each is
atomic and touches the keys of one room, one session, one relay, or one index
(in Redis: one Lua script whose KEYS share a hash tag; in memory: a few dict
changes). :class:`StepRegistry` builds join, leave, add/remove session,
register, reap, unregister and restore from them, once for every backend, so
the single node and the Redis modes cannot drift apart, and Redis Cluster can
run them (a script may only touch one slot).

An operation that spans slots is not atomic, so the order of its steps is
chosen to be safe when it stops anywhere (a Redis error, a crash, a failover)
and is run again, or cleaned up by a reap or a restore:

* The owner's side first: a session is listed under its relay before its hash
  is written, and a relay under ``servers:active`` before its info, so the
  reaper can always find what a dead relay left.
* A session's hash lists every room it may be in: a join writes the room there
  before the room's step, a leave removes it after; so a removal that reads the
  list never misses a membership.
* Room steps are idempotent: the JOIN or LEAVE goes out only when SADD/SREM
  changed the set, so a step run twice says nothing twice.
* Removal runs from the rooms to the user's index to the session hash to the
  index to the relay's list: an interrupted removal is found again (the session
  is still listed under its relay) and finishes without repeating an event.
* A user's index of sessions (``user:{u}:sessions``) is written after the
  session's hash and cleared before it, so an id listed there without a hash
  is one whose removal stopped half way: reading the index drops it.
* Steps on a relay's keys are fenced by its incarnation: a relay a sweeper has
  begun to reap cannot refresh or add sessions (the tombstone), so it restores;
  its restore takes the relay's reaper lock, so it waits for a reap in progress,
  and a sweeper extends the lock before each session it removes (one that lost
  it stops); a reap's last step leaves alone a relay that came back.
* Webhook events (``webhook_steps.py``, when webhooks are on) are appended by the
  step that makes their change, under the same rule as its JOIN, LEAVE, CONNECT or
  DISCONNECT: only when it changed something, so a step run again appends nothing
  twice. A removal's cause (``closed``, ``kicked``, ``server-lost``, ...) is its
  ``session.disconnected`` reason; the LEAVEs keep theirs (``disconnected``, ...).
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from stomprelay.cluster.base import FENCE_MS, REAPER_LOCK_MS, STALL_MS
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import (
    DeadServer,
    EventTemplate,
    Ghost,
    Pending,
    ServerRecord,
    SessionRecord,
    room_event_template,
    session_envelope,
    user_session_json,
)
from stomprelay.cluster.webhook_steps import RESTORED, StepEvents, Subject, WebhookSteps
from stomprelay.errors import BackendUnavailable

#: A session's ``last-seen`` follows its chat messages to within this (ms): one
#: write per session and second, not one per message.
TOUCH_MS = 1_000

SERVERS = "servers"
SESSIONS = "sessions"


class Gone(enum.Enum):
    """The type of :data:`GONE` (a marker ``reap_begin`` returns, distinct from None)."""

    GONE = "gone"


#: What ``reap_begin`` says of a relay an earlier reap removed but for its index entry.
GONE = Gone.GONE


class Store(Protocol):
    """The steps of one backend; each is atomic and touches one slot."""

    keys: Keys

    # one relay
    async def server_put(
        self, server: ServerRecord, ttl_ms: int, sessions: Sequence[str]
    ) -> list[str]:
        """(Re)write a relay's info and heartbeat and list ``sessions`` under it;
        the sessions listed before (none are removed here)."""
        ...

    async def server_sessions(self, server_id: str) -> list[str]: ...

    async def heartbeat(self, server_id: str, incarnation: str, ttl_ms: int) -> bool: ...

    async def server_add_session(self, server_id: str, incarnation: str, session_id: str) -> bool:
        """List a session under its relay, if the relay runs this incarnation."""
        ...

    async def server_remove_session(self, server_id: str, session_id: str) -> None: ...

    async def lock(self, server_id: str, token: str, ttl_ms: int) -> bool:
        """Take a relay's reaper lock (or keep it, when ``token`` holds it already)."""
        ...

    async def keep_lock(self, server_id: str, token: str, ttl_ms: int) -> bool:
        """Extend a lock this token holds; False when it no longer holds it."""
        ...

    async def unlock(self, server_id: str, token: str) -> None: ...

    async def reap_begin(
        self, server_id: str, incarnation: str, token: str
    ) -> list[str] | Gone | None:
        """Under the lock, with the heartbeat gone and the incarnation unchanged:
        leave the tombstone and return the relay's sessions; :data:`GONE` when
        nothing of the relay is left; None otherwise."""
        ...

    async def server_drop(self, server_id: str, incarnation: str, token: str) -> bool:
        """Delete a relay's keys (unless another incarnation runs, or ``token``
        no longer holds the lock); True when deleted."""
        ...

    async def alive(self, server_ids: Sequence[str]) -> list[tuple[bool, str]]:
        """(heartbeat present, incarnation) of each relay."""
        ...

    # indexes
    async def index(self, name: str, member: str, present: bool) -> None: ...

    async def members(self, name: str) -> list[str]: ...

    async def pulse(self, ttl_ms: int, stall_ms: int) -> None: ...

    async def user_index(
        self, user: str, session_id: str, present: bool, events: StepEvents | None = None
    ) -> tuple[bool, int]:
        """List (``present``) or unlist a session in its user's index (the user's slot);
        (changed, sessions listed after it: -1 unless ``events`` are given)."""
        ...

    async def user_members(self, user: str) -> list[str]: ...

    async def may_reap(self, stall_ms: int, fence_ms: int) -> bool: ...

    # one session
    async def session_read(self, session_id: str) -> SessionRecord | None: ...

    async def session_put(
        self,
        record: SessionRecord,
        connect: Envelope | None,
        merge: bool,
        events: StepEvents | None = None,
    ) -> tuple[bool, list[str]]:
        """Write a session's hash (``merge``: keep the rooms listed before too) and
        publish ``connect`` (append ``events``) if it was not there; (existed, rooms
        listed before)."""
        ...

    async def session_join(self, session_id: str, room_id: str, username: str, now: int) -> bool:
        """List ``room_id`` last in the session's rooms; False if there is no session."""
        ...

    async def session_leave(self, session_id: str, rooms: Sequence[str], last_seen: int) -> None:
        """Remove ``rooms`` from the session's list."""
        ...

    async def session_drop(
        self,
        session_id: str,
        disconnect: Envelope,
        force: bool,
        events: StepEvents | None = None,
    ) -> bool:
        """Delete the session; publish ``disconnect`` (append ``events``) if it existed
        or ``force``."""
        ...

    async def session_touch(self, session_id: str, now: int) -> None: ...

    # one room
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
        """SADD (``join``) or SREM; when that changed the set and ``announce``, fill
        in ``event`` and append it to the room's log (publishing it), and append
        ``events``. (changed, count)."""
        ...

    async def webhook_add(self, events: Sequence[tuple[int, str]]) -> None:
        """Append ``(partition, event JSON)`` webhook events that no change goes with."""
        ...

    async def chat(self, room_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        """Append a room message to the room's log (publishing it); the room's activity."""
        ...


class StepRegistry:
    """The write side of :class:`~stomprelay.cluster.registry.Registry` over a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        lock_ttl_ms: int = REAPER_LOCK_MS,
        stall_ms: int = STALL_MS,
        fence_ms: int = FENCE_MS,
        webhooks: WebhookSteps | None = None,
    ) -> None:
        self.store = store
        #: The webhook events of the steps (None: webhooks off, nothing made).
        self.webhooks = webhooks
        self.keys = store.keys
        self.lock_ttl_ms = lock_ttl_ms
        self.stall_ms = stall_ms
        #: How long a fence found by a reap holds (one liveness TTL).
        self.fence_ms = fence_ms
        #: session id -> when its last-seen was last written (ms)
        self._touched: dict[str, int] = {}

    async def register_server(
        self, server: ServerRecord, ttl_ms: int, now: int, event_id: str
    ) -> None:
        """A fresh process holds no sessions yet: any listed under its id belong
        to an earlier process with the same id that died, and leave as lost."""
        store = self.store
        await store.index(SERVERS, server.server_id, True)
        before = await store.server_put(server, ttl_ms, ())
        for sid in sorted(before):
            await self._end(sid, server.server_id, "server-lost", now, event_id, server.server_id)

    async def refresh_server(self, server_id: str, incarnation: str, ttl_ms: int) -> bool:
        await self.store.pulse(ttl_ms, self.stall_ms)
        if not await self.store.heartbeat(server_id, incarnation, ttl_ms):
            return False
        # heals an index entry that a reap's last step removed as this relay came back
        await self.store.index(SERVERS, server_id, True)
        return True

    async def add_session(self, record: SessionRecord, event_id: str, incarnation: str) -> bool:
        store = self.store
        sid = record.session_id
        if not await store.server_add_session(record.server_id, incarnation, sid):
            return False
        stored = replace(record, rooms=list(record.rooms))
        stored.last_seen = stored.last_seen or stored.connected_at
        connect = session_envelope(
            "CONNECT",
            f"{event_id}-1",
            record.server_id,
            sid,
            record.server_id,
            record.username,
            record.connected_at,
        )
        await self._session_put(stored, connect, False, record.connected_at)
        await store.index(SESSIONS, sid, True)
        return True

    async def remove_session(
        self,
        session_id: str,
        server_id: str,
        rooms: list[str],
        reason: str,
        now: int,
        event_id: str,
        cause: str = "closed",
    ) -> None:
        await self._drop(
            session_id, server_id, rooms, reason, now, event_id, server_id, cause=cause
        )

    async def join(
        self,
        session_id: str,
        room_id: str,
        username: str,
        server_id: str,
        now: int,
        event_id: str,
        user: str = "",
    ) -> tuple[bool, int] | None:
        if not await self.store.session_join(session_id, room_id, username, now):
            return None
        return await self._room(session_id, room_id, username, server_id, now, event_id, user=user)

    async def leave(
        self, session_id: str, room_id: str, server_id: str, reason: str, now: int, event_id: str
    ) -> tuple[bool, int]:
        record = await self.store.session_read(session_id)
        username = record.username if record else ""
        user = record.user if record else ""
        result = await self._room(
            session_id, room_id, username, server_id, now, event_id, reason, user=user
        )
        if record is not None:
            await self.store.session_leave(session_id, [room_id], now)
        return result

    async def chat(
        self, session_id: str, room_id: str, channel: str, envelope: Envelope, now: int
    ) -> Envelope:
        out = await self.store.chat(room_id, channel, envelope, now)
        if now - self._touched.get(session_id, 0) >= TOUCH_MS:
            self._touched[session_id] = now
            await self.store.session_touch(session_id, now)
        return out

    async def user_sessions(self, user: str) -> list[dict[str, object]]:
        """The sessions in ``user``'s index that have a record of that user, oldest
        first; ids left by a removal that stopped half way are dropped from it."""
        store = self.store
        rows = []
        for sid in await store.user_members(user):
            record = await store.session_read(sid)
            if record is None:
                await store.user_index(user, sid, False)
            elif record.user == user:
                rows.append(record)
        rows.sort(key=lambda r: (r.connected_at, r.session_id))
        return [user_session_json(r) for r in rows]

    async def dead_servers(self) -> list[DeadServer]:
        ids = sorted(await self.store.members(SERVERS))
        if not ids:
            return []
        states = await self.store.alive(ids)
        return [
            DeadServer(server_id, incarnation)
            for server_id, (alive, incarnation) in zip(ids, states, strict=True)
            if not alive
        ]

    async def reap(self, dead: DeadServer, sweeper_id: str, now: int, event_id: str) -> int | None:
        store = self.store
        token = f"{sweeper_id}:{secrets.token_hex(8)}"
        if not await store.lock(dead.server_id, token, self.lock_ttl_ms):
            return None
        sessions = None
        if await store.may_reap(self.stall_ms, self.fence_ms):
            sessions = await store.reap_begin(dead.server_id, dead.incarnation, token)
        if sessions is None or sessions is GONE:
            if sessions is GONE:
                await store.index(SERVERS, dead.server_id, False)
            await store.unlock(dead.server_id, token)
            return None
        for sid in sorted(sessions):
            # the lock is what keeps the relay's own restore out (it waits for it):
            # a sweeper that lost it stops, whoever holds it now finishes
            if not await store.keep_lock(dead.server_id, token, self.lock_ttl_ms):
                return None
            await self._end(sid, dead.server_id, "server-lost", now, event_id, sweeper_id)
        if await store.server_drop(dead.server_id, dead.incarnation, token):
            await store.index(SERVERS, dead.server_id, False)
        return len(sessions)

    async def unregister_server(self, server_id: str, now: int, event_id: str) -> None:
        """Graceful stop: remove what is left of this relay (reason ``disconnected``;
        webhooks: ``shutdown``)."""
        store = self.store
        for sid in sorted(await store.server_sessions(server_id)):
            await self._end(sid, server_id, "shutdown", now, event_id, server_id)
        await store.server_drop(server_id, "", "")
        await store.index(SERVERS, server_id, False)

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
        """Re-register a relay and everything it holds; the ``pending`` ids published."""
        # one token per relay: a restore run again after a failure takes its own lock back
        token = f"restore:{server.server_id}"
        await self._wait_lock(server.server_id, token)
        try:
            return await self._restore(server, sessions, ttl_ms, announce, now, event_id, pending)
        finally:
            await self.store.unlock(server.server_id, token)

    async def _wait_lock(self, server_id: str, token: str) -> None:
        """Take this relay's reaper lock: a sweeper reaping it finishes first (a restore
        racing a reap would put back sessions the reap then removes)."""
        deadline = time.monotonic() + 2 * self.lock_ttl_ms / 1000
        while not await self.store.lock(server_id, token, self.lock_ttl_ms):
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"registry: {server_id} is being reaped")
            await asyncio.sleep(0.05)

    async def _restore(
        self,
        server: ServerRecord,
        sessions: list[SessionRecord],
        ttl_ms: int,
        announce: bool,
        now: int,
        event_id: str,
        pending: Pending | None,
    ) -> list[str]:
        store = self.store
        pending = pending or Pending()
        server_id = server.server_id
        held = [s.session_id for s in sessions]
        await store.index(SERVERS, server_id, True)
        before = await store.server_put(server, ttl_ms, held)
        published: list[str] = []
        for session in sessions:
            sid = session.session_id
            stored = replace(session, server_id=server_id, rooms=list(session.rooms))
            stored.last_seen = stored.last_seen or stored.connected_at
            new = sid in pending.new_sessions
            connect = session_envelope(
                "CONNECT",
                f"{event_id}/{sid}-1",
                server_id,
                sid,
                server_id,
                session.username,
                session.connected_at,
            )
            # a session that connected while Redis was out is new to the back-end; one
            # a reap removed is back (``restored``); any other one it knows already
            if new:
                _, previous = await self._session_put(stored, connect, True, session.connected_at)
            elif announce:
                _, previous = await self._session_put(stored, None, True, now, connect.id)
            else:
                _, previous = await self._session_put(stored, None, True, 0)
            gone = [r for r in previous if r not in stored.rooms]
            for room_id in gone:
                fixed = pending.leaves.get((sid, room_id))
                ident = fixed or f"{event_id}/{sid}/{room_id}"
                changed, _ = await self._room(
                    sid, room_id, session.username, server_id, now, ident, "left", user=session.user
                )
                if changed and fixed:
                    published.append(fixed)
            for room_id in stored.rooms:
                fixed = pending.joins.get((sid, room_id))
                ident = fixed or f"{event_id}/{sid}/{room_id}"
                loud = announce or fixed is not None
                changed, _ = await self._room(
                    sid,
                    room_id,
                    session.username,
                    server_id,
                    now,
                    ident,
                    None,
                    loud,
                    session.user,
                    restored=fixed is None,
                )
                if changed and fixed:
                    published.append(fixed)
            if gone:
                await store.session_leave(sid, gone, stored.last_seen)
            await store.index(SESSIONS, sid, True)
        for sid in sorted(set(before) - set(held)):
            leave_ids = {room: i for (s, room), i in pending.leaves.items() if s == sid}
            published += await self._drop(
                sid,
                server_id,
                [],
                "disconnected",
                now,
                f"{event_id}/{sid}",
                server_id,
                leave_ids,
                pending.causes.get(sid, "closed"),
            )
        if self.webhooks is not None and pending.ghosts:
            await self._ghosts([g for g in pending.ghosts if g.record.session_id not in before])
        return published

    async def _ghosts(self, ghosts: list[Ghost]) -> None:
        """Report sessions that connected and ended while Redis was unreachable (their
        journal): Redis never held them, so there is no step to run, only events."""
        hooks = self.webhooks
        if hooks is None or not ghosts:
            return
        events: list[tuple[int, str]] = []
        for ghost in ghosts:
            r = ghost.record
            came = Subject(
                ghost.event_id, r.connected_at, r.server_id, r.session_id, r.username, r.user
            )
            went = replace(came, ts=ghost.ended_at, reason=ghost.cause)
            for event in (hooks.session(True, came), hooks.session(False, went)):
                events.append((event.partition, event.change))
                hooks.counted(event.fired(True))
        await self.store.webhook_add(events)

    async def _session_put(
        self,
        stored: SessionRecord,
        connect: Envelope | None,
        merge: bool,
        ts: int,
        restored: str = "",
    ) -> tuple[bool, list[str]]:
        """Write a session's hash, then list it in its user's index. With ``ts``
        and webhooks on, a session new to Redis is reported (``session.connected``,
        ``user.online`` for the user's first session) at ``ts``: under the id of its
        ``connect``, or (``restored``: that id) with reason ``restored``."""
        store, hooks, sid = self.store, self.webhooks, stored.session_id
        if hooks is None or not ts or (connect is None and not restored):
            result = await store.session_put(stored, connect, merge)
            if stored.user:
                await store.user_index(stored.user, sid, True)
            return result
        ident = restored or (connect.id if connect is not None else "")
        reason = RESTORED if restored else ""
        about = Subject(ident, ts, stored.server_id, sid, stored.username, stored.user, reason)
        events = hooks.session(True, about)
        result = await store.session_put(stored, connect, merge, events)
        hooks.counted(events.fired(not result[0]))
        if stored.user:
            online = hooks.user(True, about)
            changed, count = await store.user_index(stored.user, sid, True, online)
            hooks.counted(online.fired(changed, count, True))
        return result

    async def _room(
        self,
        sid: str,
        room_id: str,
        username: str,
        server_id: str,
        now: int,
        event_id: str,
        leave_reason: str | None = None,
        announce: bool = True,
        user: str = "",
        restored: bool = False,
    ) -> tuple[bool, int]:
        """One room step: a JOIN (no ``leave_reason``) or a LEAVE, announced when it
        changed the room and ``announce`` (its webhook events too; ``restored``: a
        JOIN's reason is ``restored``); (changed, participants)."""
        join = leave_reason is None
        kind = "JOIN" if join else "LEAVE"
        event = room_event_template(
            kind, room_id, sid, username, server_id, now, event_id, leave_reason, user
        )
        hooks = self.webhooks
        if hooks is None or not announce:
            return await self.store.room_change(join, sid, room_id, now, event, announce)
        reason = leave_reason or (RESTORED if restored else "")
        events = hooks.room(join, event_id, now, server_id, sid, room_id, username, user, reason)
        changed, count = await self.store.room_change(
            join, sid, room_id, now, event, announce, events
        )
        hooks.counted(events.fired(changed, count, join))
        return changed, count

    async def _end(
        self, sid: str, server_id: str, cause: str, now: int, event_id: str, origin: str
    ) -> None:
        """Remove a session its relay no longer holds (``cause``: ``server-lost``, its
        relay died; ``shutdown``, it stopped), under ``<event_id>/<sid>``."""
        reason = "server-lost" if cause == "server-lost" else "disconnected"
        await self._drop(sid, server_id, [], reason, now, f"{event_id}/{sid}", origin, cause=cause)

    async def _drop(
        self,
        sid: str,
        server_id: str,
        extra_rooms: list[str],
        reason: str,
        now: int,
        event_id: str,
        origin: str,
        leave_ids: dict[str, str] | None = None,
        cause: str = "closed",
    ) -> list[str]:
        """Remove a session: one LEAVE per room it was in, its hash (DISCONNECT),
        its listing under its relay, its index entry; the ``leave_ids`` published.
        ``cause``: why it ended, the reason of its ``session.disconnected``."""
        store = self.store
        record = await store.session_read(sid)
        owner = record.server_id if record is not None and record.server_id else server_id
        username = record.username if record is not None else ""
        user = record.user if record is not None else ""
        rooms = list(record.rooms) if record is not None else []
        rooms += [r for r in extra_rooms if r not in rooms]
        ids = leave_ids or {}
        published: list[str] = []
        left = False
        for room_id in rooms:
            fixed = ids.get(room_id)
            ident = fixed or f"{event_id}/{room_id}"
            removed, _ = await self._room(
                sid, room_id, username, owner, now, ident, reason, user=user
            )
            left = left or removed
            if removed and fixed:
                published.append(fixed)
        disconnect = session_envelope(
            "DISCONNECT", f"{event_id}-{len(rooms) + 1}", origin, sid, owner, username, now, reason
        )
        # With the hash still there its deletion decides; without it (a removal
        # run again, or rooms given by the caller only) a LEAVE here does.
        force = left and record is None
        hooks = self.webhooks
        if hooks is None:
            if user:
                await store.user_index(user, sid, False)
            await store.session_drop(sid, disconnect, force)
        else:
            about = Subject(disconnect.id, now, owner, sid, username, user, cause)
            if user:
                offline = hooks.user(False, about)
                changed, count = await store.user_index(user, sid, False, offline)
                hooks.counted(offline.fired(changed, count, False))
            events = hooks.session(False, about)
            existed = await store.session_drop(sid, disconnect, force, events)
            hooks.counted(events.fired(existed or force))
        await store.index(SESSIONS, sid, False)
        # last: while listed under its relay, an interrupted removal is found again
        if owner != server_id:
            await store.server_remove_session(owner, sid)
        await store.server_remove_session(server_id, sid)
        self._touched.pop(sid, None)
        return published
