"""One :class:`asyncio.Lock` per key, alive only while someone holds or waits for it.

The router serialises the SUBSCRIBE and UNSUBSCRIBE of one channel with it, the
server-side subscriptions the changes of one user's sessions: many keys, few in
use at once, so a lock is made on first use and dropped with its last user.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class KeyedLocks:
    """``async with locks.hold(key):`` one holder per key at a time."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Keys with a holder or a waiter."""
        return len(self._entries)

    def users(self, key: str) -> int:
        """How many hold or wait for ``key``'s lock."""
        entry = self._entries.get(key)
        return entry.users if entry is not None else 0

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
