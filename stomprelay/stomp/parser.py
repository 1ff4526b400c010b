"""Incremental STOMP frame parser: bytes in, :class:`Frame` objects out.

The parser is fed whatever the transport delivers (a WebSocket message may hold
part of a frame, one frame or several) and hands out one frame at a time, so the
caller can change :attr:`FrameParser.version` after CONNECT before the next
frame's headers are decoded. It follows STOMP 1.2 "Augmented BNF": optional CR
before every LF, EOL heart-beats between frames, ``content-length`` bodies that
may contain NUL octets, and NUL-terminated bodies otherwise. Every limit is
checked before the data it limits is buffered further.
"""

from __future__ import annotations

from dataclasses import dataclass

from stomprelay.errors import FrameTooLarge, ProtocolError
from stomprelay.settings import Limits
from stomprelay.stomp.frames import V10, Frame, Headers, escapes, unescape

_LF = 10
_CR = 13


@dataclass(slots=True)
class _Head:
    command: str
    headers: Headers
    body_start: int
    content_length: int | None


class FrameParser:
    """Reassembles STOMP frames from a byte stream.

    ``feed`` appends bytes; ``next_frame`` returns the next complete frame or
    ``None`` when more bytes are needed, and raises :class:`ProtocolError`
    for input that can never become a valid frame. After an error the parser
    is unusable: the connection is to be closed.
    """

    def __init__(self, limits: Limits | None = None, version: str = V10) -> None:
        self.limits = limits or Limits()
        #: Version whose escaping rules apply to the next frames' headers.
        self.version = version
        self._buf = bytearray()
        self._head: _Head | None = None
        self._scan = 0
        self._checked = 0
        self._lines = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        if self._head is None:
            self._skip_eols()
            if not self._buf:
                return None
            head = self._parse_head()
            if head is None:
                return None
            self._head = head
            self._scan = head.body_start
            self._checked = 0
            self._lines = 0
        return self._take_body(self._head)

    def _skip_eols(self) -> None:
        """Drop heart-beat EOLs (``\\n`` or ``\\r\\n``) before a frame."""
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            octet = buf[i]
            if octet == _LF:
                i += 1
            elif octet == _CR and i + 1 < n and buf[i + 1] == _LF:
                i += 2
            else:
                break
        if i:
            del buf[:i]
            self._scan = 0
            self._checked = 0
            self._lines = 0

    def _find_head_end(self) -> tuple[int, int] | None:
        """Offsets of the end of the last header line and of the body start."""
        buf = self._buf
        pos = max(self._scan - 2, 0)
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._scan = len(buf)
                return None
            nxt = nl + 1
            if nxt < len(buf) and buf[nxt] == _LF:
                return nl, nxt + 1
            if nxt + 1 < len(buf) and buf[nxt] == _CR and buf[nxt + 1] == _LF:
                return nl, nxt + 2
            if nxt >= len(buf) or (buf[nxt] == _CR and nxt + 1 >= len(buf)):
                self._scan = nl
                return None
            pos = nxt

    def _check_partial_head(self) -> None:
        """Refuse an unfinished head as soon as a limit is exceeded.

        Complete lines are checked once each (``_checked`` remembers how far),
        so a head trickling in byte by byte costs linear time.
        """
        limits = self.limits
        buf = self._buf
        if len(buf) > limits.max_frame_size:
            raise FrameTooLarge(
                "Frame too large", f"A frame may be at most {limits.max_frame_size} bytes."
            )
        while True:
            nl = buf.find(b"\n", self._checked)
            if nl < 0:
                break
            length = nl - self._checked
            if length and buf[nl - 1] == _CR:
                length -= 1
            self._check_line(length, self._lines)
            self._lines += 1
            self._checked = nl + 1
        self._check_line(len(buf) - self._checked, self._lines, partial=True)

    def _check_line(self, length: int, index: int, partial: bool = False) -> None:
        limits = self.limits
        if index == 0:
            if length > limits.max_command_line:
                raise FrameTooLarge(
                    "Command line too long",
                    f"A command line may be at most {limits.max_command_line} bytes.",
                )
            return
        if index > limits.max_headers and not (partial and length == 0):
            raise FrameTooLarge(
                "Too many headers", f"A frame may carry at most {limits.max_headers} headers."
            )
        if length > limits.max_header_line:
            raise FrameTooLarge(
                "Header line too long",
                f"A header line may be at most {limits.max_header_line} bytes.",
            )

    def _parse_head(self) -> _Head | None:
        found = self._find_head_end()
        if found is None:
            self._check_partial_head()
            return None
        end, body_start = found
        limits = self.limits
        lines = bytes(self._buf[:end]).split(b"\n")
        raw_command = lines[0]
        if raw_command.endswith(b"\r"):
            raw_command = raw_command[:-1]
        if len(raw_command) > limits.max_command_line:
            raise FrameTooLarge(
                "Command line too long",
                f"A command line may be at most {limits.max_command_line} bytes.",
            )
        if not raw_command.isalpha() or not raw_command.isupper():
            shown = raw_command[:40].decode("utf-8", "replace")
            raise ProtocolError("Invalid command", f"{shown!r} is not a STOMP command.")
        command = raw_command.decode("ascii")
        if len(lines) - 1 > limits.max_headers:
            raise FrameTooLarge(
                "Too many headers", f"A frame may carry at most {limits.max_headers} headers."
            )
        if body_start > limits.max_frame_size:
            raise FrameTooLarge(
                "Frame too large", f"A frame may be at most {limits.max_frame_size} bytes."
            )
        decode = escapes(self.version, command)
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        for raw in lines[1:]:
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > limits.max_header_line:
                raise FrameTooLarge(
                    "Header line too long",
                    f"A header line may be at most {limits.max_header_line} bytes.",
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(
                    "Invalid header encoding", "Header lines must be valid UTF-8."
                ) from None
            colon = line.find(":")
            if colon < 0:
                raise ProtocolError(
                    "Malformed header", f"The header line {line[:60]!r} has no colon."
                )
            name = line[:colon]
            value = line[colon + 1 :]
            if decode:
                name = unescape(name, self.version)
                value = unescape(value, self.version)
            if name in seen:
                continue
            seen.add(name)
            headers.append((name, value))
        content_length = None
        for name, value in headers:
            if name == "content-length":
                content_length = self._content_length(value, body_start)
                break
        return _Head(command, tuple(headers), body_start, content_length)

    def _content_length(self, value: str, body_start: int) -> int:
        text = value.strip()
        if not text.isdigit() or not text.isascii():
            raise ProtocolError(
                "Invalid content-length", f"content-length {value!r} is not a byte count."
            )
        length = int(text)
        if body_start + length + 1 > self.limits.max_frame_size:
            raise FrameTooLarge(
                "Frame too large",
                f"content-length {length} exceeds the frame limit of "
                f"{self.limits.max_frame_size} bytes.",
            )
        return length

    def _take_body(self, head: _Head) -> Frame | None:
        buf = self._buf
        start = head.body_start
        if head.content_length is not None:
            end = start + head.content_length
            if len(buf) <= end:
                return None
            if buf[end] != 0:
                raise ProtocolError(
                    "Missing frame terminator",
                    "The body is longer than its content-length header says "
                    "(no NUL octet after content-length bytes).",
                )
        else:
            end = buf.find(b"\x00", self._scan)
            if end + 1 > self.limits.max_frame_size:
                raise FrameTooLarge(
                    "Frame too large",
                    f"A frame may be at most {self.limits.max_frame_size} bytes.",
                )
            if end < 0:
                if len(buf) > self.limits.max_frame_size:
                    raise FrameTooLarge(
                        "Frame too large",
                        f"A frame may be at most {self.limits.max_frame_size} bytes.",
                    )
                self._scan = len(buf)
                return None
        body = bytes(buf[start:end])
        del buf[: end + 1]
        self._head = None
        self._scan = 0
        return Frame(head.command, head.headers, body)
