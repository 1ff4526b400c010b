"""Where the webhook events wait: the partition streams as the delivering side sees them.

:class:`RedisPartitions` (streams, leases and cursors in Redis, every step of one
partition in its hash slot, the fenced ones in Lua) and :class:`MemoryPartitions`
(a single node's :class:`~stomprelay.webhook_events.MemoryWebhookLog`), both
:class:`Partitions` (:mod:`stomprelay.webhooks` delivers from them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from stomprelay.errors import BackendUnavailable
from stomprelay.webhook_events import MemoryWebhookLog

if TYPE_CHECKING:
    from stomprelay.cluster.keys import Keys

log = logging.getLogger(__name__)

#: Dead letters kept at most (``XADD MAXLEN ~``).
DEAD_MAX = 100_000

#: One stream entry: (entry id, event JSON).
Entry = tuple[str, str]


class Partitions(Protocol):
    """What delivering needs of the partition streams.

    ``keep`` takes a free lease or renews one this relay holds (True while it
    holds it); ``done`` is the fenced step after a 2xx or a dead-lettering: it
    deletes ``ids``, moves the cursor to ``cursor`` (unless empty) and renews the
    lease, and does nothing (False) when the lease is not this relay's."""

    leased: bool

    async def read(self, partition: int, count: int, block_ms: int) -> list[Entry]: ...

    async def keep(self, partition: int, token: str, ttl_ms: int) -> bool: ...

    async def holder(self, partition: int) -> str | None: ...

    async def release(self, partition: int, token: str) -> None: ...

    async def done(
        self, partition: int, token: str, ttl_ms: int, ids: Sequence[str], cursor: str
    ) -> bool: ...

    async def dead(self, partition: int, entries: Sequence[Entry], error: str) -> None: ...

    async def pending(self, partition: int) -> int: ...

    async def announce(self, server_id: str, partitions: int, ttl_ms: int) -> list[str]:
        """Say this relay delivers (for ``ttl_ms``) with ``partitions`` partitions; the
        relays that deliver now, this one included."""
        ...

    async def leave(self, server_id: str) -> None:
        """This relay delivers no more (a graceful stop): the others share its part."""
        ...

    async def close(self) -> None: ...


class MemoryPartitions:
    """The single node's partitions (:class:`MemoryWebhookLog`): no leases (one
    process delivers all of them), delivered entries popped from the deque; dead
    letters kept in :attr:`dead_letters` (lost with the process, as everything)."""

    leased = False
    #: Seconds between looks at an empty partition.
    POLL = 0.02

    def __init__(self, log: MemoryWebhookLog, clock_ms: Callable[[], int]) -> None:
        self.log = log
        #: the last DEAD_MAX dead letters, as Redis keeps them (logged as they come)
        self.dead_letters: deque[dict[str, object]] = deque(maxlen=DEAD_MAX)
        self._clock_ms = clock_ms

    async def read(self, partition: int, count: int, block_ms: int) -> list[Entry]:
        entries = self.log.entries[partition]
        waited = 0.0
        while not entries and waited * 1000 < block_ms:
            await asyncio.sleep(self.POLL)
            waited += self.POLL
        return [entries[i] for i in range(min(count, len(entries)))]

    async def keep(self, partition: int, token: str, ttl_ms: int) -> bool:
        return True

    async def holder(self, partition: int) -> str | None:
        return None

    async def release(self, partition: int, token: str) -> None:
        return None

    async def done(
        self, partition: int, token: str, ttl_ms: int, ids: Sequence[str], cursor: str
    ) -> bool:
        gone = set(ids)
        entries = self.log.entries[partition]
        # delivered entries are the oldest: drop them from the front, and rebuild the
        # queue only for ids further in (dead-lettered ones between delivered ones)
        while entries and entries[0][0] in gone:
            gone.discard(entries.popleft()[0])
        if gone:
            kept = [entry for entry in entries if entry[0] not in gone]
            entries.clear()
            entries.extend(kept)
        return True

    async def dead(self, partition: int, entries: Sequence[Entry], error: str) -> None:
        for entry_id, event in entries:
            log.warning("webhook event %s dead-lettered (single node): %s", entry_id, error)
            self.dead_letters.append(
                {"id": entry_id, "partition": partition, "error": error, "e": event}
            )

    async def pending(self, partition: int) -> int:
        return len(self.log.entries[partition])

    async def announce(self, server_id: str, partitions: int, ttl_ms: int) -> list[str]:
        return [server_id]

    async def leave(self, server_id: str) -> None:
        return None

    async def close(self) -> None:
        return None


# KEYS[1] the lease; ARGV token, ttl ms. Renews the lease if it is this relay's.
_KEEP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS members hash, partition count; ARGV server id, ttl ms, partitions. Renews this
# relay's entry (until Redis time + ttl), drops expired ones, answers the live ids.
_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
redis.call('SET', KEYS[2], ARGV[3])
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > now then
    table.insert(live, all[i])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
"""

# KEYS[1] the lease; ARGV token. Drops the lease if it is this relay's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS lease, cursor, events; ARGV token, ttl ms, cursor ('' keeps it), ids...
# Only the lease's holder may move the cursor and delete entries (the fence).
_DONE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3])
end
for i = 4, #ARGV, 500 do
  redis.call('XDEL', KEYS[3], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


class RedisPartitions:
    """The partitions as Redis streams (``stomp:webhooks:{w<p>}:events``), each with
    its lease and cursor in the same hash slot, so every step is one key slot
    (Redis Cluster included). ``client`` decodes responses; its errors become
    :class:`BackendUnavailable`."""

    leased = True

    def __init__(self, client: Any, keys: Keys, owns_client: bool = True) -> None:
        self._client = client
        self.keys = keys
        self._owns = owns_client

    async def _call(self, command: Awaitable[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await command
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def read(self, partition: int, count: int, block_ms: int) -> list[Entry]:
        keys = self.keys
        cursor = await self._call(self._client.get(keys.webhook_cursor(partition)))
        answer = await self._call(
            self._client.xread(
                {keys.webhook_events(partition): cursor or "0-0"},
                count=count,
                block=block_ms or None,
            )
        )
        entries: list[Entry] = []
        for _stream, items in answer or []:
            for entry_id, fields in items:
                entries.append((entry_id, fields.get("e", "{}")))
        return entries

    async def keep(self, partition: int, token: str, ttl_ms: int) -> bool:
        lease = self.keys.webhook_lease(partition)
        client = self._client
        if await self._call(client.set(lease, token, nx=True, px=ttl_ms)):
            return True
        return bool(await self._call(client.eval(_KEEP, 1, lease, token, ttl_ms)))

    async def holder(self, partition: int) -> str | None:
        value = await self._call(self._client.get(self.keys.webhook_lease(partition)))
        return str(value) if value is not None else None

    async def release(self, partition: int, token: str) -> None:
        await self._call(self._client.eval(_RELEASE, 1, self.keys.webhook_lease(partition), token))

    async def done(
        self, partition: int, token: str, ttl_ms: int, ids: Sequence[str], cursor: str
    ) -> bool:
        keys = self.keys
        result = await self._call(
            self._client.eval(
                _DONE,
                3,
                keys.webhook_lease(partition),
                keys.webhook_cursor(partition),
                keys.webhook_events(partition),
                token,
                ttl_ms,
                cursor,
                *ids,
            )
        )
        return bool(result)

    async def dead(self, partition: int, entries: Sequence[Entry], error: str) -> None:
        # The dead-letter stream is in another slot: added before the fenced step that
        # deletes the entries, so a crash in between can only leave a dead letter twice.
        for entry_id, event in entries:
            fields = {"e": event, "error": error, "partition": partition, "entry": entry_id}
            await self._call(
                self._client.xadd(self.keys.webhook_dead, fields, maxlen=DEAD_MAX, approximate=True)
            )

    async def pending(self, partition: int) -> int:
        return int(await self._call(self._client.xlen(self.keys.webhook_events(partition))))

    async def announce(self, server_id: str, partitions: int, ttl_ms: int) -> list[str]:
        keys = self.keys
        live = await self._call(
            self._client.eval(
                _ANNOUNCE,
                2,
                keys.webhook_members,
                keys.webhook_partition_count,
                server_id,
                ttl_ms,
                partitions,
            )
        )
        return [str(member) for member in live]

    async def leave(self, server_id: str) -> None:
        await self._call(self._client.hdel(self.keys.webhook_members, server_id))

    async def close(self) -> None:
        if self._owns:
            with contextlib.suppress(Exception):
                await self._client.aclose()
