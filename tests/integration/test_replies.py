"""Request/reply on a single node, in memory (docs/protocol.md, "Request/reply"):
``reply-to:/temp-queue/{name}`` rewritten to an unguessable ``/reply-queue/``, replies
delivered to the requesting session only and without a SUBSCRIBE, dropped and counted
once the session has ended, and every refusal an ERROR."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable

import pytest
from clusterhelpers import eventually
from stompclient import StompClient, StompClientError

from stomprelay.stomp.frames import Frame
from stomprelay.transport import RelayServer

RPC = "/topic/rpc"
ANSWERS = "/temp-queue/answers"


def replies(server: RelayServer, outcome: str) -> float:
    value = server.relay.metrics.registry.get_sample_value(
        "stomprelay_replies_total", {"outcome": outcome}
    )
    return value or 0.0


def temp_queues(server: RelayServer) -> float:
    return server.relay.metrics.registry.get_sample_value("stomprelay_temp_queues") or 0.0


async def ask(requester: StompClient, responder: StompClient, body: str, corr: str) -> str:
    """Send a request with ``reply-to:/temp-queue/answers``; the reply-to the responder saw."""
    await requester.send(RPC, body, [("reply-to", ANSWERS), ("correlation-id", corr)], receipt=True)
    request = await responder.next_message("rpc", lambda f: f.get("correlation-id") == corr)
    assert request.body == body.encode()
    reply_to = request.get("reply-to") or ""
    return reply_to


async def test_a_reply_reaches_the_requesting_session_only_without_a_subscribe(
    make_relay, clients
) -> None:
    server = await make_relay()
    responder = await clients(server, name="responder")
    await responder.subscribe(RPC, "rpc")
    requester = await clients(server, name="requester")
    other = await clients(server, name="other")

    reply_to = await ask(requester, responder, "2+2", "c1")
    assert reply_to.startswith("/reply-queue/")
    token = reply_to.removeprefix("/reply-queue/")
    assert "answers" not in token
    assert requester.session_id not in token
    assert temp_queues(server) == 1

    # another session naming the same temporary queue gets a queue of its own
    other_reply_to = await ask(other, responder, "3+3", "c2")
    assert other_reply_to.startswith("/reply-queue/")
    assert other_reply_to != reply_to
    assert temp_queues(server) == 2

    await responder.send(reply_to, "4", [("correlation-id", "c1")], receipt=True)
    frame = await requester.next_message(ANSWERS)
    assert frame.body == b"4"
    assert frame.get("destination") == ANSWERS
    assert frame.get("subscription") == ANSWERS
    assert frame.get("correlation-id") == "c1"
    assert frame.get("message-id")
    assert replies(server, "delivered") == 1
    await other.expect_no_message(within=0.3)
    await responder.expect_no_message("rpc", lambda f: f.get("correlation-id") == "c1", 0.1)

    # the same name again in the same session: the same queue, the same reply-to
    assert await ask(requester, responder, "5+5", "c3") == reply_to
    assert temp_queues(server) == 2
    # a reply-to that is not a temporary queue goes to the responder as it is
    await requester.send(RPC, "x", [("reply-to", "/topic/elsewhere"), ("correlation-id", "c4")])
    plain = await responder.next_message("rpc", lambda f: f.get("correlation-id") == "c4")
    assert plain.get("reply-to") == "/topic/elsewhere"


async def test_replies_to_an_ended_session_are_dropped_and_counted(make_relay, clients) -> None:
    server = await make_relay(server_id="relay-one")
    responder = await clients(server, name="responder")
    await responder.subscribe(RPC, "rpc")
    requester = await clients(server, name="requester")
    reply_to = await ask(requester, responder, "slow question", "c1")
    assert temp_queues(server) == 1

    await requester.disconnect()
    await eventually(lambda: temp_queues(server) == 0)
    await responder.send(reply_to, "too late", receipt=True)
    await eventually(lambda: replies(server, "dropped") == 1)

    # a well-formed token this relay never made: dropped and counted the same way
    relay_part = base64.urlsafe_b64encode(b"relay-one").rstrip(b"=").decode()
    forged = f"/reply-queue/{relay_part}.{secrets.token_urlsafe(16)}"
    await responder.send(forged, "guess", receipt=True)
    await eventually(lambda: replies(server, "dropped") == 2)
    assert replies(server, "delivered") == 0
    # the responder is not told (as RabbitMQ drops an unroutable message)
    assert not responder.errors


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (("SEND", "/temp-queue/answers"), "Reply-only destination"),
        (("SUBSCRIBE", "/temp-queue/answers"), "Reply-only destination"),
        (("SUBSCRIBE", "/reply-queue/cmVsYXk.AAAAAAAAAAAAAAAAAAAAAA"), "Send-only destination"),
        (("SEND", "/reply-queue/not-a-token"), "Invalid destination"),
        (("SEND", "/reply-queue/%%%.AAAAAAAAAAAAAAAAAAAAAA"), "Invalid destination"),
        (("REPLY-TO", "/temp-queue/no spaces"), "Invalid queue name"),
        (("REPLY-TO", "/temp-queue/"), "Invalid queue name"),
    ],
)
async def test_misused_temporary_and_reply_queues_are_errors(
    make_relay, clients, frame: tuple[str, str], message: str
) -> None:
    server = await make_relay()
    client = await clients(server)
    kind, destination = frame
    act: Awaitable[object]
    if kind == "SUBSCRIBE":
        act = client.subscribe(destination, "s")
    elif kind == "SEND":
        act = client.send(destination, "x", receipt=True)
    else:
        act = client.send(RPC, "x", [("reply-to", destination)], receipt=True)
    with pytest.raises(StompClientError):
        await act
    assert client.errors[0].get("message") == message
    assert await client.wait_closed() is not None
    assert temp_queues(server) == 0


async def test_a_session_holds_at_most_max_temp_queues(make_relay, clients) -> None:
    server = await make_relay(max_temp_queues=2)
    client = await clients(server)
    for name in ("a", "b", "a", "b"):
        await client.send(RPC, "x", [("reply-to", f"/temp-queue/{name}")], receipt=True)
    assert temp_queues(server) == 2
    with pytest.raises(StompClientError):
        await client.send(RPC, "x", [("reply-to", "/temp-queue/c")], receipt=True)
    assert client.errors[0].get("message") == "Too many temporary queues"
    await eventually(lambda: temp_queues(server) == 0)


async def test_a_request_sent_in_a_transaction_is_rewritten_at_commit(make_relay, clients) -> None:
    server = await make_relay()
    responder = await clients(server, name="responder")
    await responder.subscribe(RPC, "rpc")
    requester = await clients(server, name="requester")
    await requester.send_frame(Frame("BEGIN", (("transaction", "t1"),)))
    await requester.send(RPC, "in tx", [("reply-to", ANSWERS), ("transaction", "t1")])
    await requester.send_frame(Frame("COMMIT", (("transaction", "t1"),)))
    request = await responder.next_message("rpc")
    reply_to = request.get("reply-to") or ""
    assert reply_to.startswith("/reply-queue/")
    await responder.send(reply_to, "done", receipt=True)
    assert (await requester.next_message(ANSWERS)).body == b"done"
