"""Upgrading from the key layout before hash tags (docs/redis.md, "Upgrading").

A relay of this release starting on a Redis that a release before hash tags used
renames the room and topic logs to the tagged names (history and epochs survive, so
resuming clients recover), deletes the old registry keys (their relays are stopped:
every relay is upgraded together) and drops index entries of sessions that no longer
exist; a second start finds nothing to move.
"""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from procs import RedisServer

from stomprelay.cluster.keys import Keys
from stomprelay.cluster.redis_backend import RedisRegistry

pytestmark = pytest.mark.redis


def envelope(n: int) -> str:
    return json.dumps(
        {
            "v": 1,
            "id": f"m{n}",
            "origin": "old",
            "destination": "/topic/room/lobby",
            "headers": [],
            "body": f"hello {n}",
            "encoding": "utf-8",
            "ts": 1,
        }
    )


async def test_old_names_are_moved_once(redis_server: RedisServer) -> None:
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await raw.flushall()
    # what a relay of the release before hash tags left behind
    for n in (1, 2, 3):
        await raw.xadd("stomp:history:room:lobby", {"i": f"m{n}", "e": envelope(n)}, id=f"{n}-0")
        await raw.zadd("stomp:history:room:lobby:ids", {f"m{n}": n})
    await raw.hset("stomp:history:room:lobby:meta", mapping={"epoch": "E-old", "seq": 3})
    await raw.xadd("stomp:history:topic:news", {"i": "t1", "e": envelope(9)}, id="1-0")
    await raw.hset("stomp:history:topic:news:meta", mapping={"epoch": "E-news", "seq": 1})
    await raw.hset("stomp:sessions:abc", mapping={"server-id": "old-relay", "rooms": "lobby"})
    await raw.sadd("stomp:rooms:lobby:participants", "abc")
    await raw.hset("stomp:rooms:lobby:info", mapping={"participants": 1})
    await raw.set("stomp:users:abc:current_room", "lobby")
    await raw.set("stomp:servers:old-relay:heartbeat", "x")
    await raw.sadd("stomp:servers:old-relay:sessions", "abc")
    await raw.sadd("stomp:sessions:active", "abc")
    await raw.sadd("stomp:servers:active", "old-relay")
    await raw.hset("stomp:users:suspended", "mallory", "99999999999999")

    registry = RedisRegistry(redis_server.url, Keys())
    try:
        moved = await registry.migrate()
        assert moved == 11
        keys = set(await raw.keys("stomp:*"))
        assert keys == {
            "stomp:history:room:{lobby}",
            "stomp:history:room:{lobby}:ids",
            "stomp:history:room:{lobby}:meta",
            "stomp:history:topic:{news}",
            "stomp:history:topic:{news}:meta",
            # an index entry of a relay is left to the reaper (no heartbeat: reaped)
            "stomp:servers:active",
            # operators' suspensions are not per-relay state: they stay
            "stomp:users:suspended",
        }
        read = await registry.log.read("room:lobby", 0, 10)
        assert read.epoch == "E-old"
        assert [e.body for e in read.entries] == [b"hello 1", b"hello 2", b"hello 3"]
        assert (await registry.log.read("topic:news", 0, 10)).epoch == "E-news"
        assert await registry.migrate() == 0
        # the dead relay's index entry is reaped like any dead relay's
        (dead,) = await registry.dead_servers()
        assert await registry.reap(dead, "new-relay", 1, "ev") is None
        assert await raw.smembers("stomp:servers:active") == set()
    finally:
        await registry.close()
        await raw.aclose()


async def test_a_new_name_already_there_wins(redis_server: RedisServer) -> None:
    """A log already written under the new name (a relay of this release ran first)
    is kept; the stale old one is dropped."""
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await raw.flushall()
    await raw.hset("stomp:history:room:lobby:meta", mapping={"epoch": "E-old", "seq": 3})
    await raw.hset("stomp:history:room:{lobby}:meta", mapping={"epoch": "E-new", "seq": 1})
    registry = RedisRegistry(redis_server.url, Keys())
    try:
        assert await registry.migrate() == 1
        assert await raw.keys("stomp:*") == ["stomp:history:room:{lobby}:meta"]
        assert await raw.hget("stomp:history:room:{lobby}:meta", "epoch") == "E-new"
    finally:
        await registry.close()
        await raw.aclose()
