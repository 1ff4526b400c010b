"""Fixtures of the integration tests beyond the shared ones (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis as sync_redis
from procs import RedisServer, redis_server_binary

from stomprelay.cluster.connect import RedisTarget
from stomprelay.factory import build_backends, build_relay
from stomprelay.settings import Settings
from stomprelay.transport import RelayServer

BACKENDS = ["memory", "redis"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        redis_server_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    server = RedisServer(tmp_path_factory.mktemp("queues-redis")).start()
    yield server.url
    server.stop()


Relays = Callable[..., Awaitable[list[RelayServer]]]


@pytest.fixture(params=BACKENDS)
async def relays(request: pytest.FixtureRequest) -> AsyncIterator[Relays]:
    """Queue tests' relays (docs/queues.md), parametrised over both stores:
    ``await relays(n, **settings)``: one relay in memory (``n`` must be 1), or ``n``
    relays on a freshly flushed redis-server."""
    started: list[RelayServer] = []
    kind = request.param

    async def factory(n: int = 1, **settings: Any) -> list[RelayServer]:
        settings.setdefault("frame_rate", 0)  # the tests send faster than a person
        config = Settings(**settings)
        target = None
        if kind == "redis":
            url = request.getfixturevalue("redis_url")
            target = RedisTarget.of(url)
            client = sync_redis.Redis.from_url(url)
            client.flushall()
            client.close()
        out = []
        for i in range(n if kind == "redis" else 1):
            backends = build_backends(config, target)
            relay = build_relay(config, server_id=f"q{i}", backends=backends)
            server = RelayServer(relay, host="127.0.0.1", port=0, stomp_port=0)
            await server.start()
            started.append(server)
            out.append(server)
        return out

    yield factory
    for server in reversed(started):
        await server.stop()
