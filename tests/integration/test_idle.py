"""Many idle connections on the one timer: heart-beats on time, silent peers found."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable

from procs import RelayProcess, free_port

from stomprelay.stomp.frames import Frame

CONNECTIONS = 2000
INTERVAL = 1.0
#: How late a heart-beat may arrive (the timer batches deadlines 50 ms apart).
SLACK = 0.2


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


async def gaps(reader: asyncio.StreamReader, seconds: float) -> list[float]:
    """Seconds between heart-beats (EOLs) received over ``seconds``."""
    out: list[float] = []
    last = time.monotonic()
    end = last + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(64), left)
        except TimeoutError:
            break
        assert data, "the relay closed an idle, heart-beating connection"
        assert data.strip(b"\n") == b"", data
        now = time.monotonic()
        out.append(now - last)
        last = now
    return out


async def test_2000_idle_connections_get_every_heart_beat_on_time(
    relay_proc: Callable[..., RelayProcess],
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * CONNECTIONS)), hard))
    stomp_port = free_port()
    # 2000 connections from one address: past the per-address cap and handshake rate
    lifted = ["--max-connections-per-ip", "0", "--handshake-rate", "0"]
    relay_proc("idle", extra=["--stomp-port", str(stomp_port), "--log-level", "info", *lifted])
    # all at once: the listen backlog queues them
    clients = await asyncio.gather(
        *(open_idle(stomp_port, f"0,{int(INTERVAL * 1000)}") for _ in range(CONNECTIONS))
    )
    try:
        for reader, _ in clients:  # settle: the first EOL of each
            await asyncio.wait_for(reader.read(64), INTERVAL + 5)
        measured = await asyncio.gather(*(gaps(reader, 4 * INTERVAL) for reader, _ in clients))
        every = [gap for per in measured for gap in per]
        assert all(len(per) >= 3 for per in measured), min(len(p) for p in measured)
        late = [gap for gap in every if gap > INTERVAL + SLACK]
        assert not late, f"{len(late)} of {len(every)} heart-beats late, worst {max(late):.3f} s"
    finally:
        for _, writer in clients:
            writer.close()


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
