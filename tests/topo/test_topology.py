"""The Redis Cluster and Sentinel topologies of :mod:`topology`, driven for real.

One cluster (3 masters, 1 replica each) and one Sentinel set-up (a master, 2 replicas,
3 sentinels) serve the whole module; the tests that change roles (a killed master, a
failover) come last in their group and assert only what holds from any starting state.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster
from redis.crc import key_slot
from topology import ClusterTopology, Node, SentinelTopology, parse_cluster_nodes, require_redis7

pytestmark = pytest.mark.redis


def _cmd(node: Node, *args: Any) -> Any:
    with node.client() as client:
        return client.execute_command(*args)


def _role(node: Node) -> list[Any]:
    role: list[Any] = _cmd(node, "ROLE")
    return role


# -- Redis Cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    require_redis7()
    with ClusterTopology(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def rc(redis_cluster: ClusterTopology) -> Iterator[redis.cluster.RedisCluster]:
    client = redis_cluster.client()
    yield client
    client.close()


def test_cluster_starts_with_a_replica_per_master(redis_cluster: ClusterTopology) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    replicas = [redis_cluster.replicas_of(master) for master in masters]
    assert all(len(group) == 1 for group in replicas)
    assert {node.port for node in masters} | {group[0].port for group in replicas} == {
        node.port for node in redis_cluster.nodes
    }
    for node in redis_cluster.nodes:
        info = _cmd(node, "CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
    for (replica,), master in zip(replicas, masters, strict=True):
        assert _role(replica)[:3] == ["slave", "127.0.0.1", master.port]
        with replica.client() as client:
            assert client.info("replication")["master_link_status"] == "up"
    assert re.fullmatch(r"redis://127\.0\.0\.1:\d+", redis_cluster.url)
    assert redis_cluster.url in {node.url for node in masters}
    seeds = redis_cluster.seeds.split(",")
    assert len(seeds) == 6
    assert all(re.fullmatch(r"redis://127\.0\.0\.1:\d+", seed) for seed in seeds)


def test_key_lands_on_node_for_key(
    redis_cluster: ClusterTopology, rc: redis.cluster.RedisCluster
) -> None:
    owners = set()
    for tag in ("alpha", "beta", "gamma", "delta", "room"):
        key = f"k:{{{tag}}}"
        assert rc.set(key, tag)
        slot = redis_cluster.slot_of(key)
        assert slot == key_slot(key.encode())
        owner = redis_cluster.node_for_key(key)
        assert owner is redis_cluster.node_for_slot(slot)
        owners.add(owner.port)
        with owner.client() as client:
            assert client.get(key) == tag
        for other in redis_cluster.masters():
            if other is not owner:
                with (
                    other.client() as client,
                    pytest.raises(redis.exceptions.MovedError, match=f":{owner.port}$"),
                ):
                    client.get(key)
    assert len(owners) > 1  # five hash tags over three masters
    redis_cluster.flushall()
    assert rc.get("k:{alpha}") is None


def test_sharded_pubsub_through_the_cluster_client(
    redis_cluster: ClusterTopology, rc: redis.cluster.RedisCluster
) -> None:
    channel = "x:{room}"
    pubsub = rc.pubsub()
    try:
        pubsub.ssubscribe(channel)
        deadline = time.monotonic() + 5
        confirmed = None
        while confirmed is None and time.monotonic() < deadline:
            confirmed = pubsub.get_sharded_message(timeout=0.1)
        assert confirmed is not None
        assert confirmed["type"] == "ssubscribe"
        owner = redis_cluster.node_for_key(channel)
        assert _cmd(owner, "PUBSUB", "SHARDNUMSUB", channel) == [channel, 1]
        assert rc.spublish(channel, "hello") == 1
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
        assert message is not None
        assert (message["type"], message["channel"], message["data"]) == (
            "smessage",
            channel,
            "hello",
        )
    finally:
        pubsub.close()


def test_move_slot_keeps_the_keys_readable(
    redis_cluster: ClusterTopology, rc: redis.cluster.RedisCluster
) -> None:
    key = "m:{moving}"
    assert rc.set(key, "here")
    # more keys in the slot than one MIGRATE batch
    pipe = rc.pipeline()
    for i in range(250):
        pipe.set(f"{key}:{i}", i)
    pipe.execute()
    slot = redis_cluster.slot_of(key)
    source = redis_cluster.node_for_slot(slot)
    target = next(node for node in redis_cluster.masters() if node is not source)

    redis_cluster.move_slot(slot, target)

    assert redis_cluster.node_for_slot(slot) is target
    for node in redis_cluster.nodes:
        view = parse_cluster_nodes(_cmd(node, "CLUSTER", "NODES"))
        owner = next(v.port for v in view if v.is_master for lo, hi in v.slots if lo <= slot <= hi)
        assert owner == target.port, f"{node!r} puts slot {slot} on {owner}"
    assert rc.get(key) == "here"  # this client still had the old map: MOVED sends it on
    assert rc.get(f"{key}:249") == "249"
    with target.client() as client:
        assert client.get(key) == "here"
        assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 251
    with (
        source.client() as client,
        pytest.raises(redis.exceptions.MovedError, match=f"^{slot} 127.0.0.1:{target.port}$"),
    ):
        client.get(key)
    redis_cluster.move_slot(slot, source)
    assert redis_cluster.node_for_slot(slot) is source
    assert rc.get(key) == "here"


def test_kill_master_of_promotes_its_replica(redis_cluster: ClusterTopology) -> None:
    key = "f:{failover}"
    owner = redis_cluster.node_for_key(key)
    (replica,) = redis_cluster.replicas_of(owner)
    owner_id = owner.node_id
    with owner.client() as client:
        assert client.set(key, "kept")
        assert client.wait(1, 2000) == 1

    killed, promoted = redis_cluster.kill_master_of(key)

    assert (killed, promoted) == (owner, replica)
    assert killed.proc is None
    assert _role(promoted)[0] == "master"
    assert promoted in redis_cluster.masters()
    assert killed not in redis_cluster.masters()
    assert redis_cluster.node_for_key(key) is promoted
    with redis_cluster.client() as client:
        assert client.get(key) == "kept"

    # started again, it rejoins with its node id, as a replica of its successor
    killed.start()
    redis_cluster.wait_ok()
    assert _cmd(killed, "CLUSTER", "MYID") == owner_id
    assert redis_cluster.replicas_of(promoted) == [killed]
    with killed.client() as client:
        assert client.execute_command("READONLY")
        assert client.get(key) == "kept"


# -- Sentinel ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentinel_topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    require_redis7()
    with SentinelTopology(tmp_path_factory.mktemp("sentinel"), replicas=2) as topo:
        yield topo


def _reported(topo: SentinelTopology) -> set[int]:
    ports = set()
    for sentinel in topo.sentinels:
        host, port = _cmd(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", topo.master_name)
        assert host == "127.0.0.1"
        ports.add(int(port))
    return ports


def test_sentinel_starts(sentinel_topo: SentinelTopology) -> None:
    first = sentinel_topo.servers[0]
    assert sentinel_topo.master() is first
    assert _reported(sentinel_topo) == {first.port}
    assert sentinel_topo.sentinel_arg == ",".join(
        f"127.0.0.1:{node.port}" for node in sentinel_topo.sentinels
    )
    assert _role(first)[0] == "master"
    for replica in sentinel_topo.servers[1:]:
        assert _role(replica)[:3] == ["slave", "127.0.0.1", first.port]
    assert first.url == f"redis://127.0.0.1:{first.port}/0"


def test_sentinel_kill_master_promotes_a_replica(sentinel_topo: SentinelTopology) -> None:
    before = sentinel_topo.master()
    with before.client() as client:
        assert client.set("s:key", "kept")
        assert client.wait(2, 2000) >= 1

    old, new = sentinel_topo.kill_master()

    assert old is before
    assert old.proc is None
    assert new is not old
    assert new in sentinel_topo.servers
    assert _reported(sentinel_topo) == {new.port}
    assert _role(new)[0] == "master"
    with new.client() as client:
        assert client.get("s:key") == "kept"
        # the other running replica now follows the new master
        running = [node for node in sentinel_topo.servers if node.alive and node is not new]
        assert client.set("s:after", "1")
        assert client.wait(len(running), 2000) == len(running)


def test_sentinel_failover_demotes_the_old_master(sentinel_topo: SentinelTopology) -> None:
    before = sentinel_topo.master()

    old, new = sentinel_topo.failover()

    assert old is before
    assert new is not old
    assert _reported(sentinel_topo) == {new.port}
    assert _role(new)[0] == "master"
    assert _role(old)[:3] == ["slave", "127.0.0.1", new.port]
    assert sentinel_topo.master() is new
