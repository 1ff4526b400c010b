"""This relay's place in the registry: registration, heartbeat, re-registration.

It holds the truth the relay re-registers after an outage or a reap (the
records of its connected sessions and the rooms they joined), puts a session in
and takes it out, and remembers what Redis did not take (the degraded mode's
pending set). It is handed what it needs: the registry, the log, the router (for
message ids and local delivery), the degraded mode (:class:`~stomprelay.sync.Outage`)
and a callback for rooms
whose history was lost; it reaches into no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from stomprelay import __version__
from stomprelay.clock import now_ms
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import Log
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import (
    Ghost,
    Pending,
    Registry,
    ServerRecord,
    SessionRecord,
    room_event_template,
)
from stomprelay.errors import BackendUnavailable
from stomprelay.router import Router
from stomprelay.settings import Settings
from stomprelay.sync import Outage

log = logging.getLogger(__name__)


class Gate:
    """Registry operations run side by side; a restore runs alone.

    A restore sends Redis a snapshot of everything this relay holds; a connect,
    disconnect, join or leave whose registry call interleaved with it could be
    undone by the stale snapshot, so those wait while a restore runs, and a
    restore waits for those in flight.
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._ops = 0
        self._exclusive = False
        #: session id -> [lock, holders and waiters]
        self._sessions: dict[str, list[Any]] = {}

    @contextlib.asynccontextmanager
    async def shared(self, session_id: str | None = None) -> AsyncIterator[None]:
        """Side by side with other operations, but one at a time per session: a
        registry operation is several steps (``operations.py``), and a join whose
        steps interleave with the same session's removal (a client that joins and
        closes at once) would leave a participant without a session."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._ops += 1
        entry = None
        try:
            if session_id is None:
                yield
            else:
                entry = self._sessions.setdefault(session_id, [asyncio.Lock(), 0])
                entry[1] += 1
                async with entry[0]:
                    yield
        finally:
            if entry is not None:
                entry[1] -= 1
                if not entry[1]:
                    self._sessions.pop(session_id or "", None)
            async with self._cond:
                self._ops -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            await self._cond.wait_for(lambda: self._ops == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Registration:
    """This relay's registration in the cluster and the truth it re-registers.

    It registers the relay and refreshes its heartbeat, puts sessions in and takes
    them out of the registry, and after an outage or a reap restores what this relay
    holds; what Redis did not take waits in the outage's pending set meanwhile.
    ``host`` and ``port`` are what other relays and operators see of it.
    """

    def __init__(
        self,
        settings: Settings,
        server_id: str,
        keys: Keys,
        registry: Registry,
        log_: Log | None,
        router: Router,
        outage: Outage,
        on_history_lost: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.server_id = server_id
        self.keys = keys
        self.registry = registry
        self.log = log_
        self.router = router
        self.outage = outage
        self.on_history_lost = on_history_lost
        #: Registry records of this relay's connected sessions (the truth to restore).
        self.records: dict[str, SessionRecord] = {}
        self.started_at = time.time()
        self.host = "127.0.0.1"
        self.port = 0
        self.incarnation = secrets.token_hex(8)
        self._previous_incarnation = ""
        self.gate = Gate()
        self._registered = False
        #: Sessions that came and went during outages past the journal's bound.
        self.ghosts_dropped = 0

    def clock_ms(self) -> int:
        return now_ms()

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.liveness_ttl * 1000)

    def local_count(self, room_id: str) -> int:
        return sum(1 for r in self.records.values() if room_id in r.rooms)

    def server_record(self) -> ServerRecord:
        return ServerRecord(
            self.server_id,
            self.host,
            self.port,
            __version__,
            int(self.started_at * 1000),
            self.incarnation,
        )

    async def register(self) -> None:
        policy = await self.registry.eviction_policy()
        if policy is None:
            log.warning(
                "could not read Redis's maxmemory-policy (CONFIG refused): make sure it "
                "is noeviction, or Redis may evict room history"
            )
        elif policy != "noeviction":
            log.error(
                "Redis maxmemory-policy is %r: under memory pressure Redis will evict room "
                "history and registry keys; set it to noeviction",
                policy,
            )
        if not self._registered:
            await self.registry.migrate()
        await self.registry.register_server(
            self.server_record(), self.ttl_ms, self.clock_ms(), self.router.next_message_id()
        )
        self._registered = True

    async def resync(self) -> None:
        """Once per outage, when Redis answers again: fresh connections, then this
        relay's registration and everything it holds put back (the outage calls it)."""
        await self.registry.reset()
        if not self._registered:
            await self.register()
        registered = await self.registry.refresh_server(
            self.server_id, self.incarnation, self.ttl_ms
        )
        if not registered:
            await self.reregister()
        else:
            await self.restore(announce=False)

    async def refresh(self) -> None:
        """Heartbeat; re-register everything this relay holds if it was dropped."""
        registered = await self.outage.guard(
            lambda: self.registry.refresh_server(self.server_id, self.incarnation, self.ttl_ms)
        )
        if not registered:
            await self.outage.guard(self.reregister)
        elif self.outage.pending:
            # changes made while a recovery was finishing: Redis has not seen them
            await self.outage.guard(lambda: self.restore(announce=False))

    async def reregister(self) -> None:
        """The registry no longer knows this relay: put back everything it holds.

        A sweeper that reaps a relay leaves a tombstone naming its incarnation:
        then everyone saw its participants LEAVE, and the restore announces them
        again. Without one, Redis lost its data (FLUSHALL, a restart without
        persistence): nobody saw a LEAVE, the restore is silent (but for changes
        made meanwhile, which the pending set announces), and this relay's local
        subscribers get a SYNC of each room once the others had time to restore.
        """
        reaped = await self.registry.was_reaped(self.server_id, self.incarnation)
        if not reaped and self._previous_incarnation:
            reaped = await self.registry.was_reaped(self.server_id, self._previous_incarnation)
        await self.restore(announce=reaped)
        if not reaped:
            for destination in list(self.router.feeds):
                self.on_history_lost(destination)

    async def restore(self, announce: bool) -> None:
        """Re-register this relay and every session it holds, alone (see :class:`Gate`)."""
        async with self.gate.exclusive():
            # The new incarnation counts from before the call: a restore that timed
            # out may still have run (then Redis holds this one); the previous one is
            # kept for the tombstone check.
            self._previous_incarnation = self.incarnation
            self.incarnation = incarnation = secrets.token_hex(8)
            server = replace(self.server_record(), incarnation=incarnation)
            pending, events = self.outage.pending, self.outage.pending_events
            published = await self.registry.restore(
                server,
                [replace(r, rooms=list(r.rooms)) for r in self.records.values()],
                self.ttl_ms,
                announce,
                self.clock_ms(),
                self.router.next_message_id(),
                pending,
            )
            self.outage.pending, self.outage.pending_events = Pending(), {}
            # A LEAVE of a membership older than the outage that the restore did
            # not publish (Redis had lost the membership): the others saw the
            # JOIN, so they get the LEAVE too, through the room's log.
            for key, event_id in pending.leaves.items():
                if event_id not in published and key not in pending.joins and event_id in events:
                    channel, envelope = events[event_id]
                    if self.log is not None:
                        await self.log.append(f"room:{key[1]}", channel, envelope, self.clock_ms())
                    else:
                        await self.router.publish(channel, envelope)
            log.warning(
                "re-registered %d sessions in the registry (announce=%s)",
                len(self.records),
                announce,
            )

    def unsynced(
        self,
        exc: BackendUnavailable,
        kind: str,
        record: SessionRecord,
        room_id: str,
        event_id: str,
        reason: str = "left",
    ) -> None:
        """A JOIN or LEAVE the registry did not take: remember it for the restore.

        Local subscribers are told now, under the id the registry call used (so
        if it did run, its event and this one are the same message), and the
        restore appends it under that id; the router will not deliver it twice.
        """
        self.outage.fail(exc)
        key = (record.session_id, room_id)
        (self.outage.pending.joins if kind == "JOIN" else self.outage.pending.leaves)[key] = (
            event_id
        )
        count = self.local_count(room_id)
        join = kind == "JOIN"
        channel = (self.keys.join_channel if join else self.keys.leave_channel)(room_id)
        template = room_event_template(
            kind,
            room_id,
            record.session_id,
            record.username,
            self.server_id,
            now_ms(),
            event_id,
            None if join else reason,
            record.user,
        )
        envelope = Envelope.from_json(template.fill(count))
        self.outage.pending_events[event_id] = (channel, envelope)
        self.router.deliver_early(channel, envelope)

    # -- sessions -----------------------------------------------------------

    async def connect(
        self, session_id: str, username: str, remote: str, version: str, user: str = ""
    ) -> None:
        """Register a session that completed CONNECT (or remember it for the restore);
        ``user``: who it is (what user destinations address), "" for no one."""
        log.info("session %s connected from %s with STOMP %s", session_id, remote, version)
        now = now_ms()
        record = SessionRecord(
            session_id=session_id,
            server_id=self.server_id,
            username=username,
            remote_address=remote,
            version=version,
            connected_at=now,
            last_seen=now,
            user=user,
        )
        async with self.gate.shared(record.session_id):
            self.records[record.session_id] = record
            try:
                added = await self.outage.guard(
                    lambda: self.registry.add_session(
                        record, self.router.next_message_id(), self.incarnation
                    )
                )
            except BackendUnavailable:
                self.outage.pending.new_sessions.add(record.session_id)
                return
            if not added:
                self.outage.pending.new_sessions.add(record.session_id)
        if not added:
            # This relay was reaped: put it back, this session with it.
            with contextlib.suppress(BackendUnavailable):
                await self.outage.guard(self.reregister)

    async def disconnect(self, session_id: str, cause: str = "closed") -> None:
        """A session ended: it leaves its rooms (one LEAVE each) and the registry;
        ``cause``: why it ended (its webhook ``session.disconnected`` reason)."""
        async with self.gate.shared(session_id):
            record = self.records.pop(session_id, None)
            if record is None:
                return
            pending = self.outage.pending
            # never registered: if Redis does not take its removal either, it came and
            # went within an outage
            unknown = record.session_id in pending.new_sessions
            pending.new_sessions.discard(record.session_id)
            event_id = self.router.next_message_id()
            try:
                await self.outage.guard(
                    lambda: self.registry.remove_session(
                        record.session_id,
                        self.server_id,
                        list(record.rooms),
                        "disconnected",
                        self.clock_ms(),
                        event_id,
                        cause,
                    )
                )
            except BackendUnavailable as exc:
                pending.causes[record.session_id] = cause
                if unknown:
                    self._ghost(pending, Ghost(record, event_id, self.clock_ms(), cause))
                for room_id in record.rooms:
                    self.unsynced(
                        exc, "LEAVE", record, room_id, f"{event_id}/{room_id}", "disconnected"
                    )

    def _ghost(self, pending: Pending, ghost: Ghost) -> None:
        """Journal a session that came and went while Redis was out, for the webhooks;
        at most ``--journal-size`` of them (the journal's own bound) per outage."""
        if len(pending.ghosts) < self.settings.journal_messages:
            pending.ghosts.append(ghost)
            return
        self.ghosts_dropped += 1
        if self.ghosts_dropped == 1 or self.ghosts_dropped % 1000 == 0:
            log.warning(
                "session %s: more than --journal-size %d sessions came and went during an "
                "outage; their webhook events are not kept (%d so far)",
                ghost.record.session_id,
                self.settings.journal_messages,
                self.ghosts_dropped,
            )

    async def unregister(self) -> None:
        """Graceful stop: remove what is left of this relay."""
        try:
            await self.outage.guard(
                lambda: self.registry.unregister_server(
                    self.server_id, self.clock_ms(), self.router.next_message_id()
                )
            )
        except BackendUnavailable as exc:
            log.warning("could not remove this relay's keys: %s", exc)
