"""Incremental frame parser: framing, escaping, limits and a round-trip property."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stomprelay.errors import FrameTooLarge, ProtocolError
from stomprelay.settings import Limits
from stomprelay.stomp.frames import V10, V11, V12, Frame
from stomprelay.stomp.parser import FrameParser

KIB = 1024


def parse_all(data: bytes, version: str = V12, limits: Limits | None = None) -> list[Frame]:
    parser = FrameParser(limits, version=version)
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    assert parser.buffered == 0
    return frames


def parse_chunks(chunks: list[bytes], version: str = V12) -> list[Frame]:
    parser = FrameParser(version=version)
    frames = []
    for chunk in chunks:
        parser.feed(chunk)
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    assert parser.buffered == 0
    return frames


def refuses(
    data: bytes,
    error: type[Exception] = ProtocolError,
    *,
    version: str = V12,
    limits: Limits | None = None,
) -> None:
    """Feeding ``data`` in one chunk ends in ``error``."""
    parser = FrameParser(limits, version=version)
    parser.feed(data)
    with pytest.raises(error):
        drain(parser)


def drain(parser: FrameParser) -> list[Frame]:
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    return frames


# -- framing --------------------------------------------------------------


def test_simple_frame() -> None:
    (frame,) = parse_all(b"SEND\ndestination:/topic/a\n\nhello\x00")
    assert frame == Frame("SEND", (("destination", "/topic/a"),), b"hello")


def test_frame_without_headers_or_body() -> None:
    assert parse_all(b"DISCONNECT\n\n\x00") == [Frame("DISCONNECT")]


def test_incomplete_input_returns_none() -> None:
    parser = FrameParser(version=V12)
    assert parser.next_frame() is None
    parser.feed(b"SEND\nk:v\n\nbody")
    assert parser.next_frame() is None
    assert parser.buffered > 0
    parser.feed(b"\x00")
    frame = parser.next_frame()
    assert frame is not None
    assert frame.body == b"body"


def test_content_length_body_holds_nuls() -> None:
    body = b"\x00ab\x00\x00cd\x00"
    wire = b"SEND\ncontent-length:%d\n\n%s\x00" % (len(body), body)
    (frame,) = parse_all(wire)
    assert frame.body == body
    assert frame.get("content-length") == str(len(body))


def test_content_length_zero() -> None:
    (frame,) = parse_all(b"SEND\ncontent-length:0\n\n\x00")
    assert frame.body == b""


def test_content_length_waits_for_the_whole_body() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\ncontent-length:4\n\n\x00\x00")
    assert parser.next_frame() is None
    parser.feed(b"\x00\x00")
    assert parser.next_frame() is None  # body complete, terminator not yet here
    parser.feed(b"\x00")
    frame = parser.next_frame()
    assert frame is not None
    assert frame.body == b"\x00" * 4


def test_nul_terminated_body_without_content_length() -> None:
    frames = parse_all(b"SEND\nk:v\n\nfirst\x00SEND\n\nsecond\x00")
    assert [f.body for f in frames] == [b"first", b"second"]
    assert all("content-length" not in f for f in frames)


def test_leading_eols_and_heartbeats_between_frames() -> None:
    wire = b"\n\r\n\nSEND\n\na\x00\n\n\r\nSEND\n\nb\x00\r\n\n"
    assert [f.body for f in parse_all(wire)] == [b"a", b"b"]


def test_only_heartbeats() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"\n\r\n\n")
    assert parser.next_frame() is None
    assert parser.buffered == 0


def test_crlf_line_endings() -> None:
    wire = b"SEND\r\ndestination:/topic/a\r\nk:v\r\n\r\nbody\x00"
    (frame,) = parse_all(wire)
    assert frame == Frame("SEND", (("destination", "/topic/a"), ("k", "v")), b"body")


def test_crlf_split_everywhere() -> None:
    wire = b"\r\nSEND\r\nk:v\r\n\r\nbody\x00\r\n"
    assert parse_chunks([bytes([b]) for b in wire]) == [Frame("SEND", (("k", "v"),), b"body")]


def test_cr_inside_value_is_kept_in_11() -> None:
    (frame,) = parse_all(b"SEND\nk:a\rb\n\n\x00", version=V11)
    assert frame.get("k") == "a\rb"


@pytest.mark.parametrize("version", [V10, V11, V12])
def test_frame_split_byte_by_byte(version: str) -> None:
    frames = [
        Frame("SEND", (("destination", "/topic/x"), ("k", "v")), b"a\x00b"),
        Frame("SUBSCRIBE", (("id", "0"), ("destination", "/topic/y"))),
        Frame("SEND", (("destination", "/topic/x"),), b"z" * 300),
    ]
    wire = b"\n".join(f.serialize(version) for f in frames)
    chunks = [wire[i : i + 1] for i in range(len(wire))]
    expected = [
        Frame(
            f.command,
            f.headers + ((("content-length", str(len(f.body))),) if f.body else ()),
            f.body,
        )
        for f in frames
    ]
    assert parse_chunks(chunks, version) == expected


def test_several_frames_in_one_chunk() -> None:
    wire = b"".join(
        Frame("SEND", (("destination", f"/topic/{i}"),), b"%d" % i).serialize() for i in range(20)
    )
    frames = parse_all(wire)
    assert [f.get("destination") for f in frames] == [f"/topic/{i}" for i in range(20)]
    assert [f.body for f in frames] == [b"%d" % i for i in range(20)]


def test_next_frame_returns_one_frame_at_a_time() -> None:
    parser = FrameParser(version=V10)
    parser.feed(b"SEND\nk:a\\cb\n\n\x00SEND\nk:a\\cb\n\n\x00")
    first = parser.next_frame()
    parser.version = V12  # as the session does after CONNECT
    second = parser.next_frame()
    assert first is not None
    assert second is not None
    assert first.get("k") == "a\\cb"
    assert second.get("k") == "a:b"


# -- headers --------------------------------------------------------------


def test_repeated_header_first_wins() -> None:
    (frame,) = parse_all(b"SEND\nk:first\nother:1\nk:second\nk:third\n\n\x00")
    assert frame.headers == (("k", "first"), ("other", "1"))


def test_repeated_header_first_wins_after_unescaping() -> None:
    (frame,) = parse_all(b"SEND\na\\cb:first\na:b:second\n\n\x00")
    # "a\cb" unescapes to "a:b"; "a:b:second" is name "a" value "b:second".
    assert frame.headers == (("a:b", "first"), ("a", "b:second"))


def test_repeated_content_length_first_wins() -> None:
    (frame,) = parse_all(b"SEND\ncontent-length:2\ncontent-length:5\n\na\x00\x00")
    assert frame.body == b"a\x00"


def test_value_may_contain_colons() -> None:
    (frame,) = parse_all(b"SEND\nurl:http://x:80/\n\n\x00", version=V10)
    assert frame.get("url") == "http://x:80/"


def test_empty_value() -> None:
    (frame,) = parse_all(b"SEND\nk:\n\n\x00")
    assert frame.headers == (("k", ""),)


@pytest.mark.parametrize(
    ("version", "raw", "value"),
    [
        (V12, b"a\\\\b\\nc\\cd\\re", "a\\b\nc:d\re"),
        (V11, b"a\\\\b\\nc\\cd", "a\\b\nc:d"),
        (V10, b"a\\\\b\\nc\\cd\\re\\t", "a\\\\b\\nc\\cd\\re\\t"),
    ],
)
def test_unescaping_per_version(version: str, raw: bytes, value: str) -> None:
    (frame,) = parse_all(b"MESSAGE\nk" + b":" + raw + b"\n\n\x00", version=version)
    assert frame.get("k") == value


@pytest.mark.parametrize(
    ("version", "raw"),
    [
        (V12, b"a\\tb"),
        (V12, b"trailing\\"),
        (V11, b"a\\rb"),
        (V11, b"x\\"),
    ],
)
def test_undefined_escape_in_frame(version: str, raw: bytes) -> None:
    refuses(b"SEND\nk:" + raw + b"\n\n\x00", version=version)
    refuses(b"SEND\n" + raw + b":v\n\n\x00", version=version)


@pytest.mark.parametrize("command", [b"CONNECT", b"STOMP", b"CONNECTED"])
@pytest.mark.parametrize("version", [V11, V12])
def test_connect_headers_not_unescaped(command: bytes, version: str) -> None:
    (frame,) = parse_all(command + b"\npasscode:a\\tb\\c\n\n\x00", version=version)
    assert frame.get("passcode") == "a\\tb\\c"


def test_invalid_utf8_header() -> None:
    refuses(b"SEND\nk:\xff\xfe\n\n\x00")
    refuses(b"SEND\n\xc3:v\n\n\x00")


def test_header_without_colon() -> None:
    refuses(b"SEND\nnocolon\n\n\x00")


@pytest.mark.parametrize(
    "command", [b"send", b"SE ND", b"SEND1", b"S-END", b"\xc3\x89", b"\rSEND", b"SEND:"]
)
def test_invalid_command(command: bytes) -> None:
    refuses(command + b"\nk:v\n\n\x00")


@pytest.mark.parametrize("value", [b"abc", b"-1", b"", b"1.5", b"0x10", b"\xc2\xb2", b"1 2"])
def test_invalid_content_length(value: bytes) -> None:
    refuses(b"SEND\ncontent-length:" + value + b"\n\nbody\x00")


def test_invalid_content_length_refused_before_body() -> None:
    refuses(b"SEND\ncontent-length:nope\n\n")


def test_content_length_lying_short() -> None:
    # content-length says 2 but the body runs on: no NUL after 2 octets.
    refuses(b"SEND\ncontent-length:2\n\nabcdef\x00")


def test_content_length_lying_split() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\ncontent-length:3\n\nabc")
    assert parser.next_frame() is None
    parser.feed(b"d\x00")
    with pytest.raises(ProtocolError):
        parser.next_frame()


# -- limits ---------------------------------------------------------------


def test_default_limits() -> None:
    limits = Limits()
    assert limits.max_frame_size == 64 * KIB
    assert limits.max_headers == 64
    assert limits.max_header_line == 8 * KIB
    assert limits.max_command_line == 1 * KIB


def test_frame_up_to_the_limit_is_accepted() -> None:
    head = b"SEND\ncontent-length:"
    # Whole frame (head, body, NUL) exactly max_frame_size octets.
    size = 64 * KIB
    digits = 5
    body_len = size - len(head) - digits - 2 - 1
    wire = head + b"%d\n\n" % body_len + b"x" * body_len + b"\x00"
    assert len(wire) == size
    (frame,) = parse_all(wire)
    assert len(frame.body) == body_len


def test_frame_over_the_limit_with_content_length() -> None:
    head = b"SEND\ncontent-length:"
    body_len = 64 * KIB - len(head) - 5 - 2 - 1 + 1
    refuses(head + b"%d\n\n" % body_len + b"x" * body_len + b"\x00", FrameTooLarge)


def test_large_content_length_refused_before_the_body_arrives() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\ndestination:/topic/a\ncontent-length:70000\n\n")
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_huge_content_length_refused_from_head_alone() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\ncontent-length:99999999999999999999\n\n")
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_content_length_limit_follows_settings() -> None:
    limits = Limits(max_frame_size=100)
    parser = FrameParser(limits, version=V12)
    parser.feed(b"SEND\ncontent-length:200\n\n")
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_streamed_body_without_content_length_over_the_limit() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\ndestination:/topic/a\n\n")
    for _ in range(63):
        parser.feed(b"x" * KIB)
        assert parser.next_frame() is None
    parser.feed(b"x" * 2 * KIB)
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "nul-last"])
def test_nul_terminated_frame_over_the_limit(chunked: bool) -> None:
    wire = b"SEND\ndestination:/topic/a\n\n" + b"x" * (64 * KIB) + b"\x00"
    chunks = [wire[: 64 * KIB], wire[64 * KIB :]] if chunked else [wire]
    with pytest.raises(FrameTooLarge):
        parse_chunks(chunks)


def test_large_head_refused() -> None:
    limits = Limits(max_frame_size=200)
    head = b"SEND\n" + b"".join(b"h%d:%s\n" % (i, b"v" * 20) for i in range(10)) + b"\n"
    refuses(head + b"\x00", FrameTooLarge, limits=limits)


def test_header_count_limit() -> None:
    ok = b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(64)) + b"\n\x00"
    (frame,) = parse_all(ok)
    assert len(frame.headers) == 64
    too_many = b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(65)) + b"\n\x00"
    refuses(too_many, FrameTooLarge)


def test_header_count_limit_counts_repeated_headers() -> None:
    refuses(b"SEND\n" + b"k:v\n" * 65 + b"\n\x00", FrameTooLarge)


def test_header_count_refused_before_head_ends() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(65)))
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_header_line_limit() -> None:
    line = b"k:" + b"v" * (8 * KIB - 2)
    (frame,) = parse_all(b"SEND\n" + line + b"\n\n\x00")
    assert frame.get("k") == "v" * (8 * KIB - 2)
    refuses(b"SEND\n" + line + b"v\n\n\x00", FrameTooLarge)


def test_header_line_limit_applies_before_unescaping() -> None:
    # 4097 escaped colons are 8194 wire octets but only 4097 characters.
    refuses(b"SEND\nk:" + b"\\c" * 4097 + b"\n\n\x00", FrameTooLarge)


def test_header_line_refused_while_still_arriving() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\nk:" + b"v" * (9 * KIB))
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_complete_long_header_line_refused_before_head_ends() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"SEND\nk:" + b"v" * (9 * KIB) + b"\n")
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_command_line_limit() -> None:
    (frame,) = parse_all(b"A" * KIB + b"\n\n\x00")
    assert frame.command == "A" * KIB
    refuses(b"A" * (KIB + 1) + b"\n\n\x00", FrameTooLarge)


def test_command_line_refused_while_still_arriving() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"A" * (KIB + 1))
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_complete_long_command_line_refused_before_head_ends() -> None:
    parser = FrameParser(version=V12)
    parser.feed(b"A" * (2 * KIB) + b"\nk:v\n")
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_limits_are_settings() -> None:
    limits = Limits(max_frame_size=1000, max_headers=2, max_header_line=10, max_command_line=4)
    refuses(b"SEND\na:1\nb:2\nc:3\n\n\x00", FrameTooLarge, limits=limits)
    refuses(b"SEND\nk:12345678901\n\n\x00", FrameTooLarge, limits=limits)
    refuses(b"ABORT\n\n\x00", FrameTooLarge, limits=limits)
    refuses(b"SEND\n\n" + b"x" * 1000, FrameTooLarge, limits=limits)
    (frame,) = parse_all(b"SEND\na:1\nb:2\n\n\x00", limits=limits)
    assert frame.headers == (("a", "1"), ("b", "2"))


def test_frame_too_large_is_a_protocol_error() -> None:
    assert issubclass(FrameTooLarge, ProtocolError)


# -- round-trip property --------------------------------------------------

SPECIALS_12 = ":\n\r\\"
SPECIALS_11 = ":\n\\"
ESCAPED_COMMANDS = ["SEND", "MESSAGE", "ERROR", "RECEIPT", "SUBSCRIBE", "ACK", "BEGIN"]


def header_text(version: str, *, min_size: int) -> st.SearchStrategy[str]:
    """Unicode text rich in the characters escaping is about (and look-alikes)."""
    specials = SPECIALS_12 if version == V12 else SPECIALS_11
    excluded = "" if version == V12 else "\r"
    tricky = [*specials, "\\n", "\\c", "\\\\", "\\t", "\x00", " "]
    if version == V12:
        tricky += ["\\r", "\r\n"]
    fragment = st.sampled_from(tricky) | st.text(
        st.characters(codec="utf-8", exclude_characters=excluded), min_size=1, max_size=8
    )
    return st.lists(fragment, min_size=min_size, max_size=4).map("".join)


def frames_strategy(version: str) -> st.SearchStrategy[Frame]:
    names = header_text(version, min_size=1).filter(lambda n: n != "content-length")
    headers = st.lists(st.tuples(names, header_text(version, min_size=0)), max_size=6)
    return st.builds(
        Frame,
        st.sampled_from(ESCAPED_COMMANDS),
        headers.map(tuple),
        st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: b + b"\x00" + b),
    )


def expected_after_round_trip(frame: Frame) -> Frame:
    seen: set[str] = set()
    headers = []
    for name, value in frame.headers:
        if name not in seen:
            seen.add(name)
            headers.append((name, value))
    if frame.body:
        headers.append(("content-length", str(len(frame.body))))
    return Frame(frame.command, tuple(headers), frame.body)


def split_randomly(data: st.DataObject, wire: bytes) -> list[bytes]:
    if len(wire) < 2:
        return [wire]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(wire) - 1), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds)]


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STREAM_PROPERTY = settings(PROPERTY, max_examples=100)


@pytest.mark.parametrize("version", [V12, V11])
@PROPERTY
@given(data=st.data())
def test_round_trip_one_frame(version: str, data: st.DataObject) -> None:
    frame = data.draw(frames_strategy(version), label="frame")
    wire = frame.serialize(version)
    chunks = split_randomly(data, wire)
    assert parse_chunks(chunks, version) == [expected_after_round_trip(frame)]


@pytest.mark.parametrize("version", [V12, V11])
@STREAM_PROPERTY
@given(data=st.data())
def test_round_trip_stream_with_heartbeats(version: str, data: st.DataObject) -> None:
    frames = data.draw(st.lists(frames_strategy(version), min_size=1, max_size=4), label="frames")
    eols = st.lists(st.sampled_from([b"\n", b"\r\n"]), max_size=3).map(b"".join)
    wire = data.draw(eols, label="leading")
    for frame in frames:
        wire += frame.serialize(version) + data.draw(eols, label="heart-beats")
    chunks = split_randomly(data, wire)
    assert parse_chunks(chunks, version) == [expected_after_round_trip(f) for f in frames]
