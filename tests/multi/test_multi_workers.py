"""``stomprelay serve --workers N`` and the publish pipeline, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from clusterhelpers import RELAY_ARGS, eventually
from procs import ROOT, RedisServer, free_port
from stompclient import StompClient, StompClientError

from stomprelay.stomp.frames import Frame


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"no {name} in /metrics"
    return float(match.group(1))


@pytest.fixture
def supervisor(tmp_path: Path, redis_server: RedisServer) -> Any:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int, http_base: int) -> subprocess.Popen[bytes]:
        log = open(tmp_path / "workers.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stomprelay",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--redis-url",
                redis_server.url,
                "--workers",
                "2",
                "--server-id",
                "pool",
                "--worker-http-port",
                str(http_base),
                *RELAY_ARGS,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        orphans = children(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


async def clients_on_both(url: str, made: list[StompClient]) -> dict[str, StompClient]:
    """Connect until one client sits on each worker (the kernel spreads connections)."""
    by_server: dict[str, StompClient] = {}
    for i in range(60):
        client = await StompClient.connect(url, name=f"c{i}")
        made.append(client)
        by_server.setdefault(client.server_id, client)
        if len(by_server) == 2:
            return by_server
    raise AssertionError(f"60 connections all landed on {list(by_server)}")


async def test_two_workers_serve_one_room_and_a_dead_worker_is_replaced(
    supervisor: Any,
) -> None:
    port = free_port()
    http_base = free_port()
    while any(not _free(http_base + i) for i in range(2)):
        http_base = free_port()
    proc = supervisor(port, http_base)
    # the kernel spreads connections over the listening workers only: wait for both
    for i in range(2):
        await eventually(
            lambda i=i: get(f"http://127.0.0.1:{http_base + i}/health")[0] == 200, timeout=20
        )
    url = f"ws://127.0.0.1:{port}/ws"
    made: list[StompClient] = []
    try:
        on = await clients_on_both(url, made)
        assert all(re.fullmatch(r"pool-w[01]\.1", server) for server in on), list(on)
        first, second = on.values()
        for client in (first, second):
            await client.subscribe("/topic/room/pool", "s")
        await first.send("/topic/room/pool", "from the first worker", receipt=True)
        await second.send("/topic/room/pool", "from the second worker", receipt=True)
        for client in (first, second):
            got = await client.collect(2, "s")
            assert [f.body for f in got] == [b"from the first worker", b"from the second worker"]
        # each worker has its own /health and /metrics besides the shared port
        for i in range(2):
            status, body = get(f"http://127.0.0.1:{http_base + i}/health")
            assert status == 200
            assert f'"pool-w{i}.1"' in body
            status, body = get(f"http://127.0.0.1:{http_base + i}/metrics")
            assert "stomprelay_connections" in body
        status, body = get(f"http://127.0.0.1:{port}/api/servers")
        assert status == 200
        assert {"pool-w0.1", "pool-w1.1"} <= set(re.findall(r"pool-w\d\.\d", body))

        # a worker killed outright is started again under a new id; the dead one is reaped
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        await eventually(
            lambda: len(children(proc.pid)) == 2 and children(proc.pid) != workers, timeout=10
        )

        def replaced() -> bool:
            ids = set(
                re.findall(
                    r'"serverId": "(pool-w\d\.\d)"', get(f"http://127.0.0.1:{port}/api/servers")[1]
                )
            )
            return len(ids) == 2 and any(i.endswith(".2") for i in ids)

        await eventually(replaced, timeout=30, what="the dead worker reaped, its successor in")
    finally:
        for client in made:
            await client.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert children(proc.pid) == []


def test_workers_without_redis_are_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stomprelay", "serve", "--workers", "2", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "--workers above 1 needs --redis-url" in result.stderr


@pytest.mark.parametrize("history", [200, 0])
async def test_a_publisher_is_not_held_to_one_send_per_round_trip(
    inproc: Any, redis_server: RedisServer, history: int
) -> None:
    # 2000 SENDs as fast as the socket takes them: past the per-session rate limit
    server = await inproc(redis_server.url, "pipe", history_size=history, frame_rate=0)
    url = f"ws://127.0.0.1:{server.port}/ws"
    reader = await StompClient.connect(url, name="reader")
    await reader.subscribe("/topic/room/fast", "s")
    writer = await StompClient.connect(url, name="writer")
    count = 2000
    for i in range(count - 1):
        await writer.send("/topic/room/fast", str(i))
    await writer.send("/topic/room/fast", str(count - 1), receipt=True, timeout=30)
    got = await reader.collect(count, "s", timeout=30)
    assert [int(f.body) for f in got] == list(range(count))
    offsets = [int(f.get("x-offset") or 0) for f in got]
    if history:
        assert offsets == list(range(offsets[0], offsets[0] + count))
    else:
        assert set(offsets) == {0}
    batches = server.relay.metrics.publish_batches._value.get()
    assert batches < count / 4, f"{batches} round trips for {count} SENDs"
    await reader.close()
    await writer.close()


async def test_a_publisher_backed_up_on_a_stalled_redis_gets_an_error_and_loses_nothing(
    inproc: Any, redis_server: RedisServer
) -> None:
    server = await inproc(
        redis_server.url, "stall", redis_timeout=6.0, publish_pause=5, publish_timeout=0.5
    )
    url = f"ws://127.0.0.1:{server.port}/ws"
    reader = await StompClient.connect(url, name="reader")
    await reader.subscribe("/topic/room/stall", "s")
    writer = await StompClient.connect(url, name="writer")
    redis_server.pause()
    try:
        receipts = []
        for i in range(20):
            receipts.append(writer._expect_receipt(f"r{i}"))
            await writer.send_frame(
                Frame(
                    "SEND", (("destination", "/topic/room/stall"), ("receipt", f"r{i}")), b"%d" % i
                )
            )
        await eventually(lambda: writer.errors, timeout=5, what="an ERROR for the writer")
        assert writer.errors[0].get("message") == "Publish backlog"
        await writer.wait_closed(5)
    finally:
        redis_server.resume()
    # every SEND taken before the ERROR is appended once Redis answers; none is lost
    got = await reader.collect(1, "s", timeout=15)
    with contextlib.suppress(StompClientError):
        while len(got) < 20:
            got.append(await reader.next_message("s", timeout=3))
    delivered = [int(f.body) for f in got]
    assert delivered == list(range(len(delivered)))
    receipted = [
        i
        for i, r in enumerate(receipts)
        if r.done() and not r.cancelled() and r.exception() is None
    ]
    assert set(receipted) <= set(delivered)
    await reader.close()
    await writer.close()
