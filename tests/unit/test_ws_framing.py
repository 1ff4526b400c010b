"""The WebSocket layer frames outgoing STOMP frames itself: the same bytes as
websockets' own framing, for every length class, text and binary, after what
websockets had queued."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from wshelpers import opened

from stomprelay.stomp.frames import Binary


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
