"""The server API over HTTP (contract section 10): its routes, its key, its errors.

:class:`ApiRoutes` answers the requests whose path is one of :data:`ROUTES`
(:class:`~stomprelay.transport.http.HttpApp` hands them over); the work is
:class:`~stomprelay.api.ServerApi`'s, shared with ``stomprelay publish``.

Who may call: with ``--api-key`` or ``--admin-token`` set, a Bearer token
(RFC 6750) that is one of them, else 401; the API key's messages carry
``x-sender:<--api-key-name>``, the admin token's ``x-sender:operator``. With
neither set, the reads answer loopback clients only (as the operator routes do)
and the writes are 403. The API key opens these routes only; the operator
routes keep the admin token (``HttpApp`` refuses the key there with a 403).

Every answer is JSON; every refusal ``{"error", "field"?}`` with its status, and
nothing a request holds raises out of here. Publishes in flight on one relay are
bounded (``--api-max-inflight``): past it, 429.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import parse_qs, unquote

from stomprelay.api import ApiError, Message, Row, ServerApi, bad, count_of, user_in_path
from stomprelay.errors import BackendUnavailable
from stomprelay.openapi import document
from stomprelay.settings import Settings
from stomprelay.transport.http import Answer, Headers, bearer_token, json_answer
from stomprelay.transport.hygiene import is_loopback

log = logging.getLogger(__name__)

#: Every route this module serves: (method, path template). The OpenAPI document
#: lists exactly these (a test holds the two to each other).
ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/api/publish"),
    ("POST", "/api/broadcast"),
    ("GET", "/api/history"),
    ("GET", "/api/users/{user}"),
    ("POST", "/api/users/{user}/subscribe"),
    ("POST", "/api/users/{user}/unsubscribe"),
    ("POST", "/api/users/{user}/disconnect"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/queues/{name}"),
)
#: Who the admin token's messages are from.
OPERATOR = "operator"
#: Most characters of a request path echoed in an error.
_SHOWN = 80

Handler = Callable[[str, bytes, str], Awaitable[Row]]


def match(path: str) -> tuple[str, str] | None:
    """The template ``path`` is an instance of, and its (still encoded) ``{user}``.

    ``{user}`` is one segment, percent-encoded (``%2F`` for a slash); in front of an
    action (``/api/users/{user}/subscribe``) a raw slash is taken as part of the user
    too, as the kick route always has (``/api/users/{user}`` alone stays one segment)."""
    for _, template in ROUTES:
        head, marker, tail = template.partition("{name}")
        if marker:
            name = path[len(head) :] if path.startswith(head) else ""
            if name and "/" not in name:
                return template, name
            continue
        head, marker, tail = template.partition("{user}")
        if not marker:
            if path == template:
                return template, ""
            continue
        if not (path.startswith(head) and path.endswith(tail)):
            continue
        user = path[len(head) : len(path) - len(tail)]
        if user and (tail or "/" not in user):
            return template, user
    return None


def _equal(given: str, secret: str | None) -> bool:
    return bool(secret) and hmac.compare_digest(given.encode("utf-8"), str(secret).encode("utf-8"))


def error_answer(exc: ApiError, headers: Headers | None = None) -> Answer:
    status, base, body = json_answer(HTTPStatus(exc.status), exc.as_json())
    return status, [*base, *(headers or [])], body


class ApiRoutes:
    """The server API's routes on one relay (see the module docstring)."""

    def __init__(
        self,
        api: ServerApi,
        settings: Settings,
        *,
        admin_token: str | None = None,
        api_key: str | None = None,
        api_key_name: str = "server",
    ) -> None:
        self.api = api
        self.settings = settings
        self._admin_token = admin_token
        self._api_key = api_key
        self._api_key_name = api_key_name
        self._inflight = 0
        self._handlers: dict[tuple[str, str], Handler] = {
            ("POST", "/api/publish"): self._publish,
            ("POST", "/api/broadcast"): self._broadcast,
            ("GET", "/api/history"): self._history,
            ("GET", "/api/users/{user}"): self._user,
            ("POST", "/api/users/{user}/subscribe"): self._subscribe,
            ("POST", "/api/users/{user}/unsubscribe"): self._unsubscribe,
            ("POST", "/api/users/{user}/disconnect"): self._disconnect,
            ("GET", "/api/openapi.json"): self._openapi,
            ("GET", "/api/queues/{name}"): self._queue,
        }
        assert set(self._handlers) == set(ROUTES)

    def serves(self, path: str) -> bool:
        return match(path) is not None

    def is_api_key(self, token: str) -> bool:
        return _equal(token, self._api_key)

    def body_limit(self, target: bytes) -> int:
        """Most bytes of a request body: a publish's may hold two frames' worth of
        body, base64 or JSON-escaped; other requests the usual HTTP limit."""
        path = target.split(b"?", 1)[0]
        base = self.settings.max_request_body
        if path in (b"/api/publish", b"/api/broadcast"):
            return base + 16 * self.settings.limits.max_frame_size
        return base

    async def answer(
        self, method: str, path: str, query: str, headers: Headers, body: bytes, client: str
    ) -> Answer:
        found = match(path)
        if found is None:
            return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no route {path[:_SHOWN]}"})
        template, raw_user = found
        verb = "GET" if method == "HEAD" else method
        handler = self._handlers.get((verb, template))
        if handler is None:
            allowed = ", ".join(m for m, t in ROUTES if t == template)
            status, base, payload = json_answer(
                HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method[:16]} is not served here"}
            )
            return status, [*base, (b"allow", allowed.encode("ascii"))], payload
        try:
            sender = self._caller(verb, headers, client)
            if template == "/api/queues/{name}":
                return json_answer(HTTPStatus.OK, await handler(sender, body, raw_user))
            if verb == "GET" and template != "/api/users/{user}":
                return json_answer(HTTPStatus.OK, await handler(sender, body, query))
            user = ""
            if template.startswith("/api/users/"):
                user = user_in_path(raw_user)
            if verb == "GET":
                return json_answer(HTTPStatus.OK, await handler(sender, body, user))
            return json_answer(HTTPStatus.OK, await self._bounded(handler, sender, body, user))
        except ApiError as exc:
            if exc.status == 401:
                given = bearer_token(headers)
                challenge = b"Bearer" if given is None else b'Bearer error="invalid_token"'
                return error_answer(exc, [(b"www-authenticate", challenge)])
            if exc.status == 429:
                return error_answer(exc, [(b"retry-after", b"1")])
            return error_answer(exc)
        except BackendUnavailable as exc:
            log.warning("API %s: Redis unreachable: %s", path[:_SHOWN], exc)
            return error_answer(ApiError(503, "Redis is unreachable; try again later"))

    def _caller(self, verb: str, headers: Headers, client: str) -> str:
        """The ``x-sender`` of the caller's messages, or the refusal (see the module)."""
        if self._admin_token or self._api_key:
            given = bearer_token(headers)
            if given is not None and _equal(given, self._admin_token):
                return OPERATOR
            if given is not None and _equal(given, self._api_key):
                return self._api_key_name
            raise ApiError(401, "a valid Bearer API key (or the admin token) is required")
        if verb == "GET" and is_loopback(client):
            return ""
        if verb == "GET":
            raise ApiError(
                403,
                "this relay has no API key or admin token, so its API answers loopback "
                "clients only: set --api-key (API_KEY) and send it as a Bearer token",
            )
        raise ApiError(
            403, "the server API is off: start the relay with --api-key (or --admin-token)"
        )

    async def _bounded(self, handler: Handler, sender: str, body: bytes, user: str) -> Row:
        most = self.settings.api_max_inflight
        if self._inflight >= most:
            raise ApiError(429, f"{most} API requests are in flight on this relay; try again")
        self._inflight += 1
        try:
            return await handler(sender, body, user)
        finally:
            self._inflight -= 1

    # -- routes ----------------------------------------------------------------

    async def _publish(self, sender: str, body: bytes, _: str) -> Row:
        data = _json(body)
        return await self.api.publish(
            data.get("destination"), Message.of(data, self.settings), sender
        )

    async def _broadcast(self, sender: str, body: bytes, _: str) -> Row:
        data = _json(body)
        return await self.api.broadcast(
            data.get("destinations"), Message.of(data, self.settings), sender
        )

    async def _history(self, _: str, __: bytes, query: str) -> Row:
        try:
            params = parse_qs(query, max_num_fields=8, strict_parsing=False)
        except ValueError:
            raise bad("the query string is malformed") from None

        def first(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        destination = first("destination")
        since_raw = first("since")
        since = None if since_raw is None else count_of(since_raw, "since", 0, 1 << 62)
        limit = count_of(first("limit"), "limit", 100, 1000)
        if limit == 0:
            raise bad("limit is at least 1", "limit")
        return await self.api.history(destination, since, limit)

    async def _user(self, _: str, __: bytes, user: str) -> Row:
        return await self.api.user(user)

    async def _subscribe(self, _: str, body: bytes, user: str) -> Row:
        return await self.api.subscribe(user, _json(body, empty_ok=True).get("destination"))

    async def _unsubscribe(self, _: str, body: bytes, user: str) -> Row:
        destination = _json(body, empty_ok=True).get("destination")
        return await self.api.subscribe(user, destination, unsubscribe=True)

    async def _disconnect(self, _: str, body: bytes, user: str) -> Row:
        return await self.api.disconnect(user, _json(body, empty_ok=True).get("reason"))

    async def _queue(self, _: str, __: bytes, name: str) -> Row:
        return await self.api.queue(unquote(name))

    async def _openapi(self, _: str, __: bytes, ___: str) -> Row:
        return document()


def _json(body: bytes, empty_ok: bool = False) -> dict[str, object]:
    """A request body that is a JSON object (400 otherwise)."""
    if empty_ok and not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise bad("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise bad("the request body is a JSON object")
    return data
