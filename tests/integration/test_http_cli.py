"""HTTP routes on the WebSocket port and the ``stomprelay serve`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path

import pytest
from procs import ROOT, RelayProcess, wait_for
from rawstomp import RawStomp

from stomprelay import __version__
from stomprelay.transport import RelayServer

MakeProc = Callable[..., RelayProcess]


async def http_get(port: int, path: str) -> tuple[int, Message, bytes]:
    def get() -> tuple[int, Message, bytes]:
        url = f"http://127.0.0.1:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    return await asyncio.to_thread(get)


async def raw_http(port: int, target: str) -> bytes:
    """One request line sent as is (urllib would normalise ``..`` away)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return response


# -- HTTP ---------------------------------------------------------------------------------


async def test_health_reports_json(relay: RelayServer) -> None:
    status, headers, body = await http_get(relay.port, "/health")
    assert status == 200
    assert headers.get_content_type() == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["serverId"] == "test-relay"
    assert health["connections"] == 0
    assert isinstance(health["uptime"], int | float)
    assert health["uptime"] >= 0

    client = await RawStomp.open(relay.port)
    await client.connect()
    health = json.loads((await http_get(relay.port, "/health"))[2])
    assert health["connections"] == 1
    await client.close()


async def test_ready_and_metrics(relay: RelayServer) -> None:
    status, headers, body = await http_get(relay.port, "/ready")
    assert status == 200
    assert json.loads(body) == {"status": "ready"}
    status, headers, body = await http_get(relay.port, "/metrics")
    assert status == 200
    assert headers.get_content_type() == "text/plain"
    assert b"# TYPE" in body


@pytest.mark.parametrize("path", ["/", "/index.html", "/?room=lobby"])
async def test_root_serves_the_web_client(relay: RelayServer, path: str) -> None:
    status, headers, body = await http_get(relay.port, path)
    assert status == 200
    assert headers.get_content_type() == "text/html"
    assert body == (ROOT / "web" / "index.html").read_bytes()


@pytest.mark.parametrize("path", ["/no/such/page", "/health/extra", "/index.htm"])
async def test_unknown_path_is_404(relay: RelayServer, path: str) -> None:
    status, _, _ = await http_get(relay.port, path)
    assert status == 404


@pytest.mark.parametrize(
    "target", ["/../pyproject.toml", "/../../etc/passwd", "/%2e%2e/pyproject.toml"]
)
async def test_no_file_outside_the_web_root(relay: RelayServer, target: str) -> None:
    response = await raw_http(relay.port, target)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"404"), status_line
    assert b"[project]" not in response
    assert b"root:" not in response


# -- command line -------------------------------------------------------------------------


class EnvOnlyRelay(RelayProcess):
    """``stomprelay serve`` configured by the environment alone (PORT, SERVER_ID)."""

    def start(self, wait_ready: bool = True) -> RelayProcess:
        script = Path(sys.executable).with_name("stomprelay")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "stomprelay"]
        env = dict(os.environ)
        for name in ("HOST", "STOMP_PORT", "REDIS_URL", "REDIS_HOST", "REDIS_PORT"):
            env.pop(name, None)
        env.update(PYTHONUNBUFFERED="1", PORT=str(self.port), SERVER_ID=self.server_id)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*command, "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(self.healthy, timeout=20, what=f"relay {self.server_id} /health")
        return self


async def start_proc(make: MakeProc, server_id: str, **kwargs: object) -> RelayProcess:
    return await asyncio.to_thread(make, server_id, **kwargs)


async def test_cli_port_and_server_id(relay_proc: MakeProc) -> None:
    proc = await start_proc(relay_proc, "cli-relay-x", extra=["--heartbeat-ms", "750"])
    client = await RawStomp.open(proc.port)
    connected = await client.connect()
    assert connected.get("x-server-id") == "cli-relay-x"
    assert connected.get("heart-beat") == "750,750"
    health = json.loads((await http_get(proc.port, "/health"))[2])
    assert health["serverId"] == "cli-relay-x"
    await client.close()


async def test_env_port_and_server_id(relay_proc: MakeProc) -> None:
    proc = await start_proc(relay_proc, "env-relay-y", cls=EnvOnlyRelay)
    client = await RawStomp.open(proc.port)
    connected = await client.connect()
    assert connected.get("x-server-id") == "env-relay-y"
    await client.close()


async def test_sigterm_closes_clients_with_1001_and_exits_0(relay_proc: MakeProc) -> None:
    proc = await start_proc(relay_proc, "term-relay")
    client = await RawStomp.open(proc.port)
    await client.connect()
    await client.subscribe("/topic/room/lobby")
    exit_code = asyncio.create_task(asyncio.to_thread(proc.terminate, 20))
    frames = await client.frames_until_closed(timeout=15)
    assert frames == []
    assert client.ws.close_code == 1001
    assert await exit_code == 0


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stomprelay", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out.strip() == f"stomprelay {__version__}"


def test_cli_rejects_a_bad_port_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stomprelay", "serve"],
        cwd=ROOT,
        env={**os.environ, "PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode not in (0, -signal.SIGKILL)
    assert "PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--history-size", "50", "--history-max-size", "20"], "--history-max-size"),
        (["--history-min-age", "-1"], "--history-min-age"),
        (["--max-frame-size", "0"], "--max-frame-size"),
    ],
)
def test_cli_rejects_a_retention_it_cannot_keep(args: list[str], said: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stomprelay", "serve", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode not in (0, -signal.SIGKILL)
    assert said in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("trust", [True, False], ids=["trusted-proxy", "direct"])
async def test_client_address_behind_a_trusted_proxy(trust: bool) -> None:
    """Behind nginx the socket's peer is nginx: with the peer in --trusted-proxies the
    registry records the rightmost untrusted address X-Forwarded-For names; without it,
    the socket's peer."""
    from websockets.asyncio.client import connect

    from stomprelay.factory import build_relay
    from stomprelay.settings import Settings

    proxies = ("127.0.0.0/8", "10.0.0.0/8") if trust else ()
    server = RelayServer(
        build_relay(Settings(trusted_proxies=proxies), server_id="proxied"), port=0
    )
    await server.start()
    try:
        ws = await connect(
            f"ws://127.0.0.1:{server.port}/ws",
            subprotocols=["v12.stomp"],  # type: ignore[list-item]
            additional_headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.2"},
        )
        client = RawStomp(ws)
        connected = await client.connect()
        record = await server.relay.registry.session(connected.get("session") or "")
        assert record is not None
        if trust:
            assert record.remote_address == "203.0.113.7"
        else:
            assert record.remote_address.startswith("127.0.0.1:")
        await ws.close()
    finally:
        await server.stop()


def _post(port: int, path: str, body: bytes, token: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_admin_api_posts_system_notifications() -> None:
    """POST /api/system/notifications with the admin token reaches /topic/system
    subscribers (or one room's); WebSocket clients on the same port are unaffected."""
    from stomprelay.factory import build_relay

    server = RelayServer(build_relay(server_id="admin"), port=0, admin_token="s3cret")
    await server.start()
    try:
        client = await RawStomp.open(server.port)
        await client.connect()
        await client.subscribe("/topic/system", "sys")
        await client.subscribe("/topic/room/lobby", "room")
        status, reply = await asyncio.to_thread(
            _post,
            server.port,
            "/api/system/notifications",
            b'{"message": "maintenance at noon"}',
            "s3cret",
        )
        assert status == 202, reply
        frame = await client.expect("MESSAGE")
        assert frame.get("subscription") == "sys"
        event = json.loads(frame.body)
        assert (event["type"], event["message"]) == ("SYSTEM", "maintenance at noon")
        status, _ = await asyncio.to_thread(
            _post,
            server.port,
            "/api/system/notifications",
            b'{"message": "lobby closes", "roomId": "lobby"}',
            "s3cret",
        )
        assert status == 202
        frame = await client.expect("MESSAGE")
        assert frame.get("subscription") == "room"
        assert json.loads(frame.body)["message"] == "lobby closes"
        await client.close()
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("configured", "path", "body", "token", "status"),
    [
        (None, "/api/system/notifications", b'{"message": "x"}', "any", 403),
        ("s3cret", "/api/system/notifications", b'{"message": "x"}', None, 401),
        ("s3cret", "/api/system/notifications", b'{"message": "x"}', "wrong", 401),
        ("s3cret", "/api/system/notifications", b"not json", "s3cret", 400),
        ("s3cret", "/api/system/notifications", b'{"message": ""}', "s3cret", 400),
        (
            "s3cret",
            "/api/system/notifications",
            b'{"message": "x", "roomId": "a*b"}',
            "s3cret",
            400,
        ),
        ("s3cret", "/api/other", b"{}", "s3cret", 404),
        ("s3cret", "/api/system/notifications", b"x" * 20_000, "s3cret", 413),
    ],
    ids=[
        "off",
        "no-token",
        "wrong-token",
        "bad-json",
        "empty",
        "bad-room",
        "no-route",
        "too-large",
    ],
)
async def test_admin_api_refusals(
    configured: str | None, path: str, body: bytes, token: str | None, status: int
) -> None:
    from stomprelay.factory import build_relay

    server = RelayServer(build_relay(server_id="admin"), port=0, admin_token=configured)
    await server.start()
    try:
        got, reply = await asyncio.to_thread(_post, server.port, path, body, token)
        assert got == status, reply
        assert isinstance(reply, dict)
        assert reply.get("error")
    finally:
        await server.stop()


async def test_admin_api_post_split_across_segments() -> None:
    """The method is recognised even when its first bytes arrive alone."""
    import socket

    from stomprelay.factory import build_relay

    server = RelayServer(build_relay(server_id="admin"), port=0, admin_token="t")
    await server.start()
    try:
        body = b'{"message": "hi"}'
        request = (
            b"POST /api/system/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for piece in (request[:2], request[2:30], request[30:]):
                    sock.sendall(piece)
                    time.sleep(0.05)
                return sock.recv(4096)

        reply = await asyncio.to_thread(exchange)
        assert reply.startswith(b"HTTP/1.1 202"), reply
    finally:
        await server.stop()


async def test_cli_max_frame_size_reaches_the_parser(relay_proc: MakeProc) -> None:
    """A relay started with --max-frame-size 1024 refuses a 2 KiB frame, takes a small one."""
    proc = await start_proc(relay_proc, "small-frames", extra=["--max-frame-size", "1024"])
    client = await RawStomp.open(proc.port)
    await client.connect()
    await client.send("/topic/room/lobby", b"x" * 100, [("receipt", "small")])
    assert (await client.expect("RECEIPT")).get("receipt-id") == "small"
    await client.send("/topic/room/lobby", b"x" * 2048)
    error = await client.expect("ERROR")
    assert "too large" in (error.get("message") or "").lower()
    await client.close()
