"""Webhook events: their shape, their partition, and the in-memory partitions.

An event is a JSON object (contract section 11, docs/webhooks.md)::

    {"id", "type", "timestamp" (ms since the epoch), "serverId",
     "sessionId"?, "user"?, "roomId"?, "reason"?, ...}

Events are appended by the registry step that makes the change they report, to
one of ``--webhook-partitions`` streams chosen by :func:`partition_of` (by room,
else by user, else by session), so the events of one room keep their order. One
relay at a time delivers a partition. This module holds what both sides share:
the producing side (the registry's steps) and the delivering side.
"""

from __future__ import annotations

import json
import zlib
from collections import deque
from collections.abc import Mapping

#: Every event type, in the order docs/webhooks.md lists them.
EVENT_TYPES = (
    "session.connected",
    "session.disconnected",
    "room.joined",
    "room.left",
    "room.occupied",
    "room.vacated",
    "user.online",
    "user.offline",
    "message.published",
)


def partition_key(
    room_id: str = "", user: str = "", session_id: str = "", destination: str = ""
) -> str:
    """What an event is partitioned by: its room, else (a ``message.published``
    outside rooms) its destination, else its user, else its session."""
    if room_id:
        return f"room:{room_id}"
    if destination:
        return f"destination:{destination}"
    if user:
        return f"user:{user}"
    return f"session:{session_id}"


def partition_of(key: str, partitions: int) -> int:
    """The partition of a :func:`partition_key` (CRC-32: the same on every relay)."""
    return zlib.crc32(key.encode("utf-8")) % partitions


def make_event(
    kind: str,
    event_id: str,
    timestamp: int,
    server_id: str,
    *,
    session_id: str = "",
    user: str = "",
    room_id: str = "",
    reason: str = "",
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """One event; the optional fields are left out when empty."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {kind!r}")
    event: dict[str, object] = {
        "id": event_id,
        "type": kind,
        "timestamp": timestamp,
        "serverId": server_id,
    }
    if session_id:
        event["sessionId"] = session_id
    if user:
        event["user"] = user
    if room_id:
        event["roomId"] = room_id
    if reason:
        event["reason"] = reason
    if extra:
        event.update(extra)
    return event


def event_json(event: Mapping[str, object]) -> str:
    """The text an event is stored and sent as (compact, key order kept)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class MemoryWebhookLog:
    """The partitions of a single node: a deque of ``(entry id, event JSON)`` each.

    Entry ids are ``<n>-0`` with ``n`` counting up per partition from 1, as a
    Redis stream's would; they are never reused, so a cursor stays valid. A
    step of the in-memory registry appends in the same synchronous code that
    makes its change, so nothing can come between them (but everything is lost
    with the process; docs/webhooks.md)."""

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("webhook partitions must be at least 1")
        self.partitions = partitions
        self.entries: list[deque[tuple[str, str]]] = [deque() for _ in range(partitions)]
        self._seq = [0] * partitions

    def append(self, partition: int, event: str) -> str:
        """Append one event's JSON to a partition; its entry id."""
        self._seq[partition] += 1
        entry_id = f"{self._seq[partition]}-0"
        self.entries[partition].append((entry_id, event))
        return entry_id
