"""User destinations on a single node, in memory (docs/contract.md, section 9): the same
semantics as across relays, the user from a token's ``sub``, the ACL's user rules,
forged ``x-recipient`` headers, and ``userId`` in room events and participant lists."""

from __future__ import annotations

import json

from stomprelay.auth import Acl
from stomprelay.cluster.envelope import Envelope
from stomprelay.destinations import channels_for, parse_destination
from stomprelay.tokens import Authenticator, issue_token
from stomprelay.transport import RelayServer

SECRET = "integration-secret-0123456789abcdef"
INBOX = "/user/queue/messages"


def url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def test_a_single_node_delivers_and_keeps_direct_messages(make_relay, clients) -> None:
    relay = await make_relay()
    alice1 = await clients(relay, login="alice")
    alice2 = await clients(relay, login="alice")
    bob = await clients(relay, login="bob")
    for who in (alice1, alice2, bob):
        await who.subscribe(INBOX, "inbox")
    # a forged x-recipient is stripped; the relay's own says whom bob wrote to
    await bob.send("/user/alice/queue/messages", "one", [("x-recipient", "mallory")], receipt=True)
    for alice in (alice1, alice2):
        (frame,) = await alice.collect(1, "inbox")
        assert (frame.body, frame.get("x-sender"), frame.get("x-recipient")) == (
            b"one",
            "bob",
            None,
        )
        assert frame.get("destination") == INBOX
    (own,) = await bob.collect(1, "inbox")
    assert own.get("x-recipient") == "alice"
    # a note to oneself is kept once
    await alice1.send("/user/alice/queue/messages", "note to self", receipt=True)
    for alice in (alice1, alice2):
        (frame,) = await alice.collect(1, "inbox")
        assert frame.body == b"note to self"
        assert frame.get("x-recipient") is None
        await alice.expect_no_message("inbox", within=0.2)

    # offline: what was sent meanwhile comes back with x-since-offset:0
    await alice1.disconnect()
    await alice2.disconnect()
    await bob.send("/user/alice/queue/messages", "while away", receipt=True)
    back = await clients(relay, login="alice")
    receipt = await back.subscribe_receipt(INBOX, "inbox", [("x-since-offset", "0")])
    assert receipt.get("x-offset") == "3"
    frames = await back.collect(3, "inbox")
    assert [f.body for f in frames] == [b"one", b"note to self", b"while away"]
    assert [f.get("x-offset") for f in frames] == ["1", "2", "3"]

    # an envelope made without the relay's sender (a back-end's publish), with another
    # spelling of the user, reaches the same queue and its subscribers
    spelling = "/user/%61lice/queue/messages"
    route = parse_destination(spelling)
    envelope = Envelope("backend-1", "backend", spelling, (("x-sender", "server"),), b"api", 1)
    await relay.relay.send_envelope(route, channels_for(route, relay.relay.keys)[0], envelope)
    (frame,) = await back.collect(1, "inbox")
    assert (frame.body, frame.get("destination"), frame.get("x-offset")) == (b"api", INBOX, "4")


async def test_the_user_is_the_tokens_sub_and_the_acl_has_user_rules(make_relay, clients) -> None:
    acl = Acl.from_document(
        {
            "rules": [
                {
                    "users": "*",
                    "subscribe": ["/user/queue/*", "/topic/room/*", "/app/room/*/participants"],
                    "send": ["/user/*/queue/messages", "/app/room/*/*"],
                }
            ]
        },
        "test",
    )
    relay = await make_relay(auth=Authenticator(secret=SECRET), acl=acl)
    alice = await clients(
        relay, passcode=issue_token(SECRET, "user-1", name="Alice", ttl=600, claims={})
    )
    bob = await clients(
        relay, login="alice", passcode=issue_token(SECRET, "user-2", name="Bob", ttl=600, claims={})
    )
    await alice.subscribe(INBOX, "inbox")
    await bob.send("/user/user-1/queue/messages", "hi", receipt=True)
    (frame,) = await alice.collect(1, "inbox")
    assert frame.get("x-sender") == "user-2"  # the sub, not the login bob claimed

    # a room's events and participant list carry the user
    await alice.subscribe("/topic/room/lobby", "lobby")
    await alice.join("lobby", "ignored")
    event = await alice.next_event("lobby", type="JOIN")
    assert (event["username"], event["userId"]) == ("Alice", "user-1")
    await alice.subscribe("/app/room/lobby/participants", "who", receipt=False)
    (listing,) = await alice.collect(1, "who")
    (entry,) = json.loads(listing.body)["participants"]
    assert (entry["userId"], entry["username"]) == ("user-1", "Alice")

    # the ACL refuses a queue its rules do not list
    await bob.send("/user/user-1/queue/alerts", "no")
    await bob.wait_closed()
    assert [e.get("message") for e in bob.errors] == ["forbidden"]
