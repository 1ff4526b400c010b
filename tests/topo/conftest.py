"""Fixtures of the topology tests: a Redis Cluster or a Sentinel deployment, each
test module its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from topology import HOST, ClusterTopology, SentinelTopology, require_redis7

from stomprelay.cluster.connect import RedisTarget


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisTarget, Any]]:
    """A 3-master Redis Cluster, or a master, a replica and one sentinel: the target
    relays are given, and a plain client of a master (of the cluster)."""
    require_redis7()
    workdir: Path = tmp_path_factory.mktemp(request.param)
    if request.param == "cluster":
        with ClusterTopology(workdir, masters=3, replicas=0) as cluster:
            client = cluster.client()
            with contextlib.closing(client):
                yield RedisTarget(cluster.seeds, "cluster"), client
    else:
        with SentinelTopology(workdir, replicas=1, sentinels=1) as sentinel:
            sentinels = tuple((HOST, n.port) for n in sentinel.sentinels)
            target = RedisTarget("redis://", "sentinel", sentinels, sentinel.master_name)
            client = sentinel.master().client()
            with contextlib.closing(client):
                yield target, client
