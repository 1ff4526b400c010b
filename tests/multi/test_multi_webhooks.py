"""Webhook delivery between relay processes, Redis and a real HTTP receiver.

Here the test itself appends the events to the partition streams (one field ``e``, as
the registry's steps do), so it knows exactly what must arrive: every event once per
id at least, in order per room (each event carries the room's own sequence number),
signed (checked by the receiver's own HMAC code). The relays are real processes;
the receiver refuses connections, answers 500, holds a request, or answers 200.
Figures (events expected, delivered, duplicates, max lag) are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
import redis
from clusterhelpers import LIVENESS_TTL, K, eventually
from procs import ROOT
from stompclient import StompClient
from webhookreceiver import WebhookReceiver, check_room_order

from stomprelay.webhook_events import event_json, make_event, partition_key, partition_of

pytestmark = pytest.mark.redis

SECRET = "whsec-test"
#: Short retry delays and a short linger: the scenarios play out in seconds.
FAST = ["--webhook-retry-base", "0.1", "--webhook-retry-cap", "0.5", "--webhook-linger-ms", "20"]


def webhook_args(receiver: WebhookReceiver, *extra: str) -> list[str]:
    return ["--webhook-url", receiver.url, "--webhook-secret", SECRET, *FAST, *extra]


class Producer:
    """Appends numbered room events to the partitions, as a registry step would."""

    def __init__(self, rdb: redis.Redis, partitions: int, server_id: str = "producer") -> None:
        self.rdb = rdb
        self.partitions = partitions
        self.server_id = server_id
        self.sent: list[dict[str, Any]] = []
        self.seq: dict[str, int] = defaultdict(int)

    def add(self, room: str, timestamp_ms: int | None = None) -> dict[str, Any]:
        self.seq[room] += 1
        n = len(self.sent)
        event = make_event(
            "room.joined",
            f"evt-{n}",
            timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            self.server_id,
            session_id=f"s{n}",
            room_id=room,
            extra={"seq": self.seq[room]},
        )
        p = partition_of(partition_key(room), self.partitions)
        self.rdb.xadd(K.webhook_events(p), {"e": event_json(event)})
        self.sent.append(event)
        return event


def check_delivery(receiver: WebhookReceiver, sent: list[dict[str, Any]], label: str) -> None:
    """Every event acknowledged, per-room sequence in order, every POST signed; the
    figures printed."""
    everything = receiver.snapshot()
    got = [e for e in everything if "seq" in e]  # the test's own events
    assert {e["id"] for e in got} == {e["id"] for e in sent}
    per_room: dict[str, list[int]] = defaultdict(list)
    for event in got:
        per_room[event["roomId"]].append(event["seq"])
    assert not check_room_order(everything)
    for room, seqs in per_room.items():
        assert seqs == sorted(seqs), f"room {room} out of order: {seqs}"
    assert receiver.bad_signatures == 0
    assert all(post.content_type == "application/json" for post in receiver.posts)
    print(
        f"\n[{label}] events expected {len(sent)}, delivered {len(got)} "
        f"(+{len(everything) - len(got)} of real sessions), "
        f"duplicates seen by id {sum(receiver.duplicates.values())}, "
        f"POSTs {len(receiver.posts)} ({sum(1 for p in receiver.posts if p.status != 200)} "
        f"answered non-2xx), max delivery lag {receiver.max_lag():.2f} s"
    )


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stomprelay", *args, "--redis-url", redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_receiver_outage_loses_nothing_and_keeps_room_order(
    start_relay: Any, rdb: redis.Redis, redis_server: Any
) -> None:
    """The receiver refuses connections for 10 s, then answers 500 for 5 s, then 200,
    while events keep coming: all arrive, in order per room."""
    receiver = WebhookReceiver(SECRET)  # not listening yet: connections refused
    try:
        relays = [
            start_relay(name, extra=webhook_args(receiver, "--webhook-partitions", "4"))
            for name in ("wh-a", "wh-b")
        ]
        producer = Producer(rdb, 4)
        rooms = [f"room-{i}" for i in range(8)]
        sessions: list[str] = []
        chatters: list[asyncio.Task[None]] = []

        async def chatter(k: int) -> None:
            """A real client meanwhile: its events wait with the others."""
            client = await StompClient.connect(relays[k % 2].ws_url, login=f"chat-{k}")
            sessions.append(client.session_id)
            await client.join(f"chat-{k % 3}", f"chat-{k}")
            await client.leave(f"chat-{k % 3}")
            await client.disconnect()

        async def produce(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for room in rooms:
                    producer.add(room)
                if len(producer.sent) % 40 == 0:
                    chatters.append(asyncio.create_task(chatter(len(chatters))))
                await asyncio.sleep(0.2)

        await produce(10)  # receiver down (connection refused)
        receiver.status = 500
        receiver.up()
        await produce(5)  # receiver answering 500
        assert not receiver.snapshot()
        receiver.status = 200
        await produce(2)
        await asyncio.gather(*chatters)

        def complete() -> None:
            events = receiver.snapshot()
            assert len([e for e in events if "seq" in e]) == len(producer.sent)
            kinds = Counter((e.get("sessionId"), e["type"]) for e in events)
            for session in sessions:
                for kind in ("session.connected", "room.joined", "room.left"):
                    assert kinds[session, kind] == 1, (session, kind)
                assert kinds[session, "session.disconnected"] == 1, session

        await eventually(complete, timeout=60, what="every event delivered")
        assert len(sessions) >= 10
        check_delivery(receiver, producer.sent, "receiver outage")
        assert sum(r.metric("stomprelay_webhook_retries_total") for r in relays) > 0
        assert sum(r.metric("stomprelay_webhook_events_delivered_total") for r in relays) >= len(
            producer.sent
        )
        await eventually(
            lambda: all(rdb.xlen(K.webhook_events(p)) == 0 for p in range(4)),
            timeout=30,
            what="delivered entries deleted",
        )
    finally:
        receiver.hold.set()
        receiver.down()


async def test_never_recovering_receiver_dead_letters_then_replay(
    start_relay: Any, rdb: redis.Redis, redis_server: Any
) -> None:
    """A receiver that only answers 500: past --webhook-max-age the events go to the
    dead-letter stream (inspect lists them); once it answers, replay delivers them."""
    with WebhookReceiver(SECRET) as receiver:
        receiver.status = 500
        start_relay("wh-dead", extra=webhook_args(receiver, "--webhook-max-age", "2"))
        producer = Producer(rdb, 16)
        for i in range(12):
            producer.add(f"room-{i % 3}")
        await eventually(lambda: rdb.xlen(K.webhook_dead) == 12, timeout=60, what="12 dead letters")
        assert not receiver.snapshot()
        shown = await asyncio.to_thread(cli, redis_server.url, "inspect", "webhooks", "--json")
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        assert len(view["partitions"]) == 16
        assert sum(row["length"] for row in view["partitions"]) == 0
        assert {d["event"]["id"] for d in view["dead"]} == {e["id"] for e in producer.sent}
        assert all(d["error"] == "HTTP 500" for d in view["dead"])
        assert {d["partition"] for d in view["dead"]} == {
            partition_of(partition_key(e["roomId"]), 16) for e in producer.sent
        }

        # one dead letter by id, then the rest
        receiver.status = 200
        first = view["dead"][0]
        replayed = await asyncio.to_thread(
            cli, redis_server.url, "webhooks", "replay", "--id", first["id"]
        )
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1 dead letter" in replayed.stdout
        await eventually(
            lambda: [e["id"] for e in receiver.snapshot()] == [first["event"]["id"]],
            timeout=30,
            what="the replayed dead letter delivered",
        )
        unknown = await asyncio.to_thread(
            cli, redis_server.url, "webhooks", "replay", "--id", "1-1"
        )
        assert unknown.returncode == 1
        assert "no dead letter 1-1" in unknown.stderr
        rest = await asyncio.to_thread(cli, redis_server.url, "webhooks", "replay", "--all")
        assert rest.returncode == 0, rest.stderr
        await eventually(
            lambda: len(receiver.snapshot()) == 12, timeout=30, what="every dead letter"
        )
        assert rdb.xlen(K.webhook_dead) == 0
        check_delivery(receiver, producer.sent, "dead letters replayed")


async def test_relay_killed_with_a_batch_in_flight(
    start_relay: Any, rdb: redis.Redis, redis_server: Any
) -> None:
    """The relay delivering the only partition is SIGKILLed while the receiver holds
    its POST: the other relay takes the lease over and delivers the same entries."""
    with WebhookReceiver(SECRET) as receiver:
        args = webhook_args(receiver, "--webhook-partitions", "1")
        relays = {name: start_relay(name, extra=args) for name in ("wh-x", "wh-y")}
        holder = await eventually(
            lambda: rdb.get(K.webhook_lease(0)), timeout=20, what="a lease holder"
        )
        victim = relays[holder.split(":")[0]]
        survivor = next(r for r in relays.values() if r is not victim)
        receiver.hold.clear()
        producer = Producer(rdb, 1)
        for _ in range(5):
            producer.add("lobby")
        await eventually(lambda: receiver.held >= 1, timeout=20, what="a POST held")
        shown = await asyncio.to_thread(
            cli, redis_server.url, "inspect", "webhooks", "--json", "--webhook-partitions", "1"
        )
        assert shown.returncode == 0, shown.stderr
        (row,) = json.loads(shown.stdout)["partitions"]
        assert (row["partition"], row["length"], row["cursor"]) == (0, 5, None)
        assert row["lease"] == holder
        assert isinstance(row["oldestPendingAgeMs"], int)
        assert row["oldestPendingAgeMs"] >= 0
        human = await asyncio.to_thread(
            cli, redis_server.url, "inspect", "webhooks", "--webhook-partitions", "1"
        )
        assert human.returncode == 0, human.stderr
        assert holder in human.stdout
        assert "dead letters (0)" in human.stdout
        killed_at = time.time()
        victim.kill()
        # the held POST stays unanswered until the survivor has sent its own
        await eventually(
            lambda: (rdb.get(K.webhook_lease(0)) or "").startswith(survivor.server_id + ":"),
            timeout=LIVENESS_TTL * 4 + 10,
            what="the lease taken over",
        )
        await eventually(lambda: receiver.held >= 2, timeout=30, what="the batch sent again")
        receiver.hold.set()
        await eventually(
            lambda: len(receiver.snapshot()) == 5, timeout=30, what="the batch delivered"
        )
        resent = [p for p in receiver.posts if p.status == 200 and p.arrived >= killed_at]
        assert any(set(p.ids) == {e["id"] for e in producer.sent} for p in resent)
        await eventually(
            lambda: rdb.xlen(K.webhook_events(0)) == 0, timeout=20, what="entries deleted"
        )
        check_delivery(receiver, producer.sent, "relay killed mid-batch")


@pytest.mark.parametrize(
    "args", [["inspect", "webhooks"], ["webhooks", "replay", "--all"]], ids=["inspect", "replay"]
)
def test_webhook_commands_on_a_single_node_say_there_is_nothing(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stomprelay", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("REDIS_")},
    )
    assert done.returncode == 2
    assert "a single node keeps its webhook events in memory" in done.stderr


async def test_delivery_resumes_after_redis_stalls(
    start_relay: Any, rdb: redis.Redis, redis_server: Any
) -> None:
    """Redis stalls (SIGSTOP) past the lease TTL while events wait: once it is back,
    the relays take the leases again and deliver everything, in order per room."""
    with WebhookReceiver(SECRET) as receiver:
        for name in ("wh-s1", "wh-s2"):
            start_relay(name, extra=webhook_args(receiver, "--webhook-partitions", "4"))
        producer = Producer(rdb, 4)
        for i in range(20):
            producer.add(f"room-{i % 4}")
        await eventually(lambda: len(receiver.snapshot()) == 20, timeout=30, what="first 20")
        receiver.status = 500  # the next events wait in their partitions
        for i in range(20):
            producer.add(f"room-{i % 4}")
        await eventually(lambda: len(receiver.posts) > 2, timeout=30, what="failed attempts")
        redis_server.pause()
        receiver.status = 200
        await asyncio.sleep(LIVENESS_TTL * 3)  # every lease has expired when Redis is back
        redis_server.resume()
        for i in range(20):
            producer.add(f"room-{i % 4}")
        await eventually(
            lambda: len(receiver.snapshot()) == 60, timeout=90, what="every event delivered"
        )
        check_delivery(receiver, producer.sent, "redis stalled")


async def test_replay_uses_the_relays_partitions_and_a_replayed_letter_is_retried(
    start_relay: Any, rdb: redis.Redis, redis_server: Any
) -> None:
    """Relays on 4 partitions, the CLI left at its default (16): replay puts the letters
    back into partitions the relays read, inspect shows those 4; a replayed letter
    that meets a failing receiver again is retried for a whole --webhook-max-age from
    its replay, not dead-lettered at its first failure (its own timestamp is old)."""
    with WebhookReceiver(SECRET) as receiver:
        receiver.status = 500
        start_relay(
            "wh-four",
            extra=webhook_args(receiver, "--webhook-partitions", "4", "--webhook-max-age", "3"),
        )
        producer = Producer(rdb, 4)
        for i in range(6):
            producer.add(f"room-{i % 3}")
        await eventually(lambda: rdb.xlen(K.webhook_dead) == 6, timeout=60, what="6 dead letters")
        shown = await asyncio.to_thread(cli, redis_server.url, "inspect", "webhooks", "--json")
        assert shown.returncode == 0, shown.stderr
        assert len(json.loads(shown.stdout)["partitions"]) == 4
        # the receiver keeps failing for a while after the replay, then answers
        replayed = await asyncio.to_thread(cli, redis_server.url, "webhooks", "replay", "--all")
        assert replayed.returncode == 0, replayed.stderr
        assert all(rdb.xlen(K.webhook_events(p)) == 0 for p in range(4, 16))
        await asyncio.sleep(1.0)
        assert rdb.xlen(K.webhook_dead) == 0, "a replayed letter went straight back"
        receiver.status = 200
        await eventually(
            lambda: len(receiver.snapshot()) == 6, timeout=30, what="every replayed letter"
        )
        assert rdb.xlen(K.webhook_dead) == 0
        check_delivery(receiver, producer.sent, "replayed into the relays' 4 partitions")


async def test_a_relay_without_webhooks_owns_no_partition(
    start_relay: Any, rdb: redis.Redis
) -> None:
    """Partitions are shared by the relays that deliver: a live relay without
    --webhook-url beside one with it takes none, so the delivering relay holds every
    lease the whole time (no taking and handing back) and delivers everything."""
    with WebhookReceiver(SECRET) as receiver:
        start_relay("wh-quiet")
        start_relay("wh-busy", extra=webhook_args(receiver, "--webhook-partitions", "4"))

        def holders() -> list[str]:
            return [str(rdb.get(K.webhook_lease(p)) or "") for p in range(4)]

        await eventually(
            lambda: all(h.startswith("wh-busy:") for h in holders()),
            timeout=20,
            what="wh-busy holding every partition",
        )
        seen = []
        for _ in range(20):  # about two lease periods: no lease is ever handed back
            seen.append(holders())
            await asyncio.sleep(0.1)
        assert all(h.startswith("wh-busy:") for row in seen for h in row), seen
        producer = Producer(rdb, 4)
        for i in range(8):
            producer.add(f"room-{i % 4}")
        await eventually(lambda: len(receiver.snapshot()) >= 8, timeout=30, what="8 events")
        check_delivery(receiver, producer.sent, "one delivering relay beside a quiet one")
