"""The WebSocket layer frames outgoing STOMP frames itself: the same bytes as
websockets' own framing, for every length class, text and binary, after what
websockets had queued."""

from __future__ import annotations

import asyncio
import base64
from unittest import mock

import pytest
from websockets.frames import Frame, Opcode

from stomprelay.settings import Settings
from stomprelay.stomp.frames import Binary
from stomprelay.transport.websocket import WebSocketLayer

REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
)


def opened() -> WebSocketLayer:
    layer = WebSocketLayer(Settings(), mock.Mock(spec=asyncio.Transport))
    request = layer.handshake(REQUEST)
    assert request is not None
    layer.accept(request)
    layer._ws.data_to_send()  # the 101 response
    assert layer.open
    return layer


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_same_bytes_as_websockets(size: int) -> None:
    layer = opened()
    text = b"M" * size
    binary = Binary(b"\xff" * size)
    out = layer.encode([text, binary])
    assert out == [
        Frame(Opcode.TEXT, text).serialize(mask=False, extensions=[]),
        Frame(Opcode.BINARY, binary).serialize(mask=False, extensions=[]),
    ]


def test_queued_control_frames_go_first() -> None:
    layer = opened()
    assert layer.ping()
    out = layer.encode([b"MESSAGE\n\n\x00"])
    assert out == [
        Frame(Opcode.PING, b"").serialize(mask=False, extensions=[]),
        Frame(Opcode.TEXT, b"MESSAGE\n\n\x00").serialize(mask=False, extensions=[]),
    ]


def test_nothing_once_closing() -> None:
    layer = opened()
    layer.close(1000, "bye")
    assert layer.encode([b"MESSAGE\n\n\x00"]) == []
