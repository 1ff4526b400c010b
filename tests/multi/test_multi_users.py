"""User destinations across relays (docs/contract.md, section 9): routed to the
relays that hold the user's sessions, kept in the user's inbox log, resumed."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from clusterhelpers import eventually

pytestmark = pytest.mark.redis

INBOX = "/user/queue/messages"
ENVELOPES = "stomprelay_user_envelopes_received_total"


def numsub(rdb: redis.Redis, channel: str) -> int:
    """Relays subscribed to ``channel`` (PUBSUB NUMSUB)."""
    return int(dict(rdb.pubsub_numsub(channel))[channel])


async def test_a_dm_reaches_every_session_of_its_user_and_no_other_relay(
    start_relay, stomp_clients, rdb
) -> None:
    a, b, c = start_relay("relay-a"), start_relay("relay-b"), start_relay("relay-c")
    alice_a = await stomp_clients(a, login="alice", name="alice@a")
    alice_b = await stomp_clients(b, login="alice", name="alice@b")
    carol = await stomp_clients(a, login="carol", name="carol")
    bob = await stomp_clients(c, login="bob", name="bob")
    for client in (alice_a, alice_b, carol, bob):
        await client.subscribe(INBOX, "inbox")
    # relays a and b listen to alice's channel, c does not
    assert numsub(rdb, "stomp:broadcast:user:{alice}") == 2
    assert numsub(rdb, "stomp:broadcast:user:{bob}") == 1
    before = c.metric(ENVELOPES)

    await bob.send("/user/alice/queue/messages", "hi alice", [("x-kind", "dm")], receipt=True)

    for alice in (alice_a, alice_b):
        (frame,) = await alice.collect(1, "inbox")
        assert frame.body == b"hi alice"
        assert frame.get("destination") == INBOX
        assert frame.get("x-sender") == "bob"
        assert frame.get("x-sender-session") == bob.session_id
        assert frame.get("x-kind") == "dm"
        assert frame.get("x-offset") == "1"
        assert frame.get("x-epoch")
        assert frame.get("x-recipient") is None
    # bob's own inbox keeps his side of the conversation
    (mine,) = await bob.collect(1, "inbox")
    assert mine.body == b"hi alice"
    assert mine.get("x-recipient") == "alice"
    assert mine.get("x-sender") == "bob"
    await carol.expect_no_message("inbox")
    for alice in (alice_a, alice_b):
        await alice.expect_no_message("inbox", within=0.2)
        assert len(alice.received("inbox")) == 1
    # relay-c heard bob's copy (it holds bob), never alice's message
    assert c.metric(ENVELOPES) - before == 1
    assert a.metric(ENVELOPES) >= 1
    assert b.metric(ENVELOPES) >= 1

    # alice's last session on relay-b goes: relay-b stops listening to her channel
    await alice_b.disconnect()
    await eventually(lambda: numsub(rdb, "stomp:broadcast:user:{alice}") == 1)


async def test_an_offline_user_resumes_what_was_sent_meanwhile(start_relay, stomp_clients) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    alice = await stomp_clients(a, login="alice")
    receipt = await alice.subscribe_receipt(INBOX, "inbox", [("x-since-offset", "0")])
    epoch = receipt.get("x-epoch") or ""
    bob = await stomp_clients(b, login="bob")
    await bob.send("/user/alice/queue/messages", "first", receipt=True)
    (first,) = await alice.collect(1, "inbox")
    seen = int(first.get("x-offset") or 0)
    epoch = first.get("x-epoch") or epoch
    await alice.disconnect()

    for i in range(3):
        await bob.send("/user/alice/queue/messages", f"while away {i}", receipt=True)

    alice = await stomp_clients(b, login="alice")
    receipt = await alice.subscribe_receipt(
        INBOX, "inbox", [("x-since-offset", str(seen)), ("x-since-epoch", epoch)]
    )
    assert receipt.get("x-recovered") == "true"
    assert receipt.get("x-offset") == str(seen + 3)
    frames = await alice.collect(3, "inbox")
    assert [f.body for f in frames] == [b"while away 0", b"while away 1", b"while away 2"]
    assert [int(f.get("x-offset") or 0) for f in frames] == [seen + 1, seen + 2, seen + 3]
    await alice.expect_no_message("inbox", within=0.3)

    # x-history works on an inbox as on a room
    again = await stomp_clients(a, login="alice")
    await again.subscribe_receipt(INBOX, "last", [("x-history", "2")])
    frames = await again.collect(2, "last")
    assert [f.body for f in frames] == [b"while away 1", b"while away 2"]


async def test_a_resume_while_a_sender_runs_has_no_gap_and_no_duplicate(
    start_relay, stomp_clients
) -> None:
    """The rooms' seam rules on a user's inbox, across relays: alice resumes on relay-b
    while bob keeps writing to her from relay-a. After her offset she gets every message
    once, in offset order, with the ids her live session on relay-a saw."""
    fast = ["--frame-rate", "0"]  # the sender outruns the per-session rate limit
    a, b = start_relay("relay-a", extra=fast), start_relay("relay-b", extra=fast)
    bob = await stomp_clients(a, login="bob")
    live = await stomp_clients(a, login="alice", name="alice-live")
    await live.subscribe(INBOX, "inbox")
    for i in range(10):
        await bob.send("/user/alice/queue/messages", f"m{i}", receipt=True)
    frames = await live.collect(10, "inbox")
    epoch, resume_from = frames[0].get("x-epoch") or "", 5

    stop = asyncio.Event()

    async def keep_sending() -> None:
        i = 100
        while not stop.is_set():
            await bob.send("/user/alice/queue/messages", f"m{i}", receipt=True)
            i += 1

    runner = asyncio.create_task(keep_sending())
    back = await stomp_clients(b, login="alice", name="alice-back")
    receipt = await back.subscribe_receipt(
        INBOX, "inbox", [("x-since-offset", str(resume_from)), ("x-since-epoch", epoch)]
    )
    assert receipt.get("x-recovered") == "true"
    await asyncio.sleep(0.3)
    stop.set()
    await runner
    await bob.send("/user/alice/queue/messages", "marker", receipt=True)
    await live.next_message("inbox", lambda f: f.body == b"marker")
    await back.next_message("inbox", lambda f: f.body == b"marker")
    watched = [f for f in live.received("inbox") if int(f.get("x-offset") or 0) > resume_from]
    got = back.received("inbox")
    offsets = [int(f.get("x-offset") or 0) for f in got]
    assert offsets == list(range(resume_from + 1, resume_from + 1 + len(got)))
    assert [f.get("message-id") for f in got] == [f.get("message-id") for f in watched]
    assert len(got) > 10  # the 5 replayed, those sent during the seam, the marker


async def test_a_user_never_seen_resumes_from_zero_and_is_recovered(
    start_relay, stomp_clients
) -> None:
    """``x-since-offset:0`` with no epoch asks for everything: a user who was never
    online gets what was sent and ``x-recovered:true`` while nothing was trimmed,
    ``false`` once the log no longer starts at offset 1."""
    small = ["--history-size", "2", "--history-min-age", "0"]
    a, b = start_relay("relay-a", extra=small), start_relay("relay-b", extra=small)
    bob = await stomp_clients(a, login="bob")
    for i in range(2):
        await bob.send("/user/newcomer/queue/messages", f"before {i}", receipt=True)
    newcomer = await stomp_clients(b, login="newcomer")
    receipt = await newcomer.subscribe_receipt(INBOX, "inbox", [("x-since-offset", "0")])
    assert (receipt.get("x-recovered"), receipt.get("x-offset")) == ("true", "2")
    frames = await newcomer.collect(2, "inbox")
    assert [f.body for f in frames] == [b"before 0", b"before 1"]

    for i in range(4):  # past --history-size: the oldest are trimmed
        await bob.send("/user/late/queue/messages", f"m{i}", receipt=True)
    late = await stomp_clients(b, login="late")
    receipt = await late.subscribe_receipt(INBOX, "inbox", [("x-since-offset", "0")])
    assert receipt.get("x-recovered") == "false"


async def test_forbidden_user_destinations(start_relay, stomp_clients) -> None:
    a = start_relay("relay-a")
    cases = [
        ("SUBSCRIBE", "/user/bob/queue/messages", "alice"),
        ("SEND", "/user/queue/messages", "alice"),
        ("SEND", "/user/bob/queue/messages", None),
        ("SUBSCRIBE", "/user/queue/messages", None),
    ]
    for command, destination, login in cases:
        client = await stomp_clients(a, login=login)
        if command == "SEND":
            await client.send(destination, "x")
        else:
            await client.subscribe(destination, receipt=False)
        await client.wait_closed()
        (error,) = client.errors
        assert error.get("message") == "forbidden", (command, destination, login)


async def test_the_registry_lists_a_users_sessions(start_relay, stomp_clients, rdb) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    one = await stomp_clients(a, login="al/ice")
    two = await stomp_clients(b, login="al/ice")
    key = "stomp:user:{al%2Fice}:sessions"
    assert rdb.smembers(key) == {one.session_id, two.session_id}
    assert rdb.hget(f"stomp:sessions:{{{one.session_id}}}", "user") == "al/ice"
    # a slash is %2F in the destination
    bob = await stomp_clients(a, login="bob")
    await one.subscribe(INBOX, "inbox")
    await bob.send("/user/al%2Fice/queue/messages", json.dumps({"m": 1}), receipt=True)
    (frame,) = await one.collect(1, "inbox")
    assert json.loads(frame.body) == {"m": 1}
    await two.close()  # vanishes: its relay's disconnect still unlists it
    await eventually(lambda: rdb.smembers(key) == {one.session_id})


async def test_stomp_js_and_stomp_py_exchange_direct_messages(
    start_relay, stompjs_clients, pystomp_clients
) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    js = await stompjs_clients()
    await js.connect(a.ws_url, login="alice")
    await js.subscribe(INBOX, sub_id="inbox", receipt="r-inbox")
    await js.expect("receipt", lambda e: e["receipt_id"] == "r-inbox")
    py = await pystomp_clients(b, "bob", login="bob")
    await py.subscribe(INBOX, "inbox")

    # stomp.py -> stomp.js, across relays
    await py.send("/user/alice/queue/messages", "hello from stomp.py", {"x-kind": "dm"})
    event = await js.expect("message", lambda e: e["subscription"] == "inbox")
    assert event["body"] == "hello from stomp.py"
    assert event["headers"]["destination"] == INBOX
    assert event["headers"]["x-sender"] == "bob"
    assert event["headers"]["x-kind"] == "dm"
    assert event["headers"]["x-offset"] == "1"
    mine = await py.next_message()
    assert mine.headers["x-recipient"] == "alice"

    # stomp.js -> stomp.py
    await js.send("/user/bob/queue/messages", body="hi from stomp.js")
    frame = await py.next_message(lambda f: f.headers.get("x-sender") == "alice")
    assert frame.body == b"hi from stomp.js"
    assert frame.headers["destination"] == INBOX
    assert "x-recipient" not in frame.headers
    own = await js.expect("message", lambda e: e["headers"].get("x-recipient") == "bob")
    assert own["body"] == "hi from stomp.js"
    await js.expect_no("message", lambda e: e["subscription"] == "inbox", within=0.3)
