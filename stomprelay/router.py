"""Destinations, channels and the local fan-out of one relay.

Data flows one way: a SEND becomes an :class:`Envelope` published on the
destination's channel; the bus hands every envelope of a channel this relay
listens to back to :meth:`Router.dispatch`, which builds the MESSAGE once and
queues it for each local subscriber. A relay listens to a channel only while it
has a local subscriber for it (contract section 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from stomprelay.cluster.base import Bus
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.errors import PolicyError
from stomprelay.stomp.frames import Headers, PreparedMessage
from stomprelay.stomp.session import ServerSession, Subscription

log = logging.getLogger(__name__)

ROOM_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TOPIC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}(?:/[A-Za-z0-9_.-]{1,64}){0,7}")

#: Headers the relay sets itself on MESSAGE frames, or that only mean
#: something on the SEND (STOMP 1.2 "MESSAGE", "SEND").
RESERVED_HEADERS = frozenset(
    {
        "destination",
        "message-id",
        "subscription",
        "ack",
        "content-length",
        "receipt",
        "transaction",
    }
)
DEFAULT_TEXT_TYPE = "text/plain;charset=utf-8"
#: Seconds an envelope delivered ahead of the bus is remembered, to skip its echo.
EARLY_DELIVERY_MEMORY = 600.0
DEFAULT_BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Route:
    """What a destination is: ``kind`` plus the room id or topic name."""

    kind: str  # room | broadcast | system | topic | app
    name: str = ""
    action: str = ""  # for kind "app": join | message | leave | participants


def check_room_id(room_id: str) -> str:
    if not ROOM_ID.fullmatch(room_id):
        raise PolicyError(
            "Invalid room id",
            f"Room ids match [A-Za-z0-9_.-]{{1,64}}; {room_id[:80]!r} does not.",
        )
    return room_id


def parse_destination(destination: str) -> Route:
    """Map a destination to its route (contract section 3) or refuse it."""
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
    raise PolicyError(
        "Unknown destination",
        f"{destination[:120]} is not served here; use /topic/... or /app/room/....",
    )


def channels_for(route: Route, keys: Keys) -> tuple[str, ...]:
    if route.kind == "room":
        return keys.room_channels(route.name)
    if route.kind == "broadcast":
        return (keys.global_channel,)
    if route.kind == "system":
        return (keys.system_channel,)
    if route.kind == "topic":
        return (keys.topic_channel(route.name),)
    return ()


def message_headers(headers: Headers, body: bytes) -> Headers:
    """The sender's own headers to pass on, with a ``content-type`` always set."""
    kept = tuple((k, v) for k, v in headers if k not in RESERVED_HEADERS)
    if any(k == "content-type" for k, _ in kept):
        return kept
    try:
        body.decode("utf-8")
        default = DEFAULT_TEXT_TYPE
    except UnicodeDecodeError:
        default = DEFAULT_BINARY_TYPE
    return (*kept, ("content-type", default))


class Sink:
    """Where a subscriber's frames go: a session and the transport that flushes it."""

    __slots__ = ("flush", "remote", "session")

    def __init__(self, session: ServerSession, flush: Callable[[], None], remote: str = "") -> None:
        self.session = session
        self.flush = flush
        self.remote = remote


@dataclass(slots=True)
class _ChannelLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Router:
    def __init__(self, bus: Bus, keys: Keys, server_id: str) -> None:
        self.bus = bus
        self.keys = keys
        self.server_id = server_id
        #: destination -> {(session id, subscription id): sink}
        self._local: dict[str, dict[tuple[str, str], Sink]] = {}
        self._refs: dict[str, int] = {}
        self._locks: dict[str, _ChannelLock] = {}
        #: session id -> {subscription id: (destination, channels retained for it)}
        self._by_session: dict[str, dict[str, tuple[str, list[str]]]] = {}
        self._own_channel = ""
        self._prefix = f"{server_id}-{int(time.time() * 1000):x}"
        self._counter = 0
        #: Ids of envelopes delivered ahead of the bus (during an outage), by time.
        self._delivered_early: dict[str, float] = {}
        #: Called once per MESSAGE queued to a client (metrics).
        self.on_delivered: Callable[[], None] | None = None

    def next_message_id(self) -> str:
        self._counter += 1
        return f"{self._prefix}-{self._counter}"

    def channels(self) -> list[str]:
        """Channels this relay listens to for its local subscribers."""
        return [c for c, n in self._refs.items() if n > 0]

    @contextlib.asynccontextmanager
    async def _channel_lock(self, channel: str) -> AsyncIterator[None]:
        """Serialise SUBSCRIBE/UNSUBSCRIBE of one channel; the lock lives while used."""
        entry = self._locks.get(channel)
        if entry is None:
            entry = self._locks[channel] = _ChannelLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[channel]

    async def _retain(self, channel: str) -> None:
        async with self._channel_lock(channel):
            if self._refs.get(channel, 0) == 0:
                await self.bus.subscribe(channel)
            self._refs[channel] = self._refs.get(channel, 0) + 1

    async def _release(self, channel: str) -> None:
        async with self._channel_lock(channel):
            refs = self._refs.get(channel, 0) - 1
            if refs > 0:
                self._refs[channel] = refs
                return
            self._refs.pop(channel, None)
            await self.bus.unsubscribe(channel)

    async def retain_always(self, channel: str) -> None:
        """Listen to ``channel`` for the relay's whole life (its targeted channel)."""
        await self._retain(channel)
        self._own_channel = channel

    async def subscribe(self, sink: Sink, subscription: Subscription, route: Route) -> None:
        """Start local delivery; returns once the channels are live cluster-wide."""
        session_id = sink.session.session_id
        self._local.setdefault(subscription.destination, {})[(session_id, subscription.id)] = sink
        retained: list[str] = []
        self._by_session.setdefault(session_id, {})[subscription.id] = (
            subscription.destination,
            retained,
        )
        for channel in channels_for(route, self.keys):
            await self._retain(channel)
            retained.append(channel)

    async def unsubscribe(self, sink: Sink, subscription: Subscription) -> None:
        await self._remove(sink.session.session_id, subscription.id)

    async def drop(self, session_id: str) -> None:
        """Forget every subscription of a closed session, whatever events it left unhandled."""
        for sub_id in list(self._by_session.get(session_id, {})):
            await self._remove(session_id, sub_id)

    async def _remove(self, session_id: str, sub_id: str) -> None:
        subs = self._by_session.get(session_id)
        entry = subs.pop(sub_id, None) if subs is not None else None
        if subs is not None and not subs:
            del self._by_session[session_id]
        if entry is None:
            return
        destination, retained = entry
        subscribers = self._local.get(destination)
        if subscribers is not None:
            subscribers.pop((session_id, sub_id), None)
            if not subscribers:
                del self._local[destination]
        # Only what was actually retained: a subscribe cut short must not
        # release a channel another subscriber holds.
        for channel in list(retained):
            retained.remove(channel)
            await self._release(channel)

    def envelope(self, destination: str, headers: Headers, body: bytes) -> Envelope:
        return Envelope(
            id=self.next_message_id(),
            origin=self.server_id,
            destination=destination,
            headers=message_headers(headers, body),
            body=body,
            ts=int(time.time() * 1000),
        )

    async def publish(self, channel: str, envelope: Envelope) -> None:
        await self.bus.publish(channel, envelope)

    def deliver_once(self, channel: str, envelope: Envelope) -> None:
        """Deliver to local subscribers now; when the same envelope (same id)
        comes back through the bus later, it is not delivered again."""
        now = time.monotonic()
        self._delivered_early[envelope.id] = now
        while self._delivered_early:
            oldest_id, since = next(iter(self._delivered_early.items()))
            if now - since < EARLY_DELIVERY_MEMORY:
                break
            del self._delivered_early[oldest_id]
        self._fan_out(channel, envelope)

    def dispatch(self, channel: str, envelope: Envelope) -> None:
        """Bus handler: fan one envelope out to the local subscribers."""
        if self._delivered_early and self._delivered_early.pop(envelope.id, None) is not None:
            return
        self._fan_out(channel, envelope)

    def _fan_out(self, channel: str, envelope: Envelope) -> None:
        subscribers = self._local.get(envelope.destination)
        if not subscribers:
            return
        try:
            route = parse_destination(envelope.destination)
        except PolicyError:
            log.warning("dropping envelope %s with bad destination", envelope.id)
            return
        if channel != self._own_channel and channel not in channels_for(route, self.keys):
            log.warning("dropping envelope %s: %s is not its channel", envelope.id, channel)
            return
        message = PreparedMessage(
            envelope.destination, envelope.id, envelope.headers, envelope.body
        )
        now = time.monotonic()
        delivered = self.on_delivered
        for (_, sub_id), sink in list(subscribers.items()):
            if sink.session.deliver(message, sub_id, now) and delivered is not None:
                delivered()
            sink.flush()
