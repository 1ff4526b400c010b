"""A relay that comes back while a sweeper is reaping it (review of the one-slot steps).

The reap of a relay is many steps; the relay it reaps may wake up half-way (a pause,
a healed link) and refresh or restore. Its refresh must fail from the moment the
reap began (the tombstone), and its restore must wait for the reap to finish (the
relay's reaper lock), so it puts back every session it holds and the others see
each one LEAVE and JOIN again, once. Runs over every backend.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from stomprelay.cluster.memory import MemoryRegistry
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.registry import DeadServer, ServerRecord, SessionRecord

NOW = 1_700_000_000_000
TTL = 60_000
R1 = ServerRecord("r1", "10.0.0.1", 8001, "0.1.0", NOW - 5_000, "inc-1")
R2 = ServerRecord("r2", "10.0.0.2", 8002, "0.1.0", NOW - 5_000, "inc-2")


def session(sid: str, rooms: list[str] | None = None) -> SessionRecord:
    return SessionRecord(sid, "r1", f"user-{sid}", "127.0.0.1", "1.2", NOW, NOW, rooms or [])


class Paused:
    """A store that holds its ``nth`` call of ``name`` until :attr:`go` is set."""

    def __init__(self, store: Any, name: str, nth: int) -> None:
        self._store, self._name, self._nth, self._seen = store, name, nth, 0
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._store, attr)
        if attr != self._name:
            return target

        async def step(*args: Any, **kwargs: Any) -> Any:
            self._seen += 1
            if self._seen == self._nth:
                self.reached.set()
                await self.go.wait()
            return await target(*args, **kwargs)

        return step


def sweeper_of(cluster: Any) -> Any:
    if cluster.kind == "memory":
        return MemoryRegistry(cluster.hub, cluster.keys)
    return RedisRegistry(cluster.url, cluster.keys)  # type: ignore[attr-defined]


async def setup(cluster: Any) -> None:
    reg = cluster.registry
    await reg.register_server(R1, TTL, NOW, "reg1")
    await reg.register_server(R2, TTL, NOW, "reg2")
    for sid in ("s1", "s2"):
        assert await reg.add_session(session(sid), f"add-{sid}", "inc-1")
        assert await reg.join(sid, "lobby", f"user-{sid}", "r1", NOW, f"join-{sid}") is not None
    assert await reg.refresh_server("r1", "inc-1", 1)  # its heartbeat expires now
    await cluster.expire("r1")


async def test_a_relay_being_reaped_cannot_refresh_and_its_restore_waits(
    cluster: Any,
) -> None:
    await setup(cluster)
    lobby = cluster.keys.leave_channel("lobby"), cluster.keys.join_channel("lobby")
    probe = await cluster.probe(*lobby)
    sweeper = sweeper_of(cluster)
    paused = Paused(sweeper.store, "session_read", 2)  # before it removes s2
    sweeper.store = paused
    reap = asyncio.create_task(sweeper.reap(DeadServer("r1", "inc-1"), "r2", NOW + 10, "reap"))
    await asyncio.wait_for(paused.reached.wait(), 5)

    # r1 wakes up half-way through its reap: refused, so it re-registers everything
    reg = cluster.registry
    assert await reg.refresh_server("r1", "inc-1", TTL) is False
    assert await reg.was_reaped("r1", "inc-1") is True
    held = [session("s1", ["lobby"]), session("s2", ["lobby"])]
    restore = asyncio.create_task(
        reg.restore(replace(R1, incarnation="inc-1b"), held, TTL, True, NOW + 20, "rest")
    )
    await asyncio.sleep(0.3)
    assert not restore.done(), "the restore ran while the reap was half done"
    paused.go.set()
    assert await asyncio.wait_for(reap, 5) == 2
    await asyncio.wait_for(restore, 5)

    await probe.barrier()
    events = [
        (body["type"], body["sessionId"])
        for _, env in probe.received
        if env.body[:1] == b"{" and (body := json.loads(env.body)).get("roomId") == "lobby"
    ]
    assert sorted(events) == [
        ("JOIN", "s1"),
        ("JOIN", "s2"),
        ("LEAVE", "s1"),
        ("LEAVE", "s2"),
    ], events
    assert events.index(("JOIN", "s2")) > events.index(("LEAVE", "s2"))
    assert {p.session_id for p in await reg.participants("lobby")} == {"s1", "s2"}
    assert sorted(s.session_id for s in await reg.sessions()) == ["s1", "s2"]
    servers = {r.server_id: (alive, n) for r, alive, n in await reg.servers()}
    assert servers["r1"] == (True, 2)
    assert await reg.dead_servers() == []
    await sweeper.close()


async def test_a_sweeper_that_lost_its_lock_stops(cluster: Any) -> None:
    """A reap that outlives its lock (many sessions, a slow Redis) stops at the next
    session: whoever holds the lock now (another sweeper, the relay's restore) goes on."""
    await setup(cluster)
    sweeper = sweeper_of(cluster)
    paused = Paused(sweeper.store, "keep_lock", 2)  # as it is about to remove s2
    sweeper.store = paused
    reap = asyncio.create_task(sweeper.reap(DeadServer("r1", "inc-1"), "r2", NOW + 10, "reap"))
    await asyncio.wait_for(paused.reached.wait(), 5)
    # meanwhile its lock expired and another sweeper took it
    if cluster.kind == "memory":
        cluster.hub.locks["r1"] = ("r3:token", cluster.hub.clock() + 60)
    else:
        await cluster.raw.set(cluster.keys.reaper_lock("r1"), "r3:token")
    paused.go.set()
    assert await asyncio.wait_for(reap, 5) is None
    reg = cluster.registry
    assert [s.session_id for s in await reg.sessions()] == ["s2"], "it went on without the lock"
    assert {p.session_id for p in await reg.participants("lobby")} == {"s2"}
    assert "r1" in {r.server_id for r, _, _ in await reg.servers()}
    await sweeper.close()
