"""Operator operations, written once for ``stomprelay inspect/notify/kick`` and the
relay's HTTP admin routes (``/api/...``).

:class:`Admin` reads the registry (servers, sessions, rooms, one room with its
participants and history) and acts on the cluster (SYSTEM notifications,
kicks). It is built from a :class:`~stomprelay.cluster.backends.Backends` and
the history policy of the relays (so that ``notify --room`` trims and expires a
room's log as they do). A running relay's own (``Relay.admin``) is handed the
relay's delivery (a room notification journaled while Redis is down, a kick
that ends this relay's sessions even then); a command line has none, and writes
to Redis directly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, log_json
from stomprelay.cluster.registry import participant_json, room_json, server_json, session_json
from stomprelay.destinations import check_queue_name
from stomprelay.errors import InternalError, PolicyError
from stomprelay.notify import kick_command, operator_command, system_notification
from stomprelay.router import Route, parse_destination
from stomprelay.userctl import UserControl

if TYPE_CHECKING:
    from stomprelay.cluster.backends import Backends

log = logging.getLogger(__name__)

Row = dict[str, object]
#: PUBLISH of one envelope; the number of relays that heard it, where known.
Publish = Callable[[str, Envelope], Awaitable[int | None]]


class NotTaken(InternalError):
    """The relay could not take a valid notification now (its journal of an
    outage is full): the operator may try again later."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Delivery(Protocol):
    """What a running relay does for its admin routes: a room event through its
    publish flow (logged, or journaled while Redis is down) and a kick."""

    async def send_envelope(self, route: Route, channel: str, envelope: Envelope) -> None: ...

    async def kick(self, user: str, until_ms: int | None, lift: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class Notified:
    """Where a notification went: its channel and id, and the log offset (into a
    room's log) or the number of relays listening (where known)."""

    channel: str
    envelope: Envelope
    offset: int | None = None
    listeners: int | None = None


@dataclass(frozen=True, slots=True)
class RoomView:
    """What operators see of one room: its record, its log, who is in it."""

    info: Row
    history: Row | None
    participants: list[Row]

    def as_json(self) -> Row:
        """``GET /api/rooms/{id}``'s body."""
        return {**self.info, "history": self.history, "participants": self.participants}


class Admin:
    """Inspect, notify and kick over one cluster (see the module docstring)."""

    def __init__(
        self,
        backends: Backends,
        policy: HistoryPolicy,
        delivery: Delivery | None = None,
        publish: Publish | None = None,
        users: UserControl | None = None,
    ) -> None:
        self.backends = backends
        self.policy = policy
        self._delivery = delivery
        self._publish = publish
        self._users = users

    # -- reads ---------------------------------------------------------------

    async def servers(self) -> list[Row]:
        """Every relay the registry knows, alive or not, with its session count."""
        return [
            {**server_json(record), "alive": alive, "sessions": count}
            for record, alive, count in await self.backends.registry.servers()
        ]

    async def sessions(self) -> list[Row]:
        return [session_json(r) for r in await self.backends.registry.sessions()]

    async def session(self, session_id: str) -> Row | None:
        record = await self.backends.registry.session(session_id)
        return session_json(record) if record is not None else None

    async def rooms(self) -> list[Row]:
        return [room_json(r) for r in await self.backends.registry.rooms()]

    async def queue(self, name: str) -> Row | None:
        """``/queue/{name}`` (docs/queues.md): ``{"name", "length", "consumers",
        "pending", "deadLetters"}``, None for a queue nobody used."""
        store = self.backends.queues
        stats = await store.stats(check_queue_name(name)) if store is not None else None
        return stats.as_json() if stats is not None else None

    async def room(self, room_id: str) -> RoomView | None:
        """One room: its record, its log (None when not logged) and its
        participants; None when it has neither members nor a log."""
        registry, log_ = self.backends.registry, self.backends.log
        log_id = f"room:{room_id}"
        record = await registry.room(room_id)
        history = None
        if log_ is not None and self.policy.logs(log_id):
            history = await log_.read(log_id, 0, 0)
        if record is None and (history is None or not history.epoch):
            return None
        people = await registry.participants(room_id)
        return RoomView(
            room_json(record) if record is not None else {"roomId": room_id, "participants": 0},
            log_json(history) if history is not None else None,
            [participant_json(p) for p in people],
        )

    async def dump(self) -> list[Row]:
        """Every key of the prefix with its type, TTL and content (Redis only)."""
        from stomprelay.cluster.redis_backend import RedisRegistry

        registry = self.backends.registry
        if not isinstance(registry, RedisRegistry):
            return []
        return [
            {"key": name, "type": kind, "ttl_ms": ttl, "content": content}
            for name, kind, ttl, content in await registry.dump()
        ]

    # -- acts ----------------------------------------------------------------

    async def notify(self, message: str, room_id: str = "", server_id: str = "") -> Notified:
        """A SYSTEM event to everyone, one room (taking its place in the room's
        log, docs/history.md) or one relay's clients. PolicyError for a bad text
        or room id; BackendUnavailable when Redis cannot take it."""
        channel, envelope = system_notification(self.backends.keys, message, room_id, server_id)
        notified = Notified(channel, envelope)
        if room_id and not server_id:
            if self._delivery is not None:
                route = parse_destination(envelope.destination)
                try:
                    await self._delivery.send_envelope(route, channel, envelope)
                except PolicyError as exc:
                    raise NotTaken(exc.detail) from None
            elif self.backends.log is not None:
                logged = await self.backends.log.append(
                    f"room:{room_id}", channel, envelope, envelope.ts
                )
                notified = Notified(channel, envelope, offset=logged.offset)
            else:
                await self.backends.bus.publish(channel, envelope)
        elif self._publish is not None:
            notified = Notified(channel, envelope, listeners=await self._publish(channel, envelope))
        else:
            await self.backends.bus.publish(channel, envelope)
        log.info("operator notification %s published on %s", envelope.id, channel)
        return notified

    async def kick(self, user: str, until_ms: int | None, lift: bool = False) -> None:
        """End ``user``'s sessions cluster-wide and refuse it until ``until_ms``
        (None: no ban); ``lift``: only end a suspension (docs/redis.md)."""
        if self._delivery is not None:
            await self._delivery.kick(user, until_ms, lift=lift)
        else:
            command = operator_command(user, until_ms, lift)
            keys = self.backends.keys
            await self.backends.registry.suspend(
                command, keys.control_channel, kick_command(command)
            )
        if lift:
            log.info("operator lifted the suspension of user %r", user)
        else:
            log.info("operator ended the sessions of user %r (refused until %s)", user, until_ms)

    # -- a user's sessions, on every relay (the server API) -------------------

    async def subscribe_user(self, user: str, destination: str) -> Row:
        """A server-side subscription for every session of ``user``, now and later."""
        return await self._user_control().subscribe_user(user, destination)

    async def unsubscribe_user(self, user: str, destination: str) -> Row:
        return await self._user_control().unsubscribe_user(user, destination)

    async def disconnect_user(self, user: str, reason: str) -> Row:
        """End every session of ``user`` (ERROR ``session ended by server``), no ban."""
        return await self._user_control().disconnect_user(user, reason)

    def _user_control(self) -> UserControl:
        """These acts wait for the relays' answers: only a running relay makes them."""
        if self._users is None:
            raise NotTaken("acting on a user's sessions needs a running relay")
        return self._users

    async def close(self) -> None:
        """Close the backends (a command line's; a relay closes its own)."""
        if self._delivery is None:
            await self.backends.registry.close()
            await self.backends.bus.close()
            if self.backends.queues is not None:
                await self.backends.queues.close()
