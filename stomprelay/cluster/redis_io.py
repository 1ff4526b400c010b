"""What every Redis module of the cluster backend shares: the error boundary and
the decoding of replies.

Redis errors never leave the Redis modules: :func:`guard` turns them into
:class:`~stomprelay.errors.BackendTimeout` or
:class:`~stomprelay.errors.BackendUnavailable`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stomprelay.errors import BackendTimeout, BackendUnavailable

T = TypeVar("T")


async def guard(call: Awaitable[T]) -> T:
    """Await a Redis call; its failure becomes the backend's own error."""
    try:
        return await call
    except (RedisTimeoutError, TimeoutError) as exc:
        raise BackendTimeout("redis: no answer in time") from exc
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc


def as_text(value: bytes | str) -> str:
    """A reply as text (clients may or may not decode)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def as_texts(values: Any) -> list[str]:
    """A multi-bulk reply as sorted text."""
    return sorted(as_text(v) for v in values)


def as_fields(mapping: Any) -> dict[str, str]:
    """An HGETALL reply as text."""
    return {as_text(k): as_text(v) for k, v in mapping.items()}
