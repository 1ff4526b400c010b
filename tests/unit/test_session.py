"""ServerSession driven frame by frame: bytes and ``now`` in, events and bytes out."""

from __future__ import annotations

import pytest

from stomprelay.errors import PolicyError, ProtocolError
from stomprelay.settings import Settings
from stomprelay.stomp.frames import V10, V11, V12, Frame, PreparedMessage
from stomprelay.stomp.parser import FrameParser
from stomprelay.stomp.session import (
    Connected,
    DisconnectRequested,
    MessageSent,
    ReceiptDue,
    ServerSession,
    State,
    Subscribed,
    Subscription,
    Unsubscribed,
    negotiate_version,
)

HEARTBEAT = "<heart-beat>"
NO_HEARTBEAT = Settings(heartbeat_send_ms=0, heartbeat_receive_ms=0)


# -- helpers --------------------------------------------------------------


def wire(command: str, *headers: tuple[str, str], body: bytes = b"", version: str = V12) -> bytes:
    return Frame(command, tuple(headers), body).serialize(version)


def sent(session: ServerSession) -> list[Frame | str]:
    """Everything queued for the client, one parsed frame (or heart-beat) per item."""
    out: list[Frame | str] = []
    for item in session.data_to_send():
        if item == b"\n":
            out.append(HEARTBEAT)
            continue
        parser = FrameParser(version=session.version)
        parser.feed(item)
        frame = parser.next_frame()
        assert frame is not None, item
        assert parser.buffered == 0, "one frame per item"
        out.append(frame)
    return out


def only_frame(session: ServerSession) -> Frame:
    (frame,) = sent(session)
    assert isinstance(frame, Frame)
    return frame


def new_session(settings: Settings | None = None, now: float = 0.0) -> ServerSession:
    return ServerSession("sess-1", "relay-a", now, settings or NO_HEARTBEAT)


def connected(
    version: str = V12,
    settings: Settings | None = None,
    now: float = 0.0,
    heart_beat: str | None = None,
) -> ServerSession:
    session = new_session(settings, now)
    headers = [("accept-version", version), ("host", "localhost")]
    if heart_beat is not None:
        headers.append(("heart-beat", heart_beat))
    events = session.receive_data(wire("CONNECT", *headers), now)
    assert events == [Connected(version, None, "localhost")]
    assert only_frame(session).command == "CONNECTED"
    return session


def send(
    session: ServerSession,
    command: str,
    *headers: tuple[str, str],
    body: bytes = b"",
    now: float = 1.0,
) -> list[object]:
    return list(
        session.receive_data(wire(command, *headers, body=body, version=session.version), now)
    )


def assert_error(
    session: ServerSession, receipt_id: str | None = None, message: str | None = None
) -> Frame:
    """Exactly one ERROR went out, and the session is closed for good."""
    frame = only_frame(session)
    assert frame.command == "ERROR"
    assert frame.get("message")
    if message is not None:
        assert frame.get("message") == message
    assert frame.get("receipt-id") == receipt_id
    assert frame.body
    assert b"Traceback" not in frame.body
    frame.body.decode("utf-8")
    assert session.state is State.CLOSED
    assert session.closed
    assert session.error is not None
    assert session.close_reason == frame.get("message")
    assert_dead(session)
    return frame


def assert_dead(session: ServerSession) -> None:
    """A closed session ignores input, time and the application."""
    assert session.receive_data(wire("SEND", ("destination", "/topic/a")), 50.0) == []
    session.tick(1e9)
    assert session.deliver(PreparedMessage("/topic/a", "m", (), b""), "0", 50.0) is False
    session.send_receipt("late", 50.0)
    session.fail(PolicyError("again"))
    assert session.data_to_send() == []
    assert session.next_deadline() is None
    assert session.state is State.CLOSED


def deliver(session: ServerSession, sub_id: str, message_id: str, now: float = 2.0) -> Frame:
    destination = session.subscriptions[sub_id].destination
    message = PreparedMessage(destination, message_id, (), b"m")
    assert session.deliver(message, sub_id, now) is True
    frame = only_frame(session)
    assert frame.command == "MESSAGE"
    return frame


# -- CONNECT --------------------------------------------------------------


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
def test_connect(command: str) -> None:
    session = ServerSession("sess-1", "relay-a", 0.0, server_name="stomprelay/9.9")
    assert session.state is State.AWAIT_CONNECT
    events = session.receive_data(
        wire(
            command,
            ("accept-version", "1.0,1.1,1.2"),
            ("host", "example"),
            ("login", "alice"),
            ("passcode", "secret"),
        ),
        0.0,
    )
    assert events == [Connected(V12, "alice", "example")]
    assert session.state is State.OPEN
    assert session.version == V12
    assert session.login == "alice"
    frame = only_frame(session)
    assert frame.command == "CONNECTED"
    assert frame.get("version") == "1.2"
    assert frame.get("session") == "sess-1"
    assert frame.get("server") == "stomprelay/9.9"
    assert frame.get("heart-beat") == "1000,1000"
    assert frame.get("x-server-id") == "relay-a"
    assert frame.body == b""


def test_connected_server_header_default() -> None:
    session = ServerSession("s", "relay-a", 0.0)
    session.receive_data(wire("CONNECT", ("accept-version", "1.2")), 0.0)
    server = only_frame(session).get("server")
    assert server is not None
    assert server.startswith("stomprelay")


def test_connected_10() -> None:
    session = new_session()
    events = session.receive_data(b"CONNECT\nlogin:bob\n\n\x00", 0.0)
    assert events == [Connected(V10, "bob", None)]
    frame = only_frame(session)
    assert frame.get("version") == "1.0"
    assert frame.get("session") == "sess-1"
    assert frame.get("server")
    assert frame.get("x-server-id") == "relay-a"


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        ("1.0,1.1,1.2", V12),
        ("1.2,1.1,1.0", V12),
        ("1.2", V12),
        ("1.1,1.0", V11),
        ("1.1", V11),
        ("1.0", V10),
        ("1.3,1.1", V11),
        (" 1.0 , 1.1 ", V11),
        (None, V10),
    ],
)
def test_version_negotiation(accept: str | None, version: str) -> None:
    assert negotiate_version(accept) == version
    session = new_session()
    headers = () if accept is None else (("accept-version", accept),)
    (event,) = session.receive_data(wire("CONNECT", *headers), 0.0)
    assert isinstance(event, Connected)
    assert event.version == version
    assert session.version == version
    assert only_frame(session).get("version") == version


@pytest.mark.parametrize("accept", ["2.0", "1.3,3.1", "", "1.2.0"])
def test_no_common_version(accept: str) -> None:
    with pytest.raises(ProtocolError):
        negotiate_version(accept)
    session = new_session()
    events = session.receive_data(wire("CONNECT", ("accept-version", accept)), 0.0)
    assert events == []
    frame = assert_error(session)
    versions = frame.get("version")
    assert versions is not None
    assert set(versions.split(",")) == {"1.0", "1.1", "1.2"}


def test_connect_with_receipt_error_carries_receipt_id() -> None:
    session = new_session()
    session.receive_data(wire("CONNECT", ("accept-version", "9.9"), ("receipt", "c-1")), 0.0)
    assert_error(session, receipt_id="c-1")


def test_second_connect_is_an_error() -> None:
    session = connected()
    events = send(session, "STOMP", ("accept-version", "1.2"))
    assert events == []
    assert_error(session)


@pytest.mark.parametrize(
    "frame",
    [
        Frame("SEND", (("destination", "/topic/a"),), b"x"),
        Frame("SUBSCRIBE", (("id", "0"), ("destination", "/topic/a"))),
        Frame("DISCONNECT"),
        Frame("BEGIN", (("transaction", "t"),)),
    ],
)
def test_frame_before_connect_is_an_error(frame: Frame) -> None:
    session = new_session()
    assert session.receive_data(frame.serialize(V10), 0.0) == []
    assert_error(session)


def test_frame_before_connect_error_carries_receipt_id() -> None:
    session = new_session()
    session.receive_data(wire("SEND", ("destination", "/a"), ("receipt", "r-9")), 0.0)
    assert_error(session, receipt_id="r-9")


@pytest.mark.parametrize("command", ["FOO", "CONNECTED", "MESSAGE", "RECEIPT", "ERROR"])
def test_unknown_or_server_command_is_an_error(command: str) -> None:
    session = connected()
    assert send(session, command, ("receipt", "r")) == []
    assert_error(session, receipt_id="r")


def test_unparseable_bytes_are_an_error() -> None:
    session = connected()
    assert session.receive_data(b"not a frame\n\n\x00", 1.0) == []
    assert_error(session)


def test_limit_exceeded_is_an_error() -> None:
    session = connected()
    assert session.receive_data(b"SEND\ncontent-length:999999\n\n", 1.0) == []
    assert_error(session)


def test_connect_byte_by_byte_with_following_frames() -> None:
    session = new_session()
    data = (
        b"\r\n"
        + wire("CONNECT", ("accept-version", "1.1,1.2"))
        + b"\n"
        + wire("SUBSCRIBE", ("id", "a:b"), ("destination", "/topic/x\\y"))
        + wire("SEND", ("destination", "/topic/x"), body=b"\x00hi")
    )
    events: list[object] = []
    for i in range(len(data)):
        events += session.receive_data(data[i : i + 1], float(i))
    assert [type(e) for e in events] == [Connected, Subscribed, MessageSent]
    subscribed = events[1]
    assert isinstance(subscribed, Subscribed)
    assert subscribed.subscription.id == "a:b"
    assert subscribed.subscription.destination == "/topic/x\\y"
    message = events[2]
    assert isinstance(message, MessageSent)
    assert message.frame.body == b"\x00hi"


@pytest.mark.parametrize(("version", "value"), [(V12, "a:b"), (V10, "a\\cb")])
def test_frames_after_connect_use_the_negotiated_escaping(version: str, value: str) -> None:
    session = new_session()
    data = wire("CONNECT", ("accept-version", version)) + (
        b"SEND\ndestination:/topic/a\nk:a\\cb\n\n\x00"
    )
    events = session.receive_data(data, 0.0)
    assert isinstance(events[1], MessageSent)
    assert events[1].frame.get("k") == value


# -- heart-beating --------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "client", "send_interval", "receive_interval"),
    [
        ((10_000, 10_000), None, 0.0, 0.0),
        ((10_000, 10_000), "0,0", 0.0, 0.0),
        ((10_000, 10_000), "5000,20000", 20.0, 10.0),
        ((1_000, 2_000), "3000,500", 1.0, 3.0),
        ((0, 10_000), "5000,5000", 0.0, 10.0),
        ((10_000, 0), "5000,5000", 10.0, 0.0),
        ((0, 0), "5000,5000", 0.0, 0.0),
        ((4_000, 4_000), "0,1000", 4.0, 0.0),
        ((4_000, 4_000), "1000,0", 0.0, 4.0),
        ((4_000, 4_000), " 100 , 200 ", 4.0, 4.0),
    ],
)
def test_heartbeat_negotiation(
    server: tuple[int, int], client: str | None, send_interval: float, receive_interval: float
) -> None:
    settings = Settings(heartbeat_send_ms=server[0], heartbeat_receive_ms=server[1])
    session = new_session(settings)
    headers = [("accept-version", "1.2")]
    if client is not None:
        headers.append(("heart-beat", client))
    session.receive_data(wire("CONNECT", *headers), 0.0)
    assert only_frame(session).get("heart-beat") == f"{server[0]},{server[1]}"
    assert session.send_interval == send_interval
    assert session.receive_interval == receive_interval
    if send_interval == receive_interval == 0:
        assert session.next_deadline() is None


def test_no_heartbeating_in_10() -> None:
    session = new_session(Settings(heartbeat_send_ms=1000, heartbeat_receive_ms=1000))
    session.receive_data(wire("CONNECT", ("heart-beat", "1000,1000")), 0.0)
    assert session.version == V10
    assert session.send_interval == session.receive_interval == 0
    assert session.next_deadline() is None
    session.tick(1e6)
    frames = sent(session)
    assert [f.command for f in frames if isinstance(f, Frame)] == ["CONNECTED"]
    assert HEARTBEAT not in frames
    assert session.state is State.OPEN


@pytest.mark.parametrize("value", ["abc", "1", "1,2,3", "-1,0", "1,", ",1", "1.5,2"])
def test_invalid_heartbeat_header(value: str) -> None:
    session = new_session()
    session.receive_data(wire("CONNECT", ("accept-version", "1.2"), ("heart-beat", value)), 0.0)
    assert_error(session)


def test_heartbeat_header_with_unicode_digit() -> None:
    session = new_session()
    session.receive_data(
        wire("CONNECT", ("accept-version", "1.2"), ("heart-beat", "0,\u00b2")), 0.0
    )
    assert_error(session)


def test_heartbeat_sent_when_due() -> None:
    """Due the lead before the interval is up (the timer calls tick a little late)."""
    settings = Settings(heartbeat_send_ms=1000, heartbeat_receive_ms=0, heartbeat_send_lead=0.25)
    session = connected(settings=settings, now=100.0, heart_beat="0,500")
    assert session.send_interval == 1.0
    assert session.next_deadline() == 100.75
    session.tick(100.74)
    assert session.data_to_send() == []
    session.tick(100.75)
    assert session.data_to_send() == [b"\n"]
    assert session.next_deadline() == 101.5
    # Any frame sent counts as activity and pushes the next heart-beat back.
    session.receive_data(wire("SUBSCRIBE", ("id", "0"), ("destination", "/topic/a")), 101.0)
    deliver(session, "0", "m1", now=101.0)
    assert session.next_deadline() == 101.75
    session.tick(101.5)
    assert session.data_to_send() == []
    session.tick(101.75)
    assert session.data_to_send() == [b"\n"]
    assert session.state is State.OPEN


@pytest.mark.parametrize(
    ("interval_ms", "lead", "send_after"),
    [(1000, 0.25, 0.75), (10_000, 0.25, 9.75), (400, 0.25, 0.2), (1000, 0.0, 1.0)],
)
def test_heartbeat_lead_is_at_most_half_the_interval(
    interval_ms: int, lead: float, send_after: float
) -> None:
    settings = Settings(
        heartbeat_send_ms=interval_ms, heartbeat_receive_ms=0, heartbeat_send_lead=lead
    )
    session = connected(settings=settings, now=10.0, heart_beat=f"0,{interval_ms}")
    assert session.send_interval == interval_ms / 1000
    assert session.next_deadline() == pytest.approx(10.0 + send_after)
    session.tick(10.0 + send_after - 0.001)
    assert session.data_to_send() == []
    deadline = session.next_deadline()
    assert deadline is not None
    session.tick(deadline)
    assert session.data_to_send() == [b"\n"]


def test_heartbeat_not_sent_twice_for_one_period() -> None:
    settings = Settings(heartbeat_send_ms=1000, heartbeat_receive_ms=0)
    session = connected(settings=settings, heart_beat="0,1000")
    session.tick(1.0)
    session.tick(1.5)
    assert session.data_to_send() == [b"\n"]


def test_silent_client_is_closed_after_grace() -> None:
    settings = Settings(heartbeat_send_ms=0, heartbeat_receive_ms=1000, heartbeat_grace=3.0)
    session = connected(settings=settings, now=100.0, heart_beat="1000,0")
    assert session.receive_interval == 1.0
    assert session.next_deadline() == 103.0
    session.tick(102.9)
    assert session.data_to_send() == []
    # A heart-beat from the client resets the clock.
    assert session.receive_data(b"\n", 102.0) == []
    assert session.next_deadline() == 105.0
    session.tick(104.99)
    assert session.data_to_send() == []
    assert session.state is State.OPEN
    session.tick(105.0)
    assert_error(session)


@pytest.mark.parametrize("grace", [2.0, 2.5])
def test_grace_is_a_setting(grace: float) -> None:
    settings = Settings(heartbeat_send_ms=0, heartbeat_receive_ms=2000, heartbeat_grace=grace)
    session = connected(settings=settings, heart_beat="500,0")
    assert session.receive_interval == 2.0
    assert session.next_deadline() == 2.0 * grace
    session.tick(2.0 * grace - 0.01)
    assert session.state is State.OPEN
    session.tick(2.0 * grace)
    assert_error(session)


def test_next_deadline_is_the_earliest() -> None:
    settings = Settings(heartbeat_send_ms=5000, heartbeat_receive_ms=1000)
    session = connected(settings=settings, heart_beat="1000,1000")
    assert (session.send_interval, session.receive_interval) == (5.0, 1.0)
    assert session.next_deadline() == 3.0  # receive 1 s x grace 3 < send 5 s


def test_connect_timeout() -> None:
    session = new_session(Settings(connect_timeout=5.0), now=10.0)
    assert session.next_deadline() == 15.0
    session.tick(14.9)
    assert session.data_to_send() == []
    assert session.state is State.AWAIT_CONNECT
    # Part of a CONNECT does not count.
    assert session.receive_data(b"CONN", 14.0) == []
    session.tick(15.0)
    assert_error(session)


def test_connect_cancels_the_connect_timeout() -> None:
    session = new_session(Settings(connect_timeout=5.0, heartbeat_send_ms=0))
    session.receive_data(wire("CONNECT", ("accept-version", "1.2")), 1.0)
    assert session.next_deadline() is None
    session.tick(100.0)
    assert session.state is State.OPEN
    assert [f.command for f in sent(session) if isinstance(f, Frame)] == ["CONNECTED"]


# -- SUBSCRIBE / UNSUBSCRIBE / SEND ---------------------------------------


def test_subscribe_and_unsubscribe() -> None:
    session = connected()
    headers = (("id", "s1"), ("destination", "/topic/room/r1"), ("ack", "client"), ("x", "y"))
    events = send(session, "SUBSCRIBE", *headers)
    subscription = Subscription("s1", "/topic/room/r1", "client", headers)
    assert events == [Subscribed(subscription)]
    assert session.subscriptions == {"s1": subscription}
    events = send(session, "UNSUBSCRIBE", ("id", "s1"))
    assert events == [Unsubscribed(subscription)]
    assert session.subscriptions == {}
    assert session.data_to_send() == []


def test_subscribe_default_ack_is_auto() -> None:
    session = connected()
    (event,) = send(session, "SUBSCRIBE", ("id", "0"), ("destination", "/topic/a"))
    assert isinstance(event, Subscribed)
    assert event.subscription.ack == "auto"


def test_subscribe_10_without_id_uses_destination() -> None:
    session = connected(V10)
    (event,) = send(session, "SUBSCRIBE", ("destination", "/topic/a"))
    assert isinstance(event, Subscribed)
    assert event.subscription.id == "/topic/a"
    (event,) = send(session, "UNSUBSCRIBE", ("destination", "/topic/a"))
    assert isinstance(event, Unsubscribed)


@pytest.mark.parametrize(
    ("version", "headers"),
    [
        (V12, (("id", "0"),)),
        (V12, (("id", "0"), ("destination", ""))),
        (V12, (("destination", "/topic/a"),)),
        (V11, (("destination", "/topic/a"),)),
        (V12, (("id", "0"), ("destination", "/topic/a"), ("ack", "bogus"))),
        (V11, (("id", "0"), ("destination", "/topic/a"), ("ack", "AUTO"))),
        (V10, ()),
    ],
    ids=["no-dest", "empty-dest", "no-id-12", "no-id-11", "bad-ack", "bad-ack-case", "bare-10"],
)
def test_invalid_subscribe(version: str, headers: tuple[tuple[str, str], ...]) -> None:
    session = connected(version)
    assert send(session, "SUBSCRIBE", *headers, ("receipt", "r1")) == []
    assert_error(session, receipt_id="r1")


def test_duplicate_subscription_id() -> None:
    session = connected()
    send(session, "SUBSCRIBE", ("id", "0"), ("destination", "/topic/a"))
    assert send(session, "SUBSCRIBE", ("id", "0"), ("destination", "/topic/b")) == []
    assert_error(session)


def test_subscription_id_reusable_after_unsubscribe() -> None:
    session = connected()
    send(session, "SUBSCRIBE", ("id", "0"), ("destination", "/topic/a"))
    send(session, "UNSUBSCRIBE", ("id", "0"))
    (event,) = send(session, "SUBSCRIBE", ("id", "0"), ("destination", "/topic/b"))
    assert isinstance(event, Subscribed)


@pytest.mark.parametrize("headers", [(), (("id", "nope"),)])
def test_invalid_unsubscribe(headers: tuple[tuple[str, str], ...]) -> None:
    session = connected()
    assert send(session, "UNSUBSCRIBE", *headers) == []
    assert_error(session)


def test_max_subscriptions() -> None:
    session = connected(settings=Settings(max_subscriptions=2, heartbeat_send_ms=0))
    for i in range(2):
        send(session, "SUBSCRIBE", ("id", str(i)), ("destination", "/topic/a"))
    assert send(session, "SUBSCRIBE", ("id", "2"), ("destination", "/topic/a")) == []
    assert_error(session)


def test_send() -> None:
    session = connected()
    headers = (("destination", "/topic/a"), ("content-type", "text/plain"), ("x-k", "v"))
    (event,) = send(session, "SEND", *headers, body=b"a\x00b")
    assert isinstance(event, MessageSent)
    assert event.destination == "/topic/a"
    assert event.frame.body == b"a\x00b"
    assert event.frame.headers[:3] == headers
    assert session.data_to_send() == []


@pytest.mark.parametrize(
    "headers",
    [
        (("destination", "/topic/a"), ("message-id", "m")),
        (("destination", "/topic/a"), ("subscription", "s")),
        (),
        (("destination", ""),),
    ],
    ids=["message-id", "subscription", "no-destination", "empty-destination"],
)
def test_invalid_send(headers: tuple[tuple[str, str], ...]) -> None:
    session = connected()
    assert send(session, "SEND", *headers, ("receipt", "r-2")) == []
    assert_error(session, receipt_id="r-2")


# -- events, receipts, DISCONNECT -----------------------------------------


def test_events_in_order_and_disconnect_stops_processing() -> None:
    session = connected()
    sub = (("id", "0"), ("destination", "/topic/a"))
    data = b"".join(
        [
            wire("SUBSCRIBE", *sub, ("receipt", "r1")),
            wire("SEND", ("destination", "/topic/a"), ("receipt", "r2"), body=b"x"),
            b"\n",
            wire("UNSUBSCRIBE", ("id", "0"), ("receipt", "r3")),
            wire("DISCONNECT", ("receipt", "r4")),
            wire("SEND", ("destination", "/topic/a"), body=b"after"),
            b"garbage that would be an error\n\n\x00",
        ]
    )
    events = session.receive_data(data, 1.0)
    subscription = Subscription("0", "/topic/a", "auto", (*sub, ("receipt", "r1")))
    assert events[0] == Subscribed(subscription)
    assert events[1] == ReceiptDue("r1")
    assert isinstance(events[2], MessageSent)
    assert events[2].frame.body == b"x"
    assert events[3:] == [
        ReceiptDue("r2"),
        Unsubscribed(subscription),
        ReceiptDue("r3"),
        ReceiptDue("r4"),
        DisconnectRequested(),
    ]
    assert session.state is State.CLOSING
    assert session.data_to_send() == []
    # The application sends the receipt, then closes.
    session.send_receipt("r4", 1.0)
    assert only_frame(session) == Frame("RECEIPT", (("receipt-id", "r4"),))
    assert session.receive_data(wire("SEND", ("destination", "/topic/a")), 2.0) == []
    assert session.next_deadline() is None
    session.close("disconnect")
    assert session.state is State.CLOSED
    assert session.close_reason == "disconnect"
    assert session.error is None
    session.send_receipt("r5", 3.0)
    assert session.data_to_send() == []


def test_disconnect_without_receipt() -> None:
    session = connected()
    assert send(session, "DISCONNECT") == [DisconnectRequested()]
    assert session.state is State.CLOSING


def test_send_receipt_frame() -> None:
    session = connected()
    session.send_receipt("a:b", 1.0)
    assert only_frame(session) == Frame("RECEIPT", (("receipt-id", "a:b"),))


def test_error_stops_processing_the_rest_of_the_chunk() -> None:
    session = connected()
    data = b"".join(
        [
            wire("SEND", ("destination", "/topic/a"), body=b"1"),
            wire("SEND", ("destination", "/topic/a"), ("message-id", "x"), ("receipt", "bad")),
            wire("SEND", ("destination", "/topic/a"), body=b"3"),
        ]
    )
    events = session.receive_data(data, 1.0)
    assert len(events) == 1
    assert isinstance(events[0], MessageSent)
    assert events[0].frame.body == b"1"
    assert_error(session, receipt_id="bad")


def test_application_fail() -> None:
    session = connected()
    session.fail(PolicyError("Bad destination", "No such room."), "r-7")
    frame = assert_error(session, receipt_id="r-7", message="Bad destination")
    assert frame.body == b"No such room."
    assert isinstance(session.error, PolicyError)


def test_fail_before_connect_and_while_closing() -> None:
    session = new_session()
    session.fail(PolicyError("Shutting down"))
    assert_error(session, message="Shutting down")
    session = connected()
    send(session, "DISCONNECT")
    session.fail(PolicyError("Shutting down"))
    assert_error(session, message="Shutting down")


def test_close_is_quiet() -> None:
    session = connected()
    session.close("server stopping")
    assert session.closed
    assert session.data_to_send() == []
    assert session.receive_data(wire("SEND", ("destination", "/a")), 1.0) == []


# -- transactions ---------------------------------------------------------


def test_commit_releases_sends_in_order() -> None:
    session = connected()
    assert send(session, "BEGIN", ("transaction", "tx")) == []
    for i in range(3):
        headers = (("destination", "/topic/a"), ("transaction", "tx"))
        assert send(session, "SEND", *headers, body=b"%d" % i) == []
    events = send(session, "COMMIT", ("transaction", "tx"), ("receipt", "c"))
    assert [type(e) for e in events] == [MessageSent] * 3 + [ReceiptDue]
    assert [e.frame.body for e in events if isinstance(e, MessageSent)] == [b"0", b"1", b"2"]
    assert all("transaction" not in e.frame for e in events if isinstance(e, MessageSent))
    assert events[-1] == ReceiptDue("c")
    # The transaction is over.
    assert send(session, "COMMIT", ("transaction", "tx")) == []
    assert_error(session)


def test_receipt_for_a_held_send() -> None:
    session = connected()
    send(session, "BEGIN", ("transaction", "tx"))
    headers = (("destination", "/topic/a"), ("transaction", "tx"), ("receipt", "h1"))
    # The receipt goes through the application like every other, so it keeps its order.
    assert send(session, "SEND", *headers) == [ReceiptDue("h1")]
    assert session.data_to_send() == []
    (event,) = send(session, "COMMIT", ("transaction", "tx"), ("receipt", "c1"))[:1]
    assert isinstance(event, MessageSent)
    assert "receipt" not in event.frame
    assert event.receipt == "c1"  # an ERROR about the released SEND names the COMMIT


def test_abort_drops_held_sends() -> None:
    session = connected()
    send(session, "BEGIN", ("transaction", "tx"))
    send(session, "SEND", ("destination", "/topic/a"), ("transaction", "tx"))
    assert send(session, "ABORT", ("transaction", "tx"), ("receipt", "a")) == [ReceiptDue("a")]
    (event,) = send(session, "SEND", ("destination", "/topic/a"), body=b"outside")
    assert isinstance(event, MessageSent)
    assert send(session, "COMMIT", ("transaction", "tx")) == []
    assert_error(session)


def test_interleaved_transactions() -> None:
    session = connected()
    send(session, "BEGIN", ("transaction", "a"))
    send(session, "BEGIN", ("transaction", "b"))
    send(session, "SEND", ("destination", "/t"), ("transaction", "a"), body=b"a1")
    send(session, "SEND", ("destination", "/t"), ("transaction", "b"), body=b"b1")
    send(session, "SEND", ("destination", "/t"), ("transaction", "a"), body=b"a2")
    events = send(session, "COMMIT", ("transaction", "b"))
    assert [e.frame.body for e in events if isinstance(e, MessageSent)] == [b"b1"]
    events = send(session, "COMMIT", ("transaction", "a"))
    assert [e.frame.body for e in events if isinstance(e, MessageSent)] == [b"a1", b"a2"]


@pytest.mark.parametrize(
    "frames",
    [
        [Frame("SEND", (("destination", "/t"), ("transaction", "nope"), ("receipt", "r")))],
        [Frame("COMMIT", (("transaction", "nope"), ("receipt", "r")))],
        [Frame("ABORT", (("transaction", "nope"), ("receipt", "r")))],
        [Frame("ACK", (("id", "x"), ("transaction", "nope"), ("receipt", "r")))],
        [Frame("BEGIN", (("receipt", "r"),))],
        [Frame("COMMIT", (("receipt", "r"),))],
        [
            Frame("BEGIN", (("transaction", "t"),)),
            Frame("BEGIN", (("transaction", "t"), ("receipt", "r"))),
        ],
    ],
    ids=[
        "send-unknown",
        "commit-unknown",
        "abort-unknown",
        "ack-unknown",
        "begin-no-name",
        "commit-no-name",
        "duplicate-begin",
    ],
)
def test_transaction_errors(frames: list[Frame]) -> None:
    session = connected()
    assert session.receive_data(b"".join(f.serialize(V12) for f in frames), 1.0) == []
    assert_error(session, receipt_id="r")


def test_max_transaction_frames() -> None:
    session = connected(settings=Settings(max_transaction_frames=2, heartbeat_send_ms=0))
    send(session, "BEGIN", ("transaction", "tx"))
    for _ in range(2):
        assert send(session, "SEND", ("destination", "/t"), ("transaction", "tx")) == []
    assert send(session, "SEND", ("destination", "/t"), ("transaction", "tx")) == []
    assert_error(session)


def test_max_transactions() -> None:
    session = connected(settings=Settings(max_transactions=2, heartbeat_send_ms=0))
    send(session, "BEGIN", ("transaction", "a"))
    send(session, "BEGIN", ("transaction", "b"))
    assert session.data_to_send() == []
    send(session, "BEGIN", ("transaction", "c"))
    assert_error(session)


def test_disconnect_discards_open_transactions() -> None:
    session = connected()
    send(session, "BEGIN", ("transaction", "tx"))
    send(session, "SEND", ("destination", "/t"), ("transaction", "tx"))
    assert send(session, "DISCONNECT") == [DisconnectRequested()]


# -- ACK / NACK -----------------------------------------------------------


def subscribe_client(session: ServerSession, mode: str, sub_id: str = "s") -> None:
    send(session, "SUBSCRIBE", ("id", sub_id), ("destination", "/topic/t"), ("ack", mode))


def test_auto_subscription_messages_have_no_ack_header() -> None:
    session = connected()
    send(session, "SUBSCRIBE", ("id", "s"), ("destination", "/topic/t"))
    frame = deliver(session, "s", "m1")
    assert "ack" not in frame
    assert frame.get("subscription") == "s"
    assert frame.get("message-id") == "m1"


def test_deliver_to_unknown_subscription() -> None:
    session = connected()
    assert session.deliver(PreparedMessage("/t", "m", (), b""), "nope", 1.0) is False
    assert session.data_to_send() == []
    assert session.state is State.OPEN


@pytest.mark.parametrize("command", ["ACK", "NACK"])
def test_client_ack_is_cumulative_12(command: str) -> None:
    session = connected()
    subscribe_client(session, "client")
    acks = [deliver(session, "s", f"m{i}").get("ack") for i in range(4)]
    assert all(acks)
    assert len(set(acks)) == 4
    assert send(session, command, ("id", str(acks[2]))) == []
    assert session.data_to_send() == []
    # The fourth is still pending; the first three are settled.
    assert send(session, "ACK", ("id", str(acks[3]))) == []
    assert session.data_to_send() == []
    assert send(session, command, ("id", str(acks[0])), ("receipt", "r")) == []
    assert_error(session, receipt_id="r", message="Unknown message")


def test_client_individual_ack_12() -> None:
    session = connected()
    subscribe_client(session, "client-individual")
    acks = [deliver(session, "s", f"m{i}").get("ack") for i in range(3)]
    send(session, "ACK", ("id", str(acks[1])), ("receipt", "a1"))
    assert send(session, "NACK", ("id", str(acks[0]))) == []
    assert send(session, "ACK", ("id", str(acks[2]))) == []
    assert session.data_to_send() == []
    assert send(session, "ACK", ("id", str(acks[1]))) == []
    assert_error(session, message="Unknown message")


def test_ack_receipt() -> None:
    session = connected()
    subscribe_client(session, "client")
    ack = deliver(session, "s", "m").get("ack")
    assert send(session, "ACK", ("id", str(ack)), ("receipt", "ra")) == [ReceiptDue("ra")]


def test_ack_ids_are_per_subscription_12() -> None:
    session = connected()
    subscribe_client(session, "client", "a")
    subscribe_client(session, "client", "b")
    a1 = deliver(session, "a", "m1").get("ack")
    b1 = deliver(session, "b", "m1").get("ack")
    a2 = deliver(session, "a", "m2").get("ack")
    assert len({a1, b1, a2}) == 3
    send(session, "ACK", ("id", str(a2)))  # settles a1 and a2, not b1
    assert send(session, "ACK", ("id", str(b1))) == []
    assert session.data_to_send() == []


@pytest.mark.parametrize("headers", [(), (("message-id", "m0"),)], ids=["none", "message-id"])
def test_ack_12_needs_id(headers: tuple[tuple[str, str], ...]) -> None:
    session = connected()
    subscribe_client(session, "client")
    deliver(session, "s", "m0")
    assert send(session, "ACK", *headers) == []
    assert_error(session)


def test_ack_on_auto_subscription_is_an_error() -> None:
    session = connected()
    send(session, "SUBSCRIBE", ("id", "s"), ("destination", "/topic/t"))
    deliver(session, "s", "m1")
    assert send(session, "ACK", ("id", "m1")) == []
    assert_error(session, message="Unknown message")


def test_ack_11_by_message_id_and_subscription() -> None:
    session = connected(V11)
    subscribe_client(session, "client")
    frames = [deliver(session, "s", f"m{i}") for i in range(3)]
    assert all("ack" not in f for f in frames)
    assert send(session, "ACK", ("message-id", "m1"), ("subscription", "s")) == []
    assert session.data_to_send() == []
    assert send(session, "NACK", ("message-id", "m2"), ("subscription", "s")) == []
    assert session.data_to_send() == []
    assert send(session, "ACK", ("message-id", "m0"), ("subscription", "s")) == []
    assert_error(session, message="Unknown message")


def test_ack_11_client_individual() -> None:
    session = connected(V11)
    subscribe_client(session, "client-individual")
    for i in range(3):
        deliver(session, "s", f"m{i}")
    send(session, "ACK", ("message-id", "m2"), ("subscription", "s"))
    send(session, "ACK", ("message-id", "m0"), ("subscription", "s"))
    assert session.data_to_send() == []
    assert send(session, "ACK", ("message-id", "m2"), ("subscription", "s")) == []
    assert_error(session)


@pytest.mark.parametrize(
    "headers",
    [
        (("message-id", "m0"),),
        (("subscription", "s"),),
        (("message-id", "m0"), ("subscription", "x")),
    ],
    ids=["no-subscription", "no-message-id", "wrong-subscription"],
)
def test_invalid_ack_11(headers: tuple[tuple[str, str], ...]) -> None:
    session = connected(V11)
    subscribe_client(session, "client")
    deliver(session, "s", "m0")
    assert send(session, "ACK", *headers) == []
    assert_error(session)


def test_ack_10_by_message_id() -> None:
    session = connected(V10)
    subscribe_client(session, "client-individual")
    deliver(session, "s", "m0")
    deliver(session, "s", "m1")
    assert send(session, "ACK", ("message-id", "m1")) == []
    assert session.data_to_send() == []
    assert send(session, "ACK", ("message-id", "m1")) == []
    assert_error(session)


def test_ack_in_a_transaction() -> None:
    session = connected()
    subscribe_client(session, "client-individual")
    ack = str(deliver(session, "s", "m").get("ack"))
    send(session, "BEGIN", ("transaction", "t1"))
    send(session, "ACK", ("id", ack), ("transaction", "t1"))
    send(session, "ABORT", ("transaction", "t1"))
    # Aborted: still pending, so it can be acked in a committed transaction.
    send(session, "BEGIN", ("transaction", "t2"))
    send(session, "ACK", ("id", ack), ("transaction", "t2"))
    assert send(session, "COMMIT", ("transaction", "t2")) == []
    assert session.data_to_send() == []
    # Committed: settled.
    assert send(session, "ACK", ("id", ack)) == []
    assert_error(session)


def test_unsubscribe_forgets_pending_acks() -> None:
    session = connected()
    subscribe_client(session, "client")
    ack = str(deliver(session, "s", "m").get("ack"))
    send(session, "UNSUBSCRIBE", ("id", "s"))
    assert send(session, "ACK", ("id", ack)) == []
    assert_error(session)


def test_max_pending_acks() -> None:
    session = connected(settings=Settings(max_pending_acks=2, heartbeat_send_ms=0))
    subscribe_client(session, "client")
    acks = [deliver(session, "s", f"m{i}").get("ack") for i in range(2)]
    send(session, "ACK", ("id", str(acks[0])))
    deliver(session, "s", "m2")  # one slot freed
    message = PreparedMessage("/topic/t", "m3", (), b"")
    assert session.deliver(message, "s", 3.0) is False
    assert_error(session)


def test_pending_limit_does_not_apply_to_auto() -> None:
    session = connected(settings=Settings(max_pending_acks=1, heartbeat_send_ms=0))
    send(session, "SUBSCRIBE", ("id", "s"), ("destination", "/topic/t"))
    for i in range(3):
        deliver(session, "s", f"m{i}")
    assert session.state is State.OPEN


def test_message_carries_sender_headers() -> None:
    session = connected()
    send(session, "SUBSCRIBE", ("id", "s"), ("destination", "/topic/t"))
    message = PreparedMessage(
        "/topic/t", "m-9", (("content-type", "text/plain"), ("x-who", "a:b")), b"\x00body"
    )
    assert session.deliver(message, "s", 1.0)
    frame = only_frame(session)
    assert frame.get("destination") == "/topic/t"
    assert frame.get("message-id") == "m-9"
    assert frame.get("subscription") == "s"
    assert frame.get("content-type") == "text/plain"
    assert frame.get("x-who") == "a:b"
    assert frame.get("content-length") == "5"
    assert frame.body == b"\x00body"
