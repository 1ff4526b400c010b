"""Fixtures of the integration tests beyond the shared ones (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from stompclient import StompClient

from stomprelay.transport import RelayServer


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[StompClient]]]:
    """``await clients(relay, **connect_options)``: a connected :class:`StompClient` on an
    in-process relay; every one closed at teardown."""
    made: list[StompClient] = []

    async def factory(server: RelayServer, **kwargs: Any) -> StompClient:
        client = await StompClient.connect(f"ws://127.0.0.1:{server.port}/ws", **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()
