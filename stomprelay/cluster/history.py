"""Per-destination logs: the one source of order of durable rooms (docs/history.md).

A log has an ``epoch`` (a name for one unbroken history, made when the log is
created, so a Redis that lost its data starts a new one) and contiguous
offsets 1, 2, 3, ... Appending is idempotent by message id: an append of an id
the log already holds returns its offset and publishes nothing. The Redis
implementation is the ``APPEND`` Lua function in :mod:`lua` (XADD with an
explicit ``<offset>-0`` id and the append's Redis TIME, the retention's trim, then
PUBLISH, in one script);
:class:`MemoryLog` is the single-node one with the same rules.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from stomprelay.cluster.envelope import Envelope
from stomprelay.errors import BackendUnavailable
from stomprelay.settings import Settings


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """Which destinations are logged and how much of each is kept.

    Retention (docs/history.md, "What is kept"): the last ``size`` messages, and
    also every message younger than ``min_age_ms`` (by the time of its append),
    never more than :attr:`cap`. An outage's journals, appended at once when Redis
    is back, are young: they stay until every relay's feed has read them.
    """

    size: int = 200
    ttl_ms: int = 24 * 3600 * 1000
    max_topics: int = 1000
    rooms_only: bool = False
    min_age_ms: int = 120_000
    #: The hard cap (0: ten times ``size``).
    max_size: int = 0

    @classmethod
    def of(cls, settings: Settings) -> HistoryPolicy:
        """The policy the ``--history-*`` settings describe (relays and ``notify``)."""
        return cls(
            size=settings.history_size,
            ttl_ms=int(settings.history_ttl * 1000),
            max_topics=settings.history_max_topics,
            rooms_only=settings.history_rooms_only,
            min_age_ms=int(settings.history_min_age * 1000),
            max_size=settings.history_max_size,
        )

    def logs(self, log_id: str) -> bool:
        """Whether a destination is logged at all (the topic cap aside)."""
        if self.size <= 0 or not log_id:
            return False
        return not (self.rooms_only and log_id.startswith("topic:"))

    @property
    def cap(self) -> int:
        """Most entries a log ever holds, whatever their age."""
        return max(self.size, self.max_size or 10 * self.size)

    @property
    def id_window(self) -> int:
        """Appends a message id is remembered for (idempotency outlives the entries,
        so a journal appended after a long outage still finds what did run)."""
        return max(10 * self.size, 2000, self.cap)

    def keeps(self, length: int, age_ms: float) -> bool:
        """Whether the oldest of ``length`` entries, appended ``age_ms`` ago, stays."""
        if length > self.cap:
            return False
        return length <= self.size or age_ms < self.min_age_ms

    def lua(self) -> str:
        """The same policy as Lua constants for the scripts (``rooms_only`` is not
        among them: the relay decides which destinations it logs before it appends)."""
        return (
            f"local HISTORY_SIZE = {int(self.size)}\n"
            f"local HISTORY_MAX_SIZE = {int(self.cap)}\n"
            f"local HISTORY_MIN_AGE_MS = {int(self.min_age_ms)}\n"
            f"local HISTORY_ID_WINDOW = {self.id_window}\n"
            f"local HISTORY_TTL_MS = {int(self.ttl_ms)}\n"
            f"local HISTORY_MAX_TOPICS = {int(self.max_topics)}\n"
        )


def admit_topic(topics: dict[str, int], log_id: str, now: int, policy: HistoryPolicy) -> bool:
    """Is this topic's log kept? The one rule of the topic cap (``--history-max-topics``).

    ``topics`` is the ``history:topics`` index: topic log id -> when it was last
    admitted (ms). A listed topic is admitted and its time renewed; otherwise the
    entries older than the log TTL leave the index, and a new topic is listed while
    fewer than ``max_topics`` are. :class:`MemoryLog` applies it to its own index;
    the ``TOPIC_ADMIT`` script (:mod:`lua`) is this function in Lua, on the sorted
    set, and the contract suite runs the same tests over both.
    """
    if log_id in topics:
        topics[log_id] = now
        return True
    for old in [t for t, at in topics.items() if at <= now - policy.ttl_ms]:
        del topics[old]
    if len(topics) >= policy.max_topics:
        return False
    topics[log_id] = now
    return True


def new_epoch(now_us: int) -> str:
    """An epoch name from a clock in microseconds (the scripts use Redis TIME)."""
    return f"{now_us:x}"


@dataclass(frozen=True, slots=True)
class LogSlice:
    """What a read found: the log's epoch ("" when it does not exist), its
    first retained and last offsets, and the entries asked for, in order."""

    epoch: str
    first: int
    last: int
    entries: tuple[Envelope, ...] = ()
    #: The epoch this one continues and up to which offset they are the same log:
    #: a failover's promoted replica keeps what was replicated (1..``since``) under
    #: a new epoch (docs/redis.md, "Failover"); "" for a log that began empty.
    parent: str = ""
    since: int = 0

    @property
    def length(self) -> int:
        return max(0, self.last - self.first + 1) if self.epoch else 0


def log_json(read: LogSlice) -> dict[str, object]:
    """What ``/api/rooms/{id}`` and ``stomprelay inspect room`` show of a log."""
    return {
        "epoch": read.epoch or None,
        "firstOffset": read.first if read.length else None,
        "lastOffset": read.last,
        "length": read.length,
    }


@runtime_checkable
class Log(Protocol):
    """The destination logs a backend keeps (memory: :class:`MemoryLog`; Redis:
    ``redis_log.RedisLog``): a backend hands its own as ``LogOwner.log``."""

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        """Append and publish on ``channel`` atomically; the envelope with its
        offset and epoch (offset 0: not logged, published as it is)."""
        ...

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        """:meth:`append` for each ``(log_id, channel, envelope)``, in order, in
        one round trip; an item Redis refused comes back as its error."""
        ...

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        """Entries with offsets after ``after`` (or the last ``tail``), at most ``limit``."""
        ...


@dataclass(slots=True)
class _MemLog:
    epoch: str
    seq: int = 0
    last_at: float = 0.0
    entries: deque[Envelope] = field(default_factory=deque)
    #: Each entry's append time (seconds of the log's clock), beside ``entries``.
    appended: deque[float] = field(default_factory=deque)
    ids: dict[str, int] = field(default_factory=dict)
    #: (offset, id) in append order, to forget ids past the id window.
    id_order: deque[tuple[int, str]] = field(default_factory=deque)


class MemoryLog:
    """Logs in memory with the Redis logs' rules (single node, and the reference)."""

    def __init__(
        self,
        policy: HistoryPolicy,
        publish: Callable[[str, Envelope], None],
        clock: Callable[[], float] = time.time,
        published: Callable[[Envelope], None] | None = None,
        publish_now: Callable[[str, Envelope], None] | None = None,
    ) -> None:
        self.policy = policy
        self._publish = publish
        #: Delivers in the call when it can (:meth:`MemoryHub.publish_now`), for ``at_once``.
        self._publish_now = publish_now or publish
        #: Told of every message published (with its offset, when logged), not of
        #: an append of a known id: the webhooks' ``message.published``.
        self._published = published
        self._clock = clock
        self.logs: dict[str, _MemLog] = {}
        #: the ``history:topics`` index of :func:`admit_topic`
        self.topics: dict[str, int] = {}
        self._last_epoch_us = 0

    def _expire(self, now: float) -> None:
        """Drop the logs idle for the policy's TTL. ``logs`` is kept in the order of
        their last append (:meth:`append_now` moves a log to the end), so only the
        expired ones at the front are looked at, never every log on every append."""
        ttl = self.policy.ttl_ms / 1000
        logs = self.logs
        while logs:
            log_id, log = next(iter(logs.items()))
            if now - log.last_at < ttl:
                return
            del logs[log_id]

    def _epoch(self) -> str:
        us = max(int(self._clock() * 1_000_000), self._last_epoch_us + 1)
        self._last_epoch_us = us
        return new_epoch(us)

    def append_now(
        self,
        log_id: str,
        channel: str,
        envelope: Envelope,
        now_ms: int | None = None,
        at_once: bool = False,
    ) -> Envelope:
        """Synchronous append (the memory registry calls it inside its operations);
        ``now_ms`` (the caller's time, by default the log's clock) is what the topic
        cap counts with, as in Redis. ``at_once``: the message is also delivered in
        this call where the bus can (the pipeline's lone SEND), not a turn later."""
        publish = self._publish_now if at_once else self._publish
        now = self._clock()
        self._expire(now)
        if not self.policy.logs(log_id) or (
            log_id.startswith("topic:")
            and not admit_topic(
                self.topics, log_id, int(now * 1000) if now_ms is None else now_ms, self.policy
            )
        ):
            publish(channel, envelope)
            if self._published is not None:
                self._published(envelope)
            return envelope
        log = self.logs.get(log_id)
        if log is None:
            log = self.logs[log_id] = _MemLog(self._epoch())
        known = log.ids.get(envelope.id)
        if known is not None:
            return replace(envelope, offset=known, epoch=log.epoch)
        log.seq += 1
        stored = replace(envelope, offset=log.seq, epoch=log.epoch)
        log.entries.append(stored)
        log.appended.append(now)
        while log.entries and not self.policy.keeps(
            len(log.entries), (now - log.appended[0]) * 1000
        ):
            log.entries.popleft()
            log.appended.popleft()
        log.ids[envelope.id] = log.seq
        log.id_order.append((log.seq, envelope.id))
        while log.id_order and log.id_order[0][0] <= log.seq - self.policy.id_window:
            log.ids.pop(log.id_order.popleft()[1], None)
        log.last_at = now
        self.logs[log_id] = self.logs.pop(log_id)  # to the end: the latest appended
        publish(channel, stored)
        if self._published is not None:
            self._published(stored)
        return stored

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        return self.append_now(log_id, channel, envelope, now)

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        return [
            self.append_now(log_id, channel, envelope, now) for log_id, channel, envelope in items
        ]

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        self._expire(self._clock())
        log = self.logs.get(log_id)
        if log is None:
            return LogSlice("", 1, 0)
        first = log.entries[0].offset if log.entries else log.seq + 1
        if tail:
            after = max(0, log.seq - tail)
        start = max(after + 1, first)
        picked = tuple(
            log.entries[i - first] for i in range(start, min(log.seq, start + limit - 1) + 1)
        )
        return LogSlice(log.epoch, first, log.seq, picked)

    def wipe(self) -> None:
        """Forget every log and the topic index (part of :meth:`MemoryHub.wipe`)."""
        self.logs.clear()
        self.topics.clear()
