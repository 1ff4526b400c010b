"""Every registry operation stopped at every step boundary converges (issue: cluster-safe
steps). An operation that spans slots is a sequence of one-slot steps
(``operations.py``); here each step in turn fails, either before it runs or after it
ran with its reply lost, and then what a relay does next runs: the same call again (a
client's retry, or the relay's restore), another sweeper's reap. The registry must end
exactly as an uninterrupted run leaves it, and the subscribers must have seen the same
events: none lost, none twice, none made up. Runs over every backend.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from stomprelay.cluster.registry import DeadServer, Pending, ServerRecord, SessionRecord
from stomprelay.errors import BackendUnavailable

NOW = 1_700_000_000_000
TTL = 60_000
R1 = ServerRecord("r1", "10.0.0.1", 8001, "0.1.0", NOW - 5_000, "inc-1")
R2 = ServerRecord("r2", "10.0.0.2", 8002, "0.1.0", NOW - 5_000, "inc-2")


def session(sid: str, server: str = "r1", username: str = "alice") -> SessionRecord:
    return SessionRecord(sid, server, username, "127.0.0.1", "1.2", NOW)


class Faulty:
    """A store whose ``fail_at``-th step fails: before it runs, or after (reply lost)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls = 0
        self.fail_at = 0
        self.after = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not callable(target) or name.startswith("_"):
            return target

        async def step(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            failing = self.calls == self.fail_at
            if failing and not self.after:
                raise BackendUnavailable(f"injected before step {self.calls} ({name})")
            result = await target(*args, **kwargs)
            if failing:
                raise BackendUnavailable(f"injected after step {self.calls} ({name})")
            return result

        return step


@dataclass
class Scenario:
    name: str
    #: builds the state before the operation
    setup: Callable[[Any], Awaitable[None]]
    #: the operation, run once with a fault and then to recover
    operation: Callable[[Any], Awaitable[Any]]
    #: what runs after the failure (default: the operation again)
    recover: Callable[[Any], Awaitable[Any]] | None = None


async def two_relays(reg: Any) -> None:
    await reg.register_server(R1, TTL, NOW, "reg1")
    await reg.register_server(R2, TTL, NOW, "reg2")


async def alice_in_two_rooms(reg: Any) -> None:
    await two_relays(reg)
    await reg.add_session(session("s1"), "add1", "inc-1")
    await reg.add_session(session("s2", "r2", "bob"), "add2", "inc-2")
    assert await reg.join("s1", "lobby", "alice", "r1", NOW + 1, "j1") == (True, 1)
    assert await reg.join("s1", "games", "alice", "r1", NOW + 2, "j2") == (True, 1)
    assert await reg.join("s2", "lobby", "bob", "r2", NOW + 3, "j3") == (True, 2)


async def r1_dead(reg: Any) -> None:
    await alice_in_two_rooms(reg)
    assert await reg.refresh_server("r1", "inc-1", 1)  # a 1 ms heartbeat: expires now


async def reap_r1(reg: Any) -> Any:
    dead = [d for d in await reg.dead_servers() if d.server_id == "r1"]
    return await reg.reap(dead[0] if dead else DeadServer("r1", "inc-1"), "r2", NOW + 10, "reap")


def restore_of(pending: Pending) -> Callable[[Any], Awaitable[Any]]:
    async def run(reg: Any) -> Any:
        # r1 now holds s1 in lobby and kitchen (it left games), and s3, new
        held = [
            SessionRecord(
                "s1", "r1", "alice", "127.0.0.1", "1.2", NOW, NOW + 5, ["lobby", "kitchen"]
            ),
            SessionRecord("s3", "r1", "carol", "127.0.0.1", "1.2", NOW, NOW + 5, ["lobby"]),
        ]
        return await reg.restore(R1, held, TTL, False, NOW + 10, "rest", pending)

    return run


SCENARIOS = [
    Scenario(
        "add_session",
        two_relays,
        lambda reg: reg.add_session(session("s1"), "add1", "inc-1"),
    ),
    Scenario(
        "join",
        alice_in_two_rooms,
        lambda reg: reg.join("s2", "games", "bob", "r2", NOW + 10, "j9"),
    ),
    Scenario(
        "leave",
        alice_in_two_rooms,
        lambda reg: reg.leave("s1", "lobby", "r1", "left", NOW + 10, "l9"),
    ),
    Scenario(
        "remove_session",
        alice_in_two_rooms,
        lambda reg: reg.remove_session("s1", "r1", [], "disconnected", NOW + 10, "rm9"),
    ),
    Scenario("reap", r1_dead, reap_r1),
    Scenario(
        "unregister_server",
        alice_in_two_rooms,
        lambda reg: reg.unregister_server("r1", NOW + 10, "unreg"),
    ),
    Scenario(
        "restore",
        alice_in_two_rooms,
        restore_of(
            Pending(
                joins={("s1", "kitchen"): "pj-kitchen"},
                leaves={("s1", "games"): "pl-games"},
                new_sessions={"s3"},
            )
        ),
    ),
]

ROOMS = ("lobby", "games", "kitchen")


def event_key(channel: str, env: Any) -> tuple[str, ...]:
    body = json.loads(env.body)
    return (
        body["type"],
        body.get("roomId", ""),
        body["sessionId"],
        str(body.get("participants", "")),
    )


def normalised(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Times set by the clock of the run (heartbeat expiry, Redis TIME) aside."""
    out = {}
    for key, value in snapshot.items():
        if key.endswith(":reaper_lock"):
            continue
        out[key] = value
    return out


async def run_once(
    cluster: Any, scenario: Scenario, fail_at: int, after: bool
) -> tuple[dict[str, Any], Counter[tuple[str, ...]], int]:
    """Set up from scratch, run the operation with a fault at ``fail_at`` (0: none),
    recover; the snapshot, the events every probe saw (counted), and the steps made."""
    await cluster.wipe()
    reg = cluster.registry
    await scenario.setup(reg)
    if scenario.name == "reap":
        await cluster.expire("r1")
    channels = [cluster.keys.session_connect_channel, cluster.keys.session_disconnect_channel]
    for room in ROOMS:
        channels += [cluster.keys.join_channel(room), cluster.keys.leave_channel(room)]
    probe = await cluster.probe(*channels)
    store = reg.store  # type: ignore[attr-defined]
    faulty = Faulty(store)
    faulty.fail_at, faulty.after = fail_at, after
    reg.store = faulty  # type: ignore[attr-defined]
    try:
        try:
            await scenario.operation(reg)
            failed = False
        except BackendUnavailable:
            failed = True
        steps = faulty.calls
        reg.store = store  # type: ignore[attr-defined]
        if failed:
            if scenario.name == "reap":
                await expire_lock(cluster)  # the failed sweeper's lock times out
            await (scenario.recover or scenario.operation)(reg)
    finally:
        reg.store = store  # type: ignore[attr-defined]
    await probe.barrier()
    seen: Counter[tuple[str, ...]] = Counter(
        event_key(ch, env) for ch, env in probe.received if ch != "test:barrier"
    )
    await probe.bus.close()
    cluster.probes.remove(probe)
    return normalised(await cluster.snapshot()), seen, steps


async def expire_lock(cluster: Any) -> None:
    if cluster.raw is not None:
        await cluster.raw.delete(cluster.keys.reaper_lock("r1"))
    else:
        cluster.hub.locks.pop("r1", None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_an_operation_stopped_at_any_step_converges(cluster: Any, scenario: Scenario) -> None:
    expected, expected_events, steps = await run_once(cluster, scenario, 0, False)
    assert steps >= 2, f"{scenario.name} is one step: nothing to interrupt"
    assert expected_events, f"{scenario.name} announced nothing"
    problems = []
    for fail_at in range(1, steps + 1):
        for after in (False, True):
            got, events, _ = await run_once(cluster, scenario, fail_at, after)
            where = f"step {fail_at}/{steps} {'after' if after else 'before'}"
            if got != expected:
                diff = {
                    k: (expected.get(k), got.get(k))
                    for k in set(expected) | set(got)
                    if expected.get(k) != got.get(k)
                }
                problems.append(f"{where}: registry differs: {diff}")
            lost = expected_events - events
            extra = events - expected_events
            if lost or extra:
                problems.append(
                    f"{where}: events lost {dict(lost)}, duplicated/spurious {dict(extra)}"
                )
    assert not problems, "\n".join(problems)
