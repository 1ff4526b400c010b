"""Fan-out benchmark: one publisher, many WebSocket subscribers, side by side.

Runs the same load against a single-node stomprelay started here and, when one
answers on ``ws://127.0.0.1:15674/ws`` (``rabbitmq-plugins enable
rabbitmq_web_stomp``), against RabbitMQ Web-STOMP as the peer, and prints
delivered messages per second and publish-to-delivery latency. Every client is
an asyncio WebSocket client in this process, so the client side costs the same
for both. Loopback only; every wait is bounded. Run: ``make bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from subprocess import DEVNULL, Popen

from websockets.asyncio.client import ClientConnection, connect

from stomprelay.stomp.frames import Frame
from stomprelay.stomp.parser import FrameParser

SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "50"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
PAYLOAD = 200
TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parent.parent


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.parser = FrameParser(version="1.2")

    @classmethod
    async def open(cls, url: str, login: str | None) -> Client:
        ws = await connect(url, subprotocols=["v12.stomp"], max_size=2**20)  # type: ignore[list-item]
        client = cls(ws)
        headers = [("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0")]
        if login:
            headers += [("login", login), ("passcode", login)]
        await client.send(Frame("CONNECT", tuple(headers)))
        frame = await client.next()
        if frame.command != "CONNECTED":
            raise RuntimeError(f"CONNECT refused: {frame}")
        return client

    async def send(self, frame: Frame) -> None:
        await self.ws.send(frame.serialize("1.2"))

    async def next(self) -> Frame:
        while True:
            frame = self.parser.next_frame()
            if frame is not None:
                return frame
            data = await self.ws.recv()
            self.parser.feed(data.encode() if isinstance(data, str) else data)


async def subscribe_all(url: str, login: str | None) -> list[Client]:
    subscribers = [await Client.open(url, login) for _ in range(SUBSCRIBERS)]
    for i, sub in enumerate(subscribers):
        await sub.send(
            Frame(
                "SUBSCRIBE",
                (("id", "s"), ("destination", "/topic/bench"), ("receipt", f"r{i}")),
            )
        )
        frame = await sub.next()
        assert frame.command == "RECEIPT", frame
    return subscribers


async def count_frames(sub: Client, count: int) -> None:
    """Cheap receive: count frame terminators (bodies here hold no NUL)."""
    seen = 0
    while seen < count:
        data = await sub.ws.recv()
        seen += (data.encode() if isinstance(data, str) else data).count(b"\x00")


async def throughput(url: str, login: str | None) -> float:
    subscribers = await subscribe_all(url, login)
    publisher = await Client.open(url, login)
    body = b"x" * PAYLOAD
    start = time.perf_counter()
    readers = [asyncio.create_task(count_frames(sub, MESSAGES)) for sub in subscribers]
    for _ in range(MESSAGES):
        await publisher.send(Frame("SEND", (("destination", "/topic/bench"),), body))
    await asyncio.wait_for(asyncio.gather(*readers), TIMEOUT)
    elapsed = time.perf_counter() - start
    for client in [*subscribers, publisher]:
        await client.ws.close()
    return SUBSCRIBERS * MESSAGES / elapsed


async def latency(url: str, login: str | None, samples: int = 300) -> list[float]:
    """Paced publishes (200/s) to all subscribers; one of them measures."""
    subscribers = await subscribe_all(url, login)
    publisher = await Client.open(url, login)
    probe, others = subscribers[0], subscribers[1:]
    readers = [asyncio.create_task(count_frames(sub, samples)) for sub in others]
    result: list[float] = []

    async def measure() -> None:
        for _ in range(samples):
            frame = await probe.next()
            result.append(time.perf_counter() - float(frame.body[:20]))

    measuring = asyncio.create_task(measure())
    padding = b"x" * (PAYLOAD - 20)
    for _ in range(samples):
        body = f"{time.perf_counter():020.6f}".encode() + padding
        await publisher.send(Frame("SEND", (("destination", "/topic/bench"),), body))
        await asyncio.sleep(0.005)
    await asyncio.wait_for(asyncio.gather(measuring, *readers), TIMEOUT)
    for client in [*subscribers, publisher]:
        await client.ws.close()
    return sorted(result)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


#: Benchmarks open thousands of connections from one address and publish as fast as
#: they can: the per-address and per-session limits (docs/security.md) are lifted
#: through the environment, which a relay from an earlier tree (bench/profile.py
#: --before) ignores.
NO_CLIENT_LIMITS = {
    "MAX_CONNECTIONS_PER_IP": "0",
    "HANDSHAKE_RATE": "0",
    "FRAME_RATE": "0",
    "BYTE_RATE": "0",
}


def relay_argv(port: int) -> list[str]:
    """A single-node relay on 127.0.0.1:``port`` (the package found from the cwd first)."""
    return [
        sys.executable,
        "-m",
        "stomprelay",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def start_relay(port: int, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Popen[bytes]:
    """Start :func:`relay_argv` in ``cwd`` and wait (20 s at most) until it listens."""
    env = {**(os.environ if env is None else env), **NO_CLIENT_LIMITS}
    relay = Popen(relay_argv(port), cwd=cwd, env=env, stdout=DEVNULL)
    deadline = time.monotonic() + 20
    while not reachable(port):
        if time.monotonic() > deadline or relay.poll() is not None:
            relay.kill()
            raise SystemExit("stomprelay did not start")
        time.sleep(0.05)
    return relay


async def main() -> None:
    port = free_port()
    relay = await asyncio.create_subprocess_exec(
        *relay_argv(port),
        cwd=ROOT,
        env={**os.environ, **NO_CLIENT_LIMITS},
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not reachable(port):
            if time.monotonic() > deadline or relay.returncode is not None:
                raise SystemExit("stomprelay did not start")
            await asyncio.sleep(0.05)
        targets = [("stomprelay (single node)", f"ws://127.0.0.1:{port}/ws", None)]
        if reachable(15674):
            targets.append(("RabbitMQ Web-STOMP", "ws://127.0.0.1:15674/ws", "guest"))
        print(
            f"{SUBSCRIBERS} subscribers, one publisher, {PAYLOAD}-byte bodies: throughput over "
            f"{MESSAGES} back-to-back messages; latency over 300 sent at 200/s"
        )
        print(f"{'server':<28} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
        for name, url, login in targets:
            try:
                rate = await throughput(url, login)
                lat = await latency(url, login)
            except (OSError, RuntimeError, TimeoutError) as exc:
                print(f"{name:<28} failed: {exc}")
                continue
            p50 = statistics.median(lat) * 1000
            p99 = lat[int(len(lat) * 0.99) - 1] * 1000
            print(f"{name:<28} {rate:>12,.0f} {p50:>8.1f} {p99:>8.1f}")
        if len(targets) == 1:
            print("RabbitMQ Web-STOMP not reachable on 127.0.0.1:15674: no peer figures")
    finally:
        relay.terminate()
        await asyncio.wait_for(relay.wait(), 20)


if __name__ == "__main__":
    asyncio.run(main())
