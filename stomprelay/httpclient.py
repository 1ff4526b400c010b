"""The small signed-POST HTTP client the authorization hook and the webhooks share.

Asyncio streams driven by h11 (already the relay's HTTP parser): one request
shape (``POST`` of a body), no new dependency, keep-alive connections kept in a
pool. Both sign their bodies the same way (contract section 11)::

    X-Stomprelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
from urllib.parse import urlsplit

import h11

#: The header carrying the signature.
SIGNATURE_HEADER = "X-Stomprelay-Signature"


def signature(secret: str, body: bytes, t: int) -> str:
    """The ``X-Stomprelay-Signature`` value of ``body`` sent at unix second ``t``."""
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def check_http_url(url: str, flag: str) -> None:
    """An ``http://`` or ``https://`` URL with a host (a start-up ValueError naming ``flag``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{flag} must be an http:// or https:// URL with a host")


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_answer: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.max_answer = max_answer

    def close(self) -> None:
        self.writer.close()

    async def request(
        self, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        conn = self.h11
        out = conn.send(h11.Request(method="POST", target=target, headers=headers))
        out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        self.writer.write(out)
        await self.writer.drain()
        status = 0
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_answer:
                    raise ValueError("answer too large")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("closed by the server")

    def reusable(self) -> bool:
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False


class Poster:
    """POSTs to one URL over a pool of at most ``idle_max`` kept connections.

    Errors are the caller's to translate: OSError (refused, reset), h11.ProtocolError
    and ValueError (no valid HTTP answer, or one past ``max_answer`` bytes)."""

    def __init__(self, url: str, *, max_answer: int, idle_max: int) -> None:
        parts = urlsplit(url)
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        # made once: loading the CA store takes tens of ms, not to be paid per connection
        self._tls = ssl.create_default_context() if self._https else None
        self._authority = parts.netloc.rpartition("@")[2]
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._idle: list[Connection] = []
        self._idle_max = idle_max
        self._max_answer = max_answer

    def headers(self, body: bytes, secret: str | None, t: int) -> list[tuple[str, str]]:
        """A JSON POST's headers, signed with ``secret`` at unix second ``t`` if given."""
        headers = [
            ("Host", self._authority),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ]
        if secret:
            headers.append((SIGNATURE_HEADER, signature(secret, body, t)))
        return headers

    async def post(self, headers: list[tuple[str, str]], body: bytes) -> tuple[int, bytes]:
        """POST on an idle connection (once more on a new one if the server had closed
        it meanwhile), then give the connection back if it can be reused."""
        while True:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._open()
            try:
                result = await connection.request(self._target, headers, body)
            except (OSError, h11.ProtocolError) as exc:
                connection.close()
                if reused and not isinstance(exc, TimeoutError):
                    continue  # a kept connection the server closed: try a new one
                raise
            except BaseException:
                connection.close()
                raise
            if connection.reusable() and len(self._idle) < self._idle_max:
                self._idle.append(connection)
            else:
                connection.close()
            return result

    async def _open(self) -> Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._tls)
        return Connection(reader, writer, self._max_answer)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
