"""The dashboard's reads on a 3-master Redis Cluster (docs/operations.md): rooms whose
keys sit on every shard found by a search and paged, a user's sessions, both relays
with their rings of samples (each in its relay's slot)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterhelpers import RELAY_ARGS
from procs import RelayProcess, wait_for
from stompclient import StompClient
from topology import ClusterTopology, require_redis7

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

#: rooms whose hash tags fall on different masters
ROOMS = [f"shard-room-{n}" for n in range(12)]
MODE = ["--redis-mode", "cluster", "--dashboard-interval", "0.2"]


@pytest.fixture
def cluster_relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    require_redis7()
    topo = ClusterTopology(tmp_path, masters=3, replicas=0).start()
    procs = [
        RelayProcess(tmp_path, sid, redis_url=topo.seeds, extra=[*RELAY_ARGS, *MODE])
        for sid in ("relay-a", "relay-b")
    ]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()
        topo.stop()


def get(relay: RelayProcess, path: str) -> Any:
    with urllib.request.urlopen(relay.http + path, timeout=10) as response:
        return json.loads(response.read())


async def test_the_dashboard_reads_every_shard(cluster_relays: list[RelayProcess]) -> None:
    a, b = cluster_relays
    ann = await StompClient.connect(a.ws_url, name="ann", login="ann")
    ben = await StompClient.connect(b.ws_url, name="ben", login="ben")
    try:
        for room in ROOMS:
            await (ann if room.endswith(("0", "2", "4", "6", "8")) else ben).join(room, "x")
        wait_for(lambda: get(a, "/api/rooms?q=shard-room")["total"] == 12, timeout=20)
        page = get(a, "/api/rooms?q=shard-room&offset=10&limit=5")
        assert len(page["rooms"]) == 2
        assert all(r["history"]["lastOffset"] >= 1 for r in page["rooms"])
        found = get(b, "/api/rooms?q=room-11")["rooms"]
        assert [r["roomId"] for r in found] == ["shard-room-11"]
        sessions = get(b, "/api/sessions?q=ann")
        assert [s["user"] for s in sessions["sessions"]] == ["ann"]
        assert sorted(sessions["sessions"][0]["rooms"]) == sorted(ROOMS[::2])

        servers = get(b, "/api/dashboard/servers")["servers"]
        assert [(s["serverId"], s["state"]) for s in servers] == [
            ("relay-a", "up"),
            ("relay-b", "up"),
        ]
        wait_for(
            lambda: all(len(v) >= 2 for v in get(b, "/api/dashboard/samples")["servers"].values()),
            timeout=20,
        )
        samples = get(b, "/api/dashboard/samples")
        assert set(samples["servers"]) == {"relay-a", "relay-b"}
        assert samples["cluster"][-1]["connections"] >= 1
    finally:
        await ann.close()
        await ben.close()
