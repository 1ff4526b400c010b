"""Identity and access across relays: tokens from ``stomprelay token`` work on every
relay, and ``stomprelay kick`` ends a user's sessions cluster-wide and refuses it
on every relay until the time given (docs/security.md)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from procs import ROOT
from stompclient import StompClient, StompClientError

SECRET = "cluster-secret-0123456789abcdefgh"
AUTH = ["--jwt-secret", SECRET]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stomprelay", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )


def dev_token(user: str) -> str:
    done = cli("token", "--user", user, "--jwt-secret", SECRET, "--ttl", "600")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_kick_reaches_every_relay_and_holds_until_lifted(
    start_relay: Any, stomp_clients: Any, redis_server: Any
) -> None:
    a = start_relay("A", extra=AUTH)
    b = start_relay("B", extra=AUTH)
    alice = dev_token("alice")
    on_a = await stomp_clients(a, passcode=alice)
    on_b = await stomp_clients(b, passcode=alice)
    bob = await stomp_clients(b, passcode=dev_token("bob"))
    sub = await bob.subscribe("/topic/news")

    done = cli("kick", "alice", "--until", "10m", "--redis-url", redis_server.url)
    assert done.returncode == 0, done.stderr
    assert "refused until" in done.stdout
    for client in (on_a, on_b):
        await client.wait_closed(timeout=5)
        assert client.errors[0].get("message") == "session ended by operator"
    await bob.send("/topic/news", "bob stays", receipt=True)
    assert (await bob.next_message(sub)).body == b"bob stays"
    for relay in (a, b):
        with pytest.raises(StompClientError, match="access refused"):
            await StompClient.connect(relay.ws_url, passcode=alice)

    # a relay started after the kick learns it from Redis
    c = start_relay("C", extra=AUTH)
    with pytest.raises(StompClientError, match="access refused"):
        await StompClient.connect(c.ws_url, passcode=alice)

    done = cli("kick", "alice", "--lift", "--redis-url", redis_server.url)
    assert done.returncode == 0, done.stderr
    back = await stomp_clients(a, passcode=alice)
    assert back.session_id


def test_kick_refuses_bad_input() -> None:
    done = cli("kick", "ali\u202ece", "--redis-url", "redis://127.0.0.1:1")
    assert done.returncode == 2
    assert "bidi" in done.stderr
    done = cli("kick", "alice", "--until", "soonish", "--redis-url", "redis://127.0.0.1:1")
    assert done.returncode == 2
    assert "duration" in done.stderr
    done = cli("token", "--user", "alice")
    assert done.returncode == 2
    assert "--jwt-secret" in done.stderr
