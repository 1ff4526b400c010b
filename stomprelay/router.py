"""Destinations, channels and the local fan-out of one relay.

Data flows one way: a SEND becomes an :class:`Envelope` appended to the
destination's log and published on its channel; the bus hands every envelope
of a channel this relay listens to back to :meth:`Router.dispatch`, which
passes logged ones through the destination's :class:`~stomprelay.sync.Feed`
(offsets in order, once; gaps read back from the log) and queues each MESSAGE,
built once, for every local subscriber. A relay listens to a channel only
while it has a local subscriber for it (contract section 4). Subscribers that
resume (``x-since-offset``) or ask for history (``x-history``) are replayed
from the log, then join the live feed at the exact offset they reached.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from stomprelay.clock import now_ms
from stomprelay.cluster.base import Bus
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, Log, LogSlice
from stomprelay.cluster.keys import Keys
from stomprelay.destinations import (
    ROOM_ID,
    TOPIC_NAME,
    Route,
    canonical,
    channels_for,
    check_room_id,
    log_id_for,
    parse_destination,
    shown_destination,
)
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.locks import KeyedLocks
from stomprelay.stomp.frames import Headers, PreparedMessage
from stomprelay.stomp.session import ServerSession, Subscription
from stomprelay.sync import Deliver, Effect, Feed, Fetch, Gap

__all__ = [
    "ROOM_ID",
    "TOPIC_NAME",
    "Route",
    "Router",
    "Sink",
    "channels_for",
    "check_room_id",
    "log_id_for",
    "parse_destination",
]

log = logging.getLogger(__name__)

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
        # set by the relay only (docs/history.md)
        "x-offset",
        "x-epoch",
        "x-degraded",
        "x-gap",
        "x-sync",
        "x-server-id",
        # set by the relay only (docs/security.md)
        "x-sender",
        "x-sender-session",
        "x-event-type",
        "x-recipient",
        # set by the relay only (docs/queues.md)
        "redelivered",
    }
)
#: Log entries read per round trip when replaying or repairing.
READ_PAGE = 500
#: Logged MESSAGEs kept built for replays (a few destinations' worth of history).
PREPARED_CACHE = 4096
#: Ids of this relay's own envelopes remembered after the bus brought them back.
SEEN_OWN = 4096
DEFAULT_TEXT_TYPE = "text/plain;charset=utf-8"
#: Header-name characters that a STOMP 1.0 frame cannot carry.
_UNSAFE_NAME = re.compile(r"[:\r\n]")
#: Seconds an envelope delivered ahead of the bus is remembered, to skip its echo.
EARLY_DELIVERY_MEMORY = 600.0
DEFAULT_BINARY_TYPE = "application/octet-stream"


def _count(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise PolicyError(f"Invalid {name}", f"{name} must be a non-negative integer.")
    return int(value)


@dataclass(frozen=True, slots=True)
class Resume:
    """What a SUBSCRIBE asked of the log: replay after ``since`` in ``epoch``,
    or the last ``history`` messages (docs/history.md)."""

    since: int | None = None
    epoch: str = ""
    history: int = 0

    @classmethod
    def of(cls, subscription: Subscription, max_history: int) -> Resume:
        headers: dict[str, str] = {}
        for name, value in subscription.headers:
            headers.setdefault(name, value)
        since = _count(headers.get("x-since-offset"), "x-since-offset")
        history = _count(headers.get("x-history"), "x-history") or 0
        return cls(since, headers.get("x-since-epoch", ""), min(history, max_history))

    @property
    def asked(self) -> bool:
        return self.since is not None or self.history > 0


def message_headers(headers: Headers, body: bytes) -> Headers:
    """The sender's own headers to pass on, with a ``content-type`` always set.

    Reserved names are matched in any case, and a name that holds a colon or a
    line break once unescaped (``x-offset\\c1``) is dropped: a STOMP 1.0
    subscriber, whose headers have no escapes, would read it as ``x-offset``."""
    kept = tuple(
        (k, v)
        for k, v in headers
        if k.lower() not in RESERVED_HEADERS and not _UNSAFE_NAME.search(k)
    )
    if any(k == "content-type" for k, _ in kept):
        return kept
    try:
        body.decode("utf-8")
        default = DEFAULT_TEXT_TYPE
    except UnicodeDecodeError:
        default = DEFAULT_BINARY_TYPE
    return (*kept, ("content-type", default))


class Sink(Protocol):
    """Where a subscriber's frames go: a session, and the transport that writes
    its output (``flush`` only marks it; the write happens once per loop turn)."""

    @property
    def session(self) -> ServerSession: ...

    @property
    def remote(self) -> str: ...

    @property
    def write_paused(self) -> bool:
        """True while the client's socket takes nothing more (its buffer is full)."""
        ...

    def flush(self) -> None: ...


#: A subscription: (session id, subscription id).
Key = tuple[str, str]
#: What a SUBSCRIBE's RECEIPT carries, and the replay to run once it is sent.
Replay = Callable[[], Awaitable[None]]


class Router:
    """One relay's destinations: its bus subscriptions, local fan-out and replays.

    It listens to a channel while a local subscriber needs it, hands each envelope
    the bus brings to the local subscribers (logged ones through their
    :class:`~stomprelay.sync.Feed`), replays history from the log, and makes the
    envelopes of clients' SENDs. It is handed the bus, the log and a ``degraded``
    callable; the relay sets its ``on_*`` callbacks for metrics and lost history.
    """

    def __init__(
        self,
        bus: Bus,
        keys: Keys,
        server_id: str,
        log_: Log | None = None,
        policy: HistoryPolicy | None = None,
        degraded: Callable[[], bool] = lambda: False,
    ) -> None:
        self.bus = bus
        self.keys = keys
        self.server_id = server_id
        self.log = log_
        self.policy = policy or HistoryPolicy()
        #: True while Redis counts as down (local delivery, no log reads).
        self.degraded = degraded
        #: destination -> {(session id, subscription id): sink}
        self._local: dict[str, dict[Key, Sink]] = {}
        self._refs: dict[str, int] = {}
        #: SUBSCRIBE and UNSUBSCRIBE of one channel, one at a time
        self._locks = KeyedLocks()
        #: session id -> {subscription id: (destination, channels retained for it)}
        self._by_session: dict[str, dict[str, tuple[str, list[str]]]] = {}
        #: destination -> its feed (logged destinations with a local subscriber)
        self.feeds: dict[str, Feed] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._own_channel = ""
        self._prefix = f"{server_id}-{now_ms():x}"
        self._counter = 0
        #: Ids of envelopes delivered ahead of the bus (during an outage), by time.
        #: id -> (when, the subscriptions that got it then).
        self._delivered_early: dict[str, tuple[float, frozenset[Key]]] = {}
        #: Called once per MESSAGE queued to a client (metrics).
        self.on_delivered: Callable[[int], None] | None = None
        #: Called with (messages, seconds) after a gap was filled from a log.
        self.on_repaired: Callable[[int, float], None] | None = None
        #: Called with the destination when its subscribers lost messages for good.
        self.on_lost: Callable[[str], None] | None = None
        #: Called when a log read failed (Redis counts as down then: the recovery
        #: tells every feed to read again).
        self.on_read_failed: Callable[[BackendUnavailable], None] | None = None
        #: Replay reads in flight, shared by identical requests.
        self._reads: dict[tuple[str, int, int, int], asyncio.Future[LogSlice]] = {}
        #: (destination, epoch, offset) -> its MESSAGE, the most recent ones.
        self._prepared: OrderedDict[tuple[str, str, int], PreparedMessage] = OrderedDict()
        #: Ids of this relay's own envelopes the bus brought back, latest last.
        self._seen_own: OrderedDict[str, None] = OrderedDict()

    def next_message_id(self) -> str:
        self._counter += 1
        return f"{self._prefix}-{self._counter}"

    def channels(self) -> list[str]:
        """Channels this relay listens to for its local subscribers."""
        return [c for c, n in self._refs.items() if n > 0]

    async def _retain(self, channel: str) -> None:
        async with self._locks.hold(channel):
            if self._refs.get(channel, 0) == 0:
                await self.bus.subscribe(channel)
            self._refs[channel] = self._refs.get(channel, 0) + 1

    async def _release(self, channel: str) -> None:
        async with self._locks.hold(channel):
            refs = self._refs.get(channel, 0) - 1
            if refs > 0:
                self._refs[channel] = refs
                return
            self._refs.pop(channel, None)
            await self.bus.unsubscribe(channel)

    async def listen(self, channel: str) -> None:
        """Listen to ``channel`` until :meth:`unlisten` (the control channel, for the
        relay's whole life; a user's channel, while the relay holds a session of it).
        Counted: each call needs its own :meth:`unlisten`."""
        await self._retain(channel)

    async def unlisten(self, channel: str) -> None:
        """End one :meth:`listen`; the bus unsubscribes once nothing else needs it."""
        await self._release(channel)

    async def retain_always(self, channel: str) -> None:
        """Listen to ``channel`` for the relay's whole life (its targeted channel)."""
        await self._retain(channel)
        self._own_channel = channel

    # -- subscriptions ------------------------------------------------------

    def logged(self, route: Route) -> str:
        """The log id of a route's destination, or "" when it is not logged here."""
        log_id = log_id_for(route)
        return log_id if self.log is not None and self.policy.logs(log_id) else ""

    async def subscribe(
        self, sink: Sink, subscription: Subscription, route: Route, resume: Resume | None = None
    ) -> tuple[Headers, Replay | None]:
        """Start delivery once the channels are live cluster-wide.

        Returns the headers for the SUBSCRIBE's RECEIPT (``x-offset``,
        ``x-epoch``, ``x-recovered``) and, for a resume or history request, the
        replay to run once that RECEIPT is queued (docs/history.md).
        """
        session_id = sink.session.session_id
        key = (session_id, subscription.id)
        destination = canonical(route, subscription.destination)
        resume = resume or Resume()
        log_id = self.logged(route)
        feed = self.feeds.get(destination) if log_id else None
        if log_id and feed is None:
            feed = self.feeds[destination] = Feed(log_id)
        self._local.setdefault(destination, {})[key] = sink
        if feed is not None:
            feed.add(key, live=not resume.asked)
        retained: list[str] = []
        self._by_session.setdefault(session_id, {})[subscription.id] = (destination, retained)
        for channel in channels_for(route, self.keys):
            await self._retain(channel)
            retained.append(channel)
        if feed is None or self.feeds.get(destination) is not feed:
            return (), None
        if not feed.known and not self.degraded():
            ready = self._ready.get(destination)
            if ready is None or (ready.is_set() and not feed.inflight):
                ready = self._ready[destination] = asyncio.Event()
                if not feed.inflight:  # a live message may have started the head read
                    self._run(destination, feed, feed.start())
            await ready.wait()
        if not resume.asked:
            if not feed.known:
                return (), None
            return (("x-offset", str(feed.last)), ("x-epoch", feed.epoch)), None
        return await self._prepare_replay(key, sink, destination, feed, resume)

    async def _prepare_replay(
        self, key: Key, sink: Sink, destination: str, feed: Feed, resume: Resume
    ) -> tuple[Headers, Replay | None]:
        log_ = self.log
        if log_ is None or not feed.known or self.degraded():
            feed.go_live(key, feed.last)
            headers: Headers = (("x-recovered", "false"),) if resume.since is not None else ()
            return headers, None
        try:
            if resume.since is not None:
                first = await self._read(feed.log_id, resume.since, READ_PAGE)
                # offset 0 with no epoch is "everything": no epoch to have missed
                fresh = resume.since == 0 and not resume.epoch
                same = fresh or first.epoch == resume.epoch
                recovered = same and first.first <= resume.since + 1
                if not same and first.epoch:
                    first = await self._read(feed.log_id, 0, READ_PAGE)
            else:
                first = await self._read(feed.log_id, 0, READ_PAGE, resume.history)
                recovered = True
        except BackendUnavailable:
            feed.go_live(key, feed.last)
            return ((("x-recovered", "false"),) if resume.since is not None else ()), None
        headers = (("x-offset", str(first.last)), ("x-epoch", first.epoch))
        if resume.since is not None:
            headers = (*headers, ("x-recovered", "true" if recovered else "false"))

        async def replay() -> None:
            await self._replay(key, sink, destination, feed, first)

        return headers, replay

    async def _replay(
        self, key: Key, sink: Sink, destination: str, feed: Feed, read: LogSlice
    ) -> None:
        """Deliver what the log holds for one subscriber, then hand it to the live feed
        at the offset it reached; what it cannot get is told as a gap notice."""
        epoch = read.epoch
        cursor = read.entries[0].offset - 1 if read.entries else read.last
        for _ in range(64):
            if feed.subs.get(key) is None or self.feeds.get(destination) is not feed:
                return
            if read.epoch != epoch:
                # The history was lost meanwhile: say so, read the new one from its start.
                self._notice(destination, Gap(1, 0, read.epoch, ()), [(key, sink)])
                epoch, cursor = read.epoch, 0
                page = await self._replay_read(feed, key, sink, destination, 0)
                if page is None:
                    return
                read = page
                continue
            for envelope in read.entries:
                if envelope.offset > cursor:
                    self._deliver(self._prepare(envelope), ((key, sink),))
                    cursor = envelope.offset
            if not read.entries:
                cursor = max(cursor, read.last)
            sink.flush()
            if feed.go_live(key, cursor, epoch) or self.log is None:
                return
            page = await self._replay_read(feed, key, sink, destination, cursor)
            if page is None:
                return
            read = page
        self._give_up(feed, key, sink, destination, cursor, epoch)

    async def _read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        """A log read for a replay; identical reads in flight at once are one read
        (a thousand clients resuming from the same offset cost one round trip)."""
        assert self.log is not None
        key = (log_id, after, limit, tail)
        pending = self._reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.log.read(log_id, after, limit, tail))
            self._reads[key] = pending
            pending.add_done_callback(lambda done: self._forget_read(key, done))
        return await asyncio.shield(pending)

    def _forget_read(self, key: tuple[str, int, int, int], done: asyncio.Future[LogSlice]) -> None:
        if self._reads.get(key) is done:
            del self._reads[key]

    async def _replay_read(
        self, feed: Feed, key: Key, sink: Sink, destination: str, after: int
    ) -> LogSlice | None:
        """One page for a replay; on failure (None) the subscriber is told what it misses."""
        try:
            return await self._read(feed.log_id, after, READ_PAGE)
        except BackendUnavailable as exc:
            if self.on_read_failed is not None:
                self.on_read_failed(exc)
            self._give_up(feed, key, sink, destination, after, feed.epoch)
            return None

    def _give_up(
        self, feed: Feed, key: Key, sink: Sink, destination: str, cursor: int, epoch: str
    ) -> None:
        """End a replay that cannot read on: a gap notice for what it did not get,
        then live delivery from the feed's place."""
        if feed.known and (epoch != feed.epoch or cursor < feed.last):
            gap = Gap(cursor + 1, feed.last, feed.epoch, ())
            if epoch != feed.epoch:
                gap = Gap(1, 0, feed.epoch, ())
            self._notice(destination, gap, [(key, sink)])
        feed.go_live(key, feed.last)

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
        feed = self.feeds.get(destination)
        if feed is not None:
            feed.remove((session_id, sub_id))
            if not feed.subs:
                del self.feeds[destination]
                ready = self._ready.pop(destination, None)
                if ready is not None:
                    ready.set()
        # Only what was actually retained: a subscribe cut short must not
        # release a channel another subscriber holds.
        for channel in list(retained):
            retained.remove(channel)
            await self._release(channel)

    # -- publishing -----------------------------------------------------------

    def envelope(
        self, destination: str, headers: Headers, body: bytes, sender: Headers = ()
    ) -> Envelope:
        """A client's SEND as an envelope: its reserved headers stripped, then the
        relay's ``sender`` headers (``x-sender``, ...) put first."""
        return Envelope(
            id=self.next_message_id(),
            origin=self.server_id,
            destination=destination,
            headers=(*sender, *message_headers(headers, body)),
            body=body,
            ts=now_ms(),
        )

    async def publish(self, channel: str, envelope: Envelope) -> None:
        """Put ``envelope`` on the bus for every relay (the one meaning of "publish")."""
        await self.bus.publish(channel, envelope)

    def deliver_early(self, channel: str, envelope: Envelope) -> None:
        """Deliver to local subscribers now, marked ``x-degraded:true``; when the same
        envelope (same id) comes back through the bus or a log read later, it is
        not delivered again (its offset is skipped here)."""
        now = time.monotonic()
        while self._delivered_early:
            oldest_id, (since, _) = next(iter(self._delivered_early.items()))
            if now - since < EARLY_DELIVERY_MEMORY:
                break
            del self._delivered_early[oldest_id]
        destination = self._local_name(channel, envelope)
        if not destination:
            return
        if envelope.id in self._seen_own:
            # an append that timed out had run: the bus brought it back already
            return
        subscribers = self._local.get(destination)
        self._delivered_early[envelope.id] = (now, frozenset(subscribers or ()))
        if not subscribers:
            return
        message = PreparedMessage(
            shown_destination(envelope.destination),
            envelope.id,
            (*envelope.headers, ("x-degraded", "true")),
            envelope.body,
        )
        self._deliver(message, list(subscribers.items()))

    # -- delivery -------------------------------------------------------------

    def dispatch(self, channel: str, envelope: Envelope) -> None:
        """Bus handler: fan one envelope out to the local subscribers."""
        destination = self._local_name(channel, envelope)
        if not destination:
            return
        if envelope.origin == self.server_id:
            seen = self._seen_own
            seen[envelope.id] = None
            if len(seen) > SEEN_OWN:
                seen.popitem(last=False)
        feed = self.feeds.get(destination) if envelope.offset else None
        if feed is not None and channel != self._own_channel:
            self._effects(destination, feed, feed.live(envelope))
            return
        subscribers = self._local.get(destination)
        if subscribers:
            self._deliver(self._prepare(envelope), self._not_early(envelope, subscribers.items()))

    def congested(self, destinations: Iterable[str]) -> bool:
        """Whether a local subscriber of one of ``destinations`` cannot take more
        now (the publisher's socket is then read no further until it can)."""
        local = self._local
        for destination in destinations:
            subscribers = local.get(destination)
            if subscribers:
                for sink in subscribers.values():
                    if sink.write_paused:
                        return True
        return False

    def bus_restored(self) -> None:
        """The relay's subscriptions broke and are back: every feed reads what it missed."""
        for destination, feed in list(self.feeds.items()):
            self._effects(destination, feed, feed.broken())

    def _local_name(self, channel: str, envelope: Envelope) -> str:
        """The name local subscribers of an envelope's destination are kept under (a
        user queue's canonical one, however the publisher spelt ``{user}``); "" for an
        envelope to drop (a bad destination, or one that is not its channel's)."""
        try:
            route = parse_destination(envelope.destination)
        except PolicyError:
            log.warning("dropping envelope %s with bad destination", envelope.id)
            return ""
        if channel != self._own_channel and channel not in channels_for(route, self.keys):
            log.warning("dropping envelope %s: %s is not its channel", envelope.id, channel)
            return ""
        return canonical(route, envelope.destination)

    def _prepare(self, envelope: Envelope) -> PreparedMessage:
        """The MESSAGE of an envelope, built once: a logged one is kept a while, so
        replays of the same offsets to many resuming subscribers share it."""
        if not envelope.offset:
            return PreparedMessage(
                shown_destination(envelope.destination),
                envelope.id,
                envelope.headers,
                envelope.body,
            )
        key = (envelope.destination, envelope.epoch, envelope.offset)
        message = self._prepared.get(key)
        if message is None or message.message_id != envelope.id:
            headers = (
                *envelope.headers,
                ("x-offset", str(envelope.offset)),
                ("x-epoch", envelope.epoch),
            )
            shown = shown_destination(envelope.destination)
            message = PreparedMessage(shown, envelope.id, headers, envelope.body)
            self._prepared[key] = message
            if len(self._prepared) > PREPARED_CACHE:
                self._prepared.popitem(last=False)
        return message

    def _deliver(
        self,
        message: PreparedMessage,
        targets: list[tuple[Key, Sink]] | tuple[tuple[Key, Sink], ...],
    ) -> None:
        now = time.monotonic()
        count = 0
        for (_, sub_id), sink in targets:
            if sink.session.deliver(message, sub_id, now):
                count += 1
            sink.flush()
        if count and self.on_delivered is not None:
            self.on_delivered(count)  # one metric update per fan-out, not per frame

    def _not_early(
        self, envelope: Envelope, targets: Iterable[tuple[Key, Sink]]
    ) -> list[tuple[Key, Sink]]:
        """Targets minus those that got ``envelope`` already in degraded mode (a
        subscriber that came later gets it now, with its offset)."""
        if not self._delivered_early or envelope.id not in self._delivered_early:
            return list(targets)
        _, had = self._delivered_early.pop(envelope.id)
        return [(key, sink) for key, sink in targets if key not in had]

    def _targets(self, destination: str, keys: tuple[object, ...]) -> list[tuple[Key, Sink]]:
        subscribers = self._local.get(destination, {})
        out = []
        for key in keys:
            sink = subscribers.get(key)  # type: ignore[call-overload]
            if sink is not None:
                out.append((key, sink))
        return out  # type: ignore[return-value]

    def _effects(self, destination: str, feed: Feed, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Deliver):
                envelope = effect.envelope
                if effect.keys:
                    targets = self._not_early(envelope, self._targets(destination, effect.keys))
                    if targets:
                        self._deliver(self._prepare(envelope), targets)
            elif isinstance(effect, Gap):
                self._notice(destination, effect, self._targets(destination, effect.keys))
            elif isinstance(effect, Fetch):
                self._run(destination, feed, [effect])
        if feed.known and not feed.inflight and self.feeds.get(destination) is feed:
            ready = self._ready.get(destination)
            if ready is not None:
                ready.set()

    def _notice(self, destination: str, gap: Gap, targets: list[tuple[Key, Sink]]) -> None:
        """An empty MESSAGE telling subscribers what they lost for good."""
        value = "reset" if gap.end == 0 else f"{gap.start}-{gap.end}"
        log.warning("%s: subscribers lost offsets %s (epoch %s)", destination, value, gap.epoch)
        if targets:
            message = PreparedMessage(
                shown_destination(destination),
                self.next_message_id(),
                (("x-gap", value), ("x-epoch", gap.epoch)),
                b"",
            )
            self._deliver(message, targets)
        if self.on_lost is not None:
            self.on_lost(destination)

    def _run(self, destination: str, feed: Feed, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Fetch):
                task = asyncio.get_running_loop().create_task(
                    self._fetch(destination, feed, effect.after)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._effects(destination, feed, [effect])

    async def _fetch(self, destination: str, feed: Feed, after: int) -> None:
        started = time.monotonic()
        before = feed.repaired
        log_ = self.log
        try:
            if log_ is None or self.degraded():
                raise BackendUnavailable("redis down")
            if after < 0:
                read = await log_.read(feed.log_id, 0, 0)
            else:
                read = await log_.read(feed.log_id, after, READ_PAGE)
        except BackendUnavailable as exc:
            log.info("could not read the log of %s: %s", destination, exc)
            feed.fetch_failed()
            if self.feeds.get(destination) is feed:
                ready = self._ready.get(destination)
                if ready is not None:
                    ready.set()
            if self.on_read_failed is not None and log_ is not None and not self.degraded():
                self.on_read_failed(exc)
            return
        if self.feeds.get(destination) is not feed:
            return
        if feed.before and read.epoch == feed.epoch:
            # after a reset: whether the new epoch continues the one this relay followed
            log.warning(
                "%s: epoch %s continues %s up to offset %d (this relay had %s up to %d)",
                destination,
                read.epoch,
                read.parent or "nothing",
                read.since,
                feed.before,
                feed.before_last,
            )
        self._effects(destination, feed, feed.fetched(read, max(after, 0)))
        if feed.repaired > before and self.on_repaired is not None:
            self.on_repaired(feed.repaired - before, time.monotonic() - started)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
