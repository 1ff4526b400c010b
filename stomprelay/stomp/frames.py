"""STOMP frames: the immutable :class:`Frame`, header escaping and serialisation.

STOMP 1.2 "Value Encoding": in 1.1 and 1.2 every frame except CONNECT and
CONNECTED escapes ``\\`` ``\\n`` ``:`` in header names and values (1.2 also
``\\r``); 1.0 has no escaping. Repeated headers: the first one wins (STOMP 1.2
"Repeated Header Entries"), which the parser enforces by keeping only the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from stomprelay.errors import ProtocolError

V10 = "1.0"
V11 = "1.1"
V12 = "1.2"
#: Versions in preference order, highest first.
SUPPORTED_VERSIONS: tuple[str, ...] = (V12, V11, V10)

#: Frames whose headers are never escaped (STOMP 1.2 "Value Encoding").
UNESCAPED_COMMANDS = frozenset({"CONNECT", "STOMP", "CONNECTED"})

CLIENT_COMMANDS = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})

Headers = tuple[tuple[str, str], ...]

_UNESCAPE_12 = {"\\": "\\", "n": "\n", "c": ":", "r": "\r"}
_UNESCAPE_11 = {"\\": "\\", "n": "\n", "c": ":"}


def escapes(version: str, command: str) -> bool:
    """Whether headers of ``command`` are escaped in ``version``."""
    return version != V10 and command not in UNESCAPED_COMMANDS


def _escape_12(text: str) -> str:
    # ``in`` checks and ``replace`` beat ``str.translate`` by far on short strings.
    if "\\" in text or ":" in text or "\n" in text or "\r" in text:
        return (
            text.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c").replace("\r", "\\r")
        )
    return text


def _escape_11(text: str) -> str:
    if "\\" in text or ":" in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c")
    return text


def _flatten_10(text: str) -> str:
    """1.0 cannot carry a line break in a header: it becomes a space."""
    if "\n" in text or "\r" in text:
        return text.replace("\r", " ").replace("\n", " ")
    return text


def _verbatim(text: str) -> str:
    return text


def _encoder(version: str, command: str) -> Callable[[str], str]:
    if version == V10:
        return _flatten_10
    if command in UNESCAPED_COMMANDS:
        return _verbatim
    return _escape_12 if version == V12 else _escape_11


def escape(text: str, version: str) -> str:
    """Encode a header name or value for the wire (STOMP 1.2 "Value Encoding")."""
    return _encoder(version, "SEND")(text)


def unescape(text: str, version: str) -> str:
    """Decode a header name or value; an undefined escape is a protocol error."""
    if "\\" not in text:
        return text
    table = _UNESCAPE_12 if version == V12 else _UNESCAPE_11
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        if j + 1 >= n:
            raise ProtocolError(
                "Undefined escape sequence",
                f"A header ends with a lone backslash, which STOMP {version} does not define.",
            )
        decoded = table.get(text[j + 1])
        if decoded is None:
            raise ProtocolError(
                "Undefined escape sequence",
                f"The escape sequence \\{text[j + 1]} is not defined in STOMP {version}.",
            )
        out.append(decoded)
        i = j + 2
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame. Headers keep wire order; bodies are bytes."""

    command: str
    headers: Headers = ()
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name``, or ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self.headers)

    def serialize(self, version: str = V12) -> bytes:
        """Wire bytes of this frame, escaped for ``version``.

        ``content-length`` is added when the body is not empty and the frame
        does not carry one, so bodies holding NUL octets survive.
        """
        return encode_frame(self.command, self.headers, self.body, version)


def encode_headers(headers: Iterable[tuple[str, str]], version: str, command: str) -> bytes:
    """``name:value\\n`` lines for ``headers``, escaped as ``command`` needs."""
    enc = _encoder(version, command)
    return "".join([f"{enc(k)}:{enc(v)}\n" for k, v in headers]).encode("utf-8")


def encode_frame(command: str, headers: Headers, body: bytes, version: str) -> bytes:
    """Serialise one frame (STOMP 1.2 "STOMP Frames").

    ``content-length`` is added when the body is not empty and the headers
    do not carry one, so bodies holding NUL octets survive.
    """
    enc = _encoder(version, command)
    parts = [command, "\n"]
    has_length = False
    for name, value in headers:
        if name == "content-length":
            has_length = True
        parts.append(f"{enc(name)}:{enc(value)}\n")
    if body and not has_length:
        parts.append(f"content-length:{len(body)}\n")
    parts.append("\n")
    return b"".join(("".join(parts).encode("utf-8"), body, b"\x00"))


HEARTBEAT = b"\n"
EOL = HEARTBEAT


class Binary(bytes):
    """Frame bytes that are not valid UTF-8 (a MESSAGE with a binary body): the
    WebSocket transport sends them as a binary message, everything else as text."""

    __slots__ = ()


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class PreparedMessage:
    """A MESSAGE built once per publish and rendered cheaply per subscriber.

    Everything but ``subscription`` and ``ack`` is the same for every
    subscriber, so the shared header block and body are encoded once per STOMP
    version (at most three times) and each delivery only prepends two lines.
    """

    __slots__ = ("_cache", "body", "destination", "headers", "message_id", "text")

    def __init__(self, destination: str, message_id: str, headers: Headers, body: bytes) -> None:
        self.destination = destination
        self.message_id = message_id
        #: Sender headers to pass on, ``content-type`` included, reserved ones removed.
        self.headers = headers
        self.body = body
        self._cache: dict[str, bytes] = {}
        #: Decided once per message, not per subscriber: headers are always UTF-8.
        self.text = is_utf8(body)

    def _shared(self, version: str) -> bytes:
        shared = self._cache.get(version)
        if shared is None:
            headers = (
                ("destination", self.destination),
                ("message-id", self.message_id),
                *self.headers,
                ("content-length", str(len(self.body))),
            )
            shared = b"".join(
                (encode_headers(headers, version, "MESSAGE"), b"\n", self.body, b"\x00")
            )
            self._cache[version] = shared
        return shared

    def render(self, version: str, subscription: str, ack: str | None = None) -> bytes:
        """Wire bytes of this MESSAGE for one subscription (STOMP 1.2 "MESSAGE")."""
        if ack is None:
            head = _subscription_line(version, subscription)
        else:
            head = b"MESSAGE\n" + encode_headers(
                (("subscription", subscription), ("ack", ack)), version, "MESSAGE"
            )
        data = head + self._shared(version)
        return data if self.text else Binary(data)


#: ``MESSAGE\nsubscription:<id>\n`` per (version, id): most clients name their
#: subscriptions alike (stomp.js: ``sub-0``, ``sub-1``, ...), so a fan-out to
#: thousands escapes and encodes a handful of ids.
_SUBSCRIPTION_LINES: dict[tuple[str, str], bytes] = {}
_SUBSCRIPTION_LINES_MAX = 4096


def _subscription_line(version: str, subscription: str) -> bytes:
    key = (version, subscription)
    line = _SUBSCRIPTION_LINES.get(key)
    if line is None:
        if len(_SUBSCRIPTION_LINES) >= _SUBSCRIPTION_LINES_MAX:
            _SUBSCRIPTION_LINES.clear()
        line = b"MESSAGE\n" + encode_headers((("subscription", subscription),), version, "MESSAGE")
        _SUBSCRIPTION_LINES[key] = line
    return line
