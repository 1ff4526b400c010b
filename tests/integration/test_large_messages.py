"""A 1 MiB SEND (docs/protocol.md, "Limits") with stomp.py and @stomp/stompjs: it passes
once both the STOMP frame limit and the WebSocket message limit are raised; at the
default limits, or with only the WebSocket one raised, it gets the ERROR that names the
limit (never a silent drop). Across relays and Redis: tests/multi/test_multi_large.py.
"""

from __future__ import annotations

import random
import string
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jsclient import StompJsClient, StompJsError
from pyclient import PyClient, PyClients

from stomprelay.settings import Limits, Settings
from stomprelay.transport import RelayServer

MIB = 1024 * 1024
RAISED: dict[str, Any] = {"limits": Limits(max_frame_size=2 * MIB), "max_message_size": 2 * MIB}
TOPIC = "/topic/big"


def payload(seed: int) -> bytes:
    """1 MiB of text, different for each seed (so a mix-up cannot pass)."""
    chars = random.Random(seed).choices(string.ascii_letters + string.digits, k=MIB)
    return "".join(chars).encode()


def ws_url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


@pytest.fixture
async def clients() -> AsyncIterator[PyClients]:
    pool = PyClients()
    yield pool
    await pool.aclose()


async def pair(clients: PyClients, server: RelayServer, kind: str) -> tuple[PyClient, PyClient]:
    """A stomp.py subscriber of TOPIC (live: its RECEIPT came) and a sender."""
    receiver = clients(server, kind)
    await receiver.connect()
    await receiver.subscribe(TOPIC)
    sender = clients(server, kind)
    await sender.connect()
    return receiver, sender


@pytest.mark.parametrize("kind", ["ws", "tcp11"])
async def test_stomp_py_sends_1_mib_through_raised_limits(
    make_relay: Any, clients: PyClients, kind: str
) -> None:
    receiver, sender = await pair(clients, await make_relay(**RAISED), kind)
    body = payload(1)
    await sender.send(TOPIC, body, receipt="big")
    await sender.receipt("big", timeout=30)
    message = await receiver.message(timeout=30)
    assert message.body == body
    assert int(message.headers["content-length"]) == MIB


@pytest.mark.parametrize(
    ("settings", "kind", "message", "limit"),
    [
        ({}, "ws", "Message too large", Settings().max_message_size),
        ({}, "tcp11", "Frame too large", Limits().max_frame_size),
        # the WebSocket limit raised alone is not enough: the frame limit still holds
        ({"max_message_size": 2 * MIB}, "ws", "Frame too large", Limits().max_frame_size),
    ],
    ids=["defaults-ws", "defaults-tcp", "message-limit-only"],
)
async def test_stomp_py_gets_the_error_naming_the_limit(
    make_relay: Any,
    clients: PyClients,
    settings: dict[str, Any],
    kind: str,
    message: str,
    limit: int,
) -> None:
    receiver, sender = await pair(clients, await make_relay(**settings), kind)
    await sender.send(TOPIC, payload(2))
    error = await sender.next("error", timeout=30)
    assert error.headers["message"] == message
    assert str(limit) in error.body.decode()
    assert receiver.pending("message") == 0


@pytest.mark.node
async def test_stompjs_sends_1_mib_through_raised_limits(
    make_relay: Any, stompjs: StompJsClient
) -> None:
    server = await make_relay(**RAISED)
    await stompjs.connect(ws_url(server))
    await stompjs.subscribe(TOPIC, sub_id="s1", receipt="r1")
    await stompjs.expect("receipt", lambda e: e["receipt_id"] == "r1")
    body = payload(3).decode()
    await stompjs.send(TOPIC, body=body)
    got = await stompjs.expect("message", lambda e: e["subscription"] == "s1", timeout=30)
    assert got["body"] == body


@pytest.mark.node
async def test_stompjs_at_the_default_limits_gets_the_error(
    make_relay: Any, stompjs: StompJsClient
) -> None:
    server = await make_relay()
    await stompjs.connect(ws_url(server), reconnectDelay=0)
    await stompjs.subscribe(TOPIC, sub_id="s1", receipt="r1")
    await stompjs.expect("receipt", lambda e: e["receipt_id"] == "r1")
    await stompjs.send(TOPIC, body=payload(4).decode())
    error = await stompjs.expect("error", timeout=30)
    assert error["headers"]["message"] == "Message too large"
    assert str(Settings().max_message_size) in error["body"]
    await stompjs.expect("ws_close", timeout=10)
    with pytest.raises(StompJsError):
        await stompjs.expect("message", timeout=0.5)
