"""The fault matrix: durable rooms under restarts, stalls, partitions and data loss.

Each scenario runs three relays (A, B, C) on one Redis, with the fault-matrix liveness
timings (TTL 3 s, refresh 1 s, sweep 1 s; conftest.py). On every relay: subscribers of
one room (``/topic/room/fm-<scenario>``), all joined under a username, each also
subscribed to ``/topic/news``; a publisher sending numbered SENDs with receipts to both
destinations, 20 per second, through the whole fault. A resumer on C leaves before the
fault and comes back with ``x-since-offset``/``x-since-epoch`` once every relay's /ready
says 200 again (while a relay still recovers, ``x-recovered:false`` is its right). From
the end of the fault until then, a new client connects to C every 0.25 s: sessions made
during a relay's recovery must reach the registry too. The fault hits Redis, or relay A
(killed, paused past the TTL, or cut off from Redis by a proxy).

Then :mod:`checker` computes per subscriber: acknowledged SENDs lost, duplicates, out of
order, skipped offsets, gap notices, spurious JOIN/LEAVE events; checks that
``(epoch, offset) -> message-id`` is the same for everybody, that the Redis registry is
exactly the connected clients within TTL + sweep (+ slack), that every participant list
equals the real members, that the resumer got exactly what came after its offset, and
that no relay closed a client except those of the relay killed or paused.
The per-fault figures are printed (``pytest -s``) and appended to
``test-artifacts/faults.jsonl``; the relays' logs are copied to ``test-artifacts/faults/``.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from checker import (
    LIVENESS_TTL,
    SWEEP_INTERVAL,
    TTL_MS,
    Cluster,
    FaultInfo,
    Member,
    Publisher,
    RecordingClient,
    ResumeResult,
    analyze,
    check_resumer,
    last_position,
    registry_problems,
    session_spec,
    table,
)
from clusterhelpers import RelaySpec, SessionSpec
from procs import ROOT

from stomprelay.cluster.keys import Keys

MakeCluster = Callable[..., Awaitable[Cluster]]

pytestmark = [pytest.mark.redis, pytest.mark.timeout(100)]

RELAYS = ["relay-a", "relay-b", "relay-c"]
FAULTED = "relay-a"
#: subscribers per relay (A is the one faults hit)
LAYOUT = {"relay-a": 2, "relay-b": 2, "relay-c": 1}
RESUMER_RELAY = "relay-c"
ROOM_TAG, NEWS_TAG = "room", "news"
NEWS = "/topic/news"
#: each publisher sends one SEND per destination every INTERVAL: 20 msg/s per publisher
INTERVAL = 0.1
WARMUP = 1.5
AFTER_FAULT = 2.0
QUIET = 1.0
#: the registry must be exact within TTL + one sweep of the end of the fault (+ slack
#: for the refresh phase and process scheduling on a 2-core machine)
REGISTRY_DEADLINE = LIVENESS_TTL + SWEEP_INTERVAL + 2.0
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class Run:
    """Everything one scenario made, for the fault functions and the checks."""

    scenario: Scenario
    cluster: Cluster
    room: str
    members: list[Member] = field(default_factory=list)
    publishers: list[Publisher] = field(default_factory=list)
    fault: FaultInfo = field(default_factory=lambda: FaultInfo("?"))
    dead: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    #: wall-clock times of the fault's steps, to find them in the relays' logs
    wall: dict[str, str] = field(default_factory=dict)

    def relay(self, server_id: str) -> Any:
        return next(r for r in self.cluster.relays if r.server_id == server_id)

    @property
    def destinations(self) -> dict[str, str]:
        return {ROOM_TAG: f"/topic/room/{self.room}", NEWS_TAG: NEWS}

    def expected_registry(self) -> tuple[list[RelaySpec], list[SessionSpec]]:
        relays = [
            RelaySpec(r.server_id, r.port)
            for r in self.cluster.relays
            if r.server_id not in self.dead
        ]
        sessions = [
            session_spec(m, [self.room])
            for m in self.members
            if m.kind in ("subscriber", "resumer-after", "early") and m.stayed()
        ]
        for p in self.publishers:
            client = p.live_client()
            if client is not None:
                sessions.append(
                    SessionSpec(
                        client.session_id, p.relay_id, client.remote_address(), "", rooms=[]
                    )
                )
        return relays, sessions


@dataclass
class Scenario:
    name: str
    fault: Callable[[Run], Awaitable[None]]
    #: the relay whose members may truly LEAVE server-lost (and JOIN back unless killed)
    affected: str | None = None
    killed: bool = False
    #: the affected relay's clients may be closed (killed or paused relay)
    may_close: bool = False
    aof: bool = False
    proxied: frozenset[str] = frozenset()
    expect_recovered: str = "true"
    #: "single" (one redis-server), "cluster" (3 masters + replicas), "sentinel"
    topology: str = "single"
    #: more ``stomprelay serve`` options
    extra: tuple[str, ...] = ()
    #: replicas of the master (Sentinel) or of each master (Cluster)
    replicas: int = 1
    #: acknowledged SENDs may be missing from the log at the end (a failover
    #: without WAIT: replication is asynchronous); the figure is reported either way
    log_loss_allowed: bool = False
    #: the relays that run (the resumer's relay, relay-c, always among them)
    relays: tuple[str, ...] = tuple(RELAYS)


# -- faults ------------------------------------------------------------------------------


def _started(run: Run) -> None:
    run.fault.started = time.monotonic()
    run.wall["fault_started"] = _wall()


def _ended(run: Run) -> None:
    run.fault.ended = time.monotonic()
    run.wall["fault_ended"] = _wall()


def _wall() -> str:
    """Wall-clock time as the relays' log lines show it."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"


async def redis_restart_aof(run: Run) -> None:
    _started(run)
    await asyncio.to_thread(run.cluster.redis.stop)  # SIGKILL: only the fsynced AOF survives
    await asyncio.sleep(2.5)
    await asyncio.to_thread(run.cluster.redis.start)  # same port, same directory
    _ended(run)


def redis_pause(seconds: float) -> Callable[[Run], Awaitable[None]]:
    async def fault(run: Run) -> None:
        _started(run)
        run.cluster.redis.pause()
        try:
            await asyncio.sleep(seconds)
        finally:
            run.cluster.redis.resume()
        _ended(run)

    return fault


async def flushall(run: Run) -> None:
    _started(run)
    await asyncio.to_thread(run.cluster.rdb.flushall)
    _ended(run)


def proxy_cut(seconds: float) -> Callable[[Run], Awaitable[None]]:
    async def fault(run: Run) -> None:
        assert run.cluster.proxy is not None
        _started(run)
        run.cluster.proxy.cut()
        try:
            await asyncio.sleep(seconds)
        finally:
            run.cluster.proxy.heal()
        _ended(run)

    return fault


async def relay_kill(run: Run) -> None:
    for p in run.publishers:
        if p.relay_id == FAULTED:
            p.may_reconnect = False
    _started(run)
    await asyncio.to_thread(run.relay(FAULTED).kill)
    run.dead.add(FAULTED)
    _ended(run)


async def relay_pause(run: Run) -> None:
    relay = run.relay(FAULTED)
    _started(run)
    relay.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(5.0)
    finally:
        relay.signal(signal.SIGCONT)
    _ended(run)


def _room_key(run: Run) -> str:
    return f"stomp:rooms:{{{run.room}}}:info"


async def master_kill(run: Run) -> None:
    """SIGKILL the master that holds the room (its slot, or the Sentinel master), with
    a replica to take over; the fault lasts until the replica is promoted."""
    topo = run.cluster.redis
    _started(run)
    if run.scenario.topology == "cluster":
        old, new = await asyncio.to_thread(topo.kill_master_of, _room_key(run))
    else:
        old, new = await asyncio.to_thread(topo.kill_master)
    run.notes.append(f"master {old.port} killed, {new.port} promoted")
    _ended(run)


async def sentinel_switch(run: Run) -> None:
    """SENTINEL FAILOVER: the master steps down to a replica, connections to it stay up."""
    _started(run)
    old, new = await asyncio.to_thread(run.cluster.redis.failover)
    run.notes.append(f"master {old.port} stepped down, {new.port} promoted")
    _ended(run)


async def slot_move(run: Run) -> None:
    """Move the room's slot (its keys, its log, its channels) to another master live."""
    topo = run.cluster.redis
    key = _room_key(run)
    _started(run)
    slot = await asyncio.to_thread(topo.slot_of, key)
    source = await asyncio.to_thread(topo.node_for_slot, slot)
    target = next(n for n in await asyncio.to_thread(topo.masters) if n.port != source.port)
    await asyncio.to_thread(topo.move_slot, slot, target)
    run.notes.append(f"slot {slot} moved from {source.port} to {target.port}")
    _ended(run)


# -- the run -----------------------------------------------------------------------------


#: What a relay logs as its Redis state changes, and a sentinel as it fails over.
_STATE_WORDS = ("redis unreachable", "redis back after", "sentinel ", "WAIT:")
_SENTINEL_WORDS = (
    "+sdown",
    "-sdown",
    "+odown",
    "+switch-master",
    "failover-abort",
    "+failover-end",
)


def _state_lines(text: str, most: int = 12) -> list[str]:
    """A relay log's lines about its Redis state (the first ``most``), shortened."""
    lines = [line[:160] for line in text.splitlines() if any(w in line for w in _STATE_WORDS)]
    return lines[:most]


def _sentinel_story(run: Run, most: int = 16) -> list[str]:
    """Under Sentinel, what the sentinels saw (a second failover explains a second
    outage); nothing for the other topologies."""
    topo = run.cluster.redis
    sentinels = getattr(topo, "sentinels", None)
    if not sentinels:
        return []
    out = []
    for node in sentinels:
        text = node.log()
        said = [line for line in text.splitlines() if any(w in line for w in _SENTINEL_WORDS)]
        lines = [line[:160] for line in said]
        out.append(f"sentinel {node.port}: " + " | ".join(lines[:most]))
    return out


async def _until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


async def _registry_now(run: Run) -> list[str]:
    relays, sessions = run.expected_registry()
    try:
        return await asyncio.to_thread(registry_problems, run.cluster.rdb, relays, sessions, TTL_MS)
    except redis.RedisError as exc:
        return [f"registry unreadable: {exc!r}"]


async def _converge(
    run: Run, timeout: float, since: float | None = None
) -> tuple[float | None, list[str]]:
    """Seconds from ``since`` (default: the end of the fault) until the registry was
    exact (None: not within ``timeout``), and the last differences seen."""
    start = run.fault.ended if since is None else since
    last: list[str] = []
    while True:
        problems = await _registry_now(run)
        elapsed = time.monotonic() - start
        if not problems:
            return elapsed, []
        last = problems
        if elapsed > timeout:
            return None, last
        await asyncio.sleep(0.1)


async def _early_clients(run: Run, problems: list[str], most: int = 12) -> None:
    for n in range(1, most + 1):
        name = f"early{n}@c"
        try:
            m = Member(name, RESUMER_RELAY, await _connect(run, RESUMER_RELAY, name), "early")
        except Exception as exc:
            problems.append(f"{name} could not connect after the fault: {exc!r}"[:300])
        else:
            run.members.append(m)
            run.wall[name] = f"{_wall()} session {m.sid}"
        live = [r for r in run.cluster.relays if r.server_id not in run.dead]
        if all(await asyncio.gather(*(asyncio.to_thread(r.ready) for r in live))):
            return
        await asyncio.sleep(0.25)


async def _all_ready(run: Run, timeout: float) -> float | None:
    """Seconds from the end of the fault until every live relay's /ready said 200."""
    live = [r for r in run.cluster.relays if r.server_id not in run.dead]
    deadline = time.monotonic() + timeout
    while True:
        states = await asyncio.gather(*(asyncio.to_thread(r.ready) for r in live))
        if all(states):
            return time.monotonic() - run.fault.ended
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.05)


def _unreceived(run: Run) -> int:
    """Acknowledged SENDs not yet received by a subscriber that is still connected."""
    missing = 0
    sent = [s for p in run.publishers for s in p.sent if s.acked]
    for m in run.members:
        if m.kind == "publisher" or not m.stayed():
            continue
        for tag, since in m.subscribed_at.items():
            got = {x.body for x in m.client.msgs if x.sub == tag}
            missing += sum(1 for s in sent if s.tag == tag and s.t >= since and s.body not in got)
    return missing


async def _connect(run: Run, relay_id: str, name: str) -> RecordingClient:
    client = await RecordingClient.connect(run.relay(relay_id).ws_url, name=name)
    assert isinstance(client, RecordingClient)
    return client


async def _subscribe(
    m: Member, tag: str, destination: str, headers: Any = (), timeout: float = 5
) -> None:
    await m.client.subscribe(destination, tag, headers=headers, timeout=timeout)
    m.subscribed_at[tag] = m.client.receipt_frames[f"subscribe-{tag}"][0]


async def run_scenario(make_cluster: MakeCluster, sc: Scenario) -> None:
    cluster = await make_cluster(
        list(sc.relays),
        aof=sc.aof,
        proxied=sc.proxied,
        topology=sc.topology,
        extra=list(sc.extra),
        replicas=sc.replicas,
    )
    run = Run(sc, cluster, room=f"fm-{sc.name}")
    run.fault = FaultInfo(sc.name, affected=sc.affected, killed=sc.killed)
    problems: list[str] = []
    try:
        await _scenario_body(run, problems)
    finally:
        for m in run.members:
            with contextlib.suppress(Exception):
                await m.client.close()
        for p in run.publishers:
            for client in p.clients:
                with contextlib.suppress(Exception):
                    await client.close()
        _keep_logs(run)


async def _scenario_body(run: Run, problems: list[str]) -> None:
    sc = run.scenario
    dests = run.destinations
    t0 = time.monotonic()
    # -- set-up: subscribers subscribe, then join, then everyone has seen every JOIN -----
    for relay_id, count in LAYOUT.items():
        if relay_id not in sc.relays:
            continue
        for i in range(1, count + 1):
            name = f"{relay_id[-1]}{i}@{relay_id}"
            client = await _connect(run, relay_id, name)
            m = Member(name, relay_id, client, "subscriber", username=f"{relay_id[-1]}{i}-user")
            run.members.append(m)
            for tag, destination in dests.items():
                await _subscribe(m, tag, destination)
    subscribers = [m for m in run.members if m.kind == "subscriber"]
    for m in subscribers:
        await m.client.join(run.room, m.username)
        m.joined = True
    sids = {m.sid for m in subscribers}

    def all_joins_seen() -> bool:
        for m in subscribers:
            seen = {
                x.event.get("sessionId")
                for x in m.client.msgs
                if x.sub == ROOM_TAG and x.event is not None and x.event.get("type") == "JOIN"
            }
            if not sids <= seen:
                return False
        return True

    assert await _until(all_joins_seen, 10), "set-up: not every subscriber saw every JOIN"
    # -- the resumer, and the publishers -----------------------------------------------
    resumer = Member(
        "resumer@c",
        RESUMER_RELAY,
        await _connect(run, RESUMER_RELAY, "resumer@c"),
        "resumer-before",
    )
    run.members.append(resumer)
    for tag, destination in dests.items():
        await _subscribe(resumer, tag, destination)
    stop = asyncio.Event()
    for relay in run.cluster.relays:
        p = Publisher(f"pub@{relay.server_id}", relay.server_id, relay.ws_url, dests, INTERVAL)
        await p.connect()
        run.publishers.append(p)
    tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in run.publishers]
    try:
        await asyncio.sleep(WARMUP)
        await resumer.client.disconnect()
        since = {tag: last_position(resumer.client.msgs, tag) for tag in dests}
        await asyncio.sleep(0.5)
        # -- the fault -----------------------------------------------------------------
        await sc.fault(run)
        # Clients connecting while the relays recover (one every 0.25 s until every
        # relay is ready): each must be in the registry like any other.
        connector = asyncio.create_task(_early_clients(run, problems))
        converged, registry_left = await _converge(run, REGISTRY_DEADLINE)
        if converged is None:
            problems.append(
                f"registry not exact {REGISTRY_DEADLINE:.1f}s after the fault: "
                + "; ".join(registry_left[:12])
            )
        # -- the resumer comes back once the relays say they are ready -----------------
        ready = await _all_ready(run, 10.0)
        if ready is None:
            problems.append("relays not /ready 200 within 10 s of the end of the fault")
        await connector
        converged_again, registry_left = await _converge(
            run, REGISTRY_DEADLINE, since=time.monotonic()
        )
        if converged is not None and converged_again is None:
            problems.append(
                "registry not exact with the clients that connected during the recovery: "
                + "; ".join(registry_left[:12])
            )
        run.wall["resumer_back"] = _wall()
        after = Member(
            "resumer'@c",
            RESUMER_RELAY,
            await _connect(run, RESUMER_RELAY, "resumer'@c"),
            "resumer-after",
        )
        run.members.append(after)
        for tag, destination in dests.items():
            epoch, offset = since[tag]
            headers = []
            if offset is not None and epoch is not None:
                headers = [("x-since-offset", str(offset)), ("x-since-epoch", epoch)]
            try:
                await _subscribe(after, tag, destination, headers, timeout=10)
            except AssertionError as exc:
                problems.append(f"resumer SUBSCRIBE {tag}: {exc}")
        await asyncio.sleep(AFTER_FAULT)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    # -- drain ---------------------------------------------------------------------------
    await _until(lambda: all(p.outstanding() == 0 for p in run.publishers), 4)
    await _until(lambda: _unreceived(run) == 0, 8)
    await asyncio.sleep(QUIET)

    # -- participant lists ---------------------------------------------------------------
    truth = {(m.sid, m.username, m.relay_id) for m in subscribers if m.stayed()}
    listed_ok = 0
    for n, m in enumerate(m for m in subscribers if m.stayed()):
        sub_id = f"who-{n}"
        try:
            await m.client.subscribe(f"/app/room/{run.room}/participants", sub_id, receipt=False)
            frame = await m.client.next_message(sub_id, timeout=5)
            body = json.loads(frame.body)
            listed = {(p["sessionId"], p["username"], p["serverId"]) for p in body["participants"]}
        except Exception as exc:
            problems.append(f"{m.name}: participant list request failed: {exc!r}"[:300])
            continue
        if listed != truth or body.get("count") != len(truth):
            problems.append(
                f"{m.name}: participant list {sorted(listed)} (count {body.get('count')}) "
                f"!= members {sorted(truth)}"
            )
        else:
            listed_ok += 1

    # -- the registry, with the resumer back ---------------------------------------------
    final_registry: list[str] = []
    for _ in range(30):
        final_registry = await _registry_now(run)
        if not final_registry:
            break
        await asyncio.sleep(0.1)
    if final_registry:
        problems.append("registry at the end: " + "; ".join(final_registry[:12]))

    # -- clients the relays closed, ERROR frames -----------------------------------------
    everyone: list[tuple[str, str, RecordingClient]] = [
        (m.name, m.relay_id, m.client) for m in run.members
    ] + [(p.name, p.relay_id, c) for p in run.publishers for c in p.clients]
    closed: list[str] = []
    for name, relay_id, client in everyone:
        excused = sc.may_close and relay_id == sc.affected
        if client.closed_by_relay and not excused:
            closed.append(f"{name} (code {client.close_code})")
        for _, frame in client.error_frames:
            if not excused:
                problems.append(
                    f"{name}: ERROR {frame.get('message')!r} receipt-id={frame.get('receipt-id')} "
                    f"{frame.body[:200]!r}"
                )
    if closed:
        problems.append(f"clients closed by a relay during the fault: {closed}")

    # -- one outage, one recovery: no flapping on stale pooled connections ---------------
    recoveries: dict[str, int] = {}
    for relay in run.cluster.relays:
        if relay.server_id in run.dead:
            continue
        text = relay.log()
        recoveries[relay.server_id] = text.count("redis back after")
        flapped = False
        if text.count("redis unreachable, serving local clients only") > 1:
            problems.append(f"{relay.server_id} went degraded more than once in one fault")
            flapped = True
        if recoveries[relay.server_id] > 1:
            problems.append(f"{relay.server_id} recovered {recoveries[relay.server_id]} times")
            flapped = True
        if flapped:
            # say why: the relay's own account of each outage and recovery
            problems.append(f"{relay.server_id}: " + " | ".join(_state_lines(text)))
    if any("more than once" in p for p in problems):
        problems += _sentinel_story(run)
    # -- what the logs kept of what was acknowledged (a failover may lose some) --------
    log_lost = await asyncio.to_thread(_log_lost, run)
    for tag, missing in log_lost.items():
        if missing and sc.log_loss_allowed is False:
            problems.append(
                f"log of {tag}: {len(missing)} acknowledged SENDs missing: {missing[:5]}"
            )

    # -- the checker -------------------------------------------------------------------
    analysis = analyze(run.members, run.publishers, run.fault, list(dests), ROOM_TAG)
    problems.extend(analysis.problems)
    resumes: list[ResumeResult] = []
    for tag in dests:
        epoch, offset = since[tag]
        result = ResumeResult(tag, epoch, offset, expected_recovered=sc.expect_recovered)
        if tag in after.subscribed_at:
            check_resumer(result, after, f"subscribe-{tag}", analysis)
        else:
            result.problems.append(f"resumer {tag}: not subscribed")
        resumes.append(result)
        problems.extend(result.problems)
    if any("skipped offsets" in p for p in problems):
        # what each relay's feeds said of the epochs they left and the ones they found
        for relay in run.cluster.relays:
            if relay.server_id not in run.dead:
                said = [
                    line[:200]
                    for line in relay.log().splitlines()
                    if "lost offsets" in line or " continues " in line
                ]
                problems.append(f"{relay.server_id} feeds: " + " | ".join(said[:8]))

    # -- figures -------------------------------------------------------------------------
    figures = {
        "scenario": sc.name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.monotonic() - t0, 1),
        "fault_seconds": round(run.fault.ended - run.fault.started, 2),
        "recoveries": recoveries,
        "lost": analysis.total("lost"),
        "duplicated": analysis.total("duplicated"),
        "out_of_order": analysis.total("out_of_order"),
        "spurious": analysis.total("spurious"),
        "true_presence_events": analysis.total("true_events"),
        "gaps": analysis.total("gaps"),
        "resets": analysis.total("resets"),
        "holes": analysis.total("holes"),
        "degraded": analysis.total("degraded"),
        "syncs": analysis.total("syncs"),
        "mapping_conflicts": analysis.mapping_conflicts,
        "log_lost": {tag: len(missing) for tag, missing in log_lost.items()},
        "registry_converged_s": None if converged is None else round(converged, 2),
        "ready_s": None if ready is None else round(ready, 2),
        "wall": run.wall,
        "registry_diff_at_deadline": registry_left[:40],
        "registry_diff_at_end": final_registry[:40],
        "participant_lists_ok": listed_ok,
        "closed_by_relay": closed,
        "publishers": {p.name: p.stats() for p in run.publishers},
        "resumer": [r.summary() for r in resumes],
        "epochs": {tag: sorted(str(e) for e in analysis.max_offset[tag]) for tag in dests},
        "passed": not problems,
        "problems": problems[:40],
    }
    _report(run, analysis, figures)
    assert not problems, f"{sc.name}: {len(problems)} problems:\n- " + "\n- ".join(problems[:60])


def _log_lost(run: Run) -> dict[str, list[str]]:
    """Per destination: acknowledged SENDs whose body the log does not hold at the end."""
    keys = Keys()
    out: dict[str, list[str]] = {}
    for tag, destination in run.destinations.items():
        log_id = "room:" + run.room if destination.startswith("/topic/room/") else "topic:news"
        try:
            entries = run.cluster.rdb.xrange(keys.history(log_id))
        except redis.RedisError as exc:
            out[tag] = [f"log unreadable: {exc!r}"]
            continue
        logged = {json.loads(fields["e"])["body"] for _, fields in entries}
        out[tag] = [
            s.body.decode()
            for p in run.publishers
            for s in p.sent
            if s.tag == tag and s.acked and s.body.decode() not in logged
        ]
    return out


def _report(run: Run, analysis: Any, figures: dict[str, Any]) -> None:
    print(f"\n=== fault matrix: {run.scenario.name} ({figures['seconds']}s) ===")
    print(table(analysis.rows))
    print(
        "figures: "
        + ", ".join(
            f"{k}={figures[k]}"
            for k in (
                "lost",
                "duplicated",
                "out_of_order",
                "spurious",
                "true_presence_events",
                "gaps",
                "resets",
                "holes",
                "degraded",
                "syncs",
                "mapping_conflicts",
                "registry_converged_s",
                "ready_s",
                "participant_lists_ok",
            )
        )
    )
    print(f"  wall clock: {figures['wall']}")
    for name, stats in figures["publishers"].items():
        print(f"  {name}: {stats}")
    for summary in figures["resumer"]:
        print(f"  resumer: {summary}")
    if figures["problems"]:
        print(f"  problems ({len(figures['problems'])} shown):")
        for problem in figures["problems"]:
            print(f"   - {problem[:400]}")
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "faults.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps(figures) + "\n")


def _keep_logs(run: Run) -> None:
    folder = ARTIFACTS / "faults" / run.scenario.name
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        for relay in run.cluster.relays:
            if relay.log_path.exists():
                shutil.copyfile(relay.log_path, folder / relay.log_path.name)


# -- the scenarios -----------------------------------------------------------------------


async def test_redis_restart_with_aof(make_cluster: MakeCluster) -> None:
    await run_scenario(make_cluster, Scenario("redis-restart-aof", redis_restart_aof, aof=True))


async def test_redis_sigstop_shorter_than_ttl(make_cluster: MakeCluster) -> None:
    await run_scenario(make_cluster, Scenario("redis-sigstop-2s", redis_pause(2.0)))


async def test_redis_sigstop_longer_than_ttl(make_cluster: MakeCluster) -> None:
    await run_scenario(make_cluster, Scenario("redis-sigstop-5s", redis_pause(5.0)))


async def test_flushall(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario("flushall", flushall, expect_recovered="false", log_loss_allowed=True),
    )


async def test_one_relay_cut_off_by_a_proxy(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario("proxy-cut-5s", proxy_cut(5.0), affected=FAULTED, proxied=frozenset({FAULTED})),
    )


async def test_relay_sigkill(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario("relay-sigkill", relay_kill, affected=FAULTED, killed=True, may_close=True),
    )


async def test_relay_sigstop_past_ttl(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster, Scenario("relay-sigstop-5s", relay_pause, affected=FAULTED, may_close=True)
    )


# -- outages that journal more than a log's --history-size (docs/history.md) ---------------
# Every relay's journal is appended at once when Redis is back; the retention keeps what is
# younger than --history-min-age (default 120 s), so no relay's feed finds a journal
# trimmed before it read it, and the resumer, back within that age, gets all it missed.
SMALL_LOG = ("--history-size", "50")


async def test_redis_stall_whose_journals_exceed_the_log_size(make_cluster: MakeCluster) -> None:
    """2 relays x 20 SENDs/s x a 10 s stall: 200 journaled messages per destination
    against a log of 50."""
    await run_scenario(
        make_cluster,
        Scenario(
            "redis-sigstop-10s-log-50",
            redis_pause(10.0),
            relays=("relay-a", "relay-c"),
            extra=SMALL_LOG,
        ),
    )


async def test_redis_stall_of_three_relays_under_a_raised_cap(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario(
            "redis-sigstop-10s-log-50-cap-1000",
            redis_pause(10.0),
            extra=(*SMALL_LOG, "--history-max-size", "1000"),
        ),
    )


async def test_relay_cut_off_while_the_others_overrun_the_log(make_cluster: MakeCluster) -> None:
    """relay-a cut off 10 s while relay-b and relay-c append live (and relay-a journals):
    300 messages per destination against a log of 50."""
    await run_scenario(
        make_cluster,
        Scenario(
            "proxy-cut-10s-log-50",
            proxy_cut(10.0),
            affected=FAULTED,
            proxied=frozenset({FAULTED}),
            extra=SMALL_LOG,
        ),
    )


# -- Redis Cluster and Sentinel (docs/redis.md, "Modes") ---------------------------------


@pytest.mark.cluster
async def test_cluster_relay_sigkill(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario(
            "cluster-relay-sigkill",
            relay_kill,
            affected=FAULTED,
            killed=True,
            may_close=True,
            topology="cluster",
        ),
    )


@pytest.mark.cluster
async def test_cluster_master_killed_mid_conversation(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario(
            "cluster-master-kill",
            master_kill,
            topology="cluster",
            expect_recovered="any",
            log_loss_allowed=True,
        ),
    )


@pytest.mark.cluster
async def test_cluster_slot_moved_while_the_room_is_live(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario("cluster-slot-move", slot_move, topology="cluster", expect_recovered="any"),
    )


@pytest.mark.cluster
async def test_sentinel_relay_sigkill(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario(
            "sentinel-relay-sigkill",
            relay_kill,
            affected=FAULTED,
            killed=True,
            may_close=True,
            topology="sentinel",
        ),
    )


@pytest.mark.cluster
async def test_sentinel_master_killed(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario(
            "sentinel-master-kill",
            master_kill,
            topology="sentinel",
            expect_recovered="any",
            log_loss_allowed=True,
        ),
    )


@pytest.mark.cluster
async def test_sentinel_master_killed_with_wait(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario(
            "sentinel-master-kill-wait",
            master_kill,
            topology="sentinel",
            expect_recovered="any",
            # two replicas: one is left to WAIT for once the other is promoted
            replicas=2,
            extra=("--redis-wait-replicas", "1"),
        ),
    )


@pytest.mark.cluster
async def test_sentinel_graceful_failover(make_cluster: MakeCluster) -> None:
    await run_scenario(
        make_cluster,
        Scenario("sentinel-switch", sentinel_switch, topology="sentinel", expect_recovered="any"),
    )
