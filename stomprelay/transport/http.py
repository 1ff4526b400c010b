"""The relay's plain HTTP routes: health, readiness, metrics, the admin API and
the web client's static files.

:class:`HttpApp` answers one parsed request (h11 did the parsing, the
connection class the I/O); every request gets a status code, bad input a 4xx,
and nothing a peer sends raises out of here.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable, Sized
from http import HTTPStatus
from pathlib import Path

import h11

from stomprelay.cluster.history import log_json
from stomprelay.cluster.registry import room_json, server_json, session_json
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.notify import system_notification
from stomprelay.relay import Relay
from stomprelay.router import ROOM_ID, parse_destination

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent.parent.parent / "web"

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]


def json_answer(status: HTTPStatus, payload: object) -> Answer:
    return (
        status.value,
        [(b"content-type", b"application/json")],
        json.dumps(payload).encode("utf-8"),
    )


def plain(status: HTTPStatus, body: bytes, content_type: str) -> Answer:
    return status.value, [(b"content-type", content_type.encode("latin-1"))], body


NOT_FOUND = plain(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (the scheme is
    case-insensitive, RFC 7235 section 2.1), or None for any other form."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class HttpApp:
    """Routes of one relay; ``connections`` (the STOMP sessions) is what /health counts."""

    def __init__(
        self,
        relay: Relay,
        connections: Sized,
        web_root: Path | None = None,
        admin_token: str | None = None,
    ) -> None:
        self.relay = relay
        self.connections = connections
        self.web_root = (web_root or WEB_ROOT).resolve()
        #: Bearer token for the admin API (POST /api/system/notifications); None: off.
        self._admin_token = admin_token
        self._get: dict[str, Callable[[], Awaitable[Answer]]] = {
            "/health": self._health,
            "/ready": self._ready,
            "/metrics": self._metrics,
            "/api/servers": self._api_servers,
            "/api/sessions": self._api_sessions,
            "/api/rooms": self._api_rooms,
        }

    async def answer(self, request: h11.Request, body: bytes) -> Answer:
        method = request.method.decode("ascii", "replace")
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        try:
            if method == "POST":
                if path == "/api/system/notifications":
                    return await self._notify(list(request.headers), body)
                return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no POST route {path[:80]}"})
            if method not in ("GET", "HEAD"):
                status, headers, payload = json_answer(
                    HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method[:16]} is not served"}
                )
                return status, [*headers, (b"allow", b"GET, HEAD, POST")], payload
            route = self._get.get(path)
            if route is not None:
                return await route()
            if path.startswith("/api/rooms/"):
                return await self._api_room(path[len("/api/rooms/") :])
            if path == "/ws":
                return plain(
                    HTTPStatus.UPGRADE_REQUIRED,
                    b"/ws is a WebSocket endpoint\n",
                    "text/plain; charset=utf-8",
                )
        except BackendUnavailable as exc:
            return json_answer(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "registry unreachable", "detail": str(exc)},
            )
        return self._static(path)

    async def _notify(self, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        """The admin API: ``POST /api/system/notifications`` (contract section 5).

        Body ``{"message": "...", "roomId": optional, "serverId": optional}``,
        header ``Authorization: Bearer <admin token>``.
        """
        if not self._admin_token:
            return json_answer(
                HTTPStatus.FORBIDDEN,
                {"error": "the admin API is off: start the relay with --admin-token"},
            )
        given = bearer_token(headers) or ""
        if not hmac.compare_digest(given.encode(), self._admin_token.encode()):
            return json_answer(
                HTTPStatus.UNAUTHORIZED, {"error": "a valid Bearer admin token is required"}
            )
        relay = self.relay
        try:
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("message"), str):
                raise ValueError("no message")
            room = data.get("roomId") or ""
            target = data.get("serverId") or ""
            if not isinstance(room, str) or not isinstance(target, str):
                raise ValueError("roomId and serverId are strings")
            channel, envelope = system_notification(relay.keys, data["message"], room, target)
        except (ValueError, RecursionError):
            return json_answer(
                HTTPStatus.BAD_REQUEST,
                {"error": 'the body is JSON: {"message": "...", "roomId"?, "serverId"?}'},
            )
        except PolicyError as exc:
            return json_answer(HTTPStatus.BAD_REQUEST, {"error": exc.detail})
        if room and not target:
            # into the room's log, like any room event (a full journal is a 503)
            try:
                await relay.publish_envelope(
                    parse_destination(envelope.destination), channel, envelope
                )
            except PolicyError as exc:
                return json_answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": exc.detail})
        else:
            await relay.bus.publish(channel, envelope)
        log.info("operator notification %s published on %s", envelope.id, channel)
        return json_answer(
            HTTPStatus.ACCEPTED, {"published": True, "id": envelope.id, "channel": channel}
        )

    async def _health(self) -> Answer:
        return json_answer(
            HTTPStatus.OK,
            {
                "status": "ok",
                "serverId": self.relay.server_id,
                "connections": len(self.connections),
                "uptime": round(time.time() - self.relay.started_at, 3),
            },
        )

    async def _ready(self) -> Answer:
        relay = self.relay
        if relay.ready:
            return json_answer(HTTPStatus.OK, {"ready": True, "serverId": relay.server_id})
        reason = relay.backend_error or "redis pub/sub connection lost"
        return json_answer(
            HTTPStatus.SERVICE_UNAVAILABLE,
            {
                "ready": False,
                "serverId": relay.server_id,
                "reason": f"degraded, delivering to local clients only: {reason}",
            },
        )

    async def _api_servers(self) -> Answer:
        return json_answer(
            HTTPStatus.OK,
            [
                {**server_json(record), "alive": alive, "sessions": count}
                for record, alive, count in await self.relay.registry.servers()
            ],
        )

    async def _api_sessions(self) -> Answer:
        sessions = await self.relay.registry.sessions()
        return json_answer(HTTPStatus.OK, [session_json(r) for r in sessions])

    async def _api_rooms(self) -> Answer:
        rooms = await self.relay.registry.rooms()
        return json_answer(HTTPStatus.OK, [room_json(r) for r in rooms])

    async def _api_room(self, room_id: str) -> Answer:
        if not ROOM_ID.fullmatch(room_id):
            return json_answer(HTTPStatus.BAD_REQUEST, {"error": "invalid room id"})
        relay = self.relay
        room = await relay.registry.room(room_id)
        history = None
        if relay.log is not None and relay.policy.logs(f"room:{room_id}"):
            history = await relay.log.read(f"room:{room_id}", 0, 0)
        if room is None and (history is None or not history.epoch):
            return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no room {room_id}"})
        people = await relay.registry.participants(room_id)
        info = room_json(room) if room is not None else {"roomId": room_id, "participants": 0}
        return json_answer(
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

    async def _metrics(self) -> Answer:
        sync = self.relay.sync
        self.relay.metrics.degraded_seconds.set(sync.health.degraded_total(sync.clock()))
        return plain(HTTPStatus.OK, self.relay.metrics.render(), "text/plain; version=0.0.4")

    def _static(self, path: str) -> Answer:
        """A file under the web root; anything that does not name one is a 404
        (a NUL, an over-long name and ``..`` included)."""
        relative = path.lstrip("/") or "index.html"
        try:
            target = (self.web_root / relative).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(self.web_root) or not target.is_file():
                return NOT_FOUND
            data = target.read_bytes()
        except (OSError, ValueError):
            return NOT_FOUND
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return plain(HTTPStatus.OK, data, content_type)
