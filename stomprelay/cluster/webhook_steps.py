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
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

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

    def reports(self, destination: str) -> bool:
        """Whether messages to ``destination`` are reported (``--webhook-messages``)."""
        return any(fnmatch.fnmatchcase(destination, pattern) for pattern in self.messages)

    def message(
        self,
        event_id: str,
        ts: int,
        server_id: str,
        destination: str,
        body: bytes,
        session_id: str = "",
        user: str = "",
        room_id: str = "",
        offset: int = 0,
    ) -> StepEvents:
        """``message.published``: the message's destination, sender, id, offset (when
        logged) and body (text, or base64 with ``binary`` as envelopes do)."""
        extra: dict[str, object] = {"destination": destination, "messageId": event_id}
        if offset:
            extra["offset"] = offset
        try:
            extra["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            extra["body"] = base64.b64encode(body).decode("ascii")
            extra["binary"] = True
        kind = "message.published"
        event = make_event(
            kind,
            f"{event_id}:{kind}",
            ts,
            server_id,
            session_id=session_id,
            user=user,
            room_id=room_id,
            extra=extra,
        )
        return StepEvents(self._partition(room_id, user, session_id), event_json(event), kind)
