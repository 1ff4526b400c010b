"""The one timer heap on a simulated clock: when deadlines fire, and what the
client sees of the heart-beats it drives (STOMP 1.2 "Heart-beating")."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable

import pytest

from stomprelay.settings import Settings
from stomprelay.stomp.frames import Frame
from stomprelay.stomp.session import ServerSession
from stomprelay.transport.timers import GRANULARITY, Timers

INTERVAL_MS = 1000


class Handle:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimulatedLoop:
    """``call_later`` on a clock that only moves when told; each callback runs
    late by the next of ``lags`` (event-loop lag: the loop was busy elsewhere)."""

    def __init__(self, lags: Iterable[float] = (0.0,)) -> None:
        self.now = 0.0
        self._lags = itertools.cycle(lags)
        self._queue: list[tuple[float, int, Handle]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(callback)
        when = self.now + delay + next(self._lags)
        heapq.heappush(self._queue, (when, next(self._order), handle))
        return handle

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Something else the loop runs at ``when`` (a client connecting, a frame going out)."""
        heapq.heappush(self._queue, (when, next(self._order), Handle(callback)))

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, handle = heapq.heappop(self._queue)
            if not handle.cancelled:
                self.now = max(self.now, when)
                handle.callback()
        self.now = end


class Client:
    """One STOMP session on the heap, the way ``Connection`` drives it; ``sent``
    holds the times bytes left for the client (heart-beats and frames alike)."""

    def __init__(self, timers: Timers, loop: SimulatedLoop, settings: Settings) -> None:
        self.timers = timers
        self.loop = loop
        now = loop.now
        self.session = ServerSession(f"s{id(self)}", "relay-a", now, settings)
        connect = Frame(
            "CONNECT", (("accept-version", "1.2"), ("heart-beat", f"0,{INTERVAL_MS}"))
        ).serialize("1.2")
        self.session.receive_data(connect, now)
        self.sent: list[float] = []
        self._write(now)
        self.token = timers.add(self)

    def deadline(self) -> float | None:
        return self.session.next_deadline()

    def on_deadline(self, now: float) -> None:
        self.session.tick(now)
        self._write(now)

    def receipt(self) -> None:
        """A frame the application sends (activity that moves the heart-beat later)."""
        now = self.loop.now
        self.session.send_receipt("r", now)
        self._write(now)
        self.timers.update(self.token)

    def _write(self, now: float) -> None:
        if self.session.data_to_send():
            self.sent.append(now)


def test_a_deadline_fires_within_one_batch_of_its_time() -> None:
    """What the heart-beat schedule relies on: with a punctual loop, a deadline
    is handled at most ``GRANULARITY`` after it is due, never before."""
    loop = SimulatedLoop()
    timers = Timers(loop.clock, loop.call_later)
    fired: list[tuple[float, float]] = []

    class Once:
        def __init__(self, at: float) -> None:
            self.at: float | None = at

        def deadline(self) -> float | None:
            return self.at

        def on_deadline(self, now: float) -> None:
            assert self.at is not None
            fired.append((self.at, now))
            self.at = None

    for i in range(200):
        timers.add(Once(0.5 + i * 0.0173))
    loop.run_until(10.0)
    assert len(fired) == 200
    assert all(due <= now <= due + GRANULARITY for due, now in fired), fired


@pytest.mark.parametrize(
    "lags",
    [(0.0,), (0.0, 0.19, 0.07, 0.13, 0.0, 0.02)],
    ids=["punctual-loop", "loop-lag-under-200ms"],
)
def test_heart_beats_through_the_timer_heap_never_leave_a_gap_over_the_interval(
    lags: tuple[float, ...],
) -> None:
    """STOMP 1.2: the sender MUST send something at least every <n> ms. The heap
    handles a deadline up to GRANULARITY late, and the loop may be late too: the
    heart-beat has to be due early enough to absorb both."""
    loop = SimulatedLoop(lags)
    timers = Timers(loop.clock, loop.call_later)
    settings = Settings(heartbeat_send_ms=INTERVAL_MS, heartbeat_receive_ms=0)
    clients: list[Client] = []
    # 40 clients connecting over 0.6 s, so deadlines fall in and across batches
    for i in range(40):
        loop.call_at(i * 0.0151, lambda: clients.append(Client(timers, loop, settings)))
    # now and then a frame goes out to one of them
    for i in range(60):
        loop.call_at(1.0 + i * 0.337, lambda i=i: clients[(i * 7) % len(clients)].receipt())
    end = 30.0
    loop.run_until(end)
    interval = INTERVAL_MS / 1000
    worst = 0.0
    for client in clients:
        times = [*client.sent, end]
        worst = max(worst, *(b - a for a, b in itertools.pairwise(times)))
    assert worst <= interval, f"a {worst:.3f} s gap against a {interval:g} s heart-beat"
    assert len(clients) == 40
