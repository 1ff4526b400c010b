"""Bounded teardown: stopping a task or awaiting a close never holds the caller.

``task.cancel(); await task`` and ``await client.aclose()`` have no bound, and two things
make them hang:

* a task that swallows its cancellation. On Python 3.11, ``asyncio.wait_for`` returns the
  inner result and drops a cancellation that arrives after the inner awaitable finished
  (CPython gh-86296, fixed in 3.12). redis-py sends every command through it
  (``Connection.send_packed_command``), so a pub/sub reader cancelled while its PING goes
  out carries on as if nothing had happened, and whoever awaits it waits forever.
  ``asyncio.wait_for`` and ``asyncio.timeout`` are no bound either: at their deadline they
  cancel the awaited code and wait for it to give up, which such code never does;
* a close that waits on a peer that answers nothing (a SIGSTOPped Redis holds its sockets
  open).

:func:`stop_task` cancels again until the task ends; :func:`bounded` runs a close in a task
of its own. Both wait with ``asyncio.wait`` (which only watches), give up at their bound,
log what did not finish with where it was stuck, and leave it behind: a relay stopping, or
a test's teardown, goes on. Neither swallows the caller's own cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

#: How often (at most) a task that runs on after its cancellation is cancelled again.
RECANCEL_INTERVAL = 0.25
#: Seconds a component's own task (a probe, a refresh loop) gets to end once cancelled.
STOP_TIMEOUT = 2.0


def where(task: asyncio.Task[Any]) -> str:
    """The await chain a task is suspended in, innermost last (``file:line in name``).

    ``Task.get_stack`` shows a coroutine's own frame only; the frames it awaits are
    followed here through ``cr_await``."""
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_qualname}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " -> ".join(lines) or repr(task)


def _consume(task: asyncio.Task[Any]) -> None:
    """Fetch a finished task's outcome, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


async def stop_task(task: asyncio.Task[Any], what: str, within: float) -> bool:
    """Cancel ``task`` and wait up to ``within`` seconds for it to end, cancelling it again
    while it runs on (a swallowed cancellation). True if it ended; its result is dropped
    and an exception it had ended with is logged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    # several tries within the bound, however short it is
    interval = min(RECANCEL_INTERVAL, within / 4)
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            log.warning(
                "%s: task %s still running %g s after its cancellation, left behind at %s",
                what,
                task.get_name(),
                within,
                where(task),
            )
            task.add_done_callback(_consume)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(left, interval))
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("%s: task %s had failed: %r", what, task.get_name(), exc, exc_info=exc)
    return True


async def bounded(what: str, close: Coroutine[Any, Any, Any], within: float) -> bool:
    """Run ``close`` for at most ``within`` seconds. True if it finished (an exception it
    raised is raised here); False if not: it is cancelled, logged and left behind."""
    task: asyncio.Task[Any] = asyncio.ensure_future(close)
    try:
        await asyncio.wait({task}, timeout=within)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_consume)
        raise
    if task.done():
        if not task.cancelled():
            task.result()
        return True
    log.warning("%s did not finish within %g s, left behind at %s", what, within, where(task))
    task.cancel()
    task.add_done_callback(_consume)
    return False
