"""The server side of one STOMP connection, as a sans-I/O state machine.

Bytes go in through :meth:`ServerSession.receive_data`, which returns the
application events they caused; bytes to send come out of
:meth:`ServerSession.data_to_send`, one STOMP frame (or heart-beat EOL) per
item, so each can become one WebSocket message. Time is passed in as ``now``
(seconds, any monotonic origin); the session never reads a clock.

Receipts for frames that the application handles (SEND, SUBSCRIBE,
UNSUBSCRIBE, COMMIT) are returned as :class:`ReceiptDue` events *after* the
events they acknowledge, so the application sends each RECEIPT only once the
work before it is done (for a room SUBSCRIBE: once the cluster subscription is
live, as the contract requires).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from stomprelay.buckets import TokenBucket
from stomprelay.errors import PeerError, PolicyError, ProtocolError
from stomprelay.settings import Settings
from stomprelay.stomp.frames import (
    CLIENT_COMMANDS,
    SUPPORTED_VERSIONS,
    V10,
    V11,
    V12,
    Frame,
    Headers,
    PreparedMessage,
    encode_frame,
)
from stomprelay.stomp.parser import FrameParser

ACK_MODES = frozenset({"auto", "client", "client-individual"})


@dataclass(frozen=True, slots=True)
class Subscription:
    """A client's SUBSCRIBE as the session keeps it: id, destination, ack mode, headers."""

    id: str
    destination: str
    ack: str = "auto"
    headers: Headers = ()
    #: Made by the relay for a back-end (a server-side subscription), not by a
    #: SUBSCRIBE: outside the ACL, which the back-end's decision replaces.
    server: bool = False


@dataclass(frozen=True, slots=True)
class Connected:
    """CONNECT accepted; CONNECTED is already queued."""

    version: str
    login: str | None
    host: str | None
    #: The CONNECT's headers (credentials among them: never logged, so no repr).
    headers: Headers = field(default=(), repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A SUBSCRIBE the session accepted."""

    subscription: Subscription


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """An UNSUBSCRIBE of a subscription the session had."""

    subscription: Subscription


@dataclass(frozen=True, slots=True)
class MessageSent:
    """A SEND to route (outside a transaction, or released by COMMIT)."""

    frame: Frame
    #: The receipt to name in an ERROR about this SEND (the COMMIT's, if released by one).
    receipt: str | None = None

    @property
    def destination(self) -> str:
        return self.frame.get("destination") or ""


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """An ACK or NACK (outside a transaction, or released by COMMIT) settled these
    messages of a subscription whose destination asks for it (a queue's: the
    relay acknowledges or redelivers them). ``keys`` are what the client named
    them by (the ``ack`` header on 1.2, ``message-id`` before), oldest first."""

    subscription_id: str
    keys: tuple[str, ...]
    nack: bool


@dataclass(frozen=True, slots=True)
class ReceiptDue:
    """The client asked for a receipt; send it with :meth:`ServerSession.send_receipt`."""

    receipt_id: str


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """DISCONNECT received; after handling prior events, call ``close``."""


Event = (
    Connected
    | Subscribed
    | Unsubscribed
    | MessageSent
    | ReceiptDue
    | DisconnectRequested
    | Acknowledged
)


class State(enum.Enum):
    """Where a session is in its life, CONNECT to close."""

    AWAIT_CONNECT = "await-connect"
    #: CONNECT received, waiting for the application to :meth:`accept` it
    #: (``defer_connect``: the relay checks credentials first).
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True)
class _Pending:
    """Unacknowledged MESSAGEs of one client-ack subscription, oldest first."""

    mode: str
    keys: OrderedDict[str, None] = field(default_factory=OrderedDict)


def _parse_heartbeat(value: str | None) -> tuple[int, int]:
    if value is None:
        return 0, 0
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
        raise ProtocolError(
            "Invalid heart-beat header",
            f"heart-beat must be two integers 'cx,cy' of 0 to 999999999 ms, not {value[:80]!r}.",
        )
    return int(parts[0]), int(parts[1])


def negotiate_version(accept_version: str | None) -> str:
    """Highest version both sides support (STOMP 1.2 "Protocol Negotiation")."""
    if accept_version is None:
        return V10
    offered = {v.strip() for v in accept_version.split(",")}
    for version in SUPPORTED_VERSIONS:
        if version in offered:
            return version
    raise ProtocolError(
        "Supported protocol versions are 1.0,1.1,1.2",
        f"None of the versions you accept ({accept_version}) is supported by this server.",
        headers=(("version", ",".join(reversed(SUPPORTED_VERSIONS))),),
    )


class ServerSession:
    """State of one client connection, driven by bytes and ``now``."""

    def __init__(
        self,
        session_id: str,
        server_id: str,
        now: float,
        settings: Settings | None = None,
        server_name: str = "stomprelay/0",
        defer_connect: bool = False,
        untransacted: frozenset[str] = frozenset(),
        acked_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.session_id = session_id
        self.server_id = server_id
        self.settings = settings or Settings()
        self.server_name = server_name
        self.state = State.AWAIT_CONNECT
        self.version = V10
        self.login: str | None = None
        self.subscriptions: dict[str, Subscription] = {}
        #: Why the session closed, for logs; ``error`` is set if the peer erred.
        self.close_reason: str | None = None
        self.error: PeerError | None = None
        self._parser = FrameParser(self.settings.limits)
        self._outbox: list[bytes] = []
        self._transactions: dict[str, list[Frame]] = {}
        self._held_bytes = 0
        self._pending: dict[str, _Pending] = {}
        self._ack_owner: dict[str, str] = {}
        self._ack_counter = 0
        self._connect_deadline = now + self.settings.connect_timeout
        self._last_received = now
        self._last_sent = now
        #: True while the transport reads nothing from the peer (flow control).
        self._receive_paused = False
        #: Negotiated heart-beat periods in seconds (0: none).
        self.send_interval = 0.0
        self.receive_interval = 0.0
        #: Silence after which a heart-beat is queued: the interval less the lead.
        self._send_after = 0.0
        #: CONNECTED waits for :meth:`accept` (or :meth:`fail`) when set.
        self.defer_connect = defer_connect
        #: SEND destinations acted on at once even inside a transaction.
        self.untransacted = untransacted
        #: Destinations (by prefix) whose ACKs and NACKs become Acknowledged events.
        self.acked_prefixes = acked_prefixes
        settings_ = self.settings
        self._frame_bucket = TokenBucket(settings_.frame_rate, settings_.frame_burst, now)
        self._byte_bucket = TokenBucket(settings_.byte_rate, settings_.byte_burst, now)
        #: Which rate limit ended the session ("frames" or "bytes"), for metrics.
        self.rate_limited: str | None = None
        #: When the session's credential expires (``now`` units), or None.
        self.expires_at: float | None = None
        self._pending_connect: Connected | None = None
        self._client_heartbeat = (0, 0)

    # -- input ------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the peer; return the events they complete."""
        events: list[Event] = []
        if self.state not in (State.AWAIT_CONNECT, State.OPEN, State.CONNECTING):
            return events
        self._last_received = now
        if data and not self._byte_bucket.take(now, len(data)):
            self._rate_limited("bytes")
            return events
        self._parser.feed(data)
        self._parse(events, now)
        return events

    def _parse(self, events: list[Event], now: float) -> None:
        # In CONNECTING, later frames wait in the parser until accept().
        while self.state in (State.AWAIT_CONNECT, State.OPEN):
            try:
                frame = self._parser.next_frame()
            except PeerError as exc:
                self._fail(exc)
                break
            if frame is None:
                break
            if not self._frame_bucket.take(now):
                self._rate_limited("frames")
                break
            try:
                self._handle(frame, events, now)
            except PeerError as exc:
                self._fail(exc, frame.get("receipt"))

    def _rate_limited(self, kind: str) -> None:
        """``kind`` is "frames" or "bytes": which bucket ran dry."""
        settings = self.settings
        rate, burst = (
            (settings.frame_rate, settings.frame_burst)
            if kind == "frames"
            else (settings.byte_rate, settings.byte_burst)
        )
        self.rate_limited = kind
        detail = f"More than {rate:g} {kind} a second (burst {burst}) arrived from this client."
        self._fail(PolicyError("rate limit exceeded", detail))

    def accept(self, now: float) -> list[Event]:
        """Send the deferred CONNECTED and go on with the frames that arrived
        after the CONNECT; returns their events."""
        events: list[Event] = []
        if self.state is not State.CONNECTING:
            return events
        connected = self._pending_connect
        assert connected is not None
        self._pending_connect = None
        self._open(connected, now)
        self._parse(events, now)
        return events

    def _handle(self, frame: Frame, events: list[Event], now: float) -> None:
        command = frame.command
        if command not in CLIENT_COMMANDS:
            raise ProtocolError("Unknown command", f"{command} is not a client STOMP command.")
        if command in ("CONNECT", "STOMP"):
            self._on_connect(frame, events, now)
            return
        if self.state is State.AWAIT_CONNECT:
            raise ProtocolError(
                "Not connected", f"{command} arrived before CONNECT; send CONNECT first."
            )
        transaction = frame.get("transaction")
        if command == "SEND":
            self._check_send(frame)
            if transaction is not None and frame.get("destination") in self.untransacted:
                transaction = None
        if transaction is not None and command in ("SEND", "ACK", "NACK"):
            self._hold(transaction, frame)
        elif command == "SEND":
            events.append(MessageSent(frame, frame.get("receipt")))
        elif command == "SUBSCRIBE":
            self._on_subscribe(frame, events)
        elif command == "UNSUBSCRIBE":
            self._on_unsubscribe(frame, events)
        elif command in ("ACK", "NACK"):
            self._on_ack(frame, events)
        elif command == "BEGIN":
            self._on_begin(frame)
        elif command == "COMMIT":
            first = len(events)
            for held in self._take_transaction(frame):
                self._handle(held, events, now)
            # A released SEND the application refuses is reported against the COMMIT.
            commit_receipt = frame.get("receipt")
            for i in range(first, len(events)):
                event = events[i]
                if isinstance(event, MessageSent):
                    events[i] = MessageSent(event.frame, commit_receipt)
        elif command == "ABORT":
            self._take_transaction(frame)
        elif command == "DISCONNECT":
            receipt = frame.get("receipt")
            if receipt is not None:
                events.append(ReceiptDue(receipt))
            events.append(DisconnectRequested())
            self._transactions.clear()
            self._held_bytes = 0
            self.state = State.CLOSING
            return
        receipt = frame.get("receipt")
        if receipt is not None:
            events.append(ReceiptDue(receipt))

    def _on_connect(self, frame: Frame, events: list[Event], now: float) -> None:
        if self.state is not State.AWAIT_CONNECT:
            raise ProtocolError("Already connected", "This session already sent CONNECT.")
        version = negotiate_version(frame.get("accept-version"))
        # STOMP 1.0 has no heart-beating: a heart-beat header there is just a header.
        heartbeat = frame.get("heart-beat") if version != V10 else None
        self._client_heartbeat = _parse_heartbeat(heartbeat)
        self.version = version
        self._parser.version = version
        self.login = frame.get("login")
        connected = Connected(version, self.login, frame.get("host"), frame.headers)
        if self.defer_connect:
            self.state = State.CONNECTING
            self._pending_connect = connected
            events.append(connected)
            return
        self._open(connected, now)
        events.append(connected)

    def _open(self, connected: Connected, now: float) -> None:
        version = connected.version
        client_send, client_receive = self._client_heartbeat
        server_send = self.settings.heartbeat_send_ms
        server_receive = self.settings.heartbeat_receive_ms
        if version != V10:
            if server_send and client_receive:
                interval = self.send_interval = max(server_send, client_receive) / 1000
                lead = min(self.settings.heartbeat_send_lead, interval / 2)
                self._send_after = interval - lead
            if server_receive and client_send:
                self.receive_interval = max(server_receive, client_send) / 1000
        headers: list[tuple[str, str]] = [
            ("version", version),
            ("session", self.session_id),
            ("server", self.server_name),
        ]
        if version != V10:
            headers.append(("heart-beat", f"{server_send},{server_receive}"))
        headers.append(("x-server-id", self.server_id))
        self.state = State.OPEN
        self._last_received = now
        self._queue(encode_frame("CONNECTED", tuple(headers), b"", version), now)

    @staticmethod
    def _check_send(frame: Frame) -> None:
        if not frame.get("destination"):
            raise ProtocolError("Missing destination", "SEND needs a destination header.")
        for reserved in ("message-id", "subscription"):
            if reserved in frame:
                raise ProtocolError(
                    f"SEND may not carry {reserved}",
                    f"The {reserved} header is set by the server on MESSAGE frames.",
                )

    def _on_subscribe(self, frame: Frame, events: list[Event]) -> None:
        destination = frame.get("destination")
        if not destination:
            raise ProtocolError("Missing destination", "SUBSCRIBE needs a destination header.")
        sub_id = frame.get("id")
        if sub_id is None:
            if self.version != V10:
                raise ProtocolError("Missing id", "SUBSCRIBE needs an id header.")
            sub_id = destination
        if sub_id in self.subscriptions:
            raise ProtocolError(
                "Duplicate subscription id", f"A subscription with id {sub_id!r} already exists."
            )
        ack = frame.get("ack") or "auto"
        if ack not in ACK_MODES:
            raise ProtocolError(
                "Invalid ack mode", f"ack must be auto, client or client-individual, not {ack!r}."
            )
        if len(self.subscriptions) >= self.settings.max_subscriptions:
            raise PolicyError(
                "Too many subscriptions",
                f"A session may hold at most {self.settings.max_subscriptions} subscriptions.",
            )
        subscription = Subscription(sub_id, destination, ack, frame.headers)
        self.subscriptions[sub_id] = subscription
        if ack != "auto":
            self._pending[sub_id] = _Pending(ack)
        events.append(Subscribed(subscription))

    def _on_unsubscribe(self, frame: Frame, events: list[Event]) -> None:
        sub_id = frame.get("id")
        if sub_id is None and self.version == V10:
            # STOMP 1.0 may unsubscribe by destination.
            destination = frame.get("destination")
            sub_id = next(
                (s.id for s in self.subscriptions.values() if s.destination == destination),
                destination,
            )
        if sub_id is None:
            raise ProtocolError("Missing id", "UNSUBSCRIBE needs an id header.")
        subscription = self.subscriptions.pop(sub_id, None)
        if subscription is None:
            raise ProtocolError("Unknown subscription", f"No subscription has id {sub_id!r}.")
        pending = self._pending.pop(sub_id, None)
        if pending is not None:
            for key in pending.keys:
                self._ack_owner.pop(key, None)
        events.append(Unsubscribed(subscription))

    def _on_ack(self, frame: Frame, events: list[Event]) -> None:
        """ACK/NACK per STOMP 1.2 "ACK": ``client`` mode is cumulative.

        1.2 names the message by the MESSAGE's ``ack`` header (``id``); 1.1 by
        ``message-id`` plus ``subscription``; 1.0 by ``message-id`` alone.
        Topics have no redelivery, so NACK only settles the message.
        """
        if self.version == V12:
            key = frame.get("id")
            if key is None:
                raise ProtocolError(f"Missing id on {frame.command}", "STOMP 1.2 acks by id.")
            sub_id = self._ack_owner.get(key)
        else:
            key = frame.get("message-id")
            if key is None:
                raise ProtocolError(
                    f"Missing message-id on {frame.command}",
                    f"STOMP {self.version} acks by message-id.",
                )
            sub_id = frame.get("subscription")
            if sub_id is None and self.version == V11:
                raise ProtocolError(
                    f"Missing subscription on {frame.command}",
                    "STOMP 1.1 acks by message-id and subscription.",
                )
            if sub_id is None:
                sub_id = next((s for s, p in self._pending.items() if key in p.keys), None)
        pending = self._pending.get(sub_id) if sub_id is not None else None
        if pending is None or key not in pending.keys:
            raise ProtocolError(
                "Unknown message",
                f"{frame.command} names a message that is not awaiting acknowledgement.",
            )
        settled: list[str] = []
        if pending.mode == "client":
            while pending.keys:
                done, _ = pending.keys.popitem(last=False)
                self._ack_owner.pop(done, None)
                settled.append(done)
                if done == key:
                    break
        else:
            del pending.keys[key]
            self._ack_owner.pop(key, None)
            settled.append(key)
        assert sub_id is not None
        subscription = self.subscriptions.get(sub_id)
        if subscription is not None and subscription.destination.startswith(self.acked_prefixes):
            events.append(Acknowledged(sub_id, tuple(settled), frame.command == "NACK"))

    def _on_begin(self, frame: Frame) -> None:
        name = frame.get("transaction")
        if not name:
            raise ProtocolError("Missing transaction", "BEGIN needs a transaction header.")
        if name in self._transactions:
            raise ProtocolError("Transaction already open", f"Transaction {name!r} is open.")
        if len(self._transactions) >= self.settings.max_transactions:
            raise PolicyError(
                "Too many transactions",
                f"At most {self.settings.max_transactions} transactions may be open at once.",
            )
        self._transactions[name] = []

    def _hold(self, name: str, frame: Frame) -> None:
        held = self._transactions.get(name)
        if held is None:
            raise ProtocolError("Unknown transaction", f"No transaction {name!r} is open.")
        limit_bytes = self.settings.max_transaction_bytes
        if len(held) >= self.settings.max_transaction_frames:
            raise PolicyError(
                "Transaction too large",
                f"A transaction may hold at most {self.settings.max_transaction_frames} frames.",
            )
        if self._held_bytes + len(frame.body) > limit_bytes:
            raise PolicyError(
                "Transaction too large",
                f"Open transactions may hold at most {limit_bytes} bytes of bodies.",
            )
        headers = tuple((k, v) for k, v in frame.headers if k not in ("transaction", "receipt"))
        held.append(Frame(frame.command, headers, frame.body))
        self._held_bytes += len(frame.body)

    def _take_transaction(self, frame: Frame) -> list[Frame]:
        name = frame.get("transaction")
        if not name:
            raise ProtocolError(
                "Missing transaction", f"{frame.command} needs a transaction header."
            )
        held = self._transactions.pop(name, None)
        if held is None:
            raise ProtocolError("Unknown transaction", f"No transaction {name!r} is open.")
        self._held_bytes -= sum(len(f.body) for f in held)
        return held

    # -- output -----------------------------------------------------------

    def _queue(self, data: bytes, now: float) -> None:
        self._outbox.append(data)
        self._last_sent = now

    def data_to_send(self) -> list[bytes]:
        """Frames queued since the last call, one item per WebSocket message."""
        out, self._outbox = self._outbox, []
        return out

    def send_receipt(self, receipt_id: str, now: float, headers: Headers = ()) -> None:
        """RECEIPT, with any extra headers the relay adds (e.g. ``x-offset``)."""
        if self.state in (State.OPEN, State.CLOSING):
            self._queue(
                encode_frame("RECEIPT", (("receipt-id", receipt_id), *headers), b"", self.version),
                now,
            )

    def deliver(self, message: PreparedMessage, subscription_id: str, now: float) -> bool:
        """Queue ``message`` for one subscription; False if it no longer exists."""
        subscription = self.subscriptions.get(subscription_id)
        if (
            self.state is not State.OPEN
            or subscription is None
            or subscription.destination != message.destination
        ):
            return False
        pending = self._pending.get(subscription_id)
        ack: str | None = None
        if pending is not None:
            if len(pending.keys) >= self.settings.max_pending_acks:
                self.fail(
                    PolicyError(
                        "Too many unacknowledged messages",
                        f"A subscription may have at most {self.settings.max_pending_acks} "
                        "messages awaiting ACK.",
                    )
                )
                return False
            if self.version == V12:
                self._ack_counter += 1
                key = ack = f"{self.session_id}-{self._ack_counter}"
                self._ack_owner[key] = subscription_id
            else:
                key = message.message_id
            pending.keys[key] = None
        # _queue inlined: this runs once per subscriber of every message
        self._outbox.append(message.render(self.version, subscription_id, ack))
        self._last_sent = now
        return True

    def deliver_acked(
        self, message: PreparedMessage, subscription_id: str, now: float
    ) -> str | None:
        """:meth:`deliver`, returning the key the client's ACK or NACK will name
        (the ``ack`` header on 1.2, ``message-id`` before; "" in auto mode), or None
        when nothing was delivered."""
        if not self.deliver(message, subscription_id, now):
            return None
        if subscription_id not in self._pending:
            return ""
        if self.version == V12:
            return f"{self.session_id}-{self._ack_counter}"
        return message.message_id

    def unacked(self, subscription_id: str) -> int:
        """MESSAGEs of a client-ack subscription awaiting ACK or NACK (0 in auto mode)."""
        pending = self._pending.get(subscription_id)
        return len(pending.keys) if pending is not None else 0

    def fail(self, error: PeerError, receipt_id: str | None = None) -> None:
        """Report an application-level refusal: ERROR frame, then close."""
        if self.state in (State.AWAIT_CONNECT, State.CONNECTING, State.OPEN, State.CLOSING):
            self._fail(error, receipt_id)

    def _fail(self, error: PeerError, receipt_id: str | None = None) -> None:
        receipt_id = receipt_id or error.receipt_id
        headers: list[tuple[str, str]] = [("message", error.message), *error.headers]
        if receipt_id is not None:
            headers.append(("receipt-id", receipt_id))
        headers.append(("content-type", "text/plain;charset=utf-8"))
        body = error.detail.encode("utf-8")
        # A client refused at CONNECT never saw CONNECTED, so it does not know the
        # version yet: like CONNECTED itself, that ERROR is not escaped (stomp.js
        # would show "invalid token\c expired").
        opened = self.state not in (State.AWAIT_CONNECT, State.CONNECTING)
        version = self.version if opened else V10
        self._outbox.append(encode_frame("ERROR", tuple(headers), body, version))
        self.error = error
        self.close_reason = error.message
        self.state = State.CLOSED

    def close(self, reason: str) -> None:
        """Close without an error (DISCONNECT handled, server shutting down)."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_reason = reason

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def deliver_reply(self, message: PreparedMessage, now: float) -> bool:
        """Queue a reply to one of the session's temporary queues: no SUBSCRIBE
        made it, so its ``subscription`` is the queue's name as ``destination``
        is (as RabbitMQ's ``/temp-queue/``), and it needs no ACK. False when the
        session is not open."""
        if self.state is not State.OPEN:
            return False
        self._outbox.append(message.render(self.version, message.destination))
        self._last_sent = now
        return True

    # -- time -------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None.

        The heart-beat is due ``heartbeat_send_lead`` before the negotiated
        interval is up: STOMP 1.2 "Heart-beating" bounds the gap the client
        sees, and whoever calls :meth:`tick` does so somewhat after this time.
        """
        if self.state in (State.AWAIT_CONNECT, State.CONNECTING):
            return self._connect_deadline
        if self.state is not State.OPEN:
            return None
        deadlines = []
        if self.expires_at is not None:
            deadlines.append(self.expires_at)
        if self.send_interval:
            deadlines.append(self._last_sent + self._send_after)
        if self.receive_interval and not self._receive_paused:
            deadlines.append(
                self._last_received + self.receive_interval * self.settings.heartbeat_grace
            )
        return min(deadlines) if deadlines else None

    def pause_receive(self, paused: bool, now: float) -> None:
        """The transport stopped (or resumed) reading the peer's socket for flow
        control: the peer's heart-beats wait unread meanwhile, so its silence is
        not held against it; the clock starts again when reading resumes."""
        self._receive_paused = paused
        if not paused:
            self._last_received = now

    def tick(self, now: float) -> None:
        """Send a heart-beat if due; close a peer that went silent or never connected."""
        if self.state in (State.AWAIT_CONNECT, State.CONNECTING):
            if now >= self._connect_deadline:
                self._fail(
                    PolicyError(
                        "No CONNECT received",
                        f"No CONNECT frame arrived within {self.settings.connect_timeout:g} s.",
                    )
                )
            return
        if self.state is not State.OPEN:
            return
        if self.expires_at is not None and now >= self.expires_at:
            self._fail(
                PolicyError(
                    "credential expired",
                    "The session's token expired; refresh it in time with a SEND to "
                    "/app/auth/refresh, or connect again with a new one.",
                )
            )
            return
        grace = self.receive_interval * self.settings.heartbeat_grace
        if (
            self.receive_interval
            and not self._receive_paused
            and now - self._last_received >= grace
        ):
            self._fail(
                PolicyError(
                    "Heart-beat timeout",
                    f"Nothing arrived for {grace:g} s; the negotiated heart-beat is "
                    f"{self.receive_interval * 1000:g} ms.",
                )
            )
            return
        # the same sum as next_deadline(), so a tick at that deadline sends
        if self.send_interval and now >= self._last_sent + self._send_after:
            self._queue(b"\n", now)


__all__ = [
    "V10",
    "V11",
    "V12",
    "Acknowledged",
    "Connected",
    "DisconnectRequested",
    "Event",
    "MessageSent",
    "ReceiptDue",
    "ServerSession",
    "State",
    "Subscribed",
    "Subscription",
    "Unsubscribed",
    "negotiate_version",
]
