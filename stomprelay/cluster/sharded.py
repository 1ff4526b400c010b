"""A :class:`~stomprelay.cluster.base.Bus` over Redis Cluster, with sharded pub/sub.

A channel whose name holds a hash tag (``stomp:broadcast:room:{lobby}``) is a *shard
channel*: it is published with SPUBLISH and subscribed with SSUBSCRIBE (Redis 7.0), so only
the master that owns the tag's slot carries it. Every other channel is a *classic* one:
PUBLISH in a cluster reaches every node (the cluster bus propagates it), so one SUBSCRIBE
connection to any node is enough.

Topology (the slot -> master map) and publishing go through redis-py's
:class:`~redis.asyncio.cluster.RedisCluster`. Subscribing does not: like
:class:`~stomprelay.cluster.redis_bus.RedisBus`, this module owns its pub/sub
connections (one per master that serves a wanted shard channel, plus one classic one), each
watched with PINGs, and rebuilds and re-subscribes them itself. redis-py's ``ClusterPubSub``
is not used.

What Redis tells a shard subscriber, and what the bus does about it:

* a slot that leaves a node (CLUSTER SETSLOT ... NODE, a live reshard) makes that node send
  an unsolicited ``sunsubscribe`` for each of the slot's shard channels: the bus goes
  unavailable, refreshes the slot map and SSUBSCRIBEs them on the new owner;
* an SSUBSCRIBE sent to a node that no longer owns the slot is answered with ``-MOVED``: the
  map is patched from the redirection and the channels are sent again;
* a dead node ends its connection (or its PINGs go unanswered): the bus goes unavailable and
  refreshes the map every ``reconnect_interval`` until the slot has a live master again (a
  replica promoted, a cluster-node-timeout later), then re-subscribes there.

The bus is available again only once every wanted channel is confirmed on a live connection.
While it is not, :meth:`ShardedBus.publish` delivers to local subscribers only, as RedisBus
does. Redis errors never leave this module.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    MovedError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stomprelay.bounded import bounded, stop_task
from stomprelay.cluster.base import BusHandler
from stomprelay.cluster.connect import CLOSE_TIMEOUT
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.shard_link import (
    FAILURES,
    Link,
    Report,
    Timing,
    is_sharded,
)
from stomprelay.errors import ProtocolError

log = logging.getLogger(__name__)

#: Seconds to wait for a connection, and for any one command.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 3.0
#: Most publishes (or pipelines) in flight at once. redis-py's cluster client opens up to
#: 100 connections per node and then fails (MaxConnectionsError) instead of queueing.
MAX_IN_FLIGHT = 64
#: Least time between two topology refreshes, so that a burst of redirections or lost
#: channels costs one CLUSTER SLOTS, not one each.
REFRESH_SPACING = 0.05


@dataclass(frozen=True, slots=True)
class Seeds:
    """The comma-separated seed node URLs a cluster bus is given.

    ``redis://[user:password@]host:port[?options]``, ``rediss://`` for TLS; a seed after the
    first may also be a bare ``host:port``. The first seed's scheme, credentials and query
    options apply to every node, the seeds and the nodes discovered from them alike.
    """

    addresses: tuple[tuple[str, int], ...]
    template: SplitResult

    @classmethod
    def parse(cls, url: str) -> Seeds:
        parts = [part.strip() for part in url.split(",") if part.strip()]
        if not parts:
            raise ValueError("a Redis Cluster URL needs at least one seed node")
        first = urlsplit(parts[0] if "://" in parts[0] else f"redis://{parts[0]}")
        addresses = []
        for part in parts:
            split = urlsplit(part if "://" in part else f"{first.scheme}://{part}")
            if split.scheme not in ("redis", "rediss"):
                raise ValueError(f"not a redis:// or rediss:// seed: {part!r}")
            addresses.append((split.hostname or "127.0.0.1", split.port or 6379))
        if first.path.strip("/") not in ("", "0"):
            raise ValueError("Redis Cluster has one database only: drop the /<db> of the URL")
        return cls(tuple(addresses), first)

    def url_for(self, host: str, port: int) -> str:
        """The URL of one node: the first seed's with another address (and no database)."""
        userinfo, at, _ = self.template.netloc.rpartition("@")
        name = f"[{host}]" if ":" in host else host
        netloc = f"{userinfo}{at}{name}:{port}"
        return urlunsplit((self.template.scheme, netloc, "", self.template.query, ""))

    def options(self) -> dict[str, Any]:
        """The connection options every node gets (credentials, TLS, query options)."""
        options: dict[str, Any] = dict(parse_url(self.url_for(*self.addresses[0])))
        for name in ("host", "port"):
            options.pop(name, None)
        if options.pop("db", 0):
            raise ValueError("Redis Cluster has one database only: drop ?db= from the URL")
        if options.pop("connection_class", None) is SSLConnection:
            options["ssl"] = True
        return options


class ShardedBus:
    """Pub/sub over Redis Cluster (7.0.1+), shard channels over SSUBSCRIBE/SPUBLISH.

    ``url`` is a comma-separated list of seed node URLs (see :class:`Seeds`). The timings
    are those of :class:`~stomprelay.cluster.redis_bus.RedisBus`: every pub/sub
    connection is PINGed each ``ping_interval`` and judged dead after ``dead_after`` without
    a reply; lost connections are rebuilt, and the slot map refreshed, every
    ``reconnect_interval`` until every wanted channel is confirmed again. :meth:`close`
    returns within ``close_timeout`` seconds, whatever the nodes and the tasks do.
    """

    def __init__(
        self,
        url: str,
        reconnect_interval: float = 0.5,
        ping_interval: float = 1.0,
        dead_after: float = 3.0,
    ) -> None:
        self.url = url
        self.reconnect_interval = reconnect_interval
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        #: Called with True/False when availability changes.
        self.on_state_change: Callable[[bool], None] | None = None
        self._seeds = Seeds.parse(url)
        self._options = self._seeds.options()
        self._timing = Timing(reconnect_interval, ping_interval, dead_after)
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._seeds.addresses],
            **{
                "decode_responses": False,
                "socket_connect_timeout": CONNECT_TIMEOUT,
                "socket_timeout": COMMAND_TIMEOUT,
                # serve the slots that have a master while others have none
                "require_full_coverage": False,
                # no retries inside redis-py: a timed-out SPUBLISH may have run, and sending
                # it again would deliver it twice; see _publish_one for the one retry
                "retry": Retry(NoBackoff(), 0),
                **self._options,
            },
        )
        self._cluster_ready = False
        self._handler: BusHandler | None = None
        self._wanted: set[str] = set()
        self._sharded: set[str] = set()
        #: Where each shard channel is carried (a link per master, by node name).
        self._where: dict[str, Link] = {}
        self._links: dict[str, Link] = {}
        self._classic = Link(
            "classic",
            self._open_classic,
            sharded=False,
            deliver=self._dispatch,
            notify=self._on_report,
            timing=self._timing,
        )
        self._classic_turn = -1
        self._available = False
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._wake = asyncio.Event()
        self._refresh_needed = True
        self._redirections: list[MovedError] = []
        #: The last refusal logged (the same one again is logged at DEBUG only).
        self._refusal = ""
        self._last_refresh = 0.0
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.close_timeout = CLOSE_TIMEOUT

    @property
    def available(self) -> bool:
        return self._available

    async def start(self, handler: BusHandler) -> None:
        """Start; returns after the first attempt to reach the cluster, however it went."""
        self._handler = handler
        self._task = asyncio.create_task(self._run(), name="sharded-bus")
        await self._started.wait()

    async def close(self) -> None:
        """Stop the repair task, then the links side by side, then the cluster client, each
        in a third of ``close_timeout``: a paused node, or a reader that swallowed its
        cancellation (:mod:`stomprelay.bounded`), is logged and left behind."""
        self._closing = True
        step = self.close_timeout / 3
        if self._task is not None:
            await stop_task(self._task, "sharded bus: repair", step)
        links, self._links = [self._classic, *self._links.values()], {}
        self._where.clear()
        await asyncio.gather(*(link.close(step) for link in links))
        self._release_waiters()
        with contextlib.suppress(*FAILURES):
            await bounded("redis cluster client: closing", self._cluster.aclose(), step)

    # -- availability ---------------------------------------------------------------------

    def _set_available(self, value: bool) -> None:
        if value == self._available:
            return
        self._available = value
        log.warning(
            "redis cluster bus %s", "available" if value else "unavailable: local delivery only"
        )
        if self.on_state_change is not None:
            self.on_state_change(value)

    def _all_confirmed(self) -> bool:
        return (
            self._classic.complete
            and len(self._where) == len(self._sharded)
            and all(link.complete for link in self._links.values())
        )

    def _release_waiters(self) -> None:
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._waiters.clear()

    def _on_report(self, report: Report) -> None:
        """What a link says. Losing a channel or a connection makes the bus unavailable
        (a message may have been missed); a refused subscribe only makes it look again."""
        if report.kind == "confirmed":
            self._refusal = ""
            for future in self._waiters.pop(report.channel, []):
                if not future.done():
                    future.set_result(None)
        elif report.kind in ("lost", "down"):
            if report.kind == "lost":
                log.info("pub/sub %s: Redis dropped %s", report.link, report.channel)
            self._set_available(False)
            self._release_waiters()
            self._refresh_needed = True
            self._wake.set()
        elif report.kind == "refused":
            if isinstance(report.error, MovedError):
                log.info("pub/sub %s: subscribe redirected: MOVED %s", report.link, report.error)
                self._redirections.append(report.error)
                self._wake.set()
            else:
                # ASK or TRYAGAIN (a slot being migrated: with a fresh map), or a real
                # refusal (NOPERM from an ACL): try again a reconnect_interval later
                redirect = isinstance(report.error, (AskError, TryAgainError))
                self._refresh_needed |= redirect
                text = f"{type(report.error).__name__}: {report.error}"
                level = logging.DEBUG if redirect or text == self._refusal else logging.WARNING
                self._refusal = text
                log.log(level, "pub/sub %s: subscribe refused: %s", report.link, text)
                asyncio.get_running_loop().call_later(self.reconnect_interval, self._wake.set)
        if not self._available and self._all_confirmed():
            self._set_available(True)

    # -- topology and repair --------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self._repair()
            except FAILURES as exc:
                log.info("redis cluster: slot map not refreshed: %s", exc)
                self._refresh_needed = True
            if not self._started.is_set():
                self._classic.start()
                await self._classic.attempted.wait()
                self._started.set()
            if not self._available and self._all_confirmed():
                self._set_available(True)
            # While something is missing, look again every reconnect_interval, with a
            # fresh slot map when something was lost (a failover takes a node timeout or
            # two); otherwise wait for a link to report.
            timeout = None if self._all_confirmed() else self.reconnect_interval
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a
                # cancellation that comes as the event is set (stomprelay.bounded)
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                self._refresh_needed |= not self._available

    async def _refresh(self) -> None:
        """Reload the slot map (CLUSTER SLOTS from a live node), or patch it from MOVED."""
        redirections, self._redirections = self._redirections, []
        if self._cluster_ready and not self._refresh_needed:
            for moved in redirections:
                await self._cluster.nodes_manager.move_slot(moved)
            return
        await asyncio.sleep(max(0.0, self._last_refresh + REFRESH_SPACING - time.monotonic()))
        self._last_refresh = time.monotonic()
        # cleared first: a report that comes while CLUSTER SLOTS runs asks for another
        self._refresh_needed = False
        if not self._cluster_ready:
            await self._cluster.initialize()
            self._cluster_ready = True
        else:
            # the public NodesManager: RedisCluster.initialize() is a no-op once done
            await self._cluster.nodes_manager.initialize()

    def _owner(self, channel: str) -> str | None:
        """The node name (``host:port``) of the master that serves ``channel``'s slot."""
        if not self._cluster_ready:
            return None
        try:
            node = self._cluster.get_node_from_key(channel)
        except FAILURES:
            return None
        return None if node is None else node.name

    async def _repair(self) -> None:
        """Put every shard channel not live anywhere on its slot's master, subscribe what
        is not sent yet, close the links left with nothing to carry.

        A channel confirmed (or in flight) on a live connection stays where it is even if
        the map says otherwise: Redis says when a node stops serving it (``sunsubscribe``,
        ``-MOVED``, or the connection ends), and moving it earlier could let the old node's
        last messages arrive after the new node's first ones.
        """
        await self._refresh()
        for channel in sorted(self._sharded):
            link = self._where.get(channel)
            if link is not None and link.holds(channel):
                continue
            owner = self._owner(channel)
            if owner is None or (link is not None and link.name == owner):
                continue
            if link is not None:
                await link.drop(channel)
            if channel in self._sharded:  # still wanted after the await
                self._place(channel, owner)
        for link in [self._classic, *self._links.values()]:
            await link.flush()
        for name, link in list(self._links.items()):
            if not link.channels:
                del self._links[name]
                await link.close(self.close_timeout / 3)

    def _place(self, channel: str, owner: str) -> Link:
        link = self._links.get(owner)
        if link is None:
            host, _, port = owner.rpartition(":")
            link = Link(
                owner,
                self._opener(host.strip("[]"), int(port)),
                sharded=True,
                deliver=self._dispatch,
                notify=self._on_report,
                timing=self._timing,
            )
            self._links[owner] = link
            link.start()
        link.add(channel)
        self._where[channel] = link
        return link

    def _node_client(self, host: str, port: int) -> aioredis.Redis:
        # No retries: redis-py's PubSub would reconnect and re-subscribe behind our back.
        return aioredis.Redis.from_url(
            self._seeds.url_for(host, port),
            decode_responses=False,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0, supported_errors=()),
        )

    def _opener(self, host: str, port: int) -> Callable[[], tuple[str, aioredis.Redis]]:
        def open_client() -> tuple[str, aioredis.Redis]:
            return f"{host}:{port}", self._node_client(host, port)

        return open_client

    def _open_classic(self) -> tuple[str, aioredis.Redis]:
        """The classic connection goes to the masters in turn, one per attempt."""
        candidates = sorted(
            (node.host, int(node.port)) for node in self._cluster.get_primaries()
        ) or list(self._seeds.addresses)
        self._classic_turn = (self._classic_turn + 1) % len(candidates)
        host, port = candidates[self._classic_turn]
        return f"{host}:{port}", self._node_client(host, port)

    # -- delivery -------------------------------------------------------------------------

    def _dispatch(self, channel: str, data: bytes) -> None:
        if self._handler is None or channel not in self._wanted:
            return
        try:
            envelope = Envelope.from_json(data)
        except ProtocolError as exc:
            log.warning("ignoring malformed envelope on %s: %s", channel, exc.detail)
            return
        try:
            self._handler(channel, envelope)
        except Exception:
            log.exception("bus handler failed on %s", channel)

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns after Redis confirmed (or at once when degraded)."""
        self._wanted.add(channel)
        if is_sharded(channel):
            self._sharded.add(channel)
            link = self._where.get(channel)
            if link is None:
                owner = self._owner(channel)
                if owner is None:
                    self._wake.set()  # the next repair places it
                    return
                link = self._place(channel, owner)
        else:
            link = self._classic
            link.add(channel)
        if channel in link.confirmed or not (self._available or link.connected):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(future)
        await link.flush()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await future
        except TimeoutError:
            log.info("subscribe %s not confirmed in %g s", channel, COMMAND_TIMEOUT)
            waiting = self._waiters.get(channel, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(channel, None)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        for future in self._waiters.pop(channel, []):
            if not future.done():
                future.set_result(None)
        if not is_sharded(channel):
            await self._classic.drop(channel)
        else:
            self._sharded.discard(channel)
            link = self._where.pop(channel, None)
            if link is not None:
                await link.drop(channel)
                if not link.channels and self._links.get(link.name) is link:
                    del self._links[link.name]
                    await link.close(self.close_timeout / 3)
        if not self._available and self._all_confirmed():
            self._set_available(True)

    async def _publish_one(self, channel: str, data: bytes) -> None:
        """SPUBLISH or PUBLISH, routed by redis-py to the master of the channel's slot
        (it follows -MOVED and -ASK itself). One retry on a broken connection, none on a
        timeout: the command may have run."""
        retried = False
        async with self._in_flight:
            while True:
                try:
                    if is_sharded(channel):
                        await self._cluster.spublish(channel, data)
                    else:
                        await self._cluster.publish(channel, data)
                    return
                except RedisConnectionError:
                    if retried:
                        raise
                    retried = True

    async def publish(self, channel: str, envelope: Envelope) -> None:
        """Publish; when the cluster is unreachable, deliver to local subscribers only."""
        if self._available:
            try:
                await self._publish_one(channel, envelope.to_json())
                return
            except (RedisTimeoutError, TimeoutError):
                # Redis may still run it and send it back: delivering it here
                # too would deliver it twice.
                log.warning("publish on %s timed out; not delivered locally", channel)
                return
            except FAILURES as exc:
                # redis-py reloads its slot map before its next command by itself
                log.info("publish on %s failed, delivering locally: %s", channel, exc)
        self.deliver_local(channel, envelope)

    async def _pipeline(self, items: Sequence[tuple[str, Envelope]]) -> list[Any]:
        """One pipeline of SPUBLISH/PUBLISH, retried once on a broken connection."""
        retried = False
        while True:
            pipe = self._cluster.pipeline()
            for channel, envelope in items:
                if is_sharded(channel):
                    pipe.spublish(channel, envelope.to_json())
                else:
                    # redis-py blocks ClusterPipeline.publish() (PIPELINE_BLOCKED_COMMANDS)
                    # but routes a raw PUBLISH by its channel's slot, as it does outside
                    # pipelines
                    pipe.execute_command("PUBLISH", channel, envelope.to_json())
            try:
                return await pipe.execute(raise_on_error=False)
            except RedisConnectionError:
                if retried:
                    raise
                retried = True

    async def _publish_group(self, items: Sequence[tuple[str, Envelope]]) -> list[str]:
        """The items of one node in one pipeline; per item ``ok``, ``timeout`` or
        ``failed``."""
        try:
            async with self._in_flight:
                replies = await self._pipeline(items)
        except (RedisTimeoutError, TimeoutError):
            log.warning("%d publishes timed out; not delivered locally", len(items))
            return ["timeout"] * len(items)
        except FAILURES as exc:
            log.info("%d publishes failed, delivering locally: %s", len(items), exc)
            return ["failed"] * len(items)
        return [
            "timeout"
            if isinstance(reply, (RedisTimeoutError, TimeoutError))
            else "failed"
            if isinstance(reply, BaseException)
            else "ok"
            for reply in replies
        ]

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        """:meth:`publish` of each, one pipeline per target master (sent side by side,
        each in order, so one channel's envelopes keep their order); what fails is
        delivered locally, what times out is not."""
        if not items:
            return
        if not self._available:
            for channel, envelope in items:
                self.deliver_local(channel, envelope)
            return
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for index, (channel, _) in enumerate(items):
            groups[self._owner(channel) or ""].append(index)
        indexes = list(groups.values())
        outcomes = await asyncio.gather(
            *(self._publish_group([items[i] for i in group]) for group in indexes)
        )
        failed = sorted(
            i
            for group, outcome in zip(indexes, outcomes, strict=True)
            for i, result in zip(group, outcome, strict=True)
            if result == "failed"
        )
        for i in failed:
            self.deliver_local(*items[i])

    def deliver_local(self, channel: str, envelope: Envelope) -> None:
        if self._handler is not None and channel in self._wanted:
            asyncio.get_running_loop().call_soon(self._handler, channel, envelope)
