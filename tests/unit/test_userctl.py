"""The server API's requests between relays (stomprelay/userctl.py), on the memory bus:
who is asked, what a malformed or late envelope does (nothing, and no traceback),
and the bound on waiting. The real relays' side is in tests/integration and
tests/multi (test_usersubs, test_multi_usersubs)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryBus, MemoryHub, MemoryRegistry
from stomprelay.userctl import CONTROL_HEADER, FieldError, NotConfirmed, UserControl

KEYS = Keys()


class Node:
    """One relay's UserControl on a memory bus, listening to its own channel; its
    sessions of each user are ``sessions[user]``, and what it was asked is kept."""

    def __init__(
        self, hub: MemoryHub, registry: MemoryRegistry, server_id: str, peers: list[Node]
    ) -> None:
        self.bus = MemoryBus(hub)
        self.asked: list[tuple[str, str, str]] = []
        self.sessions: dict[str, list[str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

        def act(op: str):  # type: ignore[no-untyped-def]
            async def run(user: str, argument: str) -> list[str]:
                self.asked.append((op, user, argument))
                return self.sessions.get(user, [])

            return run

        async def sessions_of(user: str) -> list[tuple[str, str]]:
            return [(s, r.server_id) for r in peers for s in r.sessions.get(user, [])]

        self.server_id = server_id
        self.control = UserControl(
            server_id,
            KEYS,
            self.bus.publish,
            registry,
            sessions_of,
            {op: act(op) for op in ("subscribe", "unsubscribe", "disconnect")},
            self.tasks.add,
            timeout=0.5,
            most=4,
        )

    async def start(self) -> None:
        def handler(channel: str, envelope: Envelope) -> None:
            assert self.control.handles(channel, envelope), (channel, envelope)

        await self.bus.start(handler)
        await self.bus.subscribe(KEYS.server_channel(self.server_id))


@pytest.fixture
async def pair() -> tuple[Node, Node]:
    hub = MemoryHub()
    registry = MemoryRegistry(hub)
    nodes: list[Node] = []
    nodes += [Node(hub, registry, "r1", nodes), Node(hub, registry, "r2", nodes)]
    for node in nodes:
        await node.start()
    return nodes[0], nodes[1]


async def test_only_the_relays_holding_the_user_are_asked(pair: tuple[Node, Node]) -> None:
    r1, r2 = pair
    r2.sessions["alice"] = ["s1", "s2"]
    outcome = await r1.control.subscribe("alice", "/topic/news")
    assert (outcome.sessions, outcome.unconfirmed) == (["s1", "s2"], {})
    assert r1.asked == []
    assert r2.asked == [("subscribe", "alice", "/topic/news")]
    assert await r1.control.disconnect_user("bob", "") == {"user": "bob", "sessions": 0}
    assert r2.asked[1:] == []  # nobody holds bob: nobody is asked


async def test_a_relay_that_does_not_answer_is_named(pair: tuple[Node, Node]) -> None:
    r1, r2 = pair
    r1.sessions["alice"] = ["s1"]
    r2.sessions["alice"] = ["s2"]
    await r2.bus.close()  # r2 hears nothing now
    with pytest.raises(NotConfirmed) as caught:
        await r1.control.disconnect_user("alice", "bye")
    assert caught.value.body == {
        "user": "alice",
        "sessions": 1,
        "unconfirmed": {"servers": ["r2"], "sessions": ["s2"]},
    }
    assert r1.asked == [("disconnect", "alice", "bye")]


async def test_bad_calls_are_field_errors(pair: tuple[Node, Node]) -> None:
    r1, _ = pair
    for destination in ("/app/room/x/join", "/queue/x", "nowhere", "/user/bob/queue/x"):
        with pytest.raises(FieldError) as caught:
            await r1.control.subscribe("alice", destination)
        assert caught.value.field == "destination"
    with pytest.raises(FieldError) as caught:
        await r1.control.disconnect("alice", "x" * 1001)
    assert caught.value.field == "reason"
    for n in range(4):
        await r1.control.subscribe("alice", f"/topic/t{n}")
    with pytest.raises(FieldError) as caught:
        await r1.control.subscribe("alice", "/topic/t9")
    assert "--max-server-subscriptions" in caught.value.detail


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"op": "subscribe"}',
        b'{"op": "teleport", "request": "x"}',
        b'{"op": "subscribe", "request": "x", "user": "alice"}',
        b'{"op": "answer", "request": "nobody-waits"}',
        b'{"op": "answer", "request": "nobody-waits", "sessions": "s1"}',
    ],
)
async def test_malformed_or_late_envelopes_are_dropped(
    pair: tuple[Node, Node], body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    _, r2 = pair
    channel = KEYS.server_channel("r2")
    envelope = Envelope("bad-1", "r1", "", (CONTROL_HEADER,), body, 0)
    with caplog.at_level(logging.WARNING):
        assert r2.control.handles(channel, envelope)
        for task in list(r2.tasks):
            await task
    assert r2.asked == []
    assert not any(record.exc_info for record in caplog.records)
    # the same envelope without the mark, or on another channel, is not this module's
    assert not r2.control.handles(channel, Envelope("m", "r1", "/topic/x", (), body, 0))
    assert not r2.control.handles(KEYS.server_channel("r1"), envelope)
