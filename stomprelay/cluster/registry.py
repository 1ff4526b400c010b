"""The distributed session registry: what it records and the protocol to reach it.

Every change of membership also publishes the event that tells everyone about
it (JOIN, LEAVE, session connect/disconnect), atomically with the change: the
step that changes a room's set appends the event to the room's log and
publishes it in the same script, so a lost participant yields exactly one LEAVE
however many relays sweep, and every relay sees a room's events in the order of
its changes. How operations are made of such steps is in ``operations.py``.

Every event body and envelope is made here, and only here; a room event's
participant count is known only inside the step that changes the room, so it
is made as an :class:`EventTemplate` with that one number left open.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import Log

#: content-type of room events (contract section 3).
EVENT_CONTENT_TYPE = "application/json;charset=utf-8"


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """A registered relay as the registry stores it (``servers:{id}:info``)."""

    server_id: str
    host: str
    port: int
    version: str
    started_at: int
    incarnation: str


@dataclass(slots=True)
class SessionRecord:
    """A connected session as the registry stores it (times in ms since epoch)."""

    session_id: str
    server_id: str
    username: str
    remote_address: str
    version: str
    connected_at: int
    last_seen: int = 0
    #: Rooms joined, oldest first; the last one is the current room.
    rooms: list[str] = field(default_factory=list)
    #: Who the session is (the token's ``sub``, else the CONNECT ``login``; "" for
    #: none): what ``/user/{user}/...`` destinations address.
    user: str = ""

    def to_fields(self) -> dict[str, str]:
        return {
            "server-id": self.server_id,
            "user": self.user,
            "username": self.username,
            "remote-address": self.remote_address,
            "version": self.version,
            "connected-at": str(self.connected_at),
            "last-seen": str(self.last_seen or self.connected_at),
            "rooms": ",".join(self.rooms),
        }

    @classmethod
    def from_fields(cls, session_id: str, fields: dict[str, str]) -> SessionRecord:
        return cls(
            session_id=session_id,
            server_id=fields.get("server-id", ""),
            username=fields.get("username", ""),
            remote_address=fields.get("remote-address", ""),
            version=fields.get("version", ""),
            connected_at=int(fields.get("connected-at") or 0),
            last_seen=int(fields.get("last-seen") or 0),
            rooms=[r for r in fields.get("rooms", "").split(",") if r],
            user=fields.get("user", ""),
        )


@dataclass(frozen=True, slots=True)
class Participant:
    """A member of a room, as SYNC and ``participants()`` list it."""

    session_id: str
    username: str
    server_id: str
    user: str = ""


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A room with participants (``rooms:{id}:info``; times in ms since the epoch)."""

    room_id: str
    participants: int
    created_at: int
    last_activity: int


@dataclass(frozen=True, slots=True)
class Ghost:
    """A session that connected and ended while Redis was unreachable: Redis never
    held it, so a restore has nothing to change, and only reports it (webhooks'
    ``session.connected`` and ``session.disconnected``, ids made from ``event_id``)."""

    record: SessionRecord
    event_id: str
    ended_at: int
    cause: str


@dataclass(slots=True)
class Pending:
    """What Redis has not seen of a relay's sessions, for :meth:`Registry.restore`.

    ``joins``/``leaves`` map (session id, room id) to the message id of the
    event: the id the relay already delivered to its own subscribers during an
    outage (it will recognise the event when it comes back and not deliver it
    twice), or a fresh one for a change that was never announced at all.
    ``new_sessions`` are sessions whose CONNECT was never published. ``causes``:
    why sessions the registry did not see end had ended (their
    ``session.disconnected`` reason), by session id. ``ghosts``: sessions that came
    and went meanwhile (:class:`Ghost`).
    """

    joins: dict[tuple[str, str], str] = field(default_factory=dict)
    leaves: dict[tuple[str, str], str] = field(default_factory=dict)
    new_sessions: set[str] = field(default_factory=set)
    causes: dict[str, str] = field(default_factory=dict)
    ghosts: list[Ghost] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves or self.new_sessions or self.causes or self.ghosts)

    def clear(self) -> None:
        self.joins.clear()
        self.leaves.clear()
        self.new_sessions.clear()
        self.causes.clear()
        self.ghosts.clear()


#: How long a kick is remembered for relays that could not hear it (ms).
KICK_MEMORY_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class OperatorCommand:
    """``stomprelay kick``: end ``user``'s sessions (``kicked_at``, ms) and refuse it
    until ``until_ms``; or (``lift``) end a suspension only."""

    user: str
    kicked_at: int | None = None
    until_ms: int | None = None
    lift: bool = False


@dataclass(frozen=True, slots=True)
class Suspensions:
    """Operators' suspensions and recent kicks, as every relay reads them."""

    #: user -> refused until (ms since the epoch)
    until: dict[str, int] = field(default_factory=dict)
    #: user -> latest kick (ms since the epoch), within KICK_MEMORY_MS
    kicked: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadServer:
    """A relay whose heartbeat expired: what a sweeper reaps (fenced by its incarnation)."""

    server_id: str
    incarnation: str


def participant_json(participant: Participant) -> dict[str, object]:
    """One entry of a participant list (participants reply, SYNC, the admin view)."""
    return {
        "sessionId": participant.session_id,
        "username": participant.username,
        "userId": participant.user,
        "serverId": participant.server_id,
    }


def event_headers(kind: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """Headers of a relay-made room event: ``x-event-type`` is reserved (a
    client's SEND never carries it), so it tells the relay's events from forgeries."""
    return (("content-type", EVENT_CONTENT_TYPE), ("x-event-type", kind), *extra)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class EventTemplate:
    """A JOIN or LEAVE envelope as JSON text with one hole: the room's participant
    count after the change, which the room step fills in (``head + count + tail``)."""

    id: str
    head: str
    tail: str

    def fill(self, count: int) -> str:
        return f"{self.head}{int(count)}{self.tail}"


def room_event_template(
    kind: str,
    room_id: str,
    session_id: str,
    username: str,
    server_id: str,
    ts: int,
    event_id: str,
    reason: str | None = None,
    user: str = "",
) -> EventTemplate:
    """The envelope of a registry-made JOIN (``reason`` None) or LEAVE, as a template
    (``user``: the session's user, the event's ``userId``)."""
    verb = "joined" if kind == "JOIN" else "left"
    event: dict[str, object] = {
        "type": kind,
        "roomId": room_id,
        "sessionId": session_id,
        "username": username,
        "userId": user,
        "serverId": server_id,
        "timestamp": ts,
        "message": f"{username} {verb}",
    }
    if reason is not None:
        event["reason"] = reason
    body_head = _json(event)[:-1] + ',"participants":'
    marker = secrets.token_hex(16)  # a placeholder nothing else in the envelope can contain
    text = Envelope(
        id=event_id,
        origin=server_id,
        destination=f"/topic/room/{room_id}",
        headers=event_headers(kind),
        body=marker.encode(),
        ts=ts,
    ).to_json()
    head, tail = text.decode("utf-8").split(marker)
    return EventTemplate(event_id, head + _json(body_head)[1:-1], _json("}")[1:-1] + tail)


def session_envelope(
    kind: str,
    event_id: str,
    origin: str,
    session_id: str,
    server_id: str,
    username: str,
    ts: int,
    reason: str | None = None,
) -> Envelope:
    """A ``stomp:session:connect``/``disconnect`` envelope (CONNECT or DISCONNECT)."""
    return Envelope(
        id=event_id,
        origin=origin,
        destination="",
        headers=(("content-type", EVENT_CONTENT_TYPE),),
        body=session_event(kind, session_id, server_id, username, ts, reason),
        ts=ts,
    )


def room_event(
    kind: str,
    room_id: str,
    session_id: str,
    username: str,
    server_id: str,
    timestamp: int,
    *,
    message: str | None = None,
    participants: int | None = None,
    reason: str | None = None,
    user: str | None = None,
) -> bytes:
    """A room event body (contract section 3), as JSON bytes (``user``: its ``userId``)."""
    event: dict[str, object] = {
        "type": kind,
        "roomId": room_id,
        "sessionId": session_id,
        "username": username,
        "serverId": server_id,
        "timestamp": timestamp,
    }
    if user is not None:
        event["userId"] = user
    if message is not None:
        event["message"] = message
    if participants is not None:
        event["participants"] = participants
    if reason is not None:
        event["reason"] = reason
    return _json(event).encode("utf-8")


def join_event(
    room_id: str, session_id: str, username: str, server_id: str, ts: int, participants: int
) -> bytes:
    return room_event(
        "JOIN",
        room_id,
        session_id,
        username,
        server_id,
        ts,
        participants=participants,
        message=f"{username} joined",
    )


def leave_event(
    room_id: str,
    session_id: str,
    username: str,
    server_id: str,
    ts: int,
    participants: int,
    reason: str,
) -> bytes:
    return room_event(
        "LEAVE",
        room_id,
        session_id,
        username,
        server_id,
        ts,
        participants=participants,
        reason=reason,
        message=f"{username} left",
    )


def sync_event(room_id: str, server_id: str, ts: int, participants: list[Participant]) -> bytes:
    """A SYNC body: the room's full participant list (docs/history.md)."""
    event: dict[str, object] = {
        "type": "SYNC",
        "roomId": room_id,
        "serverId": server_id,
        "timestamp": ts,
        "count": len(participants),
        "participants": [participant_json(p) for p in participants],
    }
    return _json(event).encode("utf-8")


def session_event(
    kind: str, session_id: str, server_id: str, username: str, ts: int, reason: str | None = None
) -> bytes:
    """A ``stomp:session:connect``/``disconnect`` body (CONNECT or DISCONNECT)."""
    event: dict[str, object] = {
        "type": kind,
        "sessionId": session_id,
        "serverId": server_id,
        "username": username,
        "timestamp": ts,
    }
    if reason is not None:
        event["reason"] = reason
    return _json(event).encode("utf-8")


def server_json(record: ServerRecord) -> dict[str, object]:
    return {
        "serverId": record.server_id,
        "host": record.host,
        "port": record.port,
        "version": record.version,
        "startedAt": record.started_at,
        "incarnation": record.incarnation,
    }


def session_json(record: SessionRecord) -> dict[str, object]:
    return {
        "sessionId": record.session_id,
        "serverId": record.server_id,
        "user": record.user,
        "username": record.username,
        "remoteAddress": record.remote_address,
        "version": record.version,
        "connectedAt": record.connected_at,
        "lastSeen": record.last_seen,
        "rooms": list(record.rooms),
        "currentRoom": record.rooms[-1] if record.rooms else None,
    }


def user_session_json(record: SessionRecord) -> dict[str, object]:
    """One session of a user, as :meth:`Directory.user_sessions` lists it (and
    ``GET /api/users/{user}`` shows it)."""
    return {
        "sessionId": record.session_id,
        "serverId": record.server_id,
        "connectedAt": record.connected_at,
        "rooms": list(record.rooms),
    }


def room_json(record: RoomRecord) -> dict[str, object]:
    return {
        "roomId": record.room_id,
        "participants": record.participants,
        "createdAt": record.created_at,
        "lastActivity": record.last_activity,
    }


# -- the backend's roles (each a Protocol; both backends implement every one) ----------
#
# Like centrifuge's Broker and PresenceManager: a part of the relay asks for the
# role it uses, not for the whole backend. ``Registry`` is their union.


@runtime_checkable
class Membership(Protocol):
    """The steps that change who is where, each publishing its events with the change.

    ``event_id`` arguments are message-id prefixes for the events an operation
    publishes (``<event_id>-<n>``); ``now`` is milliseconds since the epoch.
    Methods raise :class:`~stomprelay.errors.BackendUnavailable` when the
    backend cannot be reached.
    """

    async def register_server(
        self, server: ServerRecord, ttl_ms: int, now: int, event_id: str
    ) -> None:
        """Register a freshly started relay; sessions still listed under its id
        belong to a dead earlier process and leave (reason ``server-lost``)."""
        ...

    async def refresh_server(self, server_id: str, incarnation: str, ttl_ms: int) -> bool:
        """Extend the liveness TTL; False if this incarnation is no longer registered."""
        ...

    async def unregister_server(self, server_id: str, now: int, event_id: str) -> None:
        """Graceful stop: remove what is left of this relay (reason ``disconnected``)."""
        ...

    async def add_session(self, record: SessionRecord, event_id: str, incarnation: str) -> bool:
        """Register a session and publish its CONNECT; False (nothing done) when its
        relay is not registered under ``incarnation`` (it was reaped)."""
        ...

    async def remove_session(
        self,
        session_id: str,
        server_id: str,
        rooms: list[str],
        reason: str,
        now: int,
        event_id: str,
        cause: str = "closed",
    ) -> None:
        """Leave every room (one LEAVE each, ``reason``), delete the session, publish
        disconnect; ``cause``: why the session ended (its ``session.disconnected``
        reason, webhook_steps.DISCONNECT_REASONS)."""
        ...

    async def join(
        self,
        session_id: str,
        room_id: str,
        username: str,
        server_id: str,
        now: int,
        event_id: str,
        user: str = "",
    ) -> tuple[bool, int] | None:
        """(newly joined, participant count); None if the session is not registered.
        ``user``: the session's user (the JOIN's ``userId``)."""
        ...

    async def leave(
        self, session_id: str, room_id: str, server_id: str, reason: str, now: int, event_id: str
    ) -> tuple[bool, int]:
        """(was a participant, participant count)."""
        ...

    async def chat(
        self, session_id: str, room_id: str, channel: str, envelope: Envelope, now: int
    ) -> Envelope:
        """Append a room message to the room's log (publishing it), record the
        room's and session's activity; the envelope with its offset."""
        ...

    async def restore(
        self,
        server: ServerRecord,
        sessions: list[SessionRecord],
        ttl_ms: int,
        announce: bool,
        now: int,
        event_id: str,
        pending: Pending | None = None,
    ) -> list[str]:
        """Re-register a relay and everything it holds; the ``pending`` ids it published.

        A membership re-added gets a JOIN if ``announce`` (others saw it LEAVE) or if
        ``pending`` has a JOIN for it; memberships and sessions the relay no longer
        holds leave with one LEAVE each (ids from ``pending`` where it has them).
        """
        ...

    async def reset(self) -> None:
        """Drop pooled connections (after an outage)."""
        ...

    async def migrate(self) -> int:
        """Move keys an older release left under other names; how many moved."""
        ...


@runtime_checkable
class Directory(Protocol):
    """Reads of who is connected where (the admin views, SYNC, start-up checks)."""

    async def servers(self) -> list[tuple[ServerRecord, bool, int]]:
        """Every relay in the ``servers:active`` index with (alive, session count)."""
        ...

    async def sessions(self) -> list[SessionRecord]:
        """Every session in the ``sessions:active`` index that has a record."""
        ...

    async def session(self, session_id: str) -> SessionRecord | None: ...

    async def rooms(self) -> list[RoomRecord]: ...

    async def room(self, room_id: str) -> RoomRecord | None: ...

    async def participants(self, room_id: str) -> list[Participant]: ...

    async def user_sessions(self, user: str) -> list[dict[str, object]]:
        """The sessions of ``user`` on every relay, oldest first, each as
        :func:`user_session_json` makes it (``sessionId``, ``serverId``,
        ``connectedAt`` in ms, ``rooms``); [] when the user is offline."""
        ...

    async def backend_id(self) -> str:
        """Identity of the backend instance (Redis ``run_id``): changes on restart."""
        ...

    async def eviction_policy(self) -> str | None:
        """The backend's eviction policy (Redis ``maxmemory-policy``), None if unknown."""
        ...


@runtime_checkable
class Moderation(Protocol):
    """Operators' kicks and suspensions, shared by every relay."""

    async def suspend(self, command: OperatorCommand, channel: str, envelope: Envelope) -> None:
        """Record an operator's kick or lift and publish its ``envelope`` on
        ``channel``, in one step (MULTI)."""
        ...

    async def suspensions(self, now_ms: int) -> Suspensions:
        """Users refused now (until when) and users kicked in the last hour (when)."""
        ...


#: What :meth:`ServerSubscriptions.add_server_subscription` did.
Added = Literal["added", "present", "full"]


@runtime_checkable
class ServerSubscriptions(Protocol):
    """Users' server-side subscriptions (``POST /api/users/{user}/subscribe``): the
    destinations every session of a user gets, now and when it connects later."""

    async def add_server_subscription(self, user: str, destination: str, most: int) -> Added:
        """Keep ``destination`` for ``user``: ``added``, ``present`` (already kept),
        or ``full`` (the user holds ``most`` already; nothing kept)."""
        ...

    async def remove_server_subscription(self, user: str, destination: str) -> bool:
        """Forget ``destination`` for ``user``; False when it was not kept."""
        ...

    async def server_subscriptions(self, user: str) -> list[str]:
        """The destinations kept for ``user``, sorted."""
        ...


@runtime_checkable
class Reaping(Protocol):
    """Liveness: finding relays that died and cleaning up after them."""

    async def ping(self) -> None:
        """Return when the backend answers; raise BackendUnavailable otherwise."""
        ...

    async def dead_servers(self) -> list[DeadServer]: ...

    async def reap(self, dead: DeadServer, sweeper_id: str, now: int, event_id: str) -> int | None:
        """Clean up a dead relay if this sweeper wins its lock; sessions reaped or None."""
        ...

    async def was_reaped(self, server_id: str, incarnation: str) -> bool:
        """True if a sweeper reaped this relay's incarnation (its tombstone, kept
        :data:`~stomprelay.cluster.base.REAP_TOMBSTONE_MS`)."""
        ...


@runtime_checkable
class Registry(Membership, Directory, Moderation, ServerSubscriptions, Reaping, Protocol):
    """Who is connected where, and who is in which room, cluster-wide: every role."""

    async def close(self) -> None:
        """Drop the backend's connections."""
        ...


@runtime_checkable
class LogOwner(Protocol):
    """A backend that keeps the destination logs: its :class:`~stomprelay.cluster.history.Log`.

    ``MemoryRegistry.log`` is its hub's :class:`~stomprelay.cluster.history.MemoryLog`,
    ``RedisRegistry.log`` a :class:`~stomprelay.cluster.redis_log.RedisLog` on the same
    connections; whoever builds the relay passes it on as its own argument.
    """

    @property
    def log(self) -> Log:
        """The destination logs kept beside the registry."""
        ...


@runtime_checkable
class LoggedRegistry(Registry, LogOwner, Protocol):
    """A registry and the logs it keeps (both built-in backends are one)."""
