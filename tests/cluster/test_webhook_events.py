"""Webhook events as the registry's steps append them (docs/webhooks.md), on the memory
backend and on a real Redis (one node: the Lua scripts append them), read back from
the partitions (``MemoryWebhookLog``; XRANGE of ``stomp:webhooks:{w<p>}:events``).

Every change yields its event exactly once, under an id made from the step's own
event id, in the partition of its room (else its user, else its session), in the
order of the changes; a step run again appends nothing; an operation stopped at any
step and run again ends with the same events as one that was never stopped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from procs import RedisServer
from test_steps import Faulty

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryHub, MemoryRegistry
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.registry import (
    DeadServer,
    Ghost,
    Pending,
    ServerRecord,
    SessionRecord,
    event_headers,
    room_event,
)
from stomprelay.cluster.webhook_steps import DISCONNECT_REASONS, WebhookSteps, disconnect_reason
from stomprelay.errors import BackendUnavailable
from stomprelay.webhook_events import partition_key, partition_of

NOW = 1_700_000_000_000
TTL = 60_000
PARTITIONS = 4
R1 = ServerRecord("r1", "10.0.0.1", 8001, "0.1.0", NOW - 5_000, "inc-1")
R2 = ServerRecord("r2", "10.0.0.2", 8002, "0.1.0", NOW - 5_000, "inc-2")

Event = dict[str, Any]


def session(sid: str, server: str = "r1", user: str = "alice", rooms: Any = ()) -> SessionRecord:
    return SessionRecord(
        sid, server, user.title(), "127.0.0.1", "1.2", NOW, NOW, list(rooms), user=user
    )


class Backend:
    """A registry with webhooks on, and its partitions read back in order."""

    kind: str
    registry: Any
    webhooks: WebhookSteps

    async def partitions(self) -> list[list[Event]]:
        raise NotImplementedError

    async def events(self) -> list[Event]:
        """Every event, partition after partition, each in its order."""
        return [e for part in await self.partitions() for e in part]

    async def mark(self) -> list[int]:
        """Where each partition ends now (for :meth:`since`)."""
        return [len(part) for part in await self.partitions()]

    async def since(self, mark: list[int]) -> list[Event]:
        """The events appended after ``mark``, partition after partition."""
        parts = await self.partitions()
        return [e for part, n in zip(parts, mark, strict=True) for e in part[n:]]

    async def expire(self, server_id: str) -> None:
        raise NotImplementedError

    async def wipe(self) -> None:
        raise NotImplementedError

    async def unlock(self, server_id: str) -> None:
        """A sweeper's lock on ``server_id`` times out."""
        raise NotImplementedError

    async def close(self) -> None:
        await self.registry.close()


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self, webhooks: WebhookSteps | None) -> None:
        self.clock = 1_700_000_000.0
        self.hub = MemoryHub(clock=lambda: self.clock, webhooks=webhooks)
        self.registry = MemoryRegistry(self.hub, Keys())

    async def partitions(self) -> list[list[Event]]:
        log = self.hub.webhook_log
        assert log is not None
        return [[json.loads(text) for _, text in entries] for entries in log.entries]

    async def expire(self, server_id: str) -> None:
        self.clock = self.hub.heartbeats[server_id] + 0.001

    async def wipe(self) -> None:
        self.hub.wipe()

    async def unlock(self, server_id: str) -> None:
        self.hub.locks.pop(server_id, None)


class RedisBackend(Backend):
    kind = "redis"

    def __init__(self, url: str, webhooks: WebhookSteps | None) -> None:
        self.keys = Keys()
        self.raw = aioredis.Redis.from_url(url, decode_responses=True)
        self.registry = RedisRegistry(url, self.keys, webhooks=webhooks)

    async def partitions(self) -> list[list[Event]]:
        out = []
        for p in range(PARTITIONS):
            entries = await self.raw.xrange(self.keys.webhook_events(p))
            assert all(list(fields) == ["e"] for _, fields in entries), entries
            out.append([json.loads(fields["e"]) for _, fields in entries])
        return out

    async def expire(self, server_id: str) -> None:
        key = self.keys.server_heartbeat(server_id)
        await self.raw.pexpire(key, 1)
        deadline = time.monotonic() + 10
        while await self.raw.exists(key):
            assert time.monotonic() < deadline, f"{key} did not expire"
            await asyncio.sleep(0.005)

    async def wipe(self) -> None:
        await self.raw.flushall()

    async def unlock(self, server_id: str) -> None:
        await self.raw.delete(self.keys.reaper_lock(server_id))

    async def close(self) -> None:
        await super().close()
        await self.raw.aclose()


MakeBackend = Callable[..., Awaitable[Backend]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_backend(request: pytest.FixtureRequest) -> AsyncIterator[MakeBackend]:
    made: list[Backend] = []

    async def make(webhooks: bool = True, messages: tuple[str, ...] = ()) -> Backend:
        steps = WebhookSteps(PARTITIONS, messages) if webhooks else None
        backend: Backend
        if request.param == "memory":
            backend = MemoryBackend(steps)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            backend = RedisBackend(server.url, steps)
            await backend.wipe()
        if steps is not None:
            backend.webhooks = steps
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make_backend: MakeBackend) -> Backend:
    return await make_backend()


def brief(events: list[Event]) -> list[tuple[str, ...]]:
    """(type, session, room, reason) of each event, in order."""
    return [
        (e["type"], e.get("sessionId", ""), e.get("roomId", ""), e.get("reason", ""))
        for e in events
    ]


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["type"] == kind]


async def connected(backend: Backend, *records: SessionRecord) -> None:
    reg = backend.registry
    await reg.register_server(R1, TTL, NOW, "reg1")
    await reg.register_server(R2, TTL, NOW, "reg2")
    for i, record in enumerate(records):
        incarnation = R1.incarnation if record.server_id == "r1" else R2.incarnation
        assert await reg.add_session(record, f"add{i}", incarnation)


# -- each event type, once per change ---------------------------------------------------


async def test_a_session_lifecycle_appends_each_event_once(backend: Backend) -> None:
    reg = backend.registry
    await connected(backend, session("s1"))
    assert await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice") == (True, 1)
    assert await reg.leave("s1", "lobby", "r1", "left", NOW + 2, "l1") == (True, 0)
    assert await reg.join("s1", "games", "Alice", "r1", NOW + 3, "j2", "alice") == (True, 1)
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 4, "rm1", "kicked")
    events = await backend.events()
    assert sorted(brief(events)) == sorted(
        [
            ("session.connected", "s1", "", ""),
            ("user.online", "s1", "", ""),
            ("room.joined", "s1", "lobby", ""),
            ("room.occupied", "s1", "lobby", ""),
            ("room.left", "s1", "lobby", "left"),
            ("room.vacated", "s1", "lobby", ""),
            ("room.joined", "s1", "games", ""),
            ("room.occupied", "s1", "games", ""),
            ("room.left", "s1", "games", "disconnected"),
            ("room.vacated", "s1", "games", ""),
            ("user.offline", "s1", "", "kicked"),
            ("session.disconnected", "s1", "", "kicked"),
        ]
    )
    by_id = {e["id"]: e for e in events}
    assert len(by_id) == len(events), "ids are unique"
    # the ids are the steps' own event ids and the type: the same on every backend
    assert by_id["add0-1:session.connected"] == {
        "id": "add0-1:session.connected",
        "type": "session.connected",
        "timestamp": NOW,
        "serverId": "r1",
        "sessionId": "s1",
        "user": "alice",
        "username": "Alice",
    }
    assert by_id["j1:room.joined"] == {
        "id": "j1:room.joined",
        "type": "room.joined",
        "timestamp": NOW + 1,
        "serverId": "r1",
        "sessionId": "s1",
        "user": "alice",
        "roomId": "lobby",
        "username": "Alice",
    }
    assert by_id["l1:room.left"]["reason"] == "left"
    assert "j1:room.occupied" in by_id
    assert "l1:room.vacated" in by_id
    assert "add0-1:user.online" in by_id
    disconnected = of_type(events, "session.disconnected")[0]
    assert disconnected["id"].endswith(":session.disconnected")
    assert disconnected["id"].startswith("rm1-")
    assert disconnected["timestamp"] == NOW + 4
    assert by_id["rm1/games:room.left"]["reason"] == "disconnected"
    # the user's events and the session's share the user's partition, in order
    parts = await backend.partitions()
    user_part = parts[partition_of(partition_key(user="alice"), PARTITIONS)]
    assert [e["type"] for e in user_part if "roomId" not in e] == [
        "session.connected",
        "user.online",
        "user.offline",
        "session.disconnected",
    ]
    lobby = parts[partition_of(partition_key("lobby"), PARTITIONS)]
    assert [e["type"] for e in lobby if e.get("roomId") == "lobby"] == [
        "room.joined",
        "room.occupied",
        "room.left",
        "room.vacated",
    ]


async def test_occupied_and_vacated_at_the_first_and_last_participant(backend: Backend) -> None:
    reg = backend.registry
    await connected(
        backend, session("s1"), session("s2", "r2", "bob"), session("s3", "r2", "carol")
    )
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice")
    await reg.join("s2", "lobby", "Bob", "r2", NOW + 2, "j2", "bob")
    await reg.join("s3", "lobby", "Carol", "r2", NOW + 3, "j3", "carol")
    await reg.leave("s1", "lobby", "r1", "left", NOW + 4, "l1")
    await reg.leave("s2", "lobby", "r2", "left", NOW + 5, "l2")
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 6, "j4", "alice")
    await reg.leave("s3", "lobby", "r2", "left", NOW + 7, "l3")
    await reg.leave("s1", "lobby", "r1", "left", NOW + 8, "l4")
    lobby = [e for e in await backend.events() if e.get("roomId") == "lobby"]
    assert [(e["type"], e["sessionId"]) for e in lobby] == [
        ("room.joined", "s1"),
        ("room.occupied", "s1"),
        ("room.joined", "s2"),
        ("room.joined", "s3"),
        ("room.left", "s1"),
        ("room.left", "s2"),
        ("room.joined", "s1"),
        ("room.left", "s3"),
        ("room.left", "s1"),
        ("room.vacated", "s1"),
    ]
    assert [e["timestamp"] for e in lobby] == sorted(e["timestamp"] for e in lobby)


async def test_online_and_offline_at_the_first_and_last_session_of_a_user(
    backend: Backend,
) -> None:
    reg = backend.registry
    await connected(backend, session("s1"), session("s2", "r2"), session("s3", "r2", "bob"))
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 1, "rm1", "closed")
    assert await reg.add_session(session("s4"), "add9", "inc-1")
    await reg.remove_session("s2", "r2", [], "disconnected", NOW + 2, "rm2", "timeout")
    await reg.remove_session("s4", "r1", [], "disconnected", NOW + 3, "rm4", "expired")
    users = [e for e in await backend.events() if e["type"].startswith("user.")]
    assert sorted(brief(users)) == [
        ("user.offline", "s4", "", "expired"),
        ("user.online", "s1", "", ""),
        ("user.online", "s3", "", ""),
    ]
    alice = [e for e in users if e["user"] == "alice"]
    assert [(e["type"], e["sessionId"]) for e in alice] == [
        ("user.online", "s1"),
        ("user.offline", "s4"),
    ]
    reasons = [e["reason"] for e in of_type(await backend.events(), "session.disconnected")]
    assert sorted(reasons) == ["closed", "expired", "timeout"]


async def test_a_step_run_again_appends_nothing(backend: Backend) -> None:
    reg = backend.registry
    await connected(backend, session("s1"))
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice")
    before = await backend.events()
    assert await reg.join("s1", "lobby", "Alice", "r1", NOW + 2, "j1", "alice") == (False, 1)
    assert await reg.add_session(session("s1"), "add0", "inc-1")
    assert await backend.events() == before
    await reg.leave("s1", "lobby", "r1", "left", NOW + 3, "l1")
    after_leave = await backend.events()
    await reg.leave("s1", "lobby", "r1", "left", NOW + 3, "l1")
    assert await backend.events() == after_leave
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 4, "rm1")
    done = await backend.events()
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 4, "rm1")
    assert await backend.events() == done
    assert Counter(e["type"] for e in done) == {
        "session.connected": 1,
        "user.online": 1,
        "room.joined": 1,
        "room.occupied": 1,
        "room.left": 1,
        "room.vacated": 1,
        "user.offline": 1,
        "session.disconnected": 1,
    }


async def test_without_webhooks_nothing_is_kept(make_backend: MakeBackend) -> None:
    backend = await make_backend(webhooks=False)
    reg = backend.registry
    await connected(backend, session("s1"))
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice")
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 4, "rm1")
    if isinstance(backend, MemoryBackend):
        assert backend.hub.webhook_log is None
    else:
        assert not [k async for k in backend.raw.scan_iter(match="stomp:webhooks:*")]


async def test_each_append_is_counted_by_type(backend: Backend) -> None:
    seen: Counter[str] = Counter()
    backend.webhooks.observe = lambda kind: seen.update([kind])
    reg = backend.registry
    await connected(backend, session("s1"), session("s2", "r2", "bob"))
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice")
    await reg.join("s2", "lobby", "Bob", "r2", NOW + 1, "j2", "bob")
    await reg.join("s2", "lobby", "Bob", "r2", NOW + 1, "j2", "bob")
    await reg.remove_session("s1", "r1", [], "disconnected", NOW + 4, "rm1")
    assert seen == Counter(e["type"] for e in await backend.events())
    assert seen["room.joined"] == 2
    assert seen["room.occupied"] == 1


# -- the reaper, a graceful stop, a restore ------------------------------------------------


async def alice_and_bob_on_r1(backend: Backend) -> None:
    """r1: alice (s1, lobby and games), bob (s2, lobby); r2: alice again (s3, lobby)."""
    reg = backend.registry
    await connected(backend, session("s1"), session("s2", "r1", "bob"), session("s3", "r2"))
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice")
    await reg.join("s1", "games", "Alice", "r1", NOW + 1, "j2", "alice")
    await reg.join("s2", "lobby", "Bob", "r1", NOW + 1, "j3", "bob")
    await reg.join("s3", "lobby", "Alice", "r2", NOW + 1, "j4", "alice")


async def test_the_reaper_appends_server_lost_once(backend: Backend) -> None:
    reg = backend.registry
    await alice_and_bob_on_r1(backend)
    before = await backend.mark()
    await reg.refresh_server("r1", "inc-1", 1)
    await backend.expire("r1")
    assert await reg.dead_servers() == [DeadServer("r1", "inc-1")]
    assert await reg.reap(DeadServer("r1", "inc-1"), "r2", NOW + 10, "reap") == 2
    # a second sweeper finds nothing left to do
    assert await reg.reap(DeadServer("r1", "inc-1"), "r3", NOW + 11, "reap2") is None
    lost = await backend.since(before)
    assert sorted(brief(lost)) == sorted(
        [
            ("room.left", "s1", "lobby", "server-lost"),
            ("room.left", "s1", "games", "server-lost"),
            ("room.vacated", "s1", "games", ""),
            ("session.disconnected", "s1", "", "server-lost"),
            ("room.left", "s2", "lobby", "server-lost"),
            ("user.offline", "s2", "", "server-lost"),
            ("session.disconnected", "s2", "", "server-lost"),
        ]
    )
    # alice is still online through s3 on r2, lobby still holds s3
    assert all(e["serverId"] == "r1" for e in lost)
    assert len({e["id"] for e in lost}) == len(lost)


async def test_a_restarted_relay_reports_its_predecessors_sessions_lost(
    backend: Backend,
) -> None:
    await alice_and_bob_on_r1(backend)
    before = await backend.mark()
    await backend.registry.register_server(replace(R1, incarnation="inc-9"), TTL, NOW + 9, "re")
    lost = await backend.since(before)
    assert sorted(e["reason"] for e in of_type(lost, "session.disconnected")) == [
        "server-lost",
        "server-lost",
    ]


async def test_a_graceful_stop_reports_shutdown(backend: Backend) -> None:
    await alice_and_bob_on_r1(backend)
    before = await backend.mark()
    await backend.registry.unregister_server("r1", NOW + 10, "stop")
    stopped = await backend.since(before)
    assert sorted(e["reason"] for e in of_type(stopped, "session.disconnected")) == [
        "shutdown",
        "shutdown",
    ]
    assert {e["reason"] for e in of_type(stopped, "room.left")} == {"disconnected"}
    assert [e["user"] for e in of_type(stopped, "user.offline")] == ["bob"]


async def test_a_reaped_relay_restores_its_sessions_as_restored(backend: Backend) -> None:
    reg = backend.registry
    await alice_and_bob_on_r1(backend)
    await reg.refresh_server("r1", "inc-1", 1)
    await backend.expire("r1")
    await reg.reap(DeadServer("r1", "inc-1"), "r2", NOW + 10, "reap")
    before = await backend.mark()
    held = [session("s1", rooms=["lobby", "games"]), session("s2", user="bob", rooms=["lobby"])]
    server = replace(R1, incarnation="inc-5")
    await reg.restore(server, held, TTL, True, NOW + 20, "rest")
    back = await backend.since(before)
    assert sorted(brief(back)) == sorted(
        [
            ("session.connected", "s1", "", "restored"),
            ("room.joined", "s1", "lobby", "restored"),
            ("room.joined", "s1", "games", "restored"),
            ("room.occupied", "s1", "games", ""),
            ("session.connected", "s2", "", "restored"),
            ("user.online", "s2", "", "restored"),
            ("room.joined", "s2", "lobby", "restored"),
        ]
    )
    assert {e["id"] for e in back} >= {
        "rest/s1-1:session.connected",
        "rest/s1/lobby:room.joined",
        "rest/s2-1:user.online",
    }
    # restoring again (a retry) appends nothing more
    await reg.restore(replace(R1, incarnation="inc-6"), held, TTL, True, NOW + 30, "rest2")
    assert await backend.since(before) == back


async def test_the_restore_after_an_outage_reports_what_happened_meanwhile(
    backend: Backend,
) -> None:
    """While Redis was out: s1 left games and joined kitchen, s2 ended (kicked), s4
    connected and joined lobby. The restore appends exactly those events, under the ids
    the relay used (pending); what Redis knew already is not reported again."""
    reg = backend.registry
    await alice_and_bob_on_r1(backend)
    before = await backend.mark()
    published = await restore_after_outage(reg)
    assert sorted(published) == ["pj1", "pj2", "pl1", "pl2"]
    back = await backend.since(before)
    assert sorted(brief(back)) == sorted(
        [
            ("room.left", "s1", "games", "left"),
            ("room.vacated", "s1", "games", ""),
            ("room.joined", "s1", "kitchen", ""),
            ("room.occupied", "s1", "kitchen", ""),
            ("session.connected", "s4", "", ""),
            ("user.online", "s4", "", ""),
            ("room.joined", "s4", "lobby", ""),
            ("room.left", "s2", "lobby", "disconnected"),
            ("user.offline", "s2", "", "kicked"),
            ("session.disconnected", "s2", "", "kicked"),
        ]
    )
    ids = {e["id"] for e in back}
    assert {"pj1:room.joined", "pl1:room.left", "pj2:room.joined", "pl2:room.left"} <= ids
    connect = of_type(back, "session.connected")[0]
    assert connect["timestamp"] == NOW  # when it connected, not when Redis heard of it


# -- an operation stopped at any step ---------------------------------------------------------


async def restore_after_outage(reg: Any) -> Any:
    """What test_the_restore_after_an_outage_reports_what_happened_meanwhile restores."""
    pending = Pending(
        joins={("s1", "kitchen"): "pj1", ("s4", "lobby"): "pj2"},
        leaves={("s1", "games"): "pl1", ("s2", "lobby"): "pl2"},
        new_sessions={"s4"},
        causes={"s2": "kicked"},
    )
    held = [session("s1", rooms=["lobby", "kitchen"]), session("s4", user="dave", rooms=["lobby"])]
    return await reg.restore(R1, held, TTL, False, NOW + 20, "rest", pending)


async def reap_r1(reg: Any) -> Any:
    return await reg.reap(DeadServer("r1", "inc-1"), "r2", NOW + 10, "reap")


SCENARIOS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "add_session": lambda reg: reg.add_session(session("s9", user="bob"), "add9", "inc-1"),
    "join": lambda reg: reg.join("s2", "games", "Bob", "r1", NOW + 10, "j9", "bob"),
    "leave": lambda reg: reg.leave("s1", "games", "r1", "left", NOW + 10, "l9"),
    "remove_session": lambda reg: reg.remove_session(
        "s2", "r1", [], "disconnected", NOW + 10, "rm9", "slow"
    ),
    "unregister_server": lambda reg: reg.unregister_server("r1", NOW + 10, "stop"),
    "restore": restore_after_outage,
    "reap": reap_r1,
}


async def run_faulty(
    backend: Backend, name: str, fail_at: int, after: bool
) -> tuple[list[Event], int]:
    """Set up, run ``name`` with a fault at step ``fail_at`` (0: none), then what a
    relay does next (the same call again; for a reap, another sweeper once the failed
    one's lock timed out); the events appended, and the steps made."""
    operation = SCENARIOS[name]
    await backend.wipe()
    await alice_and_bob_on_r1(backend)
    reg = backend.registry
    if name == "reap":
        await reg.refresh_server("r1", "inc-1", 1)
        await backend.expire("r1")
    before = await backend.mark()
    store = reg.store
    faulty = Faulty(store)
    faulty.fail_at, faulty.after = fail_at, after
    reg.store = faulty
    try:
        await operation(reg)
    except BackendUnavailable:
        reg.store = store
        if name == "reap":
            await backend.unlock("r1")
        await operation(reg)
    finally:
        reg.store = store
    return await backend.since(before), faulty.calls


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_an_operation_stopped_at_any_step_appends_each_event_once(
    backend: Backend, name: str
) -> None:
    expected, steps = await run_faulty(backend, name, 0, False)
    assert expected, f"{name} appended nothing"
    problems = []
    for fail_at in range(1, steps + 1):
        for after in (False, True):
            got, _ = await run_faulty(backend, name, fail_at, after)
            if Counter(json.dumps(e) for e in got) != Counter(json.dumps(e) for e in expected):
                where = f"step {fail_at}/{steps} {'after' if after else 'before'}"
                problems.append(f"{where}: {brief(got)} != {brief(expected)}")
    assert not problems, "\n".join(problems)


# -- how sessions end -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("close_reason", "error", "reason"),
    [
        ("client disconnected", None, "closed"),
        ("connection closed", None, "closed"),
        ("server shutting down", None, "shutdown"),
        ("internal error", None, "error"),
        ("Heart-beat timeout", "Heart-beat timeout", "timeout"),
        ("credential expired", "credential expired", "expired"),
        ("Slow consumer", "Slow consumer", "slow"),
        ("session ended by operator", "session ended by operator", "kicked"),
        ("session ended by server", "session ended by server", "kicked"),
        ("rate limit exceeded", "rate limit exceeded", "error"),
        ("Message too large", "Message too large", "error"),
    ],
)
def test_how_a_session_ended_is_its_disconnect_reason(
    close_reason: str, error: str | None, reason: str
) -> None:
    assert disconnect_reason(close_reason, error) == reason
    assert reason in DISCONNECT_REASONS


def test_at_least_one_partition() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WebhookSteps(0)


# -- message.published ---------------------------------------------------------------------


def chat_envelope(mid: str, room: str, text: str) -> Envelope:
    return Envelope(
        id=mid,
        origin="r1",
        destination=f"/topic/room/{room}",
        headers=event_headers("CHAT"),
        body=room_event("CHAT", room, "s1", "Alice", "r1", NOW + 5, message=text, user="alice"),
        ts=NOW + 5,
    )


def send_envelope(mid: str, destination: str, body: bytes) -> Envelope:
    sender = (("x-sender", "bob"), ("x-sender-session", "s2"))
    return Envelope(
        mid, "r2", destination, (*sender, ("content-type", "text/plain")), body, NOW + 6
    )


async def test_messages_to_the_chosen_destinations_are_reported_with_their_offset(
    make_backend: MakeBackend,
) -> None:
    backend = await make_backend(messages=("/topic/room/lobby", "/topic/news.*"))
    reg = backend.registry
    await connected(backend, session("s1"), session("s2", "r2", "bob"))
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice")
    await reg.join("s1", "games", "Alice", "r1", NOW + 1, "j2", "alice")
    before = await backend.mark()
    lobby = "stomp:room:lobby"
    stored = await reg.chat("s1", "lobby", lobby, chat_envelope("m1", "lobby", "hi"), NOW + 5)
    await reg.chat("s1", "games", "stomp:room:games", chat_envelope("m2", "games", "no"), NOW + 5)
    log = reg.log
    news = await log.append(
        "topic:news.eu", "stomp:topic:news.eu", send_envelope("m3", "/topic/news.eu", b"ok"), NOW
    )
    # a journal replayed after an outage appends a known id: nothing twice
    await log.append(
        "topic:news.eu", "stomp:topic:news.eu", send_envelope("m3", "/topic/news.eu", b"ok"), NOW
    )
    batch = [
        (
            "topic:news.us",
            "stomp:topic:news.us",
            send_envelope("m4", "/topic/news.us", b"\xff\x00"),
        ),
        ("topic:weather", "stomp:topic:weather", send_envelope("m5", "/topic/weather", b"rain")),
        ("topic:news.us", "stomp:topic:news.us", send_envelope("m6", "/topic/news.us", b"two")),
    ]
    appended = await log.append_many(batch, NOW)
    new = await backend.since(before)
    assert [e["type"] for e in new] == ["message.published"] * 4
    by_id = {e["id"]: e for e in new}
    assert by_id["m1:message.published"] == {
        "id": "m1:message.published",
        "type": "message.published",
        "timestamp": NOW + 5,
        "serverId": "r1",
        "sessionId": "s1",
        "user": "alice",
        "roomId": "lobby",
        "destination": "/topic/room/lobby",
        "messageId": "m1",
        "body": chat_envelope("m1", "lobby", "hi").body.decode(),
        "offset": stored.offset,
    }
    assert stored.offset == 2  # after the lobby's JOIN
    assert by_id["m3:message.published"] == {
        "id": "m3:message.published",
        "type": "message.published",
        "timestamp": NOW + 6,
        "serverId": "r2",
        "sessionId": "s2",
        "user": "bob",
        "destination": "/topic/news.eu",
        "messageId": "m3",
        "body": "ok",
        "offset": news.offset,
    }
    binary = by_id["m4:message.published"]
    assert binary["binary"] is True
    assert base64.b64decode(binary["body"]) == b"\xff\x00"
    assert [by_id[f"m{i}:message.published"]["offset"] for i in (4, 6)] == [
        a.offset for a in appended[::2] if isinstance(a, Envelope)
    ]
    # a room's messages are in order with its joins and leaves
    part = (await backend.partitions())[partition_of(partition_key("lobby"), PARTITIONS)]
    assert [e["type"] for e in part if e.get("roomId") == "lobby"] == [
        "room.joined",
        "room.occupied",
        "message.published",
    ]


async def test_no_message_is_reported_unless_asked_for(backend: Backend) -> None:
    reg = backend.registry
    await connected(backend, session("s1"))
    await reg.join("s1", "lobby", "Alice", "r1", NOW + 1, "j1", "alice")
    before = await backend.mark()
    await reg.chat("s1", "lobby", "stomp:room:lobby", chat_envelope("m1", "lobby", "hi"), NOW)
    await reg.log.append(
        "topic:news", "stomp:topic:news", send_envelope("m3", "/topic/news", b"ok"), NOW
    )
    assert await backend.since(before) == []


async def test_a_session_that_came_and_went_during_an_outage_is_reported_by_the_restore(
    backend: Backend,
) -> None:
    """s7 connected and ended while Redis was out: Redis never held it, the restore
    appends its session.connected and session.disconnected from the journal. s2's add
    did run (its reply was lost): its removal is a real one, not reported twice."""
    reg = backend.registry
    await alice_and_bob_on_r1(backend)
    before = await backend.mark()
    ghost = session("s7", user="gil")
    pending = Pending(
        causes={"s7": "timeout", "s2": "closed"},
        ghosts=[
            Ghost(ghost, "g1", NOW + 7, "timeout"),
            Ghost(session("s2", user="bob"), "g2", NOW + 8, "closed"),
        ],
    )
    held = [session("s1", rooms=["lobby", "games"])]
    await reg.restore(R1, held, TTL, False, NOW + 20, "rest", pending)
    new = await backend.since(before)
    gil = [e for e in new if e.get("sessionId") == "s7"]
    assert gil == [
        {
            "id": "g1:session.connected",
            "type": "session.connected",
            "timestamp": NOW,
            "serverId": "r1",
            "sessionId": "s7",
            "user": "gil",
            "username": "Gil",
        },
        {
            "id": "g1:session.disconnected",
            "type": "session.disconnected",
            "timestamp": NOW + 7,
            "serverId": "r1",
            "sessionId": "s7",
            "user": "gil",
            "reason": "timeout",
            "username": "Gil",
        },
    ]
    bob = [e for e in new if e.get("sessionId") == "s2"]
    assert sorted(brief(bob)) == [
        ("room.left", "s2", "lobby", "disconnected"),
        ("session.disconnected", "s2", "", "closed"),
        ("user.offline", "s2", "", "closed"),
    ]
