"""User destinations without sockets: parsing and percent-encoding, the forbidden
cases, the names of a user's keys and channel, and ACL patterns over them."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from stomprelay.auth import Acl, Identity
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys, encode_user, hash_tag
from stomprelay.destinations import (
    Route,
    canonical,
    channels_for,
    log_id_for,
    parse_destination,
    shown_destination,
    user_destination,
)
from stomprelay.errors import PolicyError
from stomprelay.router import RESERVED_HEADERS, message_headers
from stomprelay.users import UserChannels, check_user_destination, hook_destination

K = Keys()


@pytest.mark.parametrize(
    ("destination", "route"),
    [
        ("/user/queue/messages", Route("user", "", "messages")),
        ("/user/alice/queue/messages", Route("user", "alice", "messages")),
        ("/user/al%2Fice/queue/in.box-1_", Route("user", "al/ice", "in.box-1_")),
        ("/user/al%2fice/queue/x", Route("user", "al/ice", "x")),
        ("/user/%61lice/queue/x", Route("user", "alice", "x")),
        ("/user/z%C3%B6e/queue/x", Route("user", "zöe", "x")),
        ("/user/zöe/queue/x", Route("user", "zöe", "x")),
        ("/user/bob@example.com/queue/x", Route("user", "bob@example.com", "x")),
        ("/user/queue/queue/x", Route("user", "queue", "x")),  # a user named "queue"
        ("/user/a%3A%7Bb%7D%2A/queue/x", Route("user", "a:{b}*", "x")),
    ],
)
def test_user_destinations_parse(destination: str, route: Route) -> None:
    assert parse_destination(destination) == route


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("/user/queue/", "Invalid queue name"),
        ("/user/queue/a:b", "Invalid queue name"),
        ("/user/queue/" + "q" * 65, "Invalid queue name"),
        ("/user/alice/queue/a b", "Invalid queue name"),
        ("/user/al/ice/queue/x", "Unknown destination"),  # a raw slash: one segment too many
        ("/user/alice/topic/x", "Unknown destination"),
        ("/user/alice", "Unknown destination"),
        ("/user/", "Unknown destination"),
        ("/user//queue/x", "Invalid user"),
        ("/user/al%zzice/queue/x", "Invalid user"),
        ("/user/al%/queue/x", "Invalid user"),
        ("/user/a b/queue/x", "Invalid user"),
        ("/user/%FF/queue/x", "Invalid user"),  # not UTF-8 once decoded
        ("/user/a%00b/queue/x", "Invalid user"),  # a control character
        ("/user/" + "u" * 257 + "/queue/x", "Invalid user"),
    ],
)
def test_bad_user_destinations_are_refused(destination: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_destination(destination)
    assert caught.value.message == message


def test_one_canonical_name_and_the_subscribers_spelling() -> None:
    for spelling in (
        "/user/al%2Fice/queue/x",
        "/user/al%2fice/queue/x",
        "/user/%61l%2Fice/queue/x",
    ):
        route = parse_destination(spelling)
        assert canonical(route, spelling) == "/user/al%2Fice/queue/x"
    assert user_destination("bob@example.com", "x") == "/user/bob%40example.com/queue/x"
    assert canonical(Route("room", "lobby"), "/topic/room/lobby") == "/topic/room/lobby"
    assert shown_destination("/user/al%2Fice/queue/inbox") == "/user/queue/inbox"
    assert shown_destination("/topic/room/lobby") == "/topic/room/lobby"
    # every user id round-trips through its encoded name
    for user in ("alice", "al/ice", "a:{b}*", "zöe", "100%", "a b", "~x.y-z_"):
        assert parse_destination(user_destination(user, "q")) == Route("user", user, "q")


def test_keys_of_a_user_are_golden_and_share_one_slot() -> None:
    assert encode_user("al/ice") == "al%2Fice"
    assert encode_user("a:{b}*") == "a%3A%7Bb%7D%2A"
    assert K.user_channel("alice") == "stomp:broadcast:user:{alice}"
    assert K.user_channel("al/ice") == "stomp:broadcast:user:{al%2Fice}"
    assert K.user_sessions("al/ice") == "stomp:user:{al%2Fice}:sessions"
    route = parse_destination("/user/al%2Fice/queue/messages")
    assert log_id_for(route) == "user:al%2Fice:messages"
    assert K.log_keys(log_id_for(route)) == (
        "stomp:history:user:{al%2Fice}:messages",
        "stomp:history:user:{al%2Fice}:messages:meta",
        "stomp:history:user:{al%2Fice}:messages:ids",
    )
    assert channels_for(route, K) == ("stomp:broadcast:user:{al%2Fice}",)
    names = [K.user_channel("al/ice"), K.user_sessions("al/ice"), *K.log_keys(log_id_for(route))]
    assert {hash_tag(n) for n in names} == {"al%2Fice"}
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert K.user_of_channel(K.user_channel("a:{b}*")) == "a:{b}*"
    assert K.user_of_channel(K.room_channel("lobby")) is None
    assert Keys("app").user_channel("bob") == "app:broadcast:user:{bob}"
    # the own queue (before it is resolved to a user) has no channel and no log
    own = parse_destination("/user/queue/messages")
    assert channels_for(own, K) == ()
    assert log_id_for(own) == ""


@pytest.mark.parametrize(
    ("action", "destination", "user"),
    [
        ("subscribe", "/user/bob/queue/messages", "alice"),  # someone else's queue
        ("subscribe", "/user/alice/queue/messages", "alice"),  # own, but by name
        ("send", "/user/queue/messages", "alice"),
        ("send", "/user/bob/queue/messages", ""),
        ("subscribe", "/user/queue/messages", ""),
    ],
)
def test_forbidden_user_destinations(action: str, destination: str, user: str) -> None:
    with pytest.raises(PolicyError) as caught:
        check_user_destination(action, destination, user)
    assert caught.value.message == "forbidden"


def test_allowed_user_destinations_resolve_to_the_users_queue() -> None:
    assert check_user_destination("subscribe", "/user/queue/in", "al/ice") == Route(
        "user", "al/ice", "in"
    )
    assert check_user_destination("send", "/user/bob/queue/in", "alice") == Route(
        "user", "bob", "in"
    )
    assert check_user_destination("send", "/user/alice/queue/in", "alice") == Route(
        "user", "alice", "in"
    )


def test_the_hook_is_asked_about_a_users_queue_by_its_one_spelling() -> None:
    assert hook_destination("/user/b%6Fb/queue/x") == "/user/bob/queue/x"
    assert hook_destination("/user/al%2fice/queue/x") == "/user/al%2Fice/queue/x"
    assert hook_destination("/user/zöe/queue/x") == "/user/z%C3%B6e/queue/x"
    for as_it_is in ("/user/queue/x", "/topic/room/a", "/user/al/ice/queue/x", "/user/%zz/queue/x"):
        assert hook_destination(as_it_is) == as_it_is


def test_x_recipient_is_reserved() -> None:
    assert "x-recipient" in RESERVED_HEADERS
    kept = message_headers((("X-Recipient", "mallory"), ("x-kind", "dm")), b"hi")
    assert ("x-kind", "dm") in kept
    assert all(name.lower() != "x-recipient" for name, _ in kept)


def test_acl_patterns_over_user_destinations() -> None:
    acl = Acl.from_document(
        {
            "rules": [
                {
                    "users": "*",
                    "subscribe": ["/user/queue/*"],
                    "send": ["/user/*/queue/messages", "/user/{user}/queue/notes"],
                },
                {"roles": ["support"], "send": ["/user/*/queue/**"]},
            ]
        },
        "test",
    )
    nobody = set[str]().__contains__
    alice = Identity("al/ice", "Alice", True)
    support = Identity("sam", "Sam", True, roles=frozenset({"support"}))
    assert acl.allows(alice, "subscribe", "/user/queue/messages", nobody)
    assert acl.allows(alice, "send", "/user/bob/queue/messages", nobody)
    assert not acl.allows(alice, "send", "/user/bob/queue/notes", nobody)
    assert acl.allows(alice, "send", "/user/al%2Fice/queue/notes", nobody)  # {user}, encoded
    assert not acl.allows(alice, "send", "/user/bob/queue/alerts", nobody)
    assert acl.allows(support, "send", "/user/bob/queue/alerts", nobody)
    assert not acl.allows(support, "subscribe", "/user/bob/queue/alerts", nobody)


async def test_a_relay_listens_to_a_users_channel_while_it_holds_a_session() -> None:
    heard: list[tuple[str, str]] = []
    counted: list[int] = []
    commands: list[tuple[str, str]] = []

    async def listen(channel: str) -> None:
        heard.append(("listen", channel))

    async def unlisten(channel: str) -> None:
        heard.append(("unlisten", channel))

    users = UserChannels(K, listen, unlisten, on_envelope=lambda: counted.append(1))
    await users.connected("s1", "al/ice")
    await users.connected("s1", "al/ice")  # once per session
    await users.connected("s2", "al/ice")
    await users.connected("s3", "")  # no user, no channel
    assert users.users() == {"al/ice"}
    channel = K.user_channel("al/ice")
    message = Envelope("m1", "r1", "/user/al%2Fice/queue/x", (), b"hi", 0)
    command = Envelope("c1", "r1", "", (), b"{}", 0)
    assert users.received(channel, message) is False  # a message: for the router
    assert users.received(K.room_channel("lobby"), message) is False
    assert users.received(channel, command) is True  # dropped: nobody asked for commands
    users.on_control = lambda user, envelope: commands.append((user, envelope.id))
    assert users.received(channel, command) is True
    assert commands == [("al/ice", "c1")]
    assert len(counted) == 3  # what came on the user's channel only
    await users.disconnected("s1")
    await users.disconnected("s1")
    await users.disconnected("s2")
    await users.disconnected("s3")
    assert heard == [("listen", channel)] * 2 + [("unlisten", channel)] * 2
    assert users.users() == set()


# -- queues (docs/queues.md) ----------------------------------------------------


def test_queue_destinations() -> None:
    assert parse_destination("/queue/jobs") == Route("queue", "jobs")
    assert parse_destination("/queue/jobs.dlq") == Route("queue", "jobs.dlq")
    long = "q" * 64
    assert parse_destination(f"/queue/{long}.dlq") == Route("queue", f"{long}.dlq")
    route = parse_destination("/queue/jobs")
    assert channels_for(route, Keys()) == ()
    assert log_id_for(route) == ""


@pytest.mark.parametrize("name", ["", "a:b", "a b", "{x}", "q" * 65, "a/b", "x*"])
def test_bad_queue_names(name: str) -> None:
    with pytest.raises(PolicyError, match="queue name"):
        parse_destination(f"/queue/{name}")


def test_a_queue_and_its_dead_letters_share_a_slot() -> None:
    keys = Keys()
    assert keys.queue("jobs") == "stomp:queue:{jobs}:jobs"
    assert keys.queue("jobs.dlq") == "stomp:queue:{jobs}:jobs.dlq"
    assert keys.queue_consumers("jobs") == "stomp:queue:{jobs}:jobs:consumers"
    assert keys.queue_names == "stomp:queues"
    slots = {key_slot(k.encode()) for k in (keys.queue("jobs"), keys.queue("jobs.dlq.dlq"))}
    assert len(slots) == 1
