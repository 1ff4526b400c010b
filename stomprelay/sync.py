"""Degraded mode, the journal of what Redis missed, resync and gap repair.

One home for what the relay does when Redis is not perfectly healthy
(docs/history.md, contract section 6):

- :class:`Health` says whether Redis counts as down (then every operation goes
  local at once, with no per-operation timeout), since when, and whether this
  relay may judge others yet (a sweeper that itself lost Redis waits a full
  liveness TTL before reaping anyone).
- :class:`Journal` keeps, bounded, what local clients sent while Redis was
  down, to append to the logs once it is back under the ids already used.
- :class:`Feed` is one destination's cursor on this relay: it delivers offsets
  in order, once, holds live messages while a gap is being read from the log,
  and says which gaps cannot be filled.
- :class:`Outage` drives them: probes Redis on its own schedule while it is
  down, runs one recovery per outage (pools reset, registry restore, journal
  appended), then tells the feeds to repair.

Everything but :class:`Outage` is sans-I/O: time is passed in, effects are returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from stomprelay.bounded import STOP_TIMEOUT, stop_task
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import Log, LogSlice
from stomprelay.cluster.registry import Pending
from stomprelay.errors import BackendUnavailable, PolicyError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Health:
    """Is Redis down? Sans-I/O: every call is given the time (monotonic seconds)."""

    def __init__(self, now: float) -> None:
        self.down = False
        self.reason = ""
        self.down_since = 0.0
        #: Last time Redis was known down (or this relay started): judging others waits.
        self.last_trouble = now
        self.degraded_seconds = 0.0
        self.outages = 0

    def fail(self, now: float, reason: str) -> bool:
        """Redis refused or did not answer; True when this starts an outage."""
        self.last_trouble = now
        if self.down:
            return False
        self.down = True
        self.reason = reason
        self.down_since = now
        self.outages += 1
        return True

    def recovered(self, now: float) -> float:
        """Redis is back and the relay has resynced; the outage's length."""
        if not self.down:
            return 0.0
        length = now - self.down_since
        self.degraded_seconds += length
        self.down = False
        self.reason = ""
        self.last_trouble = now
        return length

    def may_judge(self, now: float, ttl: float) -> bool:
        """May this relay reap others? Not while down, nor within one TTL of its
        own trouble: what it saw expire may have expired while it could not look."""
        return not self.down and now - self.last_trouble >= ttl

    def degraded_total(self, now: float) -> float:
        return self.degraded_seconds + (now - self.down_since if self.down else 0.0)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One message Redis did not take: the log it goes to, its channel, the envelope."""

    log_id: str
    channel: str
    envelope: Envelope


class Journal:
    """What local clients sent while Redis was down, oldest first, bounded."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._entries: deque[JournalEntry] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: JournalEntry) -> None:
        """Keep ``entry``; a :class:`PolicyError` (an ERROR, never a RECEIPT) when full."""
        size = len(entry.envelope.body)
        if len(self._entries) >= self.max_messages or self.bytes + size > self.max_bytes:
            raise PolicyError(
                "Journal full",
                "Redis is unreachable and this relay's journal of "
                f"{self.max_messages} messages / {self.max_bytes} bytes is full; "
                "the message was not accepted. Retry later.",
            )
        self._entries.append(entry)
        self.bytes += size

    def peek(self) -> JournalEntry | None:
        return self._entries[0] if self._entries else None

    def pop(self) -> None:
        entry = self._entries.popleft()
        self.bytes -= len(entry.envelope.body)


# -- feeds --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """Deliver ``envelope`` (it has an offset) to these subscribers."""

    envelope: Envelope
    keys: tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class Gap:
    """Offsets ``start``..``end`` of ``epoch`` are lost to these subscribers;
    ``end == 0``: the history itself was lost (reset to a new epoch)."""

    start: int
    end: int
    epoch: str
    keys: tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Read the log after ``after`` (``-1``: only its head) and call :meth:`Feed.fetched`."""

    after: int


Effect = Deliver | Gap | Fetch


@dataclass(slots=True)
class Cursor:
    """One subscriber's place: the last offset it has (None: not known yet)."""

    offset: int | None
    live: bool = True


#: Live messages a feed holds while it reads a gap; past this it reads them back.
MAX_HELD = 10_000


@dataclass(slots=True)
class Feed:
    """One logged destination as followed by this relay (sans-I/O)."""

    log_id: str
    epoch: str = ""
    #: Everything up to ``last`` has been handled (delivered or skipped).
    last: int = 0
    #: The log's head has been read since this relay began to follow it.
    known: bool = False
    repairing: bool = False
    inflight: bool = False
    #: A break happened while a read was in flight: read again after it.
    dirty: bool = False
    held: dict[int, Envelope] = field(default_factory=dict)
    subs: dict[Hashable, Cursor] = field(default_factory=dict)
    #: Messages filled from the log (gap repairs), for metrics.
    repaired: int = 0
    #: The epoch and last offset this feed had before its latest reset, until a
    #: read of the new epoch says whether it continues that one (a failover).
    before: str = ""
    before_last: int = 0

    # -- subscribers ------------------------------------------------------

    def add(self, key: Hashable, live: bool = True, offset: int | None = None) -> None:
        if offset is None and self.known:
            offset = self.last
        self.subs[key] = Cursor(offset, live)

    def remove(self, key: Hashable) -> None:
        self.subs.pop(key, None)

    def go_live(self, key: Hashable, offset: int, epoch: str | None = None) -> bool:
        """A replaying subscriber has everything up to ``offset`` (of ``epoch``);
        live if that reaches what this relay has handled (else it must read on,
        and in another epoch than the feed's it must read the feed's)."""
        cursor = self.subs.get(key)
        if cursor is None:
            return True
        if epoch is not None and self.known and epoch != self.epoch:
            return False
        cursor.offset = offset
        if offset >= self.last or not self.known:
            cursor.live = True
            return True
        return False

    # -- input ------------------------------------------------------------

    def start(self) -> list[Effect]:
        """Begin following: read the head."""
        return self._fetch()

    def broken(self) -> list[Effect]:
        """The relay's subscription broke (bus reconnect, failover): read what it missed."""
        if self.inflight:
            self.dirty = True
            return []
        self.repairing = True
        return self._fetch()

    def live(self, envelope: Envelope) -> list[Effect]:
        if not self.known or self.repairing:
            if len(self.held) < MAX_HELD:
                self.held[envelope.offset] = envelope
            else:
                self.dirty = True
            return [] if self.inflight else self._fetch()
        if envelope.epoch != self.epoch:
            if self.epoch == "" and self.last == 0:
                self.epoch = envelope.epoch
            else:
                effects = self._reset(envelope.epoch)
                self.held[envelope.offset] = envelope
                return effects + self._fetch()
        if envelope.offset <= self.last:
            return []
        if envelope.offset == self.last + 1:
            return [self._advance(envelope)]
        self.held[envelope.offset] = envelope
        self.repairing = True
        return self._fetch()

    def fetch_failed(self) -> None:
        """The read did not happen (Redis down): stay repairing; :meth:`broken` retries."""
        self.inflight = False
        self.repairing = True

    def fetched(self, read: LogSlice, after: int) -> list[Effect]:
        self.inflight = False
        effects: list[Effect] = []
        if not self.known:
            self.known = True
            self.epoch, self.last = read.epoch, read.last
            # Subscribers that came before the head was known want everything
            # after their SUBSCRIBE: what arrived live meanwhile included.
            start = min(
                [read.last, *(o - 1 for o, e in self.held.items() if e.epoch == read.epoch)]
            )
            for cursor in self.subs.values():
                if cursor.offset is None:
                    cursor.offset = start
            self.last = start
            self.repairing = True
        elif read.epoch != self.epoch:
            if self.epoch == "" and self.last == 0:
                self.epoch = read.epoch
            else:
                effects += self._reset(read.epoch)
            if after != 0 and read.epoch:
                return effects + self._fetch()
        if self.before and read.epoch == self.epoch:
            # A failover's new epoch keeps the old one's replicated entries (1..since):
            # what this relay already handled of them is not delivered again.
            skip = min(read.since, self.before_last) if read.parent == self.before else 0
            self.before = ""
            if skip > self.last:
                self.last = skip
                for cursor in self.subs.values():
                    if cursor.live and cursor.offset is not None and cursor.offset < skip:
                        cursor.offset = skip
                if read.last > skip and not any(e.offset > skip for e in read.entries):
                    return effects + self._fetch()
        progressed = False
        for envelope in read.entries:
            if envelope.offset <= self.last:
                continue
            if envelope.offset > self.last + 1:
                effects += self._trimmed(envelope.offset - 1)
            effects.append(self._advance(envelope))
            self.repaired += 1
            progressed = True
        if self.last < read.last and not read.entries and read.first > self.last + 1:
            effects += self._trimmed(read.first - 1)
            progressed = True
        if self.last < read.last and progressed:
            return effects + self._fetch()
        # Caught up with the log as read: release what arrived live meanwhile.
        for offset in sorted(self.held):
            envelope = self.held[offset]
            if envelope.epoch != self.epoch or offset <= self.last:
                continue
            if offset > self.last + 1:
                if read.last < offset - 1 or self.dirty:
                    break  # read before these were appended: read again
                # The log, read past them, did not have them: lost.
                effects.append(self._gap(self.last + 1, offset - 1))
            effects.append(self._advance(envelope))
        newer = [e for e in self.held.values() if e.epoch and e.epoch != self.epoch]
        self.held = {o: e for o, e in self.held.items() if o > self.last and e.epoch == self.epoch}
        if newer:
            # Live messages of another epoch came while this read of the old one was
            # in flight (a failover, a lost log): the log moved on; follow it now
            # rather than wait for its next message (a quiet room may send none).
            epoch = newer[-1].epoch
            effects += self._reset(epoch)
            self.held = {e.offset: e for e in newer if e.epoch == epoch}
            return effects + self._fetch()
        if self.held or self.dirty:
            self.dirty = False
            return effects + self._fetch()
        self.repairing = False
        return effects

    # -- helpers ----------------------------------------------------------

    def _fetch(self) -> list[Effect]:
        self.inflight = True
        return [Fetch(self.last if self.known else -1)]

    def _live_keys(self, offset: int) -> tuple[Hashable, ...]:
        keys = []
        for key, cursor in self.subs.items():
            if cursor.live and cursor.offset is not None and cursor.offset < offset:
                cursor.offset = offset
                keys.append(key)
        return tuple(keys)

    def _advance(self, envelope: Envelope) -> Deliver:
        self.last = envelope.offset
        return Deliver(envelope, self._live_keys(envelope.offset))

    def _gap(self, start: int, end: int) -> Gap:
        self.last = end
        return Gap(start, end, self.epoch, self._live_keys(end))

    def _trimmed(self, end: int) -> list[Effect]:
        """Offsets after ``last`` up to ``end`` are no longer in the log: deliver the
        live messages held among them, in order, and a gap notice only for the
        offsets neither read nor held (two journals appended at once can overrun a
        log that this relay heard live)."""
        effects: list[Effect] = []
        for offset in sorted(self.held):
            envelope = self.held[offset]
            if offset <= self.last or offset > end or envelope.epoch != self.epoch:
                continue
            if offset > self.last + 1:
                effects.append(self._gap(self.last + 1, offset - 1))
            effects.append(self._advance(envelope))
            del self.held[offset]
        if end > self.last:
            effects.append(self._gap(self.last + 1, end))
        return effects

    def _reset(self, epoch: str) -> list[Effect]:
        keys = tuple(k for k, c in self.subs.items() if c.live)
        old = self.epoch
        self.before, self.before_last = old, self.last
        self.epoch, self.last = epoch, 0
        self.held = {}
        self.repairing = True
        for cursor in self.subs.values():
            if cursor.live:
                cursor.offset = 0
        return [Gap(self.last + 1, 0, epoch, keys)] if keys and old else []


# -- the driver ---------------------------------------------------------------


class Outage:
    """Degraded mode: runs :class:`Health` and the journal against the real Redis.

    Named for what it handles (an outage of Redis), not for the room's SYNC event.

    It is handed what it needs: ``probe`` (a cheap Redis round trip),
    ``recover`` (re-register this relay: the caller's restore), ``log`` (to
    append the journal), ``on_state`` (told True when Redis is back and
    resynced, False when it goes down) and a monotonic clock.
    """

    def __init__(
        self,
        log_: Log,
        probe: Callable[[], Awaitable[None]],
        recover: Callable[[], Awaitable[None]],
        clock: Callable[[], float],
        journal: Journal,
        probe_interval: float = 0.5,
        on_state: Callable[[bool], None] | None = None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.log = log_
        self._probe = probe
        self._recover = recover
        self.clock = clock
        self.health = Health(clock())
        self.journal = journal
        self.probe_interval = probe_interval
        self.on_state = on_state
        self._wall_ms = wall_ms or (lambda: int(clock() * 1000))
        #: Registry changes Redis has not seen, for the restore.
        self.pending = Pending()
        #: The event each pending id stands for: (channel, envelope).
        self.pending_events: dict[str, tuple[str, Envelope]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def down(self) -> bool:
        """Redis counts as down: operations go local at once."""
        return self.health.down

    def degraded_seconds(self) -> float:
        """Seconds spent degraded so far, the current outage included."""
        return self.health.degraded_total(self.clock())

    def may_judge(self, ttl: float) -> bool:
        """May this relay reap others now (:meth:`Health.may_judge`)?"""
        return self.health.may_judge(self.clock(), ttl)

    def fail(self, exc: BackendUnavailable) -> None:
        """Redis failed an operation: go local at once, probe until it is back."""
        if self.health.fail(self.clock(), str(exc)):
            log.warning("redis unreachable, serving local clients only: %s", exc)
            if self.on_state is not None:
                self.on_state(False)
        self._ensure_probe()

    async def guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis operation, or fail fast while Redis is known to be down."""
        if self.health.down:
            raise BackendUnavailable(f"redis down: {self.health.reason}")
        try:
            return await call()
        except BackendUnavailable as exc:
            self.fail(exc)
            raise

    def keep(self, log_id: str, channel: str, envelope: Envelope) -> None:
        """Journal a message Redis did not take (raises PolicyError when full)."""
        self.journal.add(JournalEntry(log_id, channel, envelope))

    def _ensure_probe(self) -> None:
        if self._closing or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-probe")

    async def _run(self) -> None:
        """Probe on our own schedule; once Redis answers, recover exactly once."""
        while self.health.down and not self._closing:
            await asyncio.sleep(self.probe_interval)
            try:
                await self._probe()
                await self._recover()
                await self._flush_journal()
            except BackendUnavailable as exc:
                self.health.fail(self.clock(), str(exc))
                log.info("redis still unreachable: %s", exc)
                continue
            length = self.health.recovered(self.clock())
            log.warning("redis back after %.1f s: registry restored, journal appended", length)
            if self.on_state is not None:
                self.on_state(True)

    async def _flush_journal(self) -> None:
        """Append what Redis missed, in order, under the ids already used (idempotent)."""
        count = len(self.journal)
        while (entry := self.journal.peek()) is not None:
            await self.log.append(entry.log_id, entry.channel, entry.envelope, self._wall_ms())
            self.journal.pop()
        if count:
            log.warning("appended %d journaled messages to their logs", count)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            await stop_task(self._task, "redis probe", STOP_TIMEOUT)


class NoLog:
    """Stands in when a backend has no log (history is then off): every call fails
    as Redis would when down, so nothing is appended and nothing read."""

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        raise BackendUnavailable("no log")

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        raise BackendUnavailable("no log")

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        raise BackendUnavailable("no log")
