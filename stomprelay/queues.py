"""``/queue/{name}``: competing consumers across relays (docs/queues.md).

A SEND to a queue is stored (:meth:`QueueStore.push`) before its RECEIPT; the
queue holds at most ``--queue-max-length`` messages, and a SEND past that is an
ERROR. Each relay with subscribers of a queue runs one reader for it, which
takes entries from the queue's consumer group as its subscribers have room
(``prefetch-count`` unacknowledged messages each in the client modes) and hands
each entry to one of them, in turns. What happens next is the subscription's ack
mode (STOMP 1.2 "SUBSCRIBE", "ACK", "NACK"):

- ``auto``: acknowledged as it is written (at most once);
- ``client``: an ACK or NACK settles that message and every earlier one the
  subscription has (cumulative); ``client-individual``: that message alone.

A NACK, or the end of the subscription (UNSUBSCRIBE, the session closed, its relay
stopped or reaped) before the ACK, redelivers the message, marked
``redelivered:true``: to another subscriber of this relay with room if there is
one, else back into the queue, noting the consumer to avoid, so that another one
(on any relay) gets it first. After ``--queue-max-deliveries`` deliveries it goes
to ``/queue/{name}.dlq`` instead.

The component is handed the store, the settings, this relay's consumer name, the
metrics and ``spawn`` (the relay keeps its background tasks); the relay calls
:meth:`subscribe`, :meth:`unsubscribe`, :meth:`drop`, :meth:`settle`,
:meth:`reaped` and :meth:`close`; the sender hands it SENDs (:meth:`submit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.queue_store import QueueItem, QueueStore, Requeue
from stomprelay.destinations import queue_destination
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.metrics import Metrics
from stomprelay.router import Sink
from stomprelay.settings import Settings
from stomprelay.stomp.frames import PreparedMessage
from stomprelay.stomp.session import Acknowledged, State, Subscription

log = logging.getLogger(__name__)

#: Milliseconds one read waits for a message (the reader then looks at its room again).
BLOCK_MS = 1000
#: Most entries one read takes.
READ_MOST = 256
#: Most SENDs stored in one round trip.
PUSH_BATCH = 256
#: Messages an ``ack:auto`` subscriber is handed per read while its socket takes them.
AUTO_WINDOW = 64
#: Seconds a reader with no room waits before it looks again (a socket that drained).
IDLE_POLL = 0.05
#: Seconds before a step Redis failed is tried again.
RETRY = 0.5
#: Times a relay puts back an entry that must avoid its only subscriber, a pause
#: apart, before it gives the entry to that subscriber after all.
MAX_BOUNCES = 3
#: The header that bounds a client-ack subscription's unacknowledged messages.
PREFETCH_HEADER = "prefetch-count"
#: The header a redelivered MESSAGE carries.
REDELIVERED = ("redelivered", "true")


def prefetch_of(subscription: Subscription, default: int, most: int) -> int:
    """A SUBSCRIBE's ``prefetch-count`` (RabbitMQ's header), within ``most``; 0 or
    none: ``default``. PolicyError for a value that is no count."""
    for name, value in subscription.headers:
        if name == PREFETCH_HEADER:
            if not value.isascii() or not value.isdigit() or len(value) > 9:
                raise PolicyError(
                    "Invalid prefetch-count", "prefetch-count must be a non-negative integer."
                )
            return min(int(value) or default, most)
    return min(default, most)


@dataclass(slots=True, eq=False)
class _Consumer:
    """One subscription to a queue on this relay."""

    key: str
    sink: Sink
    sub_id: str
    auto: bool
    prefetch: int
    #: What the client's ACK names (ack id or message-id) -> the entry delivered.
    held: dict[str, QueueItem] = field(default_factory=dict)
    #: Counted in the queue's consumers hash (the count is taken back at the end).
    counted: bool = False
    #: Body bytes handed since the socket last took its writes, and the most of them
    #: (half of ``send_queue_bytes``): a prefetch of large messages goes out over
    #: several loop turns, never into one write that makes a slow consumer.
    given: int = 0
    budget: int = 0

    def room(self) -> int:
        session = self.sink.session
        # an UNSUBSCRIBE or DISCONNECT the relay has not acted on yet: no room
        if session.state is not State.OPEN or self.sub_id not in session.subscriptions:
            return 0
        if self.sink.write_paused or self.given >= self.budget:
            return 0
        if self.auto:
            return AUTO_WINDOW
        return self.prefetch - len(self.held)

    def handed(self, size: int) -> None:
        """``size`` bytes were handed: counted until the next loop turn, after this
        turn's writes (``room`` then says no while the socket is paused, and the
        count starts again once it takes writes)."""
        if not self.given:
            asyncio.get_running_loop().call_soon(self._written)
        self.given += size

    def _written(self) -> None:
        self.given = 0


@dataclass(slots=True, eq=False)
class _Queue:
    """A queue this relay has subscribers of: its reader, and entries read, not yet handed."""

    name: str
    consumers: dict[str, _Consumer] = field(default_factory=dict)
    buffer: deque[QueueItem] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    acks: list[str] = field(default_factory=list)
    flushing: asyncio.Task[None] | None = None
    turn: int = 0
    #: The reader pauses before its next read (it put an entry back for another relay).
    backoff: bool = False


class Queues:
    """This relay's side of ``/queue/`` destinations (see the module docstring)."""

    def __init__(
        self,
        store: QueueStore,
        settings: Settings,
        consumer: str,
        metrics: Metrics,
        spawn: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self.store = store
        self.settings = settings
        #: This relay's consumer name in every queue's group: ``<server id>/<token>``.
        self.consumer = consumer
        self.server_id = consumer.rpartition("/")[0] or consumer
        self.metrics = metrics
        self._spawn = spawn
        self._queues: dict[str, _Queue] = {}
        #: (session id, subscription id) -> (queue name, consumer)
        self._subs: dict[tuple[str, str], tuple[str, _Consumer]] = {}
        self._by_session: dict[str, set[str]] = {}
        #: Every queue this relay consumed from: its group holds a consumer of this relay.
        self._consumed: set[str] = set()
        #: message id -> times this relay put it back for another relay's subscriber
        self._bounces: dict[str, int] = {}
        self._closing = False
        #: SENDs waiting for the next batch, and the task that stores them.
        self._pushes: list[tuple[str, Envelope, asyncio.Future[None]]] = []
        self._pushing: asyncio.Task[None] | None = None
        #: session id -> queues it acknowledged messages of since its last RECEIPT
        self._acked: dict[str, set[str]] = {}

    # -- sending ----------------------------------------------------------------

    def submit(self, name: str, envelope: Envelope) -> asyncio.Future[None]:
        """Store one message; the future completes once it is stored (its RECEIPT may go
        then) or fails with PolicyError when the queue is full or Redis did not take
        it: never a silent drop. SENDs of every session go in batches of one round
        trip, in the order they came."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pushes.append((name, envelope, done))
        if self._pushing is None:
            self._pushing = asyncio.get_running_loop().create_task(self._push())
            self._spawn(self._pushing)
        return done

    async def _push(self) -> None:
        try:
            while self._pushes:
                batch = self._pushes[:PUSH_BATCH]
                del self._pushes[:PUSH_BATCH]
                items = [(name, envelope) for name, envelope, _ in batch]
                results: list[bool | BackendUnavailable]
                try:
                    results = await self.store.push_many(items, self.settings.queue_max_length)
                except BackendUnavailable as exc:
                    results = [exc] * len(batch)
                for (name, _, done), stored in zip(batch, results, strict=True):
                    if not done.done():
                        self._pushed(name, done, stored)
        finally:
            self._pushing = None

    def _pushed(self, name: str, done: asyncio.Future[None], stored: bool | Exception) -> None:
        if stored is True:
            self.metrics.queue_messages.labels("sent").inc()
            done.set_result(None)
        elif isinstance(stored, Exception):
            done.set_exception(
                PolicyError(
                    "Queue unavailable",
                    f"The message was not stored: Redis is unreachable ({stored}). "
                    "Send it again later.",
                )
            )
        else:
            self.metrics.queue_messages.labels("refused").inc()
            done.set_exception(
                PolicyError(
                    "Queue full",
                    f"/queue/{name} holds {self.settings.queue_max_length} messages "
                    "(--queue-max-length); the message was not stored.",
                )
            )

    # -- subscriptions --------------------------------------------------------------

    async def subscribe(self, sink: Sink, subscription: Subscription, name: str) -> None:
        settings = self.settings
        prefetch = prefetch_of(subscription, settings.queue_prefetch, settings.max_pending_acks)
        session_id = sink.session.session_id
        consumer = _Consumer(
            f"{session_id}/{subscription.id}",
            sink,
            subscription.id,
            subscription.ack == "auto",
            prefetch,
            budget=max(settings.send_queue_bytes // 2, 1),
        )
        queue = self._queues.get(name)
        first = queue is None
        if queue is None:
            queue = self._queues[name] = _Queue(name)
        queue.consumers[consumer.key] = consumer
        self._consumed.add(name)
        self._subs[(session_id, subscription.id)] = (name, consumer)
        self._by_session.setdefault(session_id, set()).add(subscription.id)
        self.metrics.queue_consumers.inc()
        try:
            if first:
                await self._adopt(name)
            await self.store.consumers(name, self.consumer, 1)
        except BackendUnavailable as exc:
            await self._remove(session_id, subscription.id)
            raise PolicyError(
                "Queue unavailable", f"Redis is unreachable ({exc}); subscribe again later."
            ) from None
        consumer.counted = True
        if (session_id, subscription.id) not in self._subs:
            # the session ended meanwhile: _remove could not take the count back
            with contextlib.suppress(BackendUnavailable):
                await self.store.consumers(name, self.consumer, -1)
            return
        if queue.reader is None and not self._closing:
            queue.reader = asyncio.get_running_loop().create_task(
                self._run(queue), name=f"queue-reader-{name}"
            )
            self._spawn(queue.reader)
        queue.wake.set()

    async def _adopt(self, name: str) -> None:
        """Entries an earlier process under this relay's server id left pending (it
        was killed and this one started before a sweeper reaped it) are requeued."""
        for other in await self.store.consumer_names(name):
            if other != self.consumer and other.rpartition("/")[0] == self.server_id:
                moved = await self.store.release(name, other, self.settings.queue_max_deliveries)
                if moved:
                    log.info("queue %s: requeued %d entries of %s", name, moved, other)

    async def unsubscribe(self, session_id: str, sub_id: str) -> None:
        await self._remove(session_id, sub_id)

    async def drop(self, session_id: str) -> None:
        """A session ended: its subscriptions' unacknowledged messages are redelivered."""
        self._acked.pop(session_id, None)
        for sub_id in list(self._by_session.get(session_id, ())):
            await self._remove(session_id, sub_id)

    def subscribed(self, session_id: str, sub_id: str) -> bool:
        return (session_id, sub_id) in self._subs

    async def _remove(self, session_id: str, sub_id: str) -> None:
        found = self._subs.pop((session_id, sub_id), None)
        subs = self._by_session.get(session_id)
        if subs is not None:
            subs.discard(sub_id)
            if not subs:
                del self._by_session[session_id]
        if found is None:
            return
        name, consumer = found
        self.metrics.queue_consumers.dec()
        queue = self._queues.get(name)
        if queue is None:
            return
        queue.consumers.pop(consumer.key, None)
        held = list(consumer.held.values())
        consumer.held.clear()
        await self._redeliver(queue, held, consumer.key)
        if consumer.counted:
            with contextlib.suppress(BackendUnavailable):
                await self.store.consumers(name, self.consumer, -1)
        queue.wake.set()

    # -- acknowledgements -----------------------------------------------------------

    async def settle(self, session_id: str, event: Acknowledged) -> None:
        """An ACK (acknowledge) or NACK (redeliver) of delivered messages."""
        found = self._subs.get((session_id, event.subscription_id))
        if found is None:
            return
        name, consumer = found
        queue = self._queues[name]
        items = [item for key in event.keys if (item := consumer.held.pop(key, None)) is not None]
        if event.nack:
            await self._redeliver(queue, items, consumer.key)
        elif items:
            self.metrics.queue_messages.labels("acked").inc(len(items))
            self._ack(queue, [item.id for item in items])
            self._acked.setdefault(session_id, set()).add(name)
        self._dispatch(queue)
        queue.wake.set()

    async def acknowledged(self, session_id: str) -> None:
        """Before a RECEIPT: the session's ACKs are stored (their batch flushed), so
        that the RECEIPT of an ACK, or of the COMMIT holding it, means it is done.
        A session that asks for no receipt keeps the batching."""
        for name in self._acked.pop(session_id, ()):
            queue = self._queues.get(name)
            if queue is not None and queue.flushing is not None:
                await asyncio.shield(queue.flushing)

    def _ack(self, queue: _Queue, ids: Iterable[str]) -> None:
        """XACK in batches: one step per queue and loop turn, not one per message."""
        queue.acks.extend(ids)
        if queue.flushing is None:
            queue.flushing = asyncio.get_running_loop().create_task(self._flush(queue))
            self._spawn(queue.flushing)

    async def _flush(self, queue: _Queue) -> None:
        try:
            while queue.acks:
                ids, queue.acks = queue.acks, []
                try:
                    await self.store.ack(queue.name, ids)
                except BackendUnavailable as exc:
                    log.warning("queue %s: acknowledgements wait for Redis: %s", queue.name, exc)
                    queue.acks[:0] = ids
                    await asyncio.sleep(RETRY)
        finally:
            queue.flushing = None

    async def _redeliver(self, queue: _Queue, items: list[QueueItem], avoid: str) -> None:
        """Delivered messages that were not acknowledged: to another local subscriber
        with room, else back into the queue (or to its DLQ after too many deliveries)."""
        if not items:
            return
        most = self.settings.queue_max_deliveries
        self.metrics.queue_messages.labels("requeued").inc(len(items))
        back: list[Requeue] = []
        elsewhere: bool | None = None
        for item in items:
            again = QueueItem(item.id, item.envelope, item.deliveries + 1, avoid)
            if again.deliveries >= most:
                back.append(Requeue(item.id, again.deliveries))
                continue
            target = self._pick(queue, avoid, strict=True)
            if target is not None and self._deliver(queue, target, again):
                continue
            if elsewhere is None:
                # another subscriber here, full now, or one on another relay
                here = any(key != avoid for key in queue.consumers)
                elsewhere = here or await self._elsewhere(queue.name)
            if not elsewhere:
                # no other subscriber anywhere: back to the one that refused it, if it is here
                target = queue.consumers.get(avoid)
                if target is not None and target.room() > 0 and self._deliver(queue, target, again):
                    continue
            back.append(Requeue(item.id, again.deliveries, avoid if elsewhere else ""))
        await self._requeue(queue.name, back)

    async def _elsewhere(self, name: str) -> bool:
        """Whether another relay has subscribers of the queue."""
        try:
            counts = await self.store.consumer_counts(name)
        except BackendUnavailable:
            return False
        return any(count > 0 for who, count in counts.items() if who != self.consumer)

    async def _requeue(self, name: str, back: list[Requeue]) -> None:
        if not back:
            return
        for attempt in range(3):
            try:
                dead = await self.store.requeue(name, back, self.settings.queue_max_deliveries)
            except BackendUnavailable as exc:
                # left pending for this relay: a stop or a reap releases it later
                log.warning("queue %s: requeue failed (attempt %d): %s", name, attempt + 1, exc)
                await asyncio.sleep(RETRY)
                continue
            if dead:
                self.metrics.queue_messages.labels("dead_lettered").inc(dead)
            return

    # -- delivery ---------------------------------------------------------------------

    def _pick(self, queue: _Queue, avoid: str, strict: bool = False) -> _Consumer | None:
        """The next subscriber with room, in turns, other than ``avoid`` where one
        with room is there (``strict``: never ``avoid``). ``avoid`` alone with room:
        ``avoid`` (the caller puts the entry back for a while first), so that an
        entry whose other subscribers here are full does not stop the queue."""
        consumers = list(queue.consumers.values())
        count = len(consumers)
        fallback: _Consumer | None = None
        for i in range(count):
            consumer = consumers[(queue.turn + i) % count]
            if consumer.room() <= 0:
                continue
            if consumer.key == avoid:
                fallback = consumer
                continue
            queue.turn = (queue.turn + i + 1) % count
            return consumer
        return None if strict else fallback

    def _deliver(self, queue: _Queue, consumer: _Consumer, item: QueueItem) -> bool:
        envelope = item.envelope
        headers = envelope.headers
        if item.deliveries:
            headers = (*headers, REDELIVERED)
        message = PreparedMessage(
            queue_destination(queue.name), envelope.id, headers, envelope.body
        )
        key = consumer.sink.session.deliver_acked(message, consumer.sub_id, time.monotonic())
        consumer.sink.flush()
        if key is None:
            return False
        consumer.handed(len(envelope.body))
        self.metrics.queue_messages.labels("delivered").inc()
        self.metrics.delivered.inc()
        if consumer.auto:
            self._ack(queue, (item.id,))
        else:
            consumer.held[key] = item
        return True

    def _dispatch(self, queue: _Queue) -> None:
        """Hand the entries read to subscribers with room, oldest first. An entry that
        must avoid the only subscriber here goes back, a pause apart, up to
        :data:`MAX_BOUNCES` times, so that another relay's subscriber gets it first."""
        bounce: list[Requeue] = []
        buffer = queue.buffer
        while buffer:
            item = buffer[0]
            consumer = self._pick(queue, item.excluded)
            if consumer is None:
                break
            message_id = item.envelope.id
            if consumer.key == item.excluded:
                bounced = self._bounces.get(message_id, 0)
                if bounced < MAX_BOUNCES:
                    buffer.popleft()
                    if len(self._bounces) > 10_000:
                        self._bounces.clear()
                    self._bounces[message_id] = bounced + 1
                    bounce.append(Requeue(item.id, item.deliveries, item.excluded))
                    queue.backoff = True
                    continue
            buffer.popleft()
            if not self._deliver(queue, consumer, item):
                buffer.appendleft(item)
                break  # the reader looks again (room() says no for that one now)
            if self._bounces:
                self._bounces.pop(message_id, None)
        if bounce:
            self._background(self._requeue(queue.name, bounce))

    def _background(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._spawn(task)

    async def _run(self, queue: _Queue) -> None:
        """The reader of one queue: takes entries as the subscribers have room, until
        none is left (then what it holds unhanded goes back into the queue)."""
        while True:
            await self._read(queue)
            back = [Requeue(item.id, item.deliveries, item.excluded) for item in queue.buffer]
            queue.buffer.clear()
            await self._requeue(queue.name, back)
            if queue.consumers and not self._closing:
                continue
            queue.reader = None
            if not queue.consumers and self._queues.get(queue.name) is queue:
                del self._queues[queue.name]  # a flush under way ends on its own
            return

    async def _read(self, queue: _Queue) -> None:
        failing = False
        while queue.consumers and not self._closing:
            self._dispatch(queue)
            if queue.backoff:
                queue.backoff = False
                await asyncio.sleep(IDLE_POLL)
            room = sum(c.room() for c in queue.consumers.values())
            room = min(room, READ_MOST) - len(queue.buffer)
            if room <= 0:
                queue.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), IDLE_POLL)
                continue
            try:
                items = await self.store.read(queue.name, self.consumer, room, BLOCK_MS)
            except BackendUnavailable as exc:
                # once an outage, not every retry
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "queue %s: read failed: %s", queue.name, exc)
                failing = True
                await asyncio.sleep(RETRY)
                continue
            except Exception:
                # a reader must outlive what it cannot read; what it read stays pending
                # for this relay, released at its stop or reap
                log.exception("queue %s: read failed", queue.name)
                await asyncio.sleep(RETRY)
                continue
            if failing:
                log.warning("queue %s: reading again", queue.name)
                failing = False
            queue.buffer.extend(items)

    # -- relays ---------------------------------------------------------------------

    async def reaped(self, server_id: str) -> int:
        """A relay was reaped: what its consumers held goes back into the queues."""
        total = 0
        for name in await self.store.names():
            for other in await self.store.consumer_names(name):
                if other.rpartition("/")[0] == server_id:
                    total += await self.store.release(
                        name, other, self.settings.queue_max_deliveries
                    )
        if total:
            log.warning("requeued %d queue messages of reaped relay %s", total, server_id)
            self.metrics.queue_messages.labels("requeued").inc(total)
        return total

    def watch(
        self,
        alive: Callable[[], Awaitable[set[str]]],
        may_judge: Callable[[], bool],
        every: float,
        idle_ms: int,
    ) -> None:
        """Every ``every`` seconds, give back what consumers of relays that are gone
        hold: a relay whose reap did not run its queue step (it failed, or its
        sweeper died), or that left a group without a reap. Only consumers idle
        ``idle_ms`` whose relay is not alive (``alive``: the relay ids with a
        heartbeat) and only while this relay ``may_judge`` (no recent trouble with
        Redis): a live relay's consumer reads at least every second while it has
        room, and one that is full keeps its heartbeat."""

        async def loop() -> None:
            while not self._closing:
                await asyncio.sleep(every)
                if not may_judge():
                    continue
                try:
                    await self.sweep_orphans(await alive(), idle_ms)
                except BackendUnavailable as exc:
                    log.debug("queues: orphan sweep skipped: %s", exc)

        self._spawn(asyncio.get_running_loop().create_task(loop(), name="queue-orphans"))

    async def sweep_orphans(self, alive: set[str], idle_ms: int) -> int:
        """Requeue what idle consumers of relays not in ``alive`` hold, and what an
        earlier process under this relay's server id holds (it was killed and this
        one restarted before a reap: alive as the relay is, nothing else gives its
        entries back); how many."""
        total = 0
        for name in await self.store.names():
            for who, pending, idle in await self.store.consumer_info(name):
                server = who.rpartition("/")[0]
                earlier = server == self.server_id and who != self.consumer
                gone = idle >= idle_ms and bool(server) and server not in alive
                if pending and (earlier or gone):
                    moved = await self.store.release(name, who, self.settings.queue_max_deliveries)
                    log.warning("queue %s: requeued %d entries of gone relay %s", name, moved, who)
                    self.metrics.queue_messages.labels("requeued").inc(moved)
                    total += moved
        return total

    async def close(self) -> None:
        """After every session is gone: stop the readers, put back whatever this relay
        still holds, and leave every queue's group."""
        self._closing = True
        for queue in list(self._queues.values()):
            queue.wake.set()
        readers = [q.reader for q in self._queues.values() if q.reader is not None]
        if readers:
            await asyncio.wait(readers, timeout=BLOCK_MS / 1000 + 2)
        for queue in list(self._queues.values()):
            if queue.acks:
                ids, queue.acks = queue.acks, []
                with contextlib.suppress(BackendUnavailable):
                    await self.store.ack(queue.name, ids)
        # what this relay still holds goes back; its consumers leave the groups
        for name in sorted(self._consumed):
            with contextlib.suppress(BackendUnavailable):
                await self.store.release(name, self.consumer, self.settings.queue_max_deliveries)
                await self.store.forget(name, self.consumer)
        await self.store.close()
