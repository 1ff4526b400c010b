"""Request/reply across relays (docs/protocol.md, "Request/reply"): a requester on one
relay names ``reply-to:/temp-queue/{name}``, a responder on another sees an opaque
``/reply-queue/`` and replies to it; the reply comes back to the requesting session
only, through its relay's own channel, with stomp.js and stomp.py on either side."""

from __future__ import annotations

import pytest
from clusterhelpers import eventually

pytestmark = [pytest.mark.redis, pytest.mark.node]

RPC = "/topic/rpc"
ANSWERS = "/temp-queue/answers"
DROPPED = 'stomprelay_replies_total{outcome="dropped"}'
DELIVERED = 'stomprelay_replies_total{outcome="delivered"}'


async def test_stompjs_asks_on_one_relay_and_stomppy_answers_from_another(
    start_relay, stompjs_clients, pystomp_clients, stomp_clients
) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    responder = await pystomp_clients(b, "responder@B")
    await responder.subscribe(RPC, "rpc")
    requester = await stompjs_clients()
    connected = await requester.connect(a.ws_url)
    assert connected["headers"]["x-server-id"] == "relay-a"
    # a second session on the requester's relay, with a temporary queue of the same name
    bystander = await stomp_clients(a, name="bystander@A")
    await bystander.send(RPC, "mine", [("reply-to", ANSWERS)], receipt=True)

    await requester.send(
        RPC, body="what time is it?", headers={"reply-to": ANSWERS, "correlation-id": "q1"}
    )
    request = await responder.next_message(lambda f: f.headers.get("correlation-id") == "q1")
    reply_to = request.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/")
    assert "answers" not in reply_to
    assert connected["headers"]["session"] not in reply_to

    await responder.send(reply_to, "noon", {"correlation-id": "q1"})
    reply = await requester.expect("unhandled_message")
    assert reply["body"] == "noon"
    assert reply["headers"]["destination"] == ANSWERS
    assert reply["headers"]["subscription"] == ANSWERS
    assert reply["headers"]["correlation-id"] == "q1"
    await eventually(lambda: a.metric(DELIVERED) == 1)
    assert b.metric(DELIVERED) == 0
    await bystander.expect_no_message(within=0.3)
    await requester.expect_no("unhandled_message", within=0.2)


async def test_stomppy_asks_on_one_relay_and_stompjs_answers_from_another(
    start_relay, stompjs_clients, pystomp_clients
) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    responder = await stompjs_clients()
    await responder.connect(a.ws_url)
    await responder.subscribe(RPC, sub_id="rpc", receipt="r-rpc")
    await responder.expect("receipt", lambda e: e["receipt_id"] == "r-rpc")
    requester = await pystomp_clients(b, "requester@B")
    assert requester.server_id == "relay-b"

    for n in range(3):  # the same temporary queue serves every request of the session
        await requester.send(RPC, f"question {n}", {"reply-to": ANSWERS, "correlation-id": f"{n}"})
        request = await responder.expect(
            "message", lambda e, n=n: e["headers"].get("correlation-id") == f"{n}"
        )
        reply_to = request["headers"]["reply-to"]
        assert reply_to.startswith("/reply-queue/")
        await responder.send(reply_to, body=f"answer {n}", headers={"correlation-id": f"{n}"})
        reply = await requester.next_message(
            lambda f, n=n: f.headers.get("correlation-id") == f"{n}"
        )
        assert reply.body == f"answer {n}".encode()
        assert reply.headers["destination"] == ANSWERS
        assert reply.headers["subscription"] == ANSWERS
    assert b.metric(DELIVERED) == 3
    assert not requester.errors


async def test_a_reply_to_a_session_that_ended_is_dropped_and_counted_on_its_relay(
    start_relay, stomp_clients
) -> None:
    a, b = start_relay("relay-a"), start_relay("relay-b")
    responder = await stomp_clients(b, name="responder@B")
    await responder.subscribe(RPC, "rpc")
    requester = await stomp_clients(a, name="requester@A")
    await requester.send(RPC, "question", [("reply-to", ANSWERS)], receipt=True)
    request = await responder.next_message("rpc")
    reply_to = request.get("reply-to") or ""
    assert reply_to.startswith("/reply-queue/")
    await eventually(lambda: a.metric("stomprelay_temp_queues") == 1)

    await requester.disconnect()
    await eventually(lambda: a.metric("stomprelay_temp_queues") == 0)
    # a new session on the same relay does not inherit the queue
    newcomer = await stomp_clients(a, name="newcomer@A")
    await responder.send(reply_to, "too late", receipt=True)
    await eventually(lambda: a.metric(DROPPED) == 1)
    assert b.metric(DROPPED) == 0
    assert a.metric(DELIVERED) == 0
    await newcomer.expect_no_message(within=0.3)
