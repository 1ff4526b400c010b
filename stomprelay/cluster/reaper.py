"""Relay liveness and the reaper that cleans up after dead relays.

Every relay refreshes ``stomp:servers:{id}:heartbeat`` (``SET ... PX ttl``, so
Redis itself expires it) and, on every sweep, looks for active relays whose
heartbeat key is gone. Cleaning one up takes its reaper lock (``SET NX PX``
with a random token) and runs one Lua script that checks the token, that the
heartbeat is still missing and that the relay's incarnation is the one seen
dead; so exactly one sweeper cleans each dead relay, and never one that came
back. A relay whose refresh finds itself unregistered (it was reaped while
paused, or Redis lost its data) re-registers everything it still holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from stomprelay.bounded import STOP_TIMEOUT, stop_task
from stomprelay.errors import BackendUnavailable

if TYPE_CHECKING:
    from stomprelay.relay import Relay

log = logging.getLogger(__name__)


class Liveness:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.settings = relay.settings
        self._tasks: list[asyncio.Task[None]] = []
        self.reaped: list[tuple[str, int]] = []
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="liveness-heartbeat"),
            asyncio.create_task(self._sweep_loop(), name="liveness-sweep"),
        ]

    async def stop(self) -> None:
        """End both loops. A cancellation alone may not end them: on Python 3.11 one that
        arrives as a Redis command goes out is dropped by ``asyncio.wait_for``, which
        redis-py sends every command through (CPython gh-86296; :mod:`stomprelay.bounded`).
        So the loops also end at their next turn once stopping, and a heartbeat never
        runs after the stop began (finding the relay unregistered, it would register it
        again)."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*(stop_task(task, "liveness", STOP_TIMEOUT) for task in tasks))

    async def _heartbeat_loop(self) -> None:
        relay = self.relay
        while not self._stopping:
            await asyncio.sleep(self.settings.liveness_interval)
            try:
                await relay.refresh()
            except BackendUnavailable as exc:
                relay.note_backend_error(exc)

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                await self.sweep()
            except BackendUnavailable as exc:
                self.relay.note_backend_error(exc)

    async def sweep(self) -> int:
        """Clean up every dead relay this sweeper wins; sessions reaped in total.

        Two fences keep a Redis outage from reaping live relays: this relay
        judges nobody within one TTL of its own trouble with Redis (what it saw
        expire may have expired while nobody could refresh), and the REAP
        script refuses while Redis's own fence holds (no relay at all refreshed
        for a while: a stall or restart of Redis itself; docs/redis.md).
        """
        relay = self.relay
        if not relay.sync.health.may_judge(relay.sync.clock(), self.settings.liveness_ttl):
            return 0
        total = 0
        registry = relay.registry
        for dead in await relay.sync.guard(registry.dead_servers):
            if dead.server_id == relay.server_id:
                continue
            reaped = await relay.sync.guard(
                lambda dead=dead: registry.reap(  # type: ignore[misc]
                    dead, relay.server_id, relay.clock_ms(), relay.router.next_message_id()
                )
            )
            if reaped is not None:
                log.warning(
                    "reaped dead relay %s (incarnation %s): %d sessions",
                    dead.server_id,
                    dead.incarnation,
                    reaped,
                )
                self.reaped.append((dead.server_id, reaped))
                total += reaped
        return total
