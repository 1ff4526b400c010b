"""The Redis registry holds exactly what contract section 4 lists, after every change."""

from __future__ import annotations

import pytest
from clusterhelpers import (
    REAP_DEADLINE,
    TTL_MS,
    RelaySpec,
    SessionSpec,
    assert_registry,
    eventually,
)
from stompclient import StompClient

pytestmark = pytest.mark.redis


def _spec(
    client: StompClient, username: str = "", rooms: list[str] | None = None, user: str = ""
) -> SessionSpec:
    host, port = client.ws.local_address[:2]
    return SessionSpec(
        session_id=client.session_id,
        server_id=client.server_id,
        remote_address=f"{host}:{port}",
        username=username,
        rooms=list(rooms or []),
        user=user,
    )


async def test_registry_exact_after_each_change(start_relay, stomp_clients, rdb) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    both = [RelaySpec("relay-a", a.port), RelaySpec("relay-b", b.port)]

    async def expect(relays: list[RelaySpec], sessions: list[SessionSpec], step: str) -> None:
        await eventually(
            lambda: assert_registry(rdb, relays, sessions, TTL_MS), timeout=3, what=step
        )

    await expect(both, [], "two idle relays")

    # connected, no room yet (the login is the username until a join names one)
    c1 = await stomp_clients(a, login="carol", name="c1@A")
    c2 = await stomp_clients(b, name="c2@B")
    await expect(both, [_spec(c1, "carol", user="carol"), _spec(c2, "")], "connect")

    await c1.join("lobby", "alice")
    await expect(both, [_spec(c1, "alice", ["lobby"], "carol"), _spec(c2, "")], "join")

    await c2.join("lobby", "bob")
    s2 = _spec(c2, "bob", ["lobby"])
    await expect(both, [_spec(c1, "alice", ["lobby"], "carol"), s2], "second session joins")

    await c1.join("kitchen", "alice")
    await expect(
        both, [_spec(c1, "alice", ["lobby", "kitchen"], "carol"), s2], "join a second room"
    )

    await c1.leave("lobby")
    s1 = _spec(c1, "alice", ["kitchen"], "carol")
    await expect(both, [s1, s2], "leave")

    await c2.disconnect()
    await expect(both, [s1], "disconnect")

    # reap: relay-a dies with two sessions in rooms; relay-b keeps one
    c3 = await stomp_clients(a, name="c3@A")
    await c3.join("lobby", "dave")
    c4 = await stomp_clients(b, name="c4@B")
    await c4.join("lobby", "erin")
    s4 = _spec(c4, "erin", ["lobby"])
    await expect(both, [s1, _spec(c3, "dave", ["lobby"]), s4], "before the kill")
    a.kill()
    await eventually(
        lambda: assert_registry(rdb, [RelaySpec("relay-b", b.port)], [s4], TTL_MS),
        timeout=REAP_DEADLINE,
        what="relay-a reaped",
    )
