"""The relay's plain HTTP routes: health, readiness, metrics, the admin API and
the web client's static files.

:class:`HttpApp` answers one parsed request (h11 did the parsing, the
connection class the I/O); every request gets a status code, bad input a 4xx,
and nothing a peer sends raises out of here.

The API tells no secrets (docs/security.md): with an admin token set,
``/api/*`` and ``/metrics`` need ``Authorization: Bearer <token>`` (RFC 6750;
``--public-metrics`` opens ``/metrics`` alone); with none, they answer loopback
clients only, the client being the address a trusted proxy forwarded, so a
proxy on the same host does not open them to everyone. Routes that change
anything need the token wherever the client is. ``/health``, ``/ready`` (which
says ready or degraded, nothing more), the page and its ``/auth/config`` stay open.

The server API's routes (``/api/publish``, ``/api/users/{user}``, ...: contract
section 10) are another module's (``transport/api_http.py``, handed in as an
:class:`ApiGate`), asked first: they have their own key (``--api-key``), which
opens nothing here (a 403 on the operator routes).
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
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

import h11

from stomprelay.admin import Admin, NotTaken
from stomprelay.api import MAX_USER, ApiError, user_in_path
from stomprelay.auth import check_name
from stomprelay.dashboard import page_query, participants_page
from stomprelay.destinations import ROOM_ID
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.metrics import Metrics
from stomprelay.notify import iso_ms
from stomprelay.settings import Settings
from stomprelay.transport.hygiene import is_loopback
from stomprelay.webfiles import default_root

if TYPE_CHECKING:
    from stomprelay.tokens import Authenticator

log = logging.getLogger(__name__)

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
USERS_PREFIX = "/api/users/"
#: The operators' dashboard (docs/operations.md): a page beside the chat page.
ADMIN_PAGES = {"/admin": "admin.html"}
KICK_SUFFIX = "/kick"


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


class Status(Protocol):
    """What the routes read of the relay they serve (the relay has these names):
    /health, /ready, /metrics, and /auth/config with /dev/token."""

    @property
    def server_id(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def started_at(self) -> float: ...

    @property
    def ready(self) -> bool: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def auth(self) -> Authenticator | None: ...

    @property
    def dev_tokens(self) -> bool: ...

    def degraded_seconds(self) -> float:
        """Seconds spent degraded (Redis unreachable) since the start."""
        ...


class ApiGate(Protocol):
    """The server API's routes (``transport/api_http.py``), handed in: which paths
    are theirs, their body limit, and whether a token is the API key."""

    def serves(self, path: str) -> bool: ...

    def body_limit(self, target: bytes) -> int: ...

    def is_api_key(self, token: str) -> bool: ...

    async def answer(
        self, method: str, path: str, query: str, headers: Headers, body: bytes, client: str
    ) -> Answer: ...


class DashboardGate(Protocol):
    """The dashboard's read routes (``transport/dashboard_http.py``), handed in."""

    async def answer(self, path: str, query: str) -> Answer | None:
        """The answer to ``GET path?query``; None when the path is not theirs."""
        ...


class HttpApp:
    """Routes of one relay: ``admin`` does what the API asks, ``status`` says how
    the relay is; ``connections`` (the STOMP sessions) is what /health counts."""

    def __init__(
        self,
        admin: Admin,
        status: Status,
        connections: Sized,
        web_root: Path | None = None,
        admin_token: str | None = None,
        api: ApiGate | None = None,
        dashboard: DashboardGate | None = None,
    ) -> None:
        self.admin = admin
        #: The dashboard's reads (``transport/dashboard_http.py``), asked after the gate.
        self.dashboard = dashboard
        #: The server API's routes (contract section 10), where the relay serves them.
        self.api = api
        self.status = status
        self.connections = connections
        self.web_root = (web_root or default_root()).resolve()
        #: Bearer token of the admin API; None: reads from loopback only, no writes.
        self._admin_token = admin_token
        self._public_metrics = status.settings.public_metrics
        self._get: dict[str, Callable[[], Awaitable[Answer]]] = {
            "/health": self._health,
            "/ready": self._ready,
            "/metrics": self._metrics,
            "/auth/config": self._auth_config,
            "/api/servers": self._api_servers,
            "/api/sessions": self._api_sessions,
            "/api/rooms": self._api_rooms,
        }

    async def answer(self, request: h11.Request, body: bytes, client: str) -> Answer:
        """``client``: the requester's address (the one a trusted proxy forwarded)."""
        method = request.method.decode("ascii", "replace")
        path, _, query = request.target.decode("latin-1").partition("?")
        try:
            if self.api is not None and self.api.serves(path):
                return await self.api.answer(
                    method, path, query, list(request.headers), body, client
                )
            if path == "/metrics" or path == "/api" or path.startswith("/api/"):
                refused = self._gate(path, list(request.headers), client)
                if refused is not None:
                    return refused
            if method == "POST":
                if path == "/api/system/notifications":
                    return await self._notify(body)
                if path.startswith(USERS_PREFIX) and path.endswith(KICK_SUFFIX):
                    return await self._kick(path[len(USERS_PREFIX) : -len(KICK_SUFFIX)], body)
                return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no POST route {path[:80]}"})
            if method not in ("GET", "HEAD"):
                status, headers, payload = json_answer(
                    HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method[:16]} is not served"}
                )
                return status, [*headers, (b"allow", b"GET, HEAD, POST")], payload
            if self.dashboard is not None and path.startswith("/api/"):
                shown = await self.dashboard.answer(path, query)
                if shown is not None:
                    return shown
            route = self._get.get(path)
            if route is not None:
                return await route()
            if path.startswith("/api/rooms/"):
                return await self._api_room(path[len("/api/rooms/") :], query)
            if path == "/dev/token":
                return self._dev_token(query)
            if path == "/api" or path.startswith("/api/"):  # API errors are JSON
                return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no route {path[:80]}"})
            if path == "/ws":
                return plain(
                    HTTPStatus.UPGRADE_REQUIRED,
                    b"/ws is a WebSocket endpoint\n",
                    "text/plain; charset=utf-8",
                )
        except BackendUnavailable as exc:
            log.warning("HTTP %s: registry unreachable: %s", path[:80], exc)
            return json_answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "registry unreachable"})
        return self._static(path)

    def body_limit(self, target: bytes) -> int:
        """Most bytes of the body of a request for ``target`` (a publish's is larger)."""
        if self.api is not None:
            return self.api.body_limit(target)
        return self.status.settings.max_request_body

    def _gate(self, path: str, headers: Headers, client: str) -> Answer | None:
        """None when the client may see ``path`` (an ``/api`` route or ``/metrics``),
        else the refusal: 401 without the admin token, 403 off loopback without one set."""
        if path == "/metrics" and self._public_metrics:
            return None
        if self._admin_token:
            given = bearer_token(headers)
            if given is not None and hmac.compare_digest(
                given.encode("utf-8"), self._admin_token.encode("utf-8")
            ):
                return None
            if given is not None and self.api is not None and self.api.is_api_key(given):
                return json_answer(
                    HTTPStatus.FORBIDDEN,
                    {
                        "error": "the API key opens the server API only; this route needs the "
                        "admin token"
                    },
                )
            status, answer_headers, payload = json_answer(
                HTTPStatus.UNAUTHORIZED, {"error": "a valid Bearer admin token is required"}
            )
            challenge = b"Bearer" if given is None else b'Bearer error="invalid_token"'
            return status, [*answer_headers, (b"www-authenticate", challenge)], payload
        if is_loopback(client):
            return None
        return json_answer(
            HTTPStatus.FORBIDDEN,
            {
                "error": "this relay has no admin token, so its API answers loopback clients "
                "only: set one (--admin-token / ADMIN_TOKEN) and send it as a Bearer token"
            },
        )

    def _admin_only(self) -> Answer | None:
        """Routes that act (notify, kick) need a configured token, even from loopback."""
        if self._admin_token:
            return None
        return json_answer(
            HTTPStatus.FORBIDDEN,
            {"error": "the admin API is off: start the relay with --admin-token"},
        )

    async def _notify(self, body: bytes) -> Answer:
        """The admin API: ``POST /api/system/notifications`` (contract section 5).

        Body ``{"message": "...", "roomId": optional, "serverId": optional}``,
        header ``Authorization: Bearer <admin token>`` (checked by :meth:`_gate`).
        """
        refused = self._admin_only()
        if refused is not None:
            return refused
        try:
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("message"), str):
                raise ValueError("no message")
            room = data.get("roomId") or ""
            target = data.get("serverId") or ""
            if not isinstance(room, str) or not isinstance(target, str):
                raise ValueError("roomId and serverId are strings")
        except (ValueError, RecursionError):
            return json_answer(
                HTTPStatus.BAD_REQUEST,
                {"error": 'the body is JSON: {"message": "...", "roomId"?, "serverId"?}'},
            )
        if target and not ROOM_ID.fullmatch(target):
            return json_answer(
                HTTPStatus.BAD_REQUEST,
                {"error": "serverId must match [A-Za-z0-9_.-]{1,64}, like a room id"},
            )
        try:
            notified = await self.admin.notify(data["message"], room, target)
        except PolicyError as exc:
            return json_answer(HTTPStatus.BAD_REQUEST, {"error": exc.detail})
        except NotTaken as exc:  # into the room's log, like any room event: a full journal
            return json_answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": exc.detail})
        return json_answer(
            HTTPStatus.ACCEPTED,
            {"published": True, "id": notified.envelope.id, "channel": notified.channel},
        )

    async def _kick(self, raw_user: str, body: bytes) -> Answer:
        """``POST /api/users/{user}/kick``, body ``{"until": ISO-8601 or ms}`` optional:
        every session of the user ends cluster-wide, and the user is refused until
        then; ``{"lift": true}`` only ends a suspension."""
        refused = self._admin_only()
        if refused is not None:
            return refused
        try:
            user = user_in_path(raw_user)
        except ApiError as exc:
            return json_answer(HTTPStatus.BAD_REQUEST, exc.as_json())
        try:
            until_ms = _until_ms(body)
            lift = _lift(body)
        except (ValueError, RecursionError, OverflowError):
            return json_answer(
                HTTPStatus.BAD_REQUEST,
                {"error": 'the body is empty or JSON: {"until": "<ISO-8601>" or <ms since epoch>}'},
            )
        if lift:
            await self.admin.kick(user, None, lift=True)
            return json_answer(HTTPStatus.ACCEPTED, {"user": user, "lifted": True})
        await self.admin.kick(user, until_ms)
        return json_answer(HTTPStatus.ACCEPTED, {"user": user, "until": until_ms})

    async def _auth_config(self) -> Answer:
        """What the web page needs to know before it connects (no secret in it)."""
        return json_answer(
            HTTPStatus.OK,
            {
                "required": self.status.auth is not None,
                "devTokens": self.status.dev_tokens,
            },
        )

    def _dev_token(self, query: str) -> Answer:
        """``GET /dev/token?user=NAME``: a token for anyone who asks, for ``make run``
        and demos only (``--dev-tokens``); a 404 unless that is on."""
        auth = self.status.auth
        if not self.status.dev_tokens or auth is None:
            return NOT_FOUND
        users = parse_qs(query, max_num_fields=8).get("user") or [""]
        try:
            user = check_name(users[0], "user", MAX_USER)
        except PolicyError:
            return json_answer(
                HTTPStatus.BAD_REQUEST,
                {"error": f"?user= is 1 to {MAX_USER} characters, no control or bidi characters"},
            )
        try:
            token = auth.issue(user)
        except ValueError:
            return NOT_FOUND  # no secret to sign with
        status, headers, payload = json_answer(HTTPStatus.OK, {"token": token})
        return status, [*headers, (b"cache-control", b"no-store")], payload

    async def _health(self) -> Answer:
        return json_answer(
            HTTPStatus.OK,
            {
                "status": "ok",
                "serverId": self.status.server_id,
                "connections": len(self.connections),
                "uptime": round(time.time() - self.status.started_at, 3),
            },
        )

    async def _ready(self) -> Answer:
        """For load balancers: ready, or degraded (local delivery only); the cause is
        in the relay's log and ``/metrics``, not here."""
        if self.status.ready:
            return json_answer(HTTPStatus.OK, {"status": "ready"})
        return json_answer(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "degraded"})

    async def _api_servers(self) -> Answer:
        return json_answer(HTTPStatus.OK, await self.admin.servers())

    async def _api_sessions(self) -> Answer:
        return json_answer(HTTPStatus.OK, await self.admin.sessions())

    async def _api_rooms(self) -> Answer:
        return json_answer(HTTPStatus.OK, await self.admin.rooms())

    async def _api_room(self, room_id: str, query: str = "") -> Answer:
        """``GET /api/rooms/{id}``: with ``?offset=&limit=``, one page of its
        participants (``participantTotal`` counts them all)."""
        if not ROOM_ID.fullmatch(room_id):
            return json_answer(HTTPStatus.BAD_REQUEST, {"error": "invalid room id"})
        try:
            page = page_query(query)
        except ApiError as exc:
            return json_answer(HTTPStatus(exc.status), exc.as_json())
        room = await self.admin.room(room_id)
        if room is None:
            return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no room {room_id}"})
        if page is None:
            return json_answer(HTTPStatus.OK, room.as_json())
        return json_answer(HTTPStatus.OK, participants_page(room.as_json(), page))

    async def _metrics(self) -> Answer:
        metrics = self.status.metrics
        metrics.degraded_seconds.set(self.status.degraded_seconds())
        return plain(HTTPStatus.OK, metrics.render(), "text/plain; version=0.0.4")

    def _static(self, path: str) -> Answer:
        """A file under the web root; anything that does not name one is a 404
        (a NUL, an over-long name and ``..`` included). A path is one slash and a
        name: ``//admin.html`` is a 404, so no page is served where its relative
        links would make a network-path reference (``//api/...``, another host)."""
        if not path.startswith("/") or path.startswith("//"):
            return NOT_FOUND
        relative = ADMIN_PAGES.get(path) or path[1:] or "index.html"
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


def _lift(body: bytes) -> bool:
    """``{"lift": true}``: end a suspension, end no session."""
    if not body.strip():
        return False
    data = json.loads(body.decode("utf-8"))
    lift = data.get("lift", False) if isinstance(data, dict) else False
    if not isinstance(lift, bool):
        raise ValueError("lift is true or false")
    return lift


def _until_ms(body: bytes) -> int | None:
    """The ``until`` of a kick body as ms since the epoch: ISO-8601 (no zone: UTC)
    or a number of ms; None when the body or the field is empty. ValueError otherwise."""
    if not body.strip():
        return None
    data = json.loads(body.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not an object")
    until = data.get("until")
    if until is None:
        return None
    if isinstance(until, bool):
        raise ValueError("until is a time")
    if isinstance(until, int | float):
        if not 0 <= until < 10**15:
            raise ValueError("until out of range")
        return int(until)
    if isinstance(until, str):
        return iso_ms(until)
    raise ValueError("until is a string or a number")
