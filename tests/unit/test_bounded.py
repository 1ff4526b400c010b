"""stomprelay.bounded: stopping a task and awaiting a close end within their bound.

No sockets; the bounds are tens of milliseconds (a bound is what is being tested, so these
tests wait for it). The stubborn tasks are released at the end of every test.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator

import pytest

from stomprelay.bounded import bounded, stop_task

BOUND = 0.2
#: How much later than its bound a call may return on a busy machine.
SLACK = 1.0


class Stubborn:
    """A task body that swallows the first ``times`` cancellations it gets, the way
    ``asyncio.wait_for`` does on Python 3.11 when a cancellation meets a finished wait."""

    def __init__(self, times: float) -> None:
        self.times = times
        self.swallowed = 0
        self.release = asyncio.Event()

    async def run(self) -> str:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                if self.swallowed >= self.times:
                    raise
                self.swallowed += 1
        return "released"


@pytest.fixture
async def stubborn_tasks() -> AsyncIterator[list[tuple[Stubborn, asyncio.Task[str]]]]:
    made: list[tuple[Stubborn, asyncio.Task[str]]] = []
    yield made
    for body, task in made:
        body.release.set()
        task.cancel()
    await asyncio.wait([task for _, task in made] or [asyncio.sleep(0)], timeout=5)


def start(made: list[tuple[Stubborn, asyncio.Task[str]]], times: float) -> asyncio.Task[str]:
    body = Stubborn(times)
    task = asyncio.create_task(body.run(), name=f"stubborn-{times}")
    made.append((body, task))
    return task


async def test_stop_task_ends_a_plain_task_at_once() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    began = time.monotonic()
    assert await stop_task(task, "plain", BOUND)
    assert task.cancelled()
    assert time.monotonic() - began < BOUND


async def test_stop_task_cancels_again_a_task_that_swallowed_its_cancellation(
    stubborn_tasks: list[tuple[Stubborn, asyncio.Task[str]]],
) -> None:
    task = start(stubborn_tasks, times=2)
    await asyncio.sleep(0)
    assert await stop_task(task, "stubborn", BOUND)
    assert task.cancelled()
    assert stubborn_tasks[0][0].swallowed == 2


async def test_stop_task_gives_up_at_its_bound_and_says_where_the_task_is(
    stubborn_tasks: list[tuple[Stubborn, asyncio.Task[str]]], caplog: pytest.LogCaptureFixture
) -> None:
    task = start(stubborn_tasks, times=math.inf)
    await asyncio.sleep(0)
    began = time.monotonic()
    assert not await stop_task(task, "the stubborn one", BOUND)
    took = time.monotonic() - began
    assert BOUND <= took < BOUND + SLACK
    assert not task.done()
    assert "the stubborn one: task stubborn-inf still running" in caplog.text
    assert "Stubborn.run" in caplog.text


async def test_stop_task_does_not_swallow_the_callers_cancellation(
    stubborn_tasks: list[tuple[Stubborn, asyncio.Task[str]]],
) -> None:
    task = start(stubborn_tasks, times=math.inf)
    stopper = asyncio.create_task(stop_task(task, "stubborn", 3600))
    await asyncio.sleep(0.05)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper


async def test_bounded_returns_a_finished_close_and_raises_its_error() -> None:
    assert await bounded("quick", asyncio.sleep(0), BOUND)

    async def failing() -> None:
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        await bounded("failing", failing(), BOUND)


async def test_bounded_leaves_behind_a_close_that_never_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="stomprelay.bounded")
    body = Stubborn(times=math.inf)  # not even its cancellation ends it
    try:
        began = time.monotonic()
        assert not await bounded("closing the stubborn one", body.run(), BOUND)
        assert BOUND <= time.monotonic() - began < BOUND + SLACK
        assert "closing the stubborn one did not finish within 0.2 s" in caplog.text
        assert "Stubborn.run" in caplog.text
    finally:
        body.release.set()
        await asyncio.sleep(0)


async def test_bounded_cancels_its_close_when_the_caller_is_cancelled() -> None:
    started = asyncio.Event()
    ended: list[str] = []

    async def close() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("close")

    caller = asyncio.create_task(bounded("slow", close(), 3600))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert ended == ["close"]
