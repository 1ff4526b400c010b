"""The relay application: turns session events into routing and cluster work.

The transport (``server.py``) feeds bytes to a :class:`ServerSession` and hands
the resulting events to :meth:`Relay.handle`, in order, one connection at a
time; this module decides what each event means for the router, the rooms and
the registry, and keeps this relay registered (and re-registered after an
outage or a reap) in the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from stomprelay import __version__
from stomprelay.cluster.base import Bus
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryBus, MemoryHub, MemoryRegistry
from stomprelay.cluster.reaper import Liveness
from stomprelay.cluster.registry import (
    EVENT_CONTENT_TYPE,
    Pending,
    Registry,
    ServerRecord,
    SessionRecord,
    join_event,
    leave_event,
)
from stomprelay.errors import BackendTimeout, BackendUnavailable, PeerError, PolicyError
from stomprelay.metrics import Metrics
from stomprelay.rooms import Rooms, now_ms
from stomprelay.router import Route, Router, Sink, channels_for, parse_destination
from stomprelay.settings import Settings
from stomprelay.stomp.session import (
    Connected,
    DisconnectRequested,
    Event,
    MessageSent,
    ReceiptDue,
    ServerSession,
    Subscribed,
    Unsubscribed,
)

log = logging.getLogger(__name__)

SERVER_NAME = f"stomprelay/{__version__}"


def default_server_id() -> str:
    """Hostname plus a short random suffix, so restarted relays never collide."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:40] or 'relay'}-{secrets.token_hex(3)}"


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

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._ops += 1
        try:
            yield
        finally:
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


class Relay:
    def __init__(
        self,
        settings: Settings | None = None,
        server_id: str | None = None,
        bus: Bus | None = None,
        registry: Registry | None = None,
        keys: Keys | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.server_id = server_id or default_server_id()
        self.keys = keys or Keys()
        if bus is None or registry is None:
            hub = MemoryHub()
            bus = bus or MemoryBus(hub)
            registry = registry or MemoryRegistry(hub, self.keys)
        self.bus: Bus = bus
        self.registry: Registry = registry
        self.router = Router(self.bus, self.keys, self.server_id)
        self.rooms = Rooms(self)
        self.liveness = Liveness(self)
        self.metrics = Metrics()
        self.router.on_delivered = self.metrics.delivered.inc
        self.sinks: dict[str, Sink] = {}
        #: Registry records of this relay's connected sessions (the truth to restore).
        self.records: dict[str, SessionRecord] = {}
        self.started_at = time.time()
        self.host = "127.0.0.1"
        self.port = 0
        self.incarnation = secrets.token_hex(8)
        #: Set while the registry is unreachable; cleared by a successful restore.
        self.backend_error: str | None = None
        #: Identity of the Redis instance we registered in (its run_id).
        self._backend_id = ""
        self._started = False
        #: Changes Redis has not seen (made while it was unreachable), for restore.
        self.pending = Pending()
        #: The event each pending id stands for: (channel, envelope).
        self._pending_events: dict[str, tuple[str, Envelope]] = {}
        self.gate = Gate()
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------

    def clock_ms(self) -> int:
        return now_ms()

    @property
    def ready(self) -> bool:
        return self.bus.available and self.backend_error is None

    def server_record(self) -> ServerRecord:
        return ServerRecord(
            self.server_id,
            self.host,
            self.port,
            __version__,
            int(self.started_at * 1000),
            self.incarnation,
        )

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.liveness_ttl * 1000)

    async def start(self) -> None:
        self.bus.on_state_change = self._bus_state
        await self.bus.start(self.router.dispatch)
        await self.router.retain_always(self.keys.server_channel(self.server_id))
        try:
            self._backend_id = await self.registry.backend_id()
            await self.registry.register_server(
                self.server_record(), self.ttl_ms, self.clock_ms(), self.router.next_message_id()
            )
        except BackendUnavailable as exc:
            self.note_backend_error(exc)
        self._started = True
        self.liveness.start()

    async def close(self) -> None:
        """After every client is gone: stop liveness, drop this relay's keys."""
        await self.liveness.stop()
        for task in list(self._background):
            task.cancel()
        try:
            await self.registry.unregister_server(
                self.server_id, self.clock_ms(), self.router.next_message_id()
            )
        except BackendUnavailable as exc:
            log.warning("could not remove this relay's keys: %s", exc)
        await self.bus.close()
        await self.registry.close()

    def note_backend_error(self, exc: BackendUnavailable) -> None:
        if self.backend_error is None:
            log.warning("registry unreachable, serving local clients only: %s", exc)
        self.backend_error = str(exc)

    def _bus_state(self, available: bool) -> None:
        if not available:
            if self.backend_error is None:
                self.backend_error = "redis pub/sub connection lost"
            return
        if not self._started:
            return  # start() registers this relay itself
        task = asyncio.get_running_loop().create_task(self._recover())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recover(self) -> None:
        try:
            await self.refresh()
        except BackendUnavailable as exc:
            self.note_backend_error(exc)

    async def refresh(self) -> None:
        """Heartbeat; re-register everything this relay holds if it was dropped,
        and bring the registry up to date after any failed registry call."""
        registered = await self.registry.refresh_server(
            self.server_id, self.incarnation, self.ttl_ms
        )
        if not registered:
            await self.reregister()
        elif self.backend_error is not None or self.pending:
            await self.restore(announce=False)

    async def reregister(self) -> None:
        """The registry no longer knows this relay: put back everything it holds.

        Dropped while Redis kept running (same ``run_id``) means a sweeper
        reaped this relay while it was paused: everyone saw its participants
        LEAVE, so the restore announces them again. Dropped because Redis
        restarted empty means nobody saw a LEAVE: the restore is silent (but for
        changes made meanwhile, which :attr:`pending` announces).
        """
        backend_id = await self.registry.backend_id()
        await self.restore(announce=backend_id == self._backend_id)
        self._backend_id = backend_id

    async def restore(self, announce: bool) -> None:
        """Re-register this relay and every session it holds, alone (see :class:`Gate`)."""
        async with self.gate.exclusive():
            incarnation = secrets.token_hex(8)
            server = replace(self.server_record(), incarnation=incarnation)
            pending, events = self.pending, self._pending_events
            published = await self.registry.restore(
                server,
                [replace(r, rooms=list(r.rooms)) for r in self.records.values()],
                self.ttl_ms,
                announce,
                self.clock_ms(),
                self.router.next_message_id(),
                pending,
            )
            self.incarnation = incarnation
            self.pending, self._pending_events = Pending(), {}
            self.backend_error = None
            # A LEAVE of a membership older than the outage that the restore did
            # not publish (Redis had lost the membership): the others saw the
            # JOIN, so they get the LEAVE too.
            for key, event_id in pending.leaves.items():
                if event_id not in published and key not in pending.joins and event_id in events:
                    channel, envelope = events[event_id]
                    await self.bus.publish(channel, envelope)
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
        reason: str = "left",
    ) -> None:
        """A JOIN or LEAVE the registry did not take: remember it for the restore.

        If Redis refused it (unreachable), local subscribers are told now, under
        an id the restore will publish it with, and the router will not deliver
        that one twice. If Redis did not answer in time the change may still
        have happened: nothing is delivered now, the restore sorts it out.
        """
        self.note_backend_error(exc)
        event_id = self.router.next_message_id()
        key = (record.session_id, room_id)
        (self.pending.joins if kind == "JOIN" else self.pending.leaves)[key] = event_id
        count = self.rooms.local_count(room_id)
        if kind == "JOIN":
            channel = self.keys.join_channel(room_id)
            body = join_event(
                room_id, record.session_id, record.username, self.server_id, now_ms(), count
            )
        else:
            channel = self.keys.leave_channel(room_id)
            body = leave_event(
                room_id,
                record.session_id,
                record.username,
                self.server_id,
                now_ms(),
                count,
                reason,
            )
        envelope = Envelope(
            id=event_id,
            origin=self.server_id,
            destination=f"/topic/room/{room_id}",
            headers=(("content-type", EVENT_CONTENT_TYPE),),
            body=body,
            ts=now_ms(),
        )
        self._pending_events[event_id] = (channel, envelope)
        if not isinstance(exc, BackendTimeout):
            self.router.deliver_once(channel, envelope)

    # -- connections --------------------------------------------------------

    def new_session(self) -> ServerSession:
        return ServerSession(
            secrets.token_hex(8),
            self.server_id,
            time.monotonic(),
            self.settings,
            SERVER_NAME,
        )

    def attach(self, sink: Sink) -> None:
        self.sinks[sink.session.session_id] = sink
        self.metrics.connections.inc()

    async def detach(self, sink: Sink) -> None:
        """Forget a closed connection: subscriptions, rooms (LEAVE), registry entry."""
        session = sink.session
        if self.sinks.pop(session.session_id, None) is None:
            return
        self.metrics.connections.dec()
        await self.router.drop(session.session_id)
        session.subscriptions.clear()
        async with self.gate.shared():
            record = self.records.pop(session.session_id, None)
            if record is None:
                return
            self.pending.new_sessions.discard(record.session_id)
            try:
                await self.registry.remove_session(
                    record.session_id,
                    self.server_id,
                    list(record.rooms),
                    "disconnected",
                    self.clock_ms(),
                    self.router.next_message_id(),
                )
            except BackendUnavailable as exc:
                for room_id in record.rooms:
                    self.unsynced(exc, "LEAVE", record, room_id, "disconnected")
                if not record.rooms:
                    self.note_backend_error(exc)

    async def handle(self, sink: Sink, events: list[Event]) -> None:
        """Act on a connection's events in order; refusals become ERROR frames."""
        session = sink.session
        for event in events:
            # Frames that arrived before an error are still handled (a SEND is
            # published); only new subscriptions of a closed session are skipped.
            if session.closed and isinstance(event, Subscribed | ReceiptDue):
                continue
            try:
                await self._handle(sink, event)
            except PeerError as exc:
                self.metrics.errors.labels(exc.message).inc()
                session.fail(exc, _receipt_of(event))
        sink.flush()

    async def _handle(self, sink: Sink, event: Event) -> None:
        session = sink.session
        if isinstance(event, MessageSent):
            await self._on_send(sink, event)
        elif isinstance(event, Subscribed):
            subscription = event.subscription
            route = parse_destination(subscription.destination)
            if route.kind == "app":
                if route.action != "participants":
                    raise PolicyError(
                        "Unknown destination",
                        f"{subscription.destination} cannot be subscribed to.",
                    )
                await self.rooms.reply_participants(sink, subscription.id, route.name)
            else:
                await self.router.subscribe(sink, subscription, route)
        elif isinstance(event, Unsubscribed):
            await self.router.unsubscribe(sink, event.subscription)
        elif isinstance(event, ReceiptDue):
            session.send_receipt(event.receipt_id, time.monotonic())
        elif isinstance(event, DisconnectRequested):
            session.close("client disconnected")
        elif isinstance(event, Connected):
            await self._on_connect(sink, event)

    async def _on_connect(self, sink: Sink, event: Connected) -> None:
        session = sink.session
        now = self.clock_ms()
        record = SessionRecord(
            session_id=session.session_id,
            server_id=self.server_id,
            username=event.login or "",
            remote_address=sink.remote,
            version=event.version,
            connected_at=now,
            last_seen=now,
        )
        log.info(
            "session %s connected from %s with STOMP %s",
            session.session_id,
            sink.remote,
            event.version,
        )
        async with self.gate.shared():
            self.records[session.session_id] = record
            try:
                added = await self.registry.add_session(
                    record, self.router.next_message_id(), self.incarnation
                )
            except BackendUnavailable as exc:
                self.note_backend_error(exc)
                self.pending.new_sessions.add(record.session_id)
                return
            if not added:
                self.pending.new_sessions.add(record.session_id)
        if not added:
            # This relay was reaped: put it back, this session with it.
            try:
                await self.reregister()
            except BackendUnavailable as exc:
                self.note_backend_error(exc)

    async def _on_send(self, sink: Sink, event: MessageSent) -> None:
        frame = event.frame
        route = parse_destination(event.destination)
        if route.kind == "system":
            raise PolicyError(
                "Read-only destination",
                "/topic/system is written by operators through the HTTP API only.",
            )
        if route.kind == "app":
            if route.action == "join":
                await self.rooms.join(sink, route.name, frame.body)
            elif route.action == "message":
                await self.rooms.message(sink, route.name, frame.body)
            elif route.action == "leave":
                await self.rooms.leave(sink, route.name)
            else:
                raise PolicyError(
                    "Unknown destination",
                    f"{event.destination} is subscribed to, not sent to.",
                )
            return
        await self.publish(route, event.destination, frame.headers, frame.body)

    async def publish(
        self, route: Route, destination: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> None:
        envelope = self.router.envelope(destination, headers, body)
        await self.router.publish(channels_for(route, self.keys)[0], envelope)
        self.metrics.published.inc()


def _receipt_of(event: Event) -> str | None:
    if isinstance(event, MessageSent):
        return event.receipt
    if isinstance(event, Subscribed | Unsubscribed):
        for name, value in event.subscription.headers:
            if name == "receipt":
                return value
    return None
