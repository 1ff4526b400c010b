"""The Redis implementation of :class:`~stomprelay.cluster.base.Bus` (redis-py asyncio).

Redis errors never leave this module: they become local-only delivery. The bus
owns one dedicated pub/sub connection and rebuilds it itself after any failure,
re-subscribing every wanted channel before it reports itself available again;
it does not rely on redis-py's PubSub to resubscribe on reconnect. Under
Sentinel it also follows the sentinels' failover events. When dispatching falls
behind, the reader reads ahead into room lanes (:mod:`stomprelay.cluster.lanes`) and
serves them in turns, so a flooded room does not hold back a quiet one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stomprelay.bounded import bounded, stop_task
from stomprelay.cluster.base import BusHandler
from stomprelay.cluster.connect import CLOSE_TIMEOUT, COMMAND_TIMEOUT, RedisTarget, make_client
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.lanes import BUDGET, Lanes
from stomprelay.cluster.redis_io import as_text
from stomprelay.errors import ProtocolError

log = logging.getLogger(__name__)

#: Sentinel events that mean a failover of the master is under way or over.
SENTINEL_EVENTS = (
    "+failover-state-send-slaveof-noone",
    "+promoted-slave",
    "+switch-master",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
)
#: Longest a failover in progress keeps a relay off Redis (s) without a switch.
FAILOVER_HOLD = 15.0


class RedisBus:
    """Pub/sub over Redis with self-managed reconnection and resubscription.

    :meth:`close` returns within ``close_timeout`` seconds, whatever Redis and the tasks do.
    """

    def __init__(
        self,
        url: RedisTarget | str,
        reconnect_interval: float = 0.5,
        ping_interval: float = 1.0,
        dead_after: float = 3.0,
    ) -> None:
        self.target = RedisTarget.of(url)
        self.url = self.target.url
        self.reconnect_interval = reconnect_interval
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        #: Called with True/False when availability changes.
        self.on_state_change: Callable[[bool], None] | None = None
        self._client = make_client(self.target, decode=False, health_check=1)
        #: The pub/sub connection's own client: this module watches it with PINGs.
        self._sub_client = make_client(self.target, decode=False)
        self._handler: BusHandler | None = None
        self._wanted: set[str] = set()
        #: Channels subscribed on this connection and not confirmed yet.
        self._waiting: set[str] = set()
        #: What the reader read ahead while dispatching was behind (issue 18).
        self._lanes = Lanes(self._serve)
        self._pubsub: PubSub | None = None
        self._available = False
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._closing = False
        #: Sentinel announced a new master: the pub/sub connection is dropped, unless
        #: it is on the announced address already (``_switched_to``).
        self._switched = False
        self._switched_to: tuple[str, int] | None = None
        #: Until when a failover in progress keeps the bus down (monotonic s).
        self._hold_until = 0.0
        self._watch: asyncio.Task[None] | None = None
        self.close_timeout = CLOSE_TIMEOUT

    @property
    def available(self) -> bool:
        return self._available

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._run(), name="redis-bus")
        if self.target.mode == "sentinel":
            self._watch = asyncio.create_task(self._watch_sentinels(), name="sentinel-watch")
        await self._first_attempt.wait()

    async def close(self) -> None:
        """Stop the reader and the sentinel watch, then drop the connections, each in half
        of ``close_timeout``: what has not finished by then (a paused Redis, a reader that
        swallowed its cancellation) is logged and left behind (:mod:`stomprelay.bounded`)."""
        self._closing = True
        step = self.close_timeout / 2
        names = {"reader": self._task, "sentinel watch": self._watch}
        await asyncio.gather(
            *(stop_task(task, f"redis bus: {name}", step) for name, task in names.items() if task)
        )
        # The relay is closing its clients: what was read ahead goes nowhere.
        if dropped := self._lanes.clear():
            log.info("redis bus closed with %d envelopes read and not dispatched", dropped)
        with contextlib.suppress(RedisError, OSError):
            await bounded("redis bus: closing its connections", self._close_clients(), step)

    async def _close_clients(self) -> None:
        await self._drop_pubsub()
        for client in (self._client, self._sub_client):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    def _set_available(self, value: bool) -> None:
        if value == self._available:
            return
        self._available = value
        log.warning("redis bus %s", "available" if value else "unavailable: local delivery only")
        if self.on_state_change is not None:
            self.on_state_change(value)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for futures in self._confirm.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._confirm.clear()
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                log.info("redis pub/sub connection lost: %s", exc)
            if self._closing:
                return
            # What was read before the failure is dispatched before the bus says it is
            # down, as when every envelope was dispatched in the read that brought it.
            while self._lanes.backlog:
                self._lanes.run()
                await asyncio.sleep(0)
            self._set_available(False)
            await self._drop_pubsub()
            self._first_attempt.set()
            await asyncio.sleep(self.reconnect_interval)

    async def _session(self) -> None:
        """One pub/sub connection's life: subscribe all, then read until it fails."""
        if self.failover_pending():
            raise RedisConnectionError("sentinel failover in progress")
        pubsub = self._sub_client.pubsub(ignore_subscribe_messages=False)
        await pubsub.connect()
        sentinel = self.target.mode == "sentinel"
        if sentinel:
            await self._check_role(pubsub)
        self._pubsub = pubsub
        wanted = sorted(self._wanted)
        self._waiting = set(wanted)
        if wanted:
            await pubsub.subscribe(*wanted)
        else:
            self._set_available(True)
            self._first_attempt.set()
        # A PING goes out every ping_interval; any reply clears it. One left
        # unanswered for dead_after means Redis hangs (paused, or a dead link
        # that TCP has not noticed yet). Replies are read before judging, so a
        # pause of this process itself does not count against Redis.
        last_ping = 0.0
        unanswered_since: float | None = None
        lanes = self._lanes
        # _closing ends a reader that swallowed its cancellation (stomprelay.bounded)
        while not self._closing:
            if lanes.backlog:
                # Behind: take what the socket holds already into the room lanes, serve
                # one budget of them round-robin, and let the loop run (socket writes).
                message = None
                replied = await self._read_ahead(pubsub)
                lanes.run()
                await asyncio.sleep(0)
            else:
                message = await pubsub.get_message(timeout=min(self.ping_interval, 0.5))
                replied = message is not None
            now = time.monotonic()
            if replied:
                unanswered_since = None
            elif (
                unanswered_since is not None
                and now - unanswered_since > self.dead_after
                and not lanes.full  # a full reader is not reading: the reply may wait
            ):
                raise TimeoutError(f"no reply from redis for {self.dead_after:g} s")
            if self._switched:
                self._switched = False
                if not _connected_to(pubsub, self._switched_to):
                    raise RedisConnectionError("sentinel announced a new master")
                # The sentinel that announced it was not the one that led the failover:
                # this connection found the new master before the announcement reached
                # it, and the relay has resynchronised there already.
                log.info("sentinel announced the master this bus is on already")
            if now - last_ping >= self.ping_interval:
                if sentinel:
                    await self._check_master(pubsub)
                await pubsub.ping()
                last_ping = now
                if unanswered_since is None:
                    unanswered_since = now
            if message is None:
                continue
            self._received(message)
            # The replies that came in the same read are parsed already: handled
            # here, without a get_message (and its timeout and retry) each; past a
            # budget of them, the rest goes to the lanes.
            for served, reply in enumerate(buffered(pubsub), 1):
                # a list, or hiredis's PushNotification (a list) under RESP3
                if (
                    isinstance(reply, list)
                    and len(reply) == 3
                    and reply[0] == b"message"
                    and reply[1] is not None
                ):
                    self._dispatch(as_text(reply[1]), reply[2])
                else:
                    handled = await pubsub.handle_message(reply)
                    if handled is not None:
                        self._received(handled)
                if served >= BUDGET:
                    await self._read_ahead(pubsub)
                    break

    async def _read_ahead(self, pubsub: PubSub) -> bool:
        """Take the replies the connection holds already (parsed, or bytes its stream has
        buffered) into the lanes, until they are full, without waiting for more; True
        when there was one. Nothing is read ahead with a parser other than hiredis's
        (:func:`buffered` takes nothing from it either, so the lanes stay empty)."""
        parser = getattr(pubsub.connection, "_parser", None)
        reader = getattr(parser, "_reader", None)
        stream = getattr(parser, "_stream", None)
        if parser is None or stream is None or not hasattr(reader, "gets"):
            return False
        lanes = self._lanes
        replied = False
        while not lanes.full:
            reply = reader.gets()  # type: ignore[union-attr]
            if reply is NOT_ENOUGH_DATA:
                # StreamReader has no public look at its buffer (the parser's can_read
                # looks the same way); with bytes there, a read returns without waiting.
                if not stream._buffer and not stream.at_eof():
                    return replied
                await parser.read_from_socket()  # at EOF: raises ConnectionError
                continue
            if isinstance(reply, BaseException):
                raise reply
            if type(reply) is list and reply and isinstance(reply[0], BaseException):
                raise reply[0]
            replied = True
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                if reply[1] is not None:
                    lanes.put(as_text(reply[1]), reply[2])
                continue
            handled = await pubsub.handle_message(reply)  # type: ignore[no-untyped-call]
            if handled is None or handled["channel"] is None:
                continue
            if handled["type"] == "subscribe":
                # in the channel's lane: confirmed after the envelopes read before it
                lanes.put(as_text(handled["channel"]), None)
            elif handled["type"] == "message":
                lanes.put(as_text(handled["channel"]), handled["data"])
        return replied

    def _received(self, message: dict[str, Any]) -> None:
        """One pub/sub message: a subscription confirmed, or a message to dispatch."""
        kind = message["type"]
        if kind == "subscribe":
            self._confirmed(as_text(message["channel"]))
        elif kind == "message" and message["channel"] is not None:
            self._dispatch(as_text(message["channel"]), message["data"])

    def _serve(self, channel: str, data: bytes | None) -> None:
        """One item of a lane: an envelope, or (None) the channel's confirmation."""
        if data is None:
            self._confirmed(channel)
        else:
            self._dispatch(channel, data)

    def _confirmed(self, channel: str) -> None:
        self._waiting.discard(channel)
        for future in self._confirm.pop(channel, []):
            if not future.done():
                future.set_result(None)
        if not self._waiting and not self._available:
            self._set_available(True)
            self._first_attempt.set()

    def failover_pending(self) -> bool:
        """A sentinel is promoting a replica and has not announced it yet: writes
        would still reach the old master and be lost (docs/redis.md, "Sentinel")."""
        return time.monotonic() < self._hold_until

    async def _watch_sentinels(self) -> None:
        """Follow a sentinel's failover events for this master. From the moment it
        promotes a replica until it announces the switch, the bus stays down (the
        relay journals what its clients send, ``RedisRegistry.ping`` refuses), so
        nothing is written to a master on its way out; at ``+switch-master`` the
        pub/sub connection is dropped and the relay resynchronises against the new one,
        unless the connection is on the new master already (the sentinel that led the
        failover named it to the relay's probe before this one announced it)."""
        name = self.target.master_name
        while not self._closing:
            for host, port in self.target.sentinels:
                client = aioredis.Redis(host=host, port=port, socket_connect_timeout=1)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(*SENTINEL_EVENTS)
                    while not self._closing:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is None or message.get("type") != "message":
                            continue
                        event, data = as_text(message["channel"]), as_text(message["data"])
                        if not (data.startswith(name + " ") or f" @ {name} " in data):
                            continue
                        log.warning("sentinel %s:%d: %s %s", host, port, event, data)
                        if event == "+switch-master":
                            self._hold_until = 0.0
                            self._switched_to = switched_to(data)
                            self._switched = True
                        elif event.startswith("-failover-abort"):
                            self._hold_until = 0.0
                        else:
                            self._hold_until = time.monotonic() + FAILOVER_HOLD
                            self._switched_to = None
                            self._switched = True
                except (RedisError, OSError) as exc:
                    log.info("sentinel %s:%d not watched: %s", host, port, exc)
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                        await client.aclose()
            await asyncio.sleep(self.reconnect_interval)

    @staticmethod
    async def _check_role(pubsub: PubSub) -> None:
        """Before subscribing: a connection that reached a replica (a demoted master
        the sentinels have not caught up with) is dropped."""
        connection = pubsub.connection
        assert connection is not None
        await connection.send_command("ROLE")
        role = await connection.read_response()
        if as_text(role[0]) != "master":
            raise RedisConnectionError(f"pub/sub connection reached a {as_text(role[0])}")

    async def _check_master(self, pubsub: PubSub) -> None:
        """Subscribed, a connection cannot ask ROLE: ask the sentinels whether the
        master is still the one this connection is on (a graceful failover leaves
        it connected to a replica that hears no publish)."""
        connection = pubsub.connection
        pool = self._sub_client.connection_pool
        try:
            master = await pool.get_master_address()
        except (RedisError, OSError) as exc:
            log.info("sentinels not answering, keeping the pub/sub connection: %s", exc)
            return
        if connection is not None and (connection.host, connection.port) != tuple(master):
            raise RedisConnectionError(f"the master moved to {master[0]}:{master[1]}")

    def _dispatch(self, channel: str, data: bytes) -> None:
        if self._handler is None or channel not in self._wanted:
            return
        try:
            envelope = Envelope.from_json(data)
        except ProtocolError as exc:
            log.warning("ignoring malformed envelope on %s: %s", channel, exc.detail)
            return
        self._handler(channel, envelope)

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns after Redis confirmed (or at once when degraded)."""
        self._wanted.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # the next connection subscribes every wanted channel
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(future)
        try:
            await pubsub.subscribe(channel)
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await future
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("subscribe %s not confirmed: %s", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await pubsub.unsubscribe(channel)

    async def publish(self, channel: str, envelope: Envelope) -> None:
        """PUBLISH; when Redis is unreachable, deliver to local subscribers only."""
        if self._available:
            try:
                await self._client.publish(channel, envelope.to_json())
                return
            except (RedisTimeoutError, TimeoutError):
                # Redis may still run it and send it back: delivering it here
                # too would deliver it twice.
                log.warning("publish on %s timed out; not delivered locally", channel)
                return
            except (RedisError, OSError) as exc:
                log.info("publish on %s failed, delivering locally: %s", channel, exc)
        self.deliver_local(channel, envelope)

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        """PUBLISH each in one pipeline (Redis runs them in order); as :meth:`publish`
        when Redis is unreachable or fails."""
        if self._available:
            pipe = self._client.pipeline(transaction=False)
            for channel, envelope in items:
                pipe.publish(channel, envelope.to_json())
            try:
                await pipe.execute()
                return
            except (RedisTimeoutError, TimeoutError):
                log.warning("%d publishes timed out; not delivered locally", len(items))
                return
            except (RedisError, OSError) as exc:
                log.info("%d publishes failed, delivering locally: %s", len(items), exc)
            finally:
                await pipe.reset()
        for channel, envelope in items:
            self.deliver_local(channel, envelope)

    def deliver_local(self, channel: str, envelope: Envelope) -> None:
        if self._handler is not None and channel in self._wanted:
            asyncio.get_running_loop().call_soon(self._handler, channel, envelope)


def buffered(pubsub: PubSub) -> Iterator[Any]:
    """The replies the pub/sub connection's parser holds complete already, taken
    from it in order (none with a parser other than hiredis's). Errors are raised
    as ``read_response`` raises them."""
    connection = pubsub.connection
    reader = getattr(getattr(connection, "_parser", None), "_reader", None)
    if reader is None or not hasattr(reader, "gets") or not reader.has_data():
        return
    while True:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            return
        if isinstance(reply, BaseException):
            raise reply
        if type(reply) is list and reply and isinstance(reply[0], BaseException):
            raise reply[0]
        yield reply


def switched_to(data: str) -> tuple[str, int] | None:
    """The new master's address in a ``+switch-master`` event
    (``<name> <old-ip> <old-port> <new-ip> <new-port>``)."""
    fields = data.split()
    if len(fields) != 5 or not fields[4].isdigit():
        return None
    return fields[3], int(fields[4])


def _connected_to(pubsub: PubSub, address: tuple[str, int] | None) -> bool:
    connection = pubsub.connection
    if address is None or connection is None:
        return False
    return (connection.host, connection.port) == address
