"""What a destination is: its route, its channels and its log (contract sections 3 and 9).

Every SEND, SUBSCRIBE and envelope goes through :func:`parse_destination`; the
route names what the destination is, and :func:`channels_for` and
:func:`log_id_for` where its messages travel and are kept.

User destinations (docs/contract.md, section 9) have two spellings, as Spring's
do: a client subscribes to ``/user/queue/{name}`` (its own user's queue) and
sends to ``/user/{user}/queue/{name}``. Inside the relay a user's queue has one
*canonical* name, ``/user/{encoded user}/queue/{name}``: the envelopes on the
bus carry it, the router keys local subscribers by it, and a MESSAGE shows the
subscriber's spelling (:func:`shown_destination`). ``{user}`` is
percent-encoded (:func:`~stomprelay.cluster.keys.encode_user`), so a user id
with a slash, a colon or a brace is one segment and one safe Redis key part.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from stomprelay.cluster.keys import Keys, encode_user
from stomprelay.errors import PolicyError

ROOM_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TOPIC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}(?:/[A-Za-z0-9_.-]{1,64}){0,7}")
#: A user queue's name: the same rule as a room id (it is a Redis key part too).
QUEUE_NAME = ROOM_ID
#: The longest user id a destination may address (decoded).
MAX_USER = 256
#: A ``{user}`` segment: any printable character but ``/``, and ``%`` only as an escape.
_USER_SEGMENT = re.compile(r"(?:[^\x00-\x20%/\x7f]|%[0-9A-Fa-f]{2})+")
USER_PREFIX = "/user/"
#: What a client subscribes to for its own user's queue ``{name}``.
OWN_QUEUE_PREFIX = "/user/queue/"


@dataclass(frozen=True, slots=True)
class Route:
    """What a destination is: ``kind`` plus the room id, topic name or user.

    For kind ``user``, ``name`` is the (decoded) user, "" for the subscriber's own
    (``/user/queue/{q}``, before :func:`own_route`), and ``action`` the queue name."""

    kind: str  # room | broadcast | system | topic | app | user | temp | reply | queue
    name: str = ""
    action: str = ""  # for kind "app": join | message | leave | participants; "user": queue


def check_room_id(room_id: str) -> str:
    if not ROOM_ID.fullmatch(room_id):
        raise PolicyError(
            "Invalid room id",
            f"Room ids match [A-Za-z0-9_.-]{{1,64}}; {room_id[:80]!r} does not.",
        )
    return room_id


def check_user(user: str) -> str:
    """A user id a destination may address: 1 to :data:`MAX_USER` characters, no
    control characters (it is compared with sessions' identities, never shown raw)."""
    if not user or len(user) > MAX_USER:
        raise PolicyError(
            "Invalid user", f"A user id in a destination is 1 to {MAX_USER} characters."
        )
    for c in user:
        if unicodedata.category(c) in ("Cc", "Cs"):
            raise PolicyError(
                "Invalid user",
                f"A user id must not contain control characters (found U+{ord(c):04X}).",
            )
    return user


def decode_user(segment: str) -> str:
    """The user a ``{user}`` segment names (percent-decoded, ``%2F`` a slash)."""
    if not _USER_SEGMENT.fullmatch(segment):
        raise PolicyError(
            "Invalid user",
            "The {user} segment of /user/{user}/queue/{name} is percent-encoded "
            "(%2F for a slash) and not empty.",
        )
    try:
        return check_user(unquote(segment, errors="strict"))
    except UnicodeDecodeError:
        raise PolicyError("Invalid user", "The {user} segment is not UTF-8 once decoded.") from None


def _user_route(destination: str) -> Route:
    parts = destination[len(USER_PREFIX) :].split("/")
    if len(parts) == 2 and parts[0] == "queue":
        user, queue = "", parts[1]
    elif len(parts) == 3 and parts[1] == "queue":
        user, queue = decode_user(parts[0]), parts[2]
    else:
        raise PolicyError(
            "Unknown destination",
            f"{destination[:120]} is not a user destination: subscribe to "
            "/user/queue/{name}, send to /user/{user}/queue/{name}.",
        )
    if not QUEUE_NAME.fullmatch(queue):
        raise PolicyError(
            "Invalid queue name",
            f"User queue names match [A-Za-z0-9_.-]{{1,64}}; {queue[:80]!r} does not.",
        )
    return Route("user", user, queue)


@lru_cache(maxsize=8192)  # every SEND and envelope asks; a refusal is not kept
def parse_destination(destination: str) -> Route:
    """Map a destination to its route (contract sections 3, 9 and 12) or refuse it."""
    if destination.startswith((TEMP_QUEUE_PREFIX, REPLY_QUEUE_PREFIX)):
        return reply_route(destination)
    if destination == "/topic/broadcast":
        return Route("broadcast")
    if destination == "/topic/system":
        return Route("system")
    if destination.startswith("/topic/room/"):
        return Route("room", check_room_id(destination[len("/topic/room/") :]))
    if destination.startswith("/app/room/"):
        rest = destination[len("/app/room/") :]
        room_id, _, action = rest.rpartition("/")
        if action in ("join", "message", "leave", "participants") and room_id:
            return Route("app", check_room_id(room_id), action)
        raise PolicyError(
            "Unknown destination",
            f"{destination[:120]} is not a room action (join, message, leave, participants).",
        )
    if destination.startswith("/topic/"):
        name = destination[len("/topic/") :]
        if TOPIC_NAME.fullmatch(name):
            return Route("topic", name)
        raise PolicyError(
            "Invalid topic name",
            "Topic names are up to 8 segments of [A-Za-z0-9_.-]{1,64} separated by '/'.",
        )
    if destination.startswith(USER_PREFIX):
        return _user_route(destination)
    if destination.startswith(QUEUE_PREFIX):
        return Route("queue", check_queue_name(destination[len(QUEUE_PREFIX) :]))
    raise PolicyError(
        "Unknown destination",
        f"{destination[:120]} is not served here; use /topic/..., /queue/..., "
        "/app/room/... or /user/....",
    )


# -- queues (docs/queues.md) ---------------------------------------------------

#: Competing consumers: ``/queue/{name}``, and its dead-letter queue ``/queue/{name}.dlq``.
QUEUE_PREFIX = "/queue/"


def check_queue_name(name: str) -> str:
    """A queue's name: ``[A-Za-z0-9_.-]{1,64}``, and a dead-letter queue's (that plus
    ``.dlq``, whatever the length); a Redis key part, as a room id is."""
    base = name[:-4] if name.endswith(".dlq") else name
    if not QUEUE_NAME.fullmatch(name) and not QUEUE_NAME.fullmatch(base):
        raise PolicyError(
            "Invalid queue name",
            f"Queue names match [A-Za-z0-9_.-]{{1,64}}; {name[:80]!r} does not.",
        )
    return name


def queue_destination(name: str) -> str:
    return QUEUE_PREFIX + name


def own_route(route: Route, user: str) -> Route:
    """``/user/queue/{q}`` of the session whose user is ``user``: that user's queue."""
    return Route("user", user, route.action)


def user_destination(user: str, queue: str) -> str:
    """The canonical name of a user's queue: ``/user/{encoded user}/queue/{queue}``."""
    return f"{USER_PREFIX}{encode_user(user)}/queue/{queue}"


def canonical(route: Route, destination: str) -> str:
    """The name the relay uses inside for ``destination``: a user queue's canonical
    name (one spelling however ``{user}`` was encoded), any other as it is."""
    if route.kind == "user" and route.name:
        return user_destination(route.name, route.action)
    return destination


def shown_destination(destination: str) -> str:
    """What a MESSAGE says its destination is: ``/user/queue/{q}`` for a user's queue
    (the subscriber's own spelling, as Spring does), any other as it is."""
    if destination.startswith(USER_PREFIX):
        return OWN_QUEUE_PREFIX + destination.rpartition("/")[2]
    return destination


def channels_for(route: Route, keys: Keys) -> tuple[str, ...]:
    if route.kind == "room":
        return keys.room_channels(route.name)
    if route.kind == "broadcast":
        return (keys.global_channel,)
    if route.kind == "system":
        return (keys.system_channel,)
    if route.kind == "topic":
        return (keys.topic_channel(route.name),)
    if route.kind == "user" and route.name:
        return (keys.user_channel(route.name),)
    if route.kind == "reply":
        return (keys.server_channel(route.name),)
    return ()


def log_id_for(route: Route) -> str:
    """The log of a destination: ``room:<id>``, ``topic:<name>``, ``global``,
    ``user:<encoded user>:<queue>``; "" for none."""
    if route.kind == "room":
        return f"room:{route.name}"
    if route.kind == "topic":
        return f"topic:{route.name}"
    if route.kind == "broadcast":
        return "global"
    if route.kind == "user" and route.name:
        return f"user:{encode_user(route.name)}:{route.action}"
    return ""


# -- request/reply: /temp-queue/{name} and /reply-queue/{token} (docs/protocol.md) --

#: What a SEND names in ``reply-to``: a queue private to the sending session.
TEMP_QUEUE_PREFIX = "/temp-queue/"
#: What the responder sees in ``reply-to`` instead, and sends its reply to.
REPLY_QUEUE_PREFIX = "/reply-queue/"
#: Longest relay id a reply token carries (characters).
MAX_SERVER_ID = 256
#: A reply token: the relay id, base64url without padding, a dot, then 128 random
#: bits (22 base64url characters) that name the temporary queue on that relay.
_REPLY_TOKEN = re.compile(r"([A-Za-z0-9_-]{2,1368})\.([A-Za-z0-9_-]{22})")


def reply_token(server_id: str, secret: str) -> str:
    """The ``/reply-queue/`` token of a temporary queue of relay ``server_id``."""
    encoded = base64.urlsafe_b64encode(server_id.encode("utf-8")).rstrip(b"=")
    return f"{encoded.decode('ascii')}.{secret}"


def _token_server(encoded: str) -> str:
    """The relay id a token's first part names, or "" when it names none."""
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        server_id = raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    if len(server_id) > MAX_SERVER_ID or any(
        unicodedata.category(c) in ("Cc", "Cs") for c in server_id
    ):
        return ""
    return server_id


def reply_route(destination: str) -> Route:
    """``/temp-queue/{name}``: Route("temp", name); ``/reply-queue/{token}``:
    Route("reply", the relay id the token names, the token)."""
    if destination.startswith(TEMP_QUEUE_PREFIX):
        name = destination[len(TEMP_QUEUE_PREFIX) :]
        if not QUEUE_NAME.fullmatch(name):
            raise PolicyError(
                "Invalid queue name",
                f"Temporary queue names match [A-Za-z0-9_.-]{{1,64}}; {name[:80]!r} does not.",
            )
        return Route("temp", name)
    token = destination[len(REPLY_QUEUE_PREFIX) :]
    found = _REPLY_TOKEN.fullmatch(token)
    server_id = _token_server(found.group(1)) if found else ""
    if not server_id:
        raise PolicyError(
            "Invalid destination",
            f"{destination[:120]} is not a reply queue: reply to the reply-to header of the "
            "request as it arrived (/reply-queue/...).",
        )
    return Route("reply", server_id, token)
