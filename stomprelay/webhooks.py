"""Delivering the webhook events: leases, batches, signed POSTs, retries, dead letters.

The registry's steps append events to ``--webhook-partitions`` streams
(:mod:`stomprelay.webhook_events`); this module sends them to ``--webhook-url``
(docs/webhooks.md, contract section 11):

* **One relay per partition.** A relay delivers a partition while it holds the
  partition's lease (``SET stomp:webhooks:{w<p>}:lease <server id>:<token> NX PX
  <lease>``, the lease being :data:`LEASE_SHARE` of ``--liveness-ttl``), renewed
  every quarter of it. The partitions are
  spread by rendezvous hashing of (relay, partition) over the relays that deliver
  (each renews its entry in ``stomp:webhooks:{meta}:members``); a
  relay takes a partition that is not its own only once it has seen it free for
  a whole renewal period (its holder died, or nobody's it is), and hands back
  one that is another live relay's between two batches. A relay that dies stops
  renewing: its leases expire within the lease and are taken within two renewal
  periods more, so within ``--liveness-ttl`` of its death.
* **In order, at least once.** A partition is read from its cursor
  (``stomp:webhooks:{w<p>}:cursor``, the id of the last entry handled) onwards;
  a batch holds at most ``--webhook-batch`` events and waits at most
  ``--webhook-linger-ms`` for more; one batch is in flight per partition and the
  next waits for its 2xx. After the 2xx one Lua step, fenced by the lease (it
  does nothing unless this relay still holds it), sets the cursor and deletes
  the delivered entries (``XDEL``). A relay that dies in between leaves them:
  the next holder sends the batch again (the receiver drops repeats by ``id``).
* **Failures** (refused, timeout, another status) are retried with exponential
  backoff and jitter (``--webhook-retry-base`` doubled per attempt up to
  ``--webhook-retry-cap``), keeping the order. An event older than
  ``--webhook-max-age`` (by its ``timestamp``) is moved to ``stomp:webhooks:dead``
  (``XADD`` with the last error) instead of being sent again; the rest of the
  batch carries on.
* **A single node** (no Redis) delivers the in-memory partitions
  (:class:`~stomprelay.webhook_events.MemoryWebhookLog`) the same way, without
  leases; what is not delivered is lost with the process.

The parts are small and given what they use: :class:`Backoff` (the delays),
:func:`owner` (who should deliver a partition), :class:`PartitionWorker` (one
partition's loop, with the clock and the sleep handed in so that unit tests run it
on a fake clock), :class:`Delivery` (the workers and the lease loop) and the two
stores (:mod:`stomprelay.webhook_stores`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11

from stomprelay.bounded import STOP_TIMEOUT, stop_task
from stomprelay.errors import BackendUnavailable
from stomprelay.httpclient import Poster, check_http_url
from stomprelay.webhook_events import MemoryWebhookLog, partition_key, partition_of
from stomprelay.webhook_stores import Entry, MemoryPartitions, Partitions, RedisPartitions

if TYPE_CHECKING:
    from stomprelay.cluster.keys import Keys
    from stomprelay.metrics import Metrics
    from stomprelay.settings import Settings

log = logging.getLogger(__name__)

#: Longest answer read from the receiver (bytes): its body is not used.
MAX_ANSWER = 64 * 1024
#: Connections kept open to the receiver at most (one batch in flight per partition).
IDLE_CONNECTIONS = 64
#: Most milliseconds one read of a partition blocks for new entries (``XREAD BLOCK``).
READ_BLOCK_MS = 1000
#: Seconds a worker waits after Redis failed it before reading again.
REDIS_RETRY = 0.5
#: Seconds a stop waits for the events already queued to go out.
DRAIN_TIMEOUT = 2.0
#: A partition's lease, as a share of ``--liveness-ttl``: it expires 0.6 TTL after its
#: holder's last renewal and is taken within two renewal periods (0.15 TTL each)
#: more, so another relay delivers a dead holder's partitions within the TTL.
LEASE_SHARE = 0.6


class LeaseLost(Exception):
    """The fenced step found the lease held by another relay (or expired)."""


# -- the pure parts ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``n`` (1, 2, ...) waits between half
    and all of ``min(cap, base * 2**(n-1))`` (``rand`` gives 0 <= x < 1)."""

    base: float
    cap: float

    def delay(self, attempt: int, rand: float) -> float:
        full = min(self.cap, math.ldexp(self.base, min(max(attempt - 1, 0), 62)))
        return full * (0.5 + rand / 2)


def owner(partition: int, members: Sequence[str]) -> str | None:
    """The live relay that should deliver ``partition`` (rendezvous hashing: each
    relay scores each partition; the highest wins), None when there is nobody.
    Every relay computes the same answer from the same membership, and a relay
    joining or leaving moves only the partitions it wins or held."""

    def score(member: str) -> bytes:
        return hashlib.sha256(f"{member}\x00{partition}".encode()).digest()

    return max(members, key=score, default=None)


def timestamp_ms(event: str) -> int | None:
    """An event's ``timestamp`` (ms since the epoch), None when it has none."""
    try:
        value = json.loads(event).get("timestamp")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def batch_body(entries: Sequence[Entry]) -> bytes:
    """``{"events": [...]}`` of the stored event texts, as they are (not re-encoded)."""
    return ('{"events":[' + ",".join(event for _, event in entries) + "]}").encode("utf-8")


# -- sending --------------------------------------------------------------------------


class Sender:
    """Signs and POSTs one batch within ``timeout``; None on a 2xx, else why not
    (``(cause, detail)``, cause one of ``refused``, ``timeout``, ``status``)."""

    def __init__(self, url: str, secret: str | None, timeout: float) -> None:
        check_http_url(url, "--webhook-url")
        self.url = url
        self.timeout = timeout
        self._secret = secret
        self._poster = Poster(url, max_answer=MAX_ANSWER, idle_max=IDLE_CONNECTIONS)

    async def __call__(self, body: bytes) -> tuple[str, str] | None:
        headers = self._poster.headers(body, self._secret, int(time.time()))
        try:
            async with asyncio.timeout(self.timeout):
                status, _answer = await self._poster.post(headers, body)
        except TimeoutError:
            return "timeout", f"no answer within {self.timeout:g} s"
        except (OSError, h11.ProtocolError, ValueError) as exc:
            return "refused", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= status < 300:
            return None
        return "status", f"HTTP {status}"

    def close(self) -> None:
        self._poster.close()


Send = Callable[[bytes], Awaitable["tuple[str, str] | None"]]


# -- one partition ----------------------------------------------------------------------


class PartitionWorker:
    """Delivers one partition while this relay holds it: read a batch after the
    cursor, POST it until a 2xx (backing off between attempts, dead-lettering what
    is past the max age), then the fenced step; again.

    Handed the store, the sender, the metrics, ``clock`` (wall seconds: events'
    timestamps are wall time), ``sleep`` and ``rand`` so a test drives it."""

    def __init__(
        self,
        partition: int,
        store: Partitions,
        send: Send,
        *,
        token: str,
        ttl_ms: int,
        batch: int,
        linger: float,
        max_age: float,
        backoff: Backoff,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        block_ms: int = READ_BLOCK_MS,
    ) -> None:
        self.partition = partition
        self.store = store
        self.send = send
        self.token = token
        self.ttl_ms = ttl_ms
        self.batch = batch
        self.linger = linger
        self.max_age = max_age
        self.backoff = backoff
        self.metrics = metrics
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self.block_ms = block_ms
        #: True from a batch's first read until it is done (a hand-over waits for False).
        self.busy = False
        #: True once the partition was seen empty (a drain at stop waits for it).
        self.idle = False
        #: Set to end the loop after the batch in hand (the partition goes to another relay).
        self.hand_over = False
        #: Set to end the loop once the partition is found empty (a stop).
        self.draining = False

    async def run(self) -> None:
        """Deliver until cancelled, handed over, or the lease is found lost."""
        failing = False
        while not self.hand_over and not (self.draining and self.idle):
            try:
                await self.step()
                failing = False
            except LeaseLost:
                log.info("webhook partition %d: lease lost, stopping", self.partition)
                return
            except BackendUnavailable as exc:
                self.busy = False
                # once per outage at warning level: every retry would flood the log
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "webhook partition %d: %s", self.partition, exc)
                failing = True
                await self.sleep(REDIS_RETRY)

    async def step(self) -> int:
        """Read one batch (waiting up to the block time for a first event, then up to
        the linger for more) and deliver it; the number of events handled."""
        entries = await self.store.read(self.partition, self.batch, self.block_ms)
        if not entries:
            self.idle = True
            return 0
        self.idle = False
        self.busy = True
        try:
            if len(entries) < self.batch and self.linger > 0:
                await self.sleep(self.linger)
                entries = await self.store.read(self.partition, self.batch, 0) or entries
            await self.deliver(entries)
        finally:
            self.busy = False
        return len(entries)

    async def deliver(self, entries: list[Entry]) -> None:
        """POST ``entries`` until a 2xx, then the fenced step; the ones past the max
        age are dead-lettered on the way. LeaseLost when the fence refuses."""
        attempt = 0
        while entries:
            failure = await self.send(batch_body(entries))
            if failure is None:
                if not await self._done(entries, entries[-1][0]):
                    raise LeaseLost
                self._delivered(entries)
                return
            cause, detail = failure
            attempt += 1
            log.warning(
                "webhook partition %d: %d events not delivered (attempt %d): %s",
                self.partition,
                len(entries),
                attempt,
                detail,
            )
            if self.metrics is not None:
                self.metrics.webhook_retries.labels(cause).inc()
                self.metrics.webhook_failed.inc(len(entries))
            entries = await self._expire(entries, detail)
            if entries:
                await self.sleep(self.backoff.delay(attempt, self.rand()))

    async def _expire(self, entries: list[Entry], error: str) -> list[Entry]:
        """Dead-letter the events older than the max age; the others, in order."""
        oldest = (self.clock() - self.max_age) * 1000
        expired = [e for e in entries if _age_from(e) < oldest]
        if not expired:
            return entries
        await self.store.dead(self.partition, expired, error)
        prefix = 0
        while prefix < len(entries) and entries[prefix] in expired:
            prefix += 1
        cursor = entries[prefix - 1][0] if prefix else ""
        if not await self._done(expired, cursor):
            raise LeaseLost
        log.warning(
            "webhook partition %d: %d events dead-lettered after %g s: %s",
            self.partition,
            len(expired),
            self.max_age,
            error,
        )
        if self.metrics is not None:
            self.metrics.webhook_dead.inc(len(expired))
        gone = {entry_id for entry_id, _ in expired}
        return [entry for entry in entries if entry[0] not in gone]

    async def _done(self, entries: Sequence[Entry], cursor: str) -> bool:
        ids = [entry_id for entry_id, _ in entries]
        return await self.store.done(self.partition, self.token, self.ttl_ms, ids, cursor)

    def _delivered(self, entries: Sequence[Entry]) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        now = self.clock() * 1000
        metrics.webhook_batches.inc()
        metrics.webhook_delivered.inc(len(entries))
        for _, event in entries:
            stamp = timestamp_ms(event)
            if stamp is not None:
                metrics.webhook_lag.observe(max(0.0, (now - stamp) / 1000))


# -- the relay's service --------------------------------------------------------------


Members = Callable[[], Awaitable[list[str]]]


class Delivery:
    """Every partition this relay delivers: a :class:`PartitionWorker` task per held
    partition, and (on Redis) the lease loop that takes, renews, hands back and
    gives up partitions. ``start()`` and ``stop()`` from the relay's lifecycle."""

    def __init__(
        self,
        store: Partitions,
        send: Sender | Send,
        *,
        server_id: str,
        partitions: int,
        batch: int,
        linger: float,
        max_age: float,
        lease_ttl: float,
        backoff: Backoff,
        members: Members | None = None,
    ) -> None:
        self.store = store
        self.send = send
        self.server_id = server_id
        self.partitions = partitions
        self.batch = batch
        self.linger = linger
        self.max_age = max_age
        self.ttl_ms = max(1, int(lease_ttl * 1000))
        self.renew_interval = lease_ttl / 4
        self.backoff = backoff
        self._members = members
        self.token = f"{server_id}:{secrets.token_hex(6)}"
        #: Set by the relay (its Prometheus metrics).
        self.metrics: Metrics | None = None
        self.workers: dict[int, tuple[PartitionWorker, asyncio.Task[None]]] = {}
        #: Partitions seen without a holder at the last look (taken at the next one).
        self._free: set[int] = set()
        self._lease_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def held(self) -> list[int]:
        return sorted(self.workers)

    def start(self) -> None:
        self._stopping = False
        if self.store.leased:
            self._lease_task = asyncio.create_task(self._lease_loop(), name="webhook-leases")
        else:
            for partition in range(self.partitions):
                self._start_worker(partition)

    async def stop(self, drain: float = DRAIN_TIMEOUT) -> None:
        """Let the workers send what is queued (up to ``drain`` seconds), then stop
        them and hand the leases back, so another relay takes over at once."""
        self._stopping = True
        if self._lease_task is not None:
            await stop_task(self._lease_task, "webhooks", STOP_TIMEOUT)
            self._lease_task = None
            # the others stop counting on this relay, and take its partitions as they go
            with contextlib.suppress(BackendUnavailable):
                await self.store.leave(self.server_id)
        for worker, _task in self.workers.values():
            worker.draining = True
        tasks = [task for _worker, task in self.workers.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=drain)
        for partition in list(self.workers):
            await self._stop_worker(partition, release=True)
        if isinstance(self.send, Sender):
            self.send.close()
        await self.store.close()

    def _start_worker(self, partition: int) -> None:
        worker = PartitionWorker(
            partition,
            self.store,
            self.send,
            token=self.token,
            ttl_ms=self.ttl_ms,
            batch=self.batch,
            linger=self.linger,
            max_age=self.max_age,
            backoff=self.backoff,
            metrics=self.metrics,
            block_ms=min(READ_BLOCK_MS, max(1, int(self.renew_interval * 1000))),
        )
        task = asyncio.create_task(worker.run(), name=f"webhook-partition-{partition}")
        self.workers[partition] = (worker, task)
        self._held_changed()

    async def _stop_worker(self, partition: int, release: bool) -> None:
        found = self.workers.pop(partition, None)
        if found is None:
            return
        await stop_task(found[1], f"webhook partition {partition}", STOP_TIMEOUT)
        if release:
            with contextlib.suppress(BackendUnavailable):
                await self.store.release(partition, self.token)
        self._held_changed()

    def _held_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.webhook_partitions.set(len(self.workers))

    async def _lease_loop(self) -> None:
        failing = False
        while not self._stopping:
            try:
                await self.leases_once()
                failing = False
            except BackendUnavailable as exc:
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "webhooks: leases not renewed: %s", exc)
                failing = True
            except Exception:
                # the loop keeps the partitions delivered: it outlives any one fault
                log.exception("webhooks: lease loop failed; trying again")
                failing = True
            await asyncio.sleep(self.renew_interval)

    async def leases_once(self) -> None:
        """One look at every partition: renew the held ones (dropping those lost),
        take this relay's own ones and the ones seen free a period ago, hand back
        idle ones that another live relay should have."""
        members = await self._live_members()
        free: set[int] = set()
        pending = 0
        for partition in range(self.partitions):
            found = self.workers.get(partition)
            if found is not None and found[1].done():
                # handed over between two batches (released), or its lease was lost
                await self._stop_worker(partition, release=found[0].hand_over)
                found = None
            should = owner(partition, members)
            if found is not None:
                if not await self.store.keep(partition, self.token, self.ttl_ms):
                    log.info("webhooks: lease of partition %d lost", partition)
                    await self._stop_worker(partition, release=False)
                elif should != self.server_id and not found[0].hand_over:
                    log.info("webhooks: handing partition %d to %s", partition, should)
                    found[0].hand_over = True
                else:
                    pending += await self.store.pending(partition)
                continue
            mine = should == self.server_id
            if not mine and partition not in self._free:
                if await self.store.holder(partition) is None:
                    free.add(partition)
                continue
            if await self.store.keep(partition, self.token, self.ttl_ms):
                log.info("webhooks: delivering partition %d", partition)
                self._start_worker(partition)
        self._free = free
        if self.metrics is not None:
            self.metrics.webhook_pending.set(pending)

    async def _live_members(self) -> list[str]:
        """The relays sharing the partitions: those that deliver (each renews its
        entry at every look), so a live relay without ``--webhook-url`` owns none."""
        members: list[str] = []
        with contextlib.suppress(BackendUnavailable):
            if self._members is not None:
                members = await self._members()
            else:
                # an entry lives as long as a lease: a dead relay leaves both at once
                members = await self.store.announce(self.server_id, self.partitions, self.ttl_ms)
        if self.server_id not in members:
            members.append(self.server_id)
        return members


def build_delivery(
    settings: Settings,
    server_id: str,
    *,
    keys: Keys,
    target: Any = None,
    memory_log: MemoryWebhookLog | None = None,
    members: Members | None = None,
) -> Delivery:
    """The delivery service of ``settings`` (``webhook_url`` set): on Redis
    (``target``, a :class:`~stomprelay.cluster.connect.RedisTarget`) with leases,
    else over ``memory_log``."""
    if not settings.webhook_url:
        raise ValueError("webhooks need --webhook-url")
    store: Partitions
    if target is not None:
        from stomprelay.cluster.connect import make_client

        block = READ_BLOCK_MS / 1000
        client = make_client(
            target,
            decode=True,
            timeout=max(settings.redis_timeout, block + 2),
            pool_size=settings.webhook_partitions + 8,
        )
        store = RedisPartitions(client, keys)
    else:
        if memory_log is None:
            raise ValueError("a single node's webhooks need its in-memory partitions")
        store = MemoryPartitions(memory_log, lambda: int(time.time() * 1000))
    return Delivery(
        store,
        Sender(settings.webhook_url, settings.webhook_secret, settings.webhook_timeout),
        server_id=server_id,
        partitions=settings.webhook_partitions,
        batch=settings.webhook_batch,
        linger=settings.webhook_linger_ms / 1000,
        max_age=settings.webhook_max_age,
        lease_ttl=settings.liveness_ttl * LEASE_SHARE,
        backoff=Backoff(settings.webhook_retry_base, settings.webhook_retry_cap),
        members=members,
    )


def _age_from(entry: Entry) -> int:
    """When an entry's age counts from (ms): its event's timestamp, or, if later, when
    it was appended (a Redis entry id's first part), so a replayed dead letter or an
    event journaled through a long outage gets its full ``--webhook-max-age`` again."""
    entry_id, event = entry
    appended = entry_id.partition("-")[0]
    return max(timestamp_ms(event) or 0, int(appended) if appended.isdigit() else 0)


def replay_partition(event: str, partitions: int) -> int:
    """The partition a dead letter goes back to: its room's, else (a message outside
    rooms) its destination's, else its user's, else its session's, as the steps chose."""
    try:
        data = json.loads(event)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    message = data.get("type") == "message.published"
    key = partition_key(
        str(data.get("roomId") or ""),
        str(data.get("user") or ""),
        str(data.get("sessionId") or ""),
        str(data.get("destination") or "") if message else "",
    )
    return partition_of(key, partitions)
