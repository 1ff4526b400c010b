"""A sentinel's ``+switch-master`` drops the bus's pub/sub connection only when it is
not on the announced master already.

Under Sentinel a relay that lost its master asks the sentinels for the new one every
probe; the sentinel that led the failover names the promoted replica before the others
announce the switch (they learn it from its hello messages a second or two later). A
relay watching one of those others used to come back on the new master, then drop it
at the late announcement and go through a second outage and recovery for nothing (the
fault matrix's ``sentinel-master-kill-wait`` caught it as "went degraded more than once
in one fault"). Here the announcement is handed to a bus on a real Redis directly.
"""

from __future__ import annotations

import asyncio

from clusterhelpers import eventually
from procs import RedisServer

from stomprelay.cluster.redis_bus import RedisBus, switched_to

TIMING: dict[str, float] = {"reconnect_interval": 0.1, "ping_interval": 0.2, "dead_after": 2.0}


def test_the_new_master_is_read_from_the_event() -> None:
    assert switched_to("mymaster 127.0.0.1 6380 127.0.0.1 6381") == ("127.0.0.1", 6381)
    assert switched_to("mymaster 10.0.0.5 6379 10.0.0.7 6379") == ("10.0.0.7", 6379)
    # anything else is not an address: the connection is dropped as before
    assert switched_to("mymaster 127.0.0.1 6380") is None
    assert switched_to("mymaster 127.0.0.1 6380 127.0.0.1 port") is None


async def announce(bus: RedisBus, address: tuple[str, int] | None) -> None:
    """What the sentinel watch does at ``+switch-master`` (and, with None, at the other
    failover events): name the new master and flag the switch."""
    bus._switched_to = address
    bus._switched = True
    await eventually(lambda: not bus._switched, what="the bus read the announcement")


async def test_an_announcement_of_the_master_the_bus_is_on_keeps_the_connection(
    redis_server: RedisServer,
) -> None:
    states: list[bool] = []
    bus = RedisBus(redis_server.url, **TIMING)
    bus.on_state_change = states.append
    await bus.start(lambda channel, envelope: None)
    try:
        await bus.subscribe("chan")
        await eventually(lambda: bus.available, what="the bus is up")
        states.clear()
        pubsub = bus._pubsub
        assert pubsub is not None
        assert pubsub.connection is not None
        here = (pubsub.connection.host, pubsub.connection.port)

        await announce(bus, here)
        await asyncio.sleep(0.5)
        assert states == [], "the bus went down for a switch to the master it is on"
        assert bus._pubsub is pubsub

        # Another address: this connection is on the old master; it is dropped and the
        # bus comes back through a new one.
        await announce(bus, ("127.0.0.1", here[1] + 1))
        await eventually(lambda: states[-1:] == [True], what="the bus is back")
        assert states == [False, True]
        assert bus._pubsub is not pubsub

        # The other failover events name no address: always a drop.
        states.clear()
        await announce(bus, None)
        await eventually(lambda: states[-1:] == [True], what="the bus is back")
        assert states == [False, True]
    finally:
        await bus.close()
