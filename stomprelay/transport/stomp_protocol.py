"""One STOMP connection: a socket driving a sans-I/O ``ServerSession``.

A :class:`StompProtocol` is an ``asyncio.Protocol``. Over TCP (the STOMP
listener) asyncio makes it for the socket and STOMP starts at the first byte;
on ``/ws`` the HTTP protocol hands it the socket after the first request head
(:meth:`StompProtocol.upgrade`, as uvicorn hands an upgraded socket to its
WebSocket protocol), and it is given a :class:`WebSocketLayer` that carries
each STOMP frame as one WebSocket message. Everything else is the same both
ways: the per-address limits (and, for a WebSocket, the Origin) before the
session opens, heart-beats and timeouts from the relay-wide timers, and:

Writes never take a task: the router queues frames in the session and calls
:meth:`StompProtocol.flush`, which only marks the connection; once per
event-loop turn the hub writes every marked connection's frames (over a
WebSocket each its own message) in one ``transport.write``. The transport's
write buffer is the send queue: past its high-water mark frames wait in a
:class:`SendQueue`, and past its limits or ``send_timeout`` the client is
dropped as a slow consumer.

Reads are flow-controlled: a connection whose events are still being handled
stops reading its socket (TCP flow control) once ``inbox_frames`` messages
wait, and so does a publisher whose destination has a subscriber that cannot
keep up (until it catches up or is dropped). Nothing here holds a reference
back through the session: once closed, reference counting frees it all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from stomprelay.errors import PolicyError
from stomprelay.stomp.session import ServerSession
from stomprelay.transport.hub import CLOSE_TIMEOUT, Hub, SocketProtocol
from stomprelay.transport.hygiene import Refusal
from stomprelay.transport.outbound import SendQueue, slow_consumer_error
from stomprelay.transport.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    WebSocketLayer,
    check_handshake,
)

log = logging.getLogger(__name__)

#: Seconds a dropped slow consumer gets before the socket is aborted.
SLOW_CONSUMER_GRACE = 1.0
#: Most STOMP messages read from one socket and handled in one step.
BATCH = 16
#: Bytes of a socket's input parsed at a time: a burst read in one go is parsed
#: step by step as it is handled, not all at once (other sockets are read between).
SLICE = 4096
#: Most bytes parsed for one step (the messages of one step can be large).
STEP_BYTES = 64 * 1024
#: Unparsed input bytes past which the socket is read no further.
RAW_LIMIT = 64 * 1024

# What a STOMP connection is doing.
_OPENING = 0  # a WebSocket handshake, or a TCP client being admitted
_OPEN = 1  # a STOMP session
_CLOSING = 2  # closing handshake or grace before abort
_CLOSED = 3


class StompProtocol(SocketProtocol):
    """One STOMP client's socket: over TCP from the first byte, or over a
    WebSocket handed over by the HTTP protocol (:meth:`upgrade`). It is the
    application's :class:`~stomprelay.router.Sink` for the session."""

    __slots__ = (
        "_attached",
        "_counted",
        "_dirty",
        "_inbox",
        "_mode",
        "_out",
        "_ping_at",
        "_raw",
        "_read_paused",
        "_session",
        "_worker",
        "_written",
        "_ws",
        "close_code",
    )

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self._mode = _OPENING
        #: The WebSocket framing; None over TCP.
        self._ws: WebSocketLayer | None = None
        self._session: ServerSession | None = None
        #: The address this connection is counted under in the hub's limits.
        self._counted: str | None = None
        # output
        self._dirty = False
        #: The writer turn of this connection's last write (Hub.turn).
        self._written = -1
        self._out = SendQueue(hub.settings)
        self.close_code = CLOSE_NORMAL
        # input
        self._inbox: deque[bytes] = deque()
        #: WebSocket bytes read and not yet parsed (a burst is parsed a step at a time).
        self._raw = bytearray()
        self._worker: asyncio.Task[None] | None = None
        self._read_paused = False
        self._attached = False
        #: Next WebSocket ping (only with ``ws_ping_interval``; STOMP heart-beats suffice).
        self._ping_at: float | None = None

    @property
    def session(self) -> ServerSession:
        """The STOMP session (the router's and relay's view: a sink)."""
        session = self._session
        assert session is not None, "no STOMP session on this connection"
        return session

    # -- opening ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """STOMP over TCP: no proxy headers, the peer is the client."""
        self._setup(transport)
        hub = self.hub
        refusal = hub.limits.admit(self.client, time.monotonic())
        if refusal is None:
            self._open_session()
        else:
            self._refuse_stomp(refusal)
        self._token = hub.timers.add(self)

    def upgrade(self, previous: SocketProtocol, head: bytes) -> None:
        """Take over ``previous``'s socket (already this transport's protocol), whose
        first request is a WebSocket handshake: ``head`` is every byte read so far."""
        transport = self._take_over(previous)
        ws = self._ws = WebSocketLayer(self.hub.settings, transport)
        request = ws.handshake(head)
        if request is None:
            self._ws_output()
            self._closing()
            return
        refusal = check_handshake(self, request)
        if refusal is not None:
            ws.refuse(refusal)
            self._ws_output()
            self._closing()
            return
        ws.accept(request)
        self._ws_output()
        if not ws.open:
            self._closing()
            return
        self._open_session()
        interval = self.hub.settings.ws_ping_interval
        if interval > 0:
            self._ping_at = time.monotonic() + interval
        self.hub.timers.update(self._token)
        # bytes after the handshake (a client that did not wait for the 101)
        self._ws_frames()

    def _refuse_stomp(self, refusal: Refusal) -> None:
        """A STOMP/TCP connection over a per-address limit: one ERROR, then close."""
        self.hub.refused(refusal, self.client)
        if self.transport is not None:
            message = refusal.text.strip().encode("ascii")
            self.transport.write(b"ERROR\nmessage:" + message + b"\n\n\x00")
            self.transport.close()
        self._closing()

    def _open_session(self) -> None:
        app = self.hub.app
        self.hub.limits.acquire(self.client)
        self._counted = self.client
        self._session = app.new_session()
        self._mode = _OPEN
        self._deadline = None
        app.attach(self)
        self._attached = True

    # -- asyncio.Protocol ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        mode = self._mode
        ws = self._ws
        if mode == _OPEN:
            if ws is not None:
                self._raw += data
                if self._worker is None:
                    self._ws_frames()
                elif len(self._raw) >= RAW_LIMIT:
                    self._pause_reading()
            else:
                inbox = self._inbox
                for start in range(0, len(data), SLICE):
                    inbox.append(data[start : start + SLICE])
                self._take_input()
        elif mode == _CLOSING and ws is not None:
            if self._raw:
                data = bytes(self._raw) + data
                self._raw.clear()
            ws.receive(data)
            self._ws_output()

    def eof_received(self) -> bool | None:
        if self._ws is not None and self._mode in (_OPEN, _CLOSING):
            if self._raw:
                self._ws.receive(bytes(self._raw))
                self._raw.clear()
            self._ws.receive_eof()
            self._ws_output()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._mode = _CLOSED
        hub = self.hub
        if self._out.clear():
            hub.wake_publishers()
        self._forget()
        if self._counted is not None:
            hub.limits.release(self._counted, time.monotonic())
            self._counted = None
        self._inbox.clear()
        self._raw.clear()
        self._ws = None
        session = self._session
        if session is not None:
            if session.error is not None:
                log.info("session %s closed: %s", session.session_id, session.close_reason)
            session.close("connection closed")
            if self._attached:
                task = asyncio.get_running_loop().create_task(self._detach())
                hub.app.background(task)
                return
        hub.gone()

    async def _detach(self) -> None:
        try:
            await self.hub.app.detach(self)
        finally:
            self.hub.gone()

    def pause_writing(self) -> None:
        self._out.pause(time.monotonic())
        self.hub.timers.update(self._token)

    def resume_writing(self) -> None:
        self._out.resume(self.transport)
        self.hub.wake_publishers()

    @property
    def write_paused(self) -> bool:
        return self._out.paused

    # -- timers ---------------------------------------------------------------

    def deadline(self) -> float | None:
        mode = self._mode
        if mode == _OPEN:
            session = self._session
            due = session.next_deadline() if session is not None else None
            limit = self._out.due()
            if limit is not None:
                due = limit if due is None else min(due, limit)
            ping = self._ping_at
            if ping is not None:
                due = ping if due is None else min(due, ping)
            return due
        if mode == _CLOSED:
            return None
        return self._deadline

    def on_deadline(self, now: float) -> None:
        if self._mode == _OPEN:
            if self._out.timed_out(now):
                log.info(
                    "session %s dropped: its socket took nothing for %g s",
                    self._session.session_id if self._session else "-",
                    self.hub.settings.send_timeout,
                )
                self._drop_slow_consumer()
                return
            ping = self._ping_at
            if ping is not None and now >= ping and self._ws is not None:
                if self._ws.ping():
                    self._ws_output()
                self._ping_at = now + self.hub.settings.ws_ping_interval
            if self._session is not None:
                self._session.tick(now)
                self.flush()
        elif self._deadline is not None and now >= self._deadline:
            self.abort()

    # -- output ---------------------------------------------------------------

    def flush(self) -> None:
        """The session has frames queued (or closed): write them now if the
        connection is idle, else with the others at the end of this turn.

        A connection not written since the writer's last turn (a quiet room's
        subscriber, while other rooms keep the writer busy) is written at once, so its
        message does not wait for a turn that a flooded room's fan-out makes long; one
        written in the writer's last turn or since (a busy one) keeps one write per
        turn for everything the turn queued, never a write per frame under load."""
        if self._dirty:
            return
        hub = self.hub
        if self._written < hub.turn:
            self.write_now()
            return
        self._dirty = True
        hub.mark(self)

    def write_now(self) -> None:
        """Move the session's frames to the socket: one write for all of them."""
        self._dirty = False
        self._written = self.hub.turn
        session = self._session
        transport = self.transport
        if session is None or transport is None or self._mode not in (_OPEN, _CLOSING):
            return
        out = session.data_to_send()
        if out:
            ws = self._ws
            chunks = out if ws is None else ws.encode(out)
            if chunks and not self._out.write(transport, chunks):
                self._drop_slow_consumer()
        if session.closed and self._mode == _OPEN:
            self._end_session()

    def _drop_slow_consumer(self) -> None:
        """The client does not read: drop its backlog, send ERROR if it can still
        get through, and abort the socket if it has not closed shortly after."""
        session = self._session
        if session is None or self._mode != _OPEN or session.closed:
            return
        settings = self.hub.settings
        self.hub.metrics.slow_consumers.inc()
        session.data_to_send()
        session.fail(slow_consumer_error(settings))
        self._out.clear()  # the ERROR goes straight to the transport
        self.hub.wake_publishers()
        self.close_code = CLOSE_POLICY
        self.write_now()
        self._abort_after(SLOW_CONSUMER_GRACE)

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
            ws.close(self.close_code, reason)
            self._ws_output()
        elif transport is not None:
            transport.close()
        self.hub.timers.update(self._token)

    def _closing(self) -> None:
        """Closing: the socket is aborted if the peer has not gone in CLOSE_TIMEOUT."""
        self._mode = _CLOSING
        self._abort_after(CLOSE_TIMEOUT)

    def shutdown(self) -> None:
        """Server stopping: close this client with 1001 after what is queued."""
        if self._mode == _OPEN and self._session is not None:
            self.close_code = CLOSE_GOING_AWAY
            self._session.close("server shutting down")
            self.write_now()

    # -- STOMP input ----------------------------------------------------------

    def _take_input(self) -> None:
        """New STOMP bytes: handle a first step of them now (in this callback), or
        stop reading while earlier ones are handled."""
        if self._worker is None:
            self._process()
        if (
            len(self._inbox) >= self.hub.settings.inbox_frames or len(self._raw) >= RAW_LIMIT
        ) and not self._read_paused:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
            if self._session is not None:
                self._session.pause_receive(True, time.monotonic())

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and self._mode == _OPEN:
            self._read_paused = False
            if self._session is not None:
                self._session.pause_receive(False, time.monotonic())
            self.transport.resume_reading()

    def _process(self) -> None:
        """One step of this connection's input: at most BATCH messages (and their
        events) parsed and handed to the application. A step of SENDs that wait on
        nothing is handled at once (:meth:`_handled_now`: input that arrived while
        nothing of this connection was being handled, in the callback that read
        it); what is left of a burst is a task per step, so that each connection
        with input gets one step per event-loop turn, in turn with the others."""
        session = self._session
        if session is None:
            return
        inbox = self._inbox
        if self._raw and len(inbox) < BATCH and self._ws is not None:
            self._parse_ws()
            session = self._session
            if session is None or self._mode != _OPEN:
                return
        events: list[Any] = []
        clock = time.monotonic()
        taken = 0
        while inbox and taken < BATCH and len(events) < BATCH and not session.closed:
            events.extend(session.receive_data(inbox.popleft(), clock))
            taken += 1
        if session.closed:
            inbox.clear()
            self._raw.clear()
        loop = asyncio.get_running_loop()
        if events:
            self.hub.metrics.frames_in.inc(len(events))
            if self._handled_now(events):
                return
            self._worker = loop.create_task(self._handle(events))
        else:
            self.flush()
            if inbox or self._raw:
                self._worker = loop.create_task(self._handle([]))
            elif self._read_paused:
                self._resume_reading()

    def _handled_now(self, events: list[Any]) -> bool:
        """The events handled here, without a task, where the application can
        (``Application.handle_now``: SENDs that wait on nothing) and no subscriber
        holds this publisher back; what is left of the inbox is handled after the
        other connections had their turn, as after a task's batch."""
        hub = self.hub
        app = hub.app
        try:
            if not app.handle_now(self, events):
                return False
        except Exception:
            self._failed()
        else:
            hub.timers.update(self._token)
            sent = app.sent_to(events)
            loop = asyncio.get_running_loop()
            if sent and app.congested(sent):
                self._worker = loop.create_task(self._handle([], sent))
                return True
            if self._inbox or self._raw:
                # the rest of a burst: one step per event-loop turn, in turn with the others
                self._worker = loop.create_task(self._handle([]))
                return True
        if self._mode == _OPEN:
            self._process()
        return True

    def _failed(self) -> None:
        log.exception(
            "session %s: handling its frames failed",
            self._session.session_id if self._session else "-",
        )
        if self._session is not None:
            self._session.close("internal error")
        self.flush()

    async def _handle(self, events: list[Any], sent: set[str] | None = None) -> None:
        hub = self.hub
        app = hub.app
        try:
            if events:
                await app.handle(self, events)
                # a CONNECT (heart-beats, the token's exp) or a refresh moved the deadline
                hub.timers.update(self._token)
                sent = app.sent_to(events)
                if sent:
                    await self._wait_for_subscribers(sent)
            elif sent:  # handled already (_handled_now): a subscriber holds this one back
                await self._wait_for_subscribers(sent)
            else:
                await asyncio.sleep(0)  # let other connections run between batches
        except Exception:
            self._failed()
        self._worker = None
        if self._mode == _OPEN:
            self._process()

    async def _wait_for_subscribers(self, destinations: set[str]) -> None:
        """Backpressure: while a local subscriber of what this publisher sent to
        cannot take more, read nothing more from this publisher (it is dropped
        as a slow consumer after ``send_timeout``, and then this one goes on)."""
        app = self.hub.app
        if not app.congested(destinations):
            return
        self._pause_reading()
        self.hub.metrics.publisher_pauses.inc()
        while self._mode == _OPEN and app.congested(destinations):
            await self.hub.resumed()

    # -- WebSocket ------------------------------------------------------------

    def _ws_frames(self) -> None:
        """Input arrived with nothing of this connection's being handled: parse a
        first step of it and handle that now."""
        ws = self._ws
        if ws is None:
            return
        self._inbox.extend(ws.messages())  # parsed already: bytes sent with the handshake
        if self._raw:
            self._parse_ws(check=False)
        if self._inbox or self._raw:
            self._take_input()
        self._ws_check()

    def _parse_ws(self, check: bool = True) -> None:
        """Parse unparsed WebSocket input, SLICE bytes at a time, until a step's
        worth of messages (BATCH, or STEP_BYTES parsed) is in the inbox."""
        ws = self._ws
        raw = self._raw
        inbox = self._inbox
        if ws is None:
            raw.clear()
            return
        parsed = 0
        while raw and len(inbox) < BATCH and parsed < STEP_BYTES:
            chunk = bytes(raw[:SLICE])
            del raw[:SLICE]
            ws.receive(chunk)
            parsed += len(chunk)
            inbox.extend(ws.messages())
            if ws.too_big or not ws.open:
                raw.clear()
                break
        if check:
            self._ws_check()

    def _ws_check(self) -> None:
        """After parsing: a message over the limit, or the client closing, ends the session."""
        ws = self._ws
        if ws is None:
            return
        session = self._session
        if ws.too_big and session is not None and not session.closed:
            self._too_big(ws, session)
            return
        if not ws.open and self._mode == _OPEN:
            # the client closed (or broke) the WebSocket: the session ends here
            if session is not None:
                session.close("connection closed")
            self._closing()
        self._ws_output()

    def _too_big(self, ws: WebSocketLayer, session: ServerSession) -> None:
        """A WebSocket message over ``max_message_size``: a STOMP ERROR naming the
        limit goes out just before websockets' close frame 1009 (STOMP 1.2 "Size
        Limits": the server sends an ERROR, then closes)."""
        settings = self.hub.settings
        limit = settings.max_message_size
        log.info("session %s: a WebSocket message over %d bytes", session.session_id, limit)
        self.hub.metrics.errors.labels("Message too large").inc()
        session.fail(
            PolicyError(
                "Message too large",
                f"WebSocket messages are limited to {limit} bytes "
                f"(STOMP frames to {settings.limits.max_frame_size}).",
            )
        )
        error = b"".join(session.data_to_send())
        self._closing()
        if self.transport is not None:
            ws.write_text_now(error)
        self._ws_output()

    def _ws_output(self) -> None:
        ws = self._ws
        if ws is None or self.transport is None:
            return
        if ws.output() and self._mode != _CLOSING:
            self._closing()
