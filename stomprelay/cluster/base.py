"""The protocols the relay needs from its cluster backend.

:class:`Bus` moves envelopes between relays over named channels; the
:class:`Registry` (see ``registry.py``) records who is connected where.
``memory.py`` holds the single-node reference implementations, ``redis.py``
the distributed ones; one contract test suite runs against both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from stomprelay.cluster.envelope import Envelope

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
