"""Clients' SENDs on their way to the logs and the bus, in one place.

Words used here, and across the relay, with one meaning each:

- *publish*: put a message on the bus for every relay (``Bus.publish``,
  ``Router.publish``); nothing else is called publishing.
- *send*: a message for a destination, from a client's SEND or from the relay
  itself (:meth:`Sender.send_envelope`): a logged destination's message is
  *recorded*, any other published.
- *record*: append to the destination's log (which publishes it), or, with Redis
  down, *journal* it: keep it for after recovery and deliver it locally now.
- *submit*: hand a client's SEND to the :class:`Pipeline`.

The :class:`Pipeline` takes clients' SENDs to Redis without a round trip each.
Every client SEND becomes one item in one queue (a logged destination's an
append, any other a plain PUBLISH).
While a batch is with Redis, new items wait; the next batch is everything
that waited, sent as one pipeline (``Log.append_many``), so a client is no
longer held to one SEND per round trip, and items leave in the order they
came: per session, and across sessions. An item's future completes when Redis
acknowledged its append (its RECEIPT may go out then), or when it went to the
journal because Redis counts as down (delivered locally at once, appended
after recovery, by :meth:`Sender.journal`, as for room events). A full
journal fails the item with ``PolicyError``: an ERROR, never a RECEIPT.

The :class:`Sender` is the per-session side: what each session has in the
pipeline, waiting for it before the session's next non-SEND frame, and flow
control when a session has too much in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stomprelay.auth import REFRESH_DESTINATION
from stomprelay.bounded import STOP_TIMEOUT, stop_task
from stomprelay.clock import now_ms
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import Log, MemoryLog
from stomprelay.cluster.keys import Keys
from stomprelay.destinations import canonical, user_destination
from stomprelay.errors import BackendUnavailable, PeerError, PolicyError
from stomprelay.metrics import Metrics
from stomprelay.router import Route, Router, Sink, channels_for, parse_destination
from stomprelay.settings import Settings
from stomprelay.stomp.frames import Headers
from stomprelay.stomp.session import Event, MessageSent, ServerSession
from stomprelay.sync import NoLog, Outage

log = logging.getLogger(__name__)

#: Most appends in one pipeline, and most of one client's in it (on a single
#: node a batch is also one step of local fan-out: small steps keep other rooms' latency).
MAX_BATCH = 256
PER_CLIENT = 16
#: Seconds a stopping relay gives the appends already queued.
DRAIN_TIMEOUT = 2.0


@dataclass(slots=True)
class _Item:
    log_id: str
    channel: str
    envelope: Envelope
    done: asyncio.Future[None]


class Pipeline:
    """The relay-wide queue of clients' SENDs, sent to Redis in batches, in order.

    Handed the log (appends), the bus's ``publish_many`` (unlogged destinations), the
    degraded mode (its guard), ``journal`` for what Redis did not take, the metrics
    and a wall clock."""

    def __init__(
        self,
        log_: Log,
        publish_many: Callable[[Sequence[tuple[str, Envelope]]], Awaitable[None]],
        outage: Outage,
        journal: Callable[[str, str, Envelope], None],
        metrics: Metrics,
        now_ms: Callable[[], int],
    ) -> None:
        self._log = log_
        #: An in-memory log (one node) appends without waiting on anything.
        self._memory = log_ if isinstance(log_, MemoryLog) else None
        self._publish_many = publish_many
        self._outage = outage
        #: Keeps what Redis did not take and delivers it locally (Sender.journal).
        self._journal_one = journal
        self._metrics = metrics
        self._now_ms = now_ms
        #: Per client (session id), its items in order; clients take turns.
        self._queues: dict[str, deque[_Item]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def __len__(self) -> int:
        return sum(map(len, self._queues.values()))

    def submit(
        self, log_id: str, channel: str, envelope: Envelope, client: str = ""
    ) -> asyncio.Future[None]:
        """Queue one SEND (``log_id`` empty: an unlogged destination) for the client
        ``client``; the future completes once Redis took it or it was journaled."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._closing:
            done.set_exception(BackendUnavailable("relay stopping"))
            return done
        queue = self._queues.get(client)
        memory = self._memory
        if queue is None and memory is not None and log_id and not self._outage.down:
            # One node: a SEND of a client with nothing queued is appended now, in the
            # read that brought it, not a turn later behind a flooding client's batch
            # (the client's earlier SENDs are all appended: its order holds).
            memory.append_now(log_id, channel, envelope, self._now_ms(), at_once=True)
            self._metrics.published.inc()
            self._metrics.appends.inc()
            done.set_result(None)
            return done
        if queue is None:
            queue = self._queues[client] = deque()
        queue.append(_Item(log_id, channel, envelope, done))
        if self._task is None:
            self._task = loop.create_task(self._run(), name="publish-pipeline")
        return done

    def _take(self) -> tuple[bool, list[_Item]]:
        """The next batch: clients take turns, one item each per round, so one
        that floods does not hold up the others; one kind (logged or not) per
        batch, and each client's items in its order."""
        queues = self._queues
        logged = bool(next(iter(queues.values()))[0].log_id)
        batch: list[_Item] = []
        served: list[str] = []
        for _ in range(PER_CLIENT):
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
                await (self._append(batch) if logged else self._publish(batch))
                await asyncio.sleep(0)  # clients' frames get handled between batches
        finally:
            self._task = None
            if self._queues and not self._closing:
                self._task = asyncio.get_running_loop().create_task(self._run())

    async def _append(self, batch: list[_Item]) -> None:
        outage = self._outage
        self._metrics.publish_batches.inc()
        items = [(i.log_id, i.channel, i.envelope) for i in batch]
        try:
            results: list[Envelope | BackendUnavailable] = await outage.guard(
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


def channel_of(route: Route, keys: Keys) -> str:
    """The channel a message for ``route`` is published on; a destination that is
    only subscribed to (``/user/queue/{name}``) has none: PolicyError."""
    channels = channels_for(route, keys)
    if not channels:
        raise PolicyError("Unknown destination", "This destination is subscribed to, not sent to.")
    return channels[0]


def sent_to(events: list[Event]) -> set[str]:
    """Destinations the events send to, but the application's (the transport holds a
    client back while a local subscriber of one cannot take more)."""
    return {
        e.destination
        for e in events
        if isinstance(e, MessageSent) and not e.destination.startswith("/app/")
    }


def _no_queues(name: str, envelope: Envelope) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_exception(PolicyError("Unknown destination", "This relay serves no queues."))
    return done


class _Inflight:
    """A session's SENDs in the pipeline: how many, and the last one."""

    __slots__ = ("count", "last", "queued")

    def __init__(self, last: asyncio.Future[Any]) -> None:
        self.count = 0
        self.last = last
        #: Whether ``last`` is a queue's store (a batch of its own, not the pipeline's).
        self.queued = False


class Sender:
    """Messages on their way to a destination: clients' SENDs through the pipeline,
    the relay's own (room messages, operators' notifications) recorded or published.

    Per session it counts the SENDs in the pipeline, so that the session's next
    other frame waits for them (everything a session does happens in the order it
    asked) and a session too far ahead is paused. Handed the settings, the router
    (envelopes, local delivery, publishing), the log, the degraded mode, the bus's
    ``publish_many``, the metrics, ``sender`` (the headers stamped on a
    session's SENDs) and ``user_of`` (who a session is: a message it sends to
    another user is also kept in its own inbox, docs/contract.md section 9).
    """

    def __init__(
        self,
        settings: Settings,
        keys: Keys,
        router: Router,
        log_: Log | None,
        outage: Outage,
        publish_many: Callable[[Sequence[tuple[str, Envelope]]], Awaitable[None]],
        metrics: Metrics,
        sender: Callable[[str], Headers],
        user_of: Callable[[str], str] = lambda _: "",
        queue_submit: Callable[[str, Envelope], asyncio.Future[None]] | None = None,
    ) -> None:
        self.settings = settings
        #: Stores a SEND to ``/queue/{name}`` (:meth:`stomprelay.queues.Queues.submit`).
        self._queue_submit = queue_submit or _no_queues
        self._user_of = user_of
        self.keys = keys
        self.router = router
        self.log = log_
        self.outage = outage
        self.metrics = metrics
        self._sender = sender
        #: The pipeline of clients' SENDs to Redis.
        self.pipeline = Pipeline(
            log_ if log_ is not None else NoLog(),
            publish_many,
            outage,
            self.journal,
            metrics,
            now_ms,
        )
        #: session id -> its SENDs still in the pipeline
        self._inflight: dict[str, _Inflight] = {}

    def takes(self, destination: str) -> bool:
        """Whether :meth:`submit` puts a SEND to ``destination`` into the pipeline
        (a topic or room; not the refresh, the application's or a refused one)."""
        if destination == REFRESH_DESTINATION:
            return False
        try:
            return parse_destination(destination).kind not in ("app", "system")
        except PeerError:
            return False

    def unpaused(self, session_id: str, more: int) -> bool:
        """Whether the session stays under ``publish_pause`` with ``more`` SENDs in
        the pipeline (:meth:`throttle` would then return at once)."""
        state = self._inflight.get(session_id)
        return (state.count if state is not None else 0) + more < self.settings.publish_pause

    def submit(self, sink: Sink, event: MessageSent) -> bool:
        """Put a SEND to a topic or room into the pipeline (logged or not); False
        for the application's destinations, which run their own scripts."""
        if event.destination == REFRESH_DESTINATION:
            return False
        route = parse_destination(event.destination)
        if route.kind in ("app", "system"):
            return False
        frame = event.frame
        session = sink.session
        sender = self._sender(session.session_id)
        envelope = self.router.envelope(
            canonical(route, event.destination), frame.headers, frame.body, sender
        )
        if route.kind == "queue":
            self._track(sink, event, self._queue_submit(route.name, envelope), queued=True)
            return True
        self._submit(sink, event, route, envelope)
        if route.kind == "user":
            author = self._user_of(session.session_id)
            if author and author != route.name:
                # the sender's other sessions, and its reload, show both sides
                copy = Route("user", author, route.action)
                envelope = self.router.envelope(
                    user_destination(author, route.action),
                    frame.headers,
                    frame.body,
                    (*sender, ("x-recipient", route.name)),
                )
                self._submit(sink, event, copy, envelope)
        return True

    def _submit(self, sink: Sink, event: MessageSent, route: Route, envelope: Envelope) -> None:
        session = sink.session
        log_id = self.router.logged(route)
        done = self.pipeline.submit(
            log_id, channel_of(route, self.keys), envelope, session.session_id
        )
        self._track(sink, event, done)

    def _track(
        self, sink: Sink, event: MessageSent, done: asyncio.Future[None], queued: bool = False
    ) -> None:
        """Count a SEND in flight until ``done``; a refusal then is the session's ERROR.
        Queue stores and the pipeline complete in order each, not with each other: where
        a session goes from one to the other, what it waits for is both."""
        session = sink.session
        state = self._inflight.get(session.session_id)
        last: asyncio.Future[Any] = done
        if state is None:
            state = self._inflight[session.session_id] = _Inflight(done)
        elif state.queued != queued and not state.last.done():
            last = asyncio.gather(state.last, done, return_exceptions=True)
        state.count += 1
        state.last = last
        state.queued = queued
        done.add_done_callback(lambda f: self._taken(session, sink, event.receipt, f))

    def _taken(
        self,
        session: ServerSession,
        sink: Sink,
        receipt: str | None,
        done: asyncio.Future[None],
    ) -> None:
        state = self._inflight.get(session.session_id)
        if state is not None:
            state.count -= 1
            if state.count <= 0 and state.last is done:
                del self._inflight[session.session_id]
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, PeerError):
            self.metrics.errors.labels(exc.message).inc()
            session.fail(exc, receipt)
            sink.flush()

    def forget(self, session_id: str) -> None:
        self._inflight.pop(session_id, None)

    async def settle(self, session: ServerSession, limit: float | None = None) -> None:
        """Wait until the session's SENDs in the pipeline are acknowledged (or journaled)."""
        state = self._inflight.get(session.session_id)
        if state is None or state.last.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(state.last), limit)
        except TimeoutError:
            raise PolicyError(
                "Publish backlog",
                f"{state.count} messages of this session waited more than {limit:g} s for Redis.",
            ) from None
        except (PeerError, BackendUnavailable):
            pass  # reported to the session by _taken

    async def throttle(self, session: ServerSession) -> None:
        """Flow control: past ``publish_pause`` SENDs in the pipeline, the session
        waits (its socket is read no further meanwhile); past ``publish_timeout``
        of waiting it gets ERROR ``Publish backlog``."""
        state = self._inflight.get(session.session_id)
        if state is None or state.count < self.settings.publish_pause:
            return
        try:
            await self.settle(session, self.settings.publish_timeout)
        except PeerError as exc:
            self.metrics.errors.labels(exc.message).inc()
            session.fail(exc)

    async def send(
        self,
        route: Route,
        destination: str,
        headers: Headers,
        body: bytes,
        sender: Headers = (),
    ) -> None:
        """A message for ``destination`` outside the pipeline: its envelope made, then
        :meth:`send_envelope`."""
        channel = channel_of(route, self.keys)
        envelope = self.router.envelope(canonical(route, destination), headers, body, sender)
        await self.send_envelope(route, channel, envelope)

    async def send_envelope(self, route: Route, channel: str, envelope: Envelope) -> None:
        """Record ``envelope`` in the destination's log (which publishes it), or publish
        it as it is where the destination is not logged."""
        log_id = self.router.logged(route)
        log_ = self.log
        if not log_id or log_ is None:
            await self.router.publish(channel, envelope)
            self.metrics.published.inc()
            return
        await self.record(
            log_id, channel, envelope, lambda: log_.append(log_id, channel, envelope, now_ms())
        )

    async def record(
        self,
        log_id: str,
        channel: str,
        envelope: Envelope,
        append: Callable[[], Awaitable[object]],
    ) -> None:
        """Run ``append`` (it appends ``envelope`` to ``log_id``); with Redis down,
        journal the envelope and deliver it locally now. A timed-out append that
        did run has the same id, so the journal's append later adds nothing. A
        full journal raises PolicyError (an ERROR, never a RECEIPT)."""
        try:
            await self.outage.guard(append)
        except BackendUnavailable:
            self.journal(log_id, channel, envelope)
        else:
            self.metrics.appends.inc()
        self.metrics.published.inc()

    def journal(self, log_id: str, channel: str, envelope: Envelope) -> None:
        """Redis did not take ``envelope``: keep it for after recovery and deliver
        it locally now (a full journal raises PolicyError)."""
        self.outage.keep(log_id, channel, envelope)
        self.metrics.journaled.inc()
        self.router.deliver_early(channel, envelope)

    async def close(self) -> None:
        await self.pipeline.close()
