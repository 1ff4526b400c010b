"""Chat and ordering across relay processes sharing one redis-server (contract 3 and 4)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from clusterhelpers import EVENT_CONTENT_TYPE, check_room_event

pytestmark = [pytest.mark.redis, pytest.mark.node]

ROOM = "lobby"
TOPIC = f"/topic/room/{ROOM}"


def _js_event(event: dict[str, Any], sub: str, **fields: Any) -> bool:
    if event.get("subscription") != sub:
        return False
    try:
        body = json.loads(event.get("body") or "")
    except ValueError:
        return False
    return isinstance(body, dict) and all(body.get(k) == v for k, v in fields.items())


def _py_event(frame: Any, **fields: Any) -> bool:
    if frame.headers.get("destination") != TOPIC:
        return False
    try:
        body = json.loads(frame.body)
    except ValueError:
        return False
    return isinstance(body, dict) and all(body.get(k) == v for k, v in fields.items())


async def test_cross_relay_chat_stompjs_and_stomppy(
    start_relay, stompjs_clients, pystomp_clients
) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")

    js = await stompjs_clients()
    connected = await js.connect(a.ws_url)
    js_sid = connected["headers"]["session"]
    assert connected["headers"]["x-server-id"] == "relay-a"
    await js.subscribe(TOPIC, sub_id="lobby", receipt="r-lobby")
    await js.expect("receipt", lambda e: e["receipt_id"] == "r-lobby")

    py = await pystomp_clients(b, "bob@B")
    py_sid = py.session_id
    assert py.server_id == "relay-b"
    await py.subscribe(TOPIC, "lobby")

    async def js_takes(**fields: Any) -> dict[str, Any]:
        event = await js.expect("message", lambda e: _js_event(e, "lobby", **fields))
        assert event["headers"]["content-type"] == EVENT_CONTENT_TYPE
        assert event["headers"]["destination"] == TOPIC
        return json.loads(event["body"])

    async def py_takes(**fields: Any) -> dict[str, Any]:
        frame = await py.next_message(lambda f: _py_event(f, **fields))
        assert frame.headers["content-type"] == EVENT_CONTENT_TYPE
        assert frame.headers["subscription"] == "lobby"
        return json.loads(frame.body)

    alice = {"session_id": js_sid, "username": "alice", "server_id": "relay-a", "room": ROOM}
    bob = {"session_id": py_sid, "username": "bob", "server_id": "relay-b", "room": ROOM}

    # JOIN events, both ways
    await js.send(f"/app/room/{ROOM}/join", body=json.dumps({"username": "alice"}))
    for take in (js_takes, py_takes):
        check_room_event(
            await take(type="JOIN", username="alice"), type="JOIN", participants=1, **alice
        )
    await py.send(f"/app/room/{ROOM}/join", json.dumps({"username": "bob"}))
    for take in (js_takes, py_takes):
        check_room_event(
            await take(type="JOIN", username="bob"), type="JOIN", participants=2, **bob
        )

    # CHAT events, both ways (the sender sees its own message come back too)
    await js.send(f"/app/room/{ROOM}/message", body=json.dumps({"message": "hi from A"}))
    for take in (js_takes, py_takes):
        event = await take(type="CHAT", message="hi from A")
        check_room_event(event, type="CHAT", message="hi from A", **alice)
    await py.send(f"/app/room/{ROOM}/message", json.dumps({"message": "hello from B"}))
    for take in (js_takes, py_takes):
        event = await take(type="CHAT", message="hello from B")
        check_room_event(event, type="CHAT", message="hello from B", **bob)

    # The participant list, asked on either relay: one identical MESSAGE each
    await js.subscribe(f"/app/room/{ROOM}/participants", sub_id="who", receipt="r-who")
    js_list = await js.expect("message", lambda e: e["subscription"] == "who")
    await py.subscribe(f"/app/room/{ROOM}/participants", "who")
    py_list = await py.next_message(lambda f: f.headers.get("subscription") == "who")
    expected = sorted(
        [
            {"sessionId": js_sid, "username": "alice", "userId": "", "serverId": "relay-a"},
            {"sessionId": py_sid, "username": "bob", "userId": "", "serverId": "relay-b"},
        ],
        key=lambda p: p["username"],
    )
    js_body = json.loads(js_list["body"])
    py_body = json.loads(py_list.body)
    assert sorted(js_body["participants"], key=lambda p: p["username"]) == expected
    assert sorted(py_body["participants"], key=lambda p: p["username"]) == expected
    assert js_body["participants"] == py_body["participants"]

    # Raw SEND to the room topic: body and sender headers relayed as they are
    await js.send(TOPIC, body="raw from A", headers={"x-trace": "t-1", "content-type": "text/x-a"})
    frame = await py.next_message(lambda f: f.body == b"raw from A")
    assert frame.headers["x-trace"] == "t-1"
    assert frame.headers["content-type"] == "text/x-a"
    assert frame.headers["destination"] == TOPIC
    await py.send(TOPIC, b"raw from B", {"x-trace": "t-2", "x-other": "two words"})
    event = await js.expect("message", lambda e: e["body"] == "raw from B")
    assert event["headers"]["x-trace"] == "t-2"
    assert event["headers"]["x-other"] == "two words"
    assert event["headers"]["destination"] == TOPIC

    # The participants subscriptions got exactly one MESSAGE each, nothing since
    await js.expect_no("message", lambda e: e["subscription"] == "who", within=0.3)
    assert [f for f in py.history if f.headers.get("subscription") == "who"] == [py_list]

    # LEAVE by /leave (alice), then by disconnecting (bob)
    await js.send(f"/app/room/{ROOM}/leave")
    for take in (js_takes, py_takes):
        event = await take(type="LEAVE", username="alice")
        check_room_event(event, type="LEAVE", participants=1, reason="left", **alice)
    await py.close()
    event = await js_takes(type="LEAVE", username="bob")
    check_room_event(event, type="LEAVE", participants=0, reason="disconnected", **bob)


async def test_room_order_is_identical_for_every_subscriber(start_relay, stomp_clients) -> None:
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    topic = "/topic/room/r1"
    subscribers = [
        await stomp_clients(relay, name=f"sub{i}@{relay.server_id}")
        for relay in (a, b)
        for i in range(2)
    ]
    for client in subscribers:
        await client.subscribe(topic, "r1")
    publishers = [
        await stomp_clients(a, name="p1@A"),
        await stomp_clients(a, name="p2@A"),
        await stomp_clients(b, name="p3@B"),
    ]
    per_publisher = 100

    async def publish(index: int) -> None:
        client = publishers[index]
        for seq in range(per_publisher):
            await client.send(topic, f"p{index + 1}-{seq:03d}", [("x-seq", str(seq))])
            if seq % 7 == index:
                await asyncio.sleep(0.001)

    await asyncio.gather(*(publish(i) for i in range(3)))
    total = per_publisher * len(publishers)
    received = await asyncio.gather(*(c.collect(total, "r1", timeout=20) for c in subscribers))
    sequences = [[f.body.decode() for f in frames] for frames in received]
    reference = sequences[0]
    for client, sequence in zip(subscribers, sequences, strict=True):
        assert sequence == reference, f"{client.name} saw another order than {subscribers[0].name}"
    # every message exactly once, each publisher's messages in its own order
    assert sorted(reference) == sorted(f"p{i}-{s:03d}" for i in (1, 2, 3) for s in range(100))
    for i in (1, 2, 3):
        mine = [m for m in reference if m.startswith(f"p{i}-")]
        assert mine == sorted(mine)
    message_ids = [f.get("message-id") for f in received[0]]
    assert len(set(message_ids)) == total
    # nothing extra arrives afterwards
    for client in subscribers:
        await client.expect_no_message("r1", within=0.05)


async def test_room_order_with_events_and_chat_mixed_in(start_relay, stomp_clients) -> None:
    """JOIN/LEAVE (event channels), CHAT (registry script) and raw SENDs (bus) of one
    room still reach every subscriber in one order."""
    a = start_relay("relay-a")
    b = start_relay("relay-b")
    room = "r2"
    topic = f"/topic/room/{room}"
    subscribers = [await stomp_clients(r, name=f"sub@{r.server_id}") for r in (a, b, b)]
    for client in subscribers:
        await client.subscribe(topic, "r2")
    publishers = [await stomp_clients(r, name=f"p{i}") for i, r in enumerate((a, a, b))]
    per_publisher = 40

    async def publish(index: int) -> None:
        client = publishers[index]
        await client.join(room, f"user{index}", receipt=False)
        for seq in range(per_publisher):
            text = f"p{index}-{seq:03d}"
            if seq % 2:
                await client.chat(room, text, receipt=False)
            else:
                await client.send(topic, text)
        await client.leave(room, receipt=False)

    await asyncio.gather(*(publish(i) for i in range(3)))
    total = 3 * (per_publisher + 2)
    received = await asyncio.gather(*(c.collect(total, "r2", timeout=20) for c in subscribers))

    def label(frame: Any) -> tuple[int, str]:
        """(publisher index, what): JOIN/LEAVE, or the text of a CHAT or raw SEND."""
        if frame.body.startswith(b"{"):
            event = json.loads(frame.body)
            who = int(event["username"].removeprefix("user"))
            return who, event["message"] if event["type"] == "CHAT" else event["type"]
        text = frame.body.decode()
        return int(text[1 : text.index("-")]), text

    sequences = [[label(f) for f in frames] for frames in received]
    for client, sequence in zip(subscribers, sequences, strict=True):
        assert sequence == sequences[0], f"{client.name} saw another order than the first"
    for index in range(3):
        mine = [what for who, what in sequences[0] if who == index]
        texts = [f"p{index}-{s:03d}" for s in range(per_publisher)]
        assert mine == ["JOIN", *texts, "LEAVE"], mine
