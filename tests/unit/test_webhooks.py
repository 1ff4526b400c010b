"""Webhook delivery without sockets: backoff, partition owners, one partition's loop on
a fake clock (batches, retries in order, dead letters, the fence), the lease loop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

import pytest

from stomprelay.httpclient import signature
from stomprelay.webhook_events import MemoryWebhookLog, event_json, make_event, partition_of
from stomprelay.webhook_stores import Entry, MemoryPartitions
from stomprelay.webhooks import (
    Backoff,
    Delivery,
    LeaseLost,
    PartitionWorker,
    batch_body,
    owner,
    replay_partition,
    timestamp_ms,
)


class FakeClock:
    """Wall seconds that move only when the worker sleeps."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def event(n: int, room: str = "lobby", ts: float | None = None, clock: Any = None) -> str:
    stamp = int((ts if ts is not None else clock.now) * 1000)
    return event_json(
        make_event("room.joined", f"e{n}", stamp, "r1", room_id=room, session_id=f"s{n}")
    )


class Receiver:
    """Answers from a script of outcomes (None: 2xx), then 2xx; keeps the bodies."""

    def __init__(self, outcomes: Sequence[tuple[str, str] | None] = ()) -> None:
        self.outcomes = list(outcomes)
        self.bodies: list[list[dict[str, Any]]] = []

    async def __call__(self, body: bytes) -> tuple[str, str] | None:
        self.bodies.append(json.loads(body)["events"])
        return self.outcomes.pop(0) if self.outcomes else None

    def ids(self) -> list[list[str]]:
        return [[e["id"] for e in body] for body in self.bodies]


def worker(store: Any, send: Any, clock: FakeClock, **kw: Any) -> PartitionWorker:
    options: dict[str, Any] = {
        "token": "r1:t",
        "ttl_ms": 1000,
        "batch": 3,
        "linger": 0.1,
        "max_age": 60.0,
        "backoff": Backoff(1.0, 8.0),
        "clock": clock,
        "sleep": clock.sleep,
        "rand": lambda: 0.0,
        "block_ms": 0,
    }
    options.update(kw)
    return PartitionWorker(0, store, send, **options)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(0.5, 4.0)
    assert [backoff.delay(n, 0.0) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [backoff.delay(n, 0.999999) for n in (1, 5)] == pytest.approx([0.5, 4.0], rel=1e-5)
    assert backoff.delay(10_000, 0.5) == 3.0  # no overflow however many attempts


def test_owner_spreads_partitions_and_moves_few_when_a_relay_leaves() -> None:
    members = ["a", "b", "c"]
    owners = [owner(p, members) for p in range(64)]
    counts = {m: owners.count(m) for m in members}
    assert all(count >= 10 for count in counts.values()), counts
    assert owner(5, []) is None
    # "c" leaves: only its partitions move
    after = [owner(p, ["a", "b"]) for p in range(64)]
    assert all(before == now for before, now in zip(owners, after, strict=True) if before != "c")
    assert owner(7, ["b", "a", "c"]) == owner(7, members)  # order does not matter


def test_timestamp_and_body_and_replay_partition() -> None:
    assert timestamp_ms('{"timestamp": 12}') == 12
    assert timestamp_ms('{"timestamp": true}') is None
    assert timestamp_ms("not json") is None
    assert (
        batch_body([("1-0", '{"a":1}'), ("2-0", '{"b":"é"}')])
        == '{"events":[{"a":1},{"b":"é"}]}'.encode()
    )
    assert replay_partition('{"roomId": "lobby"}', 16) == replay_partition(
        '{"roomId": "lobby", "user": "x"}', 16
    )
    assert 0 <= replay_partition("garbage", 16) < 16
    # where the steps put them (webhook_steps.py): a message outside rooms by destination
    from stomprelay.cluster.webhook_steps import Subject, WebhookSteps

    steps = WebhookSteps(16)
    news = '{"type":"message.published","destination":"/topic/news","user":"ann"}'
    assert replay_partition(news, 16) == partition_of("destination:/topic/news", 16)
    for event in (
        steps.room(True, "j1", 1, "r1", "s1", "lobby", "ann", "ann"),
        steps.session(True, Subject("c1", 1, "r1", "s1", "ann", "ann")),
        steps.session(True, Subject("c2", 1, "r1", "s2", "-", "")),
    ):
        assert replay_partition(event.change, 16) == event.partition


def test_signature_matches_an_independent_hmac() -> None:
    body = b'{"events":[]}'
    header = signature("s3cret", body, 1700000000)
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


async def test_batches_at_most_batch_events_and_deletes_what_was_delivered() -> None:
    clock = FakeClock()
    log = MemoryWebhookLog(1)
    for n in range(7):
        log.append(0, event(n, clock=clock))
    store = MemoryPartitions(log, lambda: 0)
    receiver = Receiver()
    w = worker(store, receiver, clock)
    assert await w.step() == 3
    assert await w.step() == 3
    # one left: the batch waits the linger for more, then goes with what is there
    log.append(0, event(7, clock=clock))
    assert await w.step() == 2
    assert receiver.ids() == [["e0", "e1", "e2"], ["e3", "e4", "e5"], ["e6", "e7"]]
    assert clock.sleeps == [0.1]
    assert not log.entries[0]
    assert await w.step() == 0
    assert w.idle


async def test_a_failed_batch_is_retried_whole_and_in_order_with_backoff() -> None:
    clock = FakeClock()
    log = MemoryWebhookLog(1)
    for n in range(3):
        log.append(0, event(n, clock=clock))
    receiver = Receiver(
        [("refused", "ConnectionRefusedError"), ("timeout", "t"), ("status", "HTTP 500")]
    )
    w = worker(MemoryPartitions(log, lambda: 0), receiver, clock, rand=lambda: 0.999999)
    await w.step()
    assert receiver.ids() == [["e0", "e1", "e2"]] * 4
    # jittered delays just under 1, 2, 4 (base 1 doubling) after the three failures
    assert clock.sleeps == pytest.approx([1.0, 2.0, 4.0], rel=1e-5)
    assert not log.entries[0]


async def test_events_past_max_age_are_dead_lettered_and_the_rest_goes_on() -> None:
    clock = FakeClock()
    log = MemoryWebhookLog(1)
    log.append(0, event(0, ts=clock.now - 100, clock=clock))  # already too old
    log.append(0, event(1, clock=clock))
    log.append(0, event(2, ts=clock.now - 55, clock=clock))  # too old after 5 s of retries
    receiver = Receiver([("status", "HTTP 503")] * 4)
    store = MemoryPartitions(log, lambda: 0)
    w = worker(store, receiver, clock, backoff=Backoff(2.0, 2.0), rand=lambda: 0.999999)
    await w.step()
    assert receiver.ids()[0] == ["e0", "e1", "e2"]
    assert receiver.ids()[1] == ["e1", "e2"]  # e0 dead after the first failure
    assert receiver.ids()[-1] == ["e1"]  # e2 went past 60 s meanwhile
    assert [json.loads(d["e"])["id"] for d in store.dead_letters] == ["e0", "e2"]
    assert {d["error"] for d in store.dead_letters} == {"HTTP 503"}
    assert not log.entries[0]


class FencedStore(MemoryPartitions):
    """A memory store whose lease can be taken away (the fence refuses then)."""

    leased = True

    def __init__(self, log: MemoryWebhookLog) -> None:
        super().__init__(log, lambda: 0)
        self.leases: dict[int, str] = {}
        self.done_calls: list[tuple[list[str], str]] = []

    async def keep(self, partition: int, token: str, ttl_ms: int) -> bool:
        return self.leases.setdefault(partition, token) == token

    async def holder(self, partition: int) -> str | None:
        return self.leases.get(partition)

    async def release(self, partition: int, token: str) -> None:
        if self.leases.get(partition) == token:
            del self.leases[partition]

    async def done(
        self, partition: int, token: str, ttl_ms: int, ids: Sequence[str], cursor: str
    ) -> bool:
        if self.leases.get(partition) != token:
            return False
        self.done_calls.append((list(ids), cursor))
        return await super().done(partition, token, ttl_ms, ids, cursor)


async def test_the_fence_stops_a_relay_that_lost_its_lease() -> None:
    clock = FakeClock()
    log = MemoryWebhookLog(1)
    log.append(0, event(0, clock=clock))
    store = FencedStore(log)
    store.leases[0] = "other:t"
    w = worker(store, Receiver(), clock)
    with pytest.raises(LeaseLost):
        await w.step()
    assert len(log.entries[0]) == 1  # left for the holder to send (again)
    # run() ends quietly on a lost lease
    await asyncio.wait_for(w.run(), 5)


async def test_delivered_step_moves_the_cursor_to_the_last_entry() -> None:
    clock = FakeClock()
    log = MemoryWebhookLog(1)
    ids: list[Entry] = []
    for n in range(2):
        ids.append((log.append(0, event(n, clock=clock)), ""))
    store = FencedStore(log)
    store.leases[0] = "r1:t"
    await worker(store, Receiver(), clock).step()
    assert store.done_calls == [(["1-0", "2-0"], "2-0")]


def delivery(store: FencedStore, server_id: str, members: list[str]) -> Delivery:
    async def live() -> list[str]:
        return members

    return Delivery(
        store,
        Receiver(),
        server_id=server_id,
        partitions=8,
        batch=10,
        linger=0,
        max_age=60,
        lease_ttl=1.0,
        backoff=Backoff(0.1, 0.1),
        members=live,
    )


async def test_leases_own_partitions_at_once_and_free_ones_a_period_later() -> None:
    log = MemoryWebhookLog(8)
    store = FencedStore(log)
    a = delivery(store, "a", ["a", "b"])
    b = delivery(store, "b", ["a", "b"])
    try:
        await a.leases_once()
        mine = [p for p in range(8) if owner(p, ["a", "b"]) == "a"]
        assert a.held == mine
        # b is dead (still listed alive): its partitions, seen free once, are taken next time
        await a.leases_once()
        assert a.held == list(range(8))
        # b comes back: a hands b's partitions back between batches, b takes them
        await a.leases_once()
        await asyncio.sleep(0.5)  # the workers end at their next empty read
        await a.leases_once()
        assert a.held == mine
        await b.leases_once()
        assert b.held == [p for p in range(8) if p not in mine]
        assert set(store.leases) == set(range(8))
    finally:
        await a.stop(drain=0)
        await b.stop(drain=0)
    assert store.leases == {}  # a stop hands every lease back


async def test_a_relay_that_lost_a_lease_stops_its_worker() -> None:
    store = FencedStore(MemoryWebhookLog(8))
    a = delivery(store, "a", ["a"])
    try:
        await a.leases_once()
        assert a.held == list(range(8))
        store.leases[3] = "thief"
        await a.leases_once()
        assert 3 not in a.held
    finally:
        await a.stop(drain=0)


def test_bad_webhook_options_are_refused_naming_the_flag() -> None:
    from stomprelay.options import OptionError, check

    with pytest.raises(OptionError, match="--webhook-url must be an http"):
        check({"webhook_url": "ftp://example.com/x"})
    with pytest.raises(OptionError, match="--webhook-retry-cap must be positive"):
        check({"webhook_retry_cap": 0.0})


async def test_an_entry_appended_later_than_its_timestamp_gets_its_full_max_age() -> None:
    """A replayed dead letter (or an event journaled through a long outage) carries an
    old timestamp but a recent stream id: its age counts from the id, so a failure
    retries it instead of dead-lettering it at once; a memory id (``n-0``) changes
    nothing."""
    clock = FakeClock()
    now_ms = int(clock.now * 1000)
    old = event(0, ts=clock.now - 100, clock=clock)
    store = MemoryPartitions(MemoryWebhookLog(1), lambda: 0)
    w = worker(store, Receiver(), clock)
    assert await w._expire([(f"{now_ms}-0", old)], "HTTP 503") == [(f"{now_ms}-0", old)]
    assert not store.dead_letters
    assert await w._expire([("1-0", old)], "HTTP 503") == []
    assert [json.loads(d["e"])["id"] for d in store.dead_letters] == ["e0"]


async def test_memory_done_pops_the_delivered_front_and_keeps_the_rest_in_order() -> None:
    log = MemoryWebhookLog(1)
    ids = [log.append(0, event(n, ts=1.0)) for n in range(6)]
    store = MemoryPartitions(log, lambda: 0)
    assert await store.done(0, "", 0, ids[:2], ids[1])
    assert [i for i, _ in log.entries[0]] == ids[2:]
    # an id further in (a dead letter between delivered ones) goes too
    assert await store.done(0, "", 0, [ids[2], ids[4]], ids[2])
    assert [i for i, _ in log.entries[0]] == [ids[3], ids[5]]
