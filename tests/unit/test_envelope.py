"""The bus envelope's JSON: orjson's output is the standard library's, odd bodies and
headers round-trip, and what orjson refuses still follows the standard library."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stomprelay.cluster.envelope import Envelope
from stomprelay.errors import ProtocolError

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
headers = st.lists(st.tuples(texts, texts), max_size=5).map(tuple)


def stdlib_json(envelope: Envelope) -> bytes:
    """The encoding as it was made with ``json`` alone."""
    try:
        text, encoding = envelope.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        import base64

        text, encoding = base64.b64encode(envelope.body).decode("ascii"), "base64"
    payload: dict[str, object] = {}
    if envelope.offset:
        payload["offset"] = envelope.offset
        payload["epoch"] = envelope.epoch
    payload |= {
        "v": 1,
        "id": envelope.id,
        "origin": envelope.origin,
        "destination": envelope.destination,
        "headers": [list(pair) for pair in envelope.headers],
        "body": text,
        "encoding": encoding,
        "ts": envelope.ts,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@given(
    headers=headers,
    body=st.one_of(st.binary(max_size=64), texts.map(lambda t: t.encode("utf-8"))),
    ts=st.integers(min_value=0, max_value=2**80),
    offset=st.integers(min_value=0, max_value=2**40),
    epoch=texts,
    ident=texts,
)
def test_same_bytes_as_the_standard_library_and_a_round_trip(
    headers: tuple[tuple[str, str], ...], body: bytes, ts: int, offset: int, epoch: str, ident: str
) -> None:
    envelope = Envelope(
        ident, "relay-1", "/topic/room/é", headers, body, ts, offset, epoch if offset else ""
    )
    raw = envelope.to_json()
    assert raw == stdlib_json(envelope)
    assert Envelope.from_json(raw) == envelope
    assert Envelope.from_json(raw.decode("utf-8")) == envelope


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00", b"\x00\x01\x1f\x7f", "\u2028\u2029\ufeff😀".encode(), b"\xff\xfe", b'"\\/'],
)
def test_odd_bodies(body: bytes) -> None:
    envelope = Envelope("m-1", "r", "/queue/q", (("content-type", 'a"b\\c\n'),), body, 1)
    assert Envelope.from_json(envelope.to_json()) == envelope
    assert json.loads(envelope.to_json())["encoding"] == (
        "base64" if body == b"\xff\xfe" else "utf-8"
    )


def test_what_orjson_refuses_is_read_by_the_standard_library_rules() -> None:
    # a lone surrogate escape: json.loads takes it, and so does the envelope
    raw = (
        b'{"v":1,"id":"i","origin":"o","destination":"/topic/t",'
        b'"headers":[["a","\\ud800"]],"body":"x","encoding":"utf-8","ts":1}'
    )
    assert Envelope.from_json(raw).headers == (("a", "\ud800"),)
    # a timestamp past 64 bits
    raw = raw.replace(b'"ts":1', b'"ts":' + str(2**70).encode())
    assert Envelope.from_json(raw).ts == 2**70
    # a number past 64 bits where a string belongs: json's exact digits
    raw = raw.replace(b'["a","\\ud800"]', b'["a",18446744073709551617]')
    assert Envelope.from_json(raw).headers == (("a", "18446744073709551617"),)
    # headers with a lone surrogate cannot be UTF-8: the same error as before
    with pytest.raises(UnicodeEncodeError):
        Envelope("i", "o", "/topic/t", (("a", "\ud800"),), b"x", 1).to_json()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[]",
        b'{"v":1}',
        b"null",
        b'{"v":1,"id":"i","origin":"o","destination":"/t","headers":[["a"]],"body":"x","ts":1}',
        b'{"v":1,"id":"i","origin":"o","destination":"/t",'
        b'"headers":[],"body":"!!","encoding":"base64","ts":1}',
        b'{"v":1,"id":"i","origin":"o","destination":"/t","headers":[],"body":"x","ts":"x"}',
    ],
)
def test_malformed_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        Envelope.from_json(raw)
