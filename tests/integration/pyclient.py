"""Drive real stomp.py (8.2) connections from asyncio tests.

stomp.py is thread based: a receiver thread calls listener methods. :class:`PyClient`
puts every frame into per-kind queues and runs stomp.py's blocking calls in worker
threads (``asyncio.to_thread``), so the in-process relay keeps running in the test's
event loop while a client waits.
"""

# The helpers take `timeout=` arguments on purpose (tests read better that way).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

import stomp
from stomp.utils import Frame

#: stomp.py connection classes by transport/version name.
KINDS = ("ws", "tcp10", "tcp11", "tcp12")
VERSIONS = {"ws": "1.2", "tcp10": "1.0", "tcp11": "1.1", "tcp12": "1.2"}

#: Sample payloads: header values that need escaping, UTF-8 text, bytes 0-255 with NULs.
HEADERS = {
    "x-colon": "a:b:c",
    "x-backslash": "back\\slash\\\\",
    "x-newline": "line one\nline two",
    "x-unicode": "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c \U0001f600",
    "x-mixed": "k:v\\n\n\u00fc:",
    "x-empty": "",
}
#: STOMP 1.1 has no escape for carriage return; only 1.2 clients send one.
HEADERS_12 = {**HEADERS, "x-cr": "carriage\rreturn"}
TEXT_BODY = "plain text, \u00e9\u2713 \U0001f600\n\twith lines and tabs"
BINARY_BODY = bytes(range(256)) * 3 + b"\x00\x00"


class QueueListener(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.queues: dict[str, queue.Queue[Frame]] = {
            kind: queue.Queue() for kind in ("connected", "message", "receipt", "error")
        }
        self.heartbeats = 0
        self.heartbeat_timeouts = 0
        self.disconnected = threading.Event()

    def on_connected(self, frame: Frame) -> None:
        self.queues["connected"].put(frame)

    def on_message(self, frame: Frame) -> None:
        self.queues["message"].put(frame)

    def on_receipt(self, frame: Frame) -> None:
        self.queues["receipt"].put(frame)

    def on_error(self, frame: Frame) -> None:
        self.queues["error"].put(frame)

    def on_heartbeat(self) -> None:
        self.heartbeats += 1

    def on_heartbeat_timeout(self) -> None:
        self.heartbeat_timeouts += 1

    def on_disconnected(self) -> None:
        self.disconnected.set()


class PyClient:
    """One stomp.py connection; bodies are kept as bytes (``auto_decode=False``)."""

    def __init__(self, kind: str, conn: Any) -> None:
        self.kind = kind
        self.version = VERSIONS[kind]
        self.conn = conn
        self.listener = QueueListener()
        conn.set_listener("test-queue", self.listener)

    @classmethod
    def create(cls, kind: str, port: int, stomp_port: int | None, **options: Any) -> PyClient:
        """``port`` is the relay's HTTP/WebSocket port, ``stomp_port`` its STOMP/TCP one."""
        common: dict[str, Any] = {"reconnect_attempts_max": 1, "timeout": 5, "auto_decode": False}
        common.update(options)
        if kind == "ws":
            conn = stomp.WSStompConnection([("127.0.0.1", port)], ws_path="/ws", **common)
        else:
            assert stomp_port is not None, "the relay has no STOMP/TCP listener"
            factory = {
                "tcp10": stomp.Connection10,
                "tcp11": stomp.Connection,  # stomp.py's default connection speaks 1.1
                "tcp12": stomp.Connection12,
            }[kind]
            if kind == "tcp10":
                common.pop("heartbeats", None)
            conn = factory([("127.0.0.1", stomp_port)], **common)
        return cls(kind, conn)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one blocking stomp.py call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def connect(self, **kwargs: Any) -> Frame:
        """Connect and return the CONNECTED frame."""
        await self.run(self.conn.connect, wait=True, **kwargs)
        return await self.next("connected")

    async def next(self, kind: str, timeout: float = 5) -> Frame:
        try:
            return await asyncio.to_thread(self.listener.queues[kind].get, True, timeout)
        except queue.Empty:
            raise AssertionError(f"{self.kind}: no {kind} frame within {timeout}s") from None

    def pending(self, kind: str) -> int:
        return self.listener.queues[kind].qsize()

    async def receipt(self, receipt_id: str, timeout: float = 5) -> Frame:
        frame = await self.next("receipt", timeout)
        assert frame.headers.get("receipt-id") == receipt_id, frame.headers
        return frame

    async def message(self, timeout: float = 5) -> Frame:
        return await self.next("message", timeout)

    async def subscribe(self, destination: str, sub_id: str = "s1", ack: str = "auto") -> None:
        """SUBSCRIBE and wait for its RECEIPT (the subscription is live)."""
        receipt = f"sub-{sub_id}"
        await self.run(self.conn.subscribe, destination, sub_id, ack=ack, receipt=receipt)
        await self.receipt(receipt)

    async def send(self, destination: str, body: bytes | str, **kwargs: Any) -> None:
        await self.run(self.conn.send, destination, body, **kwargs)

    async def close(self) -> None:
        """Disconnect politely if still connected; drop the socket otherwise."""
        if self.conn.is_connected():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.run(self.conn.disconnect), 5)
            await asyncio.to_thread(self.listener.disconnected.wait, 5)
        with contextlib.suppress(Exception):
            await self.run(self.conn.transport.disconnect_socket)


class PyClients:
    """A factory that remembers its clients: ``pool(server, kind, **options)``; ``aclose()``."""

    def __init__(self) -> None:
        self.made: list[PyClient] = []

    def __call__(self, server: Any, kind: str = "ws", **options: Any) -> PyClient:
        """An unconnected client of ``server`` (a RelayServer) over ``kind``."""
        client = PyClient.create(kind, server.port, server.stomp_port, **options)
        self.made.append(client)
        return client

    async def aclose(self) -> None:
        await asyncio.gather(*(client.close() for client in self.made))
