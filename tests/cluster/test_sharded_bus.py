"""ShardedBus against a real Redis Cluster: 3 masters with a replica each (tests/topology.py).

Every test is a set of "relays" (ShardedBus instances) and a checker that counts, per
subscriber and channel, what was lost, duplicated or delivered out of publish order. Message
ids are ``<origin>:<n>`` with ``n`` counting up per origin, so the order of one publisher's
envelopes can be checked on one channel and across the three channels of one room.

One cluster serves the module; the SIGKILL test gets its own, since it leaves a master
dead. Slow topology steps (a slot migration, a kill and the promotion after it) run in a
thread, so the buses keep running in the event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from procs import free_port
from redis.crc import key_slot
from topology import ClusterTopology, Node, require_redis7

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.sharded import Seeds, ShardedBus, is_sharded

pytestmark = pytest.mark.redis

#: Scaled-down bus timings: a dead connection is noticed within a second.
TIMING: dict[str, float] = {"reconnect_interval": 0.1, "ping_interval": 0.2, "dead_after": 1.0}
#: How long an awaited delivery may take before a test fails.
DELIVERY_TIMEOUT = 10.0
#: The publisher's pace in the fault tests: one envelope every 5 ms.
PACE = 0.005

CLASSIC = ("stomp:session:connect", "stomp:broadcast:global")


def room_channels(room: str) -> list[str]:
    return [
        f"stomp:broadcast:room:{{{room}}}",
        f"stomp:event:join:{{{room}}}",
        f"stomp:event:leave:{{{room}}}",
    ]


async def eventually(check: Callable[[], Any], what: str) -> None:
    """Poll ``check`` until it returns a truthy value; fail after DELIVERY_TIMEOUT."""
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while not check():  # noqa: ASYNC110 - the handlers are plain callbacks
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {DELIVERY_TIMEOUT}s waiting for {what}") from None


# -- the checker ---------------------------------------------------------------------------


@dataclass
class Tally:
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    spurious: int = 0

    def __iadd__(self, other: Tally) -> Tally:
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.out_of_order += other.out_of_order
        self.spurious += other.spurious
        return self


def _seq(message_id: str) -> tuple[str, int]:
    origin, _, n = message_id.rpartition(":")
    return origin, int(n)


def out_of_order(received: list[str]) -> int:
    """Arrivals that come after a later envelope of the same publisher."""
    count = 0
    last: dict[str, int] = {}
    for origin, n in map(_seq, received):
        if n <= last.get(origin, -1):
            count += 1
        last[origin] = max(n, last.get(origin, -1))
    return count


def tally(received: list[str], published: list[str]) -> Tally:
    """Compare what one subscriber got on one channel with what was published there,
    publisher by publisher (their ids count up)."""
    expected = set(published)
    return Tally(
        lost=len(expected - set(received)),
        duplicated=len(received) - len(set(received)),
        out_of_order=out_of_order(received),
        spurious=len(set(received) - expected),
    )


async def settle(pacer: Any, subscriber: Any, channels: list[str], what: str) -> Tally:
    """60 more publishes once the subscriber is back, then stop, wait for the last
    envelope to arrive, and count what each channel lost, doubled or reordered."""
    resumed = pacer.started
    await eventually(lambda: pacer.started >= resumed + 60, what)
    await pacer.stop()
    last = pacer.order[-1]
    await eventually(
        lambda: any(last in subscriber.got[ch] for ch in channels), "the last envelope"
    )
    await asyncio.sleep(0.05)
    result = Tally()
    for channel in channels:
        result += tally(subscriber.got[channel], pacer.published[channel])
    return result


@dataclass
class Relay:
    """One bus, standing for one relay, and what its handler received."""

    name: str
    bus: ShardedBus
    #: channel -> envelope ids, in arrival order
    got: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: (monotonic time, value) of every on_state_change
    states: list[tuple[float, bool]] = field(default_factory=list)
    #: also: every arrival, in order, over all channels
    arrivals: list[tuple[str, str]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def handler(self, channel: str, envelope: Envelope) -> None:
        self.got[channel].append(envelope.id)
        self.arrivals.append((channel, envelope.id))

    def envelope(self) -> Envelope:
        n = next(self._ids)
        return Envelope(f"{self.name}:{n}", self.name, "/topic/test", (), f"{n}".encode(), n)

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            await self.bus.subscribe(channel)

    def room_order(self, channels: list[str]) -> list[str]:
        """Ids received on any of ``channels`` (one room's), in arrival order."""
        wanted = set(channels)
        return [i for ch, i in self.arrivals if ch in wanted]


MakeRelay = Callable[..., Awaitable[Relay]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    require_redis7()
    with ClusterTopology(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1) as topo:
        yield topo


@pytest.fixture
async def make_relay() -> AsyncIterator[MakeRelay]:
    """``await make_relay(name, seeds)``: a started ShardedBus, closed after the test."""
    relays: list[Relay] = []

    async def factory(name: str, seeds: str) -> Relay:
        bus = ShardedBus(seeds, **TIMING)
        relay = Relay(name, bus)
        bus.on_state_change = lambda value: relay.states.append((time.monotonic(), value))
        await bus.start(relay.handler)
        relays.append(relay)
        assert bus.available, f"{name} did not reach the cluster"
        return relay

    yield factory
    for relay in relays:
        await relay.bus.close()


def shard_subscribers(node: Node, channel: str) -> int:
    """PUBSUB SHARDNUMSUB on ``node`` itself (redis-py's cluster client would send it to
    its default node, whatever the channel: the command has no key for it)."""
    with contextlib.closing(node.client()) as client:
        [(_, count)] = client.pubsub_shardnumsub(channel)
        return int(count)


def pubsub_clients(node: Node) -> list[dict[str, Any]]:
    """CLIENT LIST TYPE pubsub of ``node``: connections with a (shard) subscription."""
    with contextlib.closing(node.client()) as client:
        return list(client.client_list(_type="pubsub"))


def count_links(cluster: ClusterTopology) -> tuple[dict[int, int], int]:
    """Per master port, connections with shard subscriptions; and, cluster-wide,
    connections with classic ones."""
    sharded = {}
    classic = 0
    for node in cluster.masters():
        clients = pubsub_clients(node)
        sharded[node.port] = sum(1 for c in clients if int(c.get("ssub", 0)) > 0)
        classic += sum(1 for c in clients if int(c.get("sub", 0)) > 0)
    return sharded, classic


# -- channel rule and seed URLs (no Redis) ---------------------------------------------------


def test_channels_with_a_hash_tag_are_shard_channels() -> None:
    assert is_sharded("stomp:broadcast:room:{lobby}")
    assert is_sharded("stomp:event:leave:{a}")
    assert is_sharded("a{b}c{d}")  # the first tag counts
    assert key_slot(b"a{b}c{d}") == key_slot(b"b")
    # no tag: Redis hashes the whole name ("{}" is empty, and the first "}" after the
    # first "{" closes it)
    for classic in ("stomp:session:connect", "stomp:server:relay-1", "a{}b", "x{}{y}", "a}b{"):
        assert not is_sharded(classic), classic
        assert key_slot(classic.encode()) == binascii.crc_hqx(classic.encode(), 0) % 16384


def test_seed_urls_share_the_first_seeds_credentials_and_tls() -> None:
    seeds = Seeds.parse("rediss://u:p%40ss@10.0.0.1:7000/0?ssl_cert_reqs=none, 10.0.0.2:7001")
    assert seeds.addresses == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert seeds.url_for("10.0.0.3", 7005) == "rediss://u:p%40ss@10.0.0.3:7005?ssl_cert_reqs=none"
    options = seeds.options()
    assert options["username"] == "u"
    assert options["password"] == "p@ss"
    assert options["ssl"] is True
    assert options["ssl_cert_reqs"] == "none"
    assert Seeds.parse("redis://h:1,redis://g:2").url_for("::1", 3) == "redis://[::1]:3"
    with pytest.raises(ValueError, match="one database"):
        Seeds.parse("redis://h:1?db=2").options()
    with pytest.raises(ValueError, match="one database"):
        Seeds.parse("redis://h:1/2")
    with pytest.raises(ValueError, match="seed"):
        Seeds.parse(" , ")


async def test_unreachable_cluster_degrades_to_local_delivery() -> None:
    bus = ShardedBus(f"redis://127.0.0.1:{free_port()}", **TIMING)
    got: list[str] = []
    await bus.start(lambda channel, envelope: got.append(envelope.id))
    try:
        assert not bus.available
        await bus.subscribe("stomp:broadcast:room:{lobby}")  # returns at once, degraded
        await bus.subscribe("stomp:session:connect")
        await bus.publish("stomp:broadcast:room:{lobby}", Envelope("e1", "o", "/d", (), b"", 0))
        await bus.publish_many([("stomp:session:connect", Envelope("e2", "o", "/d", (), b"", 0))])
        await bus.publish("stomp:broadcast:room:{other}", Envelope("e3", "o", "/d", (), b"", 0))
        await eventually(lambda: got == ["e1", "e2"], "local delivery")
    finally:
        await bus.close()


# -- 1. two relays, 20 rooms over 3 masters, classic channels ------------------------------


async def test_two_relays_get_everything_once_in_order(
    cluster: ClusterTopology, make_relay: MakeRelay
) -> None:
    rooms = [f"room-{i}" for i in range(20)]
    owners = {cluster.node_for_key(room_channels(room)[0]).port for room in rooms}
    assert owners == {node.port for node in cluster.masters()}, "rooms not on every master"
    channels = [ch for room in rooms for ch in room_channels(room)] + list(CLASSIC)
    assert [is_sharded(ch) for ch in channels] == [True] * 60 + [False] * 2

    a = await make_relay("relay-a", cluster.seeds)
    b = await make_relay("relay-b", cluster.seeds)
    await asyncio.gather(a.subscribe(*channels), b.subscribe(*channels))

    published: dict[str, list[str]] = defaultdict(list)

    async def publish_from(relay: Relay, rounds: int) -> None:
        for round_ in range(rounds):
            batch = []
            for channel in channels:
                envelope = relay.envelope()
                published[channel].append(envelope.id)
                batch.append((channel, envelope))
            if round_ % 2:
                await relay.bus.publish_many(batch)
            else:
                for channel, envelope in batch:
                    await relay.bus.publish(channel, envelope)

    await asyncio.gather(publish_from(a, 6), publish_from(b, 6))
    total = sum(map(len, published.values()))
    assert total == 2 * 6 * 62
    await eventually(
        lambda: all(sum(map(len, relay.got.values())) >= total for relay in (a, b)),
        f"both relays to get {total} envelopes",
    )
    await asyncio.sleep(0.1)  # anything extra (a duplicate) would come now

    for relay in (a, b):
        result = Tally()
        for channel in channels:
            result += tally(relay.got[channel], published[channel])
        assert result == Tally(), f"{relay.name}: {result}"
        # the three channels of a room share a slot, a node and a connection: one order
        for room in rooms:
            assert out_of_order(relay.room_order(room_channels(room))) == 0, room
    # one channel, one order: every subscriber sees the same interleaving of publishers
    for channel in channels:
        assert a.got[channel] == b.got[channel], channel
    assert not [s for relay in (a, b) for s in relay.states if not s[1]]


# -- 2. SPUBLISH goes to one shard --------------------------------------------------------


async def test_spublish_reaches_the_owning_shard_only(
    cluster: ClusterTopology, make_relay: MakeRelay
) -> None:
    channel = "stomp:broadcast:room:{shard-probe}"
    owner = cluster.node_for_key(channel)
    relay = await make_relay("relay-a", cluster.seeds)
    await relay.subscribe(channel)

    # a classic SUBSCRIBE to the same name on every node, replicas included
    plain = [aioredis.Redis(port=node.port) for node in cluster.nodes]
    pubsubs = [client.pubsub() for client in plain]
    try:
        for pubsub in pubsubs:
            await pubsub.subscribe(channel)
            confirm = await pubsub.get_message(timeout=2.0)
            assert confirm is not None
            assert confirm["type"] == "subscribe"
        for node in cluster.masters():
            with contextlib.closing(node.client()) as client:
                client.config_resetstat()

        ids = []
        for _ in range(10):
            envelope = relay.envelope()
            ids.append(envelope.id)
            await relay.bus.publish(channel, envelope)
        batch = [(channel, relay.envelope()) for _ in range(10)]
        ids += [envelope.id for _, envelope in batch]
        await relay.bus.publish_many(batch)
        await eventually(lambda: len(relay.got[channel]) >= 20, "20 shard messages")
        assert tally(relay.got[channel], ids) == Tally()

        # a classic PUBLISH on the same name reaches every classic subscriber: once it is
        # there, anything SPUBLISHed before would be too, had it leaked
        with contextlib.closing(cluster.client()) as rc:
            rc.publish(channel, b"marker")
        for pubsub in pubsubs:
            message = await pubsub.get_message(timeout=2.0)
            assert message is not None
            assert message["data"] == b"marker", message

        # routed straight to the owner: no other node saw an SPUBLISH, not even a -MOVED
        for node in cluster.masters():
            with contextlib.closing(node.client()) as client:
                stats = client.info("commandstats").get("cmdstat_spublish", {})
            if node.port == owner.port:
                assert stats.get("calls") == 20, stats
                assert stats.get("rejected_calls") == 0, stats
            else:
                assert stats.get("calls", 0) + stats.get("rejected_calls", 0) == 0, stats
            assert shard_subscribers(node, channel) == (1 if node.port == owner.port else 0)
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        for plain_client in plain:
            await plain_client.aclose()


# -- 5. subscribe returns after the confirmation; unsubscribe stops delivery ---------------


async def test_subscribe_confirmed_and_unsubscribe_stops_delivery(
    cluster: ClusterTopology, make_relay: MakeRelay
) -> None:
    relay = await make_relay("relay-a", cluster.seeds)
    sender = await make_relay("relay-b", cluster.seeds)
    for i in range(6):
        channel = f"stomp:broadcast:room:{{confirm-{i}}}"
        owner = cluster.node_for_key(channel)
        await relay.bus.subscribe(channel)
        assert shard_subscribers(owner, channel) == 1, channel  # no wait: confirmed already
    await relay.bus.subscribe("stomp:server:relay-9")
    numsub = 0
    for node in cluster.masters():
        with contextlib.closing(node.client()) as client:
            [(_, count)] = client.pubsub_numsub("stomp:server:relay-9")
            numsub += int(count)
    assert numsub == 1

    gone, stays = room_channels("unsub")[:2]  # one room: one slot, one connection, one order
    owner = cluster.node_for_key(gone)
    await relay.subscribe(gone, stays)
    await sender.bus.publish(gone, sender.envelope())
    await eventually(lambda: len(relay.got[gone]) == 1, "the first envelope")
    await relay.bus.unsubscribe(gone)
    await sender.bus.publish(gone, sender.envelope())
    marker = sender.envelope()
    await sender.bus.publish(stays, marker)
    await eventually(lambda: relay.got[stays] == [marker.id], "the marker")
    assert len(relay.got[gone]) == 1
    await eventually(lambda: shard_subscribers(owner, gone) == 0, "SUNSUBSCRIBE to run")
    assert shard_subscribers(owner, stays) == 1

    # the last channel of a node gone, its connection goes too
    await relay.bus.unsubscribe(stays)
    for i in range(6):
        await relay.bus.unsubscribe(f"stomp:broadcast:room:{{confirm-{i}}}")
    await relay.bus.unsubscribe("stomp:server:relay-9")
    await sender.bus.close()  # only `relay` left on the cluster
    await eventually(
        lambda: count_links(cluster) == ({n.port: 0 for n in cluster.masters()}, 0),
        "every pub/sub connection to go",
    )
    assert relay.bus.available


# -- one sharded connection per master that serves a wanted channel ------------------------


async def test_one_sharded_connection_per_serving_master(
    cluster: ClusterTopology, make_relay: MakeRelay
) -> None:
    masters = cluster.masters()
    used, unused = masters[:2], masters[2]
    rooms = []
    for i in itertools.count():
        room = f"conn-{i}"
        if cluster.node_for_key(room_channels(room)[0]).port in {m.port for m in used}:
            rooms.append(room)
        if len(rooms) == 10:
            break
    relay = await make_relay("relay-a", cluster.seeds)
    sender = await make_relay("relay-b", cluster.seeds)
    channels = [ch for room in rooms for ch in room_channels(room)]
    await relay.subscribe(*channels, CLASSIC[0])
    sent = {}
    for channel in [*channels, CLASSIC[0]]:
        envelope = sender.envelope()
        sent[channel] = [envelope.id]
        await sender.bus.publish(channel, envelope)
    await eventually(lambda: all(relay.got[ch] == sent[ch] for ch in sent), "every envelope")

    await sender.bus.close()  # count `relay`'s connections only
    expected = ({used[0].port: 1, used[1].port: 1, unused.port: 0}, 1)
    await eventually(lambda: count_links(cluster) == expected, f"connections {expected}")
    assert {m.port for m in used} == {cluster.node_for_key(room_channels(r)[0]).port for r in rooms}

    # a room on the third master adds one connection there, no more
    extra = next(
        f"conn-x{i}"
        for i in itertools.count()
        if cluster.node_for_key(room_channels(f"conn-x{i}")[0]).port == unused.port
    )
    await relay.subscribe(*room_channels(extra))
    assert count_links(cluster) == ({m.port: 1 for m in masters}, 1)


# -- a stale slot map: SSUBSCRIBE answered with -MOVED ------------------------------------


async def test_subscribe_follows_moved_when_the_slot_map_is_stale(
    cluster: ClusterTopology, make_relay: MakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stomprelay.cluster.sharded")
    relay = await make_relay("relay-a", cluster.seeds)
    sender = await make_relay("relay-b", cluster.seeds)
    channel = "stomp:broadcast:room:{stale-map}"
    slot = key_slot(b"stale-map")
    source = cluster.node_for_slot(slot)
    target = next(m for m in cluster.masters() if m.port != source.port)
    # moved behind the buses' back: nothing of theirs is on that slot, so no one tells them
    await asyncio.to_thread(cluster.move_slot, slot, target)

    await relay.bus.subscribe(channel)
    assert shard_subscribers(target, channel) == 1
    envelope = sender.envelope()
    await sender.bus.publish(channel, envelope)  # redis-py follows the -MOVED itself
    await eventually(lambda: relay.got[channel] == [envelope.id], "the envelope")
    assert "subscribe redirected: MOVED" in caplog.text
    assert [value for _, value in relay.states] == [True], "a refused SSUBSCRIBE is no outage"


# -- credentials in the seed URL; a refused SSUBSCRIBE is tried again ----------------------


def acl_everywhere(cluster: ClusterTopology, *rule: str) -> None:
    """ACL SETUSER (or DELUSER) on every node: ACLs are per node, not cluster-wide."""
    for node in cluster.nodes:
        with contextlib.closing(node.client()) as client:
            client.execute_command("ACL", *rule)


async def test_credentials_apply_to_every_node_and_refusals_are_retried(
    cluster: ClusterTopology, make_relay: MakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stomprelay.cluster.sharded")
    acl_everywhere(cluster, "SETUSER", "relay", "on", ">s3cret", "~*", "&stomp:*", "+@all")
    try:
        first, *others = cluster.seeds.split(",")
        seeds = ",".join([first.replace("redis://", "redis://relay:s3cret@"), *others])
        relay = await make_relay("relay-a", seeds)
        rooms = [room_channels(f"acl-{i}")[0] for i in range(6)]
        await relay.subscribe(*rooms, CLASSIC[0])
        users = {
            client["user"]
            for node in cluster.masters()
            for client in pubsub_clients(node)
            if int(client["ssub"]) or int(client["sub"])
        }
        assert users == {"relay"}, "a pub/sub connection without the seed's credentials"
        assert len({cluster.node_for_key(ch).port for ch in rooms}) > 1

        forbidden = "forbidden:room:{acl}"
        subscribing = asyncio.create_task(relay.bus.subscribe(forbidden))
        refusal = "subscribe refused: NoPermissionError"
        await eventually(lambda: refusal in caplog.text, "the refusal")
        assert relay.bus.available
        assert not subscribing.done()
        acl_everywhere(cluster, "SETUSER", "relay", "&forbidden:*")
        await asyncio.wait_for(subscribing, 2.0)  # tried again, confirmed, subscribe returns
        assert caplog.text.count(refusal) == 1, "the same refusal is logged once"
        assert shard_subscribers(cluster.node_for_key(forbidden), forbidden) == 1
        envelope = relay.envelope()
        await relay.bus.publish(forbidden, envelope)
        await eventually(lambda: relay.got[forbidden] == [envelope.id], "the envelope")
    finally:
        acl_everywhere(cluster, "DELUSER", "relay")


# -- 3. a live slot migration of a busy room ----------------------------------------------


class Pacer:
    """Publishes round-robin over ``channels`` every :data:`PACE` seconds until stopped;
    ``started`` is the number of publishes begun so far."""

    def __init__(self, relay: Relay, channels: list[str]) -> None:
        self.relay = relay
        self.channels = channels
        self.published: dict[str, list[str]] = defaultdict(list)
        self.order: list[str] = []
        self.started = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for channel in itertools.cycle(self.channels):
            if self._stop.is_set():
                return
            envelope = self.relay.envelope()
            self.published[channel].append(envelope.id)
            self.order.append(envelope.id)
            self.started += 1
            await self.relay.bus.publish(channel, envelope)
            await asyncio.sleep(PACE)

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


def mark_availability(relay: Relay, pacer: Pacer) -> list[tuple[bool, int]]:
    """Record, at each state change of ``relay``, how many publishes had begun."""
    marks: list[tuple[bool, int]] = []
    previous = relay.bus.on_state_change

    def on_change(value: bool) -> None:
        marks.append((value, pacer.started))
        if previous is not None:
            previous(value)

    relay.bus.on_state_change = on_change
    return marks


def after(ids: list[str], started: int) -> list[str]:
    """The ids among ``ids`` whose publish began after ``started`` publishes."""
    return [i for i in ids if _seq(i)[1] >= started]


def lost(relay: Relay, pacer: Pacer, channels: list[str]) -> list[int]:
    """Publisher counters of what ``relay`` did not get on ``channels``."""
    return sorted(
        _seq(i)[1]
        for channel in channels
        for i in set(pacer.published[channel]) - set(relay.got[channel])
    )


async def test_live_slot_migration_of_a_busy_room(
    cluster: ClusterTopology, make_relay: MakeRelay
) -> None:
    room = "busy-room"
    channels = room_channels(room)
    slot = key_slot(room.encode())
    source = cluster.node_for_slot(slot)
    target = next(m for m in cluster.masters() if m.port != source.port)
    calm = next(  # a room the move leaves alone, on the source too
        ch
        for i in itertools.count()
        if cluster.node_for_key(ch := room_channels(f"calm-{i}")[0]).port == source.port
    )

    subscriber = await make_relay("sub", cluster.seeds)
    publisher = await make_relay("pub", cluster.seeds)
    await subscriber.subscribe(*channels, calm)
    pacer = Pacer(publisher, channels)
    marks = mark_availability(subscriber, pacer)
    pacer.start()
    await eventually(lambda: len(subscriber.got[channels[0]]) >= 20, "traffic before the move")

    began = time.monotonic()
    before_move = pacer.started
    await asyncio.to_thread(cluster.move_slot, slot, target)
    moved = time.monotonic() - began
    await eventually(lambda: subscriber.bus.available, "the subscriber to be available")
    result = await settle(pacer, subscriber, channels, "traffic after the move")
    print(
        f"\nmigration of slot {slot} {source.port} -> {target.port} took {moved:.3f} s; "
        f"{pacer.started} published, lost {result.lost}; subscriber states {marks}"
    )
    assert result.duplicated == result.out_of_order == result.spurious == 0, result
    assert out_of_order(subscriber.room_order(channels)) == 0
    # resubscribed on the new owner, and nothing missed once available again
    assert shard_subscribers(target, channels[0]) == 1
    assert all(shard_subscribers(source, ch) == 0 for ch in channels)
    since = marks[-1][1] if marks else 0
    for channel in channels:
        wanted = after(pacer.published[channel], since)
        assert wanted, channel
        assert set(wanted) <= set(subscriber.got[channel]), channel
    if result.lost:
        assert [value for value, _ in marks][-2:] == [False, True], marks
    # and what was lost was published during the move, before the bus was back
    assert all(before_move <= n < since for n in lost(subscriber, pacer, channels)), marks
    # the rest of the source's channels kept their subscription
    envelope = publisher.envelope()
    await publisher.bus.publish(calm, envelope)
    await eventually(lambda: subscriber.got[calm] == [envelope.id], "the calm room")
    await publisher.bus.close()
    expected = ({m.port: int(m.port in (source.port, target.port)) for m in cluster.masters()}, 0)
    await eventually(lambda: count_links(cluster) == expected, f"connections {expected}")


# -- 4. SIGKILL the master of a room's slot ------------------------------------------------


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    require_redis7()
    with ClusterTopology(tmp_path_factory.mktemp("killed"), masters=3, replicas=1) as topo:
        yield topo


async def test_master_killed_then_replica_promoted(
    own_cluster: ClusterTopology, make_relay: MakeRelay
) -> None:
    cluster = own_cluster
    room = "doomed-room"
    channels = room_channels(room)
    victim = cluster.node_for_key(channels[0])
    survivor_room = next(
        f"safe-{i}"
        for i in itertools.count()
        if cluster.node_for_key(room_channels(f"safe-{i}")[0]).port != victim.port
    )
    elsewhere = room_channels(survivor_room)[0]

    subscriber = await make_relay("sub", cluster.seeds)
    publisher = await make_relay("pub", cluster.seeds)
    await subscriber.subscribe(*channels, elsewhere, CLASSIC[1])
    pacer = Pacer(publisher, channels)
    marks = mark_availability(subscriber, pacer)
    publisher_marks = mark_availability(publisher, pacer)
    pacer.start()
    await eventually(lambda: len(subscriber.got[channels[0]]) >= 20, "traffic before the kill")

    killed_at = time.monotonic()
    before_kill = pacer.started
    killed, promoted = await asyncio.to_thread(cluster.kill_master_of, channels[0])
    promoted_after = time.monotonic() - killed_at
    assert killed.port == victim.port
    await eventually(
        lambda: subscriber.bus.available and publisher.bus.available, "both relays available"
    )
    down = [t for t, value in subscriber.states if not value and t >= killed_at]
    up = [t for t, value in subscriber.states if value and t >= killed_at]
    assert down, f"the subscriber never reported the outage: {subscriber.states}"
    assert up, f"the subscriber never came back: {subscriber.states}"
    result = await settle(pacer, subscriber, channels, "traffic after the promotion")
    print(
        f"\nkilled {killed.port}, {promoted.port} promoted {promoted_after:.3f} s later; "
        f"subscriber unavailable after {down[0] - killed_at:.3f} s, available again after "
        f"{up[-1] - killed_at:.3f} s; {pacer.started} published, lost {result.lost}"
    )
    assert result.duplicated == result.out_of_order == result.spurious == 0, result
    assert out_of_order(subscriber.room_order(channels)) == 0
    for channel in channels:
        assert shard_subscribers(promoted, channel) == 1, channel
    # every envelope whose publish began once both relays were available again arrived
    assert marks[-1][0]
    assert not publisher_marks or publisher_marks[-1][0]
    since = max(marks[-1][1], publisher_marks[-1][1] if publisher_marks else 0)
    for channel in channels:
        wanted = after(pacer.published[channel], since)
        assert wanted, channel
        assert set(wanted) <= set(subscriber.got[channel]), channel
    assert all(before_kill <= n < since for n in lost(subscriber, pacer, channels))

    # one connection per serving master, and none left trying the dead one
    await publisher.bus.close()
    serving = {promoted.port, cluster.node_for_key(elsewhere).port}
    expected = ({m.port: int(m.port in serving) for m in cluster.masters()}, 1)
    await eventually(lambda: count_links(cluster) == expected, f"connections {expected}")
    assert not [t for t in asyncio.all_tasks() if t.get_name().endswith(f":{victim.port}")]
    # the other shard and the classic channel still work
    publisher = await make_relay("pub-2", cluster.seeds)
    for channel in (elsewhere, CLASSIC[1]):
        envelope = publisher.envelope()
        await publisher.bus.publish(channel, envelope)

        def arrived(channel: str = channel, envelope: Envelope = envelope) -> bool:
            return envelope.id in subscriber.got[channel]

        await eventually(arrived, channel)
