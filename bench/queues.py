"""Queue throughput: messages a second through one ``/queue/`` with 3 consumers, beside RabbitMQ.

One producer sends ``QUEUE_MESSAGES`` (5000) messages of ``PAYLOAD`` bytes to one
queue as fast as its socket takes them; three consumers, subscribed before, share
them. The figure is messages delivered (each once: the script checks, and fails on a
loss or a duplicate) over the time from the first SEND to the last delivery. Two
ack modes: ``auto``, and ``client-individual`` with ``prefetch-count:100`` and an ACK
for every message. Servers, in the same run: stomprelay on one node (memory),
three stomprelay relays on one redis-server (one consumer on each, the producer on
the first), and RabbitMQ Web-STOMP's ``/queue/`` on ws://127.0.0.1:15674/ws
(guest/guest) when it answers (``rabbitmq-plugins enable rabbitmq_web_stomp``).
Every client is an asyncio WebSocket client in this process, so the client side
costs the same for every server. Run: ``python bench/queues.py`` (``make bench``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence

from fanout import NO_CLIENT_LIMITS, Client, free_port, reachable, relay_argv, start_relay

from stomprelay.stomp.frames import Frame

MESSAGES = int(os.environ.get("QUEUE_MESSAGES", "5000"))
PAYLOAD = int(os.environ.get("QUEUE_PAYLOAD", "200"))
CONSUMERS = 3
PREFETCH = 100
RABBIT_URL = "ws://127.0.0.1:15674/ws"
#: Seconds one run may take before it counts as failed.
RUN_TIMEOUT = 300.0


async def consume(
    client: Client, ack: str, seen: Counter[str], total: int, done: asyncio.Future[float]
) -> None:
    while not done.done():
        frame = await client.next()
        if frame.command == "ERROR":
            done.set_exception(RuntimeError(f"ERROR {frame.headers} {frame.body!r}"))
            return
        if frame.command != "MESSAGE":
            continue
        seen[frame.body[:12].decode()] += 1
        seen["all"] += 1
        if ack != "auto":
            await client.send(Frame("ACK", (("id", frame.get("ack") or ""),)))
        if seen["all"] >= total and not done.done():
            done.set_result(time.perf_counter())


async def run(urls: Sequence[str], login: str | None, ack: str) -> float:
    """Messages a second through one fresh queue: consumers on ``urls`` (round robin),
    the producer on the first."""
    queue = f"/queue/bench-{uuid.uuid4().hex[:8]}"
    consumers = [await Client.open(urls[i % len(urls)], login) for i in range(CONSUMERS)]
    producer = await Client.open(urls[0], login)
    try:
        for i, client in enumerate(consumers):
            headers = [("id", f"s{i}"), ("destination", queue), ("ack", ack)]
            if ack != "auto":
                headers.append(("prefetch-count", str(PREFETCH)))
            await client.send(Frame("SUBSCRIBE", (*headers, ("receipt", f"r{i}"))))
            reply = await client.next()
            if reply.command != "RECEIPT":
                raise RuntimeError(f"SUBSCRIBE: {reply.command} {reply.headers} {reply.body!r}")
        seen: Counter[str] = Counter()
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        tasks = [asyncio.create_task(consume(c, ack, seen, MESSAGES, done)) for c in consumers]
        filler = "x" * PAYLOAD
        start = time.perf_counter()
        for i in range(MESSAGES):
            body = f"{i:012d}{filler}"[:PAYLOAD].encode()
            headers: tuple[tuple[str, str], ...] = (("destination", queue),)
            if i == MESSAGES - 1:
                headers += (("receipt", "last"),)
            await producer.send(Frame("SEND", headers, body))
        end = await asyncio.wait_for(done, RUN_TIMEOUT)
        await asyncio.sleep(0.5)  # a duplicate would show up now
        for task in tasks:
            task.cancel()
        del seen["all"]
        if len(seen) != MESSAGES or max(seen.values()) != 1:
            lost = MESSAGES - len(seen)
            duplicated = sum(1 for n in seen.values() if n > 1)
            raise RuntimeError(f"{lost} lost, {duplicated} delivered twice")
        return MESSAGES / (end - start)
    finally:
        for client in [*consumers, producer]:
            await client.ws.close()


def row(name: str, urls: Sequence[str], login: str | None) -> None:
    figures = []
    for ack in ("auto", "client-individual"):
        rate = asyncio.run(run(urls, login, ack))
        figures.append(f"{ack} {rate:9,.0f} msg/s")
    print(f"{name:<44} " + "   ".join(figures), flush=True)


def start_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server here")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not reachable(port):
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    return proc


def spawn_relay(port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    """A relay process with ``extra`` flags, without the per-client limits; waits until
    it listens (20 s at most)."""
    env = {**os.environ, **NO_CLIENT_LIMITS}
    proc = subprocess.Popen([*relay_argv(port), *extra], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not reachable(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("stomprelay did not start")
        time.sleep(0.05)
    return proc


def main() -> int:
    print(
        f"queues: {MESSAGES} messages of {PAYLOAD} bytes through one queue, {CONSUMERS} "
        f"consumers (client-individual: prefetch-count {PREFETCH}, an ACK each)"
    )
    port = free_port()
    relay = start_relay(port)
    try:
        row("stomprelay, one node (memory)", [f"ws://127.0.0.1:{port}/ws"], None)
    finally:
        relay.terminate()
        relay.wait(15)
    with tempfile.TemporaryDirectory() as workdir:
        redis_port = free_port()
        redis = start_redis(redis_port, workdir)
        relays: list[subprocess.Popen[bytes]] = []
        try:
            ports = [free_port() for _ in range(3)]
            for i, relay_port in enumerate(ports):
                extra = ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
                relays.append(spawn_relay(relay_port, [*extra, "--server-id", f"bench-{i}"]))
            urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
            row("stomprelay, 3 relays on one Redis", urls, None)
        finally:
            for proc in relays:
                proc.terminate()
                proc.wait(15)
            redis.kill()
            redis.wait(10)
    if reachable(15674):
        row("RabbitMQ Web-STOMP /queue/", [RABBIT_URL], "guest")
    else:
        print("RabbitMQ Web-STOMP does not answer on 15674: no peer row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
