"""``/queue/{name}`` on Redis Streams consumer groups (docs/queues.md).

One stream per queue (``Keys.queue``), one group ``g`` on it, one consumer per
relay (its server id): ``XREADGROUP ... >`` hands each entry to one relay,
which hands it to one of its subscribers. Each step that changes a queue is one
Lua script on the queue's keys and its DLQ's, all with the queue's hash tag, so
the steps run on one Redis, under Sentinel and on Redis Cluster alike. Entries
carry ``e`` (the message's envelope JSON), ``n`` (deliveries so far) and ``x``
(a consumer to avoid, after a NACK).

Blocking reads hold a connection each, so they have a client of their own; the
steps share another.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from stomprelay.bounded import bounded
from stomprelay.cluster.connect import CLOSE_TIMEOUT, COMMAND_TIMEOUT, RedisTarget, make_client
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.queue_store import (
    GROUP,
    QueueItem,
    QueueStats,
    Requeue,
    dead_letter_queue,
)
from stomprelay.cluster.redis_io import as_text, guard
from stomprelay.errors import BackendUnavailable, ProtocolError

log = logging.getLogger(__name__)

#: Entries one release step moves (a dead relay's pending entries, page by page).
RELEASE_PAGE = 500
#: Connections the blocking reads of one relay may hold (one per queue it consumes).
READ_POOL = 256

_LIBRARY = r"""
local function ensure(stream)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, 'g', '0', 'MKSTREAM')
  end
end

local function field(fields, name)
  for j = 1, #fields, 2 do
    if fields[j] == name then return fields[j + 1] end
  end
  return nil
end

-- Move one pending entry: to the end of its queue with n deliveries, or to the
-- dead-letter queue once n reached the most; 1 when it went to the DLQ. An entry
-- deleted meanwhile (XDEL, XTRIM) is only acknowledged: nothing to move, and it
-- must not stay pending (a release would find it again and again).
local function move(stream, dlq, id, n, excluded, most)
  local entry = redis.call('XRANGE', stream, id, id)
  if #entry == 0 then
    redis.call('XACK', stream, 'g', id)
    return 0
  end
  if redis.call('XACK', stream, 'g', id) == 0 then return 0 end
  redis.call('XDEL', stream, id)
  local e = field(entry[1][2], 'e')
  if n >= most then
    ensure(dlq)
    redis.call('XADD', dlq, '*', 'e', e, 'n', 0)
    return 1
  end
  redis.call('XADD', stream, '*', 'e', e, 'n', n, 'x', excluded)
  return 0
end
"""

#: KEYS stream; ARGV most, envelope JSON. 1 stored, 0 full.
PUSH = r"""
ensure(KEYS[1])
local most = tonumber(ARGV[1])
if most > 0 and redis.call('XLEN', KEYS[1]) >= most then return 0 end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[2], 'n', 0)
return 1
"""

#: KEYS stream.
ENSURE = r"""
ensure(KEYS[1])
return 1
"""

#: KEYS stream; ARGV ids. XACK, then XDEL what this step acknowledged.
ACK = r"""
local done = 0
for i = 1, #ARGV do
  if redis.call('XACK', KEYS[1], 'g', ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    done = done + 1
  end
end
return done
"""

#: KEYS stream, dlq; ARGV most, then (id, n, excluded) triples. Returns dead-lettered.
REQUEUE = r"""
local most = tonumber(ARGV[1])
local dead = 0
for i = 2, #ARGV, 3 do
  dead = dead + move(KEYS[1], KEYS[2], ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], most)
end
return dead
"""

#: KEYS stream, dlq, consumers hash; ARGV consumer, most, page. {moved, more}.
RELEASE = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local most = tonumber(ARGV[2])
local page = redis.call('XPENDING', KEYS[1], 'g', '-', '+', tonumber(ARGV[3]), ARGV[1])
for _, p in ipairs(page) do
  local entry = redis.call('XRANGE', KEYS[1], p[1], p[1])
  local n = 1
  if #entry > 0 then n = (tonumber(field(entry[1][2], 'n')) or 0) + 1 end
  move(KEYS[1], KEYS[2], p[1], n, '', most)
end
if #page < tonumber(ARGV[3]) then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'g', ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return {#page, 0}
end
return {#page, 1}
"""

#: KEYS consumers hash; ARGV relay, delta.
CONSUMERS = r"""
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
if count <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return count
"""

#: KEYS stream, dlq, consumers hash. {exists, length, pending, dead, consumers...}
STATS = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0, 0} end
local pending = redis.call('XPENDING', KEYS[1], 'g')[1]
local consumers = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do consumers = consumers + tonumber(v) end
return {1, redis.call('XLEN', KEYS[1]) - pending, pending, redis.call('XLEN', KEYS[2]), consumers}
"""

SCRIPTS = {
    "push": PUSH,
    "ensure": ENSURE,
    "ack": ACK,
    "requeue": REQUEUE,
    "release": RELEASE,
    "consumers": CONSUMERS,
    "stats": STATS,
}


def _item(entry: Any) -> QueueItem | None:
    entry_id, raw = entry
    if isinstance(raw, dict):  # redis-py pairs the fields up
        fields = {as_text(k): v for k, v in raw.items()}
    else:
        fields = {as_text(raw[i]): raw[i + 1] for i in range(0, len(raw), 2)}
    try:
        envelope = Envelope.from_json(fields["e"])
    except (KeyError, ProtocolError):
        log.warning("skipping malformed queue entry %s", as_text(entry_id))
        return None
    return QueueItem(
        as_text(entry_id),
        envelope,
        int(as_text(fields.get("n", b"0")) or 0),
        as_text(fields.get("x", b"")),
    )


class RedisQueues:
    """:class:`~stomprelay.cluster.queue_store.QueueStore` on Redis Streams."""

    def __init__(self, target: RedisTarget | str, keys: Keys, timeout: float = COMMAND_TIMEOUT):
        self.keys = keys
        self.target = RedisTarget.of(target)
        # health_check: a pooled connection idle a second is PINGed first, so one a
        # Redis restart left stale fails the check, not a SEND
        self._client = make_client(self.target, decode=False, health_check=1, timeout=timeout)
        self._timeout = timeout
        self._readers: Any = None
        self._scripts = {
            name: self._client.register_script(_LIBRARY + body) for name, body in SCRIPTS.items()
        }
        #: Queues whose name this relay put into the index already.
        self._indexed: set[str] = set()

    def _reader(self, block_ms: int) -> Any:
        if self._readers is None:
            self._readers = make_client(
                self.target,
                decode=False,
                health_check=1,
                timeout=self._timeout + block_ms / 1000,
                pool_size=READ_POOL,
            )
        return self._readers

    async def _run(self, name: str, keys: Sequence[str], *args: str | int | bytes) -> Any:
        return await guard(self._scripts[name](keys=list(keys), args=list(args)))

    def _keys(self, name: str) -> tuple[str, str, str]:
        k = self.keys
        return k.queue(name), k.queue(dead_letter_queue(name)), k.queue_consumers(name)

    async def _index(self, name: str) -> None:
        if name not in self._indexed:
            await guard(self._client.sadd(self.keys.queue_names, name))
            self._indexed.add(name)

    async def push(self, name: str, envelope: Envelope, max_length: int) -> bool:
        await self._index(name)
        return bool(
            await self._run("push", (self.keys.queue(name),), max_length, envelope.to_json())
        )

    async def push_many(
        self, items: Sequence[tuple[str, Envelope]], max_length: int
    ) -> list[bool | BackendUnavailable]:
        """One pipeline of ``push`` steps (non-transactional: each atomic on its own
        queue, run in order); a script Redis lost is loaded and the batch run again
        (a push already run would then be stored twice, so only before any ran)."""
        for name in {name for name, _ in items}:
            await self._index(name)
        try:
            return await self._push_many(items, max_length)
        except BackendUnavailable as exc:
            if not isinstance(exc.__cause__, RedisConnectionError):
                raise
            # A connection a Redis restart left behind: its commands went to a process
            # that is gone, so none of them ran; once more on fresh connections.
            await self._reset()
            return await self._push_many(items, max_length)

    async def _reset(self) -> None:
        """Drop every pooled connection of the steps' client."""
        with contextlib.suppress(RedisError, OSError):
            if self.target.sharded:
                for node in self._client.get_nodes():
                    await node.disconnect()
            else:
                await self._client.connection_pool.disconnect()

    async def _push_many(
        self, items: Sequence[tuple[str, Envelope]], max_length: int
    ) -> list[bool | BackendUnavailable]:
        script = self._scripts["push"]
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            for name, envelope in items:
                stream = self.keys.queue(name)
                # the raw command: a cluster pipeline routes it by its first key (and
                # refuses evalsha())
                pipe.execute_command(
                    "EVALSHA", script.sha, 1, stream, max_length, envelope.to_json()
                )
            try:
                replies = await guard(pipe.execute(raise_on_error=False))
            finally:
                await pipe.reset()
            if attempt == 1 and all(isinstance(r, NoScriptError) for r in replies):
                await guard(self._client.script_load(script.script))
                continue
            break
        return [
            BackendUnavailable(f"redis: {type(r).__name__}: {r}")
            if isinstance(r, BaseException)
            else bool(r)
            for r in replies
        ]

    async def read(self, name: str, consumer: str, count: int, block_ms: int) -> list[QueueItem]:
        stream = self.keys.queue(name)
        client = self._reader(block_ms)
        call = client.xreadgroup(
            GROUP, consumer, {stream: ">"}, count=count, block=block_ms or None
        )
        try:
            reply = await guard(call)
        except BackendUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, ResponseError) and "NOGROUP" in str(cause):
                # the stream went (FLUSHALL, a failover that lost it): make it again
                await self._index(name)
                await self._run("ensure", (stream,))
                return []
            raise
        out: list[QueueItem] = []
        for _, entries in reply or ():
            for entry in entries:
                item = _item(entry)
                if item is not None:
                    out.append(item)
        return out

    async def ack(self, name: str, ids: Sequence[str]) -> None:
        if ids:
            await self._run("ack", (self.keys.queue(name),), *ids)

    async def requeue(self, name: str, items: Sequence[Requeue], max_deliveries: int) -> int:
        if not items:
            return 0
        args: list[str | int] = [max_deliveries]
        for item in items:
            args += (item.id, item.deliveries, item.excluded)
        return int(await self._run("requeue", self._keys(name)[:2], *args))

    async def release(self, name: str, consumer: str, max_deliveries: int) -> int:
        total = 0
        while True:
            moved, more = await self._run(
                "release", self._keys(name), consumer, max_deliveries, RELEASE_PAGE
            )
            total += int(moved)
            if not int(more):
                return total

    async def consumers(self, name: str, consumer: str, delta: int) -> None:
        await self._index(name)
        await self._run("ensure", (self.keys.queue(name),))
        await self._run("consumers", (self.keys.queue_consumers(name),), consumer, delta)

    async def forget(self, name: str, consumer: str) -> None:
        await guard(self._client.hdel(self.keys.queue_consumers(name), consumer))

    async def consumer_counts(self, name: str) -> dict[str, int]:
        counts = await guard(self._client.hgetall(self.keys.queue_consumers(name)))
        return {as_text(k): int(v) for k, v in counts.items()}

    async def consumer_names(self, name: str) -> list[str]:
        return [who for who, _, _ in await self.consumer_info(name)]

    async def consumer_info(self, name: str) -> list[tuple[str, int, int]]:
        try:
            rows = await guard(self._client.xinfo_consumers(self.keys.queue(name), GROUP))
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, ResponseError):
                return []  # no such stream or group (yet)
            raise
        return sorted((as_text(row["name"]), int(row["pending"]), int(row["idle"])) for row in rows)

    async def names(self) -> list[str]:
        return sorted(as_text(n) for n in await guard(self._client.smembers(self.keys.queue_names)))

    async def stats(self, name: str) -> QueueStats | None:
        reply = await self._run("stats", self._keys(name))
        if not int(reply[0]):
            return None
        length, pending, dead, consumers = (int(v) for v in reply[1:5])
        return QueueStats(name, length, consumers, pending, dead)

    async def close(self) -> None:
        for client in (self._client, self._readers):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await bounded("redis queues: closing", client.aclose(), CLOSE_TIMEOUT)
