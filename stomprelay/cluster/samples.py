"""What a relay's dashboard rings hold (``stomp:servers:{id}:samples`` and
``:degraded``, docs/operations.md) and the store the dashboard reads, as a
protocol both backends' stores implement (``stomprelay/dashboard.py`` on one
node, ``cluster/redis_dashboard.py`` on Redis). Each sample and period is made
into JSON here, once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from stomprelay.cluster.registry import RoomRecord, SessionRecord

Row = dict[str, object]

#: Degraded periods a relay's ring keeps, and how long its rings outlive its last
#: write (s): a relay that stops deletes them; a dead one's expire.
MAX_PERIODS = 20
RING_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One relay over one interval: ``t`` its end (ms since the epoch),
    ``connections`` then, ``sends`` and ``deliveries`` per second over it, the
    round trip of a PING in ms (None: Redis did not answer) and the seconds of the
    interval spent degraded."""

    t: int
    connections: int
    sends: float
    deliveries: float
    rtt_ms: float | None
    degraded: float


@dataclass(frozen=True, slots=True)
class Period:
    """A degraded period of a relay (ms since the epoch; ``to`` 0: not over)."""

    start: int
    end: int

    def as_json(self) -> Row:
        seconds = (self.end - self.start) / 1000 if self.end else None
        return {"from": self.start, "to": self.end or None, "seconds": seconds}


@dataclass(frozen=True, slots=True)
class Beat:
    """A relay's heartbeat as Redis holds it: ms left before it expires (None:
    expired or unknown) and whether a sweeper holds its reaper lock."""

    ttl_left_ms: int | None
    reaping: bool


@dataclass(frozen=True, slots=True)
class Ring:
    """What one relay's rings hold: samples and past degraded periods, oldest first."""

    samples: list[Sample]
    periods: list[Period]


def sample_row(sample: Sample) -> Row:
    """A sample as the API shows it (and its ring keeps it)."""
    return {
        "t": sample.t,
        "connections": sample.connections,
        "sends": sample.sends,
        "deliveries": sample.deliveries,
        "rttMs": sample.rtt_ms,
        "degraded": sample.degraded,
    }


def sample_json(sample: Sample) -> str:
    return json.dumps(sample_row(sample), separators=(",", ":"))


def period_json(period: Period) -> str:
    return json.dumps([period.start, period.end], separators=(",", ":"))


def sample_of(raw: str) -> Sample | None:
    """A sample from its JSON (None for anything else: a ring is only read)."""
    try:
        data = json.loads(raw)
        return Sample(
            int(data["t"]),
            int(data["connections"]),
            float(data["sends"]),
            float(data["deliveries"]),
            None if data["rttMs"] is None else float(data["rttMs"]),
            float(data["degraded"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def period_of(raw: str) -> Period | None:
    try:
        start, end = json.loads(raw)
        return Period(int(start), int(end))
    except (ValueError, TypeError):
        return None


class DashboardStore(Protocol):
    """The backend's reads for the dashboard, and the relays' rings."""

    async def room_index(self, q: str) -> list[RoomRecord]:
        """Every room whose id holds ``q`` (all for ""), in any order."""
        ...

    async def session_ids(self, q: str) -> list[str]:
        """The ids of the sessions whose user holds ``q`` or whose id is ``q``
        (all for ""), in any order."""
        ...

    async def sessions_of(self, ids: Sequence[str]) -> list[SessionRecord]:
        """The records of ``ids`` that still exist, in that order."""
        ...

    async def beats(self, server_ids: Sequence[str]) -> dict[str, Beat]: ...

    async def push(
        self, server_id: str, samples: Sequence[Sample], periods: Sequence[Period], keep: int
    ) -> None:
        """Add to a relay's rings (at most ``keep`` samples and MAX_PERIODS periods)."""
        ...

    async def rings(self, server_ids: Sequence[str]) -> dict[str, Ring]: ...

    async def forget(self, server_id: str) -> None:
        """Delete a relay's rings (it stops)."""
        ...
