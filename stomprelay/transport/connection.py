"""One connection class per socket: HTTP/1.1, WebSocket or STOMP over TCP.

A :class:`Connection` is an ``asyncio.Protocol`` that owns its socket and
drives three sans-I/O state machines, all through their public APIs:

- h11 (``h11.Connection``) reads the first request head of every HTTP
  connection. A ``GET /ws`` is handed, as the raw bytes that came in, to
  websockets' ``ServerProtocol`` (its documented integration layer:
  ``receive_data``, ``events_received``, ``accept``, ``send_response``,
  ``data_to_send``); any other request stays with h11, which also handles
  keep-alive, pipelining and chunked bodies.
- ``ServerSession`` (``stomp/``) turns STOMP bytes into events and frames.

Before a WebSocket is accepted, or a STOMP/TCP session opened, the hub's
hygiene checks (``hygiene.py``) say who the client is (the address a trusted
proxy forwarded, else the socket's peer) and whether it may come in: its
address's handshake rate and open connections, and the handshake's Origin. A
refusal is a short HTTP 403 or 429 (over TCP, one STOMP ERROR), then close.

Writes never take a task: the router queues frames in the session and calls
:meth:`Connection.flush`, which only marks the connection; once per event-loop
turn :class:`Hub` writes every marked connection's frames, each as its own
WebSocket message, in one ``transport.write``. The transport's write buffer is
the send queue: past its high-water mark (``pause_writing``) frames wait here,
and past ``send_queue_frames`` / ``send_queue_bytes`` or ``send_timeout`` of
being paused the client is dropped as a slow consumer.

Reads are flow-controlled: a connection whose events are still being handled
stops reading its socket (TCP flow control) once ``inbox_frames`` messages
wait, and so does a publisher whose destination has a subscriber that cannot
keep up (until it catches up or is dropped). Nothing here holds a reference
back through the session: once closed, reference counting frees it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h11
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from stomprelay.errors import PolicyError
from stomprelay.stomp.frames import Binary
from stomprelay.stomp.session import ServerSession
from stomprelay.transport.hygiene import (
    ORIGIN_REFUSED,
    AddressLimits,
    OriginPolicy,
    Refusal,
    TrustedProxies,
    parse_address,
)

if TYPE_CHECKING:
    from stomprelay.relay import Relay
    from stomprelay.transport.http import HttpApp
    from stomprelay.transport.timers import Timers

log = logging.getLogger(__name__)
ws_log = logging.getLogger("websockets.server")

SUBPROTOCOLS = [Subprotocol("v12.stomp"), Subprotocol("v11.stomp"), Subprotocol("v10.stomp")]

#: WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008

#: Seconds a dropped slow consumer, or a closing WebSocket, gets before the socket is aborted.
SLOW_CONSUMER_GRACE = 1.0
CLOSE_TIMEOUT = 2.0
#: The transport's write buffer high-water mark: past it, frames wait in the connection.
WRITE_HIGH_WATER = 256 * 1024
#: Most STOMP messages read from one socket and handled in one step.
BATCH = 16

# What a connection is doing.
_HEAD = 0  # reading the first HTTP request head
_HTTP = 1  # plain HTTP, h11
_STOMP = 2  # WebSocket or TCP, a STOMP session
_CLOSING = 3  # closing handshake or grace before abort
_CLOSED = 4


def select_subprotocol(protocol: ServerProtocol, offered: Any) -> Subprotocol | None:
    """Prefer the highest STOMP version offered; serve clients offering none too."""
    for candidate in SUBPROTOCOLS:
        if candidate in offered:
            return candidate
    return None


class Hub:
    """What every connection of one listener shares: the relay, the timers,
    the HTTP routes, and the once-per-turn writer."""

    def __init__(self, relay: Relay, timers: Timers, http: HttpApp) -> None:
        self.relay = relay
        settings = self.settings = relay.settings
        self.metrics = relay.metrics
        self.timers = timers
        self.http = http
        #: Connection hygiene (hygiene.py): proxies believed, Origins let in, per-address limits.
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.origins = OriginPolicy(settings.allowed_origins, settings.allow_no_origin)
        self.limits = AddressLimits(
            settings.max_connections_per_ip,
            settings.handshake_rate_per_ip,
            settings.handshake_burst_per_ip,
        )
        self.connections: set[Connection] = set()
        self._dirty: list[Connection] = []
        self._scheduled = False
        self._loop = asyncio.get_event_loop()
        #: Called once a connection is gone (the server waits on it while stopping).
        self.on_gone: Callable[[], None] | None = None
        self._resumed = asyncio.Event()

    def wake_publishers(self) -> None:
        """A subscriber's socket took its backlog (or it went): held-back publishers look again."""
        resumed, self._resumed = self._resumed, asyncio.Event()
        resumed.set()

    async def resumed(self) -> None:
        await self._resumed.wait()

    def mark(self, connection: Connection) -> None:
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._write_all)

    def _write_all(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.write_now()

    def refused(self, refusal: Refusal, client: str, origin: str | None = None) -> None:
        """Count a turned-away connection; log the first of a run from one address
        (a flood is one line, and the metric), and every Origin refusal (a page the
        operator may have meant to allow names itself there)."""
        self.metrics.refused_connections.labels(refusal.reason).inc()
        if refusal is ORIGIN_REFUSED:
            log.info("handshake from %s refused: Origin %r is not allowed", client, origin)
        elif refusal.first:
            log.info("connections from %s refused: %s", client, refusal.text.strip())
        else:
            log.debug("connection from %s refused: %s", client, refusal.text.strip())


class Connection(asyncio.Protocol):
    """One socket. ``websocket=False``: STOMP over TCP from the first byte."""

    def __init__(self, hub: Hub, websocket: bool = True) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        #: Who the client is, for the registry and the API: the socket's peer
        #: (``ip:port``), or the address a trusted proxy forwarded (``ip``).
        self.remote = ""
        #: The client's address alone: what per-address limits count and the API checks.
        self.client = ""
        self._peer = ""
        #: The address this connection is counted under in the hub's limits.
        self._counted: str | None = None
        self._mode = _HEAD if websocket else _STOMP
        self._h11: h11.Connection | None = None
        self._head = bytearray()
        self._ws: ServerProtocol | None = None
        self._fragments: list[bytes] | None = None
        self._session: ServerSession | None = None
        self._token = 0
        self._deadline: float | None = None
        # output
        self._dirty = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._write_paused_at: float | None = None
        self.close_code = CLOSE_NORMAL
        # input
        self._inbox: deque[bytes] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._read_paused = False
        self._http_task: asyncio.Task[None] | None = None
        self._body = bytearray()
        self._request: h11.Request | None = None
        self._attached = False
        #: Next WebSocket ping (only with ``ws_ping_interval``; STOMP heart-beats suffice).
        self._ping_at: float | None = None

    @property
    def session(self) -> ServerSession:
        """The STOMP session (the router's and relay's view: a sink)."""
        session = self._session
        assert session is not None, "no STOMP session on this connection"
        return session

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        hub = self.hub
        settings = hub.settings
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and settings.tcp_keepalive:
            with contextlib.suppress(OSError):
                # dead peers that negotiated no heart-beat are still found
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if hasattr(socket, "TCP_KEEPIDLE"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            address = parse_address(str(peer[0]))
            self._peer = self.client = str(address) if address is not None else str(peer[0])
            shown = f"[{self._peer}]" if ":" in self._peer else self._peer
            self.remote = f"{shown}:{peer[1]}"
        hub.connections.add(self)
        if self._mode == _HEAD:
            self._h11 = h11.Connection(
                h11.SERVER, max_incomplete_event_size=settings.max_request_head
            )
            self._deadline = time.monotonic() + settings.handshake_timeout
        else:
            # STOMP over TCP: no proxy headers, the peer is the client
            refusal = hub.limits.admit(self.client, time.monotonic())
            if refusal is None:
                self._open_session()
            else:
                self._refuse_stomp(refusal)
        self._token = hub.timers.add(self)

    def data_received(self, data: bytes) -> None:
        mode = self._mode
        if mode == _STOMP:
            if self._ws is not None:
                self._ws_data(data)
            else:
                self._inbox.append(data)
                self._take_input()
        elif mode in (_HEAD, _HTTP):
            if mode == _HEAD:
                self._head += data  # for ServerProtocol, should this be a WebSocket
            assert self._h11 is not None
            self._h11.receive_data(data)
            self._http_events()
        elif mode == _CLOSING and self._ws is not None:
            self._ws.receive_data(data)
            self._ws_output()

    def eof_received(self) -> bool | None:
        if self._ws is not None and self._mode in (_STOMP, _CLOSING):
            self._ws.receive_eof()
            self._ws_output()
        elif self._h11 is not None and self._mode in (_HEAD, _HTTP):
            self._h11.receive_data(b"")
            self._http_events()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._mode = _CLOSED
        hub = self.hub
        if self._write_paused_at is not None:
            self._write_paused_at = None
            hub.wake_publishers()
        hub.connections.discard(self)
        hub.timers.remove(self._token)
        if self._counted is not None:
            hub.limits.release(self._counted, time.monotonic())
            self._counted = None
        self._held = []
        self._inbox.clear()
        self._ws = None
        self._h11 = None
        self.transport = None
        session = self._session
        if session is not None:
            if session.error is not None:
                log.info("session %s closed: %s", session.session_id, session.close_reason)
            session.close("connection closed")
            if self._attached:
                task = asyncio.get_running_loop().create_task(self._detach())
                hub.relay.background(task)
                return
        if hub.on_gone is not None:
            hub.on_gone()

    async def _detach(self) -> None:
        try:
            await self.hub.relay.detach(self)
        finally:
            if self.hub.on_gone is not None:
                self.hub.on_gone()

    def pause_writing(self) -> None:
        self._write_paused_at = time.monotonic()
        self.hub.timers.update(self._token)

    def resume_writing(self) -> None:
        self._write_paused_at = None
        self.hub.wake_publishers()
        if self._held:
            held, self._held = self._held, []
            self._held_bytes = 0
            if self.transport is not None:
                self.transport.write(b"".join(held))

    @property
    def write_paused(self) -> bool:
        return self._write_paused_at is not None

    # -- timers ---------------------------------------------------------------

    def deadline(self) -> float | None:
        mode = self._mode
        if mode == _STOMP:
            session = self._session
            due = session.next_deadline() if session is not None else None
            paused = self._write_paused_at
            if paused is not None:
                limit = paused + self.hub.settings.send_timeout
                due = limit if due is None else min(due, limit)
            ping = self._ping_at
            if ping is not None:
                due = ping if due is None else min(due, ping)
            return due
        if mode == _CLOSED:
            return None
        return self._deadline

    def on_deadline(self, now: float) -> None:
        mode = self._mode
        if mode == _STOMP:
            paused = self._write_paused_at
            if paused is not None and now - paused >= self.hub.settings.send_timeout:
                log.info(
                    "session %s dropped: its socket took nothing for %g s",
                    self._session.session_id if self._session else "-",
                    self.hub.settings.send_timeout,
                )
                self._drop_slow_consumer()
                return
            ping = self._ping_at
            if ping is not None and now >= ping and self._ws is not None:
                if self._ws.state is WsState.OPEN:
                    self._ws.send_ping(b"")
                    self._ws_output()
                self._ping_at = now + self.hub.settings.ws_ping_interval
            if self._session is not None:
                self._session.tick(now)
                self.flush()
        elif self._deadline is not None and now >= self._deadline:
            self.abort()

    # -- output ---------------------------------------------------------------

    def flush(self) -> None:
        """The session has frames queued (or closed): write them this turn."""
        if not self._dirty:
            self._dirty = True
            self.hub.mark(self)

    def write_now(self) -> None:
        """Move the session's frames to the socket: one write for all of them."""
        self._dirty = False
        session = self._session
        transport = self.transport
        if session is None or transport is None or self._mode not in (_STOMP, _CLOSING):
            return
        out = session.data_to_send()
        if out:
            ws = self._ws
            if ws is not None and ws.state is WsState.OPEN:
                for data in out:
                    if type(data) is Binary:
                        ws.send_binary(data)
                    else:
                        ws.send_text(data)
                chunks = ws.data_to_send()
            elif ws is None:
                chunks = out
            else:
                chunks = []
            if chunks:
                self._write(chunks)
        if session.closed and self._mode == _STOMP:
            self._end_session()

    def _write(self, chunks: list[bytes]) -> None:
        transport = self.transport
        if transport is None:
            return
        if self._write_paused_at is None:
            # past the high-water mark the transport calls pause_writing at once,
            # and what follows is held (and bounded) below
            transport.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])
            return
        self._held.extend(chunks)
        self._held_bytes += sum(map(len, chunks))
        settings = self.hub.settings
        if (
            len(self._held) > settings.send_queue_frames
            or self._held_bytes + transport.get_write_buffer_size() > settings.send_queue_bytes
        ):
            self._drop_slow_consumer()

    def _drop_slow_consumer(self) -> None:
        """The client does not read: drop its backlog, send ERROR if it can still
        get through, and abort the socket if it has not closed shortly after."""
        session = self._session
        if session is None or self._mode != _STOMP or session.closed:
            return
        settings = self.hub.settings
        self.hub.metrics.slow_consumers.inc()
        session.data_to_send()
        session.fail(
            PolicyError(
                "Slow consumer",
                f"More than {settings.send_queue_frames} frames or "
                f"{settings.send_queue_bytes} bytes were waiting for this client, "
                f"or its socket took nothing for {settings.send_timeout:g} s.",
            )
        )
        self._held = []
        self._held_bytes = 0
        self._write_paused_at = None  # the ERROR goes straight to the transport
        self.hub.wake_publishers()
        self.close_code = CLOSE_POLICY
        self.write_now()
        self._deadline = time.monotonic() + SLOW_CONSUMER_GRACE
        self.hub.timers.update(self._token)

    def _end_session(self) -> None:
        """The session closed: close the WebSocket (or the TCP stream) after its frames."""
        self._mode = _CLOSING
        session = self._session
        reason = (session.close_reason or "") if session is not None else ""
        ws = self._ws
        transport = self.transport
        if self._deadline is None or self._deadline < time.monotonic():
            self._deadline = time.monotonic() + CLOSE_TIMEOUT
        if ws is not None:
            if ws.state is WsState.OPEN:
                ws.send_close(
                    self.close_code, reason.encode("utf-8")[:120].decode("utf-8", "ignore")
                )
            self._ws_output()
        elif transport is not None:
            transport.close()
        self.hub.timers.update(self._token)

    def _closing(self) -> None:
        """Closing: the socket is aborted if the peer has not gone in CLOSE_TIMEOUT."""
        self._mode = _CLOSING
        self._deadline = time.monotonic() + CLOSE_TIMEOUT
        self.hub.timers.update(self._token)

    def shutdown(self) -> None:
        """Server stopping: close this client with 1001 after what is queued."""
        if self._mode == _STOMP and self._session is not None:
            self.close_code = CLOSE_GOING_AWAY
            self._session.close("server shutting down")
            self.write_now()
        elif self._mode in (_HEAD, _HTTP) and self._http_task is None and self.transport:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- STOMP input ----------------------------------------------------------

    def _refuse_stomp(self, refusal: Refusal) -> None:
        """A STOMP/TCP connection over a per-address limit: one ERROR, then close."""
        self.hub.refused(refusal, self.client)
        if self.transport is not None:
            message = refusal.text.strip().encode("ascii")
            self.transport.write(b"ERROR\nmessage:" + message + b"\n\n\x00")
            self.transport.close()
        self._closing()

    def _client_of(self, forwarded: list[str]) -> str:
        """The client's address given a request's ``X-Forwarded-For`` values (believed
        only from a trusted proxy)."""
        return self.hub.proxies.client(self._peer, forwarded) if self._peer else self.client

    def _open_session(self) -> None:
        relay = self.hub.relay
        self.hub.limits.acquire(self.client)
        self._counted = self.client
        self._session = relay.new_session()
        self._mode = _STOMP
        self._deadline = None
        relay.attach(self)
        self._attached = True

    def _take_input(self) -> None:
        """New STOMP bytes: handle them now, or stop reading while earlier ones are handled."""
        if self._worker is None:
            self._process()
        if (
            len(self._inbox) >= self.hub.settings.inbox_frames
            and not self._read_paused
            and self.transport is not None
        ):
            self._pause_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
            if self._session is not None:
                self._session.pause_receive(True, time.monotonic())

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and self._mode == _STOMP:
            self._read_paused = False
            if self._session is not None:
                self._session.pause_receive(False, time.monotonic())
            self.transport.resume_reading()

    def _process(self) -> None:
        session = self._session
        if session is None:
            return
        events = []
        now = time.monotonic()
        inbox = self._inbox
        taken = 0
        while inbox and taken < BATCH and not session.closed:
            events.extend(session.receive_data(inbox.popleft(), now))
            taken += 1
        if session.closed:
            inbox.clear()
        if events:
            self.hub.metrics.frames_in.inc(len(events))
            self._worker = asyncio.get_running_loop().create_task(self._handle(events))
        else:
            self.flush()
            if inbox:
                self._worker = asyncio.get_running_loop().create_task(self._handle([]))
            elif self._read_paused:
                self._resume_reading()

    async def _handle(self, events: list[Any]) -> None:
        hub = self.hub
        relay = hub.relay
        try:
            if events:
                await relay.handle(self, events)
                # a CONNECT (heart-beats, the token's exp) or a refresh moved the deadline
                hub.timers.update(self._token)
                sent = relay.sent_to(events)
                if sent:
                    await self._wait_for_subscribers(sent)
            else:
                await asyncio.sleep(0)  # let other connections run between batches
        except Exception:
            log.exception(
                "session %s: handling its frames failed",
                self._session.session_id if self._session else "-",
            )
            if self._session is not None:
                self._session.close("internal error")
            self.flush()
        self._worker = None
        if self._mode == _STOMP:
            self._process()

    async def _wait_for_subscribers(self, destinations: set[str]) -> None:
        """Backpressure: while a local subscriber of what this publisher sent to
        cannot take more, read nothing more from this publisher (it is dropped
        as a slow consumer after ``send_timeout``, and then this one goes on)."""
        router = self.hub.relay.router
        if not router.congested(destinations):
            return
        self._pause_reading()
        self.hub.metrics.publisher_pauses.inc()
        while self._mode == _STOMP and router.congested(destinations):
            await self.hub.resumed()

    # -- WebSocket ------------------------------------------------------------

    def _start_websocket(self) -> None:
        settings = self.hub.settings
        ws = ServerProtocol(
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=select_subprotocol,
            extensions=[],  # permessage-deflate off: docs/protocol.md says why
            max_size=settings.max_message_size,
            logger=ws_log,
        )
        self._ws = ws
        head, self._head = bytes(self._head), bytearray()
        self._h11 = None
        ws.receive_data(head)
        events = ws.events_received()
        if not events or not isinstance(events[0], Request):
            self._ws_output()
            self._closing()
            return
        request = events[0]
        refusal = self._check_handshake(request)
        if refusal is not None:
            response = ws.reject(refusal.status, refusal.text)
            if refusal.retry_after is not None:
                response.headers["Retry-After"] = str(refusal.retry_after)
            ws.send_response(response)
            self._ws_output()
            self._closing()
            return
        response = ws.accept(request)
        ws.send_response(response)
        self._ws_output()
        if ws.state is not WsState.OPEN:
            self._closing()
            return
        self._open_session()
        interval = self.hub.settings.ws_ping_interval
        if interval > 0:
            self._ping_at = time.monotonic() + interval
        self.hub.timers.update(self._token)
        # bytes after the handshake (a client that did not wait for the 101)
        self._ws_frames()

    def _check_handshake(self, request: Request) -> Refusal | None:
        """Who the client is (behind a trusted proxy, the address it forwarded), and
        whether it may open a WebSocket: the per-address rate and cap, then its Origin."""
        hub = self.hub
        headers = request.headers
        client = self._client_of(headers.get_all("X-Forwarded-For"))
        if client != self.client:
            self.client = self.remote = client
        refusal = hub.limits.admit(client, time.monotonic())
        origins = headers.get_all("Origin")
        if refusal is None:
            hosts = headers.get_all("Host")
            if self._peer and hub.proxies.trusts(self._peer):
                # the Host a proxy was asked for (the one it talks to us with may differ)
                forwarded = ",".join(headers.get_all("X-Forwarded-Host")).split(",")[-1]
                if forwarded.strip():
                    hosts = [*hosts, forwarded.strip()]
            if not hub.origins.allows(origins, hosts):
                refusal = ORIGIN_REFUSED
        if refusal is not None:
            hub.refused(refusal, client, ", ".join(origins)[:200])
        return refusal

    def _ws_data(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data)
        self._ws_frames()

    def _ws_frames(self) -> None:
        ws = self._ws
        if ws is None:
            return
        got = False
        for frame in ws.events_received():
            if not isinstance(frame, WsFrame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._inbox.append(bytes(frame.data))
                    got = True
                else:
                    self._fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    self._inbox.append(b"".join(self._fragments))
                    self._fragments = None
                    got = True
        if got:
            self._take_input()
        exc = ws.parser_exc
        if (
            isinstance(exc, PayloadTooBig)
            and self._session is not None
            and not self._session.closed
        ):
            self._too_big()
            return
        if ws.state is not WsState.OPEN and self._mode == _STOMP:
            # the client closed (or broke) the WebSocket: the session ends here
            if self._session is not None:
                self._session.close("connection closed")
            self._closing()
        self._ws_output()

    def _too_big(self) -> None:
        """A WebSocket message over ``max_message_size``: a STOMP ERROR naming the
        limit goes out just before websockets' close frame 1009 (STOMP 1.2 "Size
        Limits": the server sends an ERROR, then closes)."""
        session = self._session
        ws = self._ws
        assert session is not None
        assert ws is not None
        limit = self.hub.settings.max_message_size
        log.info("session %s: a WebSocket message over %d bytes", session.session_id, limit)
        self.hub.metrics.errors.labels("Message too large").inc()
        session.fail(
            PolicyError(
                "Message too large",
                f"WebSocket messages are limited to {limit} bytes "
                f"(STOMP frames to {self.hub.settings.limits.max_frame_size}).",
            )
        )
        error = b"".join(session.data_to_send())
        encoded = WsFrame(Opcode.TEXT, error).serialize(mask=False, extensions=[])
        self._closing()
        if self.transport is not None:
            self.transport.write(encoded)
        self._ws_output()

    def _ws_output(self) -> None:
        ws = self._ws
        transport = self.transport
        if ws is None or transport is None:
            return
        for data in ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        if ws.close_expected() and self._mode != _CLOSING:
            self._closing()
        if ws.state is WsState.CLOSED:
            transport.close()

    # -- HTTP -----------------------------------------------------------------

    def _http_events(self) -> None:
        conn = self._h11
        while conn is not None and self._http_task is None and self._mode in (_HEAD, _HTTP):
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._http_refuse(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if self._mode == _HEAD and self._is_websocket(event):
                    self._start_websocket()
                    return
                if sum(len(n) + len(v) + 4 for n, v in event.headers) > (
                    self.hub.settings.max_request_head
                ):
                    self._http_refuse(431, "request head too large")
                    return
                self._mode = _HTTP
                self._head = bytearray()
                self._request = event
                self._body = bytearray()
                self._deadline = time.monotonic() + self.hub.settings.handshake_timeout
                length = _content_length(event)
                if length is not None and length > self.hub.settings.max_request_body:
                    self._http_refuse(413, "request body too large")
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.hub.settings.max_request_body:
                    self._http_refuse(413, "request body too large")
                    return
            elif isinstance(event, h11.EndOfMessage):
                request = self._request
                assert request is not None
                self._http_task = asyncio.get_running_loop().create_task(
                    self._http_answer(request, bytes(self._body))
                )
                self._body = bytearray()
            elif isinstance(event, h11.ConnectionClosed):
                if self.transport is not None:
                    self.transport.close()
                return

    @staticmethod
    def _is_websocket(request: h11.Request) -> bool:
        return request.method == b"GET" and request.target.split(b"?", 1)[0] == b"/ws"

    async def _http_answer(self, request: h11.Request, body: bytes) -> None:
        forwarded = [v.decode("latin-1") for n, v in request.headers if n == b"x-forwarded-for"]
        try:
            status, headers, payload = await self.hub.http.answer(
                request, body, self._client_of(forwarded)
            )
        except Exception:
            # the path only: a query string may carry a credential
            log.exception("HTTP %s failed", request.target.split(b"?", 1)[0][:80])
            status, headers, payload = (
                500,
                [(b"content-type", b"text/plain; charset=utf-8")],
                b"internal error\n",
            )
        self._http_task = None
        self._http_send(status, headers, payload, request.method == b"HEAD")
        self._http_events()

    def _http_send(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        payload: bytes,
        head_only: bool = False,
        close: bool = False,
    ) -> None:
        conn = self._h11
        transport = self.transport
        if conn is None or transport is None:
            return
        headers = [*headers, (b"content-length", str(len(payload)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        try:
            reason = HTTPStatus(status).phrase.encode("ascii")
            out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
            if payload and not head_only:
                out = (out or b"") + (conn.send(h11.Data(data=payload)) or b"")
            out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            transport.close()
            return
        transport.write(out)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE or close:
            transport.close()
            self._mode = _CLOSING
            return
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._mode = _HTTP
            self._deadline = time.monotonic() + self.hub.settings.handshake_timeout
            self.hub.timers.update(self._token)
        elif conn.their_state is not h11.DONE:
            # answered before the body was read (a refusal): stop here
            transport.close()
            self._mode = _CLOSING

    def _http_refuse(self, status: int, reason: str) -> None:
        body = json.dumps({"error": reason[:200]})
        conn = self._h11
        if conn is not None and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._http_send(
                status, [(b"content-type", b"application/json")], body.encode(), close=True
            )
        elif self.transport is not None:
            self.transport.close()
        self._closing()


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 checked it is digits and that all copies agree
    return None
