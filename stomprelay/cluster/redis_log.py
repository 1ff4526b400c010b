"""Destination logs in Redis Streams (docs/history.md), through the registry's scripts."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from redis.exceptions import NoScriptError

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy, LogSlice
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.redis_io import as_text, guard
from stomprelay.cluster.redis_store import RedisStore
from stomprelay.cluster.webhook_steps import MessageEvent
from stomprelay.errors import BackendUnavailable, ProtocolError

log = logging.getLogger(__name__)

#: How long a relay trusts that a topic's log is admitted under the topic cap (s).
TOPIC_ADMIT_CACHE = 30.0


class RedisLog:
    """Destination logs in Redis Streams (docs/history.md), through the registry's scripts.

    A log's keys share its destination's hash tag; the cap on logged topics is
    a separate index, asked before a topic's first append (and every
    :data:`TOPIC_ADMIT_CACHE` seconds after), since it lives in another slot.
    """

    def __init__(self, store: RedisStore, keys: Keys, policy: HistoryPolicy) -> None:
        self._store = store
        self._keys = keys
        self._policy = policy
        #: topic log id -> (admitted, until when that answer holds, monotonic s)
        self._admitted: dict[str, tuple[bool, float]] = {}

    async def _logged(self, log_id: str, now: int) -> bool:
        if not self._policy.logs(log_id):
            return False
        if not log_id.startswith("topic:"):
            return True
        clock = time.monotonic()
        known = self._admitted.get(log_id)
        if known is not None and known[1] > clock:
            return known[0]
        admitted = bool(
            await self._store.script("topic_admit", (self._keys.history_topics,), log_id, now)
        )
        if len(self._admitted) > 4 * self._policy.max_topics:
            self._admitted.clear()
        self._admitted[log_id] = (admitted, clock + TOPIC_ADMIT_CACHE)
        return admitted

    def _args(
        self, log_id: str, channel: str, envelope: Envelope, now: int, logged: bool
    ) -> tuple[tuple[str, ...], tuple[str | int | bytes, ...]]:
        return self._keys.log_keys(log_id), (
            channel,
            envelope.to_json(),
            envelope.id,
            now,
            "1" if logged else "0",
        )

    async def append(self, log_id: str, channel: str, envelope: Envelope, now: int) -> Envelope:
        keys, args = self._args(log_id, channel, envelope, now, await self._logged(log_id, now))
        store = self._store
        if store.webhooks is None:  # the common case, without a step more
            epoch, offset, _dup = await store.acked("append", keys, *args)
            return replace(envelope, epoch=as_text(epoch), offset=int(offset))
        return await store.log_step("append", keys, args, envelope)

    def _message(self, envelope: Envelope) -> MessageEvent | None:
        """Its ``message.published`` event, if webhooks report its destination."""
        hooks = self._store.webhooks
        return hooks.message(envelope) if hooks is not None else None

    async def append_many(
        self, items: Sequence[tuple[str, str, Envelope]], now: int
    ) -> list[Envelope | BackendUnavailable]:
        """On one node (standalone, Sentinel), one run of the ``append_many`` script
        for the whole batch: each append atomic and failing alone, in order. On a
        cluster, one pipeline of EVALSHA (non-transactional: each append stays atomic
        on its own, and Redis runs them in order; redis-py splits it per master, in
        order, and routes the raw command by its first key, since its cluster
        pipeline refuses ``evalsha()``). A script Redis lost is loaded and run again."""
        store = self._store
        sha = store.sha("append")
        calls = [
            self._args(log_id, channel, envelope, now, await self._logged(log_id, now))
            for log_id, channel, envelope in items
        ]
        # (webhooks off: nothing made per append)
        events: list[MessageEvent | None] = []
        if store.webhooks is not None and store.webhooks.messages:
            events = [self._message(envelope) for _, _, envelope in items]
        reported = any(events)
        if reported:
            # each append with its message.published, as its own script run
            calls = [store.message_args(k, a, e) for (k, a), e in zip(calls, events, strict=True)]
        store.check_hold()
        pipe = store.pipeline()
        many = store.one_node and len(calls) > 1 and not reported
        if many:
            # one script run for the batch (fewer commands to write and replies to read)
            keys_all: list[str] = []
            args_all: list[str | int | bytes] = [now]
            for keys, args in calls:
                keys_all += keys
                args_all += (args[0], args[1], args[2], args[4])
            pipe.execute_command(
                "EVALSHA", store.sha("append_many"), len(keys_all), *keys_all, *args_all
            )
        else:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        replicas, timeout = store.wait
        if replicas:
            pipe.execute_command("WAIT", replicas, timeout)
        try:
            replies = await guard(pipe.execute(raise_on_error=False))
        finally:
            await pipe.reset()
        if replicas:
            replies = replies[:-1]
        if many:
            reply = replies[0]
            if isinstance(reply, NoScriptError):
                reply = await store.script("append_many", keys_all, *args_all)
            replies = reply if isinstance(reply, list) else [reply] * len(calls)
        out: list[Envelope | BackendUnavailable] = []
        for i, ((_, _, envelope), (keys, args), reply) in enumerate(
            zip(items, calls, replies, strict=True)
        ):
            if isinstance(reply, NoScriptError):
                reply = await store.script("append", keys, *args)
            if isinstance(reply, BaseException):
                out.append(BackendUnavailable(f"redis: {type(reply).__name__}: {reply}"))
                continue
            epoch, offset, dup = reply
            event = events[i] if events else None
            if event is not None:
                await store.message_published(event, int(offset), bool(dup))
            out.append(replace(envelope, epoch=as_text(epoch), offset=int(offset)))
        return out

    async def read(self, log_id: str, after: int, limit: int, tail: int = 0) -> LogSlice:
        stream, meta, _ = self._keys.log_keys(log_id)
        reply = await self._store.script("read", (stream, meta), after, limit, tail)
        epoch = as_text(reply[0])
        entries = []
        for i in range(5, len(reply), 2):
            try:
                envelope = Envelope.from_json(reply[i + 1])
            except ProtocolError as exc:
                log.warning("skipping malformed log entry of %s: %s", log_id, exc.detail)
                continue
            entries.append(replace(envelope, offset=int(reply[i]), epoch=epoch))
        return LogSlice(
            epoch, int(reply[1]), int(reply[2]), tuple(entries), as_text(reply[3]), int(reply[4])
        )
