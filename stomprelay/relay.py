"""The relay application: wires its parts and dispatches session events to them.

The transport (:mod:`stomprelay.transport`) feeds bytes to a :class:`ServerSession`
and hands the resulting events to :meth:`Relay.handle`, in order, one connection
at a time; the relay decides which part each event is for: access
(:mod:`stomprelay.access`), the SEND pipeline (:mod:`stomprelay.publish`), the
rooms, the router and this relay's registration. The parts are handed what they
use, never the relay; the backends are handed in (:mod:`stomprelay.factory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

from stomprelay import __version__
from stomprelay.access import Access
from stomprelay.admin import Admin
from stomprelay.api import ServerApi
from stomprelay.auth import REFRESH_DESTINATION
from stomprelay.bounded import bounded
from stomprelay.clock import now_ms
from stomprelay.cluster.backends import Backends
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.cluster.queue_store import MemoryQueues
from stomprelay.cluster.reaper import Liveness
from stomprelay.cluster.webhook_steps import disconnect_reason
from stomprelay.dashboard import Dashboard, Reading, Sampler, store_for
from stomprelay.destinations import QUEUE_PREFIX
from stomprelay.errors import BackendUnavailable, PeerError, PolicyError
from stomprelay.metrics import Metrics, counter_total
from stomprelay.publish import Sender, sent_to
from stomprelay.queues import Queues
from stomprelay.registration import Registration
from stomprelay.replies import Replies
from stomprelay.rooms import Rooms
from stomprelay.router import Route, Router, Sink, parse_destination
from stomprelay.settings import Settings
from stomprelay.stomp.session import (
    Acknowledged,
    Connected,
    DisconnectRequested,
    Event,
    MessageSent,
    ReceiptDue,
    ServerSession,
    Subscribed,
    Unsubscribed,
)
from stomprelay.subscriptions import Subscriptions, receipt_of
from stomprelay.sync import Journal, NoLog, Outage
from stomprelay.userctl import UserControl, registry_sessions
from stomprelay.users import UserChannels
from stomprelay.usersubs import ServerSubs

if TYPE_CHECKING:
    from stomprelay.auth import Acl
    from stomprelay.hook import AuthHook, Verdict
    from stomprelay.passwords import UserFile
    from stomprelay.tokens import Authenticator
    from stomprelay.webhooks import Delivery

log = logging.getLogger(__name__)

SERVER_NAME = f"stomprelay/{__version__}"
#: Seconds that unregistering, and closing the bus, the registry or the authenticator, may
#: each take at a stop; the Redis ones bound themselves to less (cluster.connect).
CLOSE_STEP_TIMEOUT = 5.0


class Relay:
    """One relay: wires access, the sender, rooms, router, registration, degraded mode
    and liveness around the backends it is handed, and dispatches each session event
    to the part it is for. It is what the transport calls (``new_session``,
    ``attach``, ``handle``, ``detach``, ``start``, ``close``); it builds no backend
    (:func:`stomprelay.factory.build_relay` does)."""

    def __init__(
        self,
        settings: Settings,
        server_id: str,
        backends: Backends,
        *,
        auth: Authenticator | None = None,
        acl: Acl | None = None,
        dev_tokens: bool = False,
        hook: AuthHook | None = None,
        users: UserFile | None = None,
        webhook_delivery: Delivery | None = None,
    ) -> None:
        self.settings = settings
        self.server_id = server_id
        if backends.queues is None:
            backends = dataclasses.replace(backends, queues=MemoryQueues())
        assert backends.queues is not None
        queue_store = backends.queues
        bus, registry, log, keys = backends.bus, backends.registry, backends.log, backends.keys
        self.keys = keys
        self.policy = HistoryPolicy.of(settings)
        self.bus = bus
        self.registry = registry
        self.log = log
        self.metrics = metrics = Metrics()
        if backends.webhooks is not None:
            queued = metrics.webhook_events_queued
            backends.webhooks.observe = lambda kind: queued.labels(kind).inc()
        if hook is not None:
            hook.observe = lambda outcome: metrics.auth_hook.labels(outcome).inc()
        #: Webhook delivery (docs/webhooks.md), None without --webhook-url.
        self.webhook_delivery = webhook_delivery
        if webhook_delivery is not None:
            webhook_delivery.metrics = metrics
        #: Degraded mode: what the relay does while Redis counts as down.
        self.outage = outage = Outage(
            log if log is not None else NoLog(),
            probe=registry.ping,
            recover=lambda: self.registration.resync(),
            clock=time.monotonic,
            journal=Journal(settings.journal_messages, settings.journal_bytes),
            probe_interval=settings.probe_interval,
            on_state=self._outage_state,
            wall_ms=now_ms,
        )
        self.router = router = Router(bus, keys, server_id, log, self.policy, lambda: outage.down)
        self._background: set[asyncio.Task[None]] = set()
        self.registration = Registration(
            settings, server_id, keys, registry, log, router, outage, lambda d: self.rooms.lost(d)
        )
        #: session id -> its connection
        self.sinks: dict[str, Sink] = {}
        self.access = Access(
            settings,
            auth=auth,
            acl=acl,
            dev_tokens=dev_tokens,
            moderation=registry,
            control_channel=keys.control_channel,
            sinks=self.sinks,
            records=self.registration.records,
            guard=outage.guard,
            on_kicked=metrics.kicked.inc,
            hook=hook,
            users=users,
        )
        #: /queue/ destinations: competing consumers (docs/queues.md).
        self.queues = Queues(
            queue_store,
            settings,
            f"{server_id}/{secrets.token_hex(4)}",
            metrics,
            self.background,
        )
        self.sender = Sender(
            settings,
            keys,
            router,
            log,
            outage,
            bus.publish_many,
            metrics,
            self.access.sender,
            self.access.user_of,
            queue_submit=self.queues.submit,
        )
        #: The per-user channels (a user's channel while this relay holds its sessions).
        self.users = UserChannels(
            keys, router.listen, router.unlisten, on_envelope=metrics.user_envelopes.inc
        )
        self.rooms = Rooms(
            settings,
            server_id,
            keys,
            self.registration,
            outage,
            router,
            metrics,
            spawn=self.background,
            record=self.sender.record,
            identities=self.access.identities,
            on_left=self.access.left,
        )
        self.liveness = Liveness(
            server_id=server_id,
            registry=registry,
            interval=settings.liveness_interval,
            sweep_interval=settings.sweep_interval,
            refresh=self.registration.refresh,
            on_error=outage.fail,
            guard=outage.guard,
            may_judge=lambda: outage.may_judge(settings.liveness_ttl),
            clock_ms=now_ms,
            next_message_id=router.next_message_id,
            on_reaped=self.queues.reaped,
        )
        router.on_delivered = metrics.delivered.inc
        router.on_repaired = metrics.repaired
        router.on_lost = self.rooms.lost
        router.on_read_failed = outage.fail
        self.subscriptions = Subscriptions(
            router, self.rooms, metrics, settings.max_history_request, self.access.user_of
        )
        #: Server-side subscriptions of this relay's sessions, and the server API's
        #: acts on a user's sessions on every relay.
        self.server_subs = server_subs = ServerSubs(
            self.sinks,
            self.access.identities,
            router,
            registry,
            router.next_message_id,
            outage.guard,
        )

        async def end_user(user: str, reason: str) -> list[str]:
            return self.access.end_user(user, reason)

        self.user_control = UserControl(
            server_id,
            keys,
            bus.publish,
            registry,
            registry_sessions(registry),
            {
                "subscribe": server_subs.apply,
                "unsubscribe": server_subs.remove,
                "disconnect": end_user,
            },
            self.background,
            timeout=settings.api_confirm_timeout,
            most=settings.max_server_subscriptions,
        )
        #: Temporary queues of this relay's sessions, and the replies sent to them.
        self.replies = Replies(
            server_id,
            keys.server_channel(server_id),
            self.sinks,
            settings.max_temp_queues,
            on_reply=lambda outcome: metrics.replies.labels(outcome).inc(),
            on_queues=metrics.temp_queues.set,
        )
        #: The operators' reads and actions, for the HTTP admin routes; a room
        #: notification goes through this relay's send flow, a kick through its access.
        self.admin = Admin(backends, self.policy, self, users=self.user_control)
        #: The server API's operations: appends fail fast (a 503) while Redis is down.
        self.api = ServerApi(
            backends,
            self.policy,
            settings,
            origin=server_id,
            guard=outage.guard,
            degraded=lambda: outage.down,
            control=self,
        )
        #: The dashboard (/admin): this relay's samples and the cluster's views.
        store = store_for(backends)
        self.sampler = Sampler(
            server_id,
            store,
            self._reading,
            registry.ping,
            outage.guard,
            interval=settings.dashboard_interval,
            wall_ms=now_ms,
        )
        self.dashboard = Dashboard(
            backends,
            self.policy,
            store,
            self_id=server_id,
            liveness_interval=settings.liveness_interval,
            liveness_ttl=settings.liveness_ttl,
            sampler=self.sampler,
            wall_ms=now_ms,
        )
        self._started = False

    def _reading(self) -> Reading:
        """This relay's counters for a dashboard sample."""
        metrics = self.metrics
        return Reading(
            len(self.sinks),
            counter_total(metrics.published),
            counter_total(metrics.delivered),
            self.degraded_seconds(),
        )

    # -- what the transport and the HTTP routes read ----------------------------

    @property
    def started_at(self) -> float:
        return self.registration.started_at

    @property
    def host(self) -> str:
        return self.registration.host

    @host.setter
    def host(self, value: str) -> None:
        self.registration.host = value

    @property
    def port(self) -> int:
        return self.registration.port

    @port.setter
    def port(self, value: int) -> None:
        self.registration.port = value

    @property
    def ready(self) -> bool:
        """Started (registered, or known to be waiting for Redis) and Redis reachable."""
        return self._started and self.bus.available and not self.outage.down

    @property
    def auth(self) -> Authenticator | None:
        return self.access.auth

    @property
    def dev_tokens(self) -> bool:
        return self.access.dev_tokens

    def degraded_seconds(self) -> float:
        """Seconds spent degraded (Redis unreachable) since the start."""
        return self.outage.degraded_seconds()

    async def send_envelope(self, route: Route, channel: str, envelope: Envelope) -> None:
        """An operator's message for a destination (:meth:`Sender.send_envelope`)."""
        await self.sender.send_envelope(route, channel, envelope)

    async def kick(self, user: str, until_ms: int | None, lift: bool = False) -> None:
        """End ``user``'s sessions on every relay (:meth:`Access.kick`)."""
        await self.access.kick(user, until_ms, lift)

    async def subscribe_user(self, user: str, destination: str) -> dict[str, object]:
        """The server API's acts on a user's sessions (:class:`UserControl`)."""
        return await self.user_control.subscribe_user(user, destination)

    async def unsubscribe_user(self, user: str, destination: str) -> dict[str, object]:
        return await self.user_control.unsubscribe_user(user, destination)

    async def disconnect_user(self, user: str, reason: str) -> dict[str, object]:
        return await self.user_control.disconnect_user(user, reason)

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.access.start()
        self.bus.on_state_change = self._bus_state
        await self.bus.start(self._dispatch)
        await self.router.listen(self.keys.control_channel)
        await self.router.retain_always(self.keys.server_channel(self.server_id))
        await self.access.reload_suspensions()
        # Without Redis now, the probe registers this relay once it answers.
        with contextlib.suppress(BackendUnavailable):
            await self.outage.guard(self.registration.register)
        self._started = True
        self.liveness.start()
        if self.webhook_delivery is not None:
            self.webhook_delivery.start()
        self.sampler.start()
        settings = self.settings
        self.queues.watch(
            self._alive_servers,
            lambda: self.outage.may_judge(settings.liveness_ttl),
            every=max(10 * settings.sweep_interval, 1.0),
            idle_ms=int(4000 * settings.liveness_ttl),
        )

    async def _alive_servers(self) -> set[str]:
        return {record.server_id for record, alive, _ in await self.registry.servers() if alive}

    async def close(self) -> None:
        """After every client is gone: stop liveness, drop this relay's keys.

        Every step is bounded (:mod:`stomprelay.bounded`): the components stop their own
        tasks within their bounds, and unregistering and closing the backends get
        :data:`CLOSE_STEP_TIMEOUT` each, so neither a paused Redis nor a task that swallowed
        its cancellation holds a stop; what did not finish is logged and left behind."""
        started = time.monotonic()

        def done(step: str) -> None:
            # a stop that overruns its drain time shows where (at debug level)
            log.debug("close: %s done (%.2f s)", step, time.monotonic() - started)

        await self.sender.close()
        await self.liveness.stop()
        if self.webhook_delivery is not None:
            # what is queued goes out first; then the leases go to the other relays
            await bounded("close: webhooks", self.webhook_delivery.stop(), CLOSE_STEP_TIMEOUT)
        await self.sampler.stop()
        done("publisher, liveness")
        await self.outage.close()
        await bounded("close: queues", self.queues.close(), CLOSE_STEP_TIMEOUT)
        await self.router.close()
        for task in list(self._background):
            task.cancel()
        done("outage, router")
        await bounded("close: unregister", self.registration.unregister(), CLOSE_STEP_TIMEOUT)
        done("unregister")
        closes = [("bus", self.bus.close()), ("registry", self.registry.close())]
        if self.access.auth is not None:
            closes.append(("authentication", self.access.auth.close()))
        if self.access.hook is not None:
            closes.append(("authorization hook", self.access.hook.close()))
        await asyncio.gather(
            *(bounded(f"close: {name}", close, CLOSE_STEP_TIMEOUT) for name, close in closes)
        )
        done("bus, registry")

    def background(self, task: asyncio.Task[None]) -> None:
        """Keep a task of this relay's until it ends (cancelled at close)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def note_backend_error(self, exc: BackendUnavailable) -> None:
        """Redis failed an operation: local mode until the probe has resynced."""
        self.outage.fail(exc)

    def _dispatch(self, channel: str, envelope: Envelope) -> None:
        if channel == self.keys.control_channel:
            self.access.control(envelope)
        elif self.replies.received(channel, envelope):
            return
        elif not self.user_control.handles(channel, envelope) and not self.users.received(
            channel, envelope
        ):
            self.router.dispatch(channel, envelope)

    def _bus_state(self, available: bool) -> None:
        if not available:
            self.outage.fail(BackendUnavailable("redis pub/sub connection lost"))
            return
        # Subscriptions are back: every feed reads what it missed meanwhile.
        self.router.bus_restored()

    def _outage_state(self, up: bool) -> None:
        self.metrics.degraded.set(0 if up else 1)
        self.sampler.outage(up)
        if up and self._started:
            # a kick published while this relay could not hear it
            task = asyncio.get_running_loop().create_task(self.access.reload_suspensions())
            self.background(task)
            # server-side subscriptions asked for while this relay could not hear
            self.background(asyncio.get_running_loop().create_task(self.server_subs.resync()))
        if up and self.bus.available:
            # Reads refused while Redis counted as down are due now.
            self.router.bus_restored()

    # -- the transport's application interface ---------------------------------
    # (transport/app.py's Application: the rest of it is the names used elsewhere too)

    def congested(self, destinations: set[str]) -> bool:
        """Whether a local subscriber of one of ``destinations`` cannot take more now."""
        return self.router.congested(destinations)

    # -- connections --------------------------------------------------------------

    def new_session(self) -> ServerSession:
        return ServerSession(
            secrets.token_hex(8),
            self.server_id,
            time.monotonic(),
            self.settings,
            SERVER_NAME,
            defer_connect=True,
            untransacted=frozenset({REFRESH_DESTINATION}),
            acked_prefixes=(QUEUE_PREFIX,),
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
        if session.rate_limited is not None:
            self.metrics.rate_limited.labels(session.rate_limited).inc()
        self.access.forget(session.session_id)
        self.sender.forget(session.session_id)
        self.replies.forget(session.session_id)
        await self.queues.drop(session.session_id)
        await self.router.drop(session.session_id)
        session.subscriptions.clear()
        await self.users.disconnected(session.session_id)
        error = session.error.message if session.error is not None else None
        cause = disconnect_reason(session.close_reason, error)
        await self.registration.disconnect(session.session_id, cause)

    async def handle(self, sink: Sink, events: list[Event]) -> None:
        """Act on a connection's events in order; refusals become ERROR frames.

        A SEND to a topic or room goes into the pipeline (:class:`Sender`) and the
        next event is taken at once; any other event (a RECEIPT among them)
        first waits for the session's SENDs before it, so everything a session
        does still happens in the order it asked."""
        session = sink.session
        pending = deque(events)
        open_at_start = not session.closed
        while pending:
            event = pending.popleft()
            if open_at_start and session.closed and isinstance(event, MessageSent):
                # ended while this batch was handled (a kick, an expiry, a refusal):
                # the frames after that point are not acted on
                continue
            # Frames that arrived before a parse error are still handled (a SEND is
            # published); only new subscriptions of a closed session are skipped.
            if session.closed and isinstance(event, Subscribed | ReceiptDue):
                if isinstance(event, ReceiptDue):
                    self.subscriptions.skip_receipt(session.session_id, event.receipt_id)
                continue
            try:
                if isinstance(event, MessageSent | Subscribed):
                    self.access.authorize(session, event)
                    was_open = not session.closed
                    await self.access.consult(session, event, sink.remote)
                    if was_open and session.closed:
                        continue  # ended while the hook was asked
                    event = self.replies.admit(session.session_id, event)
                if isinstance(event, MessageSent) and self.sender.submit(sink, event):
                    continue
                await self.sender.settle(session, self.settings.publish_timeout)
                if isinstance(event, ReceiptDue) and session.closed:
                    continue  # a SEND before it was refused: no RECEIPT
                if isinstance(event, Connected):
                    # the frames after the CONNECT, parsed once it is accepted
                    pending.extendleft(reversed(await self._on_connect(sink, event)))
                    continue
                await self._handle(sink, event)
            except PeerError as exc:
                self.metrics.errors.labels(exc.message).inc()
                session.fail(exc, receipt_of(event))
        sink.flush()
        await self.sender.throttle(session)

    def handle_now(self, sink: Sink, events: list[Event]) -> bool:
        """:meth:`handle`, without a task, for a batch that cannot wait on anything:
        every event a SEND the pipeline takes, the session open, and under its
        publish pause afterwards (the common case of a chatty client). False, with
        nothing done, where :meth:`handle` must run instead."""
        session = sink.session
        sender = self.sender
        if session.closed or not sender.unpaused(session.session_id, len(events)):
            return False
        sends: list[tuple[MessageSent, Verdict]] = []
        for event in events:
            if not isinstance(event, MessageSent) or not sender.takes(event.destination):
                return False
            verdict = self.access.known(session, event)
            if verdict is None:
                return False  # the hook must be asked: not without a task
            sends.append((event, verdict))
        for event, verdict in sends:
            if session.closed:
                continue  # ended by a refusal in this batch: the rest is not acted on
            try:
                self.access.authorize(session, event)
                self.access.apply(verdict)
                sender.submit(sink, self.replies.admit(session.session_id, event))
            except PeerError as exc:
                self.metrics.errors.labels(exc.message).inc()
                session.fail(exc, receipt_of(event))
        sink.flush()
        return True

    #: Destinations the events send to (the transport's backpressure asks).
    sent_to = staticmethod(sent_to)

    async def _handle(self, sink: Sink, event: Event) -> None:
        if isinstance(event, MessageSent):
            await self._on_send(sink, event)
        elif isinstance(event, Subscribed):
            route = parse_destination(event.subscription.destination)
            if route.kind == "queue":
                await self.queues.subscribe(sink, event.subscription, route.name)
            elif not self.server_subs.subscribed(sink, event.subscription):
                await self.subscriptions.subscribe(sink, event)
        elif isinstance(event, Unsubscribed):
            session_id = sink.session.session_id
            if self.queues.subscribed(session_id, event.subscription.id):
                await self.queues.unsubscribe(session_id, event.subscription.id)
            else:
                await self.subscriptions.unsubscribe(sink, event)
        elif isinstance(event, Acknowledged):
            await self.queues.settle(sink.session.session_id, event)
        elif isinstance(event, ReceiptDue):
            await self.queues.acknowledged(sink.session.session_id)
            await self.subscriptions.receipt(sink, event)
        elif isinstance(event, DisconnectRequested):
            sink.session.close("client disconnected")

    async def _on_connect(self, sink: Sink, event: Connected) -> list[Event]:
        """Check the credential, then accept the CONNECT (CONNECTED goes out)
        and register the session; returns the events of the frames after it."""
        session = sink.session
        identity = await self.access.admit(session, event, sink.remote)
        if identity is None:
            return []
        # the user's channel first: once the session is in the registry, whatever is
        # published for its user reaches this relay
        await self.users.connected(session.session_id, identity.user)
        if session.session_id not in self.sinks:  # closed meanwhile: detached already
            await self.users.disconnected(session.session_id)
            return []
        more = session.accept(time.monotonic())
        await self.registration.connect(
            session.session_id, identity.name, sink.remote, event.version, identity.user
        )
        await self.server_subs.connected(sink, identity.user)
        return more

    async def _on_send(self, sink: Sink, event: MessageSent) -> None:
        frame = event.frame
        if event.destination == REFRESH_DESTINATION:
            await self.access.refresh(sink.session, frame.body)
            return
        route = parse_destination(event.destination)
        if route.kind == "system":
            raise PolicyError(
                "Read-only destination",
                "/topic/system is written by operators through the HTTP API only.",
            )
        if route.kind == "app":
            await self.rooms.send(sink, route, event.destination, frame.body)
            return
        await self.sender.send(
            route,
            event.destination,
            frame.headers,
            frame.body,
            self.access.sender(sink.session.session_id),
        )
