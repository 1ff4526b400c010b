"""The server API's routes on a user's sessions: ``POST /api/users/{user}/subscribe``,
``/unsubscribe`` and ``/disconnect`` (contract section 10, docs/api.md).

Each answers a status and a JSON body; :class:`~stomprelay.transport.http.HttpApp`
gates and sends them. Errors are ``{"error", "field"?}``: 400 naming the field at
fault, 503 when Redis cannot be reached or a relay holding one of the user's sessions
did not confirm within ``--api-confirm-timeout`` (the body then says which; what
was kept stays kept, and asking again is safe).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from urllib.parse import unquote

from stomprelay.admin import Admin, NotTaken
from stomprelay.auth import check_name
from stomprelay.errors import PolicyError
from stomprelay.userctl import FieldError, NotConfirmed

#: Longest user name the API routes take (the relay's ``max_login`` default).
MAX_USER = 64
USER_ACTIONS = frozenset({"subscribe", "unsubscribe", "disconnect"})
Body = dict[str, object]


def parse_user(raw_user: str) -> str | None:
    """The ``{user}`` of a route, percent-decoded and checked; None when invalid."""
    try:
        return check_name(unquote(raw_user, errors="strict"), "user", MAX_USER)
    except (PolicyError, UnicodeDecodeError):
        return None


def refusal(detail: str, field: str | None = None) -> tuple[HTTPStatus, Body]:
    body: Body = {"error": detail}
    if field is not None:
        body["field"] = field
    return HTTPStatus.BAD_REQUEST, body


def _text(data: dict[str, object], name: str, required: bool) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise FieldError(name, f"{name} is {'a non-empty' if required else 'a'} string")
    return value


async def user_action(
    admin: Admin, action: str, raw_user: str, body: bytes
) -> tuple[HTTPStatus, Body]:
    """Answer one of :data:`USER_ACTIONS` for the user named in the path."""
    user = parse_user(raw_user)
    if user is None:
        return refusal(
            f"a user is 1 to {MAX_USER} characters, no control or bidi characters", "user"
        )
    try:
        data = json.loads(body.decode("utf-8")) if body.strip() else {}
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        shape = '{"reason"?}' if action == "disconnect" else '{"destination": "/topic/..."}'
        return refusal(f"the body is JSON: {shape}")
    try:
        if action == "disconnect":
            reason = _text(data, "reason", required=False)
            return HTTPStatus.OK, await admin.disconnect_user(user, reason)
        destination = _text(data, "destination", required=True)
        act = admin.subscribe_user if action == "subscribe" else admin.unsubscribe_user
        return HTTPStatus.OK, await act(user, destination)
    except FieldError as exc:
        return refusal(exc.detail, exc.field)
    except NotConfirmed as exc:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc), **exc.body}
    except NotTaken as exc:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"error": exc.detail}
