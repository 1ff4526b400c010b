"""Webhook benchmark: how fast the relays deliver events to a local receiver while
clients chat.

Starts a private ``redis-server``, two relays sharing it with ``--webhook-url`` set
to a receiver in a child process (the standard library's threading HTTP server: it
counts events and distinct ids and keeps each event's delivery lag), and prints:

1. **Live**: clients (half on each relay) connect, join one of 20 rooms, chat, leave
   and disconnect, wave after wave, for ``SECONDS``: chat messages per second, events
   the relays' steps appended, events delivered per second, delivery lag (from the
   event's timestamp to its arrival) p50, p99 and max, repeats seen by id.
2. **Backlog**: the receiver answers 503 while the same load builds a backlog, then
   200: events per second while the backlog drains (pure delivery throughput, 16
   partitions, ``--webhook-batch`` 100).

Counts scale with ``BENCH_SCALE``; every wait is bounded and the run gives up after
``BENCH_WEBHOOKS_BUDGET`` seconds (240). Loopback only. Run: ``make bench``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fanout import free_port  # bench/ is on the path when run as a script
from history import Client, Cluster, Procs, redis_server_binary, wait_until

from stomprelay.stomp.frames import Frame

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
CLIENTS = max(10, int(200 * SCALE))
ROOMS = 20
CHATS = 5
SECONDS = 15.0
BUDGET = float(os.environ.get("BENCH_WEBHOOKS_BUDGET", "240"))


# -- the receiver (a child process) ----------------------------------------------------


def receiver_main(port: int) -> None:
    lock = threading.Lock()
    state: dict[str, Any] = {"status": 200, "ids": set(), "events": 0, "repeats": 0, "lags": []}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state["status"]
            if status == 200:
                now = time.time() * 1000
                with lock:
                    for event in json.loads(body)["events"]:
                        if event["id"] in state["ids"]:
                            state["repeats"] += 1
                            continue
                        state["ids"].add(event["id"])
                        state["events"] += 1
                        state["lags"].append(now - event["timestamp"])
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if self.path.startswith("/status/"):
                state["status"] = int(self.path.rsplit("/", 1)[1])
            with lock:
                lags = sorted(state["lags"])
                answer = {"events": state["events"], "repeats": state["repeats"]}
                if self.path == "/stats/lags":
                    answer["lags"] = lags
                    state["lags"] = []
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def stats(port: int, path: str = "/stats") -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


# -- the load ------------------------------------------------------------------------------


async def session(url: str, i: int) -> int:
    """One client's life: connect, join, chat, leave, disconnect; chats sent."""
    client = await Client.open(url, f"user-{i}")
    room = f"/app/room/room-{i % ROOMS}"
    frames = [Frame("SEND", (("destination", f"{room}/join"),), f'{{"username":"u{i}"}}'.encode())]
    frames += [
        Frame("SEND", (("destination", f"{room}/message"),), b'{"message":"hi"}')
        for _ in range(CHATS)
    ]
    frames.append(Frame("SEND", (("destination", f"{room}/leave"), ("receipt", "done"))))
    for frame in frames:
        await client.send(frame)
    await client.expect_receipt("done")
    await client.close()
    return CHATS


async def load(urls: list[str], seconds: float) -> int:
    """Waves of CLIENTS sessions for ``seconds``; chat messages sent."""
    sent = 0
    until = time.monotonic() + seconds
    wave = 0
    while time.monotonic() < until:
        base = wave * CLIENTS
        done = await asyncio.gather(
            *(session(urls[i % len(urls)], base + i) for i in range(CLIENTS))
        )
        sent += sum(done)
        wave += 1
    return sent


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def delivered_all(relay_ports: list[int], receiver: int) -> tuple[float, float]:
    """(events appended by the relays' steps, events the receiver has)."""
    queued = sum(metric(p, "stomprelay_webhook_events_queued_total") for p in relay_ports)
    return queued, stats(receiver)["events"]


def wait_delivered(relay_ports: list[int], receiver: int, timeout: float) -> float:
    """Wait until the receiver has every event appended; the time that took."""
    started = time.monotonic()

    def done() -> bool:
        queued, got = delivered_all(relay_ports, receiver)
        return got >= queued > 0

    wait_until(done, timeout, "every webhook event delivered")
    return time.monotonic() - started


def run(procs: Procs, redis_binary: str, deadline: float) -> int:
    receiver_port = free_port()
    child = multiprocessing.Process(target=receiver_main, args=(receiver_port,), daemon=True)
    child.start()
    try:
        wait_until(lambda: _up(receiver_port), 10, "the receiver")
        cluster = Cluster(procs, "webhooks", 0)
        redis_port = cluster.start_redis(redis_binary)
        ports = []
        for n in (1, 2):
            port = free_port()
            server_id = f"bench-wh-{n}"
            args = [
                *(sys.executable, "-m", "stomprelay", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), "--server-id", server_id, "--log-level", "warning"),
                *("--redis-url", f"redis://127.0.0.1:{redis_port}/0"),
                *("--webhook-url", f"http://127.0.0.1:{receiver_port}/events"),
                *("--webhook-secret", "bench", "--webhook-retry-base", "0.2"),
                *("--webhook-retry-cap", "1"),
            ]
            cluster.launch(f"relay {n}", server_id, port, args)
            ports.append(port)
        urls = cluster.urls
        print(f"{CLIENTS} clients per wave over 2 relays, {ROOMS} rooms, {CHATS} chats each")

        # 1. live
        started = time.monotonic()
        chats = asyncio.run(load(urls, SECONDS))
        elapsed = time.monotonic() - started
        wait_delivered(ports, receiver_port, max(10.0, deadline - time.monotonic()))
        total = time.monotonic() - started
        lagged = stats(receiver_port, "/stats/lags")
        lags = lagged["lags"]
        print(
            f"live: {chats / elapsed:,.0f} chat messages/s; {lagged['events']:,} events "
            f"delivered in {total:.1f} s ({lagged['events'] / total:,.0f} events/s); "
            f"lag p50 {percentile(lags, 0.5):,.0f} ms, p99 {percentile(lags, 0.99):,.0f} ms, "
            f"max {percentile(lags, 1.0):,.0f} ms; repeats {lagged['repeats']}"
        )

        # 2. backlog
        stats(receiver_port, "/status/503")
        before = stats(receiver_port)["events"]
        asyncio.run(load(urls, SECONDS / 2))
        queued, _ = delivered_all(ports, receiver_port)
        backlog = queued - before
        stats(receiver_port, "/status/200")
        took = wait_delivered(ports, receiver_port, max(10.0, deadline - time.monotonic()))
        print(
            f"backlog: {backlog:,.0f} events drained in {took:.1f} s "
            f"({backlog / took:,.0f} events/s; includes up to one retry delay, at most 1 s)"
        )
        cluster.stop()
        return 0
    finally:
        child.terminate()


def _up(port: int) -> bool:
    try:
        stats(port)
    except OSError:
        return False
    return True


def main() -> int:
    redis_binary = redis_server_binary()
    if redis_binary is None:
        print("no redis-server: skipped")
        return 0
    deadline = time.monotonic() + BUDGET
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as workdir:
        procs = Procs(Path(workdir))
        try:
            return run(procs, redis_binary, deadline)
        finally:
            procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
