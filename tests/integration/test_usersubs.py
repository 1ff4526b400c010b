"""Server-side subscriptions and the disconnect route on a single node (memory
backend): ``POST /api/users/{user}/subscribe``, ``/unsubscribe``, ``/disconnect``.

The cross-relay behaviour (sessions on several relays, a relay that dies or stalls
during a call) is in ``tests/multi/test_multi_usersubs.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from clusterhelpers import api_post, eventually
from stompclient import StompClient

from stomprelay.factory import build_relay
from stomprelay.settings import Settings
from stomprelay.transport import RelayServer
from stomprelay.usersubs import NOTICE_DESTINATION, subscription_id

TOKEN = "s3cret"
LOBBY = "/topic/room/lobby"
SUB = subscription_id(LOBBY)

Clients = Callable[..., Awaitable[StompClient]]


async def started(server_id: str, token: str | None = TOKEN, **settings: Any) -> RelayServer:
    """An in-process relay on the memory backend, its API behind ``token``."""
    relay = build_relay(Settings(**settings), server_id=server_id)
    server = RelayServer(relay, host="127.0.0.1", port=0, admin_token=token)
    await server.start()
    return server


@pytest.fixture
async def solo() -> AsyncIterator[RelayServer]:
    server = await started("solo")
    yield server
    await server.stop()


@pytest.fixture
async def clients(solo: RelayServer) -> AsyncIterator[Clients]:
    made: list[StompClient] = []

    async def factory(login: str) -> StompClient:
        client = await StompClient.connect(
            f"ws://127.0.0.1:{solo.port}/ws", login=login, name=login
        )
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


async def call(solo: RelayServer, user: str, action: str, payload: Any) -> tuple[int, Any]:
    return await api_post(
        f"http://127.0.0.1:{solo.port}", f"/api/users/{user}/{action}", payload, TOKEN
    )


def notices(client: StompClient, sub_id: str) -> list[dict[str, Any]]:
    return [json.loads(f.body) for f in client.received(sub_id)]


async def test_subscribe_reaches_every_session_now_and_later(
    solo: RelayServer, clients: Clients
) -> None:
    a1, a2, bob = await clients("alice"), await clients("alice"), await clients("bob")
    await a1.subscribe(NOTICE_DESTINATION, "notices")

    status, body = await call(solo, "alice", "subscribe", {"destination": LOBBY})
    assert status == 200, body
    assert body == {"user": "alice", "destination": LOBBY, "subscription": SUB, "sessions": 2}
    assert hashlib.sha256(LOBBY.encode()).hexdigest()[:16] == SUB.removeprefix("server-")
    assert SUB.startswith("server-")

    notice = await a1.next_message("notices")
    assert notice.get("destination") == NOTICE_DESTINATION
    assert json.loads(notice.body) == {
        "action": "subscribe",
        "destination": LOBBY,
        "subscription": SUB,
    }
    await bob.send(LOBBY, "one")
    for alice in (a1, a2):
        message = await alice.next_message(SUB)
        assert (message.get("destination"), message.body) == (LOBBY, b"one")
    assert bob.received() == []  # bob was not subscribed

    # a session that connects later: subscribed right after CONNECTED, and told when
    # it subscribes to the notices
    a3 = await clients("alice")
    await a3.subscribe(NOTICE_DESTINATION, "notices")
    assert json.loads((await a3.next_message("notices")).body)["action"] == "subscribe"
    await bob.send(LOBBY, "two")
    for alice in (a1, a2, a3):
        assert (await alice.next_message(SUB)).body == b"two"

    # asking again changes nothing
    status, body = await call(solo, "alice", "subscribe", {"destination": LOBBY})
    assert (status, body["sessions"]) == (200, 3)
    assert len(notices(a1, "notices")) == 1

    status, body = await call(solo, "alice", "unsubscribe", {"destination": LOBBY})
    assert status == 200, body
    assert body == {"user": "alice", "destination": LOBBY, "subscription": SUB, "sessions": 3}
    for alice in (a1, a3):
        assert json.loads((await alice.next_message("notices")).body) == {
            "action": "unsubscribe",
            "destination": LOBBY,
            "subscription": SUB,
        }
    # each alice subscribes herself: once her own copy arrives, a server-side one
    # would have come in the same fan-out
    for alice in (a1, a2, a3):
        await alice.subscribe(LOBBY, "own")
    await bob.send(LOBBY, "three")
    for alice, had in ((a1, [b"one", b"two"]), (a2, [b"one", b"two"]), (a3, [b"two"])):
        assert (await alice.next_message("own")).body == b"three"
        assert [f.body for f in alice.received(SUB)] == had

    # and a session that connects now gets nothing
    a4 = await clients("alice")
    await a4.subscribe(NOTICE_DESTINATION, "notices")
    await a4.subscribe(LOBBY, "own")
    await bob.send(LOBBY, "four")
    assert (await a4.next_message("own")).body == b"four"
    assert a4.received("notices") == []
    assert a4.received(SUB) == []


async def test_a_user_is_subscribed_to_its_own_queue(solo: RelayServer, clients: Clients) -> None:
    """``/user/queue/{name}``: each session gets what is sent to its own user's queue."""
    a1, a2, bob = await clients("alice"), await clients("alice"), await clients("bob")
    status, body = await call(solo, "alice", "subscribe", {"destination": "/user/queue/inbox"})
    assert (status, body["sessions"]) == (200, 2), body
    await bob.send("/user/alice/queue/inbox", "psst", receipt=True)
    for alice in (a1, a2):
        message = await alice.next_message(subscription_id("/user/queue/inbox"))
        assert (message.get("destination"), message.body) == ("/user/queue/inbox", b"psst")
        assert message.get("x-sender") == "bob"


async def test_disconnect_ends_every_session_of_the_user_with_the_reason(
    solo: RelayServer, clients: Clients
) -> None:
    a1, a2, bob = await clients("alice"), await clients("alice"), await clients("bob")
    status, body = await call(solo, "alice", "disconnect", {"reason": "account closed"})
    assert status == 200, body
    assert body == {"user": "alice", "sessions": 2}
    for alice in (a1, a2):
        await alice.wait_closed()
        (error,) = alice.errors
        assert error.get("message") == "session ended by server"
        assert error.body == b"account closed"
    assert not bob.errors
    assert not bob.closed
    await bob.send("/topic/news", "still here", receipt=True)

    # no suspension: alice connects again; no reason: a default body
    a3 = await clients("alice")
    status, body = await call(solo, "alice", "disconnect", b"")
    assert (status, body) == (200, {"user": "alice", "sessions": 1})
    await a3.wait_closed()
    assert a3.errors[0].body == b"The server ended this session."
    status, body = await call(solo, "nobody", "disconnect", {})
    assert (status, body) == (200, {"user": "nobody", "sessions": 0})


async def test_notices_are_relay_only(solo: RelayServer, clients: Clients) -> None:
    bob = await clients("bob")
    with pytest.raises(AssertionError, match="Read-only destination"):
        await bob.send("/user/alice/queue/subscriptions", "{}", receipt=True)
    anonymous = await StompClient.connect(f"ws://127.0.0.1:{solo.port}/ws", name="anonymous")
    try:
        with pytest.raises(AssertionError, match="forbidden"):
            await anonymous.subscribe(NOTICE_DESTINATION, "notices")
    finally:
        await anonymous.close()


@pytest.mark.parametrize(
    ("user", "action", "payload", "field"),
    [
        ("alice", "subscribe", {"destination": "/app/room/lobby/join"}, "destination"),
        ("alice", "subscribe", {"destination": "/queue/jobs"}, "destination"),
        ("alice", "subscribe", {"destination": "/topic/room/no spaces"}, "destination"),
        ("alice", "subscribe", {"destination": NOTICE_DESTINATION}, "destination"),
        ("alice", "subscribe", {"destination": "/user/bob/queue/inbox"}, "destination"),
        ("alice", "subscribe", {}, "destination"),
        ("alice", "unsubscribe", {"destination": 7}, "destination"),
        ("alice", "disconnect", {"reason": ["no"]}, "reason"),
        ("alice", "disconnect", {"reason": "x" * 1001}, "reason"),
        ("ali%E2%80%AEce", "disconnect", {}, "user"),
        ("%FF", "subscribe", {"destination": LOBBY}, "user"),
        ("alice", "subscribe", b"{not json", None),
        ("alice", "subscribe", b"[]", None),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    solo: RelayServer, user: str, action: str, payload: Any, field: str | None
) -> None:
    status, body = await call(solo, user, action, payload)
    assert status == 400, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body.get("field") == field


async def test_a_user_holds_a_bounded_number_of_server_subscriptions() -> None:
    server = await started("solo", max_server_subscriptions=2)
    try:
        for name in ("a", "b"):
            status, _ = await call(server, "alice", "subscribe", {"destination": f"/topic/{name}"})
            assert status == 200
        status, body = await call(server, "alice", "subscribe", {"destination": "/topic/c"})
        assert (status, body["field"]) == (400, "destination")
        assert "--max-server-subscriptions" in body["error"]
    finally:
        await server.stop()


async def test_the_routes_need_the_token() -> None:
    server = await started("open", token=None)
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, _ = await api_post(base, "/api/users/alice/disconnect", {}, None)
        assert status == 403
    finally:
        await server.stop()
    server = await started("shut")
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, _ = await api_post(base, "/api/users/alice/subscribe", {"destination": LOBBY}, "no")
        assert status == 401
    finally:
        await server.stop()


async def test_a_server_side_subscription_is_outside_the_acl(make_relay: Any) -> None:
    """Under members-only rules alice may not subscribe to a room she is not in, nor
    stay subscribed once she leaves it: the back-end's subscription is neither refused
    nor ended. With authentication on, the user is the token's ``sub``."""
    from test_access import MEMBERS_ACL, SECRET, token

    from stomprelay.auth import Acl
    from stomprelay.tokens import Authenticator

    server = await make_relay(
        auth=Authenticator(secret=SECRET), acl=Acl.from_document(MEMBERS_ACL, "test")
    )
    ws = f"ws://127.0.0.1:{server.port}/ws"
    alice = await StompClient.connect(ws, passcode=token("alice", name="Alice A."))
    bob = await StompClient.connect(ws, passcode=token("bob"))
    try:
        answer = await server.relay.subscribe_user("alice", LOBBY)
        assert answer["sessions"] == 1
        await bob.send("/app/room/lobby/join", b"", receipt=True)
        await bob.send("/app/room/lobby/message", {"message": "hi"}, receipt=True)
        chat = await alice.next_message(SUB, lambda f: b'"CHAT"' in f.body)
        assert json.loads(chat.body)["message"] == "hi"
        await alice.send("/app/room/lobby/join", b"", receipt=True)
        await alice.send("/app/room/lobby/leave", b"", receipt=True)
        assert not alice.closed
        answer = await server.relay.disconnect_user("alice", "bye")
        assert answer == {"user": "alice", "sessions": 1}
        await alice.wait_closed()
        assert alice.errors[0].get("message") == "session ended by server"
    finally:
        await alice.close()
        await bob.close()


async def test_an_unsubscribe_during_a_connects_read_is_not_lost(
    solo: RelayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session connects while its user's stored subscriptions are read, and an
    unsubscribe comes meanwhile: it is acted on after the read, so the session ends
    up without the subscription."""
    relay = solo.relay
    registry = relay.registry
    read = registry.server_subscriptions
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow_read(user: str) -> list[str]:
        found = await read(user)
        reached.set()
        await release.wait()
        return found

    assert (await relay.subscribe_user("alice", LOBBY))["sessions"] == 0
    monkeypatch.setattr(registry, "server_subscriptions", slow_read)
    url = f"ws://127.0.0.1:{solo.port}/ws"
    connecting = asyncio.create_task(StompClient.connect(url, login="alice", name="alice"))
    await reached.wait()
    unsubscribing = asyncio.create_task(relay.unsubscribe_user("alice", LOBBY))
    # the request has come and waits: the read holds the user's lock
    await eventually(lambda: relay.server_subs.locks.users("alice") == 2, what="a waiter")
    release.set()
    alice = await connecting
    try:
        assert (await unsubscribing)["sessions"] == 1
        await alice.subscribe(NOTICE_DESTINATION, "notices")
        await alice.subscribe(LOBBY, "own")
        bob = await StompClient.connect(url, login="bob", name="bob")
        await bob.send(LOBBY, "after", receipt=True)
        await bob.close()
        assert (await alice.next_message("own")).body == b"after"
        assert alice.received(SUB) == []
        assert SUB not in [
            s.id for sink in relay.sinks.values() for s in sink.session.subscriptions.values()
        ]
    finally:
        await alice.close()
