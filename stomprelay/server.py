"""Transports: the WebSocket endpoint ``/ws``, HTTP routes and the TCP listener.

This module only pumps bytes: from a socket into a :class:`ServerSession`,
the session's events to :class:`Relay`, and the session's output back to the
socket, one STOMP frame per WebSocket message. A writer task per connection
owns the socket's send side, so a slow client never blocks fan-out: its queue
is bounded (``Settings.send_queue_frames``) and each write has a time limit
(``Settings.send_timeout``); past either the client is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import mimetypes
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers as HTTPHeaders
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from stomprelay.cluster.history import log_json
from stomprelay.cluster.registry import room_json, server_json, session_json
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.notify import system_notification
from stomprelay.relay import Relay
from stomprelay.router import ROOM_ID, Sink, parse_destination
from stomprelay.stomp.session import Connected

log = logging.getLogger(__name__)

SUBPROTOCOLS = [Subprotocol("v12.stomp"), Subprotocol("v11.stomp"), Subprotocol("v10.stomp")]
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

#: Seconds a dropped slow consumer gets to take its ERROR before the connection is aborted.
SLOW_CONSUMER_GRACE = 1.0

#: WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008


def select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
    """Prefer the highest STOMP version offered; serve clients offering none too."""
    for candidate in SUBPROTOCOLS:
        if candidate in offered:
            return candidate
    return None


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Connection:
    """One client connection over any transport."""

    def __init__(
        self,
        relay: Relay,
        send: Callable[[bytes], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        remote: str,
        abort: Callable[[], None],
    ) -> None:
        self.relay = relay
        self.settings = relay.settings
        self.session = relay.new_session()
        self.sink = Sink(self.session, self.flush, remote)
        self.remote = remote
        self._send = send
        self._close = close
        #: Drop the transport at once (no closing handshake).
        self.abort = abort
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._rearm = asyncio.Event()
        self.close_code = CLOSE_NORMAL

    def flush(self) -> None:
        """Move the session's output to the send queue; enforce its bound."""
        out = self.session.data_to_send()
        if out:
            self._queue.extend(out)
            self._queued_bytes += sum(map(len, out))
            settings = self.settings
            if not self.session.closed and (
                len(self._queue) > settings.send_queue_frames
                or self._queued_bytes > settings.send_queue_bytes
            ):
                self._drop_slow_consumer()
            self._wake.set()
        if self.session.closed:
            self._wake.set()

    def _drop_slow_consumer(self) -> None:
        """The client does not read: drop its backlog, send ERROR if it can still
        get through, and abort the connection if it has not closed shortly after."""
        settings = self.settings
        self.relay.metrics.slow_consumers.inc()
        self.session.fail(
            PolicyError(
                "Slow consumer",
                f"More than {settings.send_queue_frames} frames or "
                f"{settings.send_queue_bytes} bytes were waiting for this client.",
            )
        )
        self._queue.clear()
        self._queue.extend(self.session.data_to_send())
        self._queued_bytes = sum(map(len, self._queue))
        asyncio.get_running_loop().call_later(SLOW_CONSUMER_GRACE, self.abort)

    def shutdown(self) -> None:
        """Server stopping: close this client with 1001 after what is queued."""
        self.close_code = CLOSE_GOING_AWAY
        self.session.close("server shutting down")
        self.flush()

    async def run(self, incoming: AsyncIterator[bytes]) -> None:
        session = self.session
        self.relay.attach(self.sink)
        writer = asyncio.create_task(self._writer())
        timer = asyncio.create_task(self._timer())
        try:
            async for data in incoming:
                events = session.receive_data(data, time.monotonic())
                self.relay.metrics.frames_in.inc(len(events))
                if events:
                    await self.relay.handle(self.sink, events)
                    if any(isinstance(e, Connected) for e in events):
                        self._rearm.set()
                else:
                    self.flush()
                if session.closed:
                    break
        except (ConnectionClosed, OSError):
            pass  # the peer went away (closed, reset): clean up below
        finally:
            if session.error is not None:
                log.info("session %s closed: %s", session.session_id, session.close_reason)
            session.close("connection closed")
            self.flush()
            timer.cancel()
            await self.relay.detach(self.sink)
            try:
                await asyncio.wait_for(writer, self.settings.send_timeout)
            except (TimeoutError, ConnectionClosed, OSError):
                writer.cancel()

    async def _timer(self) -> None:
        session = self.session
        while not session.closed:
            deadline = session.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._rearm.clear()
            try:
                await asyncio.wait_for(self._rearm.wait(), timeout)
            except TimeoutError:
                session.tick(time.monotonic())
                self.flush()

    async def _writer(self) -> None:
        session = self.session
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    data = self._queue.popleft()
                    self._queued_bytes -= len(data)
                    await asyncio.wait_for(self._send(data), self.settings.send_timeout)
                if session.closed:
                    break
        except (ConnectionClosed, OSError):
            return
        except TimeoutError:
            self.relay.metrics.slow_consumers.inc()
            log.info("session %s dropped: a write took too long", session.session_id)
        code = self.close_code
        if session.error is not None:
            code = CLOSE_POLICY if session.error.message == "Slow consumer" else code
        with contextlib.suppress(ConnectionClosed, OSError):
            await self._close(code, (session.close_reason or "")[:120])


#: Largest POST request (head and body) the admin API reads.
MAX_POST = 16 * 1024
#: Seconds a POST connection stays open after its answer, for the client to read it.
POST_LINGER = 1.0


def _connection_class(server: RelayServer) -> type[ServerConnection]:
    """websockets' connection, but a request that starts with ``POST`` is answered here.

    websockets parses GET requests only (the WebSocket handshake and the
    ``process_request`` routes); the admin API's ``POST`` is read off the socket
    before websockets sees it, answered, and the connection closed. websockets
    then finds the connection gone before any request and drops it quietly.
    """

    class RelayConnection(ServerConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._first = bytearray()
            self._post: bytearray | None = None
            self._routed = False
            self._answered = False

        def data_received(self, data: bytes) -> None:
            if self._answered:
                return  # the rest of a refused request: read and dropped
            if self._post is not None:
                self._post_data(data)
                return
            if not self._routed:
                self._first += data
                if len(self._first) < 5 and b"POST "[: len(self._first)] == self._first:
                    return  # too early to tell a POST from a GET
                self._routed = True
                data = bytes(self._first)
                self._first = bytearray()
                if data.startswith(b"POST "):
                    self._post = bytearray()
                    self._post_data(data)
                    return
            super().data_received(data)

        def _post_data(self, data: bytes) -> None:
            assert self._post is not None
            self._post += data
            head_end = self._post.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self._post) > MAX_POST:
                    self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too large"})
                return
            head = bytes(self._post[:head_end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    value = value.strip()
                    length = int(value) if value.isdigit() and len(value) < 7 else MAX_POST + 1
            if head_end + 4 + length > MAX_POST:
                self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too large"})
                return
            if len(self._post) < head_end + 4 + length:
                return
            body = bytes(self._post[head_end + 4 : head_end + 4 + length])
            self._post = bytearray()  # anything after the body is ignored
            task = asyncio.get_running_loop().create_task(self._handle(head, body))
            server._tasks.add(task)
            task.add_done_callback(server._tasks.discard)

        async def _handle(self, head: str, body: bytes) -> None:
            status, payload = await server._post(head, body)
            self._answer(status, payload)

        def _answer(self, status: HTTPStatus, payload: object) -> None:
            body = json.dumps(payload).encode("utf-8")
            head = (
                f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            if self._answered or self.transport.is_closing():
                return
            self._answered = True
            self.transport.write(head.encode("latin-1") + body)
            # Let a client still sending a refused body finish (its bytes are
            # dropped), so it reads the answer rather than a reset.
            asyncio.get_running_loop().call_later(POST_LINGER, self.transport.close)

    return RelayConnection


def _json(status: HTTPStatus, payload: object) -> Response:
    body = json.dumps(payload, indent=None).encode("utf-8")
    headers = HTTPHeaders(
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return Response(status.value, status.phrase, headers, body)


def _plain(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = HTTPHeaders([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


class RelayServer:
    """The relay's listeners: HTTP + WebSocket on one port, optional STOMP/TCP."""

    def __init__(
        self,
        relay: Relay,
        host: str = "127.0.0.1",
        port: int = 8080,
        stomp_port: int | None = None,
        web_root: Path | None = None,
        trust_proxy: bool = False,
        admin_token: str | None = None,
    ) -> None:
        self.relay = relay
        #: Bearer token for the admin API (POST /api/system/notifications); None: off.
        self._admin_token = admin_token
        #: Take the client address from X-Forwarded-For (only behind a trusted proxy).
        self.trust_proxy = trust_proxy
        self.host = host
        self.port = port
        self.stomp_port = stomp_port
        self.web_root = (web_root or WEB_ROOT).resolve()
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws_server: Server | None = None
        self._tcp_server: asyncio.Server | None = None
        self._http_routes: dict[str, Callable[[], Awaitable[Response]]] = {
            "/health": self._health,
            "/ready": self._ready,
            "/metrics": self._metrics,
            "/api/servers": self._api_servers,
            "/api/sessions": self._api_sessions,
            "/api/rooms": self._api_rooms,
        }

    async def start(self) -> None:
        max_size = self.relay.settings.limits.max_frame_size * 4
        self._ws_server = await serve(
            self._ws_handler,
            self.host,
            self.port,
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=select_subprotocol,
            process_request=self._process_request,
            max_size=max_size,
            ping_interval=20,
            close_timeout=min(2.0, self.relay.settings.drain_timeout / 2),
            create_connection=_connection_class(self),
            server_header=None,
        )
        if self.port == 0:
            self.port = self._ws_server.sockets[0].getsockname()[1]
        # What other relays and operators see: a wildcard address names no host.
        wildcard = self.host in ("", "0.0.0.0", "::")
        self.relay.host = socket.gethostname() if wildcard else self.host
        self.relay.port = self.port
        await self.relay.start()
        if self.stomp_port is not None:
            self._tcp_server = await asyncio.start_server(
                self._tcp_handler, self.host, self.stomp_port
            )
            if self.stomp_port == 0:
                self.stomp_port = self._tcp_server.sockets[0].getsockname()[1]
        log.info(
            "relay %s listening on http://%s:%d (STOMP at /ws)%s",
            self.relay.server_id,
            self.host,
            self.port,
            f", STOMP/TCP on {self.stomp_port}" if self._tcp_server else "",
        )

    async def stop(self) -> None:
        """Stop accepting, close every client with 1001, clean up; all within the drain time.

        Clients get most of ``drain_timeout`` to complete the close handshake;
        connections still open then are aborted (a frozen client cannot hold
        the stop up), and the relay's registry entries go last, which also
        covers any session whose own cleanup did not finish.
        """
        loop = asyncio.get_running_loop()
        drain = self.relay.settings.drain_timeout
        end = loop.time() + drain
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
        if self._tcp_server is not None:
            self._tcp_server.close()
        for connection in list(self.connections):
            connection.shutdown()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain * 0.6)
        for connection in list(self.connections):
            connection.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(end - loop.time() - drain * 0.2, 0))
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=max(end - loop.time(), 0.1))
        if self._ws_server is not None:
            self._ws_server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), max(end - loop.time(), 0.1))
        await self.relay.close()

    # -- WebSocket --------------------------------------------------------

    async def _ws_handler(self, ws: ServerConnection) -> None:
        async def send(data: bytes) -> None:
            await ws.send(data, text=_is_text(data))

        async def close(code: int, reason: str) -> None:
            await ws.close(code, reason)

        async def incoming() -> AsyncIterator[bytes]:
            async for message in ws:
                yield message.encode("utf-8") if isinstance(message, str) else bytes(message)

        remote = ws.remote_address
        peer = f"{remote[0]}:{remote[1]}" if remote else "unknown"
        forwarded = ws.request.headers.get("X-Forwarded-For") if ws.request else None
        if self.trust_proxy and forwarded:
            # Behind a proxy the socket's peer is the proxy: record the client it names.
            peer = forwarded.split(",")[0].strip()[:64]
        connection = Connection(self.relay, send, close, peer, ws.transport.abort)
        await self._serve(connection, incoming())

    # -- TCP --------------------------------------------------------------

    async def _tcp_handler(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        async def close(code: int, reason: str) -> None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

        async def incoming() -> AsyncIterator[bytes]:
            while data := await reader.read(65536):
                yield data

        peer = writer.get_extra_info("peername")
        connection = Connection(
            self.relay,
            send,
            close,
            f"{peer[0]}:{peer[1]}" if peer else "",
            writer.transport.abort,
        )
        try:
            await self._serve(connection, incoming())
        finally:
            writer.close()

    async def _serve(self, connection: Connection, incoming: AsyncIterator[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(connection)
        self._tasks.add(task)
        try:
            await connection.run(incoming)
        finally:
            self.connections.discard(connection)
            self._tasks.discard(task)

    # -- HTTP -------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None
        route = self._http_routes.get(path)
        try:
            if route is not None:
                return await route()
            if path.startswith("/api/rooms/"):
                return await self._api_room(path[len("/api/rooms/") :])
        except BackendUnavailable as exc:
            return _json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "registry unreachable", "detail": str(exc)},
            )
        return self._static(path)

    async def _post(self, head: str, body: bytes) -> tuple[HTTPStatus, object]:
        """The admin API: ``POST /api/system/notifications`` (contract section 5).

        Body ``{"message": "...", "roomId": optional, "serverId": optional}``,
        header ``Authorization: Bearer <admin token>``.
        """
        request_line, *lines = head.split("\r\n")
        parts = request_line.split(" ")
        path = parts[1].split("?", 1)[0] if len(parts) == 3 else ""
        if path != "/api/system/notifications":
            return HTTPStatus.NOT_FOUND, {"error": f"no POST route {path[:80]}"}
        if not self._admin_token:
            return HTTPStatus.FORBIDDEN, {
                "error": "the admin API is off: start the relay with --admin-token"
            }
        headers = {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in lines)}
        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self._admin_token.encode()):
            return HTTPStatus.UNAUTHORIZED, {"error": "a valid Bearer admin token is required"}
        try:
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("message"), str):
                raise ValueError("no message")
            room = data.get("roomId") or ""
            target = data.get("serverId") or ""
            if not isinstance(room, str) or not isinstance(target, str):
                raise ValueError("roomId and serverId are strings")
            channel, envelope = system_notification(self.relay.keys, data["message"], room, target)
        except (ValueError, RecursionError):
            return HTTPStatus.BAD_REQUEST, {
                "error": 'the body is JSON: {"message": "...", "roomId"?, "serverId"?}'
            }
        except PolicyError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": exc.detail}
        if room and not target:
            # into the room's log, like any room event (a full journal is a 503)
            try:
                await self.relay.publish_envelope(
                    parse_destination(envelope.destination), channel, envelope
                )
            except PolicyError as exc:
                return HTTPStatus.SERVICE_UNAVAILABLE, {"error": exc.detail}
        else:
            await self.relay.bus.publish(channel, envelope)
        log.info("operator notification %s published on %s", envelope.id, channel)
        return HTTPStatus.ACCEPTED, {"published": True, "id": envelope.id, "channel": channel}

    async def _health(self) -> Response:
        return _json(
            HTTPStatus.OK,
            {
                "status": "ok",
                "serverId": self.relay.server_id,
                "connections": len(self.connections),
                "uptime": round(time.time() - self.relay.started_at, 3),
            },
        )

    async def _ready(self) -> Response:
        relay = self.relay
        if relay.ready:
            return _json(HTTPStatus.OK, {"ready": True, "serverId": relay.server_id})
        reason = relay.backend_error or "redis pub/sub connection lost"
        return _json(
            HTTPStatus.SERVICE_UNAVAILABLE,
            {
                "ready": False,
                "serverId": relay.server_id,
                "reason": f"degraded, delivering to local clients only: {reason}",
            },
        )

    async def _api_servers(self) -> Response:
        return _json(
            HTTPStatus.OK,
            [
                {**server_json(record), "alive": alive, "sessions": count}
                for record, alive, count in await self.relay.registry.servers()
            ],
        )

    async def _api_sessions(self) -> Response:
        return _json(HTTPStatus.OK, [session_json(r) for r in await self.relay.registry.sessions()])

    async def _api_rooms(self) -> Response:
        return _json(HTTPStatus.OK, [room_json(r) for r in await self.relay.registry.rooms()])

    async def _api_room(self, room_id: str) -> Response:
        if not ROOM_ID.fullmatch(room_id):
            return _json(HTTPStatus.BAD_REQUEST, {"error": "invalid room id"})
        room = await self.relay.registry.room(room_id)
        history = None
        if self.relay.log is not None and self.relay.policy.logs(f"room:{room_id}"):
            history = await self.relay.log.read(f"room:{room_id}", 0, 0)
        if room is None and (history is None or not history.epoch):
            return _json(HTTPStatus.NOT_FOUND, {"error": f"no room {room_id}"})
        people = await self.relay.registry.participants(room_id)
        info = room_json(room) if room is not None else {"roomId": room_id, "participants": 0}
        return _json(
            HTTPStatus.OK,
            {
                **info,
                "history": log_json(history) if history is not None else None,
                "participants": [
                    {"sessionId": p.session_id, "username": p.username, "serverId": p.server_id}
                    for p in people
                ],
            },
        )

    async def _metrics(self) -> Response:
        sync = self.relay.sync
        self.relay.metrics.degraded_seconds.set(sync.health.degraded_total(sync.clock()))
        return _plain(HTTPStatus.OK, self.relay.metrics.render(), "text/plain; version=0.0.4")

    def _static(self, path: str) -> Response:
        relative = path.lstrip("/") or "index.html"
        target = (self.web_root / relative).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(self.web_root) or not target.is_file():
            return _plain(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return _plain(HTTPStatus.OK, target.read_bytes(), content_type)
