"""Operator notifications: SYSTEM events for ``/topic/system``, one room, or one relay.

Clients cannot SEND to ``/topic/system``; operators reach it through
``stomprelay notify`` (straight to Redis) or ``POST /api/system/notifications``
(through a relay, with the admin token). Both build the event here.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import OperatorCommand, event_headers, room_event
from stomprelay.destinations import check_room_id
from stomprelay.errors import PolicyError

#: Longest notification text accepted.
MAX_NOTIFICATION = 4000


def iso_ms(text: str) -> int:
    """ms since the epoch of an ISO 8601 time (no zone: UTC); ValueError otherwise."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def show_ms(ms: int) -> str:
    """An ms-since-the-epoch time as operators read it: ``2026-12-31T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def operator_command(user: str, until_ms: int | None, lift: bool = False) -> OperatorCommand:
    """``stomprelay kick USER [--until] [--lift]`` as the registry records it."""
    if lift:
        return OperatorCommand(user, lift=True)
    return OperatorCommand(user, kicked_at=int(time.time() * 1000), until_ms=until_ms)


def kick_command(command: OperatorCommand) -> Envelope:
    """The control-channel envelope of an operator's command: every relay ends
    the user's sessions (a kick) and refuses it until ``until`` (docs/redis.md)."""
    body = {
        "action": "lift" if command.lift else "kick",
        "user": command.user,
        "until": command.until_ms,
        "kickedAt": command.kicked_at,
    }
    return Envelope(
        id=f"kick-{secrets.token_hex(6)}",
        origin="operator",
        destination="",
        headers=(("content-type", "application/json"),),
        body=json.dumps(body).encode("utf-8"),
        ts=int(time.time() * 1000),
    )


def system_notification(
    keys: Keys, message: str, room_id: str = "", server_id: str = ""
) -> tuple[str, Envelope]:
    """The channel and envelope of one SYSTEM event (``roomId`` empty when global).

    ``server_id`` targets the clients of one relay (its ``stomp:server:{id}``
    channel); raises :class:`PolicyError` for an empty or overlong text or a bad
    room id.
    """
    text = message.strip()
    if not text or len(text) > MAX_NOTIFICATION:
        raise PolicyError(
            "Invalid message", f"A notification is 1 to {MAX_NOTIFICATION} characters."
        )
    room = check_room_id(room_id) if room_id else ""
    now = int(time.time() * 1000)
    destination = f"/topic/room/{room}" if room else "/topic/system"
    envelope = Envelope(
        id=f"notify-{secrets.token_hex(6)}",
        origin="operator",
        destination=destination,
        headers=event_headers("SYSTEM"),
        body=room_event("SYSTEM", room, "", "", "operator", now, message=text),
        ts=now,
    )
    if server_id:
        channel = keys.server_channel(server_id)
    else:
        channel = keys.room_channel(room) if room else keys.system_channel
    return channel, envelope
