"""Two relays on a 3-master Redis Cluster and on Sentinel: they chat as one server, and
the operators' tools (``stomprelay inspect``, ``kick``, ``notify``) work in every mode
(docs/redis.md, "Modes"). The failure cases (a master killed, a slot moved, a
failover, a relay killed) are in the fault matrix (tests/faults)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterhelpers import RELAY_ARGS
from procs import ROOT, RelayProcess
from stompclient import StompClient
from topology import ClusterTopology, SentinelTopology, require_redis7

from stomprelay.cluster.keys import Keys

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

ROOM = "lobby"
TOPIC = f"/topic/room/{ROOM}"
#: rooms whose hash tags fall on different masters of a 3-master cluster
ROOMS = [f"room-{n}" for n in range(12)]


class Deployment:
    def __init__(self, kind: str, topo: Any, url: str, mode_args: list[str]) -> None:
        self.kind = kind
        self.topo = topo
        self.url = url
        self.mode_args = mode_args


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    require_redis7()
    workdir: Path = tmp_path_factory.mktemp(request.param)
    topo: Any
    if request.param == "cluster":
        topo = ClusterTopology(workdir, masters=3, replicas=0).start()
        url, args = topo.seeds, ["--redis-mode", "cluster"]
    else:
        topo = SentinelTopology(workdir, replicas=1, sentinels=3).start()
        url = "redis://"
        args = [
            "--redis-mode",
            "sentinel",
            "--redis-sentinel",
            topo.sentinel_arg,
            "--redis-master-name",
            topo.master_name,
        ]
    try:
        yield Deployment(request.param, topo, url, args)
    finally:
        topo.stop()


@pytest.fixture
def relays(deployment: Deployment, tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs = [
        RelayProcess(
            tmp_path, sid, redis_url=deployment.url, extra=[*RELAY_ARGS, *deployment.mode_args]
        )
        for sid in ("relay-a", "relay-b")
    ]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[StompClient]]:
    made: list[StompClient] = []
    yield made
    for client in made:
        await client.close()


async def cli(deployment: Deployment, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stomprelay",
        *args,
        "--redis-url",
        deployment.url,
        *deployment.mode_args,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("REDIS_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_two_relays_chat_and_operators_see_it(
    deployment: Deployment, relays: list[RelayProcess], clients: list[StompClient]
) -> None:
    a, b = relays
    alice = await StompClient.connect(a.ws_url, name="alice")
    bob = await StompClient.connect(b.ws_url, name="bob")
    clients += [alice, bob]
    for who in (alice, bob):
        for room in [ROOM, *ROOMS]:
            await who.subscribe(f"/topic/room/{room}", room)
    await alice.join(ROOM, "alice")
    await bob.join(ROOM, "bob")
    await alice.next_event(ROOM, type="JOIN", username="bob")
    for n in range(5):
        await alice.chat(ROOM, f"a{n}")
        await bob.chat(ROOM, f"b{n}")
    for who in (alice, bob):
        chats = [e["message"] for e in await _chats(who, ROOM, 10)]
        assert sorted(chats) == sorted([f"a{n}" for n in range(5)] + [f"b{n}" for n in range(5)])
    # both see the room's messages in the same order (one log per room)
    assert [e["message"] for e in alice.events(ROOM, type="CHAT")] == [
        e["message"] for e in bob.events(ROOM, type="CHAT")
    ]
    # rooms spread over the shards still reach the other relay
    for room in ROOMS:
        await alice.join(room, "alice")
        await alice.chat(room, f"to {room}")
    for room in ROOMS:
        await bob.next_event(room, type="CHAT", message=f"to {room}")

    # Redis forgets the scripts (SCRIPT FLUSH on every master, as after a restart or
    # on a promoted replica): the next call gets NOSCRIPT, loads them, goes on
    masters = (
        deployment.topo.masters() if deployment.kind == "cluster" else [deployment.topo.master()]
    )
    for node in masters:
        client = node.client()
        try:
            client.script_flush()
        finally:
            client.close()
    await alice.chat(ROOM, "after the flush")
    await bob.next_event(ROOM, type="CHAT", message="after the flush")

    servers = json.loads(await cli(deployment, "inspect", "servers", "--json"))
    assert {(s["serverId"], s["alive"], s["sessions"]) for s in servers} == {
        ("relay-a", True, 1),
        ("relay-b", True, 1),
    }
    sessions = json.loads(await cli(deployment, "inspect", "sessions", "--json"))
    assert sorted(s["username"] for s in sessions) == ["alice", "bob"]
    rooms = json.loads(await cli(deployment, "inspect", "rooms", "--json"))
    assert {r["roomId"]: r["participants"] for r in rooms} == {ROOM: 2} | {r: 1 for r in ROOMS}
    members = json.loads(await cli(deployment, "inspect", "room", ROOM, "--json"))
    assert sorted(row["username"] for row in members) == ["alice", "bob"]
    assert members[0]["history.lastOffset"] >= 12  # 2 JOINs, 10 messages
    listing = json.loads(await cli(deployment, "inspect", "keys", "--json"))
    names = {row["key"] for row in listing}
    keys = Keys()
    assert {keys.room_participants(ROOM), keys.session(alice.session_id)} <= names
    assert all(keys.history(f"room:{r}") in names for r in ROOMS)
    if deployment.kind == "cluster":
        # the listing scanned every master: the rooms' logs live on all three
        owners = {deployment.topo.node_for_key(keys.history(f"room:{r}")).port for r in ROOMS}
        assert len(owners) == 3

    # an operator's kick and notice, in this mode too
    await cli(deployment, "kick", "bob")
    await bob.wait_closed(10)
    await alice.next_event(ROOM, type="LEAVE", username="bob")
    await cli(deployment, "notify", "--room", ROOM, "maintenance at noon")
    await alice.next_event(ROOM, type="SYSTEM", message="maintenance at noon")


async def _chats(client: StompClient, room: str, count: int) -> list[dict[str, Any]]:
    for _ in range(100):
        found = client.events(room, type="CHAT")
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return client.events(room, type="CHAT")


async def test_direct_messages_reach_only_the_relays_of_their_user(
    deployment: Deployment,
    relays: list[RelayProcess],
    clients: list[StompClient],
    tmp_path: Path,
) -> None:
    """docs/contract.md, section 9: a user's channel is sharded with its inbox logs."""
    a, b = relays
    c = RelayProcess(
        tmp_path, "relay-c", redis_url=deployment.url, extra=[*RELAY_ARGS, *deployment.mode_args]
    )
    try:
        c.start()
        inbox = "/user/queue/messages"
        alice_a = await StompClient.connect(a.ws_url, login="alice")
        alice_b = await StompClient.connect(b.ws_url, login="alice")
        carol = await StompClient.connect(a.ws_url, login="carol")
        bob = await StompClient.connect(c.ws_url, login="bob")
        clients += [alice_a, alice_b, carol, bob]
        for who in (alice_a, alice_b, carol, bob):
            await who.subscribe(inbox, "inbox")
        before = c.metric("stomprelay_user_envelopes_received_total")
        await bob.send("/user/alice/queue/messages", "hi alice", receipt=True)
        for alice in (alice_a, alice_b):
            (frame,) = await alice.collect(1, "inbox")
            assert frame.body == b"hi alice"
            assert frame.get("x-sender") == "bob"
            assert frame.get("destination") == inbox
            assert frame.get("x-offset") == "1"
        (own,) = await bob.collect(1, "inbox")
        assert own.get("x-recipient") == "alice"
        await carol.expect_no_message("inbox", within=0.3)
        for alice in (alice_a, alice_b):
            assert len(alice.received("inbox")) == 1
        # relay-c heard its own user's copy only
        assert c.metric("stomprelay_user_envelopes_received_total") - before == 1
        if deployment.kind == "cluster":
            keys = Keys()
            log_keys = keys.log_keys("user:alice:messages")
            owner = deployment.topo.node_for_key(keys.user_channel("alice"))
            assert {deployment.topo.node_for_key(k).port for k in log_keys} == {owner.port}
            # a shard channel on that master: relays a and b listen to alice's, c does not
            channel = keys.user_channel("alice")
            shard = owner.client()
            try:
                reply = shard.execute_command("PUBSUB", "SHARDNUMSUB", channel)
            finally:
                shard.close()
            assert [str(x) for x in reply] == [channel, "2"]

        # alice offline: bob sends 3; alice comes back with x-since-offset
        await alice_a.disconnect()
        await alice_b.disconnect()
        for n in range(3):
            await bob.send("/user/alice/queue/messages", f"away {n}", receipt=True)
        back = await StompClient.connect(b.ws_url, login="alice")
        clients.append(back)
        receipt = await back.subscribe_receipt(
            inbox, "inbox", [("x-since-offset", "1"), ("x-since-epoch", frame.get("x-epoch") or "")]
        )
        assert receipt.get("x-recovered") == "true"
        frames = await back.collect(3, "inbox")
        assert [f.body for f in frames] == [b"away 0", b"away 1", b"away 2"]
        await back.expect_no_message("inbox", within=0.3)
    finally:
        c.stop()


async def test_publish_from_a_shell_is_idempotent_in_every_mode(
    deployment: Deployment, relays: list[RelayProcess], clients: list[StompClient]
) -> None:
    """docs/api.md: ``stomprelay publish`` appends as the relays do (a room's and a
    user's log on their own slots), so a repeated key is one message; the API's reads
    answer loopback clients with no key set."""
    a, b = relays
    room = "/topic/room/api-shell"  # the deployment is the module's: a room no other test uses
    watcher = await StompClient.connect(a.ws_url, login="watcher")
    alice = await StompClient.connect(b.ws_url, login="shell-alice")
    clients += [watcher, alice]
    await watcher.subscribe(room, "room")
    await alice.subscribe("/user/queue/api-updates", "inbox")
    first = json.loads(await cli(deployment, "publish", room, "once", "--idempotency-key", "k1"))
    again = json.loads(await cli(deployment, "publish", room, "twice?", "--idempotency-key", "k1"))
    assert again == first
    dm = json.loads(
        await cli(deployment, "publish", "/user/shell-alice/queue/api-updates", "for alice")
    )
    assert dm["offset"] == 1
    await cli(deployment, "publish", room, "marker")
    frames = await watcher.collect(2, "room")
    assert [f.body for f in frames] == [b"once", b"marker"]
    assert frames[0].get("x-offset") == str(first["offset"])
    assert frames[0].get("x-sender") == "server"
    (frame,) = await alice.collect(1, "inbox")
    assert frame.body == b"for alice"
    assert frame.get("x-sender-session") is None

    status, history = a.get_json(f"/api/history?destination={room}")
    assert status == 200
    assert [m["body"] for m in history["messages"]] == ["once", "marker"]
    status, user = b.get_json("/api/users/shell-alice")
    assert status == 200
    assert [s["serverId"] for s in user["sessions"]] == ["relay-b"]


async def test_server_side_subscriptions_and_disconnect(
    deployment: Deployment, clients: list[StompClient], tmp_path: Path
) -> None:
    """docs/api.md: a user's sessions on two relays are subscribed by the server API
    and ended by it; on a cluster the user's kept subscriptions share its slot."""
    from clusterhelpers import api_post

    from stomprelay.usersubs import NOTICE_DESTINATION, subscription_id

    token = "modes-api-token"
    procs = [
        RelayProcess(
            tmp_path,
            sid,
            redis_url=deployment.url,
            extra=[*RELAY_ARGS, *deployment.mode_args, "--admin-token", token],
        )
        for sid in ("api-a", "api-b")
    ]
    try:
        for proc in procs:
            proc.start()
        a, b = procs
        alice_a = await StompClient.connect(a.ws_url, login="alice")
        alice_b = await StompClient.connect(b.ws_url, login="alice")
        bob = await StompClient.connect(a.ws_url, login="bob")
        clients += [alice_a, alice_b, bob]
        await alice_b.subscribe(NOTICE_DESTINATION, "notices")
        status, body = await api_post(
            a.http, "/api/users/alice/subscribe", {"destination": TOPIC}, token
        )
        assert (status, body["sessions"]) == (200, 2), body
        assert json.loads((await alice_b.next_message("notices")).body)["destination"] == TOPIC
        await bob.send(TOPIC, "to alice", receipt=True)
        for alice in (alice_a, alice_b):
            assert (await alice.next_message(subscription_id(TOPIC))).body == b"to alice"
        if deployment.kind == "cluster":
            keys = Keys()
            slots = {keys.user_subscriptions("alice"), keys.user_sessions("alice")}
            assert len({deployment.topo.node_for_key(k).port for k in slots}) == 1

        status, body = await api_post(b.http, "/api/users/alice/disconnect", {}, token)
        assert (status, body) == (200, {"user": "alice", "sessions": 2})
        for alice in (alice_a, alice_b):
            await alice.wait_closed()
            assert alice.errors[0].get("message") == "session ended by server"
    finally:
        for proc in procs:
            proc.stop()
