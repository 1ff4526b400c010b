"""Durable rooms on one relay (in memory): offsets, history, resume, limits (docs/history.md).

The same rules hold over Redis; tests/cluster/test_log.py runs the log contract over
both backends, tests/faults/ drives resume through faults with several relays.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jsclient import StompJsClient
from pyclient import PyClients
from stompclient import StompClient

from stomprelay.stomp.frames import Frame
from stomprelay.transport import RelayServer

LOBBY = "/topic/room/lobby"


def ws(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


@pytest.fixture
async def connect(make_relay: Any) -> AsyncIterator[Any]:
    made: list[StompClient] = []

    async def factory(server: RelayServer, name: str = "") -> StompClient:
        client = await StompClient.connect(ws(server), name=name or f"c{len(made)}")
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


async def subscribe_raw(client: StompClient, destination: str, sub_id: str, **extra: str) -> Frame:
    """SUBSCRIBE with extra headers (``x_since_offset=...``); returns the RECEIPT frame."""
    headers = [(k.replace("_", "-"), v) for k, v in extra.items()]
    return await client.subscribe_receipt(destination, sub_id, headers)


async def publish(client: StompClient, destination: str, bodies: list[str]) -> None:
    for body in bodies:
        await client.send(destination, body.encode(), receipt=True)


def offsets(frames: list[Frame]) -> list[int]:
    return [int(f.get("x-offset") or 0) for f in frames]


async def test_messages_carry_contiguous_offsets_and_one_epoch(relay, connect) -> None:
    pub, sub = await connect(relay), await connect(relay)
    await sub.subscribe(LOBBY, "a")
    await sub.subscribe("/topic/news", "b")
    await publish(pub, LOBBY, [f"m{i}" for i in range(5)])
    await publish(pub, "/topic/news", ["n1", "n2"])
    room = await sub.collect(5, "a")
    news = await sub.collect(2, "b")
    assert offsets(room) == [1, 2, 3, 4, 5]
    assert offsets(news) == [1, 2]
    assert len({f.get("x-epoch") for f in room}) == 1
    assert news[0].get("x-epoch")
    assert all(f.get("x-degraded") is None for f in room)


async def test_room_events_take_their_place_in_the_log(relay, connect) -> None:
    alice = await connect(relay)
    await alice.subscribe(LOBBY, "room")
    await alice.join("lobby", "alice")
    await alice.chat("lobby", "hello")
    await alice.send(LOBBY, b"raw", receipt=True)
    frames = await alice.collect(3, "room")
    assert offsets(frames) == [1, 2, 3]
    assert [json.loads(f.body).get("type") for f in frames[:2]] == ["JOIN", "CHAT"]


async def test_x_history_replays_the_last_k_after_the_receipt(relay, connect) -> None:
    pub = await connect(relay)
    await publish(pub, LOBBY, [f"m{i}" for i in range(1, 11)])
    late = await connect(relay)
    receipt = await subscribe_raw(late, LOBBY, "h", x_history="4")
    assert receipt.get("x-offset") == "10"
    assert receipt.get("x-epoch")
    got = await late.collect(4, "h")
    assert [f.body for f in got] == [b"m7", b"m8", b"m9", b"m10"]
    assert offsets(got) == [7, 8, 9, 10]
    await publish(pub, LOBBY, ["live"])
    (live,) = await late.collect(1, "h")
    assert live.body == b"live"
    assert live.get("x-offset") == "11"
    await late.expect_no_message("h", within=0.3)


async def test_resume_delivers_exactly_what_was_missed_with_a_publisher_running(
    make_relay, connect
) -> None:
    relay = await make_relay(frame_rate=0)  # the publisher outruns the per-session rate limit
    pub, watcher = await connect(relay), await connect(relay)
    await watcher.subscribe(LOBBY, "w")
    await publish(pub, LOBBY, [f"m{i}" for i in range(1, 6)])
    first = await connect(relay)
    await first.subscribe(LOBBY, "s")
    await publish(pub, LOBBY, ["m6"])
    (seen,) = await first.collect(1, "s")
    epoch, last = seen.get("x-epoch") or "", int(seen.get("x-offset") or 0)
    await first.close()

    stop = asyncio.Event()

    async def keep_publishing() -> None:
        i = 100
        while not stop.is_set():
            await pub.send(LOBBY, f"m{i}".encode(), receipt=True)
            i += 1

    await publish(pub, LOBBY, [f"m{i}" for i in range(7, 31)])
    runner = asyncio.create_task(keep_publishing())
    back = await connect(relay)
    receipt = await subscribe_raw(back, LOBBY, "s", x_since_offset=str(last), x_since_epoch=epoch)
    assert receipt.get("x-recovered") == "true"
    assert int(receipt.get("x-offset") or 0) >= 30
    await asyncio.sleep(0.3)
    stop.set()
    await runner
    await asyncio.sleep(0.3)
    # everything the watcher saw after the resumer's offset, in order, once, same ids
    watched = [f for f in watcher.received("w") if int(f.get("x-offset") or 0) > last]
    got = back.received("s")
    assert len(got) == len(watched) > 24
    assert offsets(got) == list(range(last + 1, last + 1 + len(got)))
    assert [f.get("message-id") for f in got] == [f.get("message-id") for f in watched]


async def test_resume_after_trim_or_with_another_epoch_is_not_recovered(
    make_relay, connect
) -> None:
    relay = await make_relay(history_size=5, history_min_age=0)
    pub = await connect(relay)
    await publish(pub, LOBBY, [f"m{i}" for i in range(1, 13)])
    trimmed = await connect(relay)
    receipt = await subscribe_raw(trimmed, LOBBY, "t", x_since_offset="2", x_since_epoch="x")
    assert receipt.get("x-recovered") == "false"  # another epoch: all retained follow
    assert offsets(await trimmed.collect(5, "t")) == [8, 9, 10, 11, 12]
    epoch = receipt.get("x-epoch") or ""
    again = await connect(relay)
    receipt = await subscribe_raw(again, LOBBY, "t", x_since_offset="2", x_since_epoch=epoch)
    assert receipt.get("x-recovered") == "false"  # offsets 3-7 were trimmed
    assert offsets(await again.collect(5, "t")) == [8, 9, 10, 11, 12]
    fine = await connect(relay)
    receipt = await subscribe_raw(fine, LOBBY, "t", x_since_offset="10", x_since_epoch=epoch)
    assert receipt.get("x-recovered") == "true"
    assert offsets(await fine.collect(2, "t")) == [11, 12]


async def test_resume_within_the_min_age_gets_more_than_the_log_size(make_relay, connect) -> None:
    """Retention keeps every message younger than --history-min-age past --history-size
    (docs/history.md): a client back soon after a burst gets all it missed; past
    --history-max-size the oldest go and the RECEIPT says so."""
    relay = await make_relay(history_size=5, history_max_size=20)
    pub = await connect(relay)
    await publish(pub, LOBBY, [f"m{i}" for i in range(1, 19)])
    first = await connect(relay)
    receipt = await subscribe_raw(first, LOBBY, "t", x_history="1")
    epoch = receipt.get("x-epoch") or ""
    back = await connect(relay)
    receipt = await subscribe_raw(back, LOBBY, "t", x_since_offset="2", x_since_epoch=epoch)
    assert receipt.get("x-recovered") == "true"
    assert offsets(await back.collect(16, "t")) == list(range(3, 19))
    await publish(pub, LOBBY, [f"n{i}" for i in range(1, 7)])  # 24 messages: cap 20
    late = await connect(relay)
    receipt = await subscribe_raw(late, LOBBY, "t", x_since_offset="2", x_since_epoch=epoch)
    assert receipt.get("x-recovered") == "false"
    assert offsets(await late.collect(20, "t")) == list(range(5, 25))


@pytest.mark.parametrize(
    ("name", "value"),
    [("x-since-offset", "-1"), ("x-since-offset", "abc"), ("x-history", "1e3"), ("x-history", "²")],
)
async def test_bad_resume_headers_are_an_error(relay, connect, name: str, value: str) -> None:
    client = await connect(relay)
    await client.send_frame(
        Frame("SUBSCRIBE", (("id", "1"), ("destination", LOBBY), (name, value), ("receipt", "r")))
    )
    assert await client.wait_closed() is not None
    (error,) = client.errors
    assert error.get("receipt-id") == "r"
    assert name in (error.get("message") or "")


async def test_relay_headers_on_a_send_are_replaced(relay, connect) -> None:
    pub, sub = await connect(relay), await connect(relay)
    await sub.subscribe(LOBBY, "a")
    await pub.send(
        LOBBY,
        b"forged",
        [("x-offset", "999"), ("x-epoch", "fake"), ("x-gap", "1-2"), ("x-degraded", "true")],
        receipt=True,
    )
    (frame,) = await sub.collect(1, "a")
    assert frame.get("x-offset") == "1"
    assert frame.get("x-epoch") != "fake"
    assert frame.get("x-gap") is None
    assert frame.get("x-degraded") is None
    assert [k for k, _ in frame.headers].count("x-offset") == 1


async def test_history_settings_turn_logs_off(make_relay, connect) -> None:
    rooms_only = await make_relay(history_rooms_only=True, server_id="r1")
    pub, sub = await connect(rooms_only), await connect(rooms_only)
    await sub.subscribe("/topic/news", "n")
    await sub.subscribe(LOBBY, "l")
    await publish(pub, "/topic/news", ["a"])
    await publish(pub, LOBBY, ["b"])
    assert (await sub.collect(1, "n"))[0].get("x-offset") is None
    assert (await sub.collect(1, "l"))[0].get("x-offset") == "1"

    off = await make_relay(history_size=0, server_id="r2")
    pub, sub = await connect(off), await connect(off)
    receipt = await subscribe_raw(sub, LOBBY, "l", x_history="5")
    assert receipt.get("x-offset") is None
    await publish(pub, LOBBY, ["c"])
    assert (await sub.collect(1, "l"))[0].get("x-offset") is None


async def test_topics_past_the_log_cap_are_relayed_without_offsets(make_relay, connect) -> None:
    relay = await make_relay(history_max_topics=2)
    pub, sub = await connect(relay), await connect(relay)
    for name in ("t1", "t2", "t3"):
        await sub.subscribe(f"/topic/{name}", name)
        await publish(pub, f"/topic/{name}", [name])
    got = {name: (await sub.collect(1, name))[0] for name in ("t1", "t2", "t3")}
    assert got["t1"].get("x-offset") == "1"
    assert got["t2"].get("x-offset") == "1"
    assert got["t3"].get("x-offset") is None
    # rooms are not counted against the cap
    await sub.subscribe(LOBBY, "room")
    await publish(pub, LOBBY, ["r"])
    assert (await sub.collect(1, "room"))[0].get("x-offset") == "1"


@pytest.fixture
async def pyclients(make_relay: Any) -> AsyncIterator[PyClients]:
    pool = PyClients()
    yield pool
    await pool.aclose()


async def test_stomp_py_resumes_with_plain_headers(relay, connect, pyclients) -> None:
    pub = await connect(relay)
    await publish(pub, LOBBY, ["a", "b", "c"])
    client = pyclients(relay, "ws")
    await client.connect()
    await client.run(
        client.conn.subscribe,
        LOBBY,
        "s1",
        headers={"x-since-offset": "1", "x-since-epoch": "unknown", "receipt": "r1"},
    )
    receipt = await client.receipt("r1")
    assert receipt.headers.get("x-recovered") == "false"
    epoch = receipt.headers["x-epoch"]
    got = [await client.message() for _ in range(3)]
    assert [m.body for m in got] == [b"a", b"b", b"c"]
    await client.run(client.conn.unsubscribe, "s1")
    await client.run(
        client.conn.subscribe,
        LOBBY,
        "s2",
        headers={"x-since-offset": "2", "x-since-epoch": epoch, "receipt": "r2"},
    )
    receipt = await client.receipt("r2")
    assert receipt.headers.get("x-recovered") == "true"
    assert receipt.headers.get("x-offset") == "3"
    (message,) = [await client.message()]
    assert message.body == b"c"
    assert message.headers["x-offset"] == "3"


@pytest.mark.node
async def test_stompjs_resumes_with_plain_headers(relay, connect, stompjs: StompJsClient) -> None:
    pub = await connect(relay)
    await publish(pub, LOBBY, ["a", "b", "c", "d"])
    await stompjs.connect(ws(relay))
    await stompjs.subscribe(LOBBY, sub_id="h", receipt="rh", headers={"x-history": "2"})
    receipt = await stompjs.expect("receipt", lambda e: e["receipt_id"] == "rh")
    assert receipt["headers"]["x-offset"] == "4"
    epoch = receipt["headers"]["x-epoch"]
    first = [await stompjs.expect("message") for _ in range(2)]
    assert [m["body"] for m in first] == ["c", "d"]
    await stompjs.unsubscribe("h")
    await publish(pub, LOBBY, ["e", "f"])
    await stompjs.subscribe(
        LOBBY,
        sub_id="r",
        receipt="rr",
        headers={"x-since-offset": "4", "x-since-epoch": epoch},
    )
    receipt = await stompjs.expect("receipt", lambda e: e["receipt_id"] == "rr")
    assert receipt["headers"]["x-recovered"] == "true"
    resumed = [await stompjs.expect("message") for _ in range(2)]
    assert [(m["body"], m["headers"]["x-offset"]) for m in resumed] == [("e", "5"), ("f", "6")]
