"""WebSocket input: µs per client SEND frame read by the WebSocket layer, beside
websockets' own parser (what the layer used for every frame before it read
simple frames itself), in the same run.

Each frame is a masked text frame carrying a 250-byte STOMP SEND; reads carry
1, 16 or 100 frames, or 100 frames cut into 4096-byte slices as the STOMP
protocol parses a burst. Not part of ``make bench``. Run:
``.venv/bin/python bench/ws_input.py``.
"""

from __future__ import annotations

import asyncio
import base64
import timeit
from collections.abc import Callable
from unittest import mock

from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.server import ServerProtocol

from stomprelay.settings import Settings
from stomprelay.transport.websocket import SUBPROTOCOLS, WebSocketLayer, select_subprotocol

REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
)
SEND = (
    b"SEND\ndestination:/topic/room-0042\ncontent-type:text/plain\n"
    b"content-length:160\n\n" + b"x" * 160 + b"\x00"
)
FRAME = WsFrame(Opcode.TEXT, SEND).serialize(mask=True, extensions=[])
FRAMES = 200_000


def layer() -> Callable[[bytes], int]:
    ws = WebSocketLayer(Settings(), mock.Mock(spec=asyncio.Transport))
    request = ws.handshake(REQUEST)
    assert request is not None
    ws.accept(request)

    def read(data: bytes) -> int:
        ws.receive(data)
        return len(ws.messages())

    return read


def websockets_alone() -> Callable[[bytes], int]:
    ws = ServerProtocol(
        subprotocols=SUBPROTOCOLS, select_subprotocol=select_subprotocol, extensions=[]
    )
    ws.receive_data(REQUEST)
    (request,) = ws.events_received()
    ws.send_response(ws.accept(request))  # type: ignore[arg-type]

    def read(data: bytes) -> int:
        ws.receive_data(data)
        got = [bytes(f.data) for f in ws.events_received() if isinstance(f, WsFrame) and f.fin]
        return len(got)

    return read


def per_frame(read: Callable[[bytes], int], reads: list[bytes], frames: int) -> float:
    """Best µs per frame over 7 runs."""

    def run() -> None:
        got = sum(read(data) for data in reads)
        assert got == frames

    number = max(1, FRAMES // frames)
    return min(timeit.repeat(run, number=number, repeat=7)) / (number * frames) * 1e6


def main() -> None:
    print(f"masked text frame of {len(FRAME)} bytes (a {len(SEND)}-byte SEND)")
    print(f"{'frames per read':<24}{'websockets alone':>18}{'WebSocketLayer':>16}")
    burst = FRAME * 100
    loads = {
        "1": ([FRAME], 1),
        "16": ([FRAME * 16], 16),
        "100": ([burst], 100),
        "100, 4096-byte slices": ([burst[i : i + 4096] for i in range(0, len(burst), 4096)], 100),
    }
    for name, (reads, frames) in loads.items():
        before = per_frame(websockets_alone(), reads, frames)
        after = per_frame(layer(), reads, frames)
        print(f"{name:<24}{before:>15.2f} µs{after:>13.2f} µs")


if __name__ == "__main__":
    main()
