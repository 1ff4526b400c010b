"""The sync component, driven frame by frame with no sockets and a fake clock.

A :class:`Feed` is fed live envelopes and log reads in the orders faults produce
(a bus that dropped messages, a read racing live delivery, a trimmed log, a lost
history); every subscriber must see each offset once, in order, and be told of
what cannot be filled.
"""

from __future__ import annotations

import asyncio

import pytest

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import LogSlice
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.sync import Deliver, Feed, Fetch, Gap, Health, Journal, JournalEntry, Outage


def env(offset: int, epoch: str = "E1") -> Envelope:
    return Envelope(f"m{epoch}-{offset}", "r1", "/topic/room/x", (), b"", 0, offset, epoch)


def log(first: int, last: int, epoch: str = "E1", after: int = 0, limit: int = 500) -> LogSlice:
    start = max(first, after + 1)
    entries = tuple(env(o, epoch) for o in range(start, min(last, start + limit - 1) + 1))
    return LogSlice(epoch, first, last, entries)


class Sub:
    """What one subscriber received, and the checks a checker client makes."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int]] = []
        self.gaps: list[tuple[int, int]] = []


def run(feed: Feed, effects: list, subs: dict[str, Sub], reads: list[int]) -> None:
    for effect in effects:
        if isinstance(effect, Deliver):
            for key in effect.keys:
                subs[key].got.append((effect.envelope.epoch, effect.envelope.offset))
        elif isinstance(effect, Gap):
            for key in effect.keys:
                subs[key].gaps.append((effect.start, effect.end))
        elif isinstance(effect, Fetch):
            reads.append(effect.after)


def started(last: int = 0, epoch: str = "E1", subs: tuple[str, ...] = ("a",)) -> Feed:
    feed = Feed("room:x")
    for key in subs:
        feed.add(key)
    assert feed.start() == [Fetch(-1)]
    assert feed.fetched(LogSlice(epoch, 1, last), 0) == []
    assert feed.known
    assert not feed.repairing
    assert feed.last == last
    return feed


def test_live_in_order_is_delivered_once() -> None:
    feed, subs, reads = started(3), {"a": Sub()}, []
    for o in (4, 5, 5, 3, 6):
        run(feed, feed.live(env(o)), subs, reads)
    assert subs["a"].got == [("E1", 4), ("E1", 5), ("E1", 6)]
    assert reads == []


def test_a_hole_is_read_from_the_log_and_live_messages_wait() -> None:
    feed, subs, reads = started(0), {"a": Sub()}, []
    run(feed, feed.live(env(1)), subs, reads)
    run(feed, feed.live(env(4)), subs, reads)  # 2 and 3 lost on the bus
    assert reads == [1]
    run(feed, feed.live(env(5)), subs, reads)  # held while the read is in flight
    assert reads == [1]
    run(feed, feed.fetched(log(1, 5, after=1), 1), subs, reads)
    assert subs["a"].got == [("E1", o) for o in range(1, 6)]
    assert subs["a"].gaps == []
    assert not feed.repairing
    assert feed.held == {}


def test_a_read_older_than_held_messages_reads_again() -> None:
    feed, subs, reads = started(0), {"a": Sub()}, []
    run(feed, feed.broken(), subs, reads)
    run(feed, feed.live(env(6)), subs, reads)
    run(feed, feed.fetched(log(1, 3), 0), subs, reads)  # the read saw 1..3 only
    assert subs["a"].got == [("E1", 1), ("E1", 2), ("E1", 3)]
    assert reads == [0, 3]
    run(feed, feed.fetched(log(1, 6, after=3), 3), subs, reads)
    assert [o for _, o in subs["a"].got] == [1, 2, 3, 4, 5, 6]
    assert not feed.repairing


def test_trimmed_offsets_become_one_gap_notice() -> None:
    feed, subs, reads = started(2), {"a": Sub()}, []
    run(feed, feed.live(env(9)), subs, reads)
    run(feed, feed.fetched(log(6, 9, after=2), 2), subs, reads)
    assert subs["a"].gaps == [(3, 5)]
    assert [o for _, o in subs["a"].got] == [6, 7, 8, 9]


def test_a_new_epoch_resets_subscribers_and_reads_it_from_the_start() -> None:
    feed, subs, reads = started(7), {"a": Sub()}, []
    run(feed, feed.live(env(2, "E2")), subs, reads)
    assert subs["a"].gaps == [(1, 0)]  # reset notice
    assert reads == [0]
    run(feed, feed.fetched(log(1, 2, "E2"), 0), subs, reads)
    assert subs["a"].got == [("E2", 1), ("E2", 2)]
    assert feed.epoch == "E2"
    assert not feed.repairing


def continued(first: int, last: int, since: int, after: int = 0) -> LogSlice:
    """A failover's new epoch E2 that keeps E1's replicated entries 1..since."""
    read = log(first, last, "E2", after)
    return LogSlice("E2", first, last, read.entries, parent="E1", since=since)


def test_a_failover_epoch_skips_what_the_relay_had_of_the_old_one() -> None:
    # the relay had E1 up to 7; the promoted replica had replicated up to 5 (6, 7
    # were lost with the old master); 8, 9 were appended to the new master since
    feed, subs, reads = started(7), {"a": Sub()}, []
    run(feed, feed.live(env(8, "E2")), subs, reads)
    assert subs["a"].gaps == [(1, 0)]  # the epoch changed: a reset notice
    assert reads == [0]
    run(feed, feed.fetched(continued(1, 9, since=5), 0), subs, reads)
    # 1..5 it already had (as E1 1..5); 6..9 are new under E2: nothing twice
    assert subs["a"].got == [("E2", 6), ("E2", 7), ("E2", 8), ("E2", 9)]
    assert feed.last == 9
    assert not feed.repairing


def test_a_failover_epoch_fills_in_what_the_relay_had_not_reached() -> None:
    # the relay was behind (E1 up to 3) while the replica had 1..5
    feed, subs, reads = started(3), {"a": Sub()}, []
    run(feed, feed.live(env(6, "E2")), subs, reads)
    run(feed, feed.fetched(continued(1, 6, since=5), 0), subs, reads)
    assert subs["a"].got == [("E2", 4), ("E2", 5), ("E2", 6)]


def test_a_new_epoch_heard_during_a_read_of_the_old_one_is_followed() -> None:
    # a read of E1 is in flight (a repair) when E2's first message arrives live: the
    # feed follows E2 once the read is in, not only at E2's next message
    feed, subs, reads = started(3), {"a": Sub()}, []
    run(feed, feed.broken(), subs, reads)
    assert reads == [3]
    run(feed, feed.live(env(5, "E2")), subs, reads)
    run(feed, feed.fetched(log(1, 3, "E1", after=3), 3), subs, reads)
    assert subs["a"].gaps == [(1, 0)]  # the reset notice
    assert reads[-1] == 0
    run(feed, feed.fetched(continued(1, 5, since=3), 0), subs, reads)
    assert subs["a"].got == [("E2", 4), ("E2", 5)]
    assert not feed.repairing


def test_an_epoch_that_continues_another_one_starts_from_the_start() -> None:
    # E2 continues E0, not E1 that this relay followed: everything of E2 is new here
    feed, subs, reads = started(4), {"a": Sub()}, []
    run(feed, feed.live(env(3, "E2")), subs, reads)
    read = log(1, 3, "E2")
    run(feed, feed.fetched(LogSlice("E2", 1, 3, read.entries, "E0", 2), 0), subs, reads)
    assert subs["a"].got == [("E2", 1), ("E2", 2), ("E2", 3)]


def test_a_fresh_log_is_adopted_silently() -> None:
    feed, subs, reads = started(0, epoch=""), {"a": Sub()}, []
    run(feed, feed.live(env(1, "E9")), subs, reads)
    assert subs["a"].got == [("E9", 1)]
    assert subs["a"].gaps == []


def test_a_break_during_a_read_reads_again_after_it() -> None:
    feed, subs, reads = started(0), {"a": Sub()}, []
    run(feed, feed.broken(), subs, reads)
    run(feed, feed.broken(), subs, reads)  # the bus broke again meanwhile
    assert reads == [0]
    run(feed, feed.fetched(log(1, 2), 0), subs, reads)
    assert reads == [0, 2]
    run(feed, feed.fetched(log(1, 3, after=2), 2), subs, reads)
    assert [o for _, o in subs["a"].got] == [1, 2, 3]
    assert not feed.repairing


def test_a_failed_read_is_retried_on_the_next_break() -> None:
    feed, subs, reads = started(0), {"a": Sub()}, []
    run(feed, feed.broken(), subs, reads)
    feed.fetch_failed()
    assert feed.repairing
    assert not feed.inflight
    run(feed, feed.broken(), subs, reads)
    assert reads == [0, 0]


def test_replaying_subscribers_join_the_feed_at_their_seam() -> None:
    feed, subs, reads = started(5, subs=("a", "b")), {"a": Sub(), "b": Sub()}, []
    feed.add("r", live=False)
    subs["r"] = Sub()
    run(feed, feed.live(env(6)), subs, reads)
    assert subs["r"].got == []  # still replaying: the replay reads up to here itself
    assert feed.go_live("r", 5) is False  # behind the feed: read on
    assert feed.go_live("r", 6) is True
    run(feed, feed.live(env(7)), subs, reads)
    assert subs["r"].got == [("E1", 7)]
    # a subscriber whose replay read ahead of the feed skips what it already has
    feed.add("s", live=False)
    subs["s"] = Sub()
    assert feed.go_live("s", 9)
    for o in (8, 9, 10):
        run(feed, feed.live(env(o)), subs, reads)
    assert subs["s"].got == [("E1", 10)]
    assert [o for _, o in subs["a"].got] == [6, 7, 8, 9, 10]


def test_subscribers_added_before_the_head_is_known_start_at_the_head() -> None:
    feed = Feed("room:x")
    feed.add("a")
    feed.start()
    feed.live(env(13))  # arrived before the head read answered
    subs, reads = {"a": Sub()}, []
    run(feed, feed.fetched(LogSlice("E1", 1, 12), 0), subs, reads)
    assert subs["a"].got == [("E1", 13)]


def test_health_fails_fast_and_fences_judging() -> None:
    health = Health(now=0.0)
    assert not health.may_judge(5.0, ttl=10)  # just started: wait one TTL
    assert health.may_judge(10.0, ttl=10)
    assert health.fail(20.0, "timeout") is True
    assert health.fail(21.0, "again") is False
    assert health.down
    assert not health.may_judge(40.0, ttl=10)
    assert health.recovered(25.0) == 5.0
    assert not health.may_judge(30.0, ttl=10)  # within a TTL of its own trouble
    assert health.may_judge(35.0, ttl=10)
    assert health.degraded_total(35.0) == 5.0
    assert health.outages == 1


def test_the_journal_is_bounded_by_count_and_bytes() -> None:
    journal = Journal(max_messages=2, max_bytes=10)
    big = Envelope("m", "r", "/topic/x", (), b"x" * 8, 0)
    journal.add(JournalEntry("topic:x", "c", big))
    with pytest.raises(PolicyError, match="Journal full"):
        journal.add(JournalEntry("topic:x", "c", big))  # bytes
    small = Envelope("s", "r", "/topic/x", (), b"x", 0)
    journal.add(JournalEntry("topic:x", "c", small))
    with pytest.raises(PolicyError):
        journal.add(JournalEntry("topic:x", "c", small))  # count
    assert [journal.peek() is not None, len(journal)] == [True, 2]
    journal.pop()
    journal.pop()
    assert journal.peek() is None
    assert journal.bytes == 0


class FakeLog:
    def __init__(self) -> None:
        self.appended: list[str] = []
        self.fail = False

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        if self.fail:
            raise BackendUnavailable("still down")
        self.appended.append(envelope.id)
        return envelope

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        raise AssertionError("not used")


async def test_sync_fails_fast_while_down_and_recovers_once() -> None:
    clock = [100.0]
    log_, calls, states = FakeLog(), {"probe": 0, "recover": 0, "redis": 0}, []
    up = asyncio.Event()
    redis_answers = False

    async def probe() -> None:
        calls["probe"] += 1
        if not redis_answers:
            raise BackendUnavailable("refused")

    async def recover() -> None:
        calls["recover"] += 1

    def on_state(value: bool) -> None:
        states.append(value)
        if value:
            up.set()

    sync = Outage(
        log_, probe, recover, lambda: clock[0], Journal(10, 1000), 0.01, on_state, lambda: 0
    )

    async def redis_op() -> str:
        calls["redis"] += 1
        raise BackendUnavailable("timeout")

    with pytest.raises(BackendUnavailable):
        await sync.guard(redis_op)
    assert sync.down
    assert states == [False]
    # down: no more calls reach Redis, every one fails at once
    for _ in range(5):
        with pytest.raises(BackendUnavailable, match="redis down"):
            await sync.guard(redis_op)
    assert calls["redis"] == 1
    for i in range(3):
        sync.keep("room:x", "c", Envelope(f"j{i}", "r", "/topic/room/x", (), b"", 0))
    await asyncio.sleep(0.05)
    assert calls["probe"] >= 2
    assert calls["recover"] == 0
    redis_answers = True
    await asyncio.wait_for(up.wait(), 2)
    assert calls["recover"] == 1
    assert log_.appended == ["j0", "j1", "j2"]  # in order, under the ids already used
    assert len(sync.journal) == 0
    assert not sync.down
    assert states == [False, True]
    await sync.close()


async def test_a_journal_append_failing_keeps_the_rest_for_the_next_probe() -> None:
    log_ = FakeLog()
    up = asyncio.Event()
    sync = Outage(
        log_,
        probe=_ok,
        recover=_ok,
        clock=lambda: 0.0,
        journal=Journal(10, 1000),
        probe_interval=0.01,
        on_state=lambda v: up.set() if v else None,
    )
    sync.fail(BackendUnavailable("x"))
    sync.keep("room:x", "c", Envelope("a", "r", "/topic/room/x", (), b"", 0))
    log_.fail = True
    await asyncio.sleep(0.05)
    assert sync.down
    assert len(sync.journal) == 1
    log_.fail = False
    await asyncio.wait_for(up.wait(), 2)
    assert log_.appended == ["a"]
    await sync.close()


async def _ok() -> None:
    return None


def test_a_replay_in_another_epoch_never_goes_live_on_old_offsets() -> None:
    feed, subs, reads = started(3), {"a": Sub()}, []
    feed.add("r", live=False)
    subs["r"] = Sub()
    run(feed, feed.live(env(1, "E2")), subs, reads)  # the history was lost meanwhile
    run(feed, feed.fetched(log(1, 1, "E2"), 0), subs, reads)
    assert feed.epoch == "E2"
    assert feed.go_live("r", 500, "E1") is False  # read the new epoch instead
    assert feed.go_live("r", 1, "E2") is True
    run(feed, feed.live(env(2, "E2")), subs, reads)
    assert subs["r"].got == [("E2", 2)]


def test_a_trimmed_range_delivers_the_live_messages_held_for_it() -> None:
    """Two journals appended at once overrun the log: the read resumes at 120 and
    finds 121..196 trimmed, but this relay heard many of them live meanwhile."""
    feed, subs, reads = started(120), {"a": Sub()}, []
    run(feed, feed.broken(), subs, reads)
    assert reads == [120]
    held = [125, 130, *range(140, 151), 197]
    for offset in held:
        run(feed, feed.live(env(offset)), subs, reads)
    run(feed, feed.fetched(log(197, 200, after=120), 120), subs, reads)
    assert [o for _, o in subs["a"].got] == [125, 130, *range(140, 151), 197, 198, 199, 200]
    assert subs["a"].gaps == [(121, 124), (126, 129), (131, 139), (151, 196)]
    assert feed.held == {}
    assert not feed.repairing


def test_a_log_trimmed_past_its_end_still_delivers_what_is_held() -> None:
    """The read finds no entry after the cursor (all trimmed, head beyond it)."""
    feed, subs, reads = started(10), {"a": Sub()}, []
    run(feed, feed.broken(), subs, reads)
    for offset in (12, 13):
        run(feed, feed.live(env(offset)), subs, reads)
    run(feed, feed.fetched(LogSlice("E1", 31, 30), 10), subs, reads)
    assert [o for _, o in subs["a"].got] == [12, 13]
    assert subs["a"].gaps == [(11, 11), (14, 30)]
    assert feed.held == {}


async def test_the_outage_counts_degraded_seconds_and_who_may_judge() -> None:
    clock = [100.0]

    async def probe() -> None:
        raise BackendUnavailable("still down")

    outage = Outage(FakeLog(), probe, _ok, lambda: clock[0], Journal(10, 1000), 60.0)
    assert outage.degraded_seconds() == 0.0
    assert not outage.may_judge(5.0), "within one TTL of the start"
    clock[0] = 110.0
    assert outage.may_judge(5.0)
    outage.fail(BackendUnavailable("timeout"))
    clock[0] = 113.0
    assert outage.degraded_seconds() == 3.0
    assert not outage.may_judge(5.0)
    await outage.close()
