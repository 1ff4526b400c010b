"""The protocols the relay needs from its cluster backend.

:class:`Bus` moves envelopes between relays over named channels; the
:class:`Registry` (see ``registry.py``) records who is connected where.
``memory.py`` holds the single-node reference implementations, ``redis_bus.py``,
``redis_backend.py`` and ``sharded.py`` the distributed ones; one contract test
suite runs against both.

The liveness defaults are defined here, once: the settings' defaults, the
backends' constructors and the Lua scripts all take them from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from stomprelay.cluster.envelope import Envelope

#: How often a relay refreshes its heartbeat (s): ``--liveness-interval``'s default.
LIVENESS_INTERVAL = 3.0
#: How long a heartbeat lives (s): ``--liveness-ttl``'s default; a fence lasts as long.
LIVENESS_TTL = 10.0
#: How long a sweeper holds a dead relay's lock (ms): ``--reaper-lock-ms``'s default.
REAPER_LOCK_MS = 5_000
#: How long a reap's tombstone tells a relay that it was reaped (ms), in every backend
#: (the Lua scripts get it in their preamble).
REAP_TOMBSTONE_MS = 3_600_000


def stall_ms(liveness_interval: float = LIVENESS_INTERVAL) -> int:
    """Silence of every relay that counts as the backend itself being unreachable
    (ms): one and a half refresh intervals, at least 500 ms."""
    return max(500, int(1500 * liveness_interval))


#: The stall a registry assumes when it is not told the liveness interval (ms).
STALL_MS = stall_ms()
#: How long a fence found by a reap holds when not told the liveness TTL (ms).
FENCE_MS = int(LIVENESS_TTL * 1000)

#: Called for every envelope that arrives on a subscribed channel, in order.
BusHandler = Callable[[str, Envelope], None]


class Bus(Protocol):
    """Publish/subscribe between relays.

    ``subscribe`` returns once the subscription is live (for Redis: once the
    server confirmed it), so a RECEIPT sent after it is truthful. Envelopes a
    relay publishes come back to its own handler through the channel like
    everyone else's, which gives every subscriber the same order.
    """

    #: Told True/False when the backend becomes reachable or unreachable.
    on_state_change: Callable[[bool], None] | None

    @property
    def available(self) -> bool:
        """False while the backend is unreachable (delivery is local only)."""
        ...

    async def start(self, handler: BusHandler) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, envelope: Envelope) -> None: ...

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        """:meth:`publish` of each ``(channel, envelope)`` in order, in one round trip."""
        ...
