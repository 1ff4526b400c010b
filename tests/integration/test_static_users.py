"""Static users (``--users FILE``, docs/security.md) with real clients: stomp.py over
WebSocket and TCP, @stomp/stompjs under Node, and the command line that makes the hashes
and starts a relay with the file.

Hashes are made at bcrypt's lowest cost (4) so that the suite stays quick; the cost is
the hash's own, the relay checks any.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsclient import StompJsClient, StompJsError
from procs import RelayProcess
from pyclient import PyClients

from stomprelay.auth import Acl
from stomprelay.passwords import UserFile, hash_password
from stomprelay.tokens import Authenticator, issue_token
from stomprelay.transport import RelayServer

SECRET = "static-users-secret-0123456789abcdef"
ROOM = "/topic/room/lobby"


def users_file(**passwords: str) -> UserFile:
    text = "# name:hash\n" + "".join(f"{u}:{hash_password(p, 4)}\n" for u, p in passwords.items())
    return UserFile.parse(text, "users.txt")


def url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


@pytest.fixture
async def clients() -> Any:
    pool = PyClients()
    yield pool
    await pool.aclose()


async def refusal(clients: PyClients, server: Any, kind: str = "ws", **connect: Any) -> str:
    """Connect with stomp.py, expect the ERROR and the close; its message."""
    client = clients(server, kind)
    with pytest.raises(Exception):  # noqa: B017,PT011 - stomp.py's ConnectFailedException
        await client.connect(**connect)
    error = await client.next("error")
    await asyncio.to_thread(client.listener.disconnected.wait, 5)
    assert client.listener.disconnected.is_set()
    return str(error.headers["message"])


@pytest.mark.parametrize("kind", ["ws", "tcp11"])
async def test_stomp_py_is_accepted_with_its_password_and_refused_without(
    make_relay: Any, clients: PyClients, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_relay(users=users_file(guest="guest", alice="wonder land"))
    client = clients(server, kind)
    connected = await client.connect(username="alice", passcode="wonder land")
    session = connected.headers["session"]
    assert server.relay.access.identities[session].user == "alice"
    assert server.relay.access.identities[session].verified
    await client.subscribe(ROOM)
    await client.send(ROOM, b"hello")
    message = await client.message()
    assert message.headers["x-sender"] == "alice"

    assert await refusal(clients, server, kind, username="alice", passcode="guest") == (
        "invalid credentials"
    )
    assert await refusal(clients, server, kind, username="mallory", passcode="guest") == (
        "invalid credentials"
    )
    assert await refusal(clients, server, kind, username="alice") == "authentication required"
    assert await refusal(clients, server, kind) == "authentication required"
    assert "wonder land" not in caplog.text, "a passcode must never reach the logs"


@pytest.mark.node
async def test_stompjs_is_accepted_and_refused(make_relay: Any, stompjs: StompJsClient) -> None:
    server = await make_relay(users=users_file(guest="guest"))
    connected = await stompjs.connect(url(server), login="guest", passcode="guest")
    assert server.relay.access.identities[connected["headers"]["session"]].user == "guest"
    async with await StompJsClient.start() as other:
        with pytest.raises(StompJsError, match="invalid credentials"):
            await other.connect(url(server), login="guest", passcode="nope", reconnectDelay=0)
    async with await StompJsClient.start() as other:
        with pytest.raises(StompJsError, match="authentication required"):
            await other.connect(url(server), login="guest", reconnectDelay=0)


async def test_with_a_jwt_key_too_a_token_shaped_passcode_is_a_token(
    make_relay: Any, clients: PyClients
) -> None:
    server = await make_relay(
        users=users_file(guest="guest"), auth=Authenticator(secret=SECRET, leeway=0)
    )
    access = server.relay.access
    by_password = await clients(server).connect(username="guest", passcode="guest")
    assert access.identities[by_password.headers["session"]].user == "guest"
    token = issue_token(SECRET, "bob", ttl=600)
    by_token = await clients(server).connect(username="guest", passcode=token)
    assert access.identities[by_token.headers["session"]].user == "bob"
    # a token-shaped passcode is checked as a token, never as a password
    assert await refusal(clients, server, username="guest", passcode=token[:-3] + "AAA") == (
        "invalid token: bad signature"
    )
    assert await refusal(clients, server, username="guest", passcode="wrong") == (
        "invalid credentials"
    )


async def test_users_count_as_authentication_for_the_acl(
    make_relay: Any, clients: PyClients
) -> None:
    rules = {"rules": [{"users": "guest", "subscribe": ["/topic/room/*"], "send": []}]}
    server = await make_relay(users=users_file(guest="guest"), acl=Acl.from_document(rules))
    client = clients(server)
    await client.connect(username="guest", passcode="guest")
    await client.subscribe(ROOM)
    await client.send("/topic/elsewhere", b"x")
    error = await client.next("error")
    assert error.headers["message"] == "forbidden"


def test_the_command_line_hashes_and_the_relay_checks(tmp_path: Path) -> None:
    """``stomprelay users hash`` on stdin -> a users file -> ``serve --users`` (and
    ``--acl`` accepted with it) -> stomp.py accepted and refused."""
    import stomp

    done = subprocess.run(
        [sys.executable, "-m", "stomprelay", "users", "hash", "--rounds", "5"],
        input="s3cret pass\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    hashed = done.stdout.strip()
    assert hashed.startswith("$2b$05$")
    assert UserFile.parse(f"carol:{hashed}").matches("carol", "s3cret pass")
    (tmp_path / "users.txt").write_text(f"carol:{hashed}\n")
    (tmp_path / "acl.toml").write_text('[[rules]]\nusers = "*"\nsubscribe = ["/topic/**"]\n')
    extra = ["--users", str(tmp_path / "users.txt"), "--acl", str(tmp_path / "acl.toml")]
    relay = RelayProcess(tmp_path, "users-1", extra=extra).start()
    try:
        good = stomp.WSStompConnection([("127.0.0.1", relay.port)], ws_path="/ws", timeout=10)
        good.connect("carol", "s3cret pass", wait=True)
        assert good.is_connected()
        good.disconnect()
        bad = stomp.WSStompConnection([("127.0.0.1", relay.port)], ws_path="/ws", timeout=10)
        with pytest.raises(stomp.exception.ConnectFailedException):
            bad.connect("carol", "s3cret", wait=True)
    finally:
        relay.stop()
    assert "s3cret" not in relay.log()


@pytest.mark.parametrize(
    ("stdin", "message"),
    [("\n", "the password is empty"), ("x" * 73 + "\n", "at most 72 bytes")],
)
def test_users_hash_refuses_what_bcrypt_cannot_hash(stdin: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stomprelay", "users", "hash"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert not done.stdout


def test_a_bad_users_file_stops_the_start_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"guest:{hash_password('guest', 4)}\n\nbob:plaintext\n")
    done = subprocess.run(
        [sys.executable, "-m", "stomprelay", "serve", "--port", "0", "--users", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    said = "is not a bcrypt ($2b$...) or argon2 ($argon2id$...) hash"
    assert f"{path}:3: the hash of 'bob' {said}" in done.stderr


async def test_a_static_user_has_no_token_to_refresh(make_relay: Any) -> None:
    from stompclient import StompClient

    server = await make_relay(users=users_file(guest="guest"))
    client = await StompClient.connect(url(server), login="guest", passcode="guest")
    await client.send("/app/auth/refresh", b"eyJ.x.y")
    await client.wait_closed()
    (error,) = client.errors
    assert error.get("message") == "Unknown destination"
    assert b"Static users have no token to refresh" in error.body
