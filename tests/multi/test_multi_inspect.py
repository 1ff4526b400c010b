"""``stomprelay inspect`` against a real cluster: the tables read as people read them
(moments relative to now, durations in units), ``--json`` keeps the registry's values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from procs import ROOT

pytestmark = pytest.mark.redis

MOMENT = r"(just now|\d+ s ago)"


def inspect(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stomprelay", "inspect", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "300"},  # rich's table width when not on a terminal
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


async def test_tables_show_moments_and_json_stays_exact(
    start_relay, stomp_clients, redis_server
) -> None:
    relay = start_relay("relay-a")
    alice = await stomp_clients(relay, name="alice", login="alice")
    await alice.subscribe("/topic/room/lobby", "room")
    await alice.join("lobby", "alice")

    (session,) = json.loads(inspect("sessions", "--json", "--redis-url", redis_server.url))
    assert isinstance(session["connectedAt"], int)
    table = inspect("sessions", "--redis-url", redis_server.url)
    row = next(line for line in table.splitlines() if session["sessionId"] in line)
    assert len(re.findall(MOMENT, row)) == 2, row  # connectedAt and lastSeen
    assert str(session["connectedAt"]) not in table

    (server,) = json.loads(inspect("servers", "--json", "--redis-url", redis_server.url))
    assert isinstance(server["startedAt"], int)
    servers = inspect("servers", "--redis-url", redis_server.url)
    assert re.search(MOMENT, servers)
    assert str(server["startedAt"]) not in servers

    rows = json.loads(inspect("keys", "--json", "--redis-url", redis_server.url))
    assert any(r["ttl_ms"] == -1 for r in rows)
    assert any(r["ttl_ms"] > 0 for r in rows)  # the relay's liveness key
    keys = inspect("keys", "--redis-url", redis_server.url)
    assert "no expiry" in keys
    assert re.search(r"\b\d+ (ms|s|min)\b", keys)
