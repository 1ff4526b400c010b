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
import json
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from stomprelay import __version__
from stomprelay.auth import (
    REFRESH_DESTINATION,
    Acl,
    AuthError,
    Identity,
    check_name,
    room_of,
    token_of,
)
from stomprelay.bounded import bounded
from stomprelay.clock import now_ms
from stomprelay.cluster.base import Bus
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, Log, LogSlice
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryBus, MemoryHub, MemoryRegistry
from stomprelay.cluster.reaper import Liveness
from stomprelay.cluster.registry import (
    Registry,
    SessionRecord,
)
from stomprelay.errors import BackendUnavailable, PeerError, PolicyError
from stomprelay.metrics import Metrics
from stomprelay.notify import kick_command, operator_command, show_ms
from stomprelay.publish import Publisher
from stomprelay.registration import Registration
from stomprelay.rooms import Rooms
from stomprelay.router import (
    Replay,
    Resume,
    Route,
    Router,
    Sink,
    channels_for,
    parse_destination,
)
from stomprelay.settings import Settings
from stomprelay.stomp.frames import Headers
from stomprelay.stomp.session import (
    Connected,
    DisconnectRequested,
    Event,
    MessageSent,
    ReceiptDue,
    ServerSession,
    Subscribed,
    Subscription,
    Unsubscribed,
)
from stomprelay.sync import Journal, Sync

if TYPE_CHECKING:
    # PyJWT is imported only where authentication is configured (stomprelay.tokens)
    from stomprelay.tokens import Authenticator

log = logging.getLogger(__name__)

SERVER_NAME = f"stomprelay/{__version__}"
#: Seconds that unregistering, and closing the bus, the registry or the authenticator, may
#: each take at a stop; the Redis ones bound themselves to less (cluster.connect).
CLOSE_STEP_TIMEOUT = 5.0


def default_server_id() -> str:
    """Hostname plus a short random suffix, so restarted relays never collide."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:40] or 'relay'}-{secrets.token_hex(3)}"


def stall_ms(settings: Settings) -> int:
    """Silence of every relay that counts as Redis itself being unreachable."""
    return max(500, int(1500 * settings.liveness_interval))


class Relay:
    def __init__(
        self,
        settings: Settings | None = None,
        server_id: str | None = None,
        bus: Bus | None = None,
        registry: Registry | None = None,
        keys: Keys | None = None,
        log_: Log | None = None,
        auth: Authenticator | None = None,
        acl: Acl | None = None,
        dev_tokens: bool = False,
    ) -> None:
        if acl is not None and auth is None:
            raise ValueError(
                "an ACL needs authentication: without verified identities its rules would "
                "trust whatever login a client claims (give --jwt-secret, --jwt-public-key "
                "or --jwks)"
            )
        if dev_tokens and (auth is None or not auth.secret):
            raise ValueError("--dev-tokens needs --jwt-secret (it signs tokens with it)")
        #: Verifies credentials at CONNECT and refresh; None: authentication off.
        self.auth = auth
        #: Per-destination rules; None: every destination open (as RabbitMQ's default).
        self.acl = acl
        #: Development only: GET /dev/token hands out tokens for any user.
        self.dev_tokens = dev_tokens
        #: session id -> who it is (from its token, or its CONNECT login)
        self.identities: dict[str, Identity] = {}
        #: user -> refused until (ms since the epoch), from the operators' kicks
        self.suspended: dict[str, int] = {}
        self.settings = settings or Settings()
        self.server_id = server_id or default_server_id()
        self.keys = keys or Keys()
        self.policy = HistoryPolicy.of(self.settings)
        if bus is None or registry is None:
            hub = MemoryHub(policy=self.policy)
            bus = bus or MemoryBus(hub)
            registry = registry or MemoryRegistry(
                hub,
                self.keys,
                stall_ms(self.settings),
                int(self.settings.liveness_ttl * 1000),
                self.settings.reaper_lock_ms,
            )
        self.bus: Bus = bus
        self.registry: Registry = registry
        found_log = log_ or getattr(registry, "log", None)
        self.log: Log | None = found_log
        self.metrics = Metrics()
        self.sync = Sync(
            found_log if found_log is not None else _NoLog(),
            probe=self.registry.ping,
            recover=self._recover,
            clock=time.monotonic,
            journal=Journal(self.settings.journal_messages, self.settings.journal_bytes),
            probe_interval=self.settings.probe_interval,
            on_state=self._sync_state,
            wall_ms=now_ms,
        )
        self.router = Router(
            self.bus, self.keys, self.server_id, found_log, self.policy, lambda: self.sync.down
        )
        self._background: set[asyncio.Task[None]] = set()
        self.registration = Registration(
            self.settings,
            self.server_id,
            self.keys,
            self.registry,
            found_log,
            self.router,
            self.sync,
            on_history_lost=self._history_lost,
        )
        self.rooms = Rooms(
            self.settings,
            self.server_id,
            self.keys,
            self.registration,
            self.sync,
            self.router,
            self.metrics,
            spawn=self.background,
            publish=self.append_or_journal,
            identities=self.identities,
        )
        sync = self.sync
        self.liveness = Liveness(
            server_id=self.server_id,
            registry=self.registry,
            interval=self.settings.liveness_interval,
            sweep_interval=self.settings.sweep_interval,
            refresh=self.refresh,
            on_error=self.note_backend_error,
            guard=sync.guard,
            may_judge=lambda: sync.health.may_judge(sync.clock(), self.settings.liveness_ttl),
            clock_ms=self.clock_ms,
            next_message_id=self.router.next_message_id,
        )
        self.router.on_delivered = self.metrics.delivered.inc
        self.router.on_repaired = self.metrics.repaired
        self.router.on_lost = self.rooms.lost
        self.router.on_read_failed = self.sync.fail
        self.sinks: dict[str, Sink] = {}
        #: The pipeline of clients' SENDs to Redis.
        self.publisher = Publisher(
            found_log if found_log is not None else _NoLog(),
            self.bus.publish_many,
            self.sync,
            self.journal,
            self.metrics,
            now_ms,
        )
        #: session id -> its SENDs still in the pipeline
        self._inflight: dict[str, _Inflight] = {}
        self._started = False
        #: (session id, receipt id) -> RECEIPT headers and replay of a SUBSCRIBE.
        self._after_receipt: dict[tuple[str, str], tuple[Headers, Replay | None]] = {}

    # -- lifecycle ----------------------------------------------------------

    def clock_ms(self) -> int:
        return now_ms()

    # what the transport and the tests read of the registration
    @property
    def records(self) -> dict[str, SessionRecord]:
        return self.registration.records

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

    async def refresh(self) -> None:
        await self.registration.refresh()

    async def _recover(self) -> None:
        await self.registration.resync()

    async def _load_suspensions(self) -> None:
        """Kicks made while this relay was away (or before it started): the
        suspensions it must enforce, and the sessions it must still end (a user
        suspended now, or kicked after the session connected)."""
        found = await self.registry.suspensions(now_ms())
        self.suspended = found.until

        def missed(identity: Identity, record: SessionRecord | None) -> bool:
            for user in self._names(identity, record):
                if user in found.until:
                    return True
                kicked = found.kicked.get(user)
                if kicked is not None and record is not None and kicked >= record.connected_at:
                    return True
            return False

        self._end_sessions(missed)

    async def _reload_suspensions(self) -> None:
        with contextlib.suppress(BackendUnavailable):
            await self.sync.guard(self._load_suspensions)

    def _history_lost(self, destination: str) -> None:
        self.rooms.lost(destination)

    @property
    def ready(self) -> bool:
        """Started (registered, or known to be waiting for Redis) and Redis reachable."""
        return self._started and self.bus.available and not self.sync.down

    @property
    def backend_error(self) -> str | None:
        """Why Redis counts as down, or None."""
        if self.sync.down:
            return self.sync.health.reason or "redis unreachable"
        if not self.bus.available:
            return "redis pub/sub connection lost"
        if not self._started:
            return "starting"
        return None

    async def start(self) -> None:
        if self.auth is not None:
            await self.auth.start()
        self.bus.on_state_change = self._bus_state
        await self.bus.start(self._dispatch)
        await self.router.listen(self.keys.control_channel)
        await self.router.retain_always(self.keys.server_channel(self.server_id))
        with contextlib.suppress(BackendUnavailable):
            await self.sync.guard(self._load_suspensions)
        # Without Redis now, the probe registers this relay once it answers.
        with contextlib.suppress(BackendUnavailable):
            await self.sync.guard(self.registration.register)
        self._started = True
        self.liveness.start()

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

        await self.publisher.close()
        await self.liveness.stop()
        done("publisher, liveness")
        await self.sync.close()
        await self.router.close()
        for task in list(self._background):
            task.cancel()
        done("sync, router")
        await bounded("close: unregister", self.registration.unregister(), CLOSE_STEP_TIMEOUT)
        done("unregister")
        closes = [("bus", self.bus.close()), ("registry", self.registry.close())]
        if self.auth is not None:
            closes.append(("authentication", self.auth.close()))
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
        self.sync.fail(exc)

    def _bus_state(self, available: bool) -> None:
        if not available:
            self.sync.fail(BackendUnavailable("redis pub/sub connection lost"))
            return
        # Subscriptions are back: every feed reads what it missed meanwhile.
        self.router.bus_restored()

    def _sync_state(self, up: bool) -> None:
        self.metrics.degraded.set(0 if up else 1)
        if up and self._started:
            # a kick published while this relay could not hear it
            self.background(asyncio.get_running_loop().create_task(self._reload_suspensions()))
        if up and self.bus.available:
            # Reads refused while Redis counted as down are due now.
            self.router.bus_restored()

    # -- the transport's application interface ---------------------------------
    # (transport/app.py's Application: the rest of it is the names used elsewhere too)

    def congested(self, destinations: set[str]) -> bool:
        """Whether a local subscriber of one of ``destinations`` cannot take more now."""
        return self.router.congested(destinations)

    # -- connections --------------------------------------------------------

    def new_session(self) -> ServerSession:
        return ServerSession(
            secrets.token_hex(8),
            self.server_id,
            time.monotonic(),
            self.settings,
            SERVER_NAME,
            defer_connect=True,
            untransacted=frozenset({REFRESH_DESTINATION}),
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
        self.identities.pop(session.session_id, None)
        self._inflight.pop(session.session_id, None)
        await self.router.drop(session.session_id)
        session.subscriptions.clear()
        await self.registration.disconnect(session.session_id)

    async def handle(self, sink: Sink, events: list[Event]) -> None:
        """Act on a connection's events in order; refusals become ERROR frames.

        A SEND to a logged destination goes into the publish pipeline and the
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
                    self._after_receipt.pop((session.session_id, event.receipt_id), None)
                continue
            try:
                if isinstance(event, MessageSent | Subscribed):
                    self._authorize(session, event)
                if isinstance(event, MessageSent) and self._pipelined(sink, event):
                    continue
                await self._settle(session, self.settings.publish_timeout)
                if isinstance(event, ReceiptDue) and session.closed:
                    continue  # a SEND before it was refused: no RECEIPT
                if isinstance(event, Connected):
                    # the frames after the CONNECT, parsed once it is accepted
                    pending.extendleft(reversed(await self._on_connect(sink, event)))
                    continue
                await self._handle(sink, event)
            except PeerError as exc:
                self.metrics.errors.labels(exc.message).inc()
                session.fail(exc, _receipt_of(event))
        sink.flush()
        await self._throttle(session)

    @staticmethod
    def sent_to(events: list[Event]) -> set[str]:
        """Destinations the events publish to (the transport's backpressure asks)."""
        return {
            e.destination
            for e in events
            if isinstance(e, MessageSent) and not e.destination.startswith("/app/")
        }

    def _pipelined(self, sink: Sink, event: MessageSent) -> bool:
        """Put a SEND to a topic or room into the pipeline (logged or not); False
        for the application's destinations, which run their own scripts."""
        publisher = self.publisher
        if event.destination == REFRESH_DESTINATION:
            return False
        route = parse_destination(event.destination)
        if route.kind in ("app", "system"):
            return False
        log_id = self.router.logged(route)
        frame = event.frame
        session = sink.session
        envelope = self.router.envelope(
            event.destination, frame.headers, frame.body, self.sender(session.session_id)
        )
        done = publisher.submit(
            log_id, channels_for(route, self.keys)[0], envelope, session.session_id
        )
        state = self._inflight.get(session.session_id)
        if state is None:
            state = self._inflight[session.session_id] = _Inflight(done)
        state.count += 1
        state.last = done
        done.add_done_callback(lambda f: self._published(session, sink, event.receipt, f))
        return True

    def _published(
        self,
        session: ServerSession,
        sink: Sink,
        receipt: str | None,
        done: asyncio.Future[None],
    ) -> None:
        state = self._inflight.get(session.session_id)
        if state is not None:
            state.count -= 1
            if state.count <= 0 and state.last is done:
                del self._inflight[session.session_id]
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, PeerError):
            self.metrics.errors.labels(exc.message).inc()
            session.fail(exc, receipt)
            sink.flush()

    async def _settle(self, session: ServerSession, limit: float | None = None) -> None:
        """Wait until the session's SENDs in the pipeline are acknowledged (or journaled)."""
        state = self._inflight.get(session.session_id)
        if state is None or state.last.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(state.last), limit)
        except TimeoutError:
            raise PolicyError(
                "Publish backlog",
                f"{state.count} messages of this session waited more than {limit:g} s for Redis.",
            ) from None
        except (PeerError, BackendUnavailable):
            pass  # reported to the session by _published

    async def _throttle(self, session: ServerSession) -> None:
        """Flow control: past ``publish_pause`` SENDs in the pipeline, the session
        waits (its socket is read no further meanwhile); past ``publish_timeout``
        of waiting it gets ERROR ``Publish backlog``."""
        state = self._inflight.get(session.session_id)
        if state is None or state.count < self.settings.publish_pause:
            return
        try:
            await self._settle(session, self.settings.publish_timeout)
        except PeerError as exc:
            self.metrics.errors.labels(exc.message).inc()
            session.fail(exc)

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
                resume = Resume.of(subscription, self.settings.max_history_request)
                if resume.asked:
                    self.metrics.resumes.labels(
                        "history" if resume.since is None else "resume"
                    ).inc()
                headers, replay = await self.router.subscribe(sink, subscription, route, resume)
                receipt = _receipt_of(event)
                if receipt is not None:
                    self._after_receipt[(session.session_id, receipt)] = (headers, replay)
                    if resume.since is not None:
                        recovered = dict(headers).get("x-recovered", "false")
                        self.metrics.recovered.labels(recovered).inc()
                elif replay is not None:
                    await replay()
        elif isinstance(event, Unsubscribed):
            await self.router.unsubscribe(sink, event.subscription)
        elif isinstance(event, ReceiptDue):
            extra, replay = self._after_receipt.pop(
                (session.session_id, event.receipt_id), ((), None)
            )
            session.send_receipt(event.receipt_id, time.monotonic(), extra)
            if replay is not None:
                sink.flush()
                await replay()
        elif isinstance(event, DisconnectRequested):
            session.close("client disconnected")

    # -- identity and access (docs/security.md) ------------------------------

    def sender(self, session_id: str) -> Headers:
        """``x-sender`` / ``x-sender-session`` the relay stamps on a client's SEND
        (reserved: whatever the client put there was stripped)."""
        identity = self.identities.get(session_id)
        if identity is None or not identity.user:
            return (("x-sender-session", session_id),)
        return (("x-sender", identity.user), ("x-sender-session", session_id))

    async def _identify(self, event: Connected) -> Identity:
        """Who the CONNECT says it is: a verified token, or (authentication
        off) its ``login`` as given; refused while an operator suspends it."""
        if self.auth is not None:
            identity = await self.auth.verify(token_of(event.headers))
        elif event.login:
            login = check_name(event.login, "login", self.settings.max_login)
            identity = Identity(login, login)
        else:
            identity = Identity("", "")
        self._not_suspended(identity)
        return identity

    def _not_suspended(self, identity: Identity) -> None:
        until = self.suspended.get(identity.user) if identity.user else None
        if until is not None and until > now_ms():
            raise AuthError(
                "access refused",
                f"An operator suspended {identity.user!r} until {show_ms(until)}.",
            )

    def _expire_at(self, session: ServerSession, identity: Identity) -> None:
        """End the session at its token's ``exp`` (a deadline on its own clock)."""
        if identity.expires is None:
            session.expires_at = None
            return
        wall = time.time()
        session.expires_at = time.monotonic() + max(0.0, identity.expires - wall)

    def _authorize(self, session: ServerSession, event: MessageSent | Subscribed) -> None:
        """The ACL's decision for a SEND or SUBSCRIBE (the refresh is outside it)."""
        if isinstance(event, Subscribed):
            self._check(session, "subscribe", event.subscription.destination)
        elif event.destination != REFRESH_DESTINATION:
            self._check(session, "send", event.destination)

    def _check(self, session: ServerSession, action: str, destination: str) -> None:
        acl = self.acl
        if acl is None:
            return
        identity = self.identities.get(session.session_id) or Identity("", "")
        record = self.registration.records.get(session.session_id)
        rooms = record.rooms if record is not None else []
        if not acl.allows(identity, action, destination, rooms.__contains__):
            raise PolicyError(
                "forbidden", f"{identity.user} may not {action} to {destination[:120]}."
            )

    async def _refresh(self, sink: Sink, body: bytes) -> None:
        """``SEND /app/auth/refresh``: a new token for the same ``sub`` replaces
        the credential; every subscription is checked again under it."""
        session = sink.session
        auth = self.auth
        if auth is None:
            raise PolicyError(
                "Unknown destination", "Authentication is off here: there is nothing to refresh."
            )
        try:
            token = body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise AuthError("invalid token: malformed", "The token is not text.") from None
        identity = await auth.verify(token)
        current = self.identities.get(session.session_id)
        if current is not None and identity.user != current.user:
            raise AuthError(
                "invalid token: different subject",
                "A refresh must carry the same sub as the session's token.",
            )
        self._not_suspended(identity)
        self.identities[session.session_id] = identity
        self._expire_at(session, identity)
        log.info("session %s refreshed its credential", session.session_id)
        for subscription in list(session.subscriptions.values()):
            self._recheck(session, subscription)

    def _recheck(self, session: ServerSession, subscription: Subscription) -> None:
        try:
            self._check(session, "subscribe", subscription.destination)
        except PolicyError:
            raise PolicyError(
                "forbidden",
                f"Subscription {subscription.id} to {subscription.destination[:120]} is no "
                "longer allowed for this session.",
            ) from None

    async def kick(self, user: str, until_ms: int | None, lift: bool = False) -> None:
        """End ``user``'s sessions on every relay (ERROR ``session ended by
        operator``) and refuse its CONNECTs until ``until_ms`` (None: no ban);
        ``lift``: only end a suspension."""
        command = operator_command(user, until_ms, lift)
        envelope = kick_command(command)
        try:
            await self.registry.suspend(command, self.keys.control_channel, envelope)
        except BackendUnavailable:
            # Redis is down: end the sessions here at least (the others cannot hear)
            self.control(envelope)
            raise

    def _dispatch(self, channel: str, envelope: Envelope) -> None:
        if channel == self.keys.control_channel:
            self.control(envelope)
        else:
            self.router.dispatch(channel, envelope)

    def control(self, envelope: Envelope) -> None:
        """An operator's command from the control channel."""
        try:
            command = json.loads(envelope.body)
            user = str(command["user"])
            until = command.get("until")
            action = command.get("action")
        except (ValueError, KeyError, TypeError, RecursionError):
            log.warning("ignoring a malformed control message %s", envelope.id)
            return
        if action == "lift":
            self.suspended.pop(user, None)
            return
        if action != "kick":
            return
        if isinstance(until, int) and until > now_ms():
            self.suspended[user] = until
        self._end_sessions(lambda identity, record: user in self._names(identity, record))

    @staticmethod
    def _names(identity: Identity, record: SessionRecord | None) -> set[str]:
        """The names a kick finds a session by: the token's ``sub``; without
        authentication, also the name it joined rooms as (its login may differ)."""
        names = {identity.user}
        if not identity.verified and record is not None:
            names.add(record.username)
        names.discard("")
        return names

    def _end_sessions(self, chosen: Callable[[Identity, SessionRecord | None], bool]) -> None:
        for session_id, identity in list(self.identities.items()):
            record = self.registration.records.get(session_id)
            if not chosen(identity, record):
                continue
            sink = self.sinks.get(session_id)
            if sink is None or sink.session.closed:
                continue
            log.info("session %s of %s ended by an operator", session_id, identity.user)
            self.metrics.kicked.inc()
            sink.session.fail(
                PolicyError("session ended by operator", "An operator ended this session.")
            )
            sink.flush()

    async def _on_connect(self, sink: Sink, event: Connected) -> list[Event]:
        """Check the credential, then accept the CONNECT (CONNECTED goes out)
        and register the session; returns the events of the frames after it."""
        session = sink.session
        identity = await self._identify(event)
        if session.closed:
            return []
        self.identities[session.session_id] = identity
        self._expire_at(session, identity)
        more = session.accept(time.monotonic())
        now = self.clock_ms()
        record = SessionRecord(
            session_id=session.session_id,
            server_id=self.server_id,
            username=identity.name,
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
        await self.registration.connect(record)
        return more

    async def _on_send(self, sink: Sink, event: MessageSent) -> None:
        frame = event.frame
        if event.destination == REFRESH_DESTINATION:
            await self._refresh(sink, frame.body)
            return
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
                if self.acl is not None:
                    # members-only rules: the room's feeds are no longer this session's
                    for subscription in list(sink.session.subscriptions.values()):
                        if room_of(subscription.destination) == route.name:
                            self._recheck(sink.session, subscription)
            else:
                raise PolicyError(
                    "Unknown destination",
                    f"{event.destination} is subscribed to, not sent to.",
                )
            return
        await self.publish(
            route,
            event.destination,
            frame.headers,
            frame.body,
            self.sender(sink.session.session_id),
        )

    async def publish(
        self,
        route: Route,
        destination: str,
        headers: Headers,
        body: bytes,
        sender: Headers = (),
    ) -> None:
        envelope = self.router.envelope(destination, headers, body, sender)
        await self.publish_envelope(route, channels_for(route, self.keys)[0], envelope)

    async def publish_envelope(self, route: Route, channel: str, envelope: Envelope) -> None:
        """Append to the destination's log (publishing it), or publish it as it is
        where the destination is not logged."""
        log_id = self.router.logged(route)
        log_ = self.log
        if not log_id or log_ is None:
            await self.router.publish(channel, envelope)
            self.metrics.published.inc()
            return
        await self.append_or_journal(
            log_id, channel, envelope, lambda: log_.append(log_id, channel, envelope, now_ms())
        )

    async def append_or_journal(
        self,
        log_id: str,
        channel: str,
        envelope: Envelope,
        append: Callable[[], Awaitable[object]],
    ) -> None:
        """Run ``append`` (it appends ``envelope`` to ``log_id``); with Redis down,
        journal the envelope and deliver it locally now. A timed-out append that
        did run has the same id, so the journal's append later adds nothing. A
        full journal raises PolicyError (an ERROR, never a RECEIPT)."""
        try:
            await self.sync.guard(append)
        except BackendUnavailable:
            self.journal(log_id, channel, envelope)
        else:
            self.metrics.appends.inc()
        self.metrics.published.inc()

    def journal(self, log_id: str, channel: str, envelope: Envelope) -> None:
        """Redis did not take ``envelope``: keep it for after recovery and deliver
        it locally now (a full journal raises PolicyError)."""
        self.sync.keep(log_id, channel, envelope)
        self.metrics.journaled.inc()
        self.router.deliver_early(channel, envelope)


class _Inflight:
    """A session's SENDs in the publish pipeline: how many, and the last one."""

    __slots__ = ("count", "last")

    def __init__(self, last: asyncio.Future[None]) -> None:
        self.count = 0
        self.last = last


class _NoLog:
    """Stands in when a backend has no log (history is then off)."""

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        raise BackendUnavailable("no log")

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        raise BackendUnavailable("no log")

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        raise BackendUnavailable("no log")


def _receipt_of(event: Event) -> str | None:
    if isinstance(event, MessageSent):
        return event.receipt
    if isinstance(event, Subscribed | Unsubscribed):
        for name, value in event.subscription.headers:
            if name == "receipt":
                return value
    return None
