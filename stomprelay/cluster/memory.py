"""In-memory cluster backend: the single-node default and the reference model."""

from __future__ import annotations

import asyncio

from stomprelay.cluster.base import BusHandler
from stomprelay.cluster.envelope import Envelope


class MemoryHub:
    """What several in-process relays share; one per "cluster"."""

    def __init__(self) -> None:
        self.buses: set[MemoryBus] = set()


class MemoryBus:
    """Channels inside one process; delivery is asynchronous and FIFO.

    Delivery goes through ``loop.call_soon`` so a publisher's own handler is
    not re-entered, and every bus of the hub sees envelopes in publish order.
    """

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self._hub = hub or MemoryHub()
        self._handler: BusHandler | None = None
        self._channels: set[str] = set()

    @property
    def available(self) -> bool:
        return True

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler
        self._hub.buses.add(self)

    async def close(self) -> None:
        self._hub.buses.discard(self)
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, envelope: Envelope) -> None:
        loop = asyncio.get_running_loop()
        for bus in list(self._hub.buses):
            if channel in bus._channels and bus._handler is not None:
                loop.call_soon(bus._deliver, channel, envelope)

    def _deliver(self, channel: str, envelope: Envelope) -> None:
        if channel in self._channels and self._handler is not None:
            self._handler(channel, envelope)
