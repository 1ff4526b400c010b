"""HTTP/1.1 on the relay's port, through h11; ``GET /ws`` becomes a STOMP connection.

An :class:`HttpProtocol` is the ``asyncio.Protocol`` of every socket the
HTTP/WebSocket listener accepts. h11 (``h11.Connection``, its public API)
reads the requests, including keep-alive, pipelining and chunked bodies, and
writes the responses; :class:`~stomprelay.transport.http.HttpApp` answers
each request. When the first request on a socket is ``GET /ws``, the socket
is handed to a :class:`~stomprelay.transport.stomp_protocol.StompProtocol`
(``transport.set_protocol``, then the bytes read so far, as uvicorn's
``H11Protocol`` hands an upgrade to its WebSocket protocol): the WebSocket
handshake, its checks and the session are all that protocol's from there, and
this object is done with. So a socket has one protocol object at any time.

Timeouts: a request head (and body) must arrive within ``handshake_timeout``
of the socket opening or of the previous response; past it the socket is
aborted. Requests over ``max_request_head`` or their body limit
(``max_request_body``; more for a server API publish, ``HttpApp.body_limit``) get
a 431 or 413 and a close; bad HTTP the 4xx h11 suggests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus

import h11

from stomprelay.transport.hub import CLOSE_TIMEOUT, Hub, SocketProtocol
from stomprelay.transport.stomp_protocol import StompProtocol

log = logging.getLogger(__name__)

# What an HTTP connection is doing.
_HEAD = 0  # reading the first request head
_HTTP = 1  # plain HTTP, h11
_CLOSING = 2  # answered with a close, or refused
_CLOSED = 3  # gone, or handed to a STOMP protocol


class HttpProtocol(SocketProtocol):
    """One HTTP/1.1 socket: requests answered by the hub's ``HttpApp``, in order,
    with keep-alive; a WebSocket handshake as the first request hands the socket
    to a :class:`StompProtocol`."""

    __slots__ = ("_body", "_h11", "_head", "_http_task", "_limit", "_mode", "_request")

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self._mode = _HEAD
        self._h11: h11.Connection | None = None
        #: Every byte read while the first request head comes in (the WebSocket
        #: handshake, and any frames after it, go to the STOMP protocol as they are).
        self._head = bytearray()
        self._http_task: asyncio.Task[None] | None = None
        self._body = bytearray()
        self._request: h11.Request | None = None
        #: Most body bytes of the request being read (HttpApp.body_limit).
        self._limit = hub.settings.max_request_body

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._setup(transport)
        settings = self.hub.settings
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=settings.max_request_head)
        self._deadline = time.monotonic() + settings.handshake_timeout
        self._token = self.hub.timers.add(self)

    def data_received(self, data: bytes) -> None:
        mode = self._mode
        if mode in (_HEAD, _HTTP):
            if mode == _HEAD:
                self._head += data  # for the STOMP protocol, should this be a WebSocket
            assert self._h11 is not None
            self._h11.receive_data(data)
            self._events()

    def eof_received(self) -> bool | None:
        if self._h11 is not None and self._mode in (_HEAD, _HTTP):
            self._h11.receive_data(b"")
            self._events()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._mode = _CLOSED
        self._forget()
        self._h11 = None
        self.hub.gone()

    # -- timers ---------------------------------------------------------------

    def deadline(self) -> float | None:
        return None if self._mode == _CLOSED else self._deadline

    def on_deadline(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self.abort()

    def shutdown(self) -> None:
        """Server stopping: close the socket unless a response is being made."""
        if self._mode in (_HEAD, _HTTP) and self._http_task is None and self.transport:
            self.transport.close()

    # -- requests -------------------------------------------------------------

    def _events(self) -> None:
        conn = self._h11
        settings = self.hub.settings
        while conn is not None and self._http_task is None and self._mode in (_HEAD, _HTTP):
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if self._mode == _HEAD and _is_websocket(event):
                    self._upgrade()
                    return
                if sum(len(n) + len(v) + 4 for n, v in event.headers) > settings.max_request_head:
                    self._refuse(431, "request head too large")
                    return
                self._mode = _HTTP
                self._head = bytearray()
                self._request = event
                self._body = bytearray()
                self._deadline = time.monotonic() + settings.handshake_timeout
                self._limit = self.hub.http.body_limit(event.target)
                length = _content_length(event)
                if length is not None and length > self._limit:
                    self._refuse(413, "request body too large")
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._limit:
                    self._refuse(413, "request body too large")
                    return
            elif isinstance(event, h11.EndOfMessage):
                request = self._request
                assert request is not None
                self._http_task = asyncio.get_running_loop().create_task(
                    self._answer(request, bytes(self._body))
                )
                self._body = bytearray()
            elif isinstance(event, h11.ConnectionClosed):
                if self.transport is not None:
                    self.transport.close()
                return

    def _upgrade(self) -> None:
        """A WebSocket handshake: the socket is a STOMP protocol's from here on."""
        transport = self.transport
        assert transport is not None
        head, self._head = bytes(self._head), bytearray()
        self._h11 = None
        self._mode = _CLOSED
        stomp = StompProtocol(self.hub)
        transport.set_protocol(stomp)
        stomp.upgrade(self, head)

    async def _answer(self, request: h11.Request, body: bytes) -> None:
        forwarded = [v.decode("latin-1") for n, v in request.headers if n == b"x-forwarded-for"]
        try:
            status, headers, payload = await self.hub.http.answer(
                request, body, self.client_of(forwarded)
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
        self._send(status, headers, payload, request.method == b"HEAD")
        self._events()

    def _send(
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
            self._abort_after(self.hub.settings.handshake_timeout)
        elif conn.their_state is not h11.DONE:
            # answered before the body was read (a refusal): stop here
            transport.close()
            self._mode = _CLOSING

    def _refuse(self, status: int, reason: str) -> None:
        body = json.dumps({"error": reason[:200]})
        conn = self._h11
        if conn is not None and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send(status, [(b"content-type", b"application/json")], body.encode(), close=True)
        elif self.transport is not None:
            self.transport.close()
        self._mode = _CLOSING
        self._abort_after(CLOSE_TIMEOUT)


def _is_websocket(request: h11.Request) -> bool:
    return request.method == b"GET" and request.target.split(b"?", 1)[0] == b"/ws"


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 checked it is digits and that all copies agree
    return None
