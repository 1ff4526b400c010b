"""``/queue/{name}`` on in-process relays (docs/queues.md), on one node in memory and
on two relays sharing a real redis-server: the same scenarios for both.

Competing consumers, the three ack modes of STOMP 1.2 (and 1.0/1.1, which ack by
message-id), NACK and a consumer's end redelivering with ``redelivered:true`` (to
another consumer first), ``prefetch-count``, the dead-letter queue after
``--queue-max-deliveries``, ``--queue-max-length``, ACK/NACK in transactions, and
the operators' view (``GET /api/queues/{name}``, metrics).
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from stompclient import StompClient, StompClientError

from stomprelay.stomp.frames import V10, V11, Frame
from stomprelay.transport import RelayServer

#: The ``relays`` fixture (tests/integration/conftest.py): memory, or n relays on Redis.
Relays = Callable[..., Awaitable[list[RelayServer]]]


def url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def ack(client: StompClient, frame: Frame, command: str = "ACK", **extra: str) -> None:
    """ACK or NACK a MESSAGE as its version names it, with a receipt."""
    headers: list[tuple[str, str]] = []
    if client.version == "1.2":
        headers.append(("id", frame.get("ack") or ""))
    else:
        headers.append(("message-id", frame.get("message-id") or ""))
        headers.append(("subscription", frame.get("subscription") or ""))
    headers += list(extra.items())
    await receipted(client, command, headers)


async def receipted(client: StompClient, command: str, headers: list[tuple[str, str]]) -> None:
    receipt = f"r-{command}-{len(client.history)}-{id(headers)}"
    future = client._expect_receipt(receipt)
    await client.send_frame(Frame(command, (*headers, ("receipt", receipt))))
    await client._await_receipt(receipt, future, 10)


def bodies(frames: list[Frame]) -> list[str]:
    return [f.body.decode() for f in frames]


async def send_all(client: StompClient, queue: str, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await client.send(f"/queue/{queue}", f"m{i}", receipt=(i == start + count - 1))


async def stats(server: RelayServer, name: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/api/queues/{name}", timeout=10
        ) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data

    return await asyncio.to_thread(get)


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_each_message_to_one_consumer(relays: Relays, clients: Any) -> None:
    servers = await relays(2)
    consumers = [await clients(servers[i % len(servers)]) for i in range(3)]
    for c in consumers:
        await c.subscribe("/queue/work", "s", ack="client-individual")
    producer = await clients(servers[0])
    await send_all(producer, "work", 300)
    got: list[str] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(got) < 300:
        assert asyncio.get_running_loop().time() < deadline, f"got {len(got)} of 300"
        for c in consumers:
            for frame in c.pending("s"):
                await c.next_message("s", lambda f, frame=frame: f is frame)
                got.append(frame.body.decode())
                assert frame.get("destination") == "/queue/work"
                assert frame.get("redelivered") is None
                await ack(c, frame)
        await asyncio.sleep(0.02)
    assert sorted(got) == sorted(f"m{i}" for i in range(300))
    assert all(c.received("s") for c in consumers), "every consumer got a share"
    data = await stats(servers[0], "work")
    assert data == {"name": "work", "length": 0, "consumers": 3, "pending": 0, "deadLetters": 0}


async def test_messages_wait_for_a_consumer(relays: Relays, clients: Any) -> None:
    servers = await relays(2)
    producer = await clients(servers[0])
    await send_all(producer, "later", 5)
    assert (await stats(servers[-1], "later"))["length"] == 5
    consumer = await clients(servers[-1])
    await consumer.subscribe("/queue/later", "s")
    assert bodies(await consumer.collect(5, "s")) == [f"m{i}" for i in range(5)]


async def test_client_ack_is_cumulative_and_nack_redelivers(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    producer = await clients(server)
    consumer = await clients(server)
    await consumer.subscribe("/queue/cumulative", "s", ack="client")
    await send_all(producer, "cumulative", 4)
    frames = await consumer.collect(4, "s")
    await ack(consumer, frames[1])  # acknowledges m0 and m1
    await ack(consumer, frames[3], "NACK")  # refuses m2 and m3: redelivered
    again = await consumer.collect(2, "s")
    assert sorted(bodies(again)) == ["m2", "m3"]
    assert all(f.get("redelivered") == "true" for f in again)
    await ack(consumer, again[-1])
    await consumer.expect_no_message("s", within=0.3)
    data = await stats(server, "cumulative")
    assert (data["length"], data["pending"]) == (0, 0)


async def test_nack_goes_to_another_consumer_first(relays: Relays, clients: Any) -> None:
    servers = await relays(2)
    first = await clients(servers[0])
    second = await clients(servers[-1])
    await first.subscribe(
        "/queue/other", "a", ack="client-individual", headers=[("prefetch-count", "1")]
    )
    producer = await clients(servers[0])
    await send_all(producer, "other", 1)
    refused = await first.next_message("a")
    await second.subscribe("/queue/other", "b", ack="client-individual")
    await ack(first, refused, "NACK")
    again = await second.next_message("b", timeout=10)
    assert again.body == b"m0"
    assert again.get("redelivered") == "true"
    assert again.get("message-id") == refused.get("message-id")
    await ack(second, again)
    await first.expect_no_message("a", within=0.3)


async def test_single_consumer_gets_its_nack_back(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    consumer = await clients(server)
    await consumer.subscribe("/queue/alone", "s", ack="client-individual")
    producer = await clients(server)
    await send_all(producer, "alone", 1)
    first = await consumer.next_message("s")
    await ack(consumer, first, "NACK")
    again = await consumer.next_message("s", timeout=10)
    assert again.get("redelivered") == "true"
    assert again.body == b"m0"


async def test_closed_session_redelivers_unacknowledged(relays: Relays, clients: Any) -> None:
    servers = await relays(2)
    leaving = await clients(servers[0])
    await leaving.subscribe("/queue/handover", "s", ack="client")
    producer = await clients(servers[0])
    await send_all(producer, "handover", 10)
    held = await leaving.collect(10, "s")
    await ack(leaving, held[3])  # m0..m3 done
    staying = await clients(servers[-1])
    await staying.subscribe("/queue/handover", "s", ack="client-individual")
    await leaving.close()
    again = await staying.collect(6, "s", timeout=20)
    assert sorted(bodies(again)) == [f"m{i}" for i in range(4, 10)]
    assert all(f.get("redelivered") == "true" for f in again)
    for frame in again:
        await ack(staying, frame)
    await until(lambda: _settled(servers[0], "handover"), "the queue to be empty and settled")


async def _settled(server: RelayServer, name: str) -> bool:
    data = await stats(server, name)
    return data["length"] == 0 and data["pending"] == 0


async def test_unsubscribe_redelivers(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    consumer = await clients(server)
    await consumer.subscribe("/queue/unsub", "a", ack="client-individual")
    producer = await clients(server)
    await send_all(producer, "unsub", 2)
    await consumer.collect(2, "a")
    await consumer.unsubscribe("a")
    await consumer.subscribe("/queue/unsub", "b", ack="auto")
    again = await consumer.collect(2, "b")
    assert sorted(bodies(again)) == ["m0", "m1"]
    assert all(f.get("redelivered") == "true" for f in again)


async def test_auto_ack_is_at_most_once(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    consumer = await clients(server)
    await consumer.subscribe("/queue/auto", "s")
    producer = await clients(server)
    await send_all(producer, "auto", 20)
    await consumer.collect(20, "s")
    await consumer.close()
    other = await clients(server)
    await other.subscribe("/queue/auto", "s")
    await other.expect_no_message("s", within=0.5)
    await until(lambda: _settled(server, "auto"), "auto acknowledgements")


async def test_prefetch_bounds_unacknowledged(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    consumer = await clients(server)
    await consumer.subscribe(
        "/queue/prefetch", "s", ack="client-individual", headers=[("prefetch-count", "3")]
    )
    producer = await clients(server)
    await send_all(producer, "prefetch", 10)
    held = await consumer.collect(3, "s")
    await consumer.expect_no_message("s", within=0.5)
    assert (await stats(server, "prefetch"))["pending"] == 3
    await ack(consumer, held[0])
    more = await consumer.next_message("s")
    await consumer.expect_no_message("s", within=0.3)
    assert more.body == b"m3"


async def test_prefetch_default_and_cap(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1, queue_prefetch=4, max_pending_acks=6)
    default = await clients(server)
    await default.subscribe("/queue/caps", "d", ack="client")
    capped = await clients(server)
    await capped.subscribe("/queue/caps", "c", ack="client", headers=[("prefetch-count", "1000")])
    producer = await clients(server)
    await send_all(producer, "caps", 30)
    await until(lambda: _count(default, capped, 10), "4 + 6 messages to be handed out")
    await asyncio.sleep(0.3)
    assert (len(default.pending("d")), len(capped.pending("c"))) == (4, 6)


async def _count(a: StompClient, b: StompClient, total: int) -> bool:
    return len(a.pending()) + len(b.pending()) >= total


async def test_bad_prefetch_is_an_error(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    consumer = await clients(server)
    with pytest.raises(StompClientError):
        await consumer.subscribe(
            "/queue/bad", "s", ack="client", headers=[("prefetch-count", "many")]
        )
    assert consumer.errors[0].get("message") == "Invalid prefetch-count"


async def test_dead_letter_queue_after_max_deliveries(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1, queue_max_deliveries=3)
    consumer = await clients(server)
    await consumer.subscribe("/queue/poison", "s", ack="client-individual")
    producer = await clients(server)
    await send_all(producer, "poison", 1)
    for delivery in range(3):
        frame = await consumer.next_message("s", timeout=10)
        assert frame.get("redelivered") == (None if delivery == 0 else "true")
        await ack(consumer, frame, "NACK")
    await consumer.expect_no_message("s", within=0.5)
    data = await stats(server, "poison")
    assert (data["length"], data["pending"], data["deadLetters"]) == (0, 0, 1)
    await consumer.subscribe("/queue/poison.dlq", "dlq")
    dead = await consumer.next_message("dlq")
    assert dead.body == b"m0"
    assert dead.get("destination") == "/queue/poison.dlq"


async def test_max_length_refuses_with_an_error(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1, queue_max_length=3)
    producer = await clients(server)
    await send_all(producer, "bounded", 3)
    with pytest.raises(StompClientError):
        await producer.send("/queue/bounded", "m3", receipt=True)
    error = producer.errors[0]
    assert error.get("message") == "Queue full"
    assert error.get("receipt-id") is not None
    consumer = await clients(server)
    await consumer.subscribe("/queue/bounded", "s")
    assert bodies(await consumer.collect(3, "s")) == ["m0", "m1", "m2"]
    await consumer.expect_no_message("s", within=0.3)


async def test_ack_and_nack_in_transactions(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    consumer = await clients(server)
    await consumer.subscribe("/queue/tx", "s", ack="client-individual")
    producer = await clients(server)
    await send_all(producer, "tx", 3)
    m0, m1, m2 = await consumer.collect(3, "s")
    await receipted(consumer, "BEGIN", [("transaction", "t1")])
    await ack(consumer, m0, transaction="t1")
    await ack(consumer, m1, "NACK", transaction="t1")
    assert (await stats(server, "tx"))["pending"] == 3  # nothing happened yet
    await receipted(consumer, "ABORT", [("transaction", "t1")])
    await consumer.expect_no_message("s", within=0.3)
    assert (await stats(server, "tx"))["pending"] == 3
    await receipted(consumer, "BEGIN", [("transaction", "t2")])
    await ack(consumer, m0, transaction="t2")
    await ack(consumer, m1, "NACK", transaction="t2")
    await ack(consumer, m2, transaction="t2")
    await receipted(consumer, "COMMIT", [("transaction", "t2")])
    again = await consumer.next_message("s")
    assert again.body == b"m1"
    assert again.get("redelivered") == "true"
    await ack(consumer, again)
    await until(lambda: _settled(server, "tx"), "the transaction's acknowledgements")


@pytest.mark.parametrize("version", [V10, V11])
async def test_older_versions_ack_by_message_id(relays: Relays, clients: Any, version: str) -> None:
    (server,) = await relays(1)
    consumer = await clients(server, version=version)
    await consumer.subscribe(f"/queue/v{version}", "s", ack="client")
    producer = await clients(server)
    await send_all(producer, f"v{version}", 2)
    m0, m1 = await consumer.collect(2, "s")
    assert m0.get("ack") is None
    if version == V11:
        await ack(consumer, m1, "NACK")
        again = await consumer.collect(2, "s")
        assert sorted(bodies(again)) == ["m0", "m1"]
        m1 = again[-1]
    await ack(consumer, m1)
    await until(lambda: _settled(server, f"v{version}"), "1.x acknowledgements")


async def test_bad_queue_names(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    client = await clients(server)
    with pytest.raises(StompClientError):
        await client.send("/queue/no:colons", "x", receipt=True)
    assert client.errors[0].get("message") == "Invalid queue name"


async def test_unknown_queue_is_a_404(relays: Relays) -> None:
    (server,) = await relays(1)
    with pytest.raises(urllib.error.HTTPError) as caught:
        await stats(server, "never-used")
    assert caught.value.code == 404


async def test_metrics_count_queue_messages(relays: Relays, clients: Any) -> None:
    (server,) = await relays(1)
    consumer = await clients(server)
    await consumer.subscribe("/queue/metered", "s", ack="client-individual")
    producer = await clients(server)
    await send_all(producer, "metered", 2)
    m0, m1 = await consumer.collect(2, "s")
    await ack(consumer, m0)
    await ack(consumer, m1, "NACK")
    await consumer.next_message("s")

    def text() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as answer:
            return str(answer.read().decode())

    metrics = await asyncio.to_thread(text)
    for line in (
        'stomprelay_queue_messages_total{event="sent"} 2.0',
        'stomprelay_queue_messages_total{event="acked"} 1.0',
        'stomprelay_queue_messages_total{event="requeued"} 1.0',
        'stomprelay_queue_messages_total{event="delivered"} 3.0',
        "stomprelay_queue_consumers 1.0",
    ):
        assert line in metrics


async def test_a_session_sending_to_topics_and_queues_gets_its_receipts(
    relays: Relays, clients: Any
) -> None:
    (server,) = await relays(1)
    watcher = await clients(server)
    await watcher.subscribe("/topic/mixed", "t")
    await watcher.subscribe("/queue/mixed", "q")
    sender = await clients(server)
    for i in range(20):
        destination = "/topic/mixed" if i % 2 else "/queue/mixed"
        await sender.send(destination, f"m{i}", receipt=(i == 19))
    topic = await watcher.collect(10, "t")
    queue = await watcher.collect(10, "q")
    assert bodies(topic) == [f"m{i}" for i in range(1, 20, 2)]
    assert bodies(queue) == [f"m{i}" for i in range(0, 20, 2)]


async def test_unsubscribe_mid_stream_loses_nothing(relays: Relays, clients: Any) -> None:
    servers = await relays(2)
    leaving = await clients(servers[0])
    staying = await clients(servers[-1])
    await leaving.subscribe("/queue/stream", "a")
    await staying.subscribe("/queue/stream", "b")
    producer = await clients(servers[0])
    sending = asyncio.create_task(send_all(producer, "stream", 600))
    await leaving.next_message("a", timeout=10)
    await leaving.unsubscribe("a")
    await sending
    left = len(leaving.received("a"))

    async def all_in() -> bool:
        return left + len(staying.received("b")) >= 600

    await until(all_in, "every message delivered once")
    got = bodies(leaving.received("a")) + bodies(staying.received("b"))
    assert sorted(got) == sorted(f"m{i}" for i in range(600))
    await until(lambda: _settled(servers[0], "stream"), "the queue to be empty")


async def test_a_restarted_relay_gives_back_what_its_previous_process_held(
    relays: Relays, clients: Any, request: pytest.FixtureRequest
) -> None:
    """A process under the same server id read entries and was killed; the new one,
    alive under that id, has no subscriber of the queue: its orphan look gives them
    back to the other relay's subscriber."""
    if request.node.callspec.params["relays"] == "memory":
        pytest.skip("one process holds every consumer of an in-memory queue")
    servers = await relays(2)
    producer = await clients(servers[0])
    await send_all(producer, "stranded", 3)
    store = servers[0].relay.queues.store
    held = await store.read("stranded", "q0/previous", 3, 0)
    assert len(held) == 3
    consumer = await clients(servers[1])
    await consumer.subscribe("/queue/stranded", "s", ack="client-individual")
    # q0 and q1 are both alive: only the restart rule gives these entries back
    assert await servers[0].relay.queues.sweep_orphans({"q0", "q1"}, 0) == 3
    again = await consumer.collect(3, "s", timeout=10)
    assert sorted(bodies(again)) == ["m0", "m1", "m2"]
    assert all(f.get("redelivered") == "true" for f in again)


async def test_a_nacked_entry_does_not_stall_the_queue(relays: Relays, clients: Any) -> None:
    """The entry a NACK put back must avoid its consumer, whose neighbours (here and on
    the other relay) are full: it goes back to that consumer after all, and the
    messages behind it flow."""
    servers = await relays(2)
    producer = await clients(servers[0])
    full: list[StompClient] = []
    for i, server in enumerate((servers[0], servers[-1])):
        client = await clients(server)
        await client.subscribe(
            "/queue/stall", "s", ack="client-individual", headers=[("prefetch-count", "1")]
        )
        await send_all(producer, "stall", 1, start=i)
        await client.next_message("s", timeout=10)
        full.append(client)
    refuser = await clients(servers[0])
    await refuser.subscribe(
        "/queue/stall", "s", ack="client-individual", headers=[("prefetch-count", "5")]
    )
    await send_all(producer, "stall", 1, start=2)
    await ack(refuser, await refuser.next_message("s", timeout=10), "NACK")
    await send_all(producer, "stall", 2, start=3)
    got = await refuser.collect(3, "s", timeout=20)
    assert sorted(bodies(got)) == ["m2", "m3", "m4"]
    for client in full:
        assert len(client.received("s")) == 1


async def test_a_prefetch_of_large_messages_is_no_slow_consumer(
    relays: Relays, clients: Any
) -> None:
    """A client-ack consumer with room for 200 messages of 40 KiB (8 MB) against a
    256 KiB send queue, its socket read nothing for a while (a small receive buffer,
    so that the kernel does not take it all): the relay hands it no more while its
    socket is full, and it is not dropped as a slow consumer."""
    (server,) = await relays(1, send_queue_bytes=256 * 1024, byte_rate=0)
    consumer = await clients(server)
    await consumer.subscribe(
        "/queue/large", "s", ack="client-individual", headers=[("prefetch-count", "200")]
    )
    sock = consumer.ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    consumer.ws.transport.pause_reading()
    producer = await clients(server)
    body = "x" * (40 * 1024)
    for i in range(250):
        await producer.send("/queue/large", f"{i}:{body}", receipt=(i % 10 == 9))

    async def handed() -> bool:
        data = await stats(server, "large")
        return bool(data["pending"]) and data["length"] + data["pending"] == 250

    await until(handed, "messages handed to the paused consumer")
    consumer.ws.transport.resume_reading()
    for _ in range(250):
        frame = await consumer.next_message("s", timeout=20)
        await consumer.send_frame(Frame("ACK", (("id", frame.get("ack") or ""),)))
    assert not consumer.errors
    assert not consumer.closed
    await until(lambda: _settled(server, "large"), "every large message acknowledged")


async def test_the_receipt_of_an_ack_follows_its_acknowledgement(
    relays: Relays, clients: Any, request: pytest.FixtureRequest
) -> None:
    """Redis takes no writes for a while: the RECEIPT of an ACK waits for the XACK."""
    if request.node.callspec.params["relays"] == "memory":
        pytest.skip("an in-memory acknowledgement takes no round trip")
    (server,) = await relays(1)
    consumer = await clients(server)
    await consumer.subscribe("/queue/receipted", "s", ack="client-individual")
    producer = await clients(server)
    await send_all(producer, "receipted", 1)
    frame = await consumer.next_message("s")
    raw = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        await raw.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        await ack(consumer, frame)
        pending = await raw.xpending(server.relay.keys.queue("receipted"), "g")
        assert pending["pending"] == 0
    finally:
        await raw.execute_command("CLIENT", "UNPAUSE")
        await raw.aclose()


async def test_a_nack_goes_to_a_full_neighbour_on_the_same_relay_first(
    relays: Relays, clients: Any
) -> None:
    """Two subscriptions of one session on one relay: the one holding its only
    allowed message ACKs it just after the other NACKs: the refused message goes
    back into the queue noting whom to avoid, and the neighbour gets it."""
    (server,) = await relays(1)
    client = await clients(server)
    producer = await clients(server)
    await client.subscribe(
        "/queue/neighbour", "full", ack="client-individual", headers=[("prefetch-count", "1")]
    )
    await send_all(producer, "neighbour", 1)
    held = await client.next_message("full")
    await client.subscribe("/queue/neighbour", "refuser", ack="client-individual")
    await send_all(producer, "neighbour", 1, start=1)
    refused = await client.next_message("refuser")
    await client.send_frame(Frame("NACK", (("id", refused.get("ack") or ""),)))
    await client.send_frame(Frame("ACK", (("id", held.get("ack") or ""),)))
    again = await client.next_message("full", timeout=10)
    assert again.body == b"m1"
    assert again.get("redelivered") == "true"
    assert not [f for f in client.received("refuser") if f.get("redelivered")]
