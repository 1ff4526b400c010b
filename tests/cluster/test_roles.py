"""Both backends implement every role of the registry (issue 17), with one set of defaults.

The roles are :mod:`typing` protocols (``registry.py``): isinstance checks that each
method is there, and the signatures are compared here so that a backend whose method
drifted from its role (a parameter renamed, added or dropped) fails. ``mypy --strict``
checks the same assignments statically (``memory.py``, ``redis_backend.py``).
"""

from __future__ import annotations

import inspect

import pytest

from stomprelay.cluster.base import (
    FENCE_MS,
    LIVENESS_INTERVAL,
    LIVENESS_TTL,
    REAPER_LOCK_MS,
    STALL_MS,
    stall_ms,
)
from stomprelay.cluster.history import Log, MemoryLog
from stomprelay.cluster.memory import MemoryHub, MemoryRegistry
from stomprelay.cluster.redis_backend import RedisRegistry
from stomprelay.cluster.redis_log import RedisLog
from stomprelay.cluster.registry import (
    Directory,
    LoggedRegistry,
    LogOwner,
    Membership,
    Moderation,
    Reaping,
    Registry,
    ServerSubscriptions,
)
from stomprelay.settings import Settings

ROLES = (
    Membership,
    Directory,
    Moderation,
    ServerSubscriptions,
    Reaping,
    Registry,
    LogOwner,
    LoggedRegistry,
)


def backends() -> list[LoggedRegistry]:
    # a Redis client connects on its first command: none is sent here
    return [MemoryRegistry(MemoryHub()), RedisRegistry("redis://127.0.0.1:1")]


def role_methods(role: type) -> set[str]:
    return {
        name
        for klass in role.__mro__
        if klass not in (object,) and klass.__module__ != "typing"
        for name, value in vars(klass).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }


def test_the_roles_split_the_registry_without_overlap() -> None:
    parts = [
        role_methods(role)
        for role in (Membership, Directory, Moderation, ServerSubscriptions, Reaping)
    ]
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    assert role_methods(Registry) == set().union(*parts) | {"close"}
    # the one protocol's 26 methods before the split, user_sessions since, and the
    # server-side subscriptions'
    assert len(role_methods(Registry)) == 27 + 3


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.__name__)
def test_every_backend_implements_every_role(role: type) -> None:
    for backend in backends():
        assert isinstance(backend, role), f"{type(backend).__name__} is no {role.__name__}"
        for name in role_methods(role):
            method = getattr(backend, name)
            assert inspect.iscoroutinefunction(method), f"{type(backend).__name__}.{name}"
            wanted = list(inspect.signature(getattr(role, name)).parameters)[1:]
            assert list(inspect.signature(method).parameters) == wanted, name


def test_the_log_is_a_typed_attribute_of_each_backend() -> None:
    memory, redis = backends()
    assert isinstance(memory.log, MemoryLog)
    assert isinstance(redis.log, RedisLog)
    assert all(isinstance(backend.log, Log) for backend in (memory, redis))


def test_one_default_for_the_stall_the_fence_and_the_reaper_lock() -> None:
    assert STALL_MS == stall_ms(LIVENESS_INTERVAL) == 4_500
    for backend in backends():
        assert (backend.stall_ms, backend.fence_ms) == (STALL_MS, FENCE_MS)  # type: ignore[attr-defined]
        assert backend.lock_ttl_ms == REAPER_LOCK_MS  # type: ignore[attr-defined]
    defaults = Settings()
    assert defaults.reaper_lock_ms == REAPER_LOCK_MS
    assert (defaults.liveness_interval, defaults.liveness_ttl) == (LIVENESS_INTERVAL, LIVENESS_TTL)
