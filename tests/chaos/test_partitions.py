"""Partitions, stalls and races in the Redis cluster layer.

Each test pins a defect review found in ``stomprelay/cluster``, ``relay.py`` or
``rooms.py`` against the contract (sections 3-4) or docs/redis.md. Where a race needs
a wide window, the window is widened with a documented knob (a constructor argument,
a CLI flag) or by slowing the network with :class:`Proxy` / stalling Redis with a busy
script, never by changing the code under test.
"""

# ruff: noqa: ASYNC109, PT018

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from clusterhelpers import (
    LIVENESS_INTERVAL,
    LIVENESS_TTL,
    RELAY_ARGS,
    SWEEP_INTERVAL,
    eventually,
    right_after_refresh,
)
from procs import Proxy, RedisServer, RelayProcess, redis_server_binary
from stompclient import StompClient, StompClientError, is_event

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.redis_bus import RedisBus
from stomprelay.errors import BackendUnavailable
from stomprelay.relay import Relay
from stomprelay.transport import RelayServer

pytestmark = pytest.mark.redis

ROOM = "lobby"
TOPIC = f"/topic/room/{ROOM}"
K = Keys()

# -- helpers ---------------------------------------------------------------------------


def stall_redis(url: str, seconds: float) -> threading.Thread:
    """Block Redis for ``seconds`` with a busy Lua script (as a slow command, a fork on a
    big dataset or a blocked disk would); commands queued meanwhile run afterwards."""
    script = """
    local t = redis.call('TIME')
    local start = t[1] * 1000000 + t[2]
    while true do
      local n = redis.call('TIME')
      if n[1] * 1000000 + n[2] - start > tonumber(ARGV[1]) then break end
    end
    return 1
    """
    started = threading.Event()

    def run() -> None:
        client = redis.Redis.from_url(url, socket_timeout=None)
        try:
            client.ping()
            started.set()
            client.eval(script, 0, int(seconds * 1_000_000))
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    time.sleep(0.05)  # the EVAL is on its way
    return thread


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    try:
        redis_server_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(
        host="127.0.0.1", port=redis_server.port, decode_responses=True, socket_timeout=10
    )
    yield client
    client.close()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[Proxy]:
    p = await Proxy(redis_server.port).start()
    yield p
    await p.close()


@pytest.fixture
def start_relay(
    tmp_path: Path, redis_server: RedisServer
) -> Iterator[Callable[..., Awaitable[RelayProcess]]]:
    """``await start_relay("relay-a", extra=[...], url=...)``: a relay process (started in a
    thread, so a :class:`Proxy` in this event loop keeps serving it)."""
    started: list[RelayProcess] = []

    async def factory(
        server_id: str,
        *,
        extra: list[str] | None = None,
        url: str | None = None,
        wait_ready: bool = True,
    ) -> RelayProcess:
        proc = RelayProcess(
            tmp_path,
            server_id,
            redis_url=url or redis_server.url,
            extra=[*RELAY_ARGS, *(extra or [])],
        )
        started.append(proc)
        return await asyncio.to_thread(proc.start, wait_ready)

    yield factory
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[StompClient]]]:
    made: list[StompClient] = []

    async def factory(url: str, **kwargs: Any) -> StompClient:
        client = await StompClient.connect(url, **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


def ws_url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def room_events(client: StompClient, sub: str, **fields: Any) -> list[dict[str, Any]]:
    return client.events(sub, **fields)


# -- 1. RedisBus: a channel subscribed while the bus resubscribes is never subscribed ----


async def test_bus_subscribe_and_unsubscribe_during_resubscription_take_effect(
    redis_server: RedisServer, proxy: Proxy
) -> None:
    received: list[str] = []
    bus = RedisBus(proxy.url)
    await bus.start(lambda channel, envelope: received.append(channel))
    publisher = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.subscribe("chan-a")
        await bus.subscribe("chan-c")
        assert bus.available
        # The pub/sub link drops; when it comes back Redis answers with 0.4 s latency.
        proxy.delay = 0.4
        proxy.cut()
        await eventually(lambda: not bus.available, what="bus notices the cut")
        proxy.heal()
        # The bus has reconnected and sent SUBSCRIBE for the channels it wanted then;
        # the confirmations are on their way. A client subscribes now (a SUBSCRIBE frame
        # to a new room) and another one's last subscriber of chan-c goes away: the bus
        # says "not available", updates _wanted and returns.
        await eventually(
            lambda: bus._pubsub is not None and not bus.available,
            timeout=5,
            interval=0.005,
            what="bus resubscribing",
        )
        await bus.subscribe("chan-b")
        await bus.unsubscribe("chan-c")
        await eventually(lambda: bus.available, timeout=5, what="bus available again")
        proxy.delay = 0.0
        await asyncio.sleep(0.5)
        for channel in ("chan-b", "chan-a"):
            envelope = Envelope(f"m-{channel}", "test", "", (), b"x", 0)
            await publisher.publish(channel, envelope.to_json())
        await eventually(lambda: "chan-a" in received, what="chan-a message")
        await asyncio.sleep(0.3)
        numsub = dict(await publisher.pubsub_numsub("chan-b", "chan-c"))
        assert "chan-b" in received and numsub[b"chan-c"] == 0, (
            f"subscribed chan-b during the resubscribe window: received {received}; "
            f"unsubscribed chan-c then: Redis still counts {numsub[b'chan-c']} subscriber(s)"
        )
    finally:
        await publisher.aclose()
        await bus.close()


# -- 2./3. A registry partition shorter than the TTL: restore(announce=False) ----------------

# relay-a reaches Redis through the proxy; it refreshes rarely, so its recovery after the
# partition is the bus's (_bus_state -> _recover -> refresh -> restore), and its heartbeat
# key outlives the partition (it is not reaped: Redis kept all of its data).
PARTITIONED = ["--liveness-interval", "5", "--liveness-ttl", "15"]


def _ready(relay: RelayProcess, status: int) -> Callable[[], None]:
    def check() -> None:
        got = relay.get_json("/ready")[0]
        assert got == status, got

    return check


async def test_leave_during_partition_reaches_local_subscribers_once(
    start_relay, clients, proxy: Proxy
) -> None:
    b = await start_relay("relay-b")
    a = await start_relay("relay-a", url=proxy.url, extra=PARTITIONED)
    a1 = await clients(a.ws_url, name="a1@A")
    a2 = await clients(a.ws_url, name="a2@A")
    b1 = await clients(b.ws_url, name="b1@B")
    for client in (a1, a2, b1):
        await client.subscribe(TOPIC, "room")
    for client, name in ((a1, "ann"), (a2, "amy"), (b1, "ben")):
        await client.join(ROOM, name)
    for client in (a1, a2, b1):
        await client.collect(3, "room", lambda f: is_event(f, type="JOIN"))

    proxy.cut()
    await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")
    await a2.leave(ROOM)
    await a1.next_event("room", type="LEAVE", sessionId=a2.session_id)  # local delivery
    proxy.heal()
    await eventually(_ready(a, 200), timeout=10, what="relay-a ready again")

    # relay-b's subscriber learns of the leave (the restore announces it): good
    await b1.next_event("room", timeout=5, type="LEAVE", sessionId=a2.session_id)
    await asyncio.sleep(1.0)
    leaves = a1.events("room", type="LEAVE", sessionId=a2.session_id)
    assert len(leaves) == 1, f"a1 saw amy leave {len(leaves)} times: {leaves}"


async def test_join_during_partition_is_announced_to_other_relays_after(
    start_relay, clients, proxy: Proxy, rdb: redis.Redis
) -> None:
    b = await start_relay("relay-b")
    a = await start_relay("relay-a", url=proxy.url, extra=PARTITIONED)
    a1 = await clients(a.ws_url, name="a1@A")
    b1 = await clients(b.ws_url, name="b1@B")
    for client in (a1, b1):
        await client.subscribe(TOPIC, "room")
    for client, name in ((a1, "ann"), (b1, "ben")):
        await client.join(ROOM, name)
    for client in (a1, b1):
        await client.collect(2, "room", lambda f: is_event(f, type="JOIN"))

    proxy.cut()
    await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")
    a3 = await clients(a.ws_url, name="a3@A")
    await a3.subscribe(TOPIC, "room")
    await a3.join(ROOM, "abe")
    await a1.next_event("room", type="JOIN", sessionId=a3.session_id)  # local delivery
    proxy.heal()
    await eventually(_ready(a, 200), timeout=10, what="relay-a ready again")

    def a3_registered() -> None:
        members = rdb.smembers(K.room_participants(ROOM))
        assert a3.session_id in members, members

    await eventually(a3_registered, timeout=5, what="abe back in the registry")
    await a3.chat(ROOM, "hello from abe")
    await b1.next_event("room", timeout=5, type="CHAT", message="hello from abe")
    joins = b1.events("room", type="JOIN", sessionId=a3.session_id)
    assert joins, "ben gets chat from abe, a participant nobody on relay-b was told joined"


# -- 4. Relay.restore races client operations -----------------------------------------------


class SlowRestore:
    """Hold each restore between the relay's snapshot (taken when the call starts) and
    its first step in Redis (the relay's own keys, ``server_put``): that await is where
    a real restore waits for a new connection, NOSCRIPT and SCRIPT LOAD after a Redis
    restart."""

    def __init__(self, relay: Relay) -> None:
        store = relay.registry.store  # type: ignore[attr-defined]
        self._original = store.script
        self.entered: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        store.script = self._slow

    async def _slow(self, name: str, *args: Any) -> Any:
        if name == "server_put":
            gate = asyncio.Event()
            self.entered.put_nowait(gate)
            await gate.wait()
        return await self._original(name, *args)

    async def next(self) -> asyncio.Event:
        """Wait until a RESTORE is in flight; set the returned event to let it run."""
        return await asyncio.wait_for(self.entered.get(), 5)

    async def finish(self, relay: Relay, timeout: float = 10) -> None:
        """Let every further RESTORE run at once, until the relay is ready again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not relay.ready:
            assert loop.time() < deadline, "relay not ready again"
            with contextlib.suppress(TimeoutError):
                (await asyncio.wait_for(self.entered.get(), 0.05)).set()


async def test_session_disconnecting_during_a_restore_is_removed(
    redis_server: RedisServer, inproc, clients, rdb: redis.Redis
) -> None:
    server = await inproc(
        redis_server.url,
        "relay-a",
        liveness_interval=LIVENESS_INTERVAL,
        liveness_ttl=LIVENESS_TTL,
        sweep_interval=SWEEP_INTERVAL,
    )
    relay = server.relay
    a1 = await clients(ws_url(server), name="a1")
    a2 = await clients(ws_url(server), name="a2")
    a3 = await clients(ws_url(server), name="a3")
    await a2.subscribe(TOPIC, "room")
    await a1.join(ROOM, "ann")
    await a2.next_event("room", type="JOIN", sessionId=a1.session_id)
    sid = a1.session_id

    slow = SlowRestore(relay)
    # any failed registry call (a timeout, a blip) makes the next heartbeat resynchronise
    relay.note_backend_error(BackendUnavailable("redis: TimeoutError: simulated blip"))
    gate = await slow.next()
    # other clients keep joining rooms, and a1 leaves, while the restore is in flight
    busy = [asyncio.create_task(a3.join(room, "abe")) for room in ("r1", "r2")]
    leaving = asyncio.create_task(a1.disconnect())
    await asyncio.sleep(0.3)
    gate.set()
    await slow.finish(relay)
    await asyncio.gather(*busy, leaving)
    await eventually(lambda: not rdb.exists(K.session(sid)), what="session removed")
    for room in ("r1", "r2"):
        assert a3.session_id in rdb.smembers(K.room_participants(room))

    # a1 is gone and relay-a is alive: nothing may keep a1 for longer than TTL + a sweep
    await asyncio.sleep(LIVENESS_TTL + SWEEP_INTERVAL + 1.0)
    leftovers = {
        "session hash": rdb.hgetall(K.session(sid)),
        "in sessions:active": sid in rdb.smembers(K.sessions_active),
        "in lobby": sid in rdb.smembers(K.room_participants(ROOM)),
    }
    assert not any(leftovers.values()), f"disconnected session {sid} still registered: {leftovers}"


async def test_join_during_a_restore_is_announced_once_and_kept(
    redis_server: RedisServer, inproc, clients, rdb: redis.Redis
) -> None:
    server = await inproc(
        redis_server.url,
        "relay-a",
        liveness_interval=LIVENESS_INTERVAL,
        liveness_ttl=LIVENESS_TTL,
        sweep_interval=SWEEP_INTERVAL,
    )
    relay = server.relay
    a1 = await clients(ws_url(server), name="a1")
    a2 = await clients(ws_url(server), name="a2")
    await a2.subscribe("/topic/room/kitchen", "kitchen")
    await a1.join(ROOM, "ann")

    slow = SlowRestore(relay)
    relay.note_backend_error(BackendUnavailable("redis: TimeoutError: simulated blip"))
    gate = await slow.next()
    joining = asyncio.create_task(a1.join("kitchen", "ann"))  # while the restore is in flight
    await asyncio.sleep(0.3)
    gate.set()
    await slow.finish(relay)
    await joining
    await a2.next_event("kitchen", type="JOIN", sessionId=a1.session_id)
    await asyncio.sleep(0.5)
    assert len(a2.events("kitchen", type="JOIN", sessionId=a1.session_id)) == 1

    leaves = a2.events("kitchen", type="LEAVE", sessionId=a1.session_id)
    members = rdb.smembers(K.room_participants("kitchen"))
    assert a1.session_id in members and not leaves, (
        f"a1 joined kitchen and never left; registry members {members}, LEAVEs seen {leaves}"
    )


# -- 5. A join that finds the session unregistered re-registers it silently --------------------


async def test_first_join_after_a_redis_restart_is_announced(
    redis_server: RedisServer, start_relay, inproc, clients, rdb: redis.Redis
) -> None:
    b = await start_relay("relay-b")
    # relay-a notices the restart only late (bus reconnect / heartbeat every 30 s): it widens
    # the window that exists anyway between Redis coming back and relay-a's re-registration
    # (up to reconnect_interval + one round trip with the defaults)
    server = await inproc(
        redis_server.url,
        "relay-a",
        bus=RedisBus(redis_server.url, reconnect_interval=30),
        liveness_interval=30,
        liveness_ttl=60,
        sweep_interval=30,
    )
    a1 = await clients(ws_url(server), name="a1@A")
    b1 = await clients(b.ws_url, name="b1@B")
    await b1.subscribe(TOPIC, "room")
    await b1.join(ROOM, "ben")
    await b1.next_event("room", type="JOIN", sessionId=b1.session_id)

    await asyncio.to_thread(redis_server.restart)  # same port, empty data set
    await eventually(_ready(b, 200), timeout=10, what="relay-b ready again")
    # a request/reply use of the registry first: it meets relay-a's stale pooled connection
    # (and fails over to the local list), so the join below reaches the new Redis
    for n in range(2):
        await a1.subscribe(f"/app/room/{ROOM}/participants", f"who-{n}", receipt=False)
        await a1.next_message(f"who-{n}")
    await a1.join(ROOM, "ann")

    def joined() -> None:
        assert a1.session_id in rdb.smembers(K.room_participants(ROOM))

    await eventually(joined, timeout=5, what="ann in the lobby")
    try:
        await b1.next_event("room", timeout=3, type="JOIN", sessionId=a1.session_id)
    except StompClientError:
        pytest.fail("ann joined the lobby (she is in the registry) but no JOIN was published")


# -- 6. Sessions registered under a relay that is not in servers:active are never reaped --------


async def test_session_reaching_a_reaped_relay_re_registers_it(
    start_relay, clients, rdb: redis.Redis
) -> None:
    ttl = 3.0
    # relay-a refreshes every 2.5 s: a reap lands between two of its refreshes
    a = await start_relay(
        "relay-a", extra=["--liveness-interval", "2.5", "--liveness-ttl", str(ttl)]
    )
    b = await start_relay("relay-b")
    b1 = await clients(b.ws_url, name="b1@B")
    await b1.subscribe(TOPIC, "room")

    heartbeat = K.server_heartbeat("relay-a")
    await right_after_refresh(rdb, heartbeat)
    rdb.pexpire(heartbeat, 1)  # relay-a missed its heartbeat (a freeze, a slow network)
    await eventually(
        lambda: not rdb.sismember(K.servers_active, "relay-a"), timeout=3, what="relay-a reaped"
    )
    a1 = await clients(a.ws_url, name="a1@A")
    await a1.join(ROOM, "ann")
    await b1.next_event("room", type="JOIN", sessionId=a1.session_id)
    # A session reaching a reaped relay makes it re-register at once (before its next
    # heartbeat), so the reaper watches it again...
    assert rdb.sismember(K.servers_active, "relay-a")
    assert a1.session_id in rdb.smembers(K.server_sessions("relay-a"))
    a.kill()  # ...and cleans up after it when it dies.

    await asyncio.sleep(ttl + SWEEP_INTERVAL + 2.0)
    leftovers = {
        "session hash": rdb.hgetall(K.session(a1.session_id)),
        "in sessions:active": a1.session_id in rdb.smembers(K.sessions_active),
        "in lobby": a1.session_id in rdb.smembers(K.room_participants(ROOM)),
        "owned by relay-a": rdb.smembers(K.server_sessions("relay-a")),
    }
    leaves = b1.events("room", type="LEAVE", sessionId=a1.session_id)
    assert not any(leftovers.values()) and leaves, (
        f"relay-a died {ttl + SWEEP_INTERVAL + 2.0:.1f}s ago; registry still has {leftovers}, "
        f"LEAVEs seen: {leaves}"
    )


# -- 7. A timed-out registry call is treated as "not executed" ----------------------------------


async def test_chat_during_a_redis_stall_is_published_once(
    redis_server: RedisServer, inproc, clients
) -> None:
    # dead_after is raised so that the bus's own ping watchdog (3 s, the same as the
    # command timeout) does not race the chat's timeout: with the defaults the outcome
    # depends on the phase of the 1 s pings.
    server = await inproc(
        redis_server.url, "relay-a", bus=RedisBus(redis_server.url, dead_after=30)
    )
    a1 = await clients(ws_url(server), name="a1")
    a2 = await clients(ws_url(server), name="a2")
    await a2.subscribe(TOPIC, "room")
    await a1.join(ROOM, "ann")
    await a2.next_event("room", type="JOIN", sessionId=a1.session_id)
    await a1.chat(ROOM, "warm-up")  # the CHAT script is loaded in Redis, as in any busy cluster
    await a2.next_event("room", type="CHAT", message="warm-up")

    watcher = aioredis.Redis.from_url(redis_server.url).pubsub()
    await watcher.subscribe(K.room_channel(ROOM))
    published: list[str] = []

    async def watch() -> None:
        while True:
            message = await watcher.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None:
                published.append(json.loads(message["data"])["id"])

    task = asyncio.create_task(watch())
    try:
        stall = stall_redis(redis_server.url, 3.6)
        await a1.send(
            f"/app/room/{ROOM}/message", {"message": "said once"}, receipt=True, timeout=15
        )
        await asyncio.to_thread(stall.join, 10)
        await a2.next_event("room", timeout=5, type="CHAT", message="said once")
        await asyncio.sleep(1.0)
        copies = a2.events("room", type="CHAT", message="said once")
        assert len(published) == 1 and len(copies) == 1, (
            f"one CHAT sent; published on Redis as {published}, a2 received {len(copies)}"
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


async def test_send_during_a_redis_stall_is_delivered_once_locally(
    redis_server: RedisServer, inproc, clients
) -> None:
    server = await inproc(
        redis_server.url, "relay-a", bus=RedisBus(redis_server.url, dead_after=30)
    )
    a1 = await clients(ws_url(server), name="a1")
    a2 = await clients(ws_url(server), name="a2")
    await a2.subscribe(TOPIC, "room")
    await a1.send(TOPIC, b"warm-up")  # the bus has a pooled connection, as any busy relay
    await a2.next_message("room", lambda f: f.body == b"warm-up")
    stall = stall_redis(redis_server.url, 3.6)
    await a1.send(TOPIC, b"sent once", receipt=True, timeout=15)
    await asyncio.to_thread(stall.join, 10)
    await a2.next_message("room", lambda f: f.body == b"sent once")
    await asyncio.sleep(1.0)
    copies = a2.received("room", lambda f: f.body == b"sent once")
    assert len(copies) == 1, (
        f"a2 received {len(copies)} copies: {[c.get('message-id') for c in copies]}"
    )


# -- 8. Sessions connecting while the registry is unreachable: no CONNECT event -----------------


async def test_session_connected_during_partition_gets_its_connect_event(
    start_relay, clients, proxy: Proxy, redis_server: RedisServer, rdb: redis.Redis
) -> None:
    a = await start_relay("relay-a", url=proxy.url, extra=PARTITIONED)
    watcher = aioredis.Redis.from_url(redis_server.url).pubsub()
    await watcher.subscribe(K.session_connect_channel, K.session_disconnect_channel)
    events: list[tuple[str, str]] = []

    async def watch() -> None:
        while True:
            message = await watcher.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None:
                body = json.loads(json.loads(message["data"])["body"])
                events.append((body["type"], body["sessionId"]))

    task = asyncio.create_task(watch())
    try:
        proxy.cut()
        await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")
        a1 = await clients(a.ws_url, name="a1@A")
        proxy.heal()
        await eventually(_ready(a, 200), timeout=10, what="relay-a ready again")
        await eventually(
            lambda: rdb.exists(K.session(a1.session_id)), what="a1 restored in the registry"
        )
        await a1.disconnect()
        await eventually(lambda: ("DISCONNECT", a1.session_id) in events, what="DISCONNECT")
        assert ("CONNECT", a1.session_id) in events, f"session events seen: {events}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


# -- 9. reregister() forgets the old run_id before the restore succeeded ------------------------


async def test_restore_retried_after_a_redis_restart_stays_silent(
    redis_server: RedisServer, start_relay, inproc, clients
) -> None:
    b = await start_relay("relay-b")
    server = await inproc(
        redis_server.url,
        "relay-a",
        liveness_interval=LIVENESS_INTERVAL,
        liveness_ttl=LIVENESS_TTL,
        sweep_interval=SWEEP_INTERVAL,
    )
    relay = server.relay
    a1 = await clients(ws_url(server), name="a1@A")
    b1 = await clients(b.ws_url, name="b1@B")
    await b1.subscribe(TOPIC, "room")
    await a1.join(ROOM, "ann")
    await b1.next_event("room", type="JOIN", sessionId=a1.session_id)

    store = relay.registry.store  # type: ignore[attr-defined]
    original = store.script
    failed: list[str] = []

    async def first_restore_fails(name: str, *args: Any) -> Any:
        if name == "server_put" and not failed:
            failed.append(name)
            raise BackendUnavailable("redis: ConnectionError: Connection closed by server.")
        return await original(name, *args)

    store.script = first_restore_fails
    await asyncio.to_thread(redis_server.restart)  # same port, empty data set
    await eventually(_ready(b, 200), timeout=10, what="relay-b ready again")
    await eventually(lambda: relay.ready, timeout=10, what="relay-a ready again")
    assert failed, "the first restore attempt was not made"
    await asyncio.sleep(1.0)
    joins = b1.events("room", type="JOIN", sessionId=a1.session_id)
    assert len(joins) == 1, f"Redis restarted empty, yet ben saw ann join {len(joins)} times"


async def test_a_relay_cut_off_journals_sends_and_resumes_are_not_recovered(
    start_relay, clients, proxy: Proxy
) -> None:
    """Degraded mode (docs/history.md): local delivery with x-degraded, a RECEIPT
    for what is journaled, x-recovered:false for a resume, then the journal
    reaches the other relay once, with offsets, and is not delivered twice here."""
    b = await start_relay("relay-b")
    a = await start_relay("relay-a", url=proxy.url, extra=PARTITIONED)
    a1 = await clients(a.ws_url, name="a1@A")
    b1 = await clients(b.ws_url, name="b1@B")
    for client in (a1, b1):
        await client.subscribe(TOPIC, "room")
    await a1.send(TOPIC, b"before", receipt=True)
    (before,) = await b1.collect(1, "room")
    epoch = before.get("x-epoch") or ""

    proxy.cut()
    await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")
    await a1.send(TOPIC, b"while cut", receipt=True)  # a RECEIPT: journaled
    local = await a1.next_message("room", lambda f: f.body == b"while cut")
    assert local.get("x-degraded") == "true"
    assert local.get("x-offset") is None
    resumer = await clients(a.ws_url, name="resumer@A")
    receipt = await resumer.subscribe_receipt(
        TOPIC, "s", [("x-since-offset", "0"), ("x-since-epoch", epoch)]
    )
    assert receipt.get("x-recovered") == "false"

    proxy.heal()
    await eventually(_ready(a, 200), timeout=10, what="relay-a ready again")
    got = await b1.next_message("room", lambda f: f.body == b"while cut", timeout=10)
    assert got.get("message-id") == local.get("message-id")
    assert got.get("x-offset") == "2"
    await a1.send(TOPIC, b"after", receipt=True)
    after = await a1.next_message("room", lambda f: f.body == b"after", timeout=5)
    assert after.get("x-offset") == "3"  # offset 2 skipped here: a1 had it already
    assert len(a1.received("room", lambda f: f.body == b"while cut")) == 1


async def test_a_full_journal_refuses_the_send_with_an_error_not_a_receipt(
    start_relay, clients, proxy: Proxy
) -> None:
    a = await start_relay("relay-a", url=proxy.url, extra=[*PARTITIONED, "--journal-size", "2"])
    a1 = await clients(a.ws_url, name="a1@A")
    await a1.subscribe(TOPIC, "room")
    proxy.cut()
    await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")
    await a1.send(TOPIC, b"one", receipt=True)
    await a1.send(TOPIC, b"two", receipt=True)
    with pytest.raises(StompClientError):
        await a1.send(TOPIC, b"three", receipt=True, timeout=2)
    (error,) = a1.errors
    assert error.get("message") == "Journal full"
    assert (error.get("receipt-id") or "").startswith("send-")
    assert not a1.received("room", lambda f: f.body == b"three")
    proxy.heal()


async def test_a_gap_the_log_no_longer_holds_is_one_notice_then_a_sync(
    start_relay, clients, proxy: Proxy
) -> None:
    """relay-a is cut off while more than --history-size messages are sent (and none is
    kept past that size: --history-min-age 0): after the heal its subscriber gets one
    x-gap notice for the trimmed offsets, then the retained ones in order, then a SYNC
    with the participant list."""
    trim = ["--history-size", "5", "--history-min-age", "0"]
    b = await start_relay("relay-b", extra=trim)
    a = await start_relay("relay-a", url=proxy.url, extra=[*PARTITIONED, *trim])
    a1 = await clients(a.ws_url, name="a1@A")
    b1 = await clients(b.ws_url, name="b1@B")
    for client, name in ((a1, "ann"), (b1, "ben")):
        await client.subscribe(TOPIC, "room")
        await client.join(ROOM, name)
    await a1.collect(2, "room", lambda f: is_event(f, type="JOIN"))
    proxy.cut()
    await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")
    for i in range(20):
        await b1.send(TOPIC, f"m{i}".encode(), receipt=True)
    proxy.heal()
    (notice,) = await a1.collect(1, "room", lambda f: f.get("x-gap") is not None, timeout=10)
    assert notice.get("x-gap") == "3-17"  # offsets 1-2 were the JOINs; 18-22 retained
    assert notice.body == b""
    retained = await a1.collect(5, "room", lambda f: f.body.startswith(b"m"), timeout=5)
    assert [f.get("x-offset") for f in retained] == ["18", "19", "20", "21", "22"]
    assert [f.body for f in retained] == [f"m{i}".encode() for i in range(15, 20)]
    (sync,) = await a1.collect(1, "room", lambda f: f.get("x-sync") == "true", timeout=10)
    body = json.loads(sync.body)
    assert body["type"] == "SYNC"
    assert sorted(p["username"] for p in body["participants"]) == ["ann", "ben"]
    assert sync.get("x-offset") is None


# -- 5. operators' kicks across a partition ------------------------------------------------

KICK_SECRET = "partition-secret-0123456789abcdef"


async def test_a_kick_made_during_a_partition_reaches_the_cut_off_relay_once_it_is_back(
    start_relay, clients, proxy: Proxy, redis_server: RedisServer
) -> None:
    """relay-a cannot hear the control channel while cut off; once Redis is back it
    ends the sessions of a user kicked meanwhile (a plain kick: only sessions that
    connected before it) and of a user suspended meanwhile, and nobody else's."""
    import subprocess
    import sys

    from stomprelay.tokens import issue_token

    auth = ["--jwt-secret", KICK_SECRET]
    b = await start_relay("relay-b", extra=auth)
    a = await start_relay("relay-a", url=proxy.url, extra=[*PARTITIONED, *auth])

    def token(user: str) -> str:
        return issue_token(KICK_SECRET, user)

    alice_a = await clients(a.ws_url, passcode=token("alice"), name="alice@A")
    alice_b = await clients(b.ws_url, passcode=token("alice"), name="alice@B")
    mallory_a = await clients(a.ws_url, passcode=token("mallory"), name="mallory@A")
    bob_a = await clients(a.ws_url, passcode=token("bob"), name="bob@A")

    proxy.cut()
    await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")

    def kick(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "stomprelay", "kick", *args, "--redis-url", redis_server.url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    await asyncio.to_thread(kick, "alice")
    await asyncio.to_thread(kick, "mallory", "--until", "10m")
    await alice_b.wait_closed(timeout=5)  # relay-b heard it at once
    assert not alice_a.closed and not mallory_a.closed  # relay-a could not
    late = await clients(a.ws_url, passcode=token("mallory"), name="mallory-late@A")

    proxy.heal()
    await eventually(_ready(a, 200), timeout=15, what="relay-a ready again")
    for client in (alice_a, mallory_a, late):
        await client.wait_closed(timeout=5)
        assert [e.get("message") for e in client.errors] == ["session ended by operator"]
    assert not bob_a.closed
    alice_back = await clients(a.ws_url, passcode=token("alice"), name="alice-back@A")
    assert alice_back.session_id, "a plain kick refuses nobody"
    with pytest.raises(StompClientError, match="access refused"):
        await StompClient.connect(a.ws_url, passcode=token("mallory"))


async def test_server_side_subscriptions_changed_during_a_partition_reach_the_relay_once_back(
    start_relay, clients, proxy: Proxy
) -> None:
    """relay-a cannot hear the server API's requests while cut off: the calls name it
    (503, not a hang), and once Redis is back its sessions of the user hold exactly
    the stored server-side subscriptions (one taken away, one given meanwhile)."""
    from clusterhelpers import api_post

    from stomprelay.usersubs import NOTICE_DESTINATION, subscription_id

    token = "partition-api-token"
    api = ["--admin-token", token, "--api-confirm-timeout", "1"]
    b = await start_relay("relay-b", extra=api)
    a = await start_relay("relay-a", url=proxy.url, extra=[*PARTITIONED, *api])
    alice_a = await clients(a.ws_url, login="alice", name="alice@A")
    alice_b = await clients(b.ws_url, login="alice", name="alice@B")
    bob_b = await clients(b.ws_url, login="bob", name="bob@B")
    await alice_a.subscribe(NOTICE_DESTINATION, "notices")

    async def call(action: str, destination: str) -> tuple[int, Any]:
        path = f"/api/users/alice/{action}"
        return await api_post(b.http, path, {"destination": destination}, token)

    status, body = await call("subscribe", "/topic/old")
    assert (status, body["sessions"]) == (200, 2), body
    assert json.loads((await alice_a.next_message("notices")).body)["action"] == "subscribe"

    proxy.cut()
    await eventually(_ready(a, 503), timeout=5, what="relay-a degraded")
    for action, destination in (("unsubscribe", "/topic/old"), ("subscribe", "/topic/new")):
        status, body = await call(action, destination)
        assert status == 503, body
        assert body["sessions"] == 1  # alice@B's
        assert body["unconfirmed"] == {"servers": ["relay-a"], "sessions": [alice_a.session_id]}

    proxy.heal()
    await eventually(_ready(a, 200), timeout=15, what="relay-a ready again")
    told = [json.loads(f.body) for f in await alice_a.collect(2, "notices", timeout=10)]
    assert sorted((n["action"], n["destination"]) for n in told) == [
        ("subscribe", "/topic/new"),
        ("unsubscribe", "/topic/old"),
    ]
    await bob_b.send("/topic/new", "new", receipt=True)
    for alice in (alice_a, alice_b):
        assert (await alice.next_message(subscription_id("/topic/new"))).body == b"new"
    await alice_a.subscribe("/topic/old", "own")
    await bob_b.send("/topic/old", "old", receipt=True)
    assert (await alice_a.next_message("own")).body == b"old"
    assert alice_a.received(subscription_id("/topic/old")) == []
