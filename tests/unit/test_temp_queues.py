"""Request/reply without sockets: the ``/temp-queue/`` and ``/reply-queue/`` routes, the
reply token, and the ``reply-to`` rewrite of :class:`~stomprelay.replies.Replies`."""

from __future__ import annotations

import pytest

from stomprelay.cluster.keys import Keys
from stomprelay.destinations import (
    Route,
    channels_for,
    log_id_for,
    parse_destination,
    reply_token,
)
from stomprelay.errors import PolicyError
from stomprelay.replies import Replies
from stomprelay.settings import Settings
from stomprelay.stomp.frames import V10, V12, Frame, PreparedMessage
from stomprelay.stomp.parser import FrameParser
from stomprelay.stomp.session import MessageSent, ServerSession, Subscribed, Subscription

SECRET = "A" * 22


class FakeSink:
    """A connection as Replies reads it (the admit path never touches it)."""

    def __init__(self, session_id: str) -> None:
        self.session = ServerSession(session_id, "relay-a", 0.0, Settings())

    def flush(self) -> None:
        pass


#: The relay's connections: sessions s1 and s2 are open.
SINKS = {"s1": FakeSink("s1"), "s2": FakeSink("s2")}


@pytest.mark.parametrize("server_id", ["relay-a", "vm-3f2a91", "node/1:{x}", "rélai ü"])
def test_a_reply_token_names_its_relay_and_is_routed_on_its_channel(server_id: str) -> None:
    token = reply_token(server_id, SECRET)
    assert server_id not in token
    route = parse_destination(f"/reply-queue/{token}")
    assert route == Route("reply", server_id, token)
    keys = Keys("stomp")
    assert channels_for(route, keys) == (keys.server_channel(server_id),)
    assert log_id_for(route) == ""


def test_a_temporary_queue_has_a_route_and_no_channel() -> None:
    route = parse_destination("/temp-queue/answers.v1")
    assert route == Route("temp", "answers.v1")
    assert channels_for(route, Keys("stomp")) == ()


@pytest.mark.parametrize(
    "destination",
    [
        "/reply-queue/",
        "/reply-queue/abc",
        f"/reply-queue/{reply_token('r', SECRET)}x",  # a secret too long
        f"/reply-queue/{reply_token('r', SECRET)[:-1]}",  # too short
        f"/reply-queue/!!.{SECRET}",
        f"/reply-queue/AA.{SECRET}",  # decodes to a control character
        f"/reply-queue/_w.{SECRET}",  # not UTF-8 once decoded
        "/temp-queue/",
        "/temp-queue/a/b",
        "/temp-queue/" + "x" * 65,
    ],
)
def test_malformed_reply_and_temporary_queues_are_refused(destination: str) -> None:
    with pytest.raises(PolicyError):
        parse_destination(destination)


def send(*headers: tuple[str, str]) -> MessageSent:
    return MessageSent(Frame("SEND", (("destination", "/topic/rpc"), *headers), b"q"))


def test_reply_to_is_rewritten_once_per_session_and_name() -> None:
    queues: list[int] = []
    replies = Replies("relay-a", "stomp:server:relay-a", SINKS, 2, on_queues=queues.append)
    first = replies.admit("s1", send(("reply-to", "/temp-queue/answers"), ("x", "1")))
    reply_to = first.frame.get("reply-to") or ""
    assert reply_to.startswith("/reply-queue/")
    assert parse_destination(reply_to).name == "relay-a"
    # headers keep their order; only the first reply-to (the one that counts) changes
    assert [k for k, _ in first.frame.headers] == ["destination", "reply-to", "x"]
    again = replies.admit("s1", send(("reply-to", "/temp-queue/answers"), ("reply-to", "/x")))
    assert again.frame.headers[1:] == (("reply-to", reply_to), ("reply-to", "/x"))
    other = replies.admit("s2", send(("reply-to", "/temp-queue/answers")))
    assert other.frame.get("reply-to") not in (None, reply_to)
    assert len(replies) == 2
    assert queues == [1, 2]

    replies.forget("s1")
    assert len(replies) == 1
    assert queues[-1] == 1


def test_other_reply_tos_and_frames_pass_unchanged() -> None:
    replies = Replies("relay-a", "stomp:server:relay-a", SINKS, 4)
    plain = send(("reply-to", "/queue/answers"))
    assert replies.admit("s1", plain) is plain
    bare = send()
    assert replies.admit("s1", bare) is bare
    subscribed = Subscribed(Subscription("1", "/topic/rpc", "auto"))
    assert replies.admit("s1", subscribed) is subscribed
    assert len(replies) == 0


def test_a_session_holds_at_most_its_limit_of_temporary_queues() -> None:
    replies = Replies("relay-a", "stomp:server:relay-a", SINKS, 1)
    replies.admit("s1", send(("reply-to", "/temp-queue/a")))
    with pytest.raises(PolicyError, match="temporary queues"):
        replies.admit("s1", send(("reply-to", "/temp-queue/b")))
    replies.admit("s2", send(("reply-to", "/temp-queue/b")))  # per session


@pytest.mark.parametrize("version", [V10, V12])
def test_a_session_takes_a_reply_without_a_subscription(version: str) -> None:
    session = ServerSession("s1", "relay-a", 0.0, Settings())
    message = PreparedMessage("/temp-queue/answers", "m-1", (("correlation-id", "c1"),), b"42")
    assert session.deliver_reply(message, 0.0) is False  # not connected yet
    connect = Frame("CONNECT", (("accept-version", version), ("host", "h")))
    session.receive_data(connect.serialize(version), 0.0)
    session.data_to_send()  # CONNECTED
    assert session.deliver_reply(message, 1.0) is True
    (data,) = session.data_to_send()
    parser = FrameParser(version=version)
    parser.feed(data)
    frame = parser.next_frame()
    assert frame is not None
    assert frame.command == "MESSAGE"
    assert frame.get("destination") == "/temp-queue/answers"
    assert frame.get("subscription") == "/temp-queue/answers"
    assert frame.get("correlation-id") == "c1"
    assert frame.get("ack") is None
    assert frame.body == b"42"
    session.close("client disconnected")
    assert session.deliver_reply(message, 2.0) is False


def test_a_session_that_ended_meanwhile_gets_no_temporary_queue() -> None:
    replies = Replies("relay-a", "stomp:server:relay-a", SINKS, 4)
    late = replies.admit("gone", send(("reply-to", "/temp-queue/a")))
    assert (late.frame.get("reply-to") or "").startswith("/reply-queue/")
    assert len(replies) == 0
