"""``/queue/{name}`` across three relay processes and one redis-server (docs/queues.md).

Checkers count, per message, who got it and how often: 3000 messages shared by three
consumers on three relays are each consumed once and none is lost; a consumer's relay
SIGKILLed while it holds unacknowledged messages: a survivor gets every one of them
again, marked ``redelivered:true``; NACK redelivers to a consumer on another relay;
a message refused ``--queue-max-deliveries`` times lands in ``/queue/{name}.dlq``;
``prefetch-count`` holds (counted at the client); ``--queue-max-length`` refuses a
SEND with an ERROR; ``stomprelay inspect queue`` shows the queue. One stomp.py client
takes part, with its own ACK frames.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import collections
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from clusterhelpers import REAP_DEADLINE, K, PyStompClient, eventually
from procs import RedisServer, RelayProcess
from stompclient import StompClient, StompClientError
from test_multi_api import run_cli

from stomprelay.cluster.envelope import Envelope
from stomprelay.stomp.frames import Frame

pytestmark = pytest.mark.redis

#: The tests send and acknowledge faster than a person: no per-session frame rate.
QUEUE_ARGS = ["--frame-rate", "0"]


def three(start_relay: Callable[..., RelayProcess], *extra: str) -> list[RelayProcess]:
    return [start_relay(name, extra=[*QUEUE_ARGS, *extra]) for name in ("A", "B", "C")]


async def ack_frame(client: StompClient, frame: Frame, command: str = "ACK") -> None:
    """ACK (or NACK) one MESSAGE by its ``ack`` header, without waiting."""
    await client.send_frame(Frame(command, (("id", frame.get("ack") or ""),)))


def stats(relay: RelayProcess, name: str) -> dict[str, Any]:
    status, body = relay.get_json(f"/api/queues/{name}")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def settled(relay: RelayProcess, name: str, dead: int = 0) -> None:
    want = {"length": 0, "pending": 0, "deadLetters": dead}

    def check() -> bool:
        data = stats(relay, name)
        return {k: data[k] for k in want} == want

    await eventually(check, timeout=20, what=f"{name} settled")


async def send_many(producer: StompClient, queue: str, count: int) -> None:
    """SENDs without waiting, a RECEIPT every 500 (so every one is stored at the end)."""
    for i in range(count):
        await producer.send(f"/queue/{queue}", f"m{i}", receipt=(i % 500 == 499 or i == count - 1))


class PyConsumer:
    """A stomp.py consumer in client-individual mode that ACKs every MESSAGE."""

    def __init__(self, client: PyStompClient) -> None:
        self.client = client
        self.bodies: list[str] = []

    async def subscribe(self, destination: str, sub_id: str) -> None:
        conn = self.client.conn
        await asyncio.to_thread(
            conn.subscribe, destination, sub_id, ack="client-individual", receipt=f"r-{sub_id}"
        )
        await self.client.receipt(f"r-{sub_id}")

    async def take(self, timeout: float) -> bool:
        try:
            frame = await self.client.next_message(timeout=timeout)
        except AssertionError:
            return False
        self.bodies.append(frame.body.decode())
        headers = frame.headers
        await asyncio.to_thread(self.client.conn.ack, headers["ack"])
        return True


async def test_three_consumers_on_three_relays_share_3000_messages(
    start_relay: Callable[..., RelayProcess],
    stomp_clients: Callable[..., Awaitable[StompClient]],
    pystomp_clients: Callable[..., Awaitable[PyStompClient]],
) -> None:
    relays = three(start_relay)
    a = await stomp_clients(relays[0], name="consumer-A")
    b = await stomp_clients(relays[1], name="consumer-B")
    c = PyConsumer(await pystomp_clients(relays[2], name="consumer-C"))
    for client in (a, b):
        await client.subscribe("/queue/work", "s", ack="client-individual")
    await c.subscribe("/queue/work", "s")
    producer = await stomp_clients(relays[0], name="producer")
    total = 3000
    sending = asyncio.create_task(send_many(producer, "work", total))
    got: dict[str, list[str]] = {"A": [], "B": [], "C": c.bodies}

    async def consume(client: StompClient, name: str) -> None:
        while sum(map(len, got.values())) < total:
            try:
                frame = await client.next_message("s", timeout=1)
            except StompClientError:
                continue
            got[name].append(frame.body.decode())
            await ack_frame(client, frame)

    async def consume_c() -> None:
        while sum(map(len, got.values())) < total:
            await c.take(1)

    await asyncio.wait_for(
        asyncio.gather(sending, consume(a, "A"), consume(b, "B"), consume_c()), 120
    )
    await settled(relays[1], "work")
    everything = [body for bodies in got.values() for body in bodies]
    counts = collections.Counter(everything)
    assert sorted(counts) == sorted(f"m{i}" for i in range(total)), "none lost"
    assert max(counts.values()) == 1, "each consumed once"
    assert all(got.values()), {k: len(v) for k, v in got.items()}
    assert stats(relays[2], "work")["consumers"] == 3
    await a.expect_no_message("s", within=0.5)


async def test_killed_relay_unacknowledged_messages_go_to_survivors(
    start_relay: Callable[..., RelayProcess],
    stomp_clients: Callable[..., Awaitable[StompClient]],
) -> None:
    relays = three(start_relay)
    doomed = await stomp_clients(relays[2], name="doomed")
    await doomed.subscribe(
        "/queue/jobs", "s", ack="client-individual", headers=[("prefetch-count", "50")]
    )
    producer = await stomp_clients(relays[0], name="producer")
    await send_many(producer, "jobs", 100)
    held = await doomed.collect(50, "s")
    held_bodies = {f.body.decode() for f in held}
    survivors = [await stomp_clients(relays[i], name=f"survivor-{i}") for i in (0, 1)]
    for client in survivors:
        await client.subscribe("/queue/jobs", "s", ack="client-individual")
    relays[2].kill()
    seen: list[Frame] = []

    async def drain(client: StompClient) -> None:
        while len(seen) < 100:
            try:
                frame = await client.next_message("s", timeout=1)
            except StompClientError:
                continue
            seen.append(frame)
            await ack_frame(client, frame)

    await asyncio.wait_for(asyncio.gather(*(drain(c) for c in survivors)), REAP_DEADLINE + 60)
    bodies = collections.Counter(f.body.decode() for f in seen)
    assert sorted(bodies) == sorted(f"m{i}" for i in range(100)), "none lost"
    assert max(bodies.values()) == 1
    redelivered = {f.body.decode() for f in seen if f.get("redelivered") == "true"}
    assert redelivered == held_bodies, "exactly the killed consumer's messages came again"
    await settled(relays[0], "jobs")
    assert stats(relays[0], "jobs")["consumers"] == 2


async def test_nack_redelivers_on_another_relay_then_dead_letters(
    start_relay: Callable[..., RelayProcess],
    stomp_clients: Callable[..., Awaitable[StompClient]],
) -> None:
    relays = three(start_relay, "--queue-max-deliveries", "4")
    refusers = [await stomp_clients(relays[i], name=f"refuser-{i}") for i in range(3)]
    for client in refusers:
        await client.subscribe("/queue/poison", "s", ack="client-individual")
    producer = await stomp_clients(relays[0], name="producer")
    await producer.send("/queue/poison", "bad", receipt=True)
    deliveries: list[tuple[str, str | None]] = []
    for _ in range(4):
        frame, who = await _next_anywhere(refusers)
        deliveries.append((who.name, frame.get("redelivered")))
        await ack_frame(who, frame, "NACK")
    assert [r for _, r in deliveries] == [None, "true", "true", "true"]
    names = [n for n, _ in deliveries]
    assert all(x != y for x, y in itertools.pairwise(names)), (
        f"each NACK went to another consumer first: {names}"
    )
    for client in refusers:
        await client.expect_no_message("s", within=0.3)
    await settled(relays[1], "poison", dead=1)
    reader = await stomp_clients(relays[2], name="dlq-reader")
    await reader.subscribe("/queue/poison.dlq", "dlq")
    dead = await reader.next_message("dlq")
    assert dead.body == b"bad"


async def _next_anywhere(clients: list[StompClient]) -> tuple[Frame, StompClient]:
    for _ in range(200):
        for client in clients:
            pending = client.pending("s")
            if pending:
                frame = await client.next_message("s", lambda f, p=pending[0]: f is p)
                return frame, client
        await asyncio.sleep(0.05)
    raise AssertionError("no consumer got the message")


async def test_prefetch_is_respected_at_the_client(
    start_relay: Callable[..., RelayProcess],
    stomp_clients: Callable[..., Awaitable[StompClient]],
) -> None:
    relays = three(start_relay)
    consumers = [await stomp_clients(relays[i], name=f"slow-{i}") for i in range(3)]
    for client in consumers:
        await client.subscribe(
            "/queue/slow", "s", ack="client-individual", headers=[("prefetch-count", "5")]
        )
    producer = await stomp_clients(relays[0], name="producer")
    await send_many(producer, "slow", 60)
    await eventually(
        lambda: sum(len(c.pending("s")) for c in consumers) == 15,
        timeout=20,
        what="15 messages handed out",
    )
    await asyncio.sleep(0.5)
    assert [len(c.pending("s")) for c in consumers] == [5, 5, 5]
    assert stats(relays[1], "slow")["pending"] == 15
    assert stats(relays[1], "slow")["length"] == 45
    # acknowledging, each one never holds more than 5 unacknowledged
    done = 0
    while done < 60:
        for client in consumers:
            unacked = client.pending("s")
            assert len(unacked) <= 5
            for frame in unacked:
                await client.next_message("s", lambda f, frame=frame: f is frame)
                await ack_frame(client, frame)
                done += 1
        await asyncio.sleep(0.02)
    await settled(relays[2], "slow")


async def test_max_length_refuses_a_send_with_an_error(
    start_relay: Callable[..., RelayProcess],
    pystomp_clients: Callable[..., Awaitable[PyStompClient]],
    redis_server: RedisServer,
) -> None:
    relays = three(start_relay, "--queue-max-length", "5")
    producer = await pystomp_clients(relays[1], name="stomp.py producer")
    for i in range(5):
        await producer.send("/queue/small", f"m{i}")
    await asyncio.to_thread(producer.conn.send, "/queue/small", "m5", receipt="last")
    await eventually(lambda: producer.errors, timeout=10, what="an ERROR")
    assert producer.errors[0].headers["message"] == "Queue full"
    assert producer.errors[0].headers.get("receipt-id") == "last"
    assert stats(relays[0], "small")["length"] == 5
    code, out, err = await run_cli(
        "inspect", "queue", "small", "--json", "--redis-url", redis_server.url
    )
    assert code == 0, err
    assert json.loads(out) == [
        {"name": "small", "length": 5, "consumers": 0, "pending": 0, "deadLetters": 0}
    ]
    code, _, err = await run_cli("inspect", "queue", "nothing", "--redis-url", redis_server.url)
    assert code == 1
    assert "no queue nothing" in err


async def test_graceful_stop_hands_unacknowledged_messages_over(
    start_relay: Callable[..., RelayProcess],
    stomp_clients: Callable[..., Awaitable[StompClient]],
) -> None:
    relays = three(start_relay)
    leaving = await stomp_clients(relays[2], name="leaving")
    await leaving.subscribe("/queue/stop", "s", ack="client", headers=[("prefetch-count", "20")])
    producer = await stomp_clients(relays[0], name="producer")
    await send_many(producer, "stop", 30)
    held = await leaving.collect(20, "s")
    staying = await stomp_clients(relays[1], name="staying")
    await staying.subscribe("/queue/stop", "s", ack="auto")
    assert await asyncio.to_thread(relays[2].terminate) == 0
    got = await staying.collect(30, "s", timeout=30)
    bodies = collections.Counter(f.body.decode() for f in got)
    assert sorted(bodies) == sorted(f"m{i}" for i in range(30))
    again = {f.body.decode() for f in got if f.get("redelivered") == "true"}
    assert again == {f.body.decode() for f in held}
    await settled(relays[0], "stop")
    assert stats(relays[0], "stop")["consumers"] == 1


async def test_redis_lost_and_back_queues_serve_again(
    start_relay: Callable[..., RelayProcess],
    stomp_clients: Callable[..., Awaitable[StompClient]],
    redis_server: RedisServer,
) -> None:
    """Redis restarts empty (no persistence): a SEND meanwhile is an ERROR, never a
    silent drop; then the relays make the queue's stream and group again and serve it."""
    relays = three(start_relay)
    consumer = await stomp_clients(relays[1], name="consumer")
    await consumer.subscribe("/queue/outage", "s", ack="client-individual")
    producer = await stomp_clients(relays[0], name="producer")
    await producer.send("/queue/outage", "before", receipt=True)
    await ack_frame(consumer, await consumer.next_message("s"))
    redis_server.stop()
    doomed = await stomp_clients(relays[2], name="sender-during-outage")
    with pytest.raises(StompClientError):
        await doomed.send("/queue/outage", "lost?", receipt=True, timeout=30)
    assert doomed.errors[0].get("message") == "Queue unavailable"
    redis_server.start()
    await eventually(lambda: all(r.ready() for r in relays), timeout=30, what="relays ready")

    producer = await stomp_clients(relays[0], name="producer-after")
    await producer.send("/queue/outage", "after", receipt=True, timeout=10)
    frame = await consumer.next_message("s", lambda f: f.body == b"after", timeout=30)
    await ack_frame(consumer, frame)
    await settled(relays[0], "outage")


async def test_entries_of_a_relay_gone_without_a_reap_come_back(
    start_relay: Callable[..., RelayProcess],
    stomp_clients: Callable[..., Awaitable[StompClient]],
    rdb: Any,
) -> None:
    """A relay that left entries pending and is in no registry (its reap's queue step
    never ran): once its consumer is idle long enough, a relay gives them back."""
    stream = K.queue("orphans")
    rdb.xgroup_create(stream, "g", "0", mkstream=True)
    for i in range(5):
        envelope = Envelope(f"ghost-{i}", "ghost", "/queue/orphans", (), f"m{i}".encode(), 1)
        rdb.xadd(stream, {"e": envelope.to_json(), "n": 0})
    rdb.sadd(K.queue_names, "orphans")
    taken = rdb.xreadgroup("g", "ghost/1", {stream: ">"}, count=5)
    assert len(taken[0][1]) == 5
    relays = three(start_relay)
    consumer = await stomp_clients(relays[0], name="consumer")
    await consumer.subscribe("/queue/orphans", "s", ack="client-individual")
    got = await consumer.collect(5, "s", timeout=60)
    assert sorted(bodies_of(got)) == [f"m{i}" for i in range(5)]
    assert all(f.get("redelivered") == "true" for f in got)
    for frame in got:
        await ack_frame(consumer, frame)
    await settled(relays[1], "orphans")


def bodies_of(frames: list[Frame]) -> list[str]:
    return [f.body.decode() for f in frames]
