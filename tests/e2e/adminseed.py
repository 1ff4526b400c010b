"""A large registry written straight into Redis, for the dashboard's test and benchmark.

The keys are the registry's own (contract section 4, names from
:class:`~stomprelay.cluster.keys.Keys`): ``rooms`` rooms, each with an info hash and
a participants set, and ``sessions`` sessions of a relay that is not running (so no
reaper takes them: it never registered), each in the active set, its user's index
and its relay's set. Rooms ``room-00000`` ... in order of activity, the last one the
most recent; sessions of users ``user-00000`` ...
"""

from __future__ import annotations

import time

import redis

from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import SessionRecord

#: The relay the seeded sessions belong to (never started).
SEEDED_SERVER = "seeded-relay"
#: Members of each seeded room.
ROOM_MEMBERS = 3
#: Commands per pipeline flush.
_CHUNK = 5000


def room_name(index: int) -> str:
    return f"room-{index:05d}"


def user_name(index: int) -> str:
    return f"user-{index:05d}"


def seed_registry(url: str, rooms: int, sessions: int, keys: Keys | None = None) -> None:
    """Write ``rooms`` rooms and ``sessions`` sessions (see the module docstring)."""
    keys = keys or Keys()
    client = redis.Redis.from_url(url)
    now = int(time.time() * 1000)
    try:
        pipe = client.pipeline(transaction=False)
        queued = 0

        def flush(force: bool = False) -> None:
            nonlocal pipe, queued
            if queued >= _CHUNK or (force and queued):
                pipe.execute()
                pipe = client.pipeline(transaction=False)
                queued = 0

        for i in range(sessions):
            sid = f"seed{i:012x}"
            room = room_name(i % rooms) if rooms else ""
            record = SessionRecord(
                sid,
                SEEDED_SERVER,
                user_name(i),
                "127.0.0.1",
                "1.2",
                now - 60_000,
                now - 1_000,
                [room] if room else [],
                user_name(i),
            )
            pipe.hset(keys.session(sid), mapping=record.to_fields())  # type: ignore[arg-type]
            pipe.sadd(keys.sessions_active, sid)
            pipe.sadd(keys.user_sessions(record.user), sid)
            pipe.sadd(keys.server_sessions(SEEDED_SERVER), sid)
            if room and i < rooms * ROOM_MEMBERS:
                pipe.sadd(keys.room_participants(room), sid)
            queued += 5
            flush()
        for r in range(rooms):
            members = min(ROOM_MEMBERS, max(0, (sessions - r + rooms - 1) // rooms))
            pipe.hset(
                keys.room_info(room_name(r)),
                mapping={
                    "created-at": str(now - 3_600_000),
                    "last-activity": str(now - 3_600_000 + r),
                    "participants": str(members),
                },
            )
            queued += 1
            flush()
        flush(force=True)
    finally:
        client.close()
