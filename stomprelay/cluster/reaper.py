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
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from stomprelay.bounded import STOP_TIMEOUT, stop_task
from stomprelay.cluster.registry import DeadServer
from stomprelay.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class Reaping(Protocol):
    """What a sweep needs of the registry: the relays whose heartbeat is gone, and the
    step that cleans one up (None: another sweeper won, or the relay came back)."""

    async def dead_servers(self) -> list[DeadServer]: ...

    async def reap(
        self, dead: DeadServer, sweeper_id: str, now: int, event_id: str
    ) -> int | None: ...


class Guard(Protocol):
    """Runs one Redis operation, or fails fast while Redis is known to be down."""

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T: ...


class Liveness:
    """This relay's heartbeat and sweep loops.

    It is handed what it uses, not the relay (conventions, "give, don't reach"):
    ``refresh`` renews this relay's registration, ``on_error`` is told when Redis
    failed an operation, ``guard`` runs a Redis operation (failing fast while Redis
    is down), ``may_judge`` says whether this relay may judge others yet, ``clock_ms``
    and ``next_message_id`` stamp the LEAVE events a reap publishes.
    """

    def __init__(
        self,
        *,
        server_id: str,
        registry: Reaping,
        interval: float,
        sweep_interval: float,
        refresh: Callable[[], Awaitable[None]],
        on_error: Callable[[BackendUnavailable], None],
        guard: Guard,
        may_judge: Callable[[], bool],
        clock_ms: Callable[[], int],
        next_message_id: Callable[[], str],
        on_reaped: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.server_id = server_id
        self.registry = registry
        self.interval = interval
        self.sweep_interval = sweep_interval
        self._refresh = refresh
        self._on_error = on_error
        self._guard = guard
        self._may_judge = may_judge
        self._clock_ms = clock_ms
        self._next_message_id = next_message_id
        #: Told the id of each relay this sweeper reaped (its queue entries go back).
        self._on_reaped = on_reaped
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
        while not self._stopping:
            await asyncio.sleep(self.interval)
            try:
                await self._refresh()
            except BackendUnavailable as exc:
                self._on_error(exc)

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except BackendUnavailable as exc:
                self._on_error(exc)

    async def sweep(self) -> int:
        """Clean up every dead relay this sweeper wins; sessions reaped in total.

        Two fences keep a Redis outage from reaping live relays: this relay
        judges nobody within one TTL of its own trouble with Redis (what it saw
        expire may have expired while nobody could refresh), and the REAP
        script refuses while Redis's own fence holds (no relay at all refreshed
        for a while: a stall or restart of Redis itself; docs/redis.md).
        """
        if not self._may_judge():
            return 0
        total = 0
        registry = self.registry
        for dead in await self._guard(registry.dead_servers):
            if dead.server_id == self.server_id:
                continue
            reaped = await self._guard(
                lambda dead=dead: registry.reap(  # type: ignore[misc]
                    dead, self.server_id, self._clock_ms(), self._next_message_id()
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
                if self._on_reaped is not None:
                    await self._guard(lambda dead=dead: self._on_reaped(dead.server_id))  # type: ignore[misc]
        return total
