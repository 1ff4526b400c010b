"""A WebSocketLayer with its handshake done, for the unit tests of the layer."""

from __future__ import annotations

import asyncio
import base64
from unittest import mock

from stomprelay.settings import Settings
from stomprelay.transport.websocket import WebSocketLayer

REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
)


def opened(head: bytes = REQUEST, settings: Settings | None = None) -> WebSocketLayer:
    """An open layer: ``head`` (the handshake, perhaps frames after it) read and
    accepted, the 101 response taken."""
    layer = WebSocketLayer(settings or Settings(), mock.Mock(spec=asyncio.Transport))
    request = layer.handshake(head)
    assert request is not None
    layer.accept(request)
    layer._ws.data_to_send()  # the 101 response
    assert layer.open
    return layer
