"""The WebSocket layer reads simple frames itself and gives websockets every
other one: for any byte stream, cut anywhere, it yields the same messages, the
same bytes to send and the same closing as websockets' own parser does."""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.utils import apply_mask
from wshelpers import REQUEST, opened

from stomprelay.settings import Settings
from stomprelay.transport.websocket import SUBPROTOCOLS, WebSocketLayer, select_subprotocol

#: Small, so that frames over the limit are cheap to make.
LIMIT = 300
MASK = b"\x12\x34\x56\x78"


def layer_of(head: bytes = REQUEST, limit: int = LIMIT) -> WebSocketLayer:
    return opened(head, Settings(max_message_size=limit))


class Reference:
    """websockets' ServerProtocol alone, its messages joined as the layer joined
    them before it read frames itself."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.ws = ServerProtocol(
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=select_subprotocol,
            extensions=[],
            max_size=limit,
        )
        self.ws.receive_data(REQUEST)
        (request,) = self.ws.events_received()
        assert isinstance(request, Request)
        self.ws.send_response(self.ws.accept(request))
        self.ws.data_to_send()
        self.fragments: list[bytes] | None = None

    def messages(self) -> list[bytes]:
        got: list[bytes] = []
        for frame in self.ws.events_received():
            assert isinstance(frame, WsFrame)
            if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
                if frame.fin:
                    got.append(bytes(frame.data))
                else:
                    self.fragments = [bytes(frame.data)]
            elif frame.opcode is Opcode.CONT and self.fragments is not None:
                self.fragments.append(bytes(frame.data))
                if frame.fin:
                    got.append(b"".join(self.fragments))
                    self.fragments = None
        return got


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    width: int = 0,
    declared: int | None = None,
) -> bytes:
    """A client frame, as any client could make it (invalid ones too); ``width``
    1 or 2 forces a 16- or 64-bit length, ``declared`` a length other than the payload's."""
    n = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    bit = 0x80 if mask is not None else 0
    if width == 0 and n < 126:
        head = bytes((first, bit | n))
    elif width <= 1 and n < 65536:
        head = bytes((first, bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def sent_code(layer: WebSocketLayer) -> int | None:
    """The code of the close frame websockets sent (None: none)."""
    close = layer._ws.close_sent
    return None if close is None else close.code


def state(ws: ServerProtocol) -> tuple[Any, ...]:
    return (
        ws.state,
        ws.close_sent and (ws.close_sent.code, ws.close_sent.reason),
        ws.close_rcvd and (ws.close_rcvd.code, ws.close_rcvd.reason),
        type(ws.parser_exc),
    )


def run_both(chunks: list[bytes], eof: bool, limit: int = LIMIT, close_at: int = -1) -> list[bytes]:
    """Feed both, chunk by chunk; after each the same messages, output and state
    (before chunk ``close_at``, the server starts the closing handshake)."""
    layer = layer_of(limit=limit)
    ref = Reference(limit)
    everything: list[bytes] = []
    for i, chunk in enumerate(chunks):
        if i == close_at:
            layer.close(1000, "bye")
            if ref.ws.state is State.OPEN:
                ref.ws.send_close(1000, "bye")
        layer.receive(chunk)
        ref.ws.receive_data(chunk)
        got = layer.messages()
        assert got == ref.messages()
        assert layer._ws.data_to_send() == ref.ws.data_to_send()
        assert state(layer._ws) == state(ref.ws)
        assert layer.too_big == isinstance(ref.ws.parser_exc, PayloadTooBig)
        everything += got
    if eof:
        layer.receive_eof()
        ref.ws.receive_eof()
        assert layer.messages() == ref.messages() == []
        assert layer._ws.data_to_send() == ref.ws.data_to_send()
        assert state(layer._ws) == state(ref.ws)
    return everything


# -- the equivalence ------------------------------------------------------------

payloads = st.binary(max_size=LIMIT + 40)
masks = st.one_of(st.just(MASK), st.binary(min_size=4, max_size=4), st.none())


@st.composite
def single(draw: st.DrawFn) -> bytes:
    """Any one frame: mostly simple messages, often control frames, now and then
    anything (unmasked, reserved bits, bad opcodes, non-minimal lengths, too long)."""
    kind = draw(st.sampled_from(["text"] * 6 + ["binary"] * 2 + ["control"] * 3 + ["any"]))
    width = draw(st.sampled_from([0, 0, 0, 1, 2]))
    if kind == "text":
        text = draw(st.one_of(st.text(max_size=80).map(str.encode), payloads))
        return frame(1, text, width=width)
    if kind == "binary":
        return frame(2, draw(payloads), width=width)
    if kind == "control":
        opcode = draw(st.sampled_from([9, 9, 10, 8]))
        if opcode == 8:
            body = draw(
                st.one_of(
                    st.just(b""),
                    st.builds(
                        lambda code, reason: code.to_bytes(2, "big") + reason,
                        st.sampled_from([1000, 1001, 1003, 1008, 4000, 999, 1005]),
                        st.one_of(st.text(max_size=20).map(str.encode), st.just(b"\xff\xfe")),
                    ),
                    st.binary(max_size=5),
                )
            )
        else:
            body = draw(st.binary(max_size=130))
        return frame(opcode, body, width=width, mask=draw(masks))
    return frame(
        draw(st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11, 15])),
        draw(payloads),
        fin=draw(st.booleans()),
        rsv=draw(st.sampled_from([0, 0, 1, 2, 4, 7])),
        mask=draw(masks),
        width=width,
    )


@st.composite
def fragmented(draw: st.DrawFn) -> bytes:
    """A message in parts, pings between them now and then (and, from a broken
    client, a new message before the last part)."""
    parts = draw(st.lists(payloads.map(lambda b: b[:120]), min_size=2, max_size=4))
    out = frame(draw(st.sampled_from([1, 2])), parts[0], fin=False)
    for i, part in enumerate(parts[1:], 2):
        between = draw(st.integers(0, 9))
        if between < 2:
            out += frame(9, b"between")
        elif between == 2:
            out += frame(draw(st.sampled_from([1, 2])), b"intruder")
        out += frame(0, part, fin=i == len(parts))
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], bool, int]:
    units = draw(
        st.lists(
            st.one_of(single(), single(), single(), fragmented()),
            max_size=12,
        )
    )
    if draw(st.integers(0, 9)) == 0:  # a header declaring far more than the limit
        units.append(frame(1, b"abc", declared=draw(st.sampled_from([LIMIT + 1, 2**40]))))
    data = b"".join(units)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    if draw(st.booleans()):
        cuts += list(range(0, len(data), 1 + draw(st.integers(0, 7))))  # byte by byte, nearly
        cuts.sort()
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    return chunks, draw(st.booleans()), draw(st.integers(-len(chunks), len(chunks)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_same_as_websockets_for_any_stream(stream: tuple[list[bytes], bool, int]) -> None:
    chunks, eof, close_at = stream
    run_both(chunks, eof, close_at=close_at)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(single(), fragmented()), max_size=30), st.data())
def test_same_as_websockets_with_the_default_limit(units: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(units)
    size = data.draw(st.integers(1, 64))
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    run_both(chunks, data.draw(st.booleans()), Settings().max_message_size)


# -- each rule ---------------------------------------------------------------


def test_a_batch_of_simple_frames_is_read_without_websockets() -> None:
    layer = layer_of()
    frames = [frame(1, b"SEND\n\nhello\x00"), frame(2, b"\x00\xff" * 100, width=2)]
    with mock.patch.object(layer._ws, "receive_data") as receive:
        layer.receive(b"".join(frames) * 3)
        receive.assert_not_called()
    assert layer.messages() == [b"SEND\n\nhello\x00", b"\x00\xff" * 100] * 3
    assert layer.messages() == []


def test_a_frame_cut_anywhere_waits_for_its_rest() -> None:
    data = frame(1, b"x" * 200) + frame(2, b"y" * 10)
    for cut in range(len(data) + 1):
        layer = layer_of()
        layer.receive(data[:cut])
        first = layer.messages()
        layer.receive(data[cut:])
        assert first + layer.messages() == [b"x" * 200, b"y" * 10]
        assert not layer._buf


def test_order_is_kept_across_both_paths() -> None:
    layer = layer_of()
    data = (
        frame(1, b"a")
        + frame(1, b"b", fin=False)
        + frame(0, b"c", fin=False)
        + frame(9, b"p")
        + frame(0, b"d")
        + frame(1, b"e")
    )
    layer.receive(data)
    assert layer.messages() == [b"a", b"bcd", b"e"]
    assert layer._ws.data_to_send() == [WsFrame(Opcode.PONG, b"p").serialize(mask=False)]


def test_a_new_message_inside_a_fragmented_one_fails_with_1002() -> None:
    layer = layer_of()
    layer.receive(frame(1, b"a", fin=False) + frame(1, b"b") + frame(0, b"c"))
    assert layer.messages() == []
    assert sent_code(layer) == 1002


def test_a_ping_is_answered_by_websockets() -> None:
    layer = layer_of()
    layer.receive(frame(1, b"a") + frame(9, b"hi") + frame(1, b"b"))
    assert layer.messages() == [b"a", b"b"]
    assert layer._ws.data_to_send() == [WsFrame(Opcode.PONG, b"hi").serialize(mask=False)]


def test_a_close_frame_closes_and_what_follows_is_discarded() -> None:
    layer = layer_of()
    close = frame(8, (1000).to_bytes(2, "big") + b"bye")
    layer.receive(frame(1, b"a") + close + frame(1, b"after"))
    assert layer.messages() == [b"a"]
    assert not layer.open
    assert layer._ws.close_rcvd is not None
    assert layer._ws.close_rcvd.code == 1000
    layer.receive(frame(1, b"later"))
    assert layer.messages() == []


def test_an_unmasked_frame_fails_with_1002() -> None:
    layer = layer_of()
    layer.receive(frame(1, b"a", mask=None))
    assert layer.messages() == []
    assert sent_code(layer) == 1002


def test_reserved_bits_fail_with_1002() -> None:
    layer = layer_of()
    layer.receive(frame(1, b"a", rsv=4))
    assert layer.messages() == []
    assert sent_code(layer) == 1002


def test_invalid_utf8_in_a_text_message_is_passed_on_as_websockets_does() -> None:
    # websockets' sans-I/O parser does not decode text messages (only close
    # reasons): the STOMP parser sees these bytes either way
    layer = layer_of()
    ref = Reference()
    data = frame(1, b"\xff\xfeSEND\x00")
    layer.receive(data)
    ref.ws.receive_data(data)
    assert layer.messages() == ref.messages() == [b"\xff\xfeSEND\x00"]
    assert layer.open


def test_invalid_utf8_in_a_close_reason_fails_with_1007() -> None:
    layer = layer_of()
    layer.receive(frame(8, (1000).to_bytes(2, "big") + b"\xff"))
    assert sent_code(layer) == 1007


def test_a_header_over_the_limit_fails_with_1009_at_once() -> None:
    for declared in (LIMIT + 1, 70_000, 2**62):
        layer = layer_of()
        head = frame(1, b"", declared=declared)
        layer.receive(head[:-4])  # the length known, not yet the mask
        assert layer.too_big
        assert sent_code(layer) == 1009
        assert not layer._buf


def test_a_frame_just_within_the_limit_is_a_message() -> None:
    layer = layer_of()
    with mock.patch.object(layer._ws, "receive_data") as receive:
        layer.receive(frame(2, b"z" * LIMIT))
        receive.assert_not_called()
    assert layer.messages() == [b"z" * LIMIT]
    assert not layer.too_big


def test_a_fragmented_message_over_the_limit_fails_with_1009() -> None:
    layer = layer_of()
    layer.receive(frame(1, b"a" * 200, fin=False) + frame(0, b"b" * 200))
    assert layer.messages() == []
    assert layer.too_big


def test_frames_sent_before_the_101_are_read_once_accepted() -> None:
    early = frame(1, b"CONNECT\n\n\x00") + frame(1, b"SEND\n\n\x00") + frame(1, b"SU")[:5]
    layer = layer_of(REQUEST + early)
    assert layer.messages() == [b"CONNECT\n\n\x00", b"SEND\n\n\x00"]
    layer.receive(frame(1, b"SU")[5:])
    assert layer.messages() == [b"SU"]


def test_eof_in_the_middle_of_a_frame_fails_as_websockets_does() -> None:
    data = frame(1, b"x" * 50)
    run_both([data[:20]], eof=True)
    layer = layer_of()
    layer.receive(data[:20])
    layer.receive_eof()
    assert layer._ws.state is State.CLOSED
    assert isinstance(layer._ws.parser_exc, EOFError)


def test_websockets_is_given_each_byte_once() -> None:
    layer = layer_of()
    ping = frame(9, b"p" * 20, width=2)  # a 16-bit length: a header in pieces
    with mock.patch.object(layer._ws, "receive_data", wraps=layer._ws.receive_data) as receive:
        for i in range(len(ping)):
            layer.receive(ping[i : i + 1])
        layer.receive(ping[:3])
        layer.receive_eof()
    assert b"".join(call.args[0] for call in receive.call_args_list) == ping + ping[:3]
    assert layer._ws.data_to_send()[0] == WsFrame(Opcode.PONG, b"p" * 20).serialize(mask=False)
