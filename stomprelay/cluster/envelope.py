"""The JSON envelope that carries a message over a bus channel.

It is what ``redis-cli SUBSCRIBE stomp:broadcast:room:lobby`` shows, so it is
plain JSON with short, documented fields (docs/redis.md)::

    {"v": 1, "id": "<message id>", "origin": "<server id>",
     "destination": "/topic/room/lobby", "headers": [["name", "value"], ...],
     "body": "<text>", "encoding": "utf-8" | "base64", "ts": <ms since epoch>}

Envelopes of logged destinations (docs/history.md) are published with two more
fields in front, ``"offset": <n>, "epoch": "<epoch>"``: the append script adds
them, so the stream keeps the envelope as the relay made it.

Bodies that are valid UTF-8 travel as text; anything else as base64, so every
byte survives.

Encoding and decoding use orjson, which gives the same JSON as the standard
library here (compact, UTF-8, no ASCII escaping, the same keys in the same order)
at a fraction of the cost; what orjson refuses and ``json`` takes (integers past
64 bits, lone surrogates, ``NaN``) goes through ``json``, so the rules stay the
standard library's.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import orjson

from stomprelay.errors import ProtocolError
from stomprelay.stomp.frames import Headers

ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message between relays (contract section 4): what a relay publishes on a
    channel, and what a destination's log stores with its offset and epoch."""

    id: str
    origin: str
    destination: str
    headers: Headers
    body: bytes
    ts: int
    #: Position in the destination's log (1, 2, ...); 0 when not logged.
    offset: int = 0
    epoch: str = ""

    def to_json(self) -> bytes:
        body = self.body
        try:
            text = body.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            text = base64.b64encode(body).decode("ascii")
            encoding = "base64"
        payload: dict[str, object] = (
            {"offset": self.offset, "epoch": self.epoch, "v": ENVELOPE_VERSION}
            if self.offset
            else {"v": ENVELOPE_VERSION}
        )
        payload["id"] = self.id
        payload["origin"] = self.origin
        payload["destination"] = self.destination
        payload["headers"] = self.headers
        payload["body"] = text
        payload["encoding"] = encoding
        payload["ts"] = self.ts
        try:
            return orjson.dumps(payload)
        except orjson.JSONEncodeError:
            payload["headers"] = [list(pair) for pair in self.headers]
            return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        """Decode an envelope; anything malformed is a :class:`ProtocolError`."""
        try:
            data = _loads(raw)
            headers = tuple((str(k), str(v)) for k, v in data["headers"])
            if data.get("encoding") == "base64":
                body = base64.b64decode(data["body"], validate=True)
            else:
                body = str(data["body"]).encode("utf-8")
            return cls(
                id=str(data["id"]),
                origin=str(data["origin"]),
                destination=str(data["destination"]),
                headers=headers,
                body=body,
                ts=int(data["ts"]),
                offset=int(data.get("offset") or 0),
                epoch=str(data.get("epoch") or ""),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ProtocolError("Malformed bus envelope", str(exc)) from None


def _loads(raw: bytes | str) -> Any:
    """``json.loads``, through orjson where it gives the same: orjson refuses what it
    cannot read exactly, and reads integers past 64 bits as floats, which ``json``
    keeps exact (only numbers the envelope turns into ints or strings matter)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
    if type(data) is dict and (
        type(data.get("ts")) is float
        or type(data.get("offset")) is float
        or any(type(part) is float for pair in data.get("headers") or () for part in pair)
    ):
        return json.loads(raw)
    return data
