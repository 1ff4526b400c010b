"""A real @stomp/stompjs v7 client (node, via tests/js/stomp_driver.mjs) against the relay.

The same core scenarios as the stomp.py tests, plus the cross-client case: stomp.js
subscribed to ``/topic/room/lobby`` receives byte-exact what stomp.py sends there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jsclient import StompJsClient, decode_binary_body
from pyclient import BINARY_BODY, HEADERS, HEADERS_12, TEXT_BODY, PyClients

from stomprelay.transport import RelayServer

pytestmark = pytest.mark.node

LOBBY = "/topic/room/lobby"


def readable_by_stompjs(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` minus values stompjs 7.5 cannot decode.

    Its ``hdrValueUnEscape`` applies the escapes one after another (``\\r``, ``\\n``,
    ``\\c``, then ``\\\\``), so an escaped backslash followed by ``n``, ``r`` or ``c``
    (the wire text ``\\\\n``) comes out as a backslash and a line feed: a client bug,
    not the relay's. stompjs encodes such values correctly, so only its receiving side
    avoids them.
    """
    return {k: v for k, v in headers.items() if not any(f"\\{c}" in v for c in "nrc")}


def ws_url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def connect(js: StompJsClient, server: RelayServer, **options: Any) -> dict[str, str]:
    event = await js.connect(ws_url(server), **options)
    headers: dict[str, str] = event["headers"]
    return headers


async def subscribe(js: StompJsClient, destination: str, sub_id: str, ack: str = "auto") -> None:
    """SUBSCRIBE with a receipt and wait for it: the subscription is live."""
    await js.subscribe(destination, sub_id=sub_id, ack=ack, receipt=f"r-{sub_id}")
    await js.expect("receipt", lambda e: e["receipt_id"] == f"r-{sub_id}")


async def message(js: StompJsClient, sub_id: str | None = None) -> dict[str, Any]:
    return await js.expect("message", None if sub_id is None else _on(sub_id))


def _on(sub_id: str) -> Any:
    return lambda e: e["subscription"] == sub_id


@pytest.fixture
async def clients(make_relay: Any) -> AsyncIterator[PyClients]:
    pool = PyClients()
    yield pool
    await pool.aclose()


@pytest.mark.parametrize(("versions", "expected"), [(None, "1.2"), (["1.1"], "1.1")])
async def test_connected_headers(
    relay: RelayServer, stompjs: StompJsClient, versions: list[str] | None, expected: str
) -> None:
    options = {} if versions is None else {"stompVersions": versions}
    headers = await connect(stompjs, relay, login="guest", passcode="guest", **options)
    assert headers["version"] == expected
    assert headers["session"]
    assert headers["server"].startswith("stomprelay/")
    assert headers["heart-beat"] == "1000,1000"
    assert headers["x-server-id"] == "test-relay"


async def test_send_receive_byte_exact(relay: RelayServer, stompjs: StompJsClient) -> None:
    js = stompjs
    await connect(js, relay)
    destination = "/topic/room/js"
    await subscribe(js, destination, "s1")
    headers_sent = readable_by_stompjs(HEADERS_12)
    await js.send(destination, body=TEXT_BODY, headers=headers_sent)
    await js.send(destination, binary_body=BINARY_BODY, headers=headers_sent)

    ids = set()
    for body, content_type in (
        (TEXT_BODY.encode(), "text/plain;charset=utf-8"),
        (BINARY_BODY, "application/octet-stream"),
    ):
        event = await message(js, "s1")
        assert decode_binary_body(event) == body
        headers = event["headers"]
        assert headers["destination"] == destination
        assert headers["subscription"] == "s1"
        assert headers["content-length"] == str(len(body))
        assert headers["content-type"] == content_type
        for name, value in headers_sent.items():
            assert headers.get(name) == value, name
        ids.add(headers["message-id"])
    assert len(ids) == 2


async def test_many_messages_arrive_in_order(make_relay: Any, stompjs: StompJsClient) -> None:
    js = stompjs
    relay = await make_relay(frame_rate=0)  # 200 SENDs at once: past the default rate limit
    await connect(js, relay)
    await subscribe(js, "/topic/order", "s1")
    count = 200
    for n in range(count):
        await js.command(
            "send", destination="/topic/order", body=f"m{n:03d}", headers={"x-n": str(n)}
        )
    for n in range(count):
        event = await message(js, "s1")
        assert (event["headers"]["x-n"], event["body"]) == (str(n), f"m{n:03d}")


async def test_heartbeats_keep_an_idle_connection_alive(
    make_relay: Any, stompjs: StompJsClient
) -> None:
    server = await make_relay(heartbeat_send_ms=500, heartbeat_receive_ms=500)
    js = stompjs
    headers = await connect(js, server, heartbeat_incoming=500, heartbeat_outgoing=500)
    assert headers["heart-beat"] == "500,500"
    (connection,) = server.connections
    assert connection.session.send_interval == connection.session.receive_interval == 0.5
    # Idle on purpose for 3.2 s: only heart-beats flow, both ways.
    await js.expect_no(("heartbeat_lost", "ws_close", "error"), within=3.2)
    assert len(server.connections) == 1
    await subscribe(js, "/topic/idle", "s1")
    await js.send("/topic/idle", body="still here")
    assert (await message(js, "s1"))["body"] == "still here"


async def test_transactions_commit_delivers_and_abort_drops(
    relay: RelayServer, stompjs: StompJsClient
) -> None:
    js = stompjs
    await connect(js, relay)
    await subscribe(js, "/topic/tx", "s1")
    tx = (await js.begin("tx-1"))["tx"]
    await js.send("/topic/tx", body="held 1", headers={"transaction": tx})
    await js.send("/topic/tx", body="held 2", headers={"transaction": tx})
    await js.send("/topic/tx", body="outside")
    assert (await message(js))["body"] == "outside"
    await js.commit(tx)
    assert [(await message(js))["body"] for _ in range(2)] == ["held 1", "held 2"]

    tx2 = (await js.begin("tx-2"))["tx"]
    await js.send("/topic/tx", body="dropped", headers={"transaction": tx2})
    await js.abort(tx2)
    await js.send("/topic/tx", body="after abort", headers={"receipt": "r-after"})
    await js.expect("receipt", lambda e: e["receipt_id"] == "r-after")
    assert (await message(js))["body"] == "after abort"
    await js.expect_no(("message", "error"), within=0.2)


async def test_client_ack_is_cumulative(relay: RelayServer, stompjs: StompJsClient) -> None:
    js = stompjs
    await connect(js, relay)
    await subscribe(js, "/topic/acks", "s1", ack="client")
    for n in range(3):
        await js.send("/topic/acks", body=f"m{n}")
    events = [await message(js) for _ in range(3)]
    assert [e["body"] for e in events] == ["m0", "m1", "m2"]
    acks = [e["headers"]["ack"] for e in events]
    await js.ack("s1", acks[1], headers={"receipt": "ack-m1"})
    await js.expect("receipt", lambda e: e["receipt_id"] == "ack-m1")
    # m0 went with m1: acknowledging it again is an error, then the relay closes.
    await js.ack("s1", acks[0], headers={"receipt": "ack-m0"})
    error = await js.expect("error")
    assert error["headers"]["message"]
    assert error["headers"].get("receipt-id") == "ack-m0"
    await js.expect("ws_close")


async def test_client_individual_ack(relay: RelayServer, stompjs: StompJsClient) -> None:
    js = stompjs
    await connect(js, relay)
    await subscribe(js, "/topic/acks", "s1", ack="client-individual")
    for n in range(3):
        await js.send("/topic/acks", body=f"m{n}")
    events = [await message(js) for _ in range(3)]
    acks = [e["headers"]["ack"] for e in events]
    await js.ack("s1", acks[2], headers={"receipt": "ack-m2"})
    await js.nack("s1", acks[0], headers={"receipt": "nack-m0"})
    await js.ack("s1", acks[1], headers={"receipt": "ack-m1"})
    for receipt in ("ack-m2", "nack-m0", "ack-m1"):
        await js.expect("receipt", lambda e, r=receipt: e["receipt_id"] == r)
    await js.expect_no(("error", "ws_close"), within=0.2)


async def test_disconnect_with_receipt(relay: RelayServer, stompjs: StompJsClient) -> None:
    js = stompjs
    await connect(js, relay)
    await subscribe(js, "/topic/bye", "s1")
    assert len(relay.connections) == 1
    await js.disconnect()
    receipt = await js.expect("disconnected")  # stompjs only reports it on the RECEIPT
    assert receipt["headers"]["receipt-id"]
    deadline = time.monotonic() + 5
    while relay.connections:
        assert time.monotonic() < deadline, "the relay kept the connection"
        await asyncio.sleep(0.02)
    assert not [e for e in js.history if e["event"] == "error"]


@pytest.mark.parametrize("kind", ["ws", "tcp11"])
async def test_stompjs_receives_what_stomp_py_sends(
    relay: RelayServer, stompjs: StompJsClient, clients: PyClients, kind: str
) -> None:
    js = stompjs
    await connect(js, relay)
    await subscribe(js, LOBBY, "lobby")
    sender = clients(relay, kind, **({"binary_mode": True} if kind == "ws" else {}))
    await sender.connect()
    headers = readable_by_stompjs(HEADERS_12 if kind == "ws" else HEADERS)
    await sender.send(LOBBY, TEXT_BODY, headers=dict(headers))
    await sender.send(LOBBY, BINARY_BODY, headers=dict(headers))

    text = await message(js, "lobby")
    assert text["body"] == TEXT_BODY
    binary = await message(js, "lobby")
    assert decode_binary_body(binary) == BINARY_BODY
    for event, body in ((text, TEXT_BODY.encode()), (binary, BINARY_BODY)):
        assert decode_binary_body(event) == body
        assert event["headers"]["destination"] == LOBBY
        assert event["headers"]["content-length"] == str(len(body))
        for name, value in headers.items():
            assert event["headers"].get(name) == value, name


async def test_stomp_py_receives_what_stompjs_sends(
    relay: RelayServer, stompjs: StompJsClient, clients: PyClients
) -> None:
    receiver = clients(relay, "ws")
    await receiver.connect()
    await receiver.subscribe(LOBBY, "lobby")
    js = stompjs
    await connect(js, relay)
    await js.send(LOBBY, body=TEXT_BODY, headers=HEADERS_12)
    await js.send(LOBBY, binary_body=BINARY_BODY, headers=HEADERS_12)
    for body in (TEXT_BODY.encode(), BINARY_BODY):
        frame = await receiver.message()
        assert frame.body == body
        for name, value in HEADERS_12.items():
            assert frame.headers.get(name) == value, name
