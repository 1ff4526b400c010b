"""One pub/sub connection of the cluster bus (:mod:`sharded`), to one node.

A link subscribes the channels its bus gives it, watches its connection with
PINGs, rebuilds it after a failure and reports what Redis says about each channel
to its bus; it never moves a channel elsewhere, the bus does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from stomprelay.bounded import bounded, stop_task
from stomprelay.cluster.keys import hash_tag
from stomprelay.cluster.redis_io import as_text

log = logging.getLogger(__name__)

#: Most channels in one (S)SUBSCRIBE command.
BATCH = 500

#: What redis-py raises for a Redis or cluster failure (RedisClusterException, such as
#: SlotNotCoveredError, is not a RedisError).
FAILURES = (RedisError, RedisClusterException, OSError)


def is_sharded(channel: str) -> bool:
    """Does ``channel`` hold a hash tag: its first ``{``, then the first ``}`` after it,
    with at least one character between them? That is the rule by which Redis Cluster
    hashes only the tag of a key (or shard channel); such a channel goes over
    SPUBLISH/SSUBSCRIBE, to the master of the tag's slot."""
    return hash_tag(channel) is not None


def channel_slot(channel: str) -> int:
    """The hash slot of a channel (CLUSTER KEYSLOT): its hash tag's slot when it has one."""
    return key_slot(channel.encode("utf-8"))


#: A link's report to its bus: ``up`` (connected, channels sent), ``confirmed`` (Redis
#: confirmed ``channel``), ``lost`` (Redis unsubscribed ``channel`` on its own), ``refused``
#: (an error reply to a subscribe: ``error``), ``down`` (the connection is gone).
ReportKind = Literal["up", "confirmed", "lost", "refused", "down"]


@dataclass(frozen=True, slots=True)
class Report:
    """What a link tells its bus (see :data:`ReportKind`)."""

    kind: ReportKind
    link: str
    channel: str = ""
    error: ResponseError | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    """A link's reconnect and PING timings (seconds), the bus's own."""

    reconnect_interval: float
    ping_interval: float
    dead_after: float


@dataclass(frozen=True, slots=True)
class Kinds:
    """The pub/sub message types of one link flavour."""

    confirm: str
    unconfirm: str
    message: str


SHARDED_KINDS = Kinds("ssubscribe", "sunsubscribe", "smessage")
CLASSIC_KINDS = Kinds("subscribe", "unsubscribe", "message")


def subscribe_batches(channels: Iterable[str], sharded: bool) -> list[list[str]]:
    """Subscribe commands for ``channels``: SSUBSCRIBE takes channels of one slot only
    (else -CROSSSLOT), so shard channels are grouped by slot."""
    groups: dict[int, list[str]] = collections.defaultdict(list)
    for channel in sorted(channels):
        groups[channel_slot(channel) if sharded else 0].append(channel)
    return [
        group[i : i + BATCH]
        for _, group in sorted(groups.items())
        for i in range(0, len(group), BATCH)
    ]


class Link:
    """One pub/sub connection (to one node), kept up by its own task.

    A link carries the channels it is given (:meth:`add`, :meth:`drop`) and reports what
    Redis says about them through ``notify``; it never moves a channel elsewhere, the bus
    does. After a failure it reconnects every ``reconnect_interval`` (asking ``open`` for a
    client each time) and subscribes everything again. Invariant: ``channels`` is the union
    of ``confirmed`` (Redis said so), ``_sent`` (asked, on this connection) and ``_unsent``.
    """

    def __init__(
        self,
        name: str,
        open_client: Callable[[], tuple[str, aioredis.Redis]],
        *,
        sharded: bool,
        deliver: Callable[[str, bytes], None],
        notify: Callable[[Report], None],
        timing: Timing,
    ) -> None:
        self.name = name
        self.sharded = sharded
        self._open = open_client
        self._deliver = deliver
        self._notify = notify
        self._timing = timing
        self._kinds = SHARDED_KINDS if sharded else CLASSIC_KINDS
        self.channels: set[str] = set()
        self.confirmed: set[str] = set()
        self._sent: set[str] = set()
        self._unsent: set[str] = set()
        #: UNSUBSCRIBEs sent and not answered yet, per channel: their replies are ours,
        #: any other unsubscribe message is Redis dropping the channel on its own.
        self._unsubscribing: collections.Counter[str] = collections.Counter()
        self._client: aioredis.Redis | None = None
        self._pubsub: PubSub | None = None
        #: Sends and teardown take turns: nothing is sent on a connection being closed.
        self._lock = asyncio.Lock()
        self.connected = False
        self._was_up = False
        #: Set once the first connection attempt is over, however it went.
        self.attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Set by close: a reader that swallowed its cancellation ends at its next turn.
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sharded-bus-{self.name}")

    async def close(self, within: float) -> None:
        """Stop the task and drop the connection, in at most ``within`` seconds: what has
        not finished by then is logged and left behind (:mod:`stomprelay.bounded`)."""
        self._stopping = True
        what = f"pub/sub {self.name}"
        if self._task is not None:
            await stop_task(self._task, what, within / 2)
        with contextlib.suppress(*FAILURES):
            await bounded(f"{what}: closing the connection", self._teardown(), within / 2)

    @property
    def complete(self) -> bool:
        """Every channel of this link confirmed on a live connection."""
        return self.connected and len(self.confirmed) == len(self.channels)

    def holds(self, channel: str) -> bool:
        """Confirmed, or asked for on the live connection."""
        return channel in self.confirmed or channel in self._sent

    def add(self, channel: str) -> None:
        """Carry ``channel``; it is sent at the next :meth:`flush` (or connection)."""
        self.channels.add(channel)
        if not self.holds(channel):
            self._unsent.add(channel)

    async def drop(self, channel: str) -> None:
        """Stop carrying ``channel`` (UNSUBSCRIBE it if Redis has or may have it)."""
        live = self.holds(channel)
        self.channels.discard(channel)
        self.confirmed.discard(channel)
        self._sent.discard(channel)
        self._unsent.discard(channel)
        if not live:
            return
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None or not self.connected:
                return
            self._unsubscribing[channel] += 1
            try:
                if self.sharded:
                    await pubsub.sunsubscribe(channel)
                else:
                    await pubsub.unsubscribe(channel)
            except FAILURES as exc:
                log.info("pub/sub %s: unsubscribe %s not sent: %s", self.name, channel, exc)

    async def flush(self) -> None:
        """(S)SUBSCRIBE every channel not sent on the live connection yet."""
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None or not self.connected or not self._unsent:
                return
            batches = subscribe_batches(self._unsent, self.sharded)
            self._sent |= self._unsent
            self._unsent.clear()
            try:
                for batch in batches:
                    if self.sharded:
                        await pubsub.ssubscribe(*batch)
                    else:
                        await pubsub.subscribe(*batch)
            except FAILURES as exc:
                # the connection is broken: its reader ends and reports it
                log.info("pub/sub %s: subscribe not sent: %s", self.name, exc)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                # the first failure in a row at INFO, the retries that follow at DEBUG
                log.log(
                    logging.DEBUG if failures else logging.INFO,
                    "pub/sub %s: connection lost: %s",
                    self.name,
                    exc,
                )
            except Exception:
                log.exception("pub/sub %s: reader failed", self.name)
            finally:
                await self._teardown()
            if self._stopping:
                return
            failures = 0 if self._was_up else failures + 1
            self.attempted.set()
            self._notify(Report("down", self.name))
            await asyncio.sleep(self._timing.reconnect_interval)

    async def _teardown(self) -> None:
        async with self._lock:
            self.connected = False
            pubsub, self._pubsub = self._pubsub, None
            client, self._client = self._client, None
            self._unsent = set(self.channels)
            self._sent.clear()
            self.confirmed.clear()
            self._unsubscribing.clear()
        if pubsub is not None:
            with contextlib.suppress(*FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        if client is not None:
            with contextlib.suppress(*FAILURES):
                await client.aclose()

    async def _session(self) -> None:
        """One connection's life: subscribe everything, then read until it fails."""
        self._was_up = False
        address, client = self._open()
        pubsub = client.pubsub(ignore_subscribe_messages=False)
        async with self._lock:
            self._client, self._pubsub = client, pubsub
        await pubsub.connect()  # type: ignore[no-untyped-call]
        self.connected = True
        self._was_up = True
        self._unsent = set(self.channels)
        log.info("pub/sub %s: connected to %s", self.name, address)
        await self.flush()
        self.attempted.set()
        self._notify(Report("up", self.name))
        timing = self._timing
        # The watchdog of RedisBus._session: a PING every ping_interval, any reply clears
        # it, one unanswered for dead_after means the node hangs (paused, or a dead link
        # TCP has not noticed). Replies are read before judging, so a pause of this process
        # does not count against Redis.
        last_ping = 0.0
        unanswered_since: float | None = None
        while not self._stopping:
            try:
                message = await pubsub.get_message(timeout=min(timing.ping_interval, 0.5))
            except ResponseError as exc:
                # An error reply answers one of our (S)SUBSCRIBEs; which one it does not say.
                unanswered_since = None
                self._refused(exc)
                continue
            now = time.monotonic()
            if message is not None:
                unanswered_since = None
            elif unanswered_since is not None and now - unanswered_since > timing.dead_after:
                raise TimeoutError(f"no reply from {address} for {timing.dead_after:g} s")
            if now - last_ping >= timing.ping_interval:
                async with self._lock:
                    await pubsub.ping()
                last_ping = now
                if unanswered_since is None:
                    unanswered_since = now
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if message["channel"] is None:
            return
        channel = as_text(message["channel"])
        if kind == self._kinds.message:
            if channel in self.channels:
                self._deliver(channel, message["data"])
        elif kind == self._kinds.confirm:
            if channel in self.channels and channel not in self.confirmed:
                self._sent.discard(channel)
                self._unsent.discard(channel)
                self.confirmed.add(channel)
                self._notify(Report("confirmed", self.name, channel))
        elif kind == self._kinds.unconfirm:
            if self._unsubscribing[channel] > 0:
                self._unsubscribing[channel] -= 1
                if not self._unsubscribing[channel]:
                    del self._unsubscribing[channel]
            elif self.holds(channel):
                # Redis dropped it on its own: its slot left this node.
                self.confirmed.discard(channel)
                self._sent.discard(channel)
                self._unsent.add(channel)
                self._notify(Report("lost", self.name, channel))

    def _refused(self, exc: ResponseError) -> None:
        # Every channel in flight is sent again once the bus has had a look at the map
        # (a confirmation still on its way makes a harmless second one).
        self._unsent |= self._sent
        self._sent.clear()
        self._notify(Report("refused", self.name, error=exc))
