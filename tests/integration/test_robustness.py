"""Hostile and unusual input that once broke the core, the relay or the transport.

Each test pins a bug found in review: peer input that raised out of the core,
events lost or leaked around an error, STOMP 1.0 corner cases, a TCP reset.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from rawstomp import RawStomp

from stomprelay.settings import Settings
from stomprelay.stomp.frames import V10, V12, Frame
from stomprelay.stomp.parser import FrameParser
from stomprelay.stomp.session import ServerSession, State, Unsubscribed
from stomprelay.transport import RelayServer

WATCH = "/topic/watch"


# -- helpers ---------------------------------------------------------------------------


def wire(command: str, *headers: tuple[str, str], body: bytes = b"", version: str = V12) -> bytes:
    return Frame(command, tuple(headers), body).serialize(version)


def frames_out(session: ServerSession) -> list[Frame]:
    out = []
    for item in session.data_to_send():
        if item == b"\n":
            continue
        parser = FrameParser(version=session.version)
        parser.feed(item)
        frame = parser.next_frame()
        assert frame is not None
        out.append(frame)
    return out


def connected_session(version: str = V12) -> ServerSession:
    session = ServerSession("sess-1", "relay-a", 0.0)
    headers: list[tuple[str, str]] = [("host", "localhost")]
    if version != V10:
        headers.append(("accept-version", version))
    session.receive_data(wire("CONNECT", *headers), 0.0)
    assert [f.command for f in frames_out(session)] == ["CONNECTED"]
    return session


async def wait_for_connections(relay: RelayServer, count: int) -> None:
    deadline = time.monotonic() + 3
    while len(relay.connections) != count:
        assert time.monotonic() < deadline, f"{len(relay.connections)} connections, not {count}"
        await asyncio.sleep(0.01)


async def error_then_close(client: RawStomp, within: float = 3) -> Frame:
    frames = await client.frames_until_closed(within)
    assert [f.command for f in frames] == ["ERROR"], frames
    return frames[0]


# -- 1. numeric headers that Python's int()/float cannot take escape the core ------------


@pytest.mark.parametrize(
    "heart_beat",
    ["0,1" + "0" * 400, "0," + "1" * 5000],
    ids=["overflows-float", "over-int-str-digits-limit"],
)
def test_huge_heartbeat_value_is_a_protocol_error(heart_beat: str) -> None:
    session = ServerSession("sess-1", "relay-a", 0.0)
    data = wire("CONNECT", ("accept-version", "1.2"), ("heart-beat", heart_beat))
    session.receive_data(data, 0.0)  # must not raise
    frames = frames_out(session)
    assert [f.command for f in frames] in (["ERROR"], ["CONNECTED"])
    if frames[0].command == "ERROR":
        assert session.state is State.CLOSED


def test_content_length_with_too_many_digits_is_a_protocol_error() -> None:
    session = connected_session()
    data = b"SEND\ndestination:/topic/a\ncontent-length:" + b"1" * 5000 + b"\n\nx\x00"
    session.receive_data(data, 1.0)  # must not raise
    (frame,) = frames_out(session)
    assert frame.command == "ERROR"
    assert session.closed


# -- 2. room JSON bodies that crash the connection task without an ERROR ----------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 50_000, b'{"username": ' + b"1" * 5000 + b"}", b'{"username": "\\ud800"}'],
    ids=["deep-nesting", "huge-int", "lone-surrogate"],
)
async def test_bad_room_join_body_gets_an_error_frame(relay: RelayServer, body: bytes) -> None:
    client = await RawStomp.open(relay.port)
    await client.connect()
    await client.send_frame(
        "SEND", [("destination", "/app/room/lobby/join"), ("receipt", "r-join")], body
    )
    error = await error_then_close(client)
    assert error.get("receipt-id") == "r-join"


async def test_chat_with_lone_surrogate_gets_an_error_frame(relay: RelayServer) -> None:
    client = await RawStomp.open(relay.port)
    await client.connect()
    await client.receipted(
        "SEND", [("destination", "/app/room/lobby/join")], b'{"username": "bob"}'
    )
    await client.send_frame(
        "SEND", [("destination", "/app/room/lobby/message")], b'{"message": "hi \\ud800"}'
    )
    await error_then_close(client)


# -- 3. events parsed before an error are skipped: leaks and lost SENDs -----------------


@pytest.mark.parametrize(
    "tail",
    [
        b"UNSUBSCRIBE\nid:s1\n\n\x00bogus\n\n\x00",  # parser error after the UNSUBSCRIBE
        b"SEND\ndestination:/topic/system\n\nx\x00UNSUBSCRIBE\nid:s1\n\n\x00",  # relay refusal
    ],
    ids=["protocol-error-after", "policy-error-before"],
)
async def test_unsubscribe_in_a_failing_chunk_does_not_leak(
    relay: RelayServer, tail: bytes
) -> None:
    router = relay.relay.router
    client = await RawStomp.open(relay.port)
    await client.connect()
    await client.subscribe("/topic/leak", "s1")
    assert "/topic/leak" in router._local
    await client.send_raw(tail)
    await error_then_close(client)
    await wait_for_connections(relay, 0)
    assert "/topic/leak" not in router._local, router._local
    assert relay.relay.keys.topic_channel("leak") not in router.channels()


async def test_send_before_a_bad_frame_in_the_same_message_is_delivered(
    relay: RelayServer,
) -> None:
    observer = await RawStomp.open(relay.port)
    await observer.connect()
    await observer.subscribe(WATCH, "w")
    bad = await RawStomp.open(relay.port)
    await bad.connect()
    await bad.send_raw(b"SEND\ndestination:/topic/watch\n\nbefore-error\x00bogus\n\n\x00")
    await error_then_close(bad)
    frame = await observer.expect("MESSAGE", timeout=2)
    assert frame.body == b"before-error"
    await observer.close()


# -- 4. ERROR for a COMMIT does not name the COMMIT's receipt -----------------------------


async def test_error_during_commit_names_the_commit_receipt(relay: RelayServer) -> None:
    client = await RawStomp.open(relay.port)
    await client.connect()
    await client.receipted("BEGIN", [("transaction", "tx")])
    await client.receipted("SEND", [("destination", "/topic/system"), ("transaction", "tx")], b"x")
    await client.send_frame("COMMIT", [("transaction", "tx"), ("receipt", "r-commit")])
    error = await error_then_close(client)
    assert error.get("receipt-id") == "r-commit", error


# -- 5. STOMP 1.0 UNSUBSCRIBE by destination ----------------------------------------------


def test_stomp10_unsubscribe_by_destination_of_a_subscription_with_id() -> None:
    session = connected_session(V10)
    session.receive_data(
        wire("SUBSCRIBE", ("id", "s1"), ("destination", "/topic/a"), version=V10), 1.0
    )
    events = session.receive_data(
        wire("UNSUBSCRIBE", ("destination", "/topic/a"), version=V10), 1.0
    )
    assert frames_out(session) == []
    assert [type(e) for e in events] == [Unsubscribed]
    assert session.subscriptions == {}


def test_stomp10_connect_ignores_a_heart_beat_header() -> None:
    session = ServerSession("sess-1", "relay-a", 0.0)
    session.receive_data(wire("CONNECT", ("host", "localhost"), ("heart-beat", "soon")), 0.0)
    assert [f.command for f in frames_out(session)] == ["CONNECTED"]
    assert session.version == V10


# -- 6. a TCP reset crashes the connection task -------------------------------------------


async def test_tcp_peer_reset_does_not_crash_the_connection_task(relay: RelayServer) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        assert relay.stomp_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.stomp_port)
        writer.write(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
        await writer.drain()
        assert (await reader.readuntil(b"\x00")).startswith(b"CONNECTED")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST
        await wait_for_connections(relay, 0)
        await asyncio.sleep(0.1)
    finally:
        loop.set_exception_handler(previous)
    assert unhandled == [], [c.get("exception") for c in unhandled]


# -- limits added after review ------------------------------------------------------------


def test_transaction_bytes_limit() -> None:
    session = ServerSession("s", "r", 0.0, Settings(max_transaction_bytes=100))
    session.receive_data(wire("CONNECT", ("accept-version", "1.2")), 0.0)
    frames_out(session)
    session.receive_data(wire("BEGIN", ("transaction", "t1")), 0.0)
    session.receive_data(wire("BEGIN", ("transaction", "t2")), 0.0)
    send = ("destination", "/topic/a")
    assert (
        session.receive_data(wire("SEND", send, ("transaction", "t1"), body=b"x" * 60), 0.0) == []
    )
    session.receive_data(wire("SEND", send, ("transaction", "t2"), body=b"y" * 60), 0.0)
    (error,) = frames_out(session)
    assert (error.command, error.get("message")) == ("ERROR", "Transaction too large")
    assert session.state is State.CLOSED


async def test_rooms_per_session_limit(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay = await make_relay(max_rooms_per_session=2)
    client = await RawStomp.open(relay.port)
    await client.connect()
    for room in ("one", "two"):
        await client.receipted(
            "SEND", [("destination", f"/app/room/{room}/join")], b'{"username": "ann"}'
        )
    # Joining a room again is not a new room.
    await client.receipted("SEND", [("destination", "/app/room/two/join")], b'{"username": "ann"}')
    await client.send_frame(
        "SEND", [("destination", "/app/room/three/join"), ("receipt", "r3")], b'{"username": "a"}'
    )
    error = await error_then_close(client)
    assert (error.get("message"), error.get("receipt-id")) == ("Too many rooms", "r3")
