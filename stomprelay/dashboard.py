"""What the operators' dashboard (``/admin``, docs/operations.md) reads of the cluster.

Three parts:

- :class:`PageQuery` and :func:`page_query`: ``?q=&offset=&limit=`` of the list
  routes (``/api/rooms``, ``/api/sessions``), checked; without any of the three a
  route answers as it always has.
- :class:`Sampler`: every ``interval`` seconds a relay samples its connections,
  SENDs and deliveries per second, the round trip of a Redis PING and the seconds
  it spent degraded, into a ring of the last 15 minutes, and pushes what Redis
  has not seen to its ring there (a capped list with a TTL,
  ``stomp:servers:{id}:samples``) once it can: a relay cannot write to Redis while
  it is degraded, so its degraded periods reach its ring
  (``stomp:servers:{id}:degraded``) when it is back.
- :class:`Dashboard`: the views: relays with their liveness (up, heartbeat
  late, dead and being reaped), a page of rooms (most recently active first) or
  of sessions, searched and paged in the backend's own store
  (:class:`DashboardStore`: Redis, ``cluster/redis_dashboard.py``, or
  :class:`MemoryDashboardStore` on one node), and the samples of every relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs

from stomprelay.api import bad
from stomprelay.bounded import STOP_TIMEOUT, bounded, stop_task
from stomprelay.cluster.history import HistoryPolicy, Log, log_json
from stomprelay.cluster.registry import (
    Directory,
    RoomRecord,
    SessionRecord,
    room_json,
    server_json,
    session_json,
)
from stomprelay.cluster.samples import (
    MAX_PERIODS,
    Beat,
    DashboardStore,
    Period,
    Ring,
    Sample,
    sample_row,
)
from stomprelay.errors import BackendUnavailable

if TYPE_CHECKING:
    from stomprelay.cluster.backends import Backends

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, object]
Guard = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]

#: Rows of a page when ``limit`` is not given, and the most one page may hold (each
#: room of a page reads its log's last :data:`RATE_TAIL` entries for its rate).
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
#: Longest search text.
MAX_QUERY = 128
#: Seconds between two samples of a relay, and how long its ring reaches back.
SAMPLE_INTERVAL = 5.0
SAMPLE_WINDOW = 15 * 60.0
#: The most samples a relay's ring holds (below 0.5 s between samples it reaches back
#: less than the window).
MAX_SAMPLES = 1800
#: Entries of a room's log read to estimate its message rate.
RATE_TAIL = 20


# -- ?q=&offset=&limit= -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageQuery:
    """One page of a list: the rows whose text holds ``q`` (empty: all), from
    ``offset``, at most ``limit``."""

    q: str = ""
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    def window(self, total: int) -> slice:
        return slice(min(self.offset, total), min(self.offset + self.limit, total))

    def answer(self, name: str, rows: list[Row], total: int) -> Row:
        """A paged answer: ``{name: rows, "total", "offset", "limit", "q"}``."""
        return {name: rows, "total": total, "offset": self.offset, "limit": self.limit, "q": self.q}


def _number(raw: str, name: str, default: int, low: int, high: int) -> int:
    if raw == "":
        return default
    # ASCII digits only (``int`` takes "²" nowhere, and a 5,000-digit number is refused)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12) or not low <= int(raw) <= high:
        raise bad(f"{name} is a whole number from {low} to {high}", name)
    return int(raw)


def page_query(query: str) -> PageQuery | None:
    """The page a query string asks for; None when it names none of ``q``,
    ``offset`` and ``limit`` (the route then answers as before). An
    :class:`~stomprelay.api.ApiError` (400) names a bad value."""
    try:
        params = parse_qs(query, keep_blank_values=True, max_num_fields=16)
    except ValueError:
        raise bad("the query string is malformed") from None
    if not {"q", "offset", "limit"} & params.keys():
        return None

    def first(name: str) -> str:
        values = params.get(name)
        return values[0].strip() if values else ""

    q = first("q")
    if len(q) > MAX_QUERY or not q.isprintable():
        raise bad(f"q is at most {MAX_QUERY} printable characters", "q")
    return PageQuery(
        q,
        _number(first("offset"), "offset", 0, 0, 10**9),
        _number(first("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


def participants_page(room: Row, page: PageQuery) -> Row:
    """A room's ``GET /api/rooms/{id}`` body with one page of its participants (by
    user id, then session id), ``participantTotal`` the number of them all."""
    everyone = room.get("participants")
    listed = [p for p in everyone if isinstance(p, dict)] if isinstance(everyone, list) else []
    listed.sort(key=lambda p: (str(p.get("userId", "")), str(p.get("sessionId", ""))))
    return {
        **room,
        "participants": listed[page.window(len(listed))],
        "participantTotal": len(listed),
        "offset": page.offset,
        "limit": page.limit,
    }


@dataclass(frozen=True, slots=True)
class Reading:
    """A relay's counters at one moment (totals since its start)."""

    connections: int
    sends: float
    deliveries: float
    degraded_seconds: float


class MemoryDashboardStore:
    """One node's store: lists from the registry, rings in this process."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._rings: dict[str, tuple[deque[Sample], deque[Period]]] = {}

    async def room_index(self, q: str) -> list[RoomRecord]:
        return [r for r in await self._directory.rooms() if q in r.room_id]

    async def session_ids(self, q: str) -> list[str]:
        return [
            r.session_id
            for r in await self._directory.sessions()
            if not q or q in r.user or q == r.session_id
        ]

    async def sessions_of(self, ids: Sequence[str]) -> list[SessionRecord]:
        found = [await self._directory.session(sid) for sid in ids]
        return [r for r in found if r is not None]

    async def beats(self, server_ids: Sequence[str]) -> dict[str, Beat]:
        return {}  # one node: the relay answering is the only one, and up

    async def push(
        self, server_id: str, samples: Sequence[Sample], periods: Sequence[Period], keep: int
    ) -> None:
        ring = self._rings.setdefault(server_id, (deque(maxlen=keep), deque(maxlen=MAX_PERIODS)))
        ring[0].extend(samples)
        ring[1].extend(periods)

    async def forget(self, server_id: str) -> None:
        self._rings.pop(server_id, None)

    async def rings(self, server_ids: Sequence[str]) -> dict[str, Ring]:
        return {
            sid: Ring(list(self._rings[sid][0]), list(self._rings[sid][1]))
            for sid in server_ids
            if sid in self._rings
        }


def store_for(backends: Backends) -> DashboardStore:
    """Redis's store for a Redis registry, else the in-process one."""
    from stomprelay.cluster.redis_backend import RedisRegistry

    registry = backends.registry
    if isinstance(registry, RedisRegistry):
        return registry.dashboard()
    return MemoryDashboardStore(registry)


class Sampler:
    """Samples one relay every ``interval`` s into a ring of ``window`` s, and
    pushes what its ring in the store has not seen (see the module docstring).

    Given callables, not the relay: ``read`` its counters, ``ping`` one Redis
    round trip, ``guard`` (fails fast while Redis counts as down), the clocks."""

    def __init__(
        self,
        server_id: str,
        store: DashboardStore,
        read: Callable[[], Reading],
        ping: Callable[[], Awaitable[None]],
        guard: Guard[None],
        *,
        interval: float = SAMPLE_INTERVAL,
        window: float = SAMPLE_WINDOW,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server_id = server_id
        self.store = store
        self._read = read
        self._ping = ping
        self._guard = guard
        self.interval = interval
        self.keep = min(MAX_SAMPLES, max(2, int(window / interval)))
        self._wall_ms = wall_ms
        self._clock = clock
        #: This relay's samples and degraded periods, the store's or not yet.
        self.samples: deque[Sample] = deque(maxlen=self.keep)
        self.periods: deque[Period] = deque(maxlen=MAX_PERIODS)
        self._unsent: deque[Sample] = deque(maxlen=self.keep)
        self._unsent_periods: deque[Period] = deque(maxlen=MAX_PERIODS)
        self._down_since = 0
        self._last: tuple[float, Reading] | None = None
        self._task: asyncio.Task[None] | None = None

    def outage(self, up: bool) -> None:
        """Redis became unreachable (``up`` False) or is back and resynced."""
        now = self._wall_ms()
        if not up:
            self._down_since = self._down_since or now
        elif self._down_since:
            period = Period(self._down_since, now)
            self._down_since = 0
            self.periods.append(period)
            self._unsent_periods.append(period)

    def current_periods(self) -> list[Period]:
        """The past periods, and the one going on (``end`` 0)."""
        ongoing = [Period(self._down_since, 0)] if self._down_since else []
        return [*self.periods, *ongoing]

    async def _round_trip(self) -> float | None:
        started = self._clock()
        try:
            await self._guard(self._ping)
        except BackendUnavailable:
            return None
        return round((self._clock() - started) * 1000, 3)

    async def tick(self) -> Sample:
        """Take one sample and push what the store has not seen (when it can)."""
        rtt = await self._round_trip()
        now, reading = self._clock(), self._read()
        if self._last is None:
            sends = deliveries = degraded = 0.0
        else:
            then, before = self._last
            span = max(now - then, 1e-6)
            sends = (reading.sends - before.sends) / span
            deliveries = (reading.deliveries - before.deliveries) / span
            degraded = reading.degraded_seconds - before.degraded_seconds
        self._last = (now, reading)
        sample = Sample(
            self._wall_ms(),
            reading.connections,
            round(max(sends, 0.0), 3),
            round(max(deliveries, 0.0), 3),
            rtt,
            round(max(degraded, 0.0), 3),
        )
        self.samples.append(sample)
        self._unsent.append(sample)
        await self.flush()
        return sample

    async def flush(self) -> None:
        """Push the unsent samples and periods; kept for later while Redis is down."""
        samples, periods = list(self._unsent), list(self._unsent_periods)

        async def push() -> None:
            await self.store.push(self.server_id, samples, periods, self.keep)

        try:
            await self._guard(push)
        except BackendUnavailable:
            return
        self._unsent.clear()
        self._unsent_periods.clear()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard-sampler")

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a sample lost is no reason to stop sampling
                log.exception("dashboard sample failed")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop sampling and delete this relay's rings (a relay that stops leaves
        no key behind; while Redis is down they expire instead)."""
        if self._task is not None:
            await stop_task(self._task, "dashboard sampler", STOP_TIMEOUT)
            self._task = None

        async def forget() -> None:
            await self.store.forget(self.server_id)

        async def guarded() -> None:
            await self._guard(forget)

        with contextlib.suppress(BackendUnavailable):
            await bounded("dashboard: forget the rings", guarded(), STOP_TIMEOUT)


# -- the views ------------------------------------------------------------------------


def _rate(entries: Sequence[int], now_ms: int) -> float:
    """Messages per minute from the times of a log's last entries (oldest first):
    those of the last minute, or, when every entry read is that recent, their
    number over the time they span."""
    recent = [t for t in entries if t >= now_ms - 60_000]
    if recent and len(recent) == len(entries) >= RATE_TAIL:
        return round(len(recent) * 60_000 / max(now_ms - recent[0], 1), 1)
    return float(len(recent))


class Dashboard:
    """The dashboard's reads (see the module docstring); ``self_id`` is the relay
    answering, ``sampler`` its own (its periods are known even while degraded)."""

    def __init__(
        self,
        backends: Backends,
        policy: HistoryPolicy,
        store: DashboardStore,
        *,
        self_id: str,
        liveness_interval: float,
        liveness_ttl: float,
        sampler: Sampler | None = None,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.registry = backends.registry
        self.log: Log | None = backends.log
        self.policy = policy
        self.store = store
        self.self_id = self_id
        self.liveness_interval = liveness_interval
        self.liveness_ttl = liveness_ttl
        self.sampler = sampler
        self._wall_ms = wall_ms

    async def rooms(self, page: PageQuery) -> Row:
        """A page of rooms, most recently active first, each with its log's
        epoch, first and last offsets and its messages per minute."""
        found = await self.store.room_index(page.q)
        found.sort(key=lambda r: (-r.last_activity, r.room_id))
        shown = found[page.window(len(found))]
        logs = await asyncio.gather(*(self._log_of(r.room_id) for r in shown))
        rows = [{**room_json(r), **extra} for r, extra in zip(shown, logs, strict=True)]
        return page.answer("rooms", rows, len(found))

    async def _log_of(self, room_id: str) -> Row:
        log_id = f"room:{room_id}"
        if self.log is None or not self.policy.logs(log_id):
            return {"history": None, "rate": None}
        with contextlib.suppress(BackendUnavailable):
            read = await self.log.read(log_id, 0, RATE_TAIL, RATE_TAIL)
            times = [e.ts for e in read.entries]
            return {"history": log_json(read), "rate": _rate(times, self._wall_ms())}
        return {"history": None, "rate": None}

    async def sessions(self, page: PageQuery) -> Row:
        """A page of sessions (by id), those of users whose id holds ``q``."""
        ids = sorted(set(await self.store.session_ids(page.q)))
        records = await self.store.sessions_of(ids[page.window(len(ids))])
        return page.answer("sessions", [session_json(r) for r in records], len(ids))

    async def servers(self) -> Row:
        """Every relay with its state: ``up``, ``late`` (its heartbeat is older
        than two liveness intervals), ``dead`` (expired; ``reaping`` while a
        sweeper holds its lock), its uptime and its past degraded periods."""
        listed = await self.registry.servers()
        ids = [record.server_id for record, _, _ in listed]
        beats = await self.store.beats(ids)
        rings = await self.store.rings(ids)
        now = self._wall_ms()
        ttl_ms = int(self.liveness_ttl * 1000)
        rows: list[Row] = []
        for record, alive, count in sorted(listed, key=lambda x: x[0].server_id):
            beat = beats.get(record.server_id)
            last: int | None = None
            if beat is not None and beat.ttl_left_ms is not None:
                last = now - max(0, ttl_ms - beat.ttl_left_ms)
            late_after = max(2 * self.liveness_interval, self.liveness_interval + 1.0) * 1000
            if not alive:
                state = "dead"
            elif last is not None and now - last > late_after:
                state = "late"
            else:
                state = "up"
            ring = rings.get(record.server_id)
            periods: list[Period] = list(ring.periods) if ring else []
            if record.server_id == self.self_id and self.sampler is not None:
                periods = self.sampler.current_periods()
            rows.append(
                {
                    **server_json(record),
                    "alive": alive,
                    "sessions": count,
                    "state": state,
                    "reaping": bool(beat and beat.reaping),
                    "lastHeartbeat": last,
                    "uptime": round(max(0, now - record.started_at) / 1000, 1) if alive else None,
                    "self": record.server_id == self.self_id,
                    "degradedPeriods": [p.as_json() for p in periods],
                }
            )
        return {"now": now, "servers": rows}

    async def samples(self) -> Row:
        """Every listed relay's samples, and the cluster's (summed by interval)."""
        ids = sorted({record.server_id for record, _, _ in await self.registry.servers()})
        if self.self_id not in ids:
            ids.append(self.self_id)
        rings = await self.store.rings(ids)
        if self.sampler is not None:  # its own, the unsent ones included
            rings[self.self_id] = Ring(list(self.sampler.samples), [])
        interval = self.sampler.interval if self.sampler is not None else SAMPLE_INTERVAL
        per = {sid: [sample_row(s) for s in ring.samples] for sid, ring in rings.items()}
        return {
            "now": self._wall_ms(),
            "interval": interval,
            "window": SAMPLE_WINDOW,
            "servers": per,
            "cluster": cluster_series(list(rings.values()), interval),
        }


@dataclass(slots=True)
class _Bucket:
    connections: int = 0
    sends: float = 0.0
    deliveries: float = 0.0
    rtt: float | None = None
    degraded: float = 0.0
    relays: int = 0

    def add(self, s: Sample) -> None:
        self.connections += s.connections
        self.sends += s.sends
        self.deliveries += s.deliveries
        self.degraded += s.degraded
        self.relays += 1
        if s.rtt_ms is not None:
            self.rtt = s.rtt_ms if self.rtt is None else max(self.rtt, s.rtt_ms)


def cluster_series(rings: Sequence[Ring], interval: float) -> list[Row]:
    """The relays' samples added up per interval (buckets of ``interval`` s, each
    relay's latest sample in a bucket): connections, SENDs/s, deliveries/s and
    degraded seconds add up, the round trip is the worst of the bucket. A relay
    whose sample fell into the next bucket (the relays' clocks tick apart) counts
    with its sample of the bucket before, so the sum does not dip."""
    step = max(1, int(interval * 1000))
    latest: dict[int, dict[int, Sample]] = {}
    for index, ring in enumerate(rings):
        for s in ring.samples:
            latest.setdefault(s.t // step * step, {})[index] = s
    rows: list[Row] = []
    carried: dict[int, tuple[int, Sample]] = {}
    for t, by_relay in sorted(latest.items()):
        kept = {index: (at, s) for index, (at, s) in carried.items() if index not in by_relay}
        carried = {index: (t, s) for index, s in by_relay.items()}
        for index, (at, s) in kept.items():
            if t - at <= step:  # its one interval late, never longer
                by_relay[index] = s
        bucket = _Bucket()
        for s in by_relay.values():
            bucket.add(s)
        rows.append(
            {
                "t": t,
                "connections": bucket.connections,
                "sends": round(bucket.sends, 3),
                "deliveries": round(bucket.deliveries, 3),
                "rttMs": bucket.rtt,
                "degraded": round(bucket.degraded, 3),
                "relays": bucket.relays,
            }
        )
    return rows
