"""The server API's operations (contract section 10): what a back-end does to the
relay without being a STOMP client: publish, broadcast, read a history, look a
user up, and (through :class:`UserControl`) subscribe, unsubscribe and disconnect
a user's sessions.

Shared by the HTTP routes (:mod:`stomprelay.transport.api_http`, on every relay)
and ``stomprelay publish`` (straight to Redis). A publish is an append to the
destination's log, which publishes it in the same step (docs/history.md), so
``200`` means "in the log"; an unlogged destination's message is published as
it is (offset 0).

Idempotency: with an ``idempotencyKey`` the message id is made from the
destination and the key (:func:`message_id`), and the log's append is
idempotent by message id (the ``:ids`` set of a log, :mod:`stomprelay.cluster.lua`):
a repeat, from any relay or the command line, gets the first append's offset
and epoch back and publishes nothing, as long as the log remembers the id
(``HistoryPolicy.id_window`` appends).

API messages carry ``x-sender:<key name>`` and never ``x-sender-session``, so a
client that logs in as ``server`` cannot pass for the back-end: its messages
always carry the session too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import unquote

from stomprelay.auth import check_name
from stomprelay.clock import now_ms
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, LogSlice
from stomprelay.cluster.queue_store import QueueStats
from stomprelay.destinations import MAX_USER as MAX_USER_ID
from stomprelay.destinations import (
    Route,
    canonical,
    channels_for,
    check_queue_name,
    log_id_for,
    parse_destination,
)
from stomprelay.errors import BackendUnavailable, InternalError, PolicyError, StompRelayError
from stomprelay.router import RESERVED_HEADERS, message_headers
from stomprelay.settings import Settings
from stomprelay.usersubs import is_notice_destination

if TYPE_CHECKING:
    from stomprelay.cluster.backends import Backends

log = logging.getLogger(__name__)

Row = dict[str, object]
T = TypeVar("T")
#: Runs one Redis operation (a relay's: fails fast while Redis counts as down).
Guard = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]

#: Destination kinds a back-end may publish to: rooms, topics, a user's queue.
PUBLISHABLE = frozenset({"room", "topic", "broadcast", "user"})
#: Longest user name a dev token is made for (the relay's ``max_login`` default).
#: A route's ``{user}`` takes any user id (:data:`MAX_USER_ID`): ``--max-login``
#: may let longer ones connect.
MAX_USER = 64
#: Longest idempotency key.
MAX_IDEMPOTENCY_KEY = 256
#: Most destinations of one broadcast.
MAX_BROADCAST = 100
#: Most messages one history read returns, and the default.
MAX_HISTORY = 1000
DEFAULT_HISTORY = 100
#: Longest reason of a disconnect.
MAX_REASON = 1000
#: Header room the relay keeps for its own headers (x-sender, x-offset, ...).
RELAY_HEADERS = 16
#: Characters a header can never hold (STOMP 1.0 has no escapes for them).
_BAD_NAME = frozenset(":\r\n\0")
_BAD_VALUE = frozenset("\r\n\0")


class ApiError(StompRelayError):
    """A request the API refuses: its HTTP status, a plain-language ``error`` and
    the request ``field`` at fault (where one is)."""

    def __init__(
        self, status: int, error: str, field: str | None = None, extra: Row | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        #: More of the answer (e.g. which relays did not confirm a user change).
        self.extra = extra or {}

    def as_json(self) -> Row:
        row: Row = {"error": self.error}
        if self.field:
            row["field"] = self.field
        for name, value in self.extra.items():
            row.setdefault(name, value)
        return row


def bad(error: str, field: str | None = None) -> ApiError:
    return ApiError(400, error, field)


class UserControl(Protocol):
    """What a running relay does for the server-side subscription and disconnect
    routes (every session of a user, on any relay, now and later)."""

    async def subscribe_user(self, user: str, destination: str) -> Row: ...

    async def unsubscribe_user(self, user: str, destination: str) -> Row: ...

    async def disconnect_user(self, user: str, reason: str) -> Row: ...


def message_id(destination: str, idempotency_key: str | None) -> str:
    """The id of an API message: from the destination and key when there is a key
    (so any relay makes the same one), else random."""
    if idempotency_key is None:
        return f"api-{secrets.token_hex(12)}"
    digest = hashlib.sha256(f"{destination}\n{idempotency_key}".encode()).hexdigest()
    return f"api-{digest[:32]}"


@dataclass(frozen=True, slots=True)
class Message:
    """One checked publish request (for one or several destinations)."""

    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    idempotency_key: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, object], settings: Settings) -> Message:
        """The body, headers and key of a request, checked: a reserved or malformed
        header, a bad key or two bodies are 400s, a body past twice
        ``--max-frame-size`` a 413 (the field at fault named)."""
        if "body" in data and "bodyBase64" in data:
            raise bad('give "body" or "bodyBase64", not both', "body")
        if "bodyBase64" in data:
            raw = data["bodyBase64"]
            if not isinstance(raw, str):
                raise bad("bodyBase64 is a base64 string", "bodyBase64")
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise bad("bodyBase64 is not valid base64", "bodyBase64") from None
            field = "bodyBase64"
        else:
            text = data.get("body")
            if not isinstance(text, str):
                raise bad('"body" (a string) or "bodyBase64" is required', "body")
            try:
                body = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800")
                raise bad("body is not valid Unicode: use bodyBase64 for bytes", "body") from None
            field = "body"
        most = 2 * settings.limits.max_frame_size
        if len(body) > most:
            raise ApiError(413, f"the body is {len(body)} bytes; at most {most}", field)
        return cls(body, _headers(data.get("headers"), settings), _key(data))


def _headers(raw: object, settings: Settings) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise bad("headers is an object of string values", "headers")
    most = max(1, settings.limits.max_headers - RELAY_HEADERS)
    if len(raw) > most:
        raise bad(f"at most {most} headers", "headers")
    out: list[tuple[str, str]] = []
    for name, value in raw.items():
        if not isinstance(value, str):
            raise bad(f"header {name[:64]!r} is not a string", "headers")
        if not name or _BAD_NAME & set(name) or _BAD_VALUE & set(value):
            raise bad(f"header {name[:64]!r} has a character a header cannot hold", "headers")
        if len(name) + len(value) + 1 > settings.limits.max_header_line:
            raise bad(f"header {name[:64]!r} is too long", "headers")
        if name.lower() in RESERVED_HEADERS:
            raise bad(f"header {name[:64]} is reserved: the relay sets it", "headers")
        out.append((name, value))
    return tuple(out)


def _key(data: Mapping[str, object]) -> str | None:
    key = data.get("idempotencyKey")
    if key is None:
        return None
    if (
        not isinstance(key, str)
        or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY
        or not key.isprintable()
    ):
        raise bad(
            f"idempotencyKey is 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
            "idempotencyKey",
        )
    return key


def destination_of(value: object, field: str = "destination") -> tuple[str, Route]:
    """A destination a back-end may publish to, with its route (400 otherwise)."""
    if not isinstance(value, str) or not value:
        raise bad(f"{field} is a destination string", field)
    try:
        route = parse_destination(value)
    except PolicyError as exc:
        raise bad(exc.detail, field) from None
    if route.kind not in PUBLISHABLE or (route.kind == "user" and not route.name):
        raise bad(
            f"{value[:120]} is not a room, topic or /user/{{user}}/queue/{{name}} destination",
            field,
        )
    if is_notice_destination(value):
        raise bad(f"{value[:120]} is written by the relay only", field)
    return value, route


def user_in_path(raw: str) -> str:
    """The ``{user}`` of a route, percent-decoded (``%2F`` a slash) and checked like a
    login: 1 to :data:`MAX_USER_ID` characters, no control or bidi characters (400)."""
    try:
        return check_name(unquote(raw, errors="strict"), "user", MAX_USER_ID)
    except (PolicyError, UnicodeDecodeError):
        raise bad(
            f"a user is 1 to {MAX_USER_ID} characters once percent-decoded, no control or "
            "bidi characters",
            "user",
        ) from None


def count_of(raw: str | None, field: str, default: int, most: int) -> int:
    """A non-negative integer of a query string (``default`` when absent)."""
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise bad(f"{field} is a non-negative integer", field)
    return min(int(raw), most)


def entry_json(envelope: Envelope) -> Row:
    """One message of ``GET /api/history``: text bodies as ``body``, others as
    ``bodyBase64``; headers as an object (the first of a repeated name wins)."""
    headers: dict[str, str] = {}
    for name, value in envelope.headers:
        headers.setdefault(name, value)
    row: Row = {"offset": envelope.offset, "messageId": envelope.id, "headers": headers}
    try:
        row["body"] = envelope.body.decode("utf-8")
    except UnicodeDecodeError:
        row["bodyBase64"] = base64.b64encode(envelope.body).decode("ascii")
    return row


async def _acted(act: Awaitable[Row], field: str) -> Row:
    """A user change's answer, or its refusal: a PolicyError is a 400 naming its
    ``field`` (where it has one, else ``field``); Redis unreachable, or a relay that
    did not confirm (its ``body`` says which), a 503."""
    try:
        return await act
    except PolicyError as exc:
        raise bad(exc.detail, getattr(exc, "field", None) or field) from None
    except BackendUnavailable as exc:
        extra = getattr(exc, "body", None)
        if isinstance(extra, dict):
            raise ApiError(503, str(exc), extra=extra) from None
        raise ApiError(503, "Redis is unreachable; try again later") from None
    except InternalError as exc:  # e.g. a full journal of an outage
        raise ApiError(503, str(exc)) from None


async def _direct(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


class ServerApi:
    """The API's operations over one cluster (see the module docstring).

    Handed the backends, the history policy, the settings, ``guard`` (a relay's
    degraded mode: while Redis counts as down it fails fast, a 503), the
    ``origin`` written on envelopes, ``degraded`` (True: refuse at once) and the
    relay's :class:`UserControl` where there is a relay."""

    def __init__(
        self,
        backends: Backends,
        policy: HistoryPolicy,
        settings: Settings,
        *,
        origin: str = "api",
        guard: Guard[object] | None = None,
        degraded: Callable[[], bool] = lambda: False,
        control: UserControl | None = None,
    ) -> None:
        self.backends = backends
        self.policy = policy
        self.settings = settings
        self.origin = origin
        self._guard: Guard[object] = guard or _direct
        self._degraded = degraded
        self.control = control

    def _up(self) -> None:
        if self._degraded():
            raise ApiError(503, "Redis is unreachable: this relay delivers locally only")

    async def publish(self, destination: object, message: Message, sender: str) -> Row:
        """Append (or publish) one message; ``{"destination", "messageId", "offset",
        "epoch"}``. A repeated idempotency key answers the first append's result."""
        name, route = destination_of(destination)
        # a user's queue has one name inside, however {user} was percent-encoded
        inside = canonical(route, name)
        log_id = log_id_for(route)
        log_ = self.backends.log
        logged = log_ is not None and self.policy.logs(log_id)
        if message.idempotency_key is not None and not logged:
            raise bad(
                f"{name[:120]} is not logged: it cannot take an idempotencyKey", "idempotencyKey"
            )
        self._up()
        envelope = Envelope(
            id=message_id(inside, message.idempotency_key),
            origin=self.origin,
            destination=inside,
            headers=(("x-sender", sender), *message_headers(message.headers, message.body)),
            body=message.body,
            ts=now_ms(),
        )
        channel = channels_for(route, self.backends.keys)[0]
        try:
            if logged and log_ is not None:
                appended = await self._guard(
                    lambda: log_.append(log_id, channel, envelope, now_ms())
                )
                assert isinstance(appended, Envelope)
                envelope = appended
            else:
                await self._guard(lambda: self.backends.bus.publish(channel, envelope))
        except BackendUnavailable as exc:
            log.warning("API publish to %s: Redis unreachable: %s", name[:120], exc)
            raise ApiError(
                503,
                "Redis did not take the message (an append that timed out may have run: "
                "retrying with the same idempotencyKey is safe)",
            ) from None
        return {
            "destination": name,
            "messageId": envelope.id,
            "offset": envelope.offset,
            "epoch": envelope.epoch,
        }

    async def broadcast(self, destinations: object, message: Message, sender: str) -> Row:
        """:meth:`publish` to each destination, concurrently; one result each, an
        error being that destination's result (``{"destination", "error", "status"}``)."""
        if not isinstance(destinations, list) or not destinations:
            raise bad("destinations is a non-empty list of destinations", "destinations")
        if len(destinations) > MAX_BROADCAST:
            raise bad(f"at most {MAX_BROADCAST} destinations", "destinations")

        async def one(destination: object) -> Row:
            try:
                return await self.publish(destination, message, sender)
            except ApiError as exc:
                shown = destination if isinstance(destination, str) else None
                return {"destination": shown, "status": exc.status, **exc.as_json()}

        return {"results": list(await asyncio.gather(*(one(d) for d in destinations)))}

    async def history(self, destination: object, since: int | None, limit: int) -> Row:
        """The log of a destination: after offset ``since``, else its last ``limit``."""
        name, route = destination_of(destination)
        log_id = log_id_for(route)
        log_ = self.backends.log
        if log_ is None or not self.policy.logs(log_id):
            raise ApiError(404, f"{name[:120]} has no log on this cluster", "destination")
        self._up()
        try:
            if since is None:
                read = await self._guard(lambda: log_.read(log_id, 0, limit, tail=limit))
            else:
                read = await self._guard(lambda: log_.read(log_id, since, limit))
        except BackendUnavailable:
            raise ApiError(503, "Redis is unreachable; the log cannot be read now") from None
        assert isinstance(read, LogSlice)
        return {
            "destination": name,
            "epoch": read.epoch or None,
            "offset": read.last,
            "messages": [entry_json(e) for e in read.entries],
        }

    async def queue(self, name: str) -> Row:
        """``/queue/{name}``: ``{"name", "length", "consumers", "pending", "deadLetters"}``
        (docs/queues.md); 404 for a queue nobody used."""
        try:
            check_queue_name(name)
        except PolicyError as exc:
            raise bad(exc.detail, "name") from None
        store = self.backends.queues
        if store is None:
            raise ApiError(404, f"no queue {name}")
        try:
            stats = await self._guard(lambda: store.stats(name))
        except BackendUnavailable:
            raise ApiError(503, "Redis is unreachable; the queue cannot be read now") from None
        if stats is None:
            raise ApiError(404, f"no queue {name}")
        assert isinstance(stats, QueueStats)
        return stats.as_json()

    async def user(self, user: str) -> Row:
        """Whether ``user`` has a session anywhere, and each one's relay, connection
        time (ms) and rooms."""
        self._up()
        registry = self.backends.registry
        try:
            rows = await self._guard(lambda: registry.user_sessions(user))
        except BackendUnavailable:
            raise ApiError(503, "Redis is unreachable; the registry cannot be read now") from None
        assert isinstance(rows, list)
        sessions = [
            {k: row.get(k) for k in ("sessionId", "serverId", "connectedAt", "rooms")}
            for row in rows
        ]
        return {"user": user, "online": bool(sessions), "sessions": sessions}

    async def subscribe(self, user: str, destination: object, unsubscribe: bool = False) -> Row:
        """Subscribe (or unsubscribe) every session of ``user``, now and later."""
        if not isinstance(destination, str) or not destination:
            raise bad("destination is a destination string", "destination")
        control = self._control()
        act = control.unsubscribe_user if unsubscribe else control.subscribe_user
        return await _acted(act(user, destination), "destination")

    async def disconnect(self, user: str, reason: object) -> Row:
        """End every session of ``user`` with ERROR ``session ended by server``."""
        if reason is None:
            reason = ""
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise bad(f"reason is a string of at most {MAX_REASON} characters", "reason")
        return await _acted(self._control().disconnect_user(user, reason), "reason")

    def _control(self) -> UserControl:
        if self.control is None:
            raise ApiError(503, "this relay does not manage users' subscriptions")
        return self.control
