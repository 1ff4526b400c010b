"""Users' server-side subscriptions in the registry: both backends, one contract.

``POST /api/users/{user}/subscribe`` keeps a destination for a user so that every
session the user opens later gets it; these tests check the set each backend keeps
(one key per user, in the user's Redis Cluster slot, the user percent-encoded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.crc import key_slot

from stomprelay.cluster.keys import Keys, encode_user, hash_tag

if TYPE_CHECKING:
    from conftest import Cluster


async def test_added_present_removed(cluster: Cluster) -> None:
    reg = cluster.registry
    assert await reg.server_subscriptions("alice") == []
    assert await reg.add_server_subscription("alice", "/topic/room/lobby", 8) == "added"
    assert await reg.add_server_subscription("alice", "/topic/news", 8) == "added"
    assert await reg.add_server_subscription("alice", "/topic/room/lobby", 8) == "present"
    assert await reg.server_subscriptions("alice") == ["/topic/news", "/topic/room/lobby"]
    assert await reg.server_subscriptions("bob") == []
    key = cluster.keys.user_subscriptions("alice")
    assert (await cluster.snapshot())[key] == {"/topic/news", "/topic/room/lobby"}

    assert await reg.remove_server_subscription("alice", "/topic/room/lobby")
    assert not await reg.remove_server_subscription("alice", "/topic/room/lobby")
    assert not await reg.remove_server_subscription("bob", "/topic/news")
    assert await reg.server_subscriptions("alice") == ["/topic/news"]
    assert await reg.remove_server_subscription("alice", "/topic/news")
    assert await cluster.snapshot() == {}  # the last one removed: no key left


async def test_a_full_set_keeps_nothing_more(cluster: Cluster) -> None:
    reg = cluster.registry
    for n in range(3):
        assert await reg.add_server_subscription("alice", f"/topic/t{n}", 3) == "added"
    assert await reg.add_server_subscription("alice", "/topic/t9", 3) == "full"
    assert await reg.add_server_subscription("alice", "/topic/t1", 3) == "present"
    assert await reg.server_subscriptions("alice") == ["/topic/t0", "/topic/t1", "/topic/t2"]
    assert await reg.add_server_subscription("bob", "/topic/t0", 0) == "full"
    assert cluster.keys.user_subscriptions("bob") not in await cluster.snapshot()


async def test_users_with_separators_and_braces_keep_their_own_sets(cluster: Cluster) -> None:
    reg = cluster.registry
    odd = ["a/b", "a:b", "{a}", "a b", "é"]
    for user in odd:
        assert await reg.add_server_subscription(user, f"/topic/{len(user)}", 8) == "added"
    for user in odd:
        assert await reg.server_subscriptions(user) == [f"/topic/{len(user)}"]
    assert await reg.server_subscriptions("a") == []
    await cluster.wipe()
    assert await reg.server_subscriptions("a/b") == []


def test_the_key_is_in_the_users_slot_whatever_the_name() -> None:
    keys = Keys()
    assert keys.user_subscriptions("alice") == "stomp:user:{alice}:subscriptions"
    assert keys.user_subscriptions("a/b{c}") == "stomp:user:{a%2Fb%7Bc%7D}:subscriptions"
    for user in ("alice", "a/b", "{x}", "a:b*"):
        key = keys.user_subscriptions(user)
        assert hash_tag(key) == encode_user(user)
        assert key_slot(key.encode()) == key_slot(encode_user(user).encode())
