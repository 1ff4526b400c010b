"""A raw STOMP-over-WebSocket client for tests that need byte-level control.

It sends exactly the bytes a test gives it and checks what the relay sends back: every
WebSocket message from the relay must hold exactly one STOMP frame or one heart-beat EOL
(contract section 1), parsed with the relay's own :class:`FrameParser`.
"""

# The helpers take `timeout=` arguments on purpose (tests read better that way).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stomprelay.settings import Limits
from stomprelay.stomp.frames import V10, Frame, encode_frame
from stomprelay.stomp.parser import FrameParser

HEARTBEATS = (b"\n", b"\r\n")
#: Generous limits for parsing what the relay sends (its MESSAGEs may exceed client limits).
_READ_LIMITS = Limits(
    max_frame_size=16 * 1024 * 1024,
    max_headers=10_000,
    max_header_line=1024 * 1024,
    max_command_line=1024,
)
_ids = itertools.count(1)


def parse_one(data: bytes, version: str) -> Frame:
    """The single frame a WebSocket message holds; fail if it holds less or more."""
    parser = FrameParser(_READ_LIMITS, version=version)
    parser.feed(data)
    frame = parser.next_frame()
    assert frame is not None, f"incomplete frame in one WebSocket message: {data[:200]!r}"
    assert parser.buffered == 0, f"more than one frame in one WebSocket message: {data[:400]!r}"
    return frame


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


class RawStomp:
    """One WebSocket connection speaking STOMP by hand."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        #: Version used to encode our frames and decode the relay's (set by CONNECTED).
        self.version = V10
        self.heartbeats = 0

    @classmethod
    async def open(
        cls, port: int, *, subprotocols: Sequence[str] | None = ("v12.stomp",)
    ) -> RawStomp:
        ws = await connect(
            ws_url(port),
            subprotocols=list(subprotocols) if subprotocols else None,  # type: ignore[misc]
            max_size=None,
            open_timeout=5,
            ping_interval=None,
            close_timeout=2,
        )
        return cls(ws)

    async def close(self) -> None:
        await self.ws.close()

    # -- output ---------------------------------------------------------------------------

    async def send_raw(self, data: bytes, *, text: bool = False) -> None:
        """Send ``data`` as one WebSocket message (text or binary)."""
        await self.ws.send(data.decode("utf-8") if text else data)

    async def send_frame(
        self,
        command: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        text: bool = False,
    ) -> None:
        """Send one well-formed frame, escaped for the negotiated version."""
        await self.send_raw(encode_frame(command, tuple(headers), body, self.version), text=text)

    # -- input ----------------------------------------------------------------------------

    async def recv_message(self, timeout: float = 5) -> bytes:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)

    async def recv_frame(self, timeout: float = 5) -> Frame:
        """The next frame, skipping (and counting) heart-beats."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            data = await self.recv_message(max(0.0, deadline - loop.time()))
            if data in HEARTBEATS:
                self.heartbeats += 1
                continue
            return parse_one(data, self.version)

    async def expect(self, command: str, timeout: float = 5) -> Frame:
        frame = await self.recv_frame(timeout)
        assert frame.command == command, f"expected {command}, got {frame}"
        return frame

    async def frames_until_closed(self, timeout: float = 5) -> list[Frame]:
        """Every frame the relay sends until it closes the connection.

        Fails if the relay does not close within ``timeout`` or if we, not the relay,
        ended the WebSocket.
        """
        frames: list[Frame] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                data = await self.recv_message(max(0.0, deadline - loop.time()))
            except ConnectionClosed:
                break
            except TimeoutError:
                raise AssertionError(
                    f"the relay did not close the connection within {timeout}s; got {frames}"
                ) from None
            if data in HEARTBEATS:
                self.heartbeats += 1
                continue
            frames.append(parse_one(data, self.version))
        protocol = self.ws.protocol
        assert protocol.close_rcvd is not None, "the relay dropped TCP without a close frame"
        assert protocol.close_rcvd_then_sent, "the close was not initiated by the relay"
        return frames

    # -- STOMP conveniences ---------------------------------------------------------------

    async def connect(
        self,
        accept_version: str | None = "1.2",
        *,
        heart_beat: str | None = "0,0",
        headers: Iterable[tuple[str, str]] = (),
        command: str = "CONNECT",
    ) -> Frame:
        hdrs: list[tuple[str, str]] = []
        if accept_version is not None:
            hdrs.append(("accept-version", accept_version))
        hdrs.append(("host", "localhost"))
        if heart_beat is not None:
            hdrs.append(("heart-beat", heart_beat))
        hdrs.extend(headers)
        await self.send_frame(command, hdrs)
        frame = await self.expect("CONNECTED")
        self.version = frame.get("version") or V10
        return frame

    async def receipted(
        self,
        command: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float = 5,
    ) -> Frame:
        """Send a frame with a fresh ``receipt`` and wait for its RECEIPT (nothing else first)."""
        receipt = f"r-{next(_ids)}"
        await self.send_frame(command, [*headers, ("receipt", receipt)], body)
        frame = await self.expect("RECEIPT", timeout)
        assert frame.get("receipt-id") == receipt, frame
        return frame

    async def subscribe(self, destination: str, sub_id: str = "s1", ack: str = "auto") -> None:
        """SUBSCRIBE and wait until the relay confirms it is live."""
        await self.receipted(
            "SUBSCRIBE", [("id", sub_id), ("destination", destination), ("ack", ack)]
        )

    async def send(
        self, destination: str, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        await self.send_frame("SEND", [("destination", destination), *headers], body)
