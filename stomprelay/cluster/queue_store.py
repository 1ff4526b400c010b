"""Where ``/queue/{name}`` messages wait (docs/queues.md): the store's protocol and
its in-memory implementation (one node; ``redis_queues.py`` is the cluster's).

A queue is a Redis Stream with one consumer group for every relay; each relay
reads under its own consumer name (its server id), so an entry a relay read is
*pending* for that relay until it is acknowledged (``XACK``, then ``XDEL``) or
*requeued*: moved, in one step, to the end of the stream as a new entry that
remembers how often it was delivered (``n``) and whom to avoid (``x``, the
consumer that refused it), or to the dead-letter queue ``{name}.dlq`` once
``n`` reached the queue's most deliveries. The in-memory store keeps the same
entries and the same rules in dicts.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from stomprelay.cluster.envelope import Envelope
from stomprelay.errors import BackendUnavailable

#: The one consumer group of every queue stream.
GROUP = "g"
#: Suffix of a dead-letter queue's name.
DLQ_SUFFIX = ".dlq"


def dead_letter_queue(name: str) -> str:
    """Where ``name``'s messages go after too many deliveries: ``{name}.dlq``."""
    return name + DLQ_SUFFIX


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One entry a relay read: its stream id, the message, how many times it was
    delivered before, and the consumer to avoid ("" for none)."""

    id: str
    envelope: Envelope
    deliveries: int = 0
    excluded: str = ""


@dataclass(frozen=True, slots=True)
class Requeue:
    """Put a read entry back: ``deliveries`` is what the new entry records (one more
    than before when it was delivered); ``excluded`` the consumer to avoid."""

    id: str
    deliveries: int
    excluded: str = ""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """``GET /api/queues/{name}``: messages waiting for a consumer, subscriptions
    consuming, messages delivered and not yet acknowledged, messages in the DLQ."""

    name: str
    length: int
    consumers: int
    pending: int
    dead_letters: int

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "length": self.length,
            "consumers": self.consumers,
            "pending": self.pending,
            "deadLetters": self.dead_letters,
        }


class QueueStore(Protocol):
    """The steps of queues, each atomic on one queue (and its DLQ)."""

    async def push(self, name: str, envelope: Envelope, max_length: int) -> bool:
        """Append a message; False (nothing stored) when the queue holds ``max_length``."""
        ...

    async def push_many(
        self, items: Sequence[tuple[str, Envelope]], max_length: int
    ) -> list[bool | BackendUnavailable]:
        """:meth:`push` for each ``(queue, message)`` in order, in one round trip; an
        item Redis failed is its error (the batch as a whole may raise too)."""
        ...

    async def read(self, name: str, consumer: str, count: int, block_ms: int) -> list[QueueItem]:
        """Up to ``count`` entries no consumer had, now pending for ``consumer``;
        waits up to ``block_ms`` for the first one."""
        ...

    async def ack(self, name: str, ids: Sequence[str]) -> None:
        """Done with these entries (entries no longer pending are left alone)."""
        ...

    async def requeue(self, name: str, items: Sequence[Requeue], max_deliveries: int) -> int:
        """Move pending entries to the end of the queue, or to its DLQ when their
        deliveries reached ``max_deliveries``; returns how many went to the DLQ."""
        ...

    async def release(self, name: str, consumer: str, max_deliveries: int) -> int:
        """Requeue every entry pending for ``consumer`` (a relay that died or stopped),
        each counted as delivered once more; forget the consumer. Returns how many."""
        ...

    async def consumers(self, name: str, consumer: str, delta: int) -> None:
        """``consumer`` (a relay) has ``delta`` more (or fewer) subscriptions on ``name``."""
        ...

    async def forget(self, name: str, consumer: str) -> None:
        """``consumer`` has no subscription on ``name`` any more."""
        ...

    async def consumer_counts(self, name: str) -> dict[str, int]:
        """Subscriptions on ``name`` by consumer (relay)."""
        ...

    async def consumer_names(self, name: str) -> list[str]:
        """The consumers (relays) the queue's group knows: those with entries pending."""
        ...

    async def consumer_info(self, name: str) -> list[tuple[str, int, int]]:
        """Each consumer the group knows: (name, entries pending, ms since it last read)."""
        ...

    async def names(self) -> list[str]: ...

    async def stats(self, name: str) -> QueueStats | None:
        """None for a queue nobody ever used."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _MemoryQueue:
    waiting: OrderedDict[str, QueueItem] = field(default_factory=OrderedDict)
    #: entry id -> (the consumer that read it, the item)
    pending: dict[str, tuple[str, QueueItem]] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryQueues:
    """:class:`QueueStore` in one process (``stomprelay serve`` without Redis)."""

    def __init__(self) -> None:
        self._queues: dict[str, _MemoryQueue] = {}
        self._counter = 0

    def _queue(self, name: str) -> _MemoryQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _MemoryQueue()
        return queue

    def _add(self, name: str, envelope: Envelope, deliveries: int, excluded: str) -> None:
        self._counter += 1
        item_id = f"{self._counter}-0"
        queue = self._queue(name)
        queue.waiting[item_id] = QueueItem(item_id, envelope, deliveries, excluded)
        queue.arrived.set()

    async def push(self, name: str, envelope: Envelope, max_length: int) -> bool:
        queue = self._queue(name)
        if max_length and len(queue.waiting) + len(queue.pending) >= max_length:
            return False
        self._add(name, envelope, 0, "")
        return True

    async def push_many(
        self, items: Sequence[tuple[str, Envelope]], max_length: int
    ) -> list[bool | BackendUnavailable]:
        return [await self.push(name, envelope, max_length) for name, envelope in items]

    async def read(self, name: str, consumer: str, count: int, block_ms: int) -> list[QueueItem]:
        queue = self._queue(name)
        if not queue.waiting and block_ms > 0:
            queue.arrived.clear()
            try:
                await asyncio.wait_for(queue.arrived.wait(), block_ms / 1000)
            except TimeoutError:
                return []
        out: list[QueueItem] = []
        while queue.waiting and len(out) < count:
            _, item = queue.waiting.popitem(last=False)
            queue.pending[item.id] = (consumer, item)
            out.append(item)
        return out

    async def ack(self, name: str, ids: Sequence[str]) -> None:
        queue = self._queue(name)
        for item_id in ids:
            queue.pending.pop(item_id, None)

    async def requeue(self, name: str, items: Sequence[Requeue], max_deliveries: int) -> int:
        queue = self._queue(name)
        dead = 0
        for requeue in items:
            held = queue.pending.pop(requeue.id, None)
            if held is None:
                continue
            envelope = held[1].envelope
            if requeue.deliveries >= max_deliveries:
                self._add(dead_letter_queue(name), envelope, 0, "")
                dead += 1
            else:
                self._add(name, envelope, requeue.deliveries, requeue.excluded)
        return dead

    async def release(self, name: str, consumer: str, max_deliveries: int) -> int:
        queue = self._queue(name)
        mine = [
            Requeue(item.id, item.deliveries + 1)
            for owner, item in list(queue.pending.values())
            if owner == consumer
        ]
        await self.requeue(name, mine, max_deliveries)
        queue.consumers.pop(consumer, None)
        return len(mine)

    async def consumers(self, name: str, consumer: str, delta: int) -> None:
        counts = self._queue(name).consumers
        count = counts.get(consumer, 0) + delta
        if count > 0:
            counts[consumer] = count
        else:
            counts.pop(consumer, None)

    async def forget(self, name: str, consumer: str) -> None:
        self._queue(name).consumers.pop(consumer, None)

    async def consumer_counts(self, name: str) -> dict[str, int]:
        return dict(self._queue(name).consumers)

    async def consumer_names(self, name: str) -> list[str]:
        queue = self._queue(name)
        return sorted({owner for owner, _ in queue.pending.values()} | set(queue.consumers))

    async def consumer_info(self, name: str) -> list[tuple[str, int, int]]:
        # one process: every consumer is this one's, reading now
        pending = Counter(owner for owner, _ in self._queue(name).pending.values())
        return [(who, pending[who], 0) for who in await self.consumer_names(name)]

    async def names(self) -> list[str]:
        return sorted(self._queues)

    async def stats(self, name: str) -> QueueStats | None:
        queue = self._queues.get(name)
        if queue is None:
            return None
        dlq = self._queues.get(dead_letter_queue(name))
        dead = len(dlq.waiting) + len(dlq.pending) if dlq is not None else 0
        return QueueStats(
            name, len(queue.waiting), sum(queue.consumers.values()), len(queue.pending), dead
        )

    async def close(self) -> None:
        return None
