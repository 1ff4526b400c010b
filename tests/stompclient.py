"""A small asyncio STOMP-over-WebSocket client for tests that need many fast clients.

It speaks STOMP with the relay's own sans-I/O pieces (:class:`FrameParser` to read,
:func:`encode_frame` to write) over a ``websockets`` connection, and keeps every MESSAGE
it receives so a test can wait for the next one, collect a number of them, or assert
that none arrives. Typical use::

    client = await StompClient.connect(relay.ws_url)
    sub = await client.subscribe("/topic/room/lobby")          # waits for the RECEIPT
    await client.send("/app/room/lobby/join", {"username": "alice"})
    event = await client.next_event(sub, type="JOIN")          # JSON body as a dict
    await client.disconnect()
"""

# The helpers take `timeout=` arguments on purpose (tests read better that way).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from stomprelay.settings import Limits
from stomprelay.stomp.frames import V12, Frame, encode_frame
from stomprelay.stomp.parser import FrameParser

#: Generous limits for reading what the relay sends.
_READ_LIMITS = Limits(
    max_frame_size=16 * 1024 * 1024,
    max_headers=10_000,
    max_header_line=1024 * 1024,
    max_command_line=1024,
)
_SUBPROTOCOLS = {"1.2": "v12.stomp", "1.1": "v11.stomp", "1.0": "v10.stomp"}

FramePredicate = Callable[[Frame], bool]
Body = bytes | str | Mapping[str, Any]


class StompClientError(AssertionError):
    """The relay sent an ERROR, closed the connection, or a frame did not arrive in time."""


def body_bytes(body: Body) -> bytes:
    """Bytes as they are, text as UTF-8, a mapping as compact JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(dict(body), separators=(",", ":")).encode("utf-8")


def event_of(frame: Frame) -> dict[str, Any]:
    """The JSON body of a MESSAGE (room events, participant replies) as a dict."""
    data = json.loads(frame.body.decode("utf-8"))
    assert isinstance(data, dict), frame.body
    return data


def is_event(frame: Frame, **fields: Any) -> bool:
    """True when ``frame`` has a JSON object body whose fields include ``fields``."""
    try:
        data = event_of(frame)
    except (ValueError, AssertionError):
        return False
    return all(data.get(key) == value for key, value in fields.items())


class StompClient:
    """One STOMP 1.2 session over one WebSocket connection."""

    def __init__(self, ws: ClientConnection, version: str, name: str) -> None:
        self.ws = ws
        self.version = version
        self.name = name
        self.parser = FrameParser(_READ_LIMITS, version=version)
        #: The CONNECTED frame, and the session / relay ids it announced.
        self.connected: Frame | None = None
        self.session_id = ""
        self.server_id = ""
        #: Every MESSAGE ever received, in arrival order.
        self.history: list[Frame] = []
        #: Every ERROR frame received.
        self.errors: list[Frame] = []
        self._pending: collections.deque[Frame] = collections.deque()
        self._receipts: dict[str, asyncio.Future[Frame]] = {}
        self._connected: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"stompclient-{name}")

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        login: str | None = None,
        passcode: str | None = None,
        heartbeat: tuple[int, int] = (0, 0),
        version: str = V12,
        headers: Iterable[tuple[str, str]] = (),
        name: str = "",
        timeout: float = 5,
    ) -> StompClient:
        """Open the WebSocket, send CONNECT and wait for CONNECTED."""
        ws = await connect(
            url,
            subprotocols=[Subprotocol(_SUBPROTOCOLS[version])],
            ping_interval=None,
            open_timeout=timeout,
        )
        client = cls(ws, version, name or url)
        connect_headers = [("accept-version", version), ("host", "localhost")]
        if login is not None:
            connect_headers.append(("login", login))
        if passcode is not None:
            connect_headers.append(("passcode", passcode))
        connect_headers.append(("heart-beat", f"{heartbeat[0]},{heartbeat[1]}"))
        connect_headers.extend(headers)
        await client.send_frame(Frame("CONNECT", tuple(connect_headers)))
        try:
            frame = await asyncio.wait_for(asyncio.shield(client._connected), timeout)
        except TimeoutError:
            await client.close()
            raise StompClientError(f"{client.name}: no CONNECTED within {timeout}s") from None
        client.connected = frame
        client.session_id = frame.get("session") or ""
        client.server_id = frame.get("x-server-id") or ""
        return client

    async def close(self) -> None:
        """Drop the connection without a DISCONNECT frame (a client vanishing)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        await self._stop_reader()

    async def disconnect(self, timeout: float = 5) -> None:
        """Graceful DISCONNECT with a receipt, then wait for the relay to close."""
        receipt = f"bye-{next(self._ids)}"
        future = self._expect_receipt(receipt)
        await self.send_frame(Frame("DISCONNECT", (("receipt", receipt),)))
        await self._await_receipt(receipt, future, timeout)
        await self.wait_closed(timeout)
        await self.close()

    async def wait_closed(self, timeout: float = 5) -> int | None:
        """Wait until the WebSocket is closed; return the close code the relay sent."""
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            raise StompClientError(f"{self.name}: still open after {timeout}s") from None
        return self.close_code

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_code(self) -> int | None:
        """Close code received from the relay (1006: closed without a close frame)."""
        return self.ws.close_code

    async def _stop_reader(self) -> None:
        if not self._reader.done():
            self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

    # -- reading ------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
                self.parser.feed(data)
                while (frame := self.parser.next_frame()) is not None:
                    await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            self._closed.set()
            error = StompClientError(f"{self.name}: connection closed ({self.ws.close_code})")
            if not self._connected.done():
                self._connected.set_exception(error)
                self._connected.exception()  # mark retrieved
            for future in self._receipts.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()
            async with self._changed:
                self._changed.notify_all()

    async def _on_frame(self, frame: Frame) -> None:
        if frame.command == "CONNECTED":
            if not self._connected.done():
                self._connected.set_result(frame)
            return
        if frame.command == "RECEIPT":
            future = self._receipts.get(frame.get("receipt-id") or "")
            if future is not None and not future.done():
                future.set_result(frame)
            return
        if frame.command == "ERROR":
            self.errors.append(frame)
            error = StompClientError(
                f"{self.name}: ERROR {frame.get('message')!r}: {frame.body[:300]!r}"
            )
            if not self._connected.done():
                self._connected.set_exception(error)
                self._connected.exception()
            for future in self._receipts.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()
            return
        if frame.command == "MESSAGE":
            async with self._changed:
                self.history.append(frame)
                self._pending.append(frame)
                self._changed.notify_all()

    # -- writing ------------------------------------------------------------------------

    async def send_frame(self, frame: Frame) -> None:
        data = encode_frame(frame.command, frame.headers, frame.body, self.version)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            await self.ws.send(data)
        else:
            await self.ws.send(text)

    def _expect_receipt(self, receipt: str) -> asyncio.Future[Frame]:
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._receipts[receipt] = future
        return future

    async def _await_receipt(
        self, receipt: str, future: asyncio.Future[Frame], timeout: float
    ) -> Frame:
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise StompClientError(f"{self.name}: no RECEIPT {receipt} in {timeout}s") from None
        finally:
            self._receipts.pop(receipt, None)

    async def send(
        self,
        destination: str,
        body: Body = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        receipt: bool = False,
        timeout: float = 5,
    ) -> None:
        """SEND; a mapping body goes as JSON. With ``receipt=True`` wait for the RECEIPT."""
        hdrs = [("destination", destination), *headers]
        future = None
        if receipt:
            receipt_id = f"send-{next(self._ids)}"
            hdrs.append(("receipt", receipt_id))
            future = self._expect_receipt(receipt_id)
        await self.send_frame(Frame("SEND", tuple(hdrs), body_bytes(body)))
        if future is not None:
            await self._await_receipt(receipt_id, future, timeout)

    async def subscribe(
        self,
        destination: str,
        sub_id: str | None = None,
        *,
        receipt: bool = True,
        ack: str = "auto",
        headers: Iterable[tuple[str, str]] = (),
        timeout: float = 5,
    ) -> str:
        """SUBSCRIBE (by default waiting for the RECEIPT: live cluster-wide); the sub id."""
        sub_id = sub_id or f"sub-{next(self._ids)}"
        hdrs = [("id", sub_id), ("destination", destination), ("ack", ack), *headers]
        future = None
        if receipt:
            receipt_id = f"subscribe-{sub_id}"
            hdrs.append(("receipt", receipt_id))
            future = self._expect_receipt(receipt_id)
        await self.send_frame(Frame("SUBSCRIBE", tuple(hdrs)))
        if future is not None:
            await self._await_receipt(receipt_id, future, timeout)
        return sub_id

    async def subscribe_receipt(
        self,
        destination: str,
        sub_id: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        timeout: float = 5,
    ) -> Frame:
        """SUBSCRIBE with extra headers (``x-since-offset``, ``x-history``, ...); the
        RECEIPT frame, whose headers say what the relay will replay."""
        receipt_id = f"subscribe-{sub_id}"
        future = self._expect_receipt(receipt_id)
        frame = Frame(
            "SUBSCRIBE",
            (("id", sub_id), ("destination", destination), *headers, ("receipt", receipt_id)),
        )
        await self.send_frame(frame)
        return await self._await_receipt(receipt_id, future, timeout)

    async def unsubscribe(self, sub_id: str, *, receipt: bool = True, timeout: float = 5) -> None:
        hdrs = [("id", sub_id)]
        future = None
        if receipt:
            receipt_id = f"unsubscribe-{sub_id}-{next(self._ids)}"
            hdrs.append(("receipt", receipt_id))
            future = self._expect_receipt(receipt_id)
        await self.send_frame(Frame("UNSUBSCRIBE", tuple(hdrs)))
        if future is not None:
            await self._await_receipt(receipt_id, future, timeout)

    # -- room conveniences --------------------------------------------------------------

    async def join(self, room: str, username: str, *, receipt: bool = True) -> None:
        await self.send(f"/app/room/{room}/join", {"username": username}, receipt=receipt)

    async def chat(self, room: str, message: str, *, receipt: bool = True) -> None:
        await self.send(f"/app/room/{room}/message", {"message": message}, receipt=receipt)

    async def leave(self, room: str, *, receipt: bool = True) -> None:
        await self.send(f"/app/room/{room}/leave", receipt=receipt)

    # -- waiting for messages -----------------------------------------------------------

    def _matches(self, frame: Frame, sub_id: str | None, predicate: FramePredicate | None) -> bool:
        if sub_id is not None and frame.get("subscription") != sub_id:
            return False
        return predicate is None or predicate(frame)

    async def next_message(
        self,
        sub_id: str | None = None,
        predicate: FramePredicate | None = None,
        timeout: float = 5,
    ) -> Frame:
        """Take the first not-yet-taken MESSAGE (of ``sub_id``) matching ``predicate``.

        Non-matching messages stay queued for later calls.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                for index, frame in enumerate(self._pending):
                    if self._matches(frame, sub_id, predicate):
                        del self._pending[index]
                        return frame
                if self.errors:
                    raise StompClientError(
                        f"{self.name}: ERROR {self.errors[0].get('message')!r}: "
                        f"{self.errors[0].body[:300]!r}"
                    )
                if self._closed.is_set():
                    raise StompClientError(
                        f"{self.name}: connection closed ({self.close_code}) while waiting"
                    )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise StompClientError(
                        f"{self.name}: no matching MESSAGE (subscription {sub_id}) within "
                        f"{timeout}s; {len(self._pending)} others pending"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def next_event(
        self, sub_id: str | None = None, timeout: float = 5, **fields: Any
    ) -> dict[str, Any]:
        """The next MESSAGE whose JSON body has these fields, decoded."""
        frame = await self.next_message(sub_id, lambda f: is_event(f, **fields), timeout)
        return event_of(frame)

    async def collect(
        self,
        count: int,
        sub_id: str | None = None,
        predicate: FramePredicate | None = None,
        timeout: float = 10,
    ) -> list[Frame]:
        """Take ``count`` matching messages, in arrival order, within ``timeout`` in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        out: list[Frame] = []
        while len(out) < count:
            remaining = max(0.0, deadline - loop.time())
            try:
                out.append(await self.next_message(sub_id, predicate, remaining))
            except StompClientError as exc:
                raise StompClientError(f"{exc} (got {len(out)} of {count})") from None
        return out

    async def expect_no_message(
        self,
        sub_id: str | None = None,
        predicate: FramePredicate | None = None,
        within: float = 0.5,
    ) -> None:
        """Assert that no matching MESSAGE is pending or arrives within ``within`` s."""
        await asyncio.sleep(within)
        found = [f for f in self._pending if self._matches(f, sub_id, predicate)]
        if found:
            raise AssertionError(f"{self.name}: unexpected MESSAGE(s): {found[:5]!r}")

    def pending(
        self, sub_id: str | None = None, predicate: FramePredicate | None = None
    ) -> list[Frame]:
        """Messages received and not yet taken (matching, if filters are given)."""
        return [f for f in self._pending if self._matches(f, sub_id, predicate)]

    def received(
        self, sub_id: str | None = None, predicate: FramePredicate | None = None
    ) -> list[Frame]:
        """Every message ever received (taken or not) matching the filters."""
        return [f for f in self.history if self._matches(f, sub_id, predicate)]

    def events(self, sub_id: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Every JSON event ever received on ``sub_id`` with these fields, decoded."""
        return [event_of(f) for f in self.received(sub_id, lambda f: is_event(f, **fields))]
