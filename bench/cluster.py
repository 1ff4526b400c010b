"""Cluster benchmark: two relays over one Redis beside the same two relays over a
3-master Redis Cluster (``--redis-mode cluster``, sharded pub/sub), in one run.

Tables, each with a row per Redis setup, both setups up for the whole run and
their rows taken in turn, so that a drift of the machine touches both alike:

1. the fan-out of bench/connections.py's table (b): 1000 subscribers of one room,
   half on each relay, the publisher on relay 1, with the history default and,
   as in (b), with ``--history-size 0`` (two more setups, for this table only);
   with RabbitMQ Web-STOMP (one broker holding every client) as the peer when it
   answers on ``ws://127.0.0.1:15674/ws`` (guest/guest);
2. table (c)'s load: ten rooms of 100 subscribers, one publisher per room, all at
   once; and how the rooms spread over the masters (CLUSTER KEYSLOT of each
   room's ``stomp:rooms:{<room>}:info`` against CLUSTER SLOTS);
3. how the cost grows with the number of rooms: 1, 10, 50 and 100 rooms with the
   same 1000 subscribers in all and the same total SENDs (burst) and SEND rate
   (paced), spread evenly over the rooms: deliveries/s, p99 latency, the relays'
   CPU seconds per 1000 deliveries, each Redis node's CPU (INFO cpu,
   used_cpu_sys + used_cpu_user, before and after), and the pub/sub connections
   each relay holds on each node (CLIENT LIST TYPE pubsub, matched to the relay
   by the connection's local port in /proc).

The load generator, its measurements and the table layout of 1 and 2 are
bench/connections.py's (imported): a burst for deliveries/s, then stamped SENDs
at a fixed rate for latency. Every relay runs with the per-client limits lifted
(``--max-connections-per-ip 0 --handshake-rate 0 --frame-rate 0 --byte-rate 0``).
The cluster's nodes are redis-server processes started here (no replicas), each
process in its own process group, killed as a group at the end, on an exception
or on Ctrl-C. Counts scale with ``BENCH_SCALE`` like connections.py; the run
gives up after ``BENCH_CLUSTER_BUDGET`` seconds (330). Exits 1 when a stomprelay
row has no figures. Loopback only. Run: ``make bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
from connections import (  # bench/ is on the path when run as a script
    B_BURST,
    B_RATE,
    B_SUBS,
    C_BURST,
    C_RATE,
    C_ROOMS,
    C_SUBS,
    HISTORY,
    PACED_SECONDS,
    RABBIT_URL,
    SCALE,
    Rabbit,
    Row,
    Scenario,
    find_rabbit,
    ratio,
    report_fanout,
    started,
)
from fanout import NO_CLIENT_LIMITS, free_port, reachable
from history import (
    Cluster,
    Procs,
    cpu_seconds,
    http_ok,
    own_cpu,
    raise_fd_limit,
    redis_server_binary,
    wait_until,
)

from stomprelay.cluster.keys import Keys

BUDGET = float(os.environ.get("BENCH_CLUSTER_BUDGET", "330"))
MASTERS = 3
ROOM_COUNTS = (1, 10, 50, 100)
#: Table 3 keeps table 1's totals, so its one-room rows are table 1's.
G_SUBS, G_BURST, G_RATE = B_SUBS, B_BURST, B_RATE
#: At some 20,000 deliveries/s, table 1's full burst keeps RabbitMQ's subscribers
#: silent for longer than the minute Web-STOMP allows them.
RABBIT_BURST = max(1, B_BURST // 4)
SETTLE = 15.0  # longest wait for the relays to go quiet after a row's clients left
QUIET = 0.05  # relay CPU seconds over a 0.5 s window that count as quiet
KEYS = Keys()
#: The relay options that lift the per-client limits, from the environment fanout.py sets.
LIMIT_ARGS = [
    part
    for name, value in NO_CLIENT_LIMITS.items()
    for part in (f"--{name.lower().replace('_', '-')}", value)
]


# -- the servers ----------------------------------------------------------------


class GroupProcs(Procs):
    """``Procs`` whose children each lead their own process group, stopped as a group."""

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **NO_CLIENT_LIMITS}
        for inherited in ("REDIS_URL", "REDIS_MODE", "REDIS_HOST", "KEY_PREFIX"):
            env.pop(inherited, None)
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                args,
                cwd=Path(__file__).resolve().parent.parent,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], graceful: bool = True) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the leader's pid is the group's id
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if proc in self.running:
            self.running.remove(proc)


def redis_cli_binary(redis_binary: str) -> str | None:
    beside = Path(redis_binary).with_name("redis-cli")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("redis-cli")


def redis_version(redis_binary: str) -> tuple[int, ...]:
    out = subprocess.run(
        [redis_binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(n) for n in found.groups()) if found else ()


def command(client: redis.Redis, *args: str) -> Any:
    """``client.execute_command(*args)``, typed (redis-py leaves it untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def local_ports(pid: int) -> set[int]:
    """Local TCP ports of ``pid``'s sockets: its fds' socket inodes in /proc/net/tcp."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[9] in inodes:
            ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


class Deployment(Cluster):
    """Two relays over one redis-server (``masters == 0``) or over a Redis Cluster of
    ``masters`` redis-server nodes. Its servers' CPU: the relays' from /proc, each Redis
    node's from INFO cpu; whenever it is read (at each phase's start and end, the
    subscribers all subscribed) the relays' pub/sub connections are counted too."""

    def __init__(
        self, procs: Procs, name: str, masters: int = 0, history_size: int = HISTORY
    ) -> None:
        super().__init__(procs, name, history_size)
        self.masters = masters
        self.nodes: dict[str, int] = {}  # "redis" or "redis 1".. -> port
        self.clients: dict[str, redis.Redis] = {}
        self.pubsub: dict[tuple[str, str], int] = {}  # (relay, node) -> most seen

    def start(self, redis_binary: str) -> Deployment:
        taken: set[int] = set()

        def port() -> int:
            while (found := free_port()) in taken:
                pass
            taken.add(found)
            return found

        tag = f"{'cluster' if self.masters else 'single'}-h{self.history_size}"
        args = [redis_binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if not self.masters:
            self.nodes["redis"] = port()
        for n in range(1, self.masters + 1):
            self.nodes[f"redis {n}"] = port()
        for label, node_port in self.nodes.items():
            extra = ["--port", str(node_port), "--dir", str(self.procs.workdir)]
            if self.masters:
                extra += ["--cluster-enabled", "yes", "--cluster-port", str(port())]
                extra += ["--cluster-config-file", f"nodes-{node_port}.conf"]
                extra += ["--cluster-node-timeout", "5000"]
            self.started.append(self.procs.start(f"{tag}-{label.replace(' ', '')}", args + extra))
        for label, node_port in self.nodes.items():
            wait_until(partial(reachable, node_port), 10, f"redis-server on {node_port}")
            self.clients[label] = redis.Redis(
                port=node_port, socket_timeout=5, decode_responses=True
            )
        if self.masters:
            self.create_cluster(redis_binary)
            url = ",".join(f"redis://127.0.0.1:{p}" for p in self.nodes.values())
            mode = ["--redis-mode", "cluster", "--redis-url", url]
        else:
            mode = ["--redis-url", f"redis://127.0.0.1:{self.nodes['redis']}/0"]
        if self.history_size != HISTORY:
            mode += ["--history-size", str(self.history_size)]
        for n in (1, 2):
            server_id = f"bench-{tag}-{n}"
            relay_port = free_port()
            relay = self.procs.start(
                server_id,
                [
                    *(sys.executable, "-m", "stomprelay", "serve", "--host", "127.0.0.1"),
                    *("--port", str(relay_port), "--server-id", server_id, *mode),
                    *("--log-level", "warning", *LIMIT_ARGS),
                ],
            )
            self.started.append(relay)
            self.relays[server_id] = (relay_port, relay)
            self.pids[f"relay {n}"] = relay.pid

            def up(sid: str = server_id, p: int = relay_port, r: Any = relay) -> bool:
                if r.poll() is not None:
                    raise RuntimeError(f"relay {sid} exited:\n{self.log(sid)[-2000:]}")
                return http_ok(p, "/health", sid) and http_ok(p, "/ready")

            wait_until(up, 30, f"relay {server_id} /ready")
        return self

    def create_cluster(self, redis_binary: str) -> None:
        """``redis-cli --cluster create`` (slots split evenly), then CLUSTER INFO
        cluster_state:ok on every node."""
        cli = redis_cli_binary(redis_binary)
        if cli is None:
            raise RuntimeError(f"no redis-cli beside {redis_binary} or on PATH")
        addrs = [f"127.0.0.1:{p}" for p in self.nodes.values()]
        done = subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")

        def ok() -> bool:
            with contextlib.suppress(redis.RedisError):
                return all(
                    "cluster_state:ok" in str(command(c, "CLUSTER", "INFO"))
                    for c in self.clients.values()
                )
            return False

        wait_until(ok, 30, "cluster_state:ok on every node")

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        super().stop()

    def cpu(self) -> dict[str, float]:
        seconds = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        for label in self.nodes:
            with contextlib.suppress(redis.RedisError):
                info = self.clients[label].info("cpu")
                seconds[label] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        self.count_pubsub()
        return seconds

    def count_pubsub(self) -> None:
        """CLIENT LIST TYPE pubsub on every node, each connection given to the relay
        whose socket has its port; the most seen since :meth:`reset` is kept."""
        owners = {p: name for name, pid in self.pids.items() for p in local_ports(pid)}
        for label in self.nodes:
            counts: dict[str, int] = {}
            with contextlib.suppress(redis.RedisError):
                for entry in self.clients[label].client_list(_type="pubsub"):
                    owner = owners.get(int(entry["addr"].rsplit(":", 1)[1]), "other")
                    counts[owner] = counts.get(owner, 0) + 1
            for owner, count in counts.items():
                key = (owner, label)
                self.pubsub[key] = max(self.pubsub.get(key, 0), count)

    def reset(self) -> None:
        self.pubsub.clear()

    def settle(self) -> None:
        """Until the relays are quiet (a row's clients gone), ``SETTLE`` s at most."""
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            before = sum(cpu_seconds(pid) for pid in self.pids.values())
            time.sleep(0.5)
            if sum(cpu_seconds(pid) for pid in self.pids.values()) - before < QUIET:
                return

    def owners(self, keys: list[str]) -> dict[str, list[str]]:
        """Node label -> the keys whose slot (CLUSTER KEYSLOT) it serves (CLUSTER SLOTS)."""
        labels = {port: label for label, port in self.nodes.items()}
        first = next(iter(self.clients.values()))
        ranges = [
            (int(low), int(high), labels.get(int(node[1]), f"port {node[1]}"))
            for low, high, node, *_ in command(first, "CLUSTER", "SLOTS")
        ]
        found: dict[str, list[str]] = {label: [] for label in self.nodes}
        for key in keys:
            slot = int(command(first, "CLUSTER", "KEYSLOT", key))
            owner = next(label for low, high, label in ranges if low <= slot <= high)
            found.setdefault(owner, []).append(key)
        return found


# -- the run --------------------------------------------------------------------


def rooms_of(scenario: Scenario) -> list[str]:
    return [d.removeprefix("/topic/room/") for d in scenario.destinations(True)]


class Runner:
    """Both setups; each scenario's rows in turn, with each row's wall time."""

    def __init__(self, setups: list[tuple[Deployment, str]], deadline: float) -> None:
        self.setups, self.deadline = setups, deadline
        self.walls: dict[tuple[str, str], float] = {}  # (scenario, row) -> s
        self.pubsub: dict[tuple[str, str], dict[tuple[str, str], int]] = {}

    def rows(self, scenario: Scenario, more: list[tuple[Deployment, str]] | None = None) -> None:
        for setup, problem in [*self.setups, *(more or [])]:
            setup.reset()
            began = time.perf_counter()
            scenario.run(setup, setup.name, self.deadline, problem)
            self.walls[scenario.key, setup.name] = time.perf_counter() - began
            self.pubsub[scenario.key, setup.name] = dict(setup.pubsub)
            if not problem:
                setup.settle()

    def peer(self, scenario: Scenario, rabbit: Rabbit) -> None:
        """The peer's row, with a burst of ``RABBIT_BURST`` SENDs: Web-STOMP closes a
        connection that sent nothing for a minute (``web_stomp.ws_opts.idle_timeout``),
        and these subscribers send nothing after their SUBSCRIBE."""
        began = time.perf_counter()
        peer = dataclasses.replace(scenario, burst=RABBIT_BURST, rows=[])
        peer.peers(None, rabbit, self.deadline)
        for row in peer.rows:
            row.name = f"{row.name}, burst {RABBIT_BURST:,}"
            self.walls[scenario.key, row.name] = time.perf_counter() - began
        scenario.rows += peer.rows

    def print_walls(self, scenario: Scenario) -> None:
        walls = [
            f"{name} {secs:.0f}s" for (key, name), secs in self.walls.items() if key == scenario.key
        ]
        print(
            "   each row's wall time (connect every client, warm-up, burst, paced, close): "
            + ", ".join(walls)
        )


def spread(cluster: Deployment, rooms: list[str]) -> str:
    """How many of ``rooms`` each master holds."""
    if not cluster.started:
        return "no cluster"
    try:
        owners = cluster.owners([KEYS.room_info(room) for room in rooms])
    except (redis.RedisError, StopIteration) as exc:
        return f"unknown ({exc})"
    return ", ".join(f"{label} {len(keys)}" for label, keys in owners.items())


def per_node(setup: Deployment, seconds: dict[str, float]) -> str:
    return "/".join(f"{seconds.get(label, 0.0):.2f}" for label in setup.nodes)


def burst_cost(row: Row, kind: str) -> float:
    """CPU seconds per delivery over the burst of the servers named ``kind...``."""
    if row.burst is None or not row.burst_count:
        return 0.0
    spent = sum(secs for name, secs in row.burst.servers.items() if name.startswith(kind))
    return spent / row.burst_count


def relay_cost(row: Row) -> float:
    return burst_cost(row, "relay")


def redis_cost(row: Row) -> float:
    return burst_cost(row, "redis")


def report_growth(runner: Runner, scenarios: list[Scenario], cluster: Deployment) -> None:
    print()
    print(
        f"(3) cost against the number of rooms: {G_SUBS:,} subscribers in all (half on each "
        f"relay), {G_BURST:,} SENDs in all per burst and {G_RATE:g} SENDs/s in all paced, "
        "spread evenly over the rooms' publishers (all on relay 1)"
    )
    print(
        "   deliv/s over the burst; p99 over the paced SENDs; relay CPU = both relays' CPU "
        "seconds per 1000 deliveries, burst; Redis CPU = seconds per node over the burst "
        "(INFO cpu), one Redis or nodes 1/2/3, and all of it per 1000 deliveries; pub/sub = "
        "CLIENT LIST TYPE pubsub connections of relay 1 | relay 2, per node (on the cluster: "
        "a sharded link per master holding its rooms' channels, and one classic link)"
    )
    print(
        f"   {'rooms':>5} {'subs/room':>9} {'target':<28} {'deliv/s':>9} {'p99 ms':>8} "
        f"{'relay s/1k':>10} {'Redis CPU s':>15} {'Redis s/1k':>10} {'pub/sub':>13} {'row s':>5}"
    )
    single: dict[int, Row] = {}
    setups = {setup.name: setup for setup, _ in runner.setups}
    for scenario in scenarios:
        for row in scenario.rows:
            setup = setups.get(row.name)
            if setup is None:
                continue  # the peer's row of table (1)
            lead = f"   {scenario.rooms:>5} {scenario.per_room:>9} {row.name:<28}"
            if row.burst is None or not row.delivered:
                print(f"{lead} ! {row.problem or 'no figures'}")
                continue
            p99 = f"{row.p(0.99):>8.2f}" if row.samples and not row.problem else f"{'-':>8}"
            held = runner.pubsub.get((scenario.key, row.name), {})
            conns = " | ".join(
                "/".join(str(held.get((relay, label), 0)) for label in setup.nodes)
                for relay in ("relay 1", "relay 2")
            )
            wall = runner.walls.get((scenario.key, row.name), 0.0)
            print(
                f"{lead} {row.delivered:>9,.0f} {p99} {relay_cost(row) * 1000:>10.3f} "
                f"{per_node(setup, row.burst.servers):>15} {redis_cost(row) * 1000:>10.3f} "
                f"{conns:>13} {wall:>5.0f}"
            )
            if row.problem:
                print(f"   {'':>15} ! {row.problem}")
            if setup is not cluster:
                single[scenario.rooms] = row
            elif scenario.rooms in single:
                base = single[scenario.rooms]
                p99s = ratio(row.p(0.99), base.p(0.99)) if row.samples and base.samples else "-"
                print(
                    f"   {'':>15} cluster / one Redis: deliveries/s "
                    f"{ratio(row.delivered, base.delivered)}, p99 {p99s}, relay CPU per "
                    f"delivery {ratio(relay_cost(row), relay_cost(base))}, Redis CPU per "
                    f"delivery {ratio(redis_cost(row), redis_cost(base))}"
                )
    print("   the 1-room rows are table (1)'s (the same load)")
    print(
        "   rooms per master: "
        + "; ".join(f"{sc.rooms} rooms: {spread(cluster, rooms_of(sc))}" for sc in scenarios)
    )
    strays = {
        key: held
        for key, seen in runner.pubsub.items()
        for (owner, _), held in seen.items()
        if owner == "other"
    }
    if strays:
        print(f"   ! pub/sub connections no relay holds were seen in {len(strays)} rows")


def prepare(setup: Deployment, redis_binary: str | None) -> str:
    """Start ``setup``; '' once it answers, else why it has no rows."""
    if redis_binary is None:
        return "no redis-server here"
    found = redis_version(redis_binary)
    if setup.masters and found < (7, 0, 0):
        return (
            f"redis-server {'.'.join(map(str, found)) or '?'} has no sharded pub/sub "
            "(Redis 7): install the Debian package redis-server"
        )
    problem = started(setup, redis_binary)
    if problem:
        print(f"{setup.name}: {problem}")
    else:
        ports = ", ".join(f"{label} :{port}" for label, port in setup.nodes.items())
        print(f"{setup.name}: {ports}; relays {', '.join(setup.relays)}")
    return problem


def run_all(procs: Procs, redis_binary: str | None, deadline: float) -> bool:
    """Every row, then the report; whether a stomprelay row has no figures."""
    single = Deployment(procs, "relay x2 + one Redis")
    cluster = Deployment(procs, f"relay x2 + {MASTERS}-master Cluster", MASTERS)
    setups = [(setup, prepare(setup, redis_binary)) for setup in (single, cluster)]
    plain = [
        Deployment(procs, "relay x2 + one Redis, history 0", history_size=0),
        Deployment(procs, f"relay x2 + {MASTERS}-master Cluster, history 0", MASTERS, 0),
    ]
    no_history = [(setup, prepare(setup, redis_binary)) for setup in plain]
    rabbit = find_rabbit(wanted=G_SUBS + 64)
    if rabbit.peer is None:
        print(f"RabbitMQ Web-STOMP: {rabbit.note}; no RabbitMQ row")
    else:
        pid = rabbit.peer.pid or "?"
        print(f"RabbitMQ {rabbit.version} Web-STOMP on {RABBIT_URL} (beam.smp pid {pid})")

    runner = Runner(setups, deadline)
    fanout = Scenario("b", 1, B_SUBS, B_BURST, B_RATE)
    runner.rows(fanout, no_history)
    for setup in plain:
        setup.stop()  # only table (1) has them
    runner.peer(fanout, rabbit)
    rooms = Scenario("c", C_ROOMS, C_SUBS, C_BURST, C_RATE)
    runner.rows(rooms)
    growth = [fanout]
    for count in ROOM_COUNTS[1:]:
        scenario = Scenario(
            f"g{count}-", count, G_SUBS // count, max(1, G_BURST // count), G_RATE / count
        )
        runner.rows(scenario)
        growth.append(scenario)

    title = (
        f"(1) {B_SUBS} subscribers of one room over 2 relays (half on each), the publisher on "
        f"relay 1: one Redis vs a {MASTERS}-master Redis Cluster (connections.py's table (b))"
    )
    report_fanout(fanout, title, 2)
    print(
        f"   history {HISTORY} (the default): each SEND is a Lua append (XADD + PUBLISH, "
        "SPUBLISH on the cluster), pipelined (on the cluster one pipeline per master); "
        "history 0: plain PUBLISH / SPUBLISH, pipelined"
    )
    print(
        f"   RabbitMQ's burst is {RABBIT_BURST:,} SENDs, not {B_BURST:,}: Web-STOMP closes a "
        "connection that sent nothing for 60 s (web_stomp.ws_opts.idle_timeout), which the "
        "whole burst outlasts at its pace; its paced rate is the same"
    )
    runner.print_walls(fanout)
    print(
        f"   the room's master (CLUSTER KEYSLOT of {KEYS.room_info('<room>')}): "
        f"{spread(cluster, rooms_of(fanout))}"
    )
    title = (
        f"(2) {C_ROOMS} rooms x {C_SUBS} subscribers over 2 relays (half of each room on "
        "each relay), one publisher per room on relay 1, all rooms at once: one Redis vs "
        f"the cluster (connections.py's table (c))"
    )
    report_fanout(rooms, title, 2)
    runner.print_walls(rooms)
    print(
        f"   rooms per master (CLUSTER KEYSLOT of {KEYS.room_info('<room>')}): "
        f"{spread(cluster, rooms_of(rooms))}"
    )
    report_growth(runner, growth, cluster)
    rows = [r for s in (fanout, rooms, *growth[1:]) for r in s.rows]
    return any(r.problem and r.name.startswith("relay") for r in rows)


def main() -> int:
    deadline = time.monotonic() + BUDGET
    run_start, cpu_start = time.perf_counter(), own_cpu()
    try:
        import uvloop
    except ImportError:
        loop_note = "asyncio's own loop (uvloop not installed)"
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_note = f"uvloop {version('uvloop')}"
    _, fd_note = raise_fd_limit(4 * G_SUBS + 1024)
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    redis_binary = redis_server_binary()
    found = ".".join(map(str, redis_version(redis_binary))) if redis_binary else "none"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"cluster benchmark: loopback, {os.cpu_count()} CPUs ({model}), load average {load} at "
        f"the start; scale {SCALE:g}; Python {sys.version.split()[0]}, redis-server {found}"
    )
    rooms = "/".join(map(str, ROOM_COUNTS))
    print(
        f"what it measures, 2 relays over one Redis beside 2 relays over a {MASTERS}-master "
        f"Redis Cluster (sharded pub/sub): (1) 1 room x {B_SUBS} subscribers (also with "
        f"history off) and (2) {C_ROOMS} rooms x {C_SUBS} subscribers: deliveries/s over a "
        f"burst and latency of paced SENDs; (3) {G_SUBS} subscribers split into {rooms} rooms "
        "at constant totals: deliveries/s, p99, relay CPU per 1000 deliveries, Redis CPU per "
        "node and the pub/sub connections each relay holds on each node"
    )
    print(
        f"load generator: this one process (connections.py's raw WebSocket clients) on "
        f"{loop_note}; every row: connect, warm-up, a burst, then {PACED_SECONDS:g}s paced; "
        f"relays with history {HISTORY} (the default) unless a row says otherwise, and "
        f"{' '.join(LIMIT_ARGS)}; {fd_note}"
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        procs = GroupProcs(Path(tmp))
        try:
            failed = run_all(procs, redis_binary, deadline)
        finally:
            procs.stop_all()
            signal.signal(signal.SIGTERM, previous)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print()
    print(
        f"load generator over the whole run: {own_cpu() - cpu_start:.1f}s CPU over "
        f"{time.perf_counter() - run_start:.1f}s wall; load average {load} at the end"
    )
    return 1 if failed else 0


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: the processes are stopped


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this run started is stopped", file=sys.stderr)
        sys.exit(130)
