"""Real stomp.py 8.2 clients against an in-process relay, over WebSocket and plain TCP.

``ws`` is ``stomp.WSStompConnection`` (STOMP 1.2, no WebSocket sub-protocol offered);
``tcp11`` is plain ``stomp.Connection`` (STOMP 1.1) on the relay's STOMP/TCP listener;
``tcp10``/``tcp12`` are stomp.py's 1.0 and 1.2 connection classes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pyclient import (
    BINARY_BODY,
    HEADERS,
    HEADERS_12,
    KINDS,
    TEXT_BODY,
    VERSIONS,
    PyClient,
    PyClients,
)

from stomprelay.settings import Settings
from stomprelay.transport import RelayServer

MakeClient = Callable[..., PyClient]

TRANSPORTS = ["ws", "tcp11"]


@pytest.fixture
async def clients(make_relay: Any) -> AsyncIterator[PyClients]:
    """``clients(server, kind, **stomp_py_options)`` -> an unconnected :class:`PyClient`."""
    pool = PyClients()  # torn down before make_relay stops the relays
    yield pool
    await pool.aclose()


async def connected(make: MakeClient, server: RelayServer, kind: str, **options: Any) -> PyClient:
    client = make(server, kind, **options)
    await client.connect()
    return client


async def wait_until(predicate: Callable[[], bool], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", KINDS)
async def test_connected_headers(relay: RelayServer, clients: MakeClient, kind: str) -> None:
    first = await clients(relay, kind).connect()
    second = await clients(relay, kind).connect(with_connect_command=True)
    for frame in (first, second):
        headers = frame.headers
        assert headers["version"] == VERSIONS[kind]
        assert headers["session"]
        assert headers["server"].startswith("stomprelay/")
        assert headers["x-server-id"] == "test-relay"
        if kind == "tcp10":
            assert "heart-beat" not in headers
        else:
            assert headers["heart-beat"] == "1000,1000"
    assert first.headers["session"] != second.headers["session"]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_subscribe_send_receive_byte_exact(
    relay: RelayServer, clients: MakeClient, kind: str
) -> None:
    receiver = await connected(clients, relay, kind)
    # stomp.py sends text WebSocket messages unless told otherwise; binary bodies need binary.
    binary = {"binary_mode": True} if kind == "ws" else {}
    sender = await connected(clients, relay, kind, **binary)
    headers = HEADERS_12 if kind == "ws" else HEADERS
    destination = "/topic/room/bytes"
    await receiver.subscribe(destination)

    # content-type: the sender's, else text/plain for valid UTF-8 (NULs included), else binary.
    cases: list[tuple[bytes, dict[str, Any], str]] = [
        (TEXT_BODY.encode(), {}, "text/plain;charset=utf-8"),
        (BINARY_BODY, {}, "application/octet-stream"),
        (b"\x00" * 16, {}, "text/plain;charset=utf-8"),
        (b"", {}, "text/plain;charset=utf-8"),
        (b'{"k": "v"}', {"content_type": "application/json"}, "application/json"),
    ]
    for body, options, _ in cases:
        await sender.send(destination, body, headers=dict(headers), **options)

    message_ids = set()
    for body, _, content_type in cases:
        frame = await receiver.message()
        assert frame.body == body
        got = frame.headers
        assert got["destination"] == destination
        assert got["subscription"] == "s1"
        assert got["content-length"] == str(len(body))
        assert got["content-type"] == content_type
        for name, value in headers.items():
            assert got.get(name) == value, name
        message_ids.add(got["message-id"])
    assert len(message_ids) == len(cases)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_many_messages_arrive_in_order(
    relay: RelayServer, clients: MakeClient, kind: str
) -> None:
    receiver = await connected(clients, relay, kind)
    sender = await connected(clients, relay, kind)
    await receiver.subscribe("/topic/order")
    # Within the per-session burst, CONNECT included: 200 SENDs after a CONNECT were 201
    # frames against a burst of 200, refused ("rate limit exceeded") whenever they reached
    # the relay within 20 ms of each other, as a loaded machine batches them.
    count = 150
    assert count + 1 <= Settings().frame_burst

    def send_all() -> None:
        for n in range(count):
            sender.conn.send("/topic/order", f"message {n:03d} \u2713", headers={"x-n": str(n)})

    await sender.run(send_all)
    for n in range(count):
        frame = await receiver.message()
        assert (frame.headers["x-n"], frame.body) == (str(n), f"message {n:03d} \u2713".encode())


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_heartbeats_keep_an_idle_connection_alive(
    make_relay: Any, clients: MakeClient, kind: str
) -> None:
    server = await make_relay(heartbeat_send_ms=500, heartbeat_receive_ms=500)
    client = clients(server, kind, heartbeats=(500, 500))
    frame = await client.connect()
    assert frame.headers["heart-beat"] == "500,500"
    await client.subscribe("/topic/idle")
    (connection,) = server.connections
    assert connection.session.send_interval == connection.session.receive_interval == 0.5

    idle_until = time.monotonic() + 3.2
    while time.monotonic() < idle_until:  # idle on purpose: only heart-beats flow
        assert client.conn.is_connected(), "the connection dropped while idle"
        assert client.listener.heartbeat_timeouts == 0
        await asyncio.sleep(0.1)
    assert client.listener.heartbeats >= 4, client.listener.heartbeats
    assert len(server.connections) == 1

    await client.send("/topic/idle", b"still here")
    assert (await client.message()).body == b"still here"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transactions_commit_delivers_and_abort_drops(
    relay: RelayServer, clients: MakeClient, kind: str
) -> None:
    client = await connected(clients, relay, kind)
    destination = "/topic/tx"
    await client.subscribe(destination)
    conn = client.conn

    tx = await client.run(conn.begin)
    await client.send(destination, b"held 1", transaction=tx)
    await client.send(destination, b"held 2", transaction=tx)
    await client.send(destination, b"outside")
    assert (await client.message()).body == b"outside"  # the held sends wait for COMMIT
    await client.run(conn.commit, tx, receipt="commit-1")
    assert [(await client.message()).body for _ in range(2)] == [b"held 1", b"held 2"]
    await client.receipt("commit-1")

    tx2 = await client.run(conn.begin)
    await client.send(destination, b"dropped", transaction=tx2)
    await client.run(conn.abort, tx2, receipt="abort-1")
    await client.receipt("abort-1")
    await client.send(destination, b"after abort")
    assert (await client.message()).body == b"after abort"
    assert client.pending("message") == 0
    assert client.pending("error") == 0


def ack_args(client: PyClient, frame: Any) -> tuple[str, ...]:
    """What stomp.py's ``ack``/``nack`` take: 1.2 the ``ack`` id; 1.1 message-id + sub."""
    if client.version == "1.2":
        return (frame.headers["ack"],)
    return (frame.headers["message-id"], frame.headers["subscription"])


async def receive_three(client: PyClient, destination: str, ack: str) -> list[Any]:
    await client.subscribe(destination, ack=ack)
    for n in range(3):
        await client.send(destination, f"m{n}".encode())
    frames = [await client.message() for _ in range(3)]
    assert [f.body for f in frames] == [b"m0", b"m1", b"m2"]
    if client.version == "1.2":
        assert all(f.headers.get("ack") for f in frames)
    return frames


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_client_ack_is_cumulative(relay: RelayServer, clients: MakeClient, kind: str) -> None:
    client = await connected(clients, relay, kind)
    frames = await receive_three(client, "/topic/acks", "client")
    await client.run(client.conn.ack, *ack_args(client, frames[1]), receipt="ack-m1")
    await client.receipt("ack-m1")
    # m0 was acknowledged together with m1: naming it again is an error.
    await client.run(client.conn.ack, *ack_args(client, frames[0]), receipt="ack-m0")
    error = await client.next("error")
    assert error.headers["message"]
    assert error.headers.get("receipt-id") == "ack-m0"
    await asyncio.to_thread(client.listener.disconnected.wait, 5)
    assert client.listener.disconnected.is_set()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_client_individual_ack(relay: RelayServer, clients: MakeClient, kind: str) -> None:
    client = await connected(clients, relay, kind)
    frames = await receive_three(client, "/topic/acks", "client-individual")
    conn = client.conn
    await client.run(conn.ack, *ack_args(client, frames[1]), receipt="ack-m1")
    await client.receipt("ack-m1")
    await client.run(conn.ack, *ack_args(client, frames[0]), receipt="ack-m0")  # still pending
    await client.receipt("ack-m0")
    await client.run(conn.nack, *ack_args(client, frames[2]), receipt="nack-m2")
    await client.receipt("nack-m2")
    await client.run(conn.ack, *ack_args(client, frames[1]), receipt="again")
    error = await client.next("error")
    assert error.headers.get("receipt-id") == "again"


async def test_too_many_unacknowledged_messages(make_relay: Any, clients: MakeClient) -> None:
    server = await make_relay(max_pending_acks=2)
    client = await connected(clients, server, "ws")
    await client.subscribe("/topic/acks", ack="client-individual")
    for n in range(3):
        await client.send("/topic/acks", f"m{n}".encode())
    assert [(await client.message()).body for _ in range(2)] == [b"m0", b"m1"]
    error = await client.next("error")
    assert "unacknowledged" in error.headers["message"].lower()


@pytest.mark.parametrize("kind", KINDS)
async def test_disconnect_with_receipt(relay: RelayServer, clients: MakeClient, kind: str) -> None:
    client = await connected(clients, relay, kind)
    await client.subscribe("/topic/bye")
    await wait_until(lambda: len(relay.connections) == 1)
    await asyncio.wait_for(client.run(client.conn.disconnect, receipt="bye"), 5)
    await client.receipt("bye")
    await asyncio.to_thread(client.listener.disconnected.wait, 5)
    assert client.listener.disconnected.is_set()
    await wait_until(lambda: not relay.connections)
    assert client.pending("error") == 0


@pytest.mark.parametrize(("publisher", "subscriber"), [("tcp11", "ws"), ("ws", "tcp12")])
async def test_across_transports(
    relay: RelayServer, clients: MakeClient, publisher: str, subscriber: str
) -> None:
    options = {"binary_mode": True} if publisher == "ws" else {}  # binary bodies over WS
    pub = await connected(clients, relay, publisher, **options)
    sub = await connected(clients, relay, subscriber)
    destination = "/topic/room/lobby"
    await sub.subscribe(destination, "lobby")
    await pub.send(destination, TEXT_BODY, headers=dict(HEADERS))
    await pub.send(destination, BINARY_BODY, headers=dict(HEADERS))
    for body in (TEXT_BODY.encode(), BINARY_BODY):
        frame = await sub.message()
        assert frame.body == body
        assert frame.headers["subscription"] == "lobby"
        for name, value in HEADERS.items():
            assert frame.headers.get(name) == value, name
