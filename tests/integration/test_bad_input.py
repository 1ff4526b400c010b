"""Bad input over a raw WebSocket (contract sections 1-3).

Every protocol or policy error must produce exactly one ERROR frame (``message`` header,
a plain-language body, ``receipt-id`` when the bad frame asked for a receipt) and then a
close initiated by the relay, while other clients of the same relay carry on. The
transport cases check framing: no sub-protocol, text and binary messages, frames split
over messages and several frames in one message, one frame per message from the relay.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from rawstomp import RawStomp

from stomprelay.stomp.frames import Frame
from stomprelay.transport import RelayServer

WATCH = "/topic/watch"


async def open_observer(port: int) -> RawStomp:
    """A well-behaved client subscribed to WATCH."""
    client = await RawStomp.open(port)
    await client.connect()
    await client.subscribe(WATCH, "watch")
    return client


async def assert_still_served(observer: RawStomp) -> None:
    """The observer can still publish and receive, and got nothing it did not send."""
    token = secrets.token_hex(8).encode()
    await observer.send(WATCH, token)
    frame = await observer.expect("MESSAGE")
    assert frame.body == token, f"the observer received a stray message: {frame}"


def assert_plain_error(frame: Frame, pattern: str, receipt: str | None = None) -> None:
    assert frame.command == "ERROR", frame
    message = frame.get("message")
    assert message, f"ERROR without a message header: {frame}"
    assert re.search(pattern, message, re.IGNORECASE), f"{message!r} !~ {pattern!r}"
    body = frame.body.decode("utf-8")
    assert len(body.split()) >= 3, f"the ERROR body is not a sentence: {body!r}"
    for marker in ("Traceback", 'File "', "stomprelay/", "stomprelay."):
        assert marker not in body, f"the ERROR body leaks internals: {body!r}"
    content_type = frame.get("content-type")
    assert content_type is None or content_type.startswith("text/plain"), frame
    assert frame.get("receipt-id") == receipt, frame


async def expect_error_and_close(
    client: RawStomp, pattern: str, receipt: str | None = None, within: float = 5
) -> Frame:
    frames = await client.frames_until_closed(within)
    assert [f.command for f in frames] == ["ERROR"], frames
    assert_plain_error(frames[0], pattern, receipt)
    return frames[0]


async def wait_for_connections(relay: RelayServer, count: int) -> None:
    """The relay forgets closed connections promptly."""
    deadline = time.monotonic() + 2
    while len(relay.connections) != count:
        assert time.monotonic() < deadline, f"{len(relay.connections)} connections, not {count}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def observer(relay: RelayServer) -> AsyncIterator[RawStomp]:
    client = await open_observer(relay.port)
    yield client
    await client.close()


# -- protocol and policy errors ----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    #: Bytes sent in one WebSocket message after the set-up.
    data: bytes
    #: Regex the ERROR's message header must match.
    message: str
    #: Expected receipt-id, if the bad frame carried a receipt header.
    receipt: str | None = None
    #: STOMP version to CONNECT with first; None: send ``data`` before any CONNECT.
    connect: str | None = "1.2"
    #: Frames sent (each with a receipt, awaited) after CONNECT and before ``data``.
    setup: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def param(self) -> object:
        return pytest.param(self, id=self.id)


KIB = 1024
SEND_WATCH = b"SEND\ndestination:" + WATCH.encode() + b"\n"

CASES = [
    Case(
        "frame-before-connect",
        SEND_WATCH + b"receipt:r-early\n\nhello\x00",
        r"connect",
        receipt="r-early",
        connect=None,
    ),
    Case(
        "unsupported-accept-version",
        b"CONNECT\naccept-version:2.0,3.1\nhost:localhost\n\n\x00",
        r"version",
        connect=None,
    ),
    Case(
        "invalid-heart-beat",
        b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:soon\n\n\x00",
        r"heart-beat",
        connect=None,
    ),
    Case("undefined-escape", SEND_WATCH + b"x-bad:a\\tb\n\nhello\x00", r"escape"),
    Case(
        "undefined-escape-with-receipt",
        SEND_WATCH + b"receipt:r-esc\nx-bad:a\\tb\n\nhello\x00",
        r"escape",
        receipt="r-esc",
    ),
    Case(
        "lone-backslash",
        SEND_WATCH + b"x-bad:ab\\\n\nhello\x00",
        r"escape",
    ),
    Case(
        "escape-cr-undefined-in-1.1",
        SEND_WATCH + b"x-bad:a\\rb\n\nhello\x00",
        r"escape",
        connect="1.1",
    ),
    Case(
        "frame-over-64k",
        SEND_WATCH + b"\n" + b"x" * (65 * KIB) + b"\x00",
        r"too large",
    ),
    Case(
        "frame-over-64k-streamed",
        SEND_WATCH + b"\n" + b"x" * (65 * KIB),  # no NUL yet: the relay must not wait for it
        r"too large",
    ),
    Case(
        "content-length-over-limit-head-only",
        SEND_WATCH + b"content-length:1048576\n\n",
        r"too large",
    ),
    Case(
        "content-length-over-limit-with-receipt",
        SEND_WATCH + b"receipt:r-big\ncontent-length:1048576\n\n",
        r"too large",
        receipt="r-big",
    ),
    Case(
        "too-many-headers",
        SEND_WATCH + b"".join(b"x-h%d:v\n" % i for i in range(100)) + b"\nhello\x00",
        r"headers",
    ),
    Case(
        "header-line-too-long",
        SEND_WATCH + b"x-long:" + b"a" * (9 * KIB) + b"\n\nhello\x00",
        r"header line",
    ),
    Case("command-line-too-long-unterminated", b"S" * (2 * KIB), r"command line"),
    Case("command-line-too-long", b"SEND" + b"X" * (2 * KIB) + b"\n\n\x00", r"command line"),
    Case("invalid-command-lowercase", b"send\ndestination:/topic/watch\n\nhi\x00", r"command"),
    Case("unknown-command", b"PUBLISH\ndestination:/topic/watch\n\nhi\x00", r"command"),
    Case("malformed-header", SEND_WATCH + b"no-colon-here\n\nhi\x00", r"header"),
    Case(
        "missing-nul-after-content-length",
        SEND_WATCH + b"content-length:2\n\nhello\x00",
        r"terminator|content-length|frame",
    ),
    Case(
        "subscribe-duplicate-id",
        b"SUBSCRIBE\nid:s1\ndestination:/topic/other\nreceipt:r-dup\n\n\x00",
        r"duplicate|subscription",
        receipt="r-dup",
        setup=(("SUBSCRIBE", (("id", "s1"), ("destination", "/topic/one"))),),
    ),
    Case(
        "subscribe-missing-destination",
        b"SUBSCRIBE\nid:s9\nreceipt:r-nodest\n\n\x00",
        r"destination",
        receipt="r-nodest",
    ),
    Case(
        "send-with-message-id",
        SEND_WATCH + b"message-id:m-1\nreceipt:r-mid\n\nhello\x00",
        r"message-id",
        receipt="r-mid",
    ),
    Case(
        "send-missing-destination",
        b"SEND\nreceipt:r-nodest\n\nhello\x00",
        r"destination",
        receipt="r-nodest",
    ),
    Case(
        "commit-unknown-transaction",
        b"COMMIT\ntransaction:nope\nreceipt:r-tx\n\n\x00",
        r"transaction",
        receipt="r-tx",
    ),
    Case(
        "send-in-unknown-transaction",
        SEND_WATCH + b"transaction:nope\nreceipt:r-tx\n\nhello\x00",
        r"transaction",
        receipt="r-tx",
    ),
    Case(
        "ack-unknown-message",
        b"ACK\nid:nope\nreceipt:r-ack\n\n\x00",
        r"message",
        receipt="r-ack",
    ),
    Case(
        "send-bad-room-id",
        b"SEND\ndestination:/topic/room/bad*id\nreceipt:r-room\n\nhello\x00",
        r"room",
        receipt="r-room",
    ),
    Case(
        "subscribe-bad-room-id",
        b"SUBSCRIBE\nid:s2\ndestination:/topic/room/bad*id\nreceipt:r-room\n\n\x00",
        r"room",
        receipt="r-room",
    ),
    Case(
        "send-to-system",
        b"SEND\ndestination:/topic/system\nreceipt:r-sys\n\nhello\x00",
        r"system|read-only|destination",
        receipt="r-sys",
    ),
    Case(
        "send-to-unknown-destination",
        b"SEND\ndestination:/exchange/jobs\nreceipt:r-q\n\nhello\x00",
        r"destination",
        receipt="r-q",
    ),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
async def test_bad_input_gets_one_error_then_close(
    relay: RelayServer, observer: RawStomp, case: Case
) -> None:
    bad = await RawStomp.open(relay.port)
    if case.connect is not None:
        await bad.connect(case.connect)
        for command, headers in case.setup:
            await bad.receipted(command, headers)
    await bad.send_raw(case.data)
    error = await expect_error_and_close(bad, case.message, case.receipt, within=3)
    if case.id == "unsupported-accept-version":
        versions = (error.get("version") or "").split(",")
        assert {"1.0", "1.1", "1.2"} <= set(versions), error
    await assert_still_served(observer)
    await wait_for_connections(relay, 1)


@pytest.mark.parametrize(
    "room_id",
    ["bad*id", "", "a:b", "a b", "a{b}", "x" * 65, "caf\u00e9", "a/b", "tab\there"],
    ids=["star", "empty", "colon", "space", "brace", "too-long", "non-ascii", "slash", "tab"],
)
async def test_bad_room_ids_are_refused(
    relay: RelayServer, observer: RawStomp, room_id: str
) -> None:
    bad = await RawStomp.open(relay.port)
    await bad.connect()
    await bad.send_frame(
        "SEND", [("destination", f"/topic/room/{room_id}"), ("receipt", "r-bad")], b"hi"
    )
    await expect_error_and_close(bad, r"room", "r-bad")
    await assert_still_served(observer)


async def test_good_room_ids_are_served(relay: RelayServer) -> None:
    client = await RawStomp.open(relay.port)
    await client.connect()
    for n, room_id in enumerate(["lobby", "A-Z_0.9", "x" * 64]):
        destination = f"/topic/room/{room_id}"
        await client.subscribe(destination, f"s{n}")
        await client.send(destination, room_id.encode())
        frame = await client.expect("MESSAGE")
        assert (frame.get("destination"), frame.body) == (destination, room_id.encode())
    await client.close()


async def test_no_connect_within_connect_timeout(make_relay: Any) -> None:
    server = await make_relay(connect_timeout=0.5)
    observer = await open_observer(server.port)
    silent = await RawStomp.open(server.port)
    opened = time.monotonic()
    await expect_error_and_close(silent, r"connect", within=5)
    assert 0.4 <= time.monotonic() - opened < 3
    await assert_still_served(observer)
    await observer.close()


async def test_silent_client_is_closed_after_heartbeat_grace(make_relay: Any) -> None:
    server = await make_relay(heartbeat_send_ms=0, heartbeat_receive_ms=100)
    observer = await open_observer(server.port)
    silent = await RawStomp.open(server.port)
    connected = await silent.connect(heart_beat="200,0")
    assert connected.get("heart-beat") == "0,100"
    since = time.monotonic()
    await expect_error_and_close(silent, r"heart-?beat", within=5)
    elapsed = time.monotonic() - since
    # Negotiated interval max(200, 100) = 200 ms; the contract's grace is 2-3x that.
    assert 0.4 <= elapsed < 0.6 + 0.5, elapsed
    await assert_still_served(observer)
    await observer.close()


async def test_heartbeating_client_outlives_the_grace(make_relay: Any) -> None:
    server = await make_relay(heartbeat_send_ms=0, heartbeat_receive_ms=100)
    client = await RawStomp.open(server.port)
    await client.connect(heart_beat="100,0")
    await client.subscribe(WATCH)
    for _ in range(10):  # 1 s of EOL heart-beats, well past the 300 ms grace
        await client.send_raw(b"\n")
        await asyncio.sleep(0.1)
    await client.send(WATCH, b"alive")
    assert (await client.expect("MESSAGE")).body == b"alive"
    await client.close()


async def test_relay_sends_heartbeats_on_time(make_relay: Any) -> None:
    server = await make_relay(heartbeat_send_ms=100, heartbeat_receive_ms=0)
    client = await RawStomp.open(server.port)
    connected = await client.connect(heart_beat="0,100")
    assert connected.get("heart-beat") == "100,0"
    started = time.monotonic()
    beats = 0
    while beats < 5:
        assert await client.recv_message(timeout=1) == b"\n"
        beats += 1
    assert time.monotonic() - started < 1.5
    await client.close()


# -- framing and transport ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["v12.stomp"], "v12.stomp"),
        (["v11.stomp"], "v11.stomp"),
        (["v10.stomp"], "v10.stomp"),
        (["v10.stomp", "v11.stomp", "v12.stomp"], "v12.stomp"),
        (["mqtt", "v11.stomp"], "v11.stomp"),
    ],
)
async def test_subprotocol_negotiation(
    relay: RelayServer, offered: list[str], selected: str
) -> None:
    client = await RawStomp.open(relay.port, subprotocols=offered)
    assert client.ws.subprotocol == selected
    await client.close()


@pytest.mark.parametrize(
    ("accept_version", "version"), [("1.1", "1.1"), ("1.0,1.1,1.2", "1.2"), (None, "1.0")]
)
async def test_client_offering_no_subprotocol_is_served(
    relay: RelayServer, accept_version: str | None, version: str
) -> None:
    client = await RawStomp.open(relay.port, subprotocols=None)
    assert client.ws.subprotocol is None
    connected = await client.connect(accept_version, heart_beat=None)
    assert connected.get("version") == version
    if version == "1.0":
        assert "heart-beat" not in connected
    await client.subscribe(WATCH)
    await client.send(WATCH, b"served")
    assert (await client.expect("MESSAGE")).body == b"served"
    await client.close()


async def test_text_and_binary_websocket_messages_are_accepted(relay: RelayServer) -> None:
    client = await RawStomp.open(relay.port)
    await client.send_raw(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00", text=True)
    await client.expect("CONNECTED")
    client.version = "1.2"
    await client.send_raw(b"SUBSCRIBE\nid:s1\ndestination:/topic/watch\nreceipt:r1\n\n\x00")
    await client.expect("RECEIPT")
    await client.send_raw(SEND_WATCH + b"\nas text\x00", text=True)
    await client.send_raw(SEND_WATCH + b"content-length:3\n\n\xff\x00\xfe\x00")
    assert (await client.expect("MESSAGE")).body == b"as text"
    assert (await client.expect("MESSAGE")).body == b"\xff\x00\xfe"
    await client.close()


async def test_frames_split_over_many_websocket_messages(relay: RelayServer) -> None:
    body = "split h\u00e9\u00e9ders and b\u00f6dy \u2713".encode()
    stream = b"".join(
        [
            b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00",
            b"SUBSCRIBE\nid:s1\ndestination:/topic/watch\nreceipt:r1\n\n\x00",
            SEND_WATCH + b"x-h:\xc3\xa9\\c\n\n" + body + b"\x00",
            SEND_WATCH + b"content-length:%d\n\n" % len(body) + body + b"\x00",
        ]
    )
    client = await RawStomp.open(relay.port)
    for i in range(0, len(stream), 3):  # 3-byte binary messages split UTF-8 sequences too
        await client.send_raw(stream[i : i + 3])
    await client.expect("CONNECTED")
    client.version = "1.2"
    await client.expect("RECEIPT")
    first = await client.expect("MESSAGE")
    second = await client.expect("MESSAGE")
    assert first.body == second.body == body
    assert first.get("x-h") == "\u00e9:"
    await client.close()


async def test_several_frames_in_one_message_and_one_frame_per_reply(
    relay: RelayServer,
) -> None:
    client = await RawStomp.open(relay.port)
    await client.connect()
    # Leading EOLs, CRLF line endings and heart-beats between frames are all allowed.
    batch = b"".join(
        [
            b"\n\r\n",
            b"SUBSCRIBE\r\nid:s1\r\ndestination:/topic/watch\r\nreceipt:r-sub\r\n\r\n\x00",
            b"\n",
            *(SEND_WATCH + b"receipt:r-%d\n\nmessage %d\x00" % (n, n) for n in range(3)),
            b"\r\n",
        ]
    )
    await client.send_raw(batch)
    frames = [await client.recv_frame() for _ in range(7)]  # each from its own message
    assert frames[0].command == "RECEIPT"
    assert frames[0].get("receipt-id") == "r-sub"
    receipts = [f.get("receipt-id") for f in frames[1:] if f.command == "RECEIPT"]
    bodies = [f.body for f in frames[1:] if f.command == "MESSAGE"]
    assert sorted(receipts) == ["r-0", "r-1", "r-2"]  # type: ignore[type-var]
    assert bodies == [b"message 0", b"message 1", b"message 2"]
    await client.close()


async def test_repeated_header_first_one_wins(relay: RelayServer) -> None:
    client = await RawStomp.open(relay.port)
    await client.connect()
    await client.subscribe(WATCH)
    await client.send_raw(SEND_WATCH + b"x-dup:first\nx-dup:second\n\nhi\x00")
    frame = await client.expect("MESSAGE")
    assert frame.get("x-dup") == "first"
    await client.close()
