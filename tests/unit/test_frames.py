"""Frame model, header escaping and serialisation (STOMP 1.2 "Value Encoding")."""

from __future__ import annotations

import dataclasses

import pytest

from stomprelay.errors import ProtocolError
from stomprelay.stomp.frames import (
    HEARTBEAT,
    SUPPORTED_VERSIONS,
    UNESCAPED_COMMANDS,
    V10,
    V11,
    V12,
    Frame,
    PreparedMessage,
    encode_frame,
    encode_headers,
    escape,
    escapes,
    unescape,
)
from stomprelay.stomp.parser import FrameParser


def parse_one(data: bytes, version: str) -> Frame:
    parser = FrameParser(version=version)
    parser.feed(data)
    frame = parser.next_frame()
    assert frame is not None
    assert parser.next_frame() is None
    assert parser.buffered == 0
    return frame


# -- Frame ----------------------------------------------------------------


def test_frame_is_frozen_with_ordered_headers() -> None:
    frame = Frame("SEND", (("a", "1"), ("b", "2"), ("a", "3")), b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.command = "ACK"  # type: ignore[misc]
    assert frame.get("a") == "1"
    assert frame.get("b") == "2"
    assert frame.get("missing") is None
    assert frame.get("missing", "dflt") == "dflt"
    assert "a" in frame
    assert "missing" not in frame
    assert Frame("SEND").headers == ()
    assert Frame("SEND").body == b""


def test_supported_versions_highest_first() -> None:
    assert SUPPORTED_VERSIONS == (V12, V11, V10)


# -- escaping -------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "text", "wire"),
    [
        (V12, "a\\b", "a\\\\b"),
        (V12, "a\nb", "a\\nb"),
        (V12, "a:b", "a\\cb"),
        (V12, "a\rb", "a\\rb"),
        (V12, "\\\n:\r", "\\\\\\n\\c\\r"),
        (V11, "a\\b", "a\\\\b"),
        (V11, "a\nb", "a\\nb"),
        (V11, "a:b", "a\\cb"),
        (V12, "plain ünïcode", "plain ünïcode"),
    ],
)
def test_escape_per_version(version: str, text: str, wire: str) -> None:
    assert escape(text, version) == wire
    assert unescape(wire, version) == text


def test_escape_11_leaves_cr_alone() -> None:
    assert escape("a\rb", V11) == "a\rb"


def test_escape_10_has_no_escaping() -> None:
    assert escape("a\\b:c", V10) == "a\\b:c"
    # 1.0 cannot carry a line break in a header.
    assert escape("a\nb\rc", V10) == "a b c"


@pytest.mark.parametrize(
    ("version", "wire"),
    [
        (V12, "a\\tb"),
        (V12, "trailing\\"),
        (V12, "\\"),
        (V12, "a\\Cb"),
        (V12, "a\\ b"),
        (V11, "a\\rb"),
        (V11, "a\\tb"),
        (V11, "trailing\\"),
    ],
)
def test_undefined_escape_is_protocol_error(version: str, wire: str) -> None:
    with pytest.raises(ProtocolError):
        unescape(wire, version)


def test_unescape_is_single_pass() -> None:
    # "\\\\n" is an escaped backslash followed by "n", not a newline.
    assert unescape("\\\\n", V12) == "\\n"
    assert unescape("\\\\c", V11) == "\\c"


@pytest.mark.parametrize("command", ["CONNECT", "STOMP", "CONNECTED"])
@pytest.mark.parametrize("version", [V11, V12])
def test_no_escaping_on_connect_frames(command: str, version: str) -> None:
    assert command in UNESCAPED_COMMANDS
    assert not escapes(version, command)
    wire = Frame(command, (("passcode", "a:b\\c"),)).serialize(version)
    assert b"passcode:a:b\\c\n" in wire
    frame = parse_one(wire, version)
    assert frame.headers == (("passcode", "a:b\\c"),)


@pytest.mark.parametrize("command", ["SEND", "MESSAGE", "ERROR", "RECEIPT", "SUBSCRIBE"])
def test_escapes_table(command: str) -> None:
    assert escapes(V12, command)
    assert escapes(V11, command)
    assert not escapes(V10, command)


# -- serialisation --------------------------------------------------------


def test_serialize_exact_bytes_12() -> None:
    frame = Frame("SEND", (("destination", "/topic/a:b"), ("x\ny", "c\\d\r")), b"hi")
    assert frame.serialize(V12) == (
        b"SEND\ndestination:/topic/a\\cb\nx\\ny:c\\\\d\\r\ncontent-length:2\n\nhi\x00"
    )


def test_serialize_exact_bytes_11() -> None:
    frame = Frame("SEND", (("destination", "/topic/a:b"), ("k", "x\ny")), b"")
    assert frame.serialize(V11) == b"SEND\ndestination:/topic/a\\cb\nk:x\\ny\n\n\x00"


def test_serialize_exact_bytes_10() -> None:
    frame = Frame("SEND", (("destination", "/q\\a"), ("k", "x\ny")), b"b")
    assert frame.serialize(V10) == b"SEND\ndestination:/q\\a\nk:x y\ncontent-length:1\n\nb\x00"


def test_serialize_defaults_to_12() -> None:
    frame = Frame("SEND", (("k", "a\rb"),))
    assert frame.serialize() == frame.serialize(V12)


def test_empty_body_has_no_content_length() -> None:
    assert Frame("RECEIPT", (("receipt-id", "1"),)).serialize() == b"RECEIPT\nreceipt-id:1\n\n\x00"


def test_existing_content_length_is_kept() -> None:
    wire = encode_frame("SEND", (("content-length", "3"),), b"a\x00b", V12)
    assert wire == b"SEND\ncontent-length:3\n\na\x00b\x00"
    assert wire.count(b"content-length") == 1


def test_body_with_nuls_round_trips() -> None:
    body = b"\x00a\x00\x00b\x00"
    frame = Frame("SEND", (("destination", "/topic/x"),), body)
    parsed = parse_one(frame.serialize(V12), V12)
    assert parsed.body == body
    assert parsed.get("content-length") == str(len(body))


def test_encode_headers_utf8() -> None:
    assert encode_headers((("k", "é"),), V12, "SEND") == "k:é\n".encode()


def test_heartbeat_is_eol() -> None:
    assert HEARTBEAT == b"\n"


# -- PreparedMessage ------------------------------------------------------


@pytest.mark.parametrize("version", [V10, V11, V12])
@pytest.mark.parametrize("ack", [None, "sess-7"])
def test_prepared_message_renders_a_message(version: str, ack: str | None) -> None:
    body = b'{"a":1}\x00tail'
    sender = (("content-type", "application/json"), ("x-custom", "v"), ("x-custom", "dup"))
    message = PreparedMessage("/topic/room/r1", "m-1", sender, body)
    frame = parse_one(message.render(version, "sub-0", ack), version)
    assert frame.command == "MESSAGE"
    assert frame.get("destination") == "/topic/room/r1"
    assert frame.get("message-id") == "m-1"
    assert frame.get("subscription") == "sub-0"
    assert frame.get("ack") == ack
    assert ("ack" in frame) is (ack is not None)
    assert frame.get("content-type") == "application/json"
    assert frame.get("x-custom") == "v"
    assert frame.get("content-length") == str(len(body))
    assert frame.body == body


@pytest.mark.parametrize("version", [V11, V12])
def test_prepared_message_escapes_headers(version: str) -> None:
    message = PreparedMessage("/topic/a:b", "id:1", (("x\\y", "line1\nline2"),), b"")
    frame = parse_one(message.render(version, "s:1", "a:1"), version)
    assert frame.get("destination") == "/topic/a:b"
    assert frame.get("message-id") == "id:1"
    assert frame.get("subscription") == "s:1"
    assert frame.get("ack") == "a:1"
    assert frame.get("x\\y") == "line1\nline2"
    assert frame.get("content-length") == "0"
    assert frame.body == b""


def test_prepared_message_renders_per_subscription() -> None:
    message = PreparedMessage("/topic/t", "m", (), b"body")
    first = parse_one(message.render(V12, "a"), V12)
    second = parse_one(message.render(V12, "b", "k"), V12)
    older = parse_one(message.render(V10, "c"), V10)
    assert (first.get("subscription"), first.get("ack")) == ("a", None)
    assert (second.get("subscription"), second.get("ack")) == ("b", "k")
    assert older.get("subscription") == "c"
    assert first.body == second.body == older.body == b"body"


def test_prepared_message_several_on_one_stream() -> None:
    message = PreparedMessage("/topic/t", "m", (), b"\x00\x00")
    parser = FrameParser(version=V12)
    parser.feed(message.render(V12, "a") + b"\n" + message.render(V12, "b"))
    frames = [parser.next_frame(), parser.next_frame()]
    assert parser.next_frame() is None
    assert [f.get("subscription") for f in frames if f] == ["a", "b"]
    assert all(f is not None and f.body == b"\x00\x00" for f in frames)
