"""The room application: ``/app/room/{id}/join|message|leave|participants``.

Membership lives in the registry; the relay keeps its own sessions' rooms in
their :class:`SessionRecord` (the truth it re-registers after an outage).
Events are JSON (contract section 3). JOIN and LEAVE are published by the
registry atomically with the membership change; CHAT by :meth:`Registry.chat`.
When the registry is unreachable, :meth:`Registration.unsynced` builds the same
events for this relay's local subscribers and remembers them for the restore.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from stomprelay.auth import Identity, check_name, check_text
from stomprelay.clock import now_ms
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import (
    EVENT_CONTENT_TYPE,
    Participant,
    event_headers,
    participant_json,
    room_event,
    sync_event,
)
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.stomp.frames import PreparedMessage

if TYPE_CHECKING:
    from stomprelay.cluster.registry import SessionRecord
    from stomprelay.metrics import Metrics
    from stomprelay.registration import Registration
    from stomprelay.router import Route, Router, Sink
    from stomprelay.settings import Settings
    from stomprelay.stomp.session import ServerSession
    from stomprelay.sync import Outage

log = logging.getLogger(__name__)


def _json_body(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8")) if body.strip() else {}
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and numbers too long to convert.
        raise PolicyError(
            "Invalid JSON body", f"The body of a room {what} must be a JSON object."
        ) from None
    if not isinstance(data, dict):
        raise PolicyError("Invalid JSON body", f"The body of a room {what} must be a JSON object.")
    return data


#: (log id, channel, envelope, the append to run) -> appended, or journaled.
Record = Callable[[str, str, Envelope, Callable[[], Awaitable[object]]], Awaitable[None]]


class Rooms:
    """The room application: joins, leaves, chat messages, participants, SYNC events.

    Handed what it needs (no Relay inside): the registration (records, gate,
    what Redis missed), the degraded mode (:class:`~stomprelay.sync.Outage`), the
    router, metrics, ``spawn`` for the background tasks it starts and ``record``
    for room messages (appended to the room's log, or journaled)."""

    def __init__(
        self,
        settings: Settings,
        server_id: str,
        keys: Keys,
        registration: Registration,
        outage: Outage,
        router: Router,
        metrics: Metrics,
        spawn: Callable[[asyncio.Task[None]], None],
        record: Record,
        identities: Mapping[str, Identity] | None = None,
        on_left: Callable[[ServerSession, str], None] = lambda session, room_id: None,
    ) -> None:
        self.settings = settings
        self.server_id = server_id
        self.keys = keys
        self.registration = registration
        self.registry = registration.registry
        self.outage = outage
        self.router = router
        self.metrics = metrics
        self.spawn = spawn
        #: Append to a log, or journal and deliver locally (Sender.record).
        self.record = record
        #: session id -> who it is; a verified identity names its participant
        self.identities: Mapping[str, Identity] = identities if identities is not None else {}
        #: Told when a session left a room by its own SEND (access rechecks its feeds).
        self.on_left = on_left
        #: Rooms whose SYNC event is scheduled.
        self._syncing: set[str] = set()

    def _record(self, sink: Sink) -> SessionRecord:
        record = self.registration.records.get(sink.session.session_id)
        if record is None:
            raise PolicyError("Not connected", "This session is not registered.")
        return record

    async def send(self, sink: Sink, route: Route, destination: str, body: bytes) -> None:
        """A client's SEND to ``/app/room/{id}/join|message|leave``."""
        if route.action == "join":
            await self.join(sink, route.name, body)
        elif route.action == "message":
            await self.message(sink, route.name, body)
        elif route.action == "leave":
            await self.leave(sink, route.name)
            self.on_left(sink.session, route.name)
        else:
            raise PolicyError(
                "Unknown destination", f"{destination} is subscribed to, not sent to."
            )

    async def join(self, sink: Sink, room_id: str, body: bytes) -> None:
        record = self._record(sink)
        data = _json_body(body, "join")
        identity = self.identities.get(record.session_id)
        if identity is not None and identity.verified:
            # the token says who this is; a username in the body is ignored
            username = identity.name
        else:
            username = check_name(
                data.get("username") or sink.session.login or "",
                "username",
                self.settings.max_username,
            )
        async with self.registration.gate.shared(record.session_id):
            already = room_id in record.rooms
            if not already and len(record.rooms) >= self.settings.max_rooms_per_session:
                raise PolicyError(
                    "Too many rooms",
                    f"A session may be in at most {self.settings.max_rooms_per_session} rooms.",
                )
            record.rooms = [r for r in record.rooms if r != room_id] + [room_id]
            record.username = username
            event_id = self.router.next_message_id()
            try:
                result = await self.outage.guard(
                    lambda: self.registry.join(
                        record.session_id,
                        room_id,
                        username,
                        self.server_id,
                        now_ms(),
                        event_id,
                        record.user,
                    )
                )
            except BackendUnavailable as exc:
                if not already:
                    self.registration.unsynced(exc, "JOIN", record, room_id, event_id)
                return
            if result is None:
                # Redis no longer knows this session (restarted, or this relay was
                # reaped): the re-registration below announces this join.
                self.outage.pending.joins[(record.session_id, room_id)] = event_id
        if result is None:
            with contextlib.suppress(BackendUnavailable):
                await self.outage.guard(self.registration.reregister)

    async def leave(self, sink: Sink, room_id: str, reason: str = "left") -> None:
        record = self._record(sink)
        async with self.registration.gate.shared(record.session_id):
            if room_id not in record.rooms:
                raise PolicyError("Not a participant", f"This session has not joined {room_id}.")
            record.rooms.remove(room_id)
            event_id = self.router.next_message_id()
            try:
                await self.outage.guard(
                    lambda: self.registry.leave(
                        record.session_id, room_id, self.server_id, reason, now_ms(), event_id
                    )
                )
            except BackendUnavailable as exc:
                self.registration.unsynced(exc, "LEAVE", record, room_id, event_id, reason)

    async def message(self, sink: Sink, room_id: str, body: bytes) -> None:
        record = self._record(sink)
        if room_id not in record.rooms:
            raise PolicyError("Not a participant", f"Join {room_id} before sending messages to it.")
        data = _json_body(body, "message")
        text = check_text(
            data.get("message"), "message", self.settings.max_chat_message, multiline=True
        )
        now = now_ms()
        envelope = Envelope(
            id=self.router.next_message_id(),
            origin=self.server_id,
            destination=f"/topic/room/{room_id}",
            headers=event_headers("CHAT"),
            body=room_event(
                "CHAT",
                room_id,
                record.session_id,
                record.username,
                self.server_id,
                now,
                message=text,
                user=record.user,
            ),
            ts=now,
        )
        channel = self.keys.room_channel(room_id)
        await self.record(
            f"room:{room_id}",
            channel,
            envelope,
            lambda: self.registry.chat(record.session_id, room_id, channel, envelope, now),
        )

    async def participants(self, room_id: str) -> list[Participant]:
        try:
            return await self.outage.guard(lambda: self.registry.participants(room_id))
        except BackendUnavailable:
            return sorted(
                (
                    Participant(r.session_id, r.username, r.server_id, r.user)
                    for r in self.registration.records.values()
                    if room_id in r.rooms
                ),
                key=lambda p: (p.username, p.session_id),
            )

    async def reply_participants(self, sink: Sink, subscription_id: str, room_id: str) -> None:
        """Request/reply: one MESSAGE with the participant list, then nothing more."""
        people = await self.participants(room_id)
        body = json.dumps(
            {
                "roomId": room_id,
                "count": len(people),
                "participants": [participant_json(p) for p in people],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        message = PreparedMessage(
            f"/app/room/{room_id}/participants",
            self.router.next_message_id(),
            (("content-type", EVENT_CONTENT_TYPE),),
            body,
        )
        sink.session.deliver(message, subscription_id, time.monotonic())

    def lost(self, destination: str) -> None:
        """Subscribers of ``destination`` lost events for good (a gap, a reset):
        if it is a room, send them one SYNC with the participant list, once the
        other relays had time to re-register (``Settings.sync_settle``)."""
        if not destination.startswith("/topic/room/"):
            return
        room_id = destination[len("/topic/room/") :]
        if room_id in self._syncing:
            return
        self._syncing.add(room_id)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._sync_later(room_id))
        self.spawn(task)

    async def _sync_later(self, room_id: str) -> None:
        try:
            await asyncio.sleep(self.settings.sync_settle)
        finally:
            self._syncing.discard(room_id)
        self.send_sync(room_id, await self.participants(room_id))

    def send_sync(self, room_id: str, people: list[Participant]) -> None:
        """The SYNC event (local, no offset, ``x-sync:true``) to this relay's subscribers."""
        body = sync_event(room_id, self.server_id, now_ms(), people)
        envelope = Envelope(
            id=self.router.next_message_id(),
            origin=self.server_id,
            destination=f"/topic/room/{room_id}",
            headers=event_headers("SYNC", ("x-sync", "true")),
            body=body,
            ts=now_ms(),
        )
        self.router.dispatch(self.keys.server_channel(self.server_id), envelope)
