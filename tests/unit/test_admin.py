"""The admin operations (stomprelay.admin) over the in-memory backends: what
``stomprelay inspect/notify/kick`` and the HTTP admin routes both call."""

from __future__ import annotations

import json
import time

import pytest

from stomprelay.admin import Admin, NotTaken
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.errors import PolicyError
from stomprelay.factory import build_backends
from stomprelay.router import Route
from stomprelay.settings import Settings


def memory_admin(**settings: object) -> Admin:
    chosen = Settings(**settings)  # type: ignore[arg-type]
    return Admin(build_backends(chosen), HistoryPolicy.of(chosen))


async def test_a_room_notification_takes_its_place_in_the_log() -> None:
    admin = memory_admin()
    first = await admin.notify("the lobby closes", "lobby")
    second = await admin.notify("closed", "lobby")
    assert first.offset is not None
    assert second.offset == first.offset + 1
    assert first.channel == admin.backends.keys.room_channel("lobby")
    room = await admin.room("lobby")
    assert room is not None
    assert room.info == {"roomId": "lobby", "participants": 0}
    assert room.history is not None
    assert room.history["lastOffset"] == second.offset
    assert room.participants == []
    assert room.as_json()["history"] == room.history


async def test_an_unlogged_room_is_not_found() -> None:
    admin = memory_admin(history_size=0)
    await admin.notify("nobody hears", "empty")
    assert await admin.room("empty") is None
    assert await admin.room("never") is None


async def test_broadcast_and_one_relay_go_through_the_publish_given() -> None:
    sent: list[tuple[str, Envelope]] = []

    async def publish(channel: str, envelope: Envelope) -> int:
        sent.append((channel, envelope))
        return 3

    chosen = Settings()
    admin = Admin(build_backends(chosen), HistoryPolicy.of(chosen), publish=publish)
    everyone = await admin.notify("maintenance at noon")
    one = await admin.notify("restarting", "lobby", "relay-b")
    keys = admin.backends.keys
    assert (everyone.channel, everyone.listeners) == (keys.system_channel, 3)
    assert (one.channel, one.offset) == (keys.server_channel("relay-b"), None)
    assert [channel for channel, _ in sent] == [keys.system_channel, keys.server_channel("relay-b")]
    assert json.loads(sent[0][1].body)["message"] == "maintenance at noon"


@pytest.mark.parametrize(("message", "room"), [("", ""), ("x" * 5000, ""), ("hi", "a*b")])
async def test_bad_notifications_are_refused_before_anything_is_sent(
    message: str, room: str
) -> None:
    admin = memory_admin()
    with pytest.raises(PolicyError):
        await admin.notify(message, room)


async def test_a_kick_is_recorded_and_lifted() -> None:
    admin = memory_admin()
    until = int(time.time() * 1000) + 60_000
    await admin.kick("alice", until)
    registry = admin.backends.registry
    assert (await registry.suspensions(int(time.time() * 1000))).until == {"alice": until}
    await admin.kick("alice", None, lift=True)
    assert (await registry.suspensions(int(time.time() * 1000))).until == {}


class FullJournal:
    """A relay whose journal is full: a room event cannot be taken now."""

    def __init__(self) -> None:
        self.kicks: list[tuple[str, int | None, bool]] = []

    async def send_envelope(self, route: Route, channel: str, envelope: Envelope) -> None:
        raise PolicyError("Journal full", "Redis is unreachable and the journal is full.")

    async def kick(self, user: str, until_ms: int | None, lift: bool = False) -> None:
        self.kicks.append((user, until_ms, lift))


async def test_inside_a_relay_its_delivery_is_used() -> None:
    chosen = Settings()
    relay = FullJournal()
    admin = Admin(build_backends(chosen), HistoryPolicy.of(chosen), relay)
    with pytest.raises(NotTaken, match="journal is full"):
        await admin.notify("hello", "lobby")
    await admin.kick("bob", 5, lift=False)
    assert relay.kicks == [("bob", 5, False)]


async def test_reads_of_an_empty_cluster() -> None:
    admin = memory_admin()
    assert await admin.servers() == []
    assert await admin.sessions() == []
    assert await admin.rooms() == []
    assert await admin.session("nope") is None
    assert await admin.dump() == []
