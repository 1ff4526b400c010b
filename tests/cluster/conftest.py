"""Fixtures for the cluster contract suite: one :class:`Cluster` per backend.

The ``cluster`` fixture is parametrised over the in-memory reference backend
and the Redis backend (a private ``redis-server`` per module, flushed before
every test). Both expose the same operations, and :meth:`Cluster.snapshot`
renders the backend's state as the contract's Redis keys (section 4), so the
same assertions run on both.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from clusterhelpers import is_registry_key
from procs import RedisServer
from redis.crc import key_slot

from stomprelay.cluster.base import Bus
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryBus, MemoryHub, MemoryRegistry
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.redis_bus import RedisBus
from stomprelay.cluster.registry import Registry

#: How long any awaited delivery may take before a test fails.
DELIVERY_TIMEOUT = 5.0
#: Polling interval while waiting for a delivery or an expiry.
POLL = 0.005
#: Channel every probe subscribes to; its markers flush everything published before.
BARRIER_CHANNEL = "test:barrier"
#: What a heartbeat key renders as in a snapshot (its value is not part of the contract).
HEARTBEAT = "<heartbeat>"

Snapshot = dict[str, Any]


async def wait_until(predicate: Callable[[], bool], what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after :data:`DELIVERY_TIMEOUT`."""
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while not predicate():  # noqa: ASYNC110 - handlers are plain callbacks
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {DELIVERY_TIMEOUT}s waiting for {what or predicate}"
        ) from None


class FakeClock:
    """The memory hub's clock (seconds), moved by the test."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_barrier_ids = itertools.count(1)


@dataclass
class Probe:
    """One bus (one relay, as far as the bus is concerned) and what it received."""

    bus: Bus
    received: list[tuple[str, Envelope]] = field(default_factory=list)

    def handler(self, channel: str, envelope: Envelope) -> None:
        self.received.append((channel, envelope))

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            await self.bus.subscribe(channel)

    def on(self, channel: str) -> list[Envelope]:
        """Envelopes received on ``channel``, in arrival order."""
        return [env for ch, env in self.received if ch == channel]

    def events(self, channel: str) -> list[dict[str, Any]]:
        """JSON bodies received on ``channel``."""
        return [json.loads(env.body) for env in self.on(channel)]

    async def wait_count(self, channel: str, count: int) -> list[Envelope]:
        await wait_until(
            lambda: len(self.on(channel)) >= count, what=f"{count} envelopes on {channel}"
        )
        return self.on(channel)

    async def barrier(self) -> None:
        """Wait until everything published so far has been delivered to this probe.

        A marker published now arrives after every earlier publish on any channel:
        Redis delivers a subscriber's messages in the order the PUBLISHes ran, the
        memory hub in ``call_soon`` order.
        """
        marker = f"barrier-{next(_barrier_ids)}"
        await self.bus.publish(BARRIER_CHANNEL, Envelope(marker, "test", "", (), b"", 0))
        await wait_until(
            lambda: any(env.id == marker for env in self.on(BARRIER_CHANNEL)),
            what=f"barrier {marker}",
        )


class Cluster:
    """A backend under test: a registry, buses and a view of the stored keys."""

    kind: str
    keys: Keys
    registry: Registry
    #: What a heartbeat key renders as in :meth:`snapshot`.
    HEARTBEAT = HEARTBEAT
    #: A ``redis.asyncio`` client on the backend's Redis (decoded); None for memory.
    raw: Any = None

    def __init__(self) -> None:
        self.keys = Keys()
        self.probes: list[Probe] = []

    def make_bus(self) -> Bus:
        raise NotImplementedError

    async def probe(self, *channels: str) -> Probe:
        """A started bus collecting what it receives, subscribed to ``channels``."""
        bus = self.make_bus()
        probe = Probe(bus)
        await bus.start(probe.handler)
        self.probes.append(probe)
        await probe.subscribe(BARRIER_CHANNEL, *channels)
        return probe

    async def snapshot(self) -> Snapshot:
        """Every contract key and its content: str, dict (hash) or set."""
        raise NotImplementedError

    async def pttl(self, key: str) -> int:
        raise NotImplementedError

    async def expire(self, server_id: str) -> None:
        """Return once ``server_id``'s heartbeat has expired."""
        raise NotImplementedError

    async def wipe(self) -> None:
        """Lose every key, as a Redis restarted without persistence does."""
        raise NotImplementedError

    async def outlive(self, key: str) -> None:
        """Return once ``key`` (one with a TTL) has expired."""
        raise NotImplementedError

    async def close(self) -> None:
        for probe in self.probes:
            await probe.bus.close()
        await self.registry.close()


class MemoryCluster(Cluster):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.hub = MemoryHub(clock=self.clock)
        self.registry = MemoryRegistry(self.hub, self.keys)

    def make_bus(self) -> Bus:
        return MemoryBus(self.hub)

    async def snapshot(self) -> Snapshot:
        k, hub = self.keys, self.hub
        out: Snapshot = {}
        if hub.indexes["servers"]:
            out[k.servers_active] = set(hub.indexes["servers"])
        for server_id, server in hub.servers.items():
            out[k.server_info(server_id)] = {
                "host": server.host,
                "port": str(server.port),
                "version": server.version,
                "started-at": str(server.started_at),
                "incarnation": server.incarnation,
            }
        for server_id, expiry in hub.heartbeats.items():
            if expiry > hub.clock():
                out[k.server_heartbeat(server_id)] = HEARTBEAT
        for server_id, sids in hub.server_sessions.items():
            if sids:
                out[k.server_sessions(server_id)] = set(sids)
        for server_id, (token, expiry) in hub.locks.items():
            if expiry > hub.clock():
                out[k.reaper_lock(server_id)] = token
        if hub.indexes["sessions"]:
            out[k.sessions_active] = set(hub.indexes["sessions"])
        for sid, rec in hub.sessions.items():
            out[k.session(sid)] = {
                "server-id": rec.server_id,
                "user": rec.user,
                "username": rec.username,
                "remote-address": rec.remote_address,
                "version": rec.version,
                "connected-at": str(rec.connected_at),
                "last-seen": str(rec.last_seen),
                "rooms": ",".join(rec.rooms),
            }
        for room_id, room in hub.rooms.items():
            if room.participants:
                out[k.room_participants(room_id)] = set(room.participants)
            out[k.room_info(room_id)] = {
                "created-at": str(room.created_at),
                "last-activity": str(room.last_activity),
                "participants": str(len(room.participants)),
            }
        for sid, room_id in hub.current_room.items():
            out[k.current_room(sid)] = room_id
        for user, sids in hub.user_sessions.items():
            out[k.user_sessions(user)] = set(sids)
        for user, destinations in hub.user_subscriptions.items():
            out[k.user_subscriptions(user)] = set(destinations)
        return out

    async def pttl(self, key: str) -> int:
        k, hub = self.keys, self.hub
        expiries = {k.server_heartbeat(s): at for s, at in hub.heartbeats.items()}
        expiries |= {k.reaped(s): at for s, (_, at) in hub.reaped.items()}
        expiries |= {k.reaper_lock(s): at for s, (_, at) in hub.locks.items()}
        remaining = round((expiries.get(key, 0.0) - self.clock()) * 1000)
        return remaining if remaining > 0 else -2

    async def outlive(self, key: str) -> None:
        """Return once ``key`` has expired: the clock moves past its TTL."""
        remaining = await self.pttl(key)
        if remaining > 0:
            self.clock.advance(remaining / 1000 + 0.001)

    async def expire(self, server_id: str) -> None:
        expiry = self.hub.heartbeats.get(server_id)
        if expiry is not None and expiry > self.clock():
            self.clock.advance(expiry - self.clock() + 0.001)

    async def wipe(self) -> None:
        self.hub.wipe()


class RedisCluster(Cluster):
    kind = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.raw = aioredis.Redis.from_url(url, decode_responses=True)
        self.registry = RedisRegistry(url, self.keys)
        #: Every script call whose KEYS span more than one Redis Cluster slot
        #: (a cluster refuses them with CROSSSLOT): none, checked at close.
        self.cross_slot: list[str] = []
        store = self.registry.redis
        script = store.script

        async def one_slot(name: str, keys: Sequence[str], *args: Any) -> Any:
            slots = {key_slot(key.encode()) for key in keys}
            if len(slots) != 1:
                self.cross_slot.append(f"{name}: {list(keys)}")
            return await script(name, keys, *args)

        store.script = one_slot  # type: ignore[method-assign]

    def make_bus(self) -> Bus:
        return RedisBus(self.url)

    async def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        async for key in self.raw.scan_iter(match=self.keys.pattern, count=1000):
            if not is_registry_key(key.replace(self.keys.prefix + ":", "stomp:", 1)):
                continue
            kind = await self.raw.type(key)
            if key.endswith(":heartbeat"):
                assert kind == "string", key
                out[key] = HEARTBEAT
            elif kind == "string":
                out[key] = await self.raw.get(key)
            elif kind == "hash":
                out[key] = await self.raw.hgetall(key)
            elif kind == "set":
                out[key] = await self.raw.smembers(key)
            else:
                out[key] = (kind, "unexpected type")
        return out

    async def pttl(self, key: str) -> int:
        return int(await self.raw.pttl(key))

    async def expire(self, server_id: str) -> None:
        key = self.keys.server_heartbeat(server_id)
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while await self.raw.exists(key):
            assert time.monotonic() < deadline, f"{key} did not expire"
            await asyncio.sleep(POLL)

    async def wipe(self) -> None:
        await self.raw.flushall()

    async def outlive(self, key: str) -> None:
        """Its TTL cut to 1 ms (a test checks the TTL it had first), then its expiry."""
        assert await self.raw.pexpire(key, 1), f"{key} does not exist"
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while await self.raw.exists(key):
            assert time.monotonic() < deadline, f"{key} did not expire"
            await asyncio.sleep(POLL)

    async def close(self) -> None:
        await super().close()
        await self.raw.aclose()
        assert not self.cross_slot, f"scripts over several slots: {self.cross_slot}"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free port for this module."""
    workdir: Path = tmp_path_factory.mktemp("redis")
    server = RedisServer(workdir).start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    backend: Cluster
    if request.param == "memory":
        backend = MemoryCluster()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = RedisCluster(server.url)
        await backend.raw.flushall()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def backend_classes() -> tuple[type[MemoryCluster], type[RedisCluster]]:
    """The two backends' classes, for tests that build their own (test modules cannot
    import this conftest by name when other test folders have one too)."""
    return MemoryCluster, RedisCluster
