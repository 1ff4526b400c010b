"""The WebSocket layer a STOMP connection is given on ``/ws`` (RFC 6455).

Built on websockets' sans-I/O ``ServerProtocol``, through its documented
integration layer only (``receive_data``, ``events_received``, ``accept``,
``reject``, ``send_response``, ``send_text``/``send_binary``,
``data_to_send``). Every STOMP frame is one WebSocket message, text or
binary as the frame's body is (docs/protocol.md); the sub-protocol is the
highest STOMP version offered. Before the handshake is accepted,
:func:`check_handshake` applies the hub's hygiene checks (``hygiene.py``):
the client's address (believed from a trusted proxy), its handshake rate and
open connections, and the Origin.

Frames in: the layer delimits the client's frames itself (RFC 6455 5.2) and
unmasks a complete, simple one (a whole text or binary message, masked, within
``max_message_size``, no reserved bits, while the connection is open and no
fragmented message is under way: every STOMP frame a client sends, in
practice) without websockets' parser. Every other frame goes to websockets, as
exactly its own bytes and in order, so pings, the closing handshake, fragments
and every error (with its close code) are websockets' as before; a frame over
the limit goes as soon as its header is in (1009, nothing buffered).
"""

from __future__ import annotations

import asyncio
import logging
import time
from struct import pack
from typing import Any

from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

try:  # websockets' C unmasking, which its own parser uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from stomprelay.settings import Settings
from stomprelay.stomp.frames import Binary
from stomprelay.transport.hub import SocketProtocol
from stomprelay.transport.hygiene import ORIGIN_REFUSED, Refusal

ws_log = logging.getLogger("websockets.server")

SUBPROTOCOLS = [Subprotocol("v12.stomp"), Subprotocol("v11.stomp"), Subprotocol("v10.stomp")]

#: WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008


def select_subprotocol(protocol: ServerProtocol, offered: Any) -> Subprotocol | None:
    """Prefer the highest STOMP version offered; serve clients offering none too."""
    for candidate in SUBPROTOCOLS:
        if candidate in offered:
            return candidate
    return None


def check_handshake(protocol: SocketProtocol, request: Request) -> Refusal | None:
    """Who the client is (behind a trusted proxy, the address it forwarded; the
    protocol's ``client`` and ``remote`` say so from here on), and whether it may
    open a WebSocket: the per-address rate and cap, then its Origin."""
    hub = protocol.hub
    headers = request.headers
    client = protocol.client_of(headers.get_all("X-Forwarded-For"))
    if client != protocol.client:
        protocol.client = protocol.remote = client
    refusal = hub.limits.admit(client, time.monotonic())
    origins = headers.get_all("Origin")
    if refusal is None:
        hosts = headers.get_all("Host")
        if protocol.peer and hub.proxies.trusts(protocol.peer):
            # the Host a proxy was asked for (the one it talks to us with may differ)
            forwarded = ",".join(headers.get_all("X-Forwarded-Host")).split(",")[-1]
            if forwarded.strip():
                hosts = [*hosts, forwarded.strip()]
        if not hub.origins.allows(origins, hosts):
            refusal = ORIGIN_REFUSED
    if refusal is not None:
        hub.refused(refusal, client, ", ".join(origins)[:200])
    return refusal


class WebSocketLayer:
    """One socket's WebSocket framing: the handshake, messages in (fragments
    joined), STOMP frames out as messages, pings and the closing handshake."""

    __slots__ = ("_buf", "_fed", "_fragments", "_got", "_max_size", "_owed", "_transport", "_ws")

    def __init__(self, settings: Settings, transport: asyncio.Transport) -> None:
        self._ws = ServerProtocol(
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=select_subprotocol,
            extensions=[],  # permessage-deflate off: docs/protocol.md says why
            max_size=settings.max_message_size,
            logger=ws_log,
        )
        self._transport = transport
        self._max_size = settings.max_message_size
        #: The first parts of a fragmented message websockets is reading (None: none).
        self._fragments: list[bytes] | None = None
        #: Bytes received after the last whole frame (never part of websockets' frames).
        self._buf = bytearray()
        #: Bytes of the frame websockets is reading that it still has to be given.
        self._owed = 0
        #: Of an incomplete header at the start of ``_buf``, the bytes websockets has.
        self._fed = 0
        #: Complete messages received, in order, for :meth:`messages`.
        self._got: list[bytes] = []

    def handshake(self, head: bytes) -> Request | None:
        """Read the opening handshake from every byte the socket has given so far
        (frames of a client that did not wait for the 101 stay buffered, read
        once the handshake is accepted)."""
        ws = self._ws
        end = head.find(b"\r\n\r\n") + 4
        if end >= 4 and end < len(head):
            self._buf += head[end:]
            head = head[:end]
        ws.receive_data(head)
        events = ws.events_received()
        if not events or not isinstance(events[0], Request):
            return None
        self._collect(events[1:])
        return events[0]

    def refuse(self, refusal: Refusal) -> None:
        ws = self._ws
        response = ws.reject(refusal.status, refusal.text)
        if refusal.retry_after is not None:
            response.headers["Retry-After"] = str(refusal.retry_after)
        ws.send_response(response)

    def accept(self, request: Request) -> None:
        ws = self._ws
        ws.send_response(ws.accept(request))
        if self._buf and ws.state is WsState.OPEN:
            early = bytes(self._buf)
            self._buf.clear()
            self.receive(early)

    @property
    def open(self) -> bool:
        return self._ws.state is WsState.OPEN

    @property
    def too_big(self) -> bool:
        """The peer sent a message over ``max_message_size`` (websockets closes with 1009)."""
        return isinstance(self._ws.parser_exc, PayloadTooBig)

    def receive(self, data: bytes | bytearray) -> None:
        """Bytes from the socket: each complete simple frame unmasked here, every
        other frame given to websockets as its own bytes, both in order."""
        buf = self._buf
        if buf:
            buf += data
            data = buf
        ws = self._ws
        got = self._got
        limit = self._max_size
        opened = ws.state is WsState.OPEN
        simple = opened and self._fragments is None
        n = len(data)
        pos = 0
        while pos < n:
            if self._owed:  # the rest of a frame websockets is reading
                end = min(n, pos + self._owed)
                self._owed -= end - pos
            elif not opened:  # closing or closed: websockets reads the rest
                end = n
            else:
                # RFC 6455 5.2: FIN, RSV1-3, opcode; MASK, 7-bit length (126:
                # 16-bit, 127: 64-bit follows); the masking key; the payload.
                if n - pos < 2:
                    break
                head = data[pos]
                length = data[pos + 1]
                masked = length & 0x80
                fast = simple and masked and (head == 0x81 or head == 0x82)
                length &= 0x7F
                start = pos + 2
                if length > 125:
                    start += 2 if length == 126 else 8
                    if start > n:
                        if fast:
                            break
                        # websockets reads a header as it comes (an error, if any, at once)
                        ws.receive_data(data[pos + self._fed : n])
                        self._fed = n - pos
                        self._collect(ws.events_received())
                        break
                    length = int.from_bytes(data[pos + 2 : start], "big")
                if masked:
                    start += 4
                end = start + length
                if fast and length <= limit:
                    if end > n:
                        break  # the rest of it is still to come
                    got.append(apply_mask(data[start:end], data[start - 4 : start]))
                    pos = end
                    continue
                if end > n:  # websockets reads it as it comes (over the limit: 1009 now)
                    self._owed = end - n
                    end = n
            if self._fed:  # the start of this frame's header is websockets' already
                pos += self._fed
                self._fed = 0
            ws.receive_data(data[pos:end])
            pos = end
            self._collect(ws.events_received())
            opened = ws.state is WsState.OPEN
            simple = opened and self._fragments is None
        if data is buf:
            del buf[:pos]
        elif pos < n:
            buf += data[pos:]

    def receive_eof(self) -> None:
        ws = self._ws
        if self._buf:  # an incomplete frame: websockets sees it cut short
            ws.receive_data(bytes(self._buf[self._fed :]))
            self._buf.clear()
            self._fed = 0
        ws.receive_eof()

    def _collect(self, events: list[Any]) -> None:
        """Messages from the frames websockets read (a fragmented one once complete)."""
        got = self._got
        for frame in events:
            if not isinstance(frame, WsFrame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    got.append(bytes(frame.data))
                else:
                    self._fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    got.append(b"".join(self._fragments))
                    self._fragments = None

    def messages(self) -> list[bytes]:
        """The complete messages received (a fragmented one once its last part is in)."""
        got = self._got
        self._got = []
        return got

    def encode(self, frames: list[bytes]) -> list[bytes]:
        """STOMP frames as WebSocket messages, one each (nothing once closing)."""
        ws = self._ws
        if ws.state is not WsState.OPEN:
            return []
        # What websockets queued (a pong) goes first; then each frame, framed here:
        # unmasked and without extensions, a server's frame is its head and payload
        # (RFC 6455 5.2), the bytes websockets' send_text/send_binary would make.
        out = ws.data_to_send()
        for data in frames:
            n = len(data)
            first = 0x82 if type(data) is Binary else 0x81
            if n < 126:
                out.append(bytes((first, n)) + data)
            elif n < 65536:
                out.append(pack("!BBH", first, 126, n) + data)
            else:
                out.append(pack("!BBQ", first, 127, n) + data)
        return out

    def write_text_now(self, data: bytes) -> None:
        """One text message straight to the socket, ahead of what websockets queued
        (the STOMP ERROR that precedes its close frame 1009)."""
        self._transport.write(WsFrame(Opcode.TEXT, data).serialize(mask=False, extensions=[]))

    def ping(self) -> bool:
        """Send a ping if the WebSocket is open (False: it is not)."""
        if self._ws.state is not WsState.OPEN:
            return False
        self._ws.send_ping(b"")
        return True

    def close(self, code: int, reason: str) -> None:
        if self._ws.state is WsState.OPEN:
            self._ws.send_close(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore"))

    def output(self) -> bool:
        """Write what websockets has to send (responses, pongs, close frames, EOF);
        True once the peer is expected to close (the caller starts its close timer)."""
        ws = self._ws
        transport = self._transport
        for data in ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        expected = ws.close_expected()
        if ws.state is WsState.CLOSED:
            transport.close()
        return expected
