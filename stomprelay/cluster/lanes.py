"""Room lanes: what a bus reader has read ahead, served room by room (issue 18).

A relay's pub/sub connection carries every room in one stream, in publish order. A
flooded room's envelopes are ahead of a quiet room's in that stream; dispatched in
arrival order, the quiet room's message waits until the whole flood before it has
been fanned out. When dispatching falls behind, the bus reads ahead what its socket
already holds into :class:`Lanes`, one FIFO per room, and serves them round-robin: a
few envelopes of each lane with work per round, a budget per event-loop turn.

A lane is a channel's hash tag (:func:`~stomprelay.cluster.keys.hash_tag`): a room's
three channels (messages, joins, leaves) share the room's tag, a user's channel the
user's; channels without a tag (the control, server, session and global channels)
share one lane. Within a lane the order is exactly the arrival order; between lanes
it may change, as it may between two relays' publishes anyway.

The backlog is bounded (:data:`LIMIT` envelopes, :data:`LIMIT_BYTES` bytes): a full
reader stops reading until it drains, and Redis's client output buffer holds the rest,
as it does without lanes.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from stomprelay.cluster.keys import hash_tag

log = logging.getLogger(__name__)

#: Most envelopes read ahead. Enough for a flood's backlog of a second or more at
#: the flood benchmark's rate (about 3,000 envelopes a second reach the subscribers'
#: relay), so a quiet room's envelope is read, and so served, within a round while the
#: flood is drained; few enough that a full backlog drains in well under a second.
LIMIT = 4096
#: Most payload bytes read ahead (4 MiB): large messages fill it before the count does.
LIMIT_BYTES = 4 << 20
#: Envelopes one lane gets per round: a quiet room's envelope waits for at most this
#: many of each busy room's.
QUANTUM = 2
#: Envelopes served per event-loop turn before the reader yields (and reads ahead). A
#: flooded room's envelope to 20 subscribers costs the relay about 0.1 ms, so a turn
#: is about a millisecond: a quiet room's envelope that lands meanwhile waits about
#: that long to be read, and the relay's socket writes and timers run between turns.
BUDGET = 8

#: What a lane holds: a channel and its payload, or None for a subscription confirmed
#: (which must not overtake the channel's envelopes read before it).
Item = tuple[str, bytes | None]


class Lanes:
    """FIFO lanes by hash tag, served round-robin; ``deliver`` gets each item in turn."""

    def __init__(
        self,
        deliver: Callable[[str, bytes | None], None],
        *,
        limit: int = LIMIT,
        limit_bytes: int = LIMIT_BYTES,
        quantum: int = QUANTUM,
    ) -> None:
        self._deliver = deliver
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.quantum = quantum
        self._lanes: dict[str | None, collections.deque[Item]] = {}
        #: The lanes with work, in the order they are served.
        self._turns: collections.deque[str | None] = collections.deque()
        #: Items held, and their payloads' bytes.
        self.backlog = 0
        self.bytes = 0

    @property
    def full(self) -> bool:
        """Reading ahead stops here until the backlog drains."""
        return self.backlog >= self.limit or self.bytes >= self.limit_bytes

    def __len__(self) -> int:
        return self.backlog

    def put(self, channel: str, data: bytes | None) -> None:
        """Queue ``data`` (None: a confirmation) at the end of ``channel``'s lane."""
        tag = hash_tag(channel)
        lane = self._lanes.get(tag)
        if lane is None:
            lane = self._lanes[tag] = collections.deque()
            self._turns.append(tag)
        lane.append((channel, data))
        self.backlog += 1
        if data is not None:
            self.bytes += len(data)

    def run(self, budget: int = BUDGET) -> int:
        """Serve up to ``budget`` items, ``quantum`` per lane in turn; returns how many.
        A lane that empties leaves the rotation; one that does not goes to its end."""
        served = 0
        lanes, turns = self._lanes, self._turns
        while turns and served < budget:
            tag = turns.popleft()
            lane = lanes[tag]
            for _ in range(min(self.quantum, len(lane), budget - served)):
                channel, data = lane.popleft()
                self.backlog -= 1
                served += 1
                if data is not None:
                    self.bytes -= len(data)
                try:
                    self._deliver(channel, data)
                except Exception:
                    log.exception("bus handler failed on %s", channel)
            if lane:
                turns.append(tag)
            else:
                del lanes[tag]
        return served

    def clear(self) -> int:
        """Drop everything held; returns how many items that was."""
        dropped = self.backlog
        self._lanes.clear()
        self._turns.clear()
        self.backlog = self.bytes = 0
        return dropped
