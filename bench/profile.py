"""Where a relay's CPU goes while it fans out: py-spy profiles, this tree and an
earlier one, under the same load, in one run.

Starts a single-node relay from this tree and, with ``--before REF`` (default:
``PROFILE_BEFORE`` or none), one from ``REF`` checked out into a temporary git
worktree; connects ``PROFILE_SUBSCRIBERS`` (200) clients of one room and a
publisher that sends bursts for the whole window; records the relay with
py-spy (``pip install py-spy``) for ``PROFILE_SECONDS`` (10); prints, per tree,
the deliveries per second it managed meanwhile and the share of samples spent
in the parts of the write path (total: the function or anything it calls) and
the functions with the most samples of their own. Run:
``python bench/profile.py --before <commit>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from connections import (
    BURST_BODY,
    COUNTING,
    Group,
    open_clients,
    send_frame,
    shut,
    subscribe,
)
from fanout import free_port, start_relay
from spy import print_shares, tally

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBERS = int(os.environ.get("PROFILE_SUBSCRIBERS", "200"))
SECONDS = float(os.environ.get("PROFILE_SECONDS", "10"))
BURST = 200
ROOM = "/topic/room/profile"

#: (label, what a frame's name contains): the parts reported as a share of all samples.
PARTS = [
    ("per-frame writer task / wait_for", ("_writer", "wait_for")),
    ("websockets send (asyncio layer)", ("send_context", "ServerConnection.send")),
    ("WebSocket framing (sans-I/O send_text/data_to_send)", ("send_text", "send_binary")),
    ("transport.write", ("write (",)),
    ("STOMP render + deliver", ("render", "deliver (")),
    ("router fan-out", ("_deliver",)),
    ("reading + parsing", ("receive_data", "data_received")),
]


async def load(url: str, stop_at: float) -> tuple[int, float]:
    """Bursts to one room until ``stop_at``; (deliveries, seconds)."""
    publisher = (await open_clients([url], None))[0]
    subscribers = await open_clients([url] * SUBSCRIBERS, None)
    try:
        await subscribe(subscribers, ROOM)
        frames = [send_frame(ROOM, BURST_BODY) for _ in range(BURST)]
        delivered = 0
        start = time.perf_counter()
        while time.perf_counter() < stop_at:
            group = Group(subscribers, BURST, COUNTING)
            await publisher.burst(frames)
            if await group.wait(30):
                break
            delivered += BURST * SUBSCRIBERS
        return delivered, time.perf_counter() - start
    finally:
        await shut([publisher, *subscribers])


def profile(tree: Path, label: str, py_spy: str) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    relay = start_relay(port, tree, env)
    try:
        with tempfile.NamedTemporaryFile(suffix=".txt") as out:
            spy = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "-p",
                    str(relay.pid),
                    "-d",
                    str(int(SECONDS)),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    out.name,
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            delivered, seconds = asyncio.run(
                load(f"ws://127.0.0.1:{port}/ws", time.perf_counter() + SECONDS + 1)
            )
            spy.wait(SECONDS + 30)
            report(label, Path(out.name).read_text(), delivered / max(seconds, 1e-9))
    finally:
        relay.terminate()
        relay.wait(15)


def report(label: str, raw: str, rate: float) -> None:
    samples = tally(raw, PARTS, own_key=lambda frame: frame.split(" (")[0])
    header = (
        f"{label}: {rate:,.0f} deliveries/s to {SUBSCRIBERS} subscribers, {samples.total:,} samples"
    )
    print_shares(header, samples, [name for name, _ in PARTS], 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before",
        default=os.environ.get("PROFILE_BEFORE"),
        help="also profile this commit (a git worktree of it)",
    )
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed (pip install py-spy): no profile")
        return 0
    print(
        f"profile: one relay, {SUBSCRIBERS} subscribers of one room, bursts of {BURST}, "
        f"{SECONDS:g} s at 200 samples/s"
    )
    if args.before:
        worktree = Path(tempfile.mkdtemp(prefix="stomprelay-before-"))
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.before],
            check=True,
            capture_output=True,
        )
        try:
            profile(worktree, f"before ({args.before})", py_spy)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )
    profile(ROOT, "this tree", py_spy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
