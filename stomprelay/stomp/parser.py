"""Incremental STOMP frame parser: bytes in, :class:`Frame` objects out.

The parser is fed whatever the transport delivers (a WebSocket message may hold
part of a frame, one frame or several) and hands out one frame at a time, so the
caller can change :attr:`FrameParser.version` after CONNECT before the next
frame's headers are decoded. It follows STOMP 1.2 "Augmented BNF": optional CR
before every LF, EOL heart-beats between frames, ``content-length`` bodies that
may contain NUL octets, and NUL-terminated bodies otherwise. Every limit is
checked before the data it limits is buffered further.

Speed: the buffer is consumed by moving an offset (compacted now and then,
not per frame), the end of a head is found with two C-level ``find`` calls, and
a head is decoded from UTF-8 in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

from stomprelay.errors import FrameTooLarge, PeerError, ProtocolError
from stomprelay.settings import Limits
from stomprelay.stomp.frames import V10, Frame, Headers, escapes, unescape

_LF = 10
_CR = 13
#: Compact the buffer once this many consumed bytes lie before the read offset.
_COMPACT_AT = 64 * 1024


def _receipt_of(lines: list[str]) -> str | None:
    """The ``receipt`` header of a head that failed to parse, best effort."""
    for line in lines[1:]:
        if line.startswith("receipt:"):
            value = line[len("receipt:") :]
            try:
                return unescape(value, "1.2")
            except ProtocolError:
                return value
    return None


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
        #: Start of the frame being parsed (everything before is consumed).
        self._pos = 0
        self._head: _Head | None = None
        #: Where the next search for the head's end or the NUL resumes.
        self._scan = 0
        #: End of the head lines already checked against the limits, and their count.
        self._checked = 0
        self._lines = 0
        self._commands: set[str] = set()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos >= _COMPACT_AT or (self._pos and self._pos == len(self._buf)):
            self._compact()
        self._buf += data

    def _compact(self) -> None:
        shift = self._pos
        del self._buf[:shift]
        self._pos = 0
        self._scan = max(self._scan - shift, 0)
        self._checked = max(self._checked - shift, 0)
        if self._head is not None:
            self._head.body_start -= shift

    def next_frame(self) -> Frame | None:
        if self._head is None:
            self._skip_eols()
            if self._pos >= len(self._buf):
                return None
            head = self._parse_head()
            if head is None:
                return None
            self._head = head
            self._scan = head.body_start
        return self._take_body(self._head)

    def _start_frame(self, pos: int) -> None:
        self._pos = pos
        self._scan = pos
        self._checked = pos
        self._lines = 0

    def _skip_eols(self) -> None:
        """Skip heart-beat EOLs (``\\n`` or ``\\r\\n``) before a frame."""
        buf = self._buf
        n = len(buf)
        i = self._pos
        if i < n and buf[i] != _LF and buf[i] != _CR:
            return
        while i < n:
            octet = buf[i]
            if octet == _LF:
                i += 1
            elif octet == _CR and i + 1 < n and buf[i + 1] == _LF:
                i += 2
            else:
                break
        if i != self._pos:
            self._start_frame(i)

    def _find_head_end(self) -> tuple[int, int] | None:
        """Offsets of the end of the last header line and of the body start."""
        buf = self._buf
        start = max(self._scan - 2, self._pos)
        lf = buf.find(b"\n\n", start)
        crlf = buf.find(b"\n\r\n", start)
        if crlf >= 0 and (lf < 0 or crlf < lf):
            return crlf, crlf + 3
        if lf >= 0:
            return lf, lf + 2
        self._scan = len(buf)
        return None

    def _too_large(self) -> FrameTooLarge:
        size = self.limits.max_frame_size
        return FrameTooLarge("Frame too large", f"A frame may be at most {size} bytes.")

    def _check_partial_head(self) -> None:
        """Refuse an unfinished head as soon as a limit is exceeded.

        Complete lines are checked once each (``_checked`` remembers how far),
        so a head trickling in byte by byte costs linear time.
        """
        buf = self._buf
        if len(buf) - self._pos > self.limits.max_frame_size:
            raise self._too_large()
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
        if body_start - self._pos > limits.max_frame_size:
            raise self._too_large()
        raw = self._buf[self._pos : end]
        if len(raw) > limits.max_header_line or len(raw) > limits.max_command_line:
            # Only a head this long can hold an over-long line: check each.
            for index, line in enumerate(raw.split(b"\n")):
                self._check_line(len(line) - line.endswith(b"\r"), index)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                "Invalid header encoding", "Header lines must be valid UTF-8."
            ) from None
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):
                text = text[:-1]
        lines = text.split("\n")
        try:
            return self._decode_head(lines, text, body_start)
        except PeerError as exc:
            # The head is readable as text: let the ERROR name the receipt asked for.
            exc.receipt_id = exc.receipt_id or _receipt_of(lines)
            raise

    def _decode_head(self, lines: list[str], text: str, body_start: int) -> _Head:
        limits = self.limits
        command = lines[0]
        if command not in self._commands:
            if not (command.isascii() and command.isalpha() and command.isupper()):
                raise ProtocolError("Invalid command", f"{command[:40]!r} is not a STOMP command.")
            self._commands.add(command)
        if len(lines) - 1 > limits.max_headers:
            raise FrameTooLarge(
                "Too many headers", f"A frame may carry at most {limits.max_headers} headers."
            )
        headers = self._headers(lines, decode=escapes(self.version, command) and "\\" in text)
        content_length = None
        length_text = headers.get("content-length")
        if length_text is not None:
            content_length = self._content_length(length_text, body_start - self._pos)
        return _Head(command, tuple(headers.items()), body_start, content_length)

    def _headers(self, lines: list[str], decode: bool) -> dict[str, str]:
        """Header lines to a dict keeping the first of repeated names, in order."""
        if not decode:
            try:
                pairs = [line.split(":", 1) for line in lines[1:]]
                headers = dict(pairs)
            except ValueError:
                pass  # a line without a colon: the loop below names it
            else:
                if len(headers) == len(pairs) and "" not in headers:
                    return headers
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ProtocolError(
                    "Malformed header", f"The header line {line[:60]!r} has no colon."
                )
            if decode:
                name = unescape(name, self.version)
                value = unescape(value, self.version)
            if not name:
                # STOMP 1.2 "Augmented BNF": header-name = 1*<any OCTET except CR, LF or ":">
                raise ProtocolError(
                    "Empty header name", f"The header line {line[:60]!r} has no name."
                )
            if name not in headers:
                headers[name] = value
        return headers

    def _content_length(self, value: str, head_size: int) -> int:
        text = value.strip()
        if not text.isdigit() or not text.isascii():
            raise ProtocolError(
                "Invalid content-length", f"content-length {value[:40]!r} is not a byte count."
            )
        limit = self.limits.max_frame_size
        # More digits than the limit has is too large whatever the value (and
        # int() refuses strings of over 4300 digits).
        if len(text) > len(str(limit)) or head_size + int(text) + 1 > limit:
            raise FrameTooLarge(
                "Frame too large",
                f"content-length {text[:20]} exceeds the frame limit of {limit} bytes.",
            )
        length = int(text)
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
            if end < 0:
                if len(buf) - self._pos > self.limits.max_frame_size:
                    raise self._too_large()
                self._scan = len(buf)
                return None
            if end + 1 - self._pos > self.limits.max_frame_size:
                raise self._too_large()
        body = bytes(buf[start:end])
        self._head = None
        self._start_frame(end + 1)
        return Frame(head.command, head.headers, body)
