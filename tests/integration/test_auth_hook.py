"""The back-end authorization hook with real clients and a real HTTP receiver
(docs/security.md, contract section 11): connects the hook authenticates or refuses,
subscriptions and sends it allows or forbids, answers cached for their ttl, and a
hook that is slow, broken or talks garbage refusing everything (fail closed)."""

from __future__ import annotations

from typing import Any

import pytest
from hookreceiver import HookReceiver, allow, deny
from jsclient import StompJsClient, StompJsError
from pyclient import PyClients
from stompclient import StompClient, StompClientError

from stomprelay.auth import Acl
from stomprelay.tokens import Authenticator, issue_token
from stomprelay.transport import RelayServer

HOOK_SECRET = "hook-secret-0123456789"
JWT_SECRET = "integration-secret-0123456789abcdef"
USERS = {"alice": "wonderland", "bob": "builder"}


def url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def backend(request: dict[str, Any]) -> tuple[int, bytes] | None:
    """A back-end with its own users: logins are ``a-<name>``, the user ``<name>``;
    ``/topic/private/...`` is for bob only."""
    if request["action"] == "connect":
        name = str(request.get("login", "")).removeprefix("a-")
        if USERS.get(name) != request.get("passcode"):
            return deny(f"wrong passcode for {request.get('login')}\x07\n")
        return allow(user=name)
    destination = str(request.get("destination", ""))
    if destination.startswith("/topic/private/") and request.get("user") != "bob":
        return deny("private channel", ttl=60)
    if destination == "/user/bob/queue/private" and request.get("user") != "bob":
        return deny("bob's private queue", ttl=60)
    return allow(ttl=60)


@pytest.fixture
def receiver() -> Any:
    with HookReceiver(backend, HOOK_SECRET) as hook:
        yield hook


async def hooked(make_relay: Any, hook: HookReceiver, **settings: Any) -> RelayServer:
    server: RelayServer = await make_relay(
        auth_hook_url=hook.url, auth_hook_secret=HOOK_SECRET, **settings
    )
    return server


async def test_stomp_py_connect_and_subscribe_by_the_hook(
    make_relay: Any, receiver: HookReceiver
) -> None:
    server = await hooked(make_relay, receiver)
    clients = PyClients()
    try:
        good = clients(server, "ws")
        await good.connect(username="a-bob", passcode="builder")
        await good.subscribe("/topic/private/x", "p")
        await good.subscribe("/topic/open", "o")
        (session_id,) = server.relay.access.identities
        assert server.relay.access.identities[session_id].user == "bob"
        bad = clients(server, "ws")
        with pytest.raises(Exception):  # noqa: B017,PT011 - stomp.py's ConnectFailedException
            await bad.connect(username="a-alice", passcode="guess")
        error = await bad.next("error")
        assert error.headers["message"] == "access refused"
        assert error.body == b"wrong passcode for a-alice"  # control characters gone
        alice = clients(server, "ws")
        await alice.connect(username="a-alice", passcode="wonderland")
        await alice.run(alice.conn.subscribe, "/topic/private/x", "p", receipt="r")
        error = await alice.next("error")
        assert error.headers["message"] == "forbidden"
        assert error.body == b"private channel"
    finally:
        await clients.aclose()
    connect = next(r for r in receiver.requests if r["action"] == "connect")
    assert connect["passcode"] == "builder"
    assert connect["remoteAddress"].startswith("127.0.0.1")
    assert connect["sessionId"]
    assert "passcode" not in connect["headers"]
    subscribe = next(r for r in receiver.requests if r["action"] == "subscribe")
    assert subscribe["user"] == "bob"
    assert subscribe["destination"] == "/topic/private/x"
    assert receiver.signatures
    assert all(receiver.signatures)


@pytest.mark.node
async def test_stompjs_connect_and_subscribe_by_the_hook(
    make_relay: Any, receiver: HookReceiver, stompjs: StompJsClient
) -> None:
    server = await hooked(make_relay, receiver)
    with pytest.raises(StompJsError, match="access refused"):
        await stompjs.connect(url(server), login="a-bob", passcode="nope", reconnectDelay=0)
    async with await StompJsClient.start() as alice:
        await alice.connect(url(server), login="a-alice", passcode="wonderland", reconnectDelay=0)
        await alice.subscribe("/topic/open", sub_id="o", receipt="ro")
        await alice.expect("receipt", lambda e: e.get("receipt_id") == "ro", timeout=5)
        await alice.subscribe("/topic/private/y", sub_id="p", receipt="rp")
        error = await alice.expect("error", timeout=5)
        assert error["headers"]["message"] == "forbidden"


async def test_the_cache_stops_repeated_questions(make_relay: Any, receiver: HookReceiver) -> None:
    server = await hooked(make_relay, receiver, auth_hook_actions=("connect", "subscribe", "send"))
    clients = [
        await StompClient.connect(url(server), login="a-bob", passcode="builder") for _ in range(3)
    ]
    for n, client in enumerate(clients):
        await client.subscribe_receipt("/topic/chat", f"s{n}")
        for _ in range(20):
            await client.send("/topic/chat", b"hi")
        await client.send("/topic/chat", b"last", receipt=True)
    for client in clients:
        await client.disconnect()
    assert receiver.count("connect") == 3, "connects are never cached"
    assert receiver.count("subscribe", "/topic/chat") == 1
    assert receiver.count("send", "/topic/chat") == 1
    metrics = server.relay.metrics.registry
    cached = metrics.get_sample_value("stomprelay_auth_hook_answers_total", {"outcome": "cached"})
    assert cached == 2 + 3 * 21 - 1  # every subscribe and send but the first of each


async def test_send_checks_forbid_and_the_receiver_sees_nothing(
    make_relay: Any, receiver: HookReceiver
) -> None:
    server = await hooked(make_relay, receiver, auth_hook_actions=("connect", "send"))
    bob = await StompClient.connect(url(server), login="a-bob", passcode="builder")
    await bob.subscribe_receipt("/topic/private/z", "z")  # subscribe is not asked about
    alice = await StompClient.connect(url(server), login="a-alice", passcode="wonderland")
    with pytest.raises(StompClientError, match="forbidden"):
        await alice.send("/topic/private/z", b"intrusion", receipt=True)
    await bob.send("/topic/private/z", b"mine", receipt=True)
    message = await bob.next_message("z")
    assert message.body == b"mine"
    assert receiver.count("subscribe") == 0
    assert receiver.count("send", "/topic/private/z") == 2  # one per user


async def test_the_hook_sees_user_destinations_by_their_names(
    make_relay: Any, receiver: HookReceiver
) -> None:
    """Contract section 9: the hook is asked about ``/user/queue/{name}`` (a SUBSCRIBE)
    and ``/user/{user}/queue/{name}`` (a SEND) by those names, for the session's user,
    and its refusal of a user destination is ERROR ``forbidden``."""
    server = await hooked(make_relay, receiver, auth_hook_actions=("connect", "subscribe", "send"))
    bob = await StompClient.connect(url(server), login="a-bob", passcode="builder")
    await bob.subscribe_receipt("/user/queue/messages", "inbox")
    alice = await StompClient.connect(url(server), login="a-alice", passcode="wonderland")
    await alice.send("/user/bob/queue/messages", b"hi bob", receipt=True)
    message = await bob.next_message("inbox")
    assert (message.body, message.get("x-sender")) == (b"hi bob", "alice")
    assert message.get("destination") == "/user/queue/messages"
    (subscribe,) = [r for r in receiver.requests if r["action"] == "subscribe"]
    assert (subscribe["user"], subscribe["destination"]) == ("bob", "/user/queue/messages")
    (send,) = [r for r in receiver.requests if r["action"] == "send"]
    assert (send["user"], send["destination"]) == ("alice", "/user/bob/queue/messages")
    # another spelling of bob's queue is the same question, not a way around the answer
    with pytest.raises(StompClientError, match="forbidden"):
        await alice.send("/user/b%6Fb/queue/private", b"psst", receipt=True)
    assert receiver.count("send", "/user/bob/queue/private") == 1


@pytest.mark.parametrize(
    "answer",
    [(500, b'{"allow": true}'), (200, b"<html>"), (200, b'{"allow": "yes"}'), None],
    ids=["http-500", "garbage", "not-boolean", "too-slow"],
)
async def test_a_broken_hook_fails_closed(make_relay: Any, answer: Any) -> None:
    with HookReceiver(lambda _request: answer, HOOK_SECRET) as hook:
        server = await hooked(make_relay, hook, auth_hook_timeout=0.5)
        with pytest.raises(StompClientError, match="authorization unavailable"):
            await StompClient.connect(url(server), login="a-bob", passcode="builder")
        assert not server.relay.access.identities


async def test_a_broken_hook_refuses_subscriptions_too(make_relay: Any) -> None:
    def half(request: dict[str, Any]) -> tuple[int, bytes]:
        return allow(user="bob") if request["action"] == "connect" else (503, b"")

    with HookReceiver(half, HOOK_SECRET) as hook:
        server = await hooked(make_relay, hook)
        client = await StompClient.connect(url(server), login="a-bob", passcode="x")
        with pytest.raises(StompClientError, match="authorization unavailable"):
            await client.subscribe_receipt("/topic/a", "a")


async def test_the_acl_applies_to_the_user_the_hook_names(
    make_relay: Any, receiver: HookReceiver
) -> None:
    acl = Acl.from_document(
        {"rules": [{"users": ["bob"], "subscribe": ["/topic/bob/**", "/topic/private/**"]}]},
        "test",
    )
    server = await hooked(make_relay, receiver, acl=acl)
    bob = await StompClient.connect(url(server), login="a-bob", passcode="builder")
    await bob.subscribe_receipt("/topic/bob/inbox", "i")
    with pytest.raises(StompClientError, match="forbidden"):
        await bob.subscribe_receipt("/topic/alice/inbox", "a")
    # the ACL said no before the hook was asked
    assert receiver.count("subscribe", "/topic/alice/inbox") == 0
    assert receiver.count("subscribe", "/topic/bob/inbox") == 1


async def test_a_hook_adds_to_a_valid_token(make_relay: Any) -> None:
    def by_claims(request: dict[str, Any]) -> tuple[int, bytes]:
        if request["action"] == "connect" and request.get("claims", {}).get("plan") != "paid":
            return deny("subscription expired")
        return allow()

    with HookReceiver(by_claims, HOOK_SECRET) as hook:
        server = await hooked(make_relay, hook, auth=Authenticator(secret=JWT_SECRET))
        paid = issue_token(JWT_SECRET, "carol", claims={"plan": "paid"})
        client = await StompClient.connect(url(server), passcode=paid)
        assert server.relay.access.identities[client.session_id].user == "carol"
        free = issue_token(JWT_SECRET, "dave", claims={"plan": "free"})
        with pytest.raises(StompClientError, match="access refused"):
            await StompClient.connect(url(server), passcode=free)
        # a bad token is refused before the hook hears of it
        with pytest.raises(StompClientError, match="invalid token"):
            await StompClient.connect(url(server), passcode="not-a-token")
        assert [r.get("user") for r in hook.requests] == ["carol", "dave"]


async def test_a_login_the_hook_does_not_name_is_no_one_to_the_acl(make_relay: Any) -> None:
    acl = Acl.from_document({"rules": [{"users": ["bob"], "subscribe": ["/topic/bob/**"]}]}, "t")
    with HookReceiver(lambda _request: allow(), HOOK_SECRET) as hook:
        server = await hooked(make_relay, hook, acl=acl)
        client = await StompClient.connect(url(server), login="bob", passcode="whatever")
        assert server.relay.access.identities[client.session_id].user == ""
        with pytest.raises(StompClientError, match="forbidden"):
            await client.subscribe_receipt("/topic/bob/inbox", "i")
        (connect,) = hook.requests
        assert connect["login"] == "bob"
        assert "user" not in connect, "a claimed login is not a user"


async def test_a_hook_that_is_not_there_fails_closed(make_relay: Any) -> None:
    with HookReceiver(lambda _request: allow()) as hook:
        gone = hook.url  # the port is free again once the receiver is closed
    server = await make_relay(auth_hook_url=gone)
    with pytest.raises(StompClientError, match="authorization unavailable"):
        await StompClient.connect(url(server), login="bob", passcode="x")
    metrics = server.relay.metrics.registry
    failed = metrics.get_sample_value(
        "stomprelay_auth_hook_answers_total", {"outcome": "unavailable"}
    )
    assert failed == 1
