"""Many idle connections on the one timer: heart-beats on time, silent peers found."""

from __future__ import annotations

import asyncio
import itertools
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable

import pytest
from procs import RelayProcess, free_port

from stomprelay.stomp.frames import Frame

CONNECTIONS = 2000
INTERVAL = 1.0
#: Linux's SO_TIMESTAMPNS (Python's socket module does not name it): each read
#: carries the time its bytes reached the socket, a ``struct timespec``.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")


def stomp(command: str, *headers: tuple[str, str]) -> bytes:
    return Frame(command, headers).serialize("1.2")


async def open_idle(
    port: int, heart_beat: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for attempt in range(3):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)
    writer.write(stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", heart_beat)))
    connected = await asyncio.wait_for(reader.readuntil(b"\x00"), 30)
    assert connected.startswith(b"CONNECTED"), connected[:200]
    return reader, writer


async def open_stamped(port: int, heart_beat: str) -> socket.socket:
    """A STOMP session on a plain socket whose reads carry kernel receive times."""
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            break
        except OSError:
            sock.close()
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    await loop.sock_sendall(
        sock, stomp("CONNECT", ("accept-version", "1.2"), ("heart-beat", heart_beat))
    )
    head = b""
    while b"\x00" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 30)
        assert chunk, head[:200]
        head += chunk
    assert head.startswith(b"CONNECTED"), head[:200]
    return sock


class Arrivals:
    """When one socket's heart-beats arrived, by the kernel's receive timestamp.

    The client is one Python process reading 2000 sockets on one loop: when it
    gets to a read can be a few hundred ms after the bytes came, and by a
    different amount each time, so its own clock would add that lag to the gaps
    (measured: 0.5 to 1.3 s between reads while the kernel saw 1.04 to 1.06 s).
    The kernel's timestamp is when the relay's bytes reached the socket, the
    gap STOMP 1.2 bounds. (It is CLOCK_REALTIME: a clock step in the window
    would show; NTP slewing is a few ppm.)
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: (kernel receive time, heart-beats in that read)
        self.reads: list[tuple[float, int]] = []
        self.problems: list[str] = []

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(64, socket.CMSG_SPACE(TIMESPEC.size))
        except BlockingIOError:
            return
        if not data or data.strip(b"\n") != b"":
            self.problems.append(f"read {data!r}")
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            return
        stamps = [
            sec + nsec / 1e9
            for level, kind, value in ancillary
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
            for sec, nsec in [TIMESPEC.unpack(value[: TIMESPEC.size])]
        ]
        if not stamps:
            self.problems.append("a read without a receive timestamp")
            return
        self.reads.append((stamps[-1], data.count(b"\n")))

    def gaps(self) -> list[float]:
        """Seconds between heart-beats. A read that took two at once (the client
        was that late) has the later one's time only: that span is left out."""
        return [
            later - earlier
            for (earlier, _), (later, beats) in itertools.pairwise(self.reads)
            if beats == 1
        ]


@pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS receive times are Linux's")
async def test_2000_idle_connections_get_every_heart_beat_on_time(
    relay_proc: Callable[..., RelayProcess],
) -> None:
    """STOMP 1.2 "Heart-beating": the relay sends something at least every
    negotiated interval, to each of 2000 idle sessions on its one timer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * CONNECTIONS)), hard))
    stomp_port = free_port()
    # 2000 connections from one address: past the per-address cap and handshake rate
    lifted = ["--max-connections-per-ip", "0", "--handshake-rate", "0"]
    relay_proc("idle", extra=["--stomp-port", str(stomp_port), "--log-level", "info", *lifted])
    # all at once: the listen backlog queues them
    socks = await asyncio.gather(
        *(open_stamped(stomp_port, f"0,{int(INTERVAL * 1000)}") for _ in range(CONNECTIONS))
    )
    loop = asyncio.get_running_loop()
    arrivals = [Arrivals(sock) for sock in socks]
    try:
        for each in arrivals:
            loop.add_reader(each.sock.fileno(), each.readable)
        # a window of 5 intervals: time passing is what is being measured
        await asyncio.sleep(5 * INTERVAL)
        for each in arrivals:
            loop.remove_reader(each.sock.fileno())
        assert not [p for each in arrivals for p in each.problems]
        measured = [each.gaps() for each in arrivals]
        assert all(len(per) >= 3 for per in measured), min(len(p) for p in measured)
        every = [gap for per in measured for gap in per]
        late = [gap for gap in every if gap > INTERVAL]
        assert not late, f"{len(late)} of {len(every)} heart-beats late, worst {max(late):.3f} s"
    finally:
        for sock in socks:
            loop.remove_reader(sock.fileno())
            sock.close()


async def test_a_silent_client_asking_for_1s_heart_beats_is_found_within_seconds(
    relay_proc: Callable[..., RelayProcess],
) -> None:
    """What @stomp/stompjs's dead-peer specs expect: the relay honours 1000,1000 (it
    no longer imposes 10 s) and closes a client silent for 3 intervals."""
    stomp_port = free_port()
    relay_proc("silent", extra=["--stomp-port", str(stomp_port)])
    reader, writer = await open_idle(stomp_port, "1000,1000")
    started = time.monotonic()
    data = b""
    while chunk := await asyncio.wait_for(reader.read(4096), 10):
        data += chunk
    elapsed = time.monotonic() - started
    assert b"ERROR" in data
    assert b"message:Heart-beat timeout" in data
    assert 2.5 < elapsed < 5.0, elapsed
    writer.close()
