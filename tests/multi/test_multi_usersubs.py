"""Server-side subscriptions and the disconnect route across relay processes on one
Redis (contract section 10): a user's sessions on several relays, one that connects
later, and a relay that stalls (SIGSTOP) or dies (SIGKILL) during a call.

The single-node (memory backend) cases and bad input are in
``tests/integration/test_usersubs.py``.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from clusterhelpers import PyStompClient, api_post
from procs import RelayProcess
from stompclient import StompClient

from stomprelay.usersubs import NOTICE_DESTINATION, subscription_id

TOKEN = "api-s3cret"
#: A relay that does not answer is given up on after this (seconds).
CONFIRM = "1"
API = ["--admin-token", TOKEN, "--api-confirm-timeout", CONFIRM]
LOBBY = "/topic/room/lobby"
SUB = subscription_id(LOBBY)


async def call(relay: RelayProcess, user: str, action: str, payload: Any) -> tuple[int, Any]:
    return await api_post(relay.http, f"/api/users/{user}/{action}", payload, TOKEN)


def notice(frame: Any) -> dict[str, Any]:
    assert frame.get("destination") == NOTICE_DESTINATION
    body: dict[str, Any] = json.loads(frame.body)
    return body


async def test_a_users_sessions_on_every_relay_now_and_later(
    start_relay: Any, stomp_clients: Any
) -> None:
    a = start_relay("A", extra=API)
    b = start_relay("B", extra=API)
    a1 = await stomp_clients(a, login="alice", name="a1")
    a2 = await stomp_clients(b, login="alice", name="a2")
    carol = await stomp_clients(a, login="carol", name="carol")
    bob = await stomp_clients(b, login="bob", name="bob")
    for alice in (a1, a2):
        await alice.subscribe(NOTICE_DESTINATION, "notices")
    watch = await carol.subscribe(LOBBY)  # carol subscribes herself: she sees every one

    status, body = await call(a, "alice", "subscribe", {"destination": LOBBY})
    assert status == 200, body
    assert body == {"user": "alice", "destination": LOBBY, "subscription": SUB, "sessions": 2}
    for alice in (a1, a2):
        told = notice(await alice.next_message("notices"))
        assert told == {"action": "subscribe", "destination": LOBBY, "subscription": SUB}

    await bob.send(LOBBY, "one", receipt=True)
    for alice in (a1, a2):
        message = await alice.next_message(SUB)
        assert (message.get("destination"), message.body) == (LOBBY, b"one")

    # a third session, on the relay that did not take the call
    a3 = await stomp_clients(b, login="alice", name="a3")
    await a3.subscribe(NOTICE_DESTINATION, "notices")
    assert notice(await a3.next_message("notices"))["action"] == "subscribe"
    await bob.send(LOBBY, "two", receipt=True)
    for alice in (a1, a2, a3):
        assert (await alice.next_message(SUB)).body == b"two"
    assert carol.received(SUB) == []  # carol is not alice
    assert [f.body for f in carol.received(watch)] == [b"one", b"two"]

    status, body = await call(b, "alice", "unsubscribe", {"destination": LOBBY})
    assert (status, body["sessions"]) == (200, 3), body
    for alice in (a1, a2, a3):
        told = notice(await alice.next_message("notices"))
        assert told == {"action": "unsubscribe", "destination": LOBBY, "subscription": SUB}
        await alice.subscribe(LOBBY, "own")
    await bob.send(LOBBY, "three", receipt=True)
    for alice, had in ((a1, [b"one", b"two"]), (a2, [b"one", b"two"]), (a3, [b"two"])):
        # her own copy and a server-side one come out of the same fan-out
        assert (await alice.next_message("own")).body == b"three"
        assert [f.body for f in alice.received(SUB)] == had


async def test_disconnect_ends_every_session_on_every_relay(
    start_relay: Any, stomp_clients: Any
) -> None:
    a = start_relay("A", extra=API)
    b = start_relay("B", extra=API)
    c = start_relay("C", extra=API)
    alices = [
        await stomp_clients(relay, login="alice", name=f"alice@{relay.server_id}")
        for relay in (a, b, b)
    ]
    bob = await stomp_clients(a, login="bob", name="bob")

    status, body = await call(c, "alice", "disconnect", {"reason": "account closed"})
    assert (status, body) == (200, {"user": "alice", "sessions": 3})
    for alice in alices:
        await alice.wait_closed()
        (error,) = alice.errors
        assert error.get("message") == "session ended by server"
        assert error.body == b"account closed"
    await bob.send("/topic/news", "bob stays", receipt=True)
    assert not bob.errors
    # no suspension: alice comes back
    again = await stomp_clients(b, login="alice", name="again")
    await again.send("/topic/news", "back", receipt=True)


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["SIGSTOP", "SIGKILL"])
async def test_a_relay_that_does_not_answer_is_named_within_the_bound(
    start_relay: Any, stomp_clients: Any, sig: signal.Signals
) -> None:
    # relays are not reaped during the test: the stopped or dead one's session stays
    # listed, so the call must give up on it, not wait for it
    slow = ["--liveness-ttl", "60"]
    a = start_relay("A", extra=[*API, *slow])
    b = start_relay("B", extra=[*API, *slow])
    a1 = await stomp_clients(a, login="alice", name="a1")
    a2 = await stomp_clients(b, login="alice", name="a2")
    await a2.subscribe(NOTICE_DESTINATION, "notices")
    bob = await stomp_clients(a, login="bob", name="bob")

    b.signal(sig)
    status, body = await call(a, "alice", "subscribe", {"destination": LOBBY})
    assert status == 503, body
    assert "confirmed in time" in body["error"]
    assert body["sessions"] == 1  # a1's
    assert body["unconfirmed"] == {"servers": ["B"], "sessions": [a2.session_id]}
    await bob.send(LOBBY, "one", receipt=True)
    assert (await a1.next_message(SUB)).body == b"one"

    if sig == signal.SIGSTOP:
        # the stalled relay acts on the request once it runs again
        b.signal(signal.SIGCONT)
        assert notice(await a2.next_message("notices"))["action"] == "subscribe"
        status, body = await call(a, "alice", "subscribe", {"destination": LOBBY})
        assert (status, body["sessions"]) == (200, 2), body
        await bob.send(LOBBY, "two", receipt=True)
        for alice in (a1, a2):
            assert (await alice.next_message(SUB)).body == b"two"


async def test_stored_subscriptions_are_applied_right_after_connected(
    start_relay: Any, stomp_clients: Any, rdb: Any
) -> None:
    a = start_relay("A", extra=API)
    status, body = await call(a, "alice/ops", "subscribe", {"destination": "/topic/alerts"})
    assert (status, body["sessions"]) == (200, 0)
    assert rdb.smembers("stomp:user:{alice%2Fops}:subscriptions") == {"/topic/alerts"}
    b = start_relay("B", extra=API)
    alice = await StompClient.connect(b.ws_url, login="alice/ops", name="alice")
    try:
        # applied before the frames after CONNECT: this SUBSCRIBE's notices list it
        await alice.subscribe(NOTICE_DESTINATION, "notices")
        assert notice(await alice.next_message("notices"))["destination"] == "/topic/alerts"
        await (await stomp_clients(a, login="bob")).send("/topic/alerts", "fire", receipt=True)
        message = await alice.next_message(subscription_id("/topic/alerts"))
        assert message.body == b"fire"
    finally:
        await alice.close()


async def test_stompjs_and_stomp_py_hear_the_notice_and_get_the_messages(
    start_relay: Any, stomp_clients: Any, stompjs_clients: Any
) -> None:
    """What a stomp.js user sees: the notice on its own subscription of
    /user/queue/subscriptions, then the server-side subscription's MESSAGEs, whose
    ``subscription:server-...`` it does not know, in ``onUnhandledMessage``; a stomp.py
    listener gets both in ``on_message``."""
    a = start_relay("A", extra=API)
    b = start_relay("B", extra=API)
    js = await stompjs_clients()
    await js.connect(b.ws_url, login="alice")
    await js.subscribe(NOTICE_DESTINATION, sub_id="notices", receipt="r-notices")
    await js.expect("receipt", lambda e: e.get("receipt_id") == "r-notices")
    py = PyStompClient(a.port, "alice@stomp.py", login="alice")
    bob = await stomp_clients(a, login="bob", name="bob")
    try:
        await py.connect()
        await py.subscribe(NOTICE_DESTINATION, "py-notices")

        status, body = await call(a, "alice", "subscribe", {"destination": LOBBY})
        assert (status, body["sessions"]) == (200, 2), body
        told = await js.expect("message", lambda e: e["subscription"] == "notices")
        assert json.loads(told["body"]) == {
            "action": "subscribe",
            "destination": LOBBY,
            "subscription": SUB,
        }
        py_told = await py.next_message(lambda f: f.headers["subscription"] == "py-notices")
        assert json.loads(py_told.body)["subscription"] == SUB
        await bob.send(LOBBY, "hello", receipt=True)
        message = await js.expect("unhandled_message")
        assert (message["subscription"], message["body"]) == (SUB, "hello")
        assert message["headers"]["destination"] == LOBBY
        py_message = await py.next_message(lambda f: f.headers["subscription"] == SUB)
        assert (py_message.headers["destination"], py_message.body) == (LOBBY, b"hello")
    finally:
        await py.close()
