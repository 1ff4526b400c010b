"""One relay-wide timer for every connection's deadlines.

Each connection has one deadline at a time (its session's ``next_deadline()``:
the CONNECT timeout, the next heart-beat to send, the silence that ends a
peer; or the handshake and write timeouts of the transport). Instead of a
sleeping task per connection, the deadlines sit in one heap, and one
``loop.call_at`` wakes for the earliest. Entries are lazy: activity only moves
a session's deadline later, so an entry that comes due early is re-armed at
the connection's new deadline instead of being updated on every frame. Due
entries are handled in batches ``GRANULARITY`` apart, so 5000 idle
connections cost a few wake-ups a second, not thousands.

A deadline is therefore handled up to ``GRANULARITY`` after it (plus however
late the event loop runs the wake-up), never before: a deadline by which
something must be sent has to come that much early (the session's heart-beat
does, by ``Settings.heartbeat_send_lead``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

#: Deadlines this close together are handled in one wake-up (seconds).
GRANULARITY = 0.05


class Timed(Protocol):
    """Something with one deadline at a time (a connection): what the timers call."""

    def deadline(self) -> float | None:
        """When :meth:`on_deadline` is next due (on the timers' clock), or None."""
        ...

    def on_deadline(self, now: float) -> None: ...


class Cancellable(Protocol):
    """A scheduled callback that can be called off (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


#: ``loop.call_later``'s shape: run a callback after a delay, return its handle.
CallLater = Callable[[float, Callable[[], None]], Cancellable]


class Timers:
    """A heap of (deadline, token); tokens name connections that are still open.

    ``clock`` and ``call_later`` default to ``time.monotonic`` and the running
    loop's ``call_later``; a test gives a simulated clock instead.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> None:
        self._clock = clock
        self._call_later = call_later
        self._heap: list[tuple[float, int]] = []
        self._owners: dict[int, Timed] = {}
        #: token -> the deadline its live entry is for
        self._armed: dict[int, float] = {}
        self._tokens = itertools.count(1)
        self._handle: Cancellable | None = None
        self._wake_at = float("inf")

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, owner: Timed) -> int:
        token = next(self._tokens)
        self._owners[token] = owner
        self.update(token)
        return token

    def remove(self, token: int) -> None:
        """Forget a closed connection (its heap entries are skipped when they come up)."""
        self._owners.pop(token, None)
        self._armed.pop(token, None)

    def update(self, token: int) -> None:
        """The owner's deadline may be earlier than its entry: arm it again."""
        owner = self._owners.get(token)
        if owner is None:
            return
        when = owner.deadline()
        if when is None:
            return
        armed = self._armed.get(token)
        if armed is not None and armed <= when:
            return  # the entry comes up first and re-arms itself
        self._armed[token] = when
        heapq.heappush(self._heap, (when, token))
        if when < self._wake_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._wake_at = when
        delay = max(0.0, when - self._clock()) + GRANULARITY
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self._handle = call_later(delay, self._run)

    def _run(self) -> None:
        self._handle = None
        self._wake_at = float("inf")
        now = self._clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, token = heapq.heappop(heap)
            if self._armed.get(token) != when:
                continue  # stale: superseded or removed
            del self._armed[token]
            owner = self._owners.get(token)
            if owner is None:
                continue
            due = owner.deadline()
            if due is not None and due <= now:
                owner.on_deadline(now)
                due = owner.deadline() if token in self._owners else None
                if due is not None:
                    due = max(due, now + GRANULARITY)
            if due is not None and token in self._owners:
                self._armed[token] = due
                heapq.heappush(heap, (due, token))
        if len(heap) > 4 * len(self._armed) + 64:
            # many stale entries: rebuild from the live ones
            self._heap = heap = [(when, token) for token, when in self._armed.items()]
            heapq.heapify(heap)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
        self._owners.clear()
        self._armed.clear()
