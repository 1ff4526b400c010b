"""The relay-wide publish pipeline: clients' SENDs to Redis without a round trip each.

Every client SEND becomes one item in one queue (a logged destination's an
append, any other a plain PUBLISH).
While a batch is with Redis, new items wait; the next batch is everything
that waited, sent as one pipeline (``Log.append_many``), so a publisher is no
longer held to one SEND per round trip, and items leave in the order they
came: per session, and across sessions. An item's future completes when Redis
acknowledged its append (its RECEIPT may go out then), or when it went to the
journal because Redis counts as down (delivered locally at once, appended
after recovery, by ``Relay.journal``, as for room events). A full
journal fails the item with ``PolicyError``: an ERROR, never a RECEIPT.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from stomprelay.bounded import STOP_TIMEOUT, stop_task
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import Log
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.metrics import Metrics
from stomprelay.sync import Sync

log = logging.getLogger(__name__)

#: Most appends in one pipeline, and most of one publisher's in it (on a single
#: node a batch is also one step of local fan-out: small steps keep other rooms' latency).
MAX_BATCH = 256
PER_PUBLISHER = 16
#: Seconds a stopping relay gives the appends already queued.
DRAIN_TIMEOUT = 2.0


@dataclass(slots=True)
class _Item:
    log_id: str
    channel: str
    envelope: Envelope
    done: asyncio.Future[None]


class Publisher:
    def __init__(
        self,
        log_: Log,
        publish_many: Callable[[Sequence[tuple[str, Envelope]]], Awaitable[None]],
        sync: Sync,
        journal: Callable[[str, str, Envelope], None],
        metrics: Metrics,
        now_ms: Callable[[], int],
    ) -> None:
        self._log = log_
        self._publish_many = publish_many
        self._sync = sync
        #: Keeps what Redis did not take and delivers it locally (Relay.journal).
        self._journal_one = journal
        self._metrics = metrics
        self._now_ms = now_ms
        #: Per publisher (session id), its items in order; publishers take turns.
        self._queues: dict[str, deque[_Item]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def __len__(self) -> int:
        return sum(map(len, self._queues.values()))

    def submit(
        self, log_id: str, channel: str, envelope: Envelope, publisher: str = ""
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._closing:
            done.set_exception(BackendUnavailable("relay stopping"))
            return done
        queue = self._queues.get(publisher)
        if queue is None:
            queue = self._queues[publisher] = deque()
        queue.append(_Item(log_id, channel, envelope, done))
        if self._task is None:
            self._task = loop.create_task(self._run(), name="publish-pipeline")
        return done

    def _take(self) -> tuple[bool, list[_Item]]:
        """The next batch: publishers take turns, one item each per round, so one
        that floods does not hold up the others; one kind (logged or not) per
        batch, and each publisher's items in its order."""
        queues = self._queues
        logged = bool(next(iter(queues.values()))[0].log_id)
        batch: list[_Item] = []
        served: list[str] = []
        for _ in range(PER_PUBLISHER):
            took = False
            for key in list(queues):
                queue = queues[key]
                if bool(queue[0].log_id) != logged:
                    continue
                batch.append(queue.popleft())
                served.append(key)
                took = True
                if not queue:
                    del queues[key]
                if len(batch) >= MAX_BATCH:
                    break
            if not took or len(batch) >= MAX_BATCH:
                break
        for key in dict.fromkeys(served):  # served ones go to the back of the turn order
            if key in queues:
                queues[key] = queues.pop(key)
        return logged, batch

    async def _run(self) -> None:
        try:
            while self._queues:
                logged, batch = self._take()
                await (self._send(batch) if logged else self._publish(batch))
                await asyncio.sleep(0)  # clients' frames get handled between batches
        finally:
            self._task = None
            if self._queues and not self._closing:
                self._task = asyncio.get_running_loop().create_task(self._run())

    async def _send(self, batch: list[_Item]) -> None:
        sync = self._sync
        self._metrics.publish_batches.inc()
        items = [(i.log_id, i.channel, i.envelope) for i in batch]
        try:
            results: list[Envelope | BackendUnavailable] = await sync.guard(
                lambda: self._log.append_many(items, self._now_ms())
            )
        except BackendUnavailable as exc:
            results = [exc] * len(batch)
        except asyncio.CancelledError:
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(BackendUnavailable("relay stopping"))
            raise
        self._metrics.published.inc(len(batch))
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BackendUnavailable):
                self._journal(item)
            else:
                self._metrics.appends.inc()
                if not item.done.done():
                    item.done.set_result(None)

    async def _publish(self, batch: list[_Item]) -> None:
        """Unlogged destinations: PUBLISH as they are (the bus delivers locally
        while Redis is unreachable)."""
        self._metrics.publish_batches.inc()
        try:
            await self._publish_many([(i.channel, i.envelope) for i in batch])
        finally:
            self._metrics.published.inc(len(batch))
            for item in batch:
                if not item.done.done():
                    item.done.set_result(None)

    def _journal(self, item: _Item) -> None:
        try:
            self._journal_one(item.log_id, item.channel, item.envelope)
        except PolicyError as exc:
            if not item.done.done():
                item.done.set_exception(exc)
            return
        if not item.done.done():
            item.done.set_result(None)

    async def close(self) -> None:
        self._closing = True
        task = self._task
        if task is not None:
            # what is queued goes out first, for at most DRAIN_TIMEOUT (asyncio.wait only
            # watches the task: wait_for would cancel it, and on Python 3.11 could drop
            # the caller's own cancellation)
            await asyncio.wait({task}, timeout=DRAIN_TIMEOUT)
            await stop_task(task, "publisher", STOP_TIMEOUT)
        for queue in self._queues.values():
            for item in queue:
                if not item.done.done():
                    item.done.set_exception(BackendUnavailable("relay stopping"))
        self._queues.clear()
