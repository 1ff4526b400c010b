"""Liveness.stop against a heartbeat whose Redis call swallows the cancellation.

On Python 3.11, ``asyncio.wait_for`` returns the inner result and drops a cancellation
that arrives once the inner awaitable has finished (CPython gh-86296); redis-py sends
every command through it (``Connection.send_packed_command``). A heartbeat cancelled just
as its refresh's command went out therefore ran on, and ``stomprelay serve`` hung at its
stop, after the clients were gone (tests/multi's SIGTERM test, about 1 run in 40).

The race is forced here, with no Redis and no timing: the heartbeat task's ``cancel()``
first completes the command its refresh is waiting for, so the cancellation always meets
a finished wait, as it does when it comes in the same event-loop turn as Redis's reply.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

import pytest

from stomprelay.cluster.reaper import Liveness
from stomprelay.cluster.registry import DeadServer

#: Seconds within which a stop that is not stuck has returned, however busy the machine.
BOUND = 5.0
#: Between heart-beats: shorter than stomprelay.bounded's re-cancel interval, so a
#: heartbeat that runs on after its cancellation shows up as a second refresh.
INTERVAL = 0.001


class Heart:
    """The relay's side of the heartbeat: ``refresh`` awaits a "command" through
    ``asyncio.wait_for``, as redis-py does. ``swallow`` cancellations of the heartbeat
    task come just as that command completes; later ones come as they would."""

    def __init__(self, swallow: float) -> None:
        self.swallow = swallow
        self.sending: asyncio.Future[None] | None = None
        self.refreshes = 0
        #: Refreshes that returned although their task had been cancelled.
        self.swallowed = 0
        self.entered = asyncio.Event()

    async def refresh(self) -> None:
        self.refreshes += 1
        self.sending = asyncio.get_running_loop().create_future()
        self.entered.set()
        await asyncio.wait_for(self.sending, 60)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            self.swallowed += 1

    def note_backend_error(self, exc: Exception) -> None:
        raise AssertionError(f"no backend error expected: {exc!r}")

    def reply_now(self) -> None:
        """Called as the heartbeat task is cancelled: the pending command completes first."""
        sending = self.sending
        if self.swallow > 0 and sending is not None and not sending.done():
            self.swallow -= 1
            sending.set_result(None)


class RacingTask(asyncio.Task[Any]):
    """A task whose cancellation meets a finished wait (see the module docstring)."""

    heart: Heart | None = None

    def cancel(self, msg: Any = None) -> bool:
        heart = RacingTask.heart
        if heart is not None and self.get_name() == "liveness-heartbeat":
            heart.reply_now()
        return super().cancel(msg)


@pytest.fixture
async def racing_tasks() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    before = loop.get_task_factory()

    def factory(
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        return RacingTask(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    yield
    loop.set_task_factory(before)
    RacingTask.heart = None


async def start(heart: Heart) -> tuple[Liveness, list[asyncio.Task[None]]]:
    RacingTask.heart = heart

    async def guard(call: Any) -> Any:
        return await call()

    liveness = Liveness(
        server_id="relay-a",
        registry=cast(Any, None),  # never swept: sweep_interval is an hour
        interval=INTERVAL,
        sweep_interval=3600.0,
        refresh=heart.refresh,
        on_error=heart.note_backend_error,
        guard=guard,
        may_judge=lambda: False,
        clock_ms=lambda: 0,
        next_message_id=lambda: "m",
    )
    liveness.start()
    tasks = list(liveness._tasks)
    await asyncio.wait_for(heart.entered.wait(), BOUND)  # the first refresh is waiting
    return liveness, tasks


async def stop_within(liveness: Liveness, tasks: list[asyncio.Task[None]]) -> None:
    stopping = asyncio.ensure_future(liveness.stop())
    done, _ = await asyncio.wait({stopping}, timeout=BOUND)
    try:
        assert done, f"Liveness.stop still waiting after {BOUND:g} s"
        stopping.result()
    finally:
        RacingTask.heart = None  # a heartbeat left running is cancelled plainly now
        for task in tasks:
            task.cancel()
        stopping.cancel()
        await asyncio.wait(tasks, timeout=BOUND)


@pytest.mark.parametrize("swallow", [1, float("inf")], ids=["once", "every-time"])
@pytest.mark.usefixtures("racing_tasks")
async def test_stop_ends_a_heartbeat_whose_redis_call_swallowed_the_cancellation(
    swallow: float,
) -> None:
    heart = Heart(swallow)
    liveness, tasks = await start(heart)
    await stop_within(liveness, tasks)
    if sys.version_info < (3, 12):
        assert heart.swallowed >= 1, "the race was not reproduced"
    assert all(task.done() for task in tasks), "a liveness task runs on after stop"
    # no heartbeat after the stop began: one that found the relay unregistered would
    # register it again
    assert heart.refreshes == 1, f"{heart.refreshes} refreshes"


class Graveyard:
    """A registry with dead relays; ``won`` says which reaps this sweeper wins."""

    def __init__(self, dead: list[DeadServer], won: dict[str, int | None]) -> None:
        self.dead = dead
        self.won = won
        self.reaps: list[tuple[str, str, int, str]] = []

    async def dead_servers(self) -> list[DeadServer]:
        return self.dead

    async def reap(self, dead: DeadServer, sweeper_id: str, now: int, event_id: str) -> int | None:
        self.reaps.append((dead.server_id, sweeper_id, now, event_id))
        return self.won[dead.server_id]


def sweeper(registry: Graveyard, judge: bool = True) -> Liveness:
    async def guard(call: Any) -> Any:
        return await call()

    async def refresh() -> None:
        raise AssertionError("no heartbeat in a sweep")

    ids = iter(f"event-{n}" for n in range(100))
    return Liveness(
        server_id="relay-a",
        registry=registry,
        interval=1.0,
        sweep_interval=1.0,
        refresh=refresh,
        on_error=lambda exc: None,
        guard=guard,
        may_judge=lambda: judge,
        clock_ms=lambda: 1234,
        next_message_id=lambda: next(ids),
    )


async def test_a_sweep_reaps_the_dead_relays_it_wins_and_never_itself() -> None:
    registry = Graveyard(
        [DeadServer("relay-a", "i0"), DeadServer("relay-b", "i1"), DeadServer("relay-c", "i2")],
        {"relay-b": 3, "relay-c": None},  # relay-c: another sweeper won it
    )
    liveness = sweeper(registry)
    assert await liveness.sweep() == 3
    assert registry.reaps == [
        ("relay-b", "relay-a", 1234, "event-0"),
        ("relay-c", "relay-a", 1234, "event-1"),
    ]
    assert liveness.reaped == [("relay-b", 3)]


async def test_a_sweeper_that_may_not_judge_reaps_nobody() -> None:
    registry = Graveyard([DeadServer("relay-b", "i1")], {"relay-b": 3})
    assert await sweeper(registry, judge=False).sweep() == 0
    assert registry.reaps == []
