"""The webhook events a registry step appends, made before the step runs.

A registry step (``operations.py``) that makes a change also appends the event
that reports it to one of ``--webhook-partitions`` streams
(:mod:`stomprelay.webhook_events`): in Redis inside the step's own Lua script
where one node holds every key (standalone, Sentinel), right after the step on
a cluster; in memory in the step's synchronous code. Whether an event fires is
known only inside the step, so the step is handed :class:`StepEvents`: the
event texts made here, and one rule it applies (:meth:`StepEvents.fired`, which
the Lua scripts repeat):

* ``change`` fires when the step changed something (SADD/SREM changed the set, a
  session's hash was new or was deleted), as the step's own JOIN, LEAVE,
  CONNECT or DISCONNECT does; a step run again therefore appends nothing twice;
* ``edge`` fires when, in addition, the count crossed: it became 1 on an add
  (``room.occupied``, ``user.online``) or 0 on a removal (``room.vacated``,
  ``user.offline``).

Event ids are ``<the step's event id>:<type>``: the step's id is the message id
its JOIN/LEAVE/CONNECT/DISCONNECT carries, so the same change always has the same
event id, and a receiver can drop repeats.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass

from stomprelay.cluster.envelope import Envelope
from stomprelay.webhook_events import event_json, make_event, partition_key, partition_of

#: The session.disconnected reasons (docs/webhooks.md), one of which every removal carries.
DISCONNECT_REASONS = (
    "closed",
    "error",
    "timeout",
    "slow",
    "kicked",
    "expired",
    "shutdown",
    "server-lost",
)

#: The reason of events a relay's restore makes again after it was reaped.
RESTORED = "restored"

#: ERROR ``message`` headers that end a session, and the disconnect reason each is.
_ERROR_REASONS = {
    "Heart-beat timeout": "timeout",
    "No CONNECT received": "timeout",
    "credential expired": "expired",
    "Slow consumer": "slow",
    "session ended by operator": "kicked",
    "session ended by server": "kicked",
}


def disconnect_reason(close_reason: str | None, error: str | None) -> str:
    """The ``session.disconnected`` reason of a session that ended with ``close_reason``
    (the session's) and, if it was sent an ERROR, that ERROR's ``message``."""
    if error is not None:
        return _ERROR_REASONS.get(error, "error")
    if close_reason == "server shutting down":
        return "shutdown"
    if close_reason == "internal error":
        return "error"
    return "closed"


@dataclass(frozen=True, slots=True)
class StepEvents:
    """What one step may append to partition ``partition``: ``change`` (JSON, or "")
    when it changed something, ``edge`` too when its count crossed 1 (adding) or 0."""

    partition: int
    change: str = ""
    change_type: str = ""
    edge: str = ""
    edge_type: str = ""

    def fired(self, changed: bool, count: int = -1, adding: bool = True) -> list[tuple[str, str]]:
        """The ``(type, JSON)`` the step appends, given what it did: whether it changed
        something and the count after it (-1: no count)."""
        if not changed:
            return []
        out = [(self.change_type, self.change)] if self.change else []
        if self.edge and count == (1 if adding else 0):
            out.append((self.edge_type, self.edge))
        return out


@dataclass(frozen=True, slots=True)
class Subject:
    """What a session's or user's event is about: the step's event id and time, the
    session's relay, id, display name and user, and the reason ("": none)."""

    event_id: str
    ts: int
    server_id: str
    session_id: str
    username: str
    user: str
    reason: str = ""


class WebhookSteps:
    """The events of the registry's steps, for ``partitions`` streams; ``messages``:
    the destination globs whose messages are reported (``message.published``).

    ``observe`` is told the type of every event appended (the relay counts them)."""

    def __init__(self, partitions: int, messages: tuple[str, ...] = ()) -> None:
        if partitions < 1:
            raise ValueError("webhook partitions must be at least 1")
        self.partitions = partitions
        self.messages = messages
        self.observe: Callable[[str], None] | None = None

    def counted(self, fired: list[tuple[str, str]]) -> None:
        """Report appended events to :attr:`observe`."""
        observe = self.observe
        if observe is not None:
            for kind, _ in fired:
                observe(kind)

    def _partition(self, room_id: str, user: str, session_id: str) -> int:
        return partition_of(partition_key(room_id, user, session_id), self.partitions)

    def session(self, connected: bool, about: Subject) -> StepEvents:
        """``session.connected`` or ``session.disconnected``."""
        kind = "session.connected" if connected else "session.disconnected"
        partition, event = self._of(kind, about)
        return StepEvents(partition, event, kind)

    def user(self, online: bool, about: Subject) -> StepEvents:
        """``user.online`` (the user's first session) or ``user.offline`` (its last):
        the edge of the user's index step."""
        kind = "user.online" if online else "user.offline"
        partition, event = self._of(kind, about)
        return StepEvents(partition, edge=event, edge_type=kind)

    def _of(self, kind: str, about: Subject) -> tuple[int, str]:
        """The partition and text of a session's or user's event (by user, else session)."""
        event = make_event(
            kind,
            f"{about.event_id}:{kind}",
            about.ts,
            about.server_id,
            session_id=about.session_id,
            user=about.user,
            reason=about.reason,
            extra={"username": about.username},
        )
        return self._partition("", about.user, about.session_id), event_json(event)

    def room(
        self,
        join: bool,
        event_id: str,
        ts: int,
        server_id: str,
        session_id: str,
        room_id: str,
        username: str,
        user: str,
        reason: str = "",
    ) -> StepEvents:
        """``room.joined``/``room.left`` (``reason``: the LEAVE's, or ``restored``) and
        the room's edge, ``room.occupied``/``room.vacated``."""
        kind, edge = ("room.joined", "room.occupied") if join else ("room.left", "room.vacated")
        common = {"session_id": session_id, "user": user, "room_id": room_id}
        extra = {"username": username}
        change = make_event(
            kind, f"{event_id}:{kind}", ts, server_id, reason=reason, extra=extra, **common
        )
        crossed = make_event(edge, f"{event_id}:{edge}", ts, server_id, extra=extra, **common)
        return StepEvents(
            self._partition(room_id, user, session_id),
            event_json(change),
            kind,
            event_json(crossed),
            edge,
        )

    def message(self, envelope: Envelope) -> MessageEvent | None:
        """``message.published`` for ``envelope`` if its destination matches one of
        ``--webhook-messages`` (else None): its destination, id, sender (``x-sender``,
        ``x-sender-session``; a room's CHAT names its own), body (text, or base64 with
        ``binary`` as envelopes do) and, once the log step knows it, its offset."""
        destination = envelope.destination
        if not self.messages or not any(
            fnmatch.fnmatchcase(destination, pattern) for pattern in self.messages
        ):
            return None
        headers = dict(envelope.headers)
        if headers.get("x-event-type") in MEMBERSHIP:
            return None  # a room's JOIN or LEAVE: room.joined, room.left
        session_id = headers.get("x-sender-session", "")
        user = headers.get("x-sender", "")
        if not session_id and headers.get("x-event-type") == "CHAT":
            with contextlib.suppress(ValueError, AttributeError):
                chat = json.loads(envelope.body)
                session_id, user = str(chat.get("sessionId", "")), str(chat.get("userId", ""))
        room_id = destination[len(ROOM_PREFIX) :] if destination.startswith(ROOM_PREFIX) else ""
        extra: dict[str, object] = {"destination": destination, "messageId": envelope.id}
        try:
            extra["body"] = envelope.body.decode("utf-8")
        except UnicodeDecodeError:
            extra["body"] = base64.b64encode(envelope.body).decode("ascii")
            extra["binary"] = True
        kind = "message.published"
        event = make_event(
            kind,
            f"{envelope.id}:{kind}",
            envelope.ts,
            envelope.origin,
            session_id=session_id,
            user=user,
            room_id=room_id,
            extra=extra,
        )
        # by room (in order with its joins and leaves), else by destination
        key = partition_key(room_id, destination=destination)
        text = event_json(event)
        return MessageEvent(partition_of(key, self.partitions), text[:-1] + OFFSET_FIELD, "}")


#: The relay's own room events that report membership, not messages.
MEMBERSHIP = frozenset({"JOIN", "LEAVE"})
#: Where a room's messages go (their events are partitioned by the room).
ROOM_PREFIX = "/topic/room/"
#: The last field of a ``message.published`` event, its value left to the log step.
OFFSET_FIELD = ',"offset":'


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A ``message.published`` event with its offset left open (``head + offset +
    tail``): the log step appends it with the message, the offset it gave it filled
    in (none when the message was not logged); nothing for a message id it knew."""

    partition: int
    head: str
    tail: str

    def text(self, offset: int) -> str:
        if offset > 0:
            return f"{self.head}{offset}{self.tail}"
        return self.head[: -len(OFFSET_FIELD)] + self.tail
