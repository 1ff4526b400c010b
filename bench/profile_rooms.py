"""Where two relays' CPU goes per SEND in many small rooms: a quick profiling load.

Starts a private ``redis-server`` and two relays from a tree (``--tree``, default
this one; an earlier commit's worktree for a before/after), with the per-address
limits lifted; opens ``--rooms`` rooms x ``--members`` subscribers on relay A and
one publisher per room on relay B; paces SENDs of 200-byte bodies round-robin over
the rooms at ``--rate`` per second for ``--seconds``, waits until every subscriber
has every message, and prints each relay's and Redis's CPU seconds per SEND (from
/proc/PID/stat) and the generator's own. With ``--profile`` it also records both
relays with py-spy (raw format) over the window and prints, per relay, the share of
samples in each part of the per-SEND path (total: the frame or anything it calls)
and the frames with the most samples of their own. Not part of ``make bench``
(bench/rooms.py is the benchmark); a tool for a profile. Run:
``python bench/profile_rooms.py --rooms 300 --rate 1500 --profile``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from connections import COUNTING, PAYLOAD, Group, open_clients, run_loop, shut, stomp, ws_frame
from fanout import NO_CLIENT_LIMITS, free_port, reachable
from history import cpu_seconds, http_ok, own_cpu, raise_fd_limit, wait_until
from spy import print_shares, tally

ROOT = Path(__file__).resolve().parent.parent

#: (part, needles in a frame's "function (file:line)"): shares of all samples, each
#: the part's frames and everything they call ("  of which": inside the line above).
LOOP = "event loop itself (uvloop in C: syscalls)"
PARTS = [
    ("append: pipeline, RedisLog.append_many, redis-py", ("_run (stomprelay/publish.py",)),
    ("inbound: WebSocket + STOMP parse, Relay.handle", ("data_received (stomprelay/transport",)),
    ("  of which websockets' parser", ("receive_data (websockets",)),
    ("  of which envelope encode (to_json)", ("to_json (",)),
    (
        "pub/sub read: redis-py get_message, parser",
        ("get_message (", "buffered (", "handle_message ("),
    ),
    ("envelope decode (from_json)", ("from_json (",)),
    ("router: dispatch, _effects, _deliver", ("dispatch (stomprelay/router.py",)),
    ("  of which feed (sync.py Feed)", ("live (stomprelay/sync.py",)),
    ("  of which frame building (deliver, render)", ("deliver (stomprelay/stomp/session",)),
    ("transport writes: Hub._write_all, framing, write", ("_write_all (",)),
]


def start(tree: Path, workdir: Path) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """redis-server and two relays from ``tree``; (processes, relay ports)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **NO_CLIENT_LIMITS}
    env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = str(tree)
    procs: list[subprocess.Popen[bytes]] = []
    redis_port = free_port()
    redis = shutil.which("redis-server") or "redis-server"
    with open(workdir / "redis.log", "ab") as out:
        procs.append(
            subprocess.Popen(
                [
                    *(redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""),
                    *("--appendonly", "no", "--dir", str(workdir)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    wait_until(lambda: reachable(redis_port), 10, "redis-server")
    ports = []
    for n in (1, 2):
        port = free_port()
        with open(workdir / f"relay{n}.log", "ab") as out:
            procs.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "stomprelay", "serve", "--host", "127.0.0.1"),
                        *("--port", str(port), "--server-id", f"prof-{n}"),
                        *("--redis-url", f"redis://127.0.0.1:{redis_port}/0"),
                        *("--log-level", "warning"),
                    ],
                    cwd=tree,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        ports.append(port)
        wait_until(lambda p=port: http_ok(p, "/ready"), 20, f"relay {n} /ready")
    return procs, ports


async def load(
    ports: list[int], pids: list[int], args: argparse.Namespace, spies: list[str]
) -> None:
    a, b = (f"ws://127.0.0.1:{p}/ws" for p in ports)
    rooms, members = args.rooms, args.members
    subscribers = await open_clients([a] * (rooms * members), None)
    publishers = await open_clients([b] * rooms, None)
    try:
        for r in range(rooms):
            for m, client in enumerate(subscribers[r * members : (r + 1) * members]):
                headers = (("id", "s"), ("destination", f"/topic/room/p{r}"), ("ack", "auto"))
                client.write(ws_frame(stomp("SUBSCRIBE", *headers, ("receipt", f"r{m}"))))
        for client in subscribers:
            frame = await client.next_frame()
            if not frame.startswith(b"RECEIPT\n"):
                raise RuntimeError(f"SUBSCRIBE answered {frame[:200]!r}")
        body = b"x" * PAYLOAD
        frames = [
            ws_frame(stomp("SEND", ("destination", f"/topic/room/p{r}"), body=body))
            for r in range(rooms)
        ]

        async def paced(seconds: float) -> int:
            per_room = max(1, round(args.rate * seconds / rooms))
            total = per_room * rooms
            group = Group(subscribers, per_room, COUNTING)
            begin = time.perf_counter()
            sent = 0
            while sent < total:
                due = min(total, int((time.perf_counter() - begin) * args.rate) + 1)
                while sent < due:
                    publishers[sent % rooms].write(frames[sent % rooms])
                    sent += 1
                await asyncio.sleep(0.005)
            problem = await group.wait(60)
            if problem:
                raise RuntimeError(problem)
            return total

        await paced(args.warmup)
        procs = [
            subprocess.Popen(  # noqa: ASYNC220 (started once, before the measured window)
                [
                    *(shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),),
                    *("record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", "250"),
                    *("-f", "raw", "-o", out, "--gil"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, out in zip(pids, spies, strict=False)
        ]
        cpu0 = [cpu_seconds(p) for p in pids]
        gen0, t0 = own_cpu(), time.perf_counter()
        total = await paced(args.seconds)
        elapsed = time.perf_counter() - t0
        cpu1 = [cpu_seconds(p) for p in pids]
        gen = own_cpu() - gen0
        for proc in procs:
            proc.wait(args.seconds + 30)
    finally:
        await shut([*publishers, *subscribers])
    batches = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:  # noqa: ASYNC210
            text = reply.read().decode()
        for name in ("stomprelay_messages_published_total", "stomprelay_publish_batches_total"):
            found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
            batches[(port, name)] = float(found[1]) if found else 0.0
    names = ["relay A (subscribers)", "relay B (publishers)", "redis"]
    used = [c1 - c0 for c0, c1 in zip(cpu0, cpu1, strict=True)]
    print(
        f"{rooms} rooms x {members}: {total:,} SENDs in {elapsed:.1f} s "
        f"({total / elapsed:,.0f}/s, {total * members / elapsed:,.0f} deliveries/s)"
    )
    for name, cpu in zip(names, used, strict=True):
        print(f"   {name:<22} {cpu:6.2f} CPU s  {cpu / total * 1000:.3f} ms/SEND")
    relays = used[0] + used[1]
    print(f"   {'relays together':<22} {relays:6.2f} CPU s  {relays / total * 1000:.3f} ms/SEND")
    published = batches[(ports[1], "stomprelay_messages_published_total")]
    rounds = batches[(ports[1], "stomprelay_publish_batches_total")]
    print(f"   relay B's publish pipeline: {published / max(rounds, 1):.2f} SENDs per batch")
    print(f"   {'generator':<22} {gen:6.2f} CPU s  {gen / total * 1000:.3f} ms/SEND")


def report(label: str, raw: str) -> None:
    samples = tally(raw, PARTS)
    # time in uvloop's C code shows as the Python frame that entered it: the runner's
    samples.parts[LOOP] = sum(
        count for frame, count in samples.own.items() if frame.startswith("run (asyncio/runners.py")
    )
    names = [name for name, _ in PARTS]
    print_shares(f"{label}: {samples.total:,} samples", samples, [*names, LOOP], 15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the tree the relays run from")
    parser.add_argument("--rooms", type=int, default=300)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1500, help="SENDs per second, all rooms")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy both relays")
    parser.add_argument("--keep", type=Path, help="copy the raw profiles (A.raw, B.raw) here")
    args = parser.parse_args()
    raise_fd_limit(args.rooms * (args.members + 1) + 500)
    with tempfile.TemporaryDirectory(prefix="profile-rooms-") as tmp:
        workdir = Path(tmp)
        procs, ports = start(args.tree.resolve(), workdir)
        spies = [str(workdir / "a.txt"), str(workdir / "b.txt")] if args.profile else []
        try:
            run_loop(load(ports, [p.pid for p in procs[1:]] + [procs[0].pid], args, spies))
            for label, out in zip(
                ("relay A (subscribers)", "relay B (publishers)"), spies, strict=False
            ):
                report(label, Path(out).read_text(errors="replace") if Path(out).exists() else "")
                if args.keep and Path(out).exists():
                    shutil.copy(out, args.keep / f"{label.split()[1]}.raw")
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
