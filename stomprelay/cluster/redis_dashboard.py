"""The dashboard's store on Redis (:class:`~stomprelay.dashboard.DashboardStore`).

Lists are searched where they live: rooms by a SCAN of their info hashes with the
search text in the MATCH pattern, then one pipelined HMGET of what the list
shows (10,000 rooms are a few hundred kB); sessions from the active set (one
SMEMBERS, paged by id, so only a page's hashes are read) or, searched, from the
users' indexes a SCAN finds (``stomp:user:{*text*}:sessions``). A relay's rings
are two capped lists in its slot (RPUSH, LTRIM, PEXPIRE in one pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stomprelay.cluster.keys import Keys
from stomprelay.cluster.redis_io import as_fields, as_text, guard
from stomprelay.cluster.registry import RoomRecord, SessionRecord
from stomprelay.cluster.samples import (
    MAX_PERIODS,
    RING_TTL,
    Beat,
    Period,
    Ring,
    Sample,
    period_json,
    period_of,
    sample_json,
    sample_of,
)

#: Keys a SCAN call asks Redis to look at (COUNT): fewer round trips on a big keyspace.
SCAN_COUNT = 2000


class RedisDashboardStore:
    """See the module docstring; ``client`` is the registry's (decoded replies)."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self._client = client
        self.keys = keys

    async def _scan(self, pattern: str) -> list[str]:
        async def scan() -> list[str]:
            return [
                as_text(k) async for k in self._client.scan_iter(match=pattern, count=SCAN_COUNT)
            ]

        return await guard(scan())

    async def room_index(self, q: str) -> list[RoomRecord]:
        pattern = self.keys.room_info_matching(q) if q else self.keys.room_info_pattern()
        names = await self._scan(pattern)
        if not names:
            return []
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, "participants", "created-at", "last-activity")
        replies = await guard(pipe.execute())
        head = self.keys.room_info("")[: -len("}:info")]
        rooms = []
        for name, (count, created, active) in zip(names, replies, strict=True):
            if count is None and created is None and active is None:
                continue  # gone between the SCAN and the read
            room_id = name[len(head) : -len("}:info")]
            rooms.append(RoomRecord(room_id, int(count or 0), int(created or 0), int(active or 0)))
        return rooms

    async def session_ids(self, q: str) -> list[str]:
        if not q:
            active = await guard(self._client.smembers(self.keys.sessions_active))
            return [as_text(s) for s in active]
        indexes = await self._scan(self.keys.user_sessions_pattern(q))
        pipe = self._client.pipeline(transaction=False)
        for name in indexes:
            pipe.smembers(name)
        pipe.exists(self.keys.session(q))
        *members, exact = await guard(pipe.execute())
        found = {as_text(s) for group in members for s in group}
        if exact:
            found.add(q)
        return list(found)

    async def sessions_of(self, ids: Sequence[str]) -> list[SessionRecord]:
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.keys.session(sid))
        replies = await guard(pipe.execute())
        return [
            SessionRecord.from_fields(sid, as_fields(fields))
            for sid, fields in zip(ids, replies, strict=True)
            if fields
        ]

    async def beats(self, server_ids: Sequence[str]) -> dict[str, Beat]:
        if not server_ids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for sid in server_ids:
            pipe.pttl(self.keys.server_heartbeat(sid))
            pipe.exists(self.keys.reaper_lock(sid))
        replies = await guard(pipe.execute())
        out = {}
        for i, sid in enumerate(server_ids):
            ttl, locked = int(replies[2 * i]), bool(replies[2 * i + 1])
            out[sid] = Beat(ttl if ttl >= 0 else None, locked)
        return out

    async def push(
        self, server_id: str, samples: Sequence[Sample], periods: Sequence[Period], keep: int
    ) -> None:
        if not samples and not periods:
            return
        ttl_ms = int(RING_TTL * 1000)
        pipe = self._client.pipeline(transaction=False)
        samples_key = self.keys.server_samples(server_id)
        periods_key = self.keys.server_degraded(server_id)
        if samples:
            pipe.rpush(samples_key, *(sample_json(s) for s in samples))
            pipe.ltrim(samples_key, -keep, -1)
        if periods:
            pipe.rpush(periods_key, *(period_json(p) for p in periods))
            pipe.ltrim(periods_key, -MAX_PERIODS, -1)
        # both live while the relay writes, and expire after it is gone
        pipe.pexpire(samples_key, ttl_ms)
        pipe.pexpire(periods_key, ttl_ms)
        await guard(pipe.execute())

    async def forget(self, server_id: str) -> None:
        keys = self.keys
        await guard(
            self._client.delete(keys.server_samples(server_id), keys.server_degraded(server_id))
        )

    async def rings(self, server_ids: Sequence[str]) -> dict[str, Ring]:
        if not server_ids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for sid in server_ids:
            pipe.lrange(self.keys.server_samples(sid), 0, -1)
            pipe.lrange(self.keys.server_degraded(sid), 0, -1)
        replies = await guard(pipe.execute())
        out = {}
        for i, sid in enumerate(server_ids):
            samples = [s for s in map(sample_of, map(as_text, replies[2 * i])) if s is not None]
            periods = [p for p in map(period_of, map(as_text, replies[2 * i + 1])) if p]
            out[sid] = Ring(samples, periods)
        return out
