"""The connection layer (``stomprelay/transport``) over real sockets: HTTP through
h11, WebSocket limits, writes and backpressure, the one timer, and memory."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import time
import weakref
from typing import Any

import pytest
from clusterhelpers import eventually
from stompclient import StompClient
from websockets.asyncio.client import connect
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from stomprelay.factory import build_relay
from stomprelay.router import parse_destination
from stomprelay.settings import Settings
from stomprelay.stomp.frames import Frame
from stomprelay.stomp.parser import FrameParser
from stomprelay.stomp.session import ServerSession, State
from stomprelay.transport import RelayServer, StompProtocol
from stomprelay.transport.hub import YOUNG_EVERY
from stomprelay.transport.stomp_protocol import BATCH, SLICE
from stomprelay.transport.websocket import WebSocketLayer


async def http(port: int, data: bytes | list[bytes], *, wait: float = 3.0) -> bytes:
    """Send raw bytes (a list: one write each, flushed separately), read until the
    server closes or ``wait`` passes with nothing new."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in data if isinstance(data, list) else [data]:
        writer.write(chunk)
        await writer.drain()
        if isinstance(data, list):
            await asyncio.sleep(0)
    out = b""
    try:
        while True:
            got = await asyncio.wait_for(reader.read(65536), wait)
            if not got:
                break
            out += got
    except TimeoutError:
        pass
    writer.close()
    return out


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of consecutive Content-Length responses."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        length = 0
        for line in lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((int(status_line.split(b" ")[1]), rest[:length]))
        raw = rest[length:]
    return out


def statuses(raw: bytes) -> list[int]:
    return [status for status, _ in responses(raw)]


def bodies(raw: bytes) -> list[bytes]:
    return [body for _, body in responses(raw)]


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- HTTP through h11 -----------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection(
    relay: RelayServer, no_tracebacks: Any
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    for _ in range(3):
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = json.loads(await reader.readexactly(length))
        assert body["serverId"] == "test-relay"
    writer.close()


async def test_pipelined_requests_are_answered_in_order(
    relay: RelayServer, no_tracebacks: Any
) -> None:
    raw = await http(
        relay.port,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert statuses(raw) == [200, 404, 200]
    health, _, ready = bodies(raw)
    assert json.loads(health)["status"] == "ok"
    assert json.loads(ready) == {"status": "ready"}


async def test_a_request_split_into_single_bytes(relay: RelayServer, no_tracebacks: Any) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = await http(relay.port, [request[i : i + 1] for i in range(len(request))])
    assert statuses(raw) == [200]


@pytest.fixture
async def admin(make_relay: Any) -> RelayServer:
    relay = build_relay(Settings(), server_id="admin")
    server = RelayServer(relay, port=0, admin_token="s3cret")
    await server.start()
    yield server  # type: ignore[misc]
    await server.stop()


NOTIFY = b'{"message": "maintenance at noon"}'


async def test_chunked_post_body(admin: RelayServer, no_tracebacks: Any) -> None:
    chunks = [NOTIFY[:10], NOTIFY[10:]]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    raw = await http(
        admin.port,
        b"POST /api/system/notifications HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + body,
    )
    assert statuses(raw) == [202]
    assert json.loads(bodies(raw)[0])["published"] is True


def post(body: bytes, *headers: bytes) -> bytes:
    return (
        b"POST /api/system/notifications HTTP/1.1\r\nHost: x\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # a Latin-1 superscript two is not a digit to HTTP
        ([b"Authorization: Bearer s3cret", "Content-Length: \u00b2".encode("latin-1")], 400),
        # two different lengths: which body is it?
        ([b"Authorization: Bearer s3cret", b"Content-Length: 34", b"Content-Length: 3"], 400),
        ([b"Authorization: s3cret", b"Content-Length: 34"], 401),
        ([b"Authorization: Basic s3cret", b"Content-Length: 34"], 401),
        ([b"Authorization: bearer s3cret", b"Content-Length: 34"], 202),
        ([b"Authorization: BEARER  s3cret", b"Content-Length: 34"], 202),
        ([b"Authorization: Bearer s3cret", b"Content-Length: 999999999"], 413),
    ],
)
async def test_bad_post_heads_get_a_status_never_a_traceback(
    admin: RelayServer, no_tracebacks: Any, headers: list[bytes], expected: int
) -> None:
    raw = await http(admin.port, post(NOTIFY, *headers, b"Connection: close"))
    assert statuses(raw) == [expected], raw[:300]


@pytest.mark.parametrize(
    "target",
    [
        b"/" + b"a" * 300,
        b"/a/" + b"b" * 256 + b"/c",
        b"/x%00y",
        b"/\x00",
        b"/../../etc/passwd",
        b"/" + b"a/" * 2000,
    ],
)
async def test_bad_paths_are_404s(relay: RelayServer, no_tracebacks: Any, target: bytes) -> None:
    raw = await http(
        relay.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert statuses(raw) in ([404], [400]), raw[:200]


async def test_garbage_and_oversized_heads_get_4xx(relay: RelayServer, no_tracebacks: Any) -> None:
    assert statuses(await http(relay.port, b"HELLO THERE\r\n\r\n"))[0] == 400
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    assert statuses(await http(relay.port, huge))[0] in (400, 431)
    put = b"PUT /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert statuses(await http(relay.port, put)) == [405]


async def test_plain_get_of_the_websocket_path(relay: RelayServer, no_tracebacks: Any) -> None:
    raw = await http(relay.port, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(raw)[0] in (400, 426)


async def test_an_idle_http_connection_is_closed_after_the_handshake_timeout(
    make_relay: Any,
) -> None:
    server = await make_relay(handshake_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /hea")
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert time.monotonic() - started < 2
    writer.close()


# -- WebSocket limits ----------------------------------------------------------


async def test_an_oversized_websocket_message_gets_an_error_naming_the_limit(
    make_relay: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_relay(max_message_size=100_000)
    async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
        await ws.send(Frame("CONNECT", (("accept-version", "1.2"),)).serialize("1.2"))
        assert str(await ws.recv()).startswith("CONNECTED")
        frame = Frame("SEND", (("destination", "/topic/a"), ("receipt", "r1")), b"x" * 200_000)
        await ws.send(frame.serialize("1.2"))
        error = FrameParser(version="1.2")
        error.feed(str(await ws.recv()).encode())
        parsed = error.next_frame()
        assert parsed is not None
        assert parsed.command == "ERROR"
        assert parsed.get("message") == "Message too large"
        assert b"100000 bytes" in parsed.body
        with pytest.raises(Exception):  # noqa: B017, PT011
            await asyncio.wait_for(ws.recv(), 3)
        assert ws.close_code == 1009
    assert any("over 100000 bytes" in r.getMessage() for r in caplog.records)


async def test_permessage_deflate_is_not_negotiated(relay: RelayServer) -> None:
    async with connect(f"ws://127.0.0.1:{relay.port}/ws", compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_frames_sent_with_the_handshake_are_read(relay: RelayServer) -> None:
    """A client that does not wait for the 101: its CONNECT and SEND came in the
    same read as its handshake, and are answered."""
    import base64

    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    head = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: "
        + base64.b64encode(b"0123456789abcdef")
        + b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
    )
    frames = [
        stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", "0,0")),
        stomp("SEND", ("destination", "/topic/a"), ("receipt", "r1")),
    ]
    writer.write(head + b"".join(WsFrame(Opcode.TEXT, f).serialize(mask=True) for f in frames))
    got = b""
    while b"RECEIPT" not in got:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, got
        got += chunk
    assert b" 101 " in got
    assert b"CONNECTED" in got
    assert b"receipt-id:r1" in got
    writer.close()


# -- writes and backpressure ----------------------------------------------------


def stomp(command: str, *headers: tuple[str, str], body: bytes = b"") -> bytes:
    return Frame(command, headers, body).serialize("1.2")


async def raw_subscriber(port: int, destination: str, rcvbuf: int | None = None) -> socket.socket:
    """A STOMP/TCP subscriber on a blocking socket that reads only when told."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", "0,0")))
    sock.sendall(stomp("SUBSCRIBE", ("id", "s"), ("destination", destination), ("receipt", "r")))
    sock.settimeout(5)
    got = b""
    while b"RECEIPT" not in got:
        got += await asyncio.to_thread(sock.recv, 65536)
    return sock


@pytest.mark.parametrize(
    ("bound", "body"),
    [
        ({"send_queue_bytes": 256 * 1024, "send_queue_frames": 1_000_000}, 60_000),
        ({"send_queue_bytes": 1 << 30, "send_queue_frames": 100}, 2_000),
    ],
    ids=["bytes", "frames"],
)
async def test_a_socket_that_takes_nothing_is_dropped_by_its_queue_bound(
    make_relay: Any, bound: dict[str, int], body: int
) -> None:
    server = await make_relay(**bound)
    relay = server.relay
    sock = await raw_subscriber(server.stomp_port, "/topic/watch", rcvbuf=4096)
    route = parse_destination("/topic/watch")
    for _ in range(5000):  # far past what the kernel buffers hold
        await relay.sender.send(route, "/topic/watch", (), b"z" * body)
        if relay.metrics.slow_consumers._value.get():
            break
        await asyncio.sleep(0.001)
    assert relay.metrics.slow_consumers._value.get() == 1
    await eventually(lambda: not relay.sinks, what="the slow consumer's session is gone")
    sock.close()


async def test_a_slow_consumer_is_dropped_while_its_neighbours_keep_their_order(
    make_relay: Any,
) -> None:
    server = await make_relay(send_timeout=1.0, frame_rate=0, byte_rate=0)
    url = f"ws://127.0.0.1:{server.port}/ws"
    fast = [await StompClient.connect(url, name=f"fast{i}") for i in range(2)]
    for client in fast:
        await client.subscribe("/topic/room/busy", "s")
    slow = await raw_subscriber(server.stomp_port, "/topic/room/busy", rcvbuf=4096)
    publisher = await StompClient.connect(url, name="pub")
    body = b"m" * 4000
    for i in range(3000):
        await publisher.send(
            "/topic/room/busy", body + str(i).encode(), receipt=i % 50 == 49, timeout=20
        )
    for client in fast:
        got = await client.collect(3000, "s", timeout=30)
        assert [int(f.body[4000:]) for f in got] == list(range(3000))
    assert server.relay.metrics.slow_consumers._value.get() == 1
    for client in (*fast, publisher):
        await client.close()
    slow.close()


async def test_a_flooding_publisher_is_slowed_down_and_readers_are_not_dropped(
    make_relay: Any,
) -> None:
    """One publisher sends as fast as it can to a room of 20 that read as fast as
    they can: it is held back (its socket unread) instead of its readers dropped."""
    server = await make_relay(frame_rate=0, byte_rate=0)  # flow control, not the rate limit
    url = f"ws://127.0.0.1:{server.port}/ws"
    readers = [await StompClient.connect(url, name=f"r{i}") for i in range(20)]
    for client in readers:
        await client.subscribe("/topic/room/flood", "s")
    publisher = await StompClient.connect(url, name="flood")
    count = 3000
    for i in range(count):  # one WebSocket message per frame, none waiting for a RECEIPT
        await publisher.ws.send(
            stomp("SEND", ("destination", "/topic/room/flood"), body=b"%d" % i + b"." * 200)
        )
    for client in readers:
        got = await client.collect(count, "s", timeout=60)
        assert [int(f.body.rstrip(b".")) for f in got] == list(range(count))
    assert server.relay.metrics.slow_consumers._value.get() == 0
    for client in (*readers, publisher):
        await client.close()


@pytest.mark.parametrize("over", ["ws", "tcp"])
async def test_a_burst_read_at_once_is_handled_in_steps_with_another_socket_between(
    make_relay: Any, over: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1000 SENDs delivered to one socket in one read are handled a step at a time
    (BATCH messages, or a slice of bytes), each step a turn of its own; a SEND that another socket
    delivers just after is handled between two of those steps, not after the
    burst; the burst still reaches its subscriber whole and in order."""
    server = await make_relay(frame_rate=0, byte_rate=0)
    relay = server.relay
    url = f"ws://127.0.0.1:{server.port}/ws"
    reader = await StompClient.connect(url, name="reader")
    await reader.subscribe("/topic/room/flood", "s")
    other_reader = await StompClient.connect(url, name="other-reader")
    await other_reader.subscribe("/topic/room/calm", "s")
    known = set(relay.sinks)
    if over == "ws":
        flooder = await StompClient.connect(url, name="flood")
    else:
        tcp = socket.create_connection(("127.0.0.1", server.stomp_port))
        tcp.sendall(stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", "0,0")))
    await eventually(lambda: len(relay.sinks) == len(known) + 1, what="the flooder's session")
    (flood_id,) = set(relay.sinks) - known
    other = await StompClient.connect(url, name="other")
    await eventually(lambda: len(relay.sinks) == len(known) + 2, what="the other session")
    (other_id,) = set(relay.sinks) - known - {flood_id}
    flood_sink, other_sink = relay.sinks[flood_id], relay.sinks[other_id]
    assert isinstance(flood_sink, StompProtocol)
    assert isinstance(other_sink, StompProtocol)
    await eventually(lambda: flood_sink.session.state is State.OPEN, what="CONNECTED")

    steps: list[tuple[str, int]] = []
    handle = relay.handle

    async def counted(sink: Any, events: list[Any]) -> None:
        steps.append((sink.session.session_id, len(events)))
        await handle(sink, events)

    handle_now = relay.handle_now

    def counted_now(sink: Any, events: list[Any]) -> bool:
        # a step of SENDs that wait on nothing is handled without a task
        handled = handle_now(sink, events)
        if handled:
            steps.append((sink.session.session_id, len(events)))
        return handled

    relay.handle = counted  # type: ignore[method-assign]
    relay.handle_now = counted_now  # type: ignore[method-assign]

    def frame(destination: str, body: bytes) -> bytes:
        raw = stomp("SEND", ("destination", destination), body=body)
        if over == "tcp" and destination.endswith("flood"):
            return raw
        return WsFrame(Opcode.TEXT, raw).serialize(mask=True, extensions=[])

    parsed: list[int] = []  # bytes parsed at a time, from the flooder's socket
    if over == "ws":
        layer = flood_sink._ws  # the WebSocket layer: what parses
        assert layer is not None
        receive = WebSocketLayer.receive

        def parse(self: WebSocketLayer, data: bytes) -> None:
            if self is layer:
                parsed.append(len(data))
                steps.append(("parse", len(data)))
            receive(self, data)

        monkeypatch.setattr(WebSocketLayer, "receive", parse)

    burst = b"".join(frame("/topic/room/flood", b"%d" % i) for i in range(1000))
    flood_sink.data_received(burst)  # one read of the whole burst
    # its first step was handled in that read's callback, the rest waits
    assert [sid for sid, _ in steps if sid != "parse"] == [flood_id]
    other_sink.data_received(frame("/topic/room/calm", b"calm"))  # the next socket read
    assert [sid for sid, _ in steps if sid != "parse"] == [flood_id, other_id]
    got = await reader.collect(1000, "s", timeout=30)
    assert [int(f.body) for f in got] == list(range(1000))
    assert [f.body for f in await other_reader.collect(1, "s", timeout=10)] == [b"calm"]

    if over == "ws":  # parsed a slice at a time, the calm SEND before the end of it
        assert sum(parsed) == len(burst)
        assert max(parsed) <= SLICE
        last_parse = max(i for i, (sid, _) in enumerate(steps) if sid == "parse")
        assert steps.index((other_id, 1)) < last_parse
    flood_steps = [i for i, (sid, _) in enumerate(steps) if sid == flood_id]
    (calm_step,) = [i for i, (sid, _) in enumerate(steps) if sid == other_id]
    assert sum(steps[i][1] for i in flood_steps) == 1000
    # a WebSocket step is BATCH messages; a TCP step stops after BATCH frames, at the
    # end of a SLICE of bytes (or less)
    most = BATCH if over == "ws" else BATCH + SLICE // len(stomp("SEND"))
    assert all(steps[i][1] <= most for i in flood_steps)
    assert flood_steps[0] < calm_step < flood_steps[-1]
    assert len(flood_steps) >= 1000 // most
    relay.handle = handle  # type: ignore[method-assign]
    for client in (reader, other_reader, other):
        await client.close()
    if over == "ws":
        await flooder.close()
    else:
        tcp.close()


async def test_an_idle_connection_is_written_at_once_and_a_busy_one_once_per_turn(
    relay: RelayServer,
) -> None:
    """A connection not written since the writer's last turn gets its frame at once
    (a quiet room's message does not wait for a turn); once written, what else is
    queued before the next writer turn waits for that turn's one write; after a turn
    without it, it counts as idle again. Every frame arrives, in order."""
    client = await StompClient.connect(f"ws://127.0.0.1:{relay.port}/ws", name="c")
    (sink,) = relay.relay.sinks.values()
    assert isinstance(sink, StompProtocol)
    hub, session = sink.hub, sink.session
    receipts = [client._expect_receipt(f"r{i}") for i in range(4)]

    def queue(i: int) -> None:
        session.send_receipt(f"r{i}", time.monotonic())
        sink.flush()

    def written() -> bool:
        return not sink._dirty and not session.data_to_send()

    hub._write_all()  # whatever the connection still had queued
    hub._write_all()  # a writer turn without this connection: it is idle
    queue(0)
    assert written()  # at once
    queue(1)
    assert sink._dirty  # written since the last turn: waits for the turn's write
    queue(2)  # joins the same write
    hub._write_all()
    assert written()
    hub._write_all()  # a turn without it: idle again
    queue(3)
    assert written()
    frames = await asyncio.wait_for(asyncio.gather(*receipts), 5)
    assert [f.get("receipt-id") for f in frames] == ["r0", "r1", "r2", "r3"]
    await client.close()


async def test_the_young_generation_is_collected_every_few_writer_turns(
    relay: RelayServer,
) -> None:
    """Garbage in a reference cycle goes within YOUNG_EVERY writer turns, even when
    the collector's own count would not start a collection (as under a flood that
    frees old objects as fast as it makes young ones)."""
    client = await StompClient.connect(f"ws://127.0.0.1:{relay.port}/ws", name="c")
    (sink,) = relay.relay.sinks.values()
    assert isinstance(sink, StompProtocol)
    hub = sink.hub

    class Cycle:
        me: Any = None

    threshold = gc.get_threshold()
    gc.set_threshold(1_000_000_000, threshold[1], threshold[2])
    try:
        garbage = Cycle()
        garbage.me = garbage
        gone = weakref.ref(garbage)
        del garbage
        for _ in range(YOUNG_EVERY):
            assert gone() is not None
            hub.mark(sink)
            hub._write_all()
            if gone() is None:
                break
        assert gone() is None
    finally:
        gc.set_threshold(*threshold)
    await client.close()


# -- timers ---------------------------------------------------------------------


async def test_heart_beats_follow_what_the_client_asks_within_the_floor(
    make_relay: Any,
) -> None:
    server = await make_relay(heartbeat_send_ms=500, heartbeat_receive_ms=500)
    for asked, expected in (("1000,1000", 1.0), ("100,100", 0.5), ("0,0", 0.0)):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.stomp_port)
        writer.write(stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", asked)))
        await reader.readuntil(b"\x00")
        sessions = list(server.relay.sinks.values())
        session = sessions[-1].session
        assert session.send_interval == expected
        assert session.receive_interval == expected
        writer.close()
        await asyncio.sleep(0.05)


async def test_no_task_per_idle_connection(make_relay: Any) -> None:
    server = await make_relay()
    before = len(asyncio.all_tasks())
    clients = []
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.stomp_port)
        writer.write(stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", "1000,1000")))
        await reader.readuntil(b"\x00")
        clients.append((reader, writer))
    await asyncio.sleep(0.2)
    assert len(asyncio.all_tasks()) - before < 5
    assert len(server.timers) >= 50
    for _, writer in clients:
        writer.close()


# -- memory ---------------------------------------------------------------------


async def test_a_closed_connection_is_freed_without_the_garbage_collector(
    relay: RelayServer,
) -> None:
    gc.collect()
    gc.disable()
    try:
        url = f"ws://127.0.0.1:{relay.port}/ws"
        client = await StompClient.connect(url, name="gone")
        await client.subscribe("/topic/room/mem", "s")
        await client.send("/topic/room/mem", "hello", receipt=True)
        await client.next_message("s")
        connection = next(iter(relay.connections))
        refs = [
            weakref.ref(connection),
            weakref.ref(connection.session),
            weakref.ref(connection.session._parser),
        ]
        assert isinstance(refs[1](), ServerSession)
        del connection
        await client.disconnect()
        await eventually(lambda: not relay.relay.sinks, what="the session detached")
        for _ in range(5):
            await asyncio.sleep(0.02)
        alive = [type(ref()).__name__ for ref in refs if ref() is not None]
        assert alive == [], f"still alive without gc: {alive}"
        assert not [c for c in relay.connections if isinstance(c, StompProtocol)]
    finally:
        gc.enable()


async def ws_frames(port: int, seconds: float) -> list[Any]:
    """Frames a WebSocket client sees in ``seconds`` after CONNECT, read through
    websockets' sans-I/O client (so pings are visible, not answered away)."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    from websockets.protocol import State

    protocol.send_request(protocol.connect())
    for data in protocol.data_to_send():
        writer.write(data)
    while protocol.state is not State.OPEN:
        protocol.receive_data(await asyncio.wait_for(reader.read(65536), 5))
    protocol.events_received()
    protocol.send_text(stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", "0,0")))
    seen: list[Any] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        for data in protocol.data_to_send():
            if data:
                writer.write(data)
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            break
        if not chunk:
            break
        protocol.receive_data(chunk)
        seen += protocol.events_received()
    writer.close()
    return seen


async def test_no_websocket_ping_unless_configured(make_relay: Any) -> None:
    from websockets.frames import Frame as WsFrame
    from websockets.frames import Opcode

    quiet = await make_relay()
    pinging = await make_relay(ws_ping_interval=0.2)
    for server, expected in ((quiet, 0), (pinging, 3)):
        frames = await ws_frames(server.port, 1.0)
        pings = [f for f in frames if isinstance(f, WsFrame) and f.opcode is Opcode.PING]
        assert (len(pings) >= expected) if expected else not pings, frames


async def test_every_client_socket_has_tcp_keepalive(make_relay: Any) -> None:
    """A client that negotiated no heart-beat (stomp.py's 0,0) is still found dead."""
    server = await make_relay()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.stomp_port)
    writer.write(stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", "0,0")))
    await reader.readuntil(b"\x00")
    (connection,) = [c for c in server.connections if c.transport is not None]
    sock = connection.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
    writer.close()
