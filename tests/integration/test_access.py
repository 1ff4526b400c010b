"""Identity and access with real clients (docs/security.md): tokens on CONNECT,
expiry and in-band refresh, the ACL, forged headers, rate limits, operator kicks.

Each refusal is driven the way an attacker or a careless client would: stomp.py,
@stomp/stompjs under Node, or this suite's own WebSocket client for raw frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
import time
from typing import Any

import jwt
import pytest
from clusterhelpers import eventually
from jsclient import StompJsClient, StompJsError
from pyclient import PyClients
from stompclient import StompClient, StompClientError

from stomprelay.auth import Acl
from stomprelay.stomp.frames import Frame
from stomprelay.tokens import Authenticator, issue_token
from stomprelay.transport import RelayServer

SECRET = "integration-secret-0123456789abcdef"
ROOM = "/topic/room/lobby"


def url(server: RelayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def token(user: str = "alice", ttl: float = 600, **claims: Any) -> str:
    name = claims.pop("name", None)
    return issue_token(SECRET, user, name=name, ttl=ttl, claims=claims)


def counter(server: RelayServer, name: str, **labels: str) -> float:
    value = server.relay.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.fixture
async def secure(make_relay: Any) -> Any:
    """``await secure(acl=..., **settings)``: a relay that needs a HS256 token."""

    async def factory(acl: dict[str, Any] | None = None, **settings: Any) -> RelayServer:
        auth = Authenticator(secret=SECRET, leeway=settings.pop("leeway", 0))
        rules = Acl.from_document(acl, "test") if acl is not None else None
        server: RelayServer = await make_relay(auth=auth, acl=rules, **settings)
        return server

    return factory


async def refused(server: RelayServer, **connect: Any) -> Frame:
    """Connect, expect one ERROR and the close (no CONNECTED); return the ERROR."""
    client = await _raw_connect(server, connect)
    await client.wait_closed()
    assert not got_connected(client), "no CONNECTED before the credential passed"
    (error,) = client.errors
    return error


def got_connected(client: StompClient) -> bool:
    future = client._connected
    return future.done() and future.exception() is None


async def _raw_connect(server: RelayServer, connect: dict[str, Any]) -> StompClient:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.typing import Subprotocol

    ws = await ws_connect(url(server), subprotocols=[Subprotocol("v12.stomp")])
    client = StompClient(ws, "1.2", "raw")
    headers = [("accept-version", "1.2"), ("host", "localhost")]
    if connect.get("login") is not None:
        headers.append(("login", connect["login"]))
    if connect.get("passcode") is not None:
        headers.append(("passcode", connect["passcode"]))
    headers.extend(connect.get("headers", ()))
    await client.send_frame(Frame("CONNECT", tuple(headers)))
    return client


# -- authentication ------------------------------------------------------------------


async def test_no_token_is_refused_and_a_good_one_is_welcome(secure: Any) -> None:
    server = await secure()
    error = await refused(server)
    assert error.get("message") == "authentication required"
    error = await refused(server, login="alice", passcode="guest")
    assert error.get("message") == "invalid token: malformed"
    client = await StompClient.connect(url(server), passcode=token())
    assert client.session_id
    assert server.relay.access.identities[client.session_id].user == "alice"
    record = (await server.relay.registry.sessions())[0]
    assert record.username == "alice"
    await client.disconnect()


def signed(key: str = SECRET, **over: Any) -> str:
    """A token for the audience/issuer-checking relay below, with ``over`` changed."""
    payload = {"sub": "alice", "exp": int(time.time()) + 600, "aud": "chat"}
    payload["iss"] = "https://id.example"
    payload.update(over)
    return jwt.encode(payload, key, algorithm="HS256")


def alg_none() -> str:
    body = json.dumps({"sub": "root", "exp": int(time.time()) + 60, "aud": "chat"}).encode()
    return "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + jwt.utils.base64url_encode(body).decode() + "."


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: signed(exp=int(time.time()) - 60), "invalid token: expired"),
        (lambda: signed(nbf=int(time.time()) + 300), "invalid token: not yet valid"),
        (lambda: signed(aud="elsewhere"), "invalid token: wrong audience"),
        (lambda: signed(iss="https://evil.example"), "invalid token: wrong issuer"),
        (alg_none, "invalid token: algorithm not allowed"),
        (lambda: signed()[:-4] + "AAAA", "invalid token: bad signature"),
        (lambda: signed("x" * 40), "invalid token: bad signature"),
    ],
    ids=["expired", "not-yet-valid", "audience", "issuer", "alg-none", "tampered", "other-key"],
)
async def test_bad_tokens_get_one_plain_error_with_stomp_py(
    make_relay: Any, make: Any, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = Authenticator(secret=SECRET, audience="chat", issuer="https://id.example", leeway=0)
    server = await make_relay(auth=auth)
    bad = make()
    clients = PyClients()
    client = clients(server, "ws")
    try:
        with pytest.raises(Exception):  # noqa: B017,PT011 - stomp.py's ConnectFailedException
            await client.connect(passcode=bad)
        error = await client.next("error")
        assert error.headers["message"] == message
        await asyncio.to_thread(client.listener.disconnected.wait, 5)
        assert client.listener.disconnected.is_set()
    finally:
        await clients.aclose()
    assert bad not in caplog.text, "a token must never reach the logs"
    assert SECRET not in caplog.text


@pytest.mark.node
async def test_hs_rs_confusion_is_refused_for_stompjs(make_relay: Any, tmp_path: Any) -> None:
    """A relay that trusts an RSA public key: an RS256 token signed by its private
    key passes; an HS256 token "signed" with the public key as HMAC secret does not,
    whether or not the relay also has an HMAC secret."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from stomprelay.tokens import load_public_key

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    public = load_public_key(str(tmp_path / "key.pem"))

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = {"sub": "root", "exp": int(time.time()) + 60}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing = f"{head}.{b64(json.dumps(body).encode())}"
    forged = f"{signing}.{b64(hmac.new(pem, signing.encode(), hashlib.sha256).digest())}"
    for auth, message in (
        (Authenticator(public_keys=[public]), "invalid token: algorithm not allowed"),
        (Authenticator(public_keys=[public], secret=SECRET), "invalid token: bad signature"),
    ):
        server = await make_relay(auth=auth)
        async with await StompJsClient.start() as js:
            good = jwt.encode(body, private, algorithm="RS256")
            await js.connect(url(server), passcode=good)
        async with await StompJsClient.start() as js:
            with pytest.raises(StompJsError, match=message):
                await js.connect(url(server), passcode=forged, reconnectDelay=0)


@pytest.mark.node
async def test_stompjs_connects_with_a_bearer_header_and_is_refused_when_expired(
    secure: Any, stompjs: StompJsClient
) -> None:
    server = await secure()
    headers = (await stompjs.connect(url(server), headers={"Authorization": f"Bearer {token()}"}))[
        "headers"
    ]
    assert headers["session"] in server.relay.access.identities
    async with await StompJsClient.start() as other:
        with pytest.raises(StompJsError, match="invalid token: expired"):
            await other.connect(url(server), passcode=token(ttl=-5), reconnectDelay=0)


async def test_identity_names_the_participant_and_a_body_username_is_ignored(
    secure: Any,
) -> None:
    server = await secure()
    watcher = await StompClient.connect(url(server), passcode=token("bob"))
    sub = await watcher.subscribe(ROOM)
    alice = await StompClient.connect(url(server), passcode=token("alice", name="Alice A."))
    await alice.send("/app/room/lobby/join", {"username": "operator"}, receipt=True)
    joined = await watcher.next_message(sub)
    assert dict(joined.headers)["x-event-type"] == "JOIN"
    assert json.loads(joined.body)["username"] == "Alice A."
    # a second connection of the same user is a second participant (one JOIN each)
    again = await StompClient.connect(url(server), passcode=token("alice", name="Alice A."))
    await again.send("/app/room/lobby/join", b"", receipt=True)
    second = json.loads((await watcher.next_message(sub)).body)
    assert second["sessionId"] == again.session_id
    assert second["participants"] == 2


# -- expiry and refresh ----------------------------------------------------------------


async def test_a_token_expiring_mid_session_ends_it_at_exp(secure: Any) -> None:
    server = await secure(heartbeat_send_ms=0, heartbeat_receive_ms=0)
    exp = time.time() + 2
    client = await StompClient.connect(url(server), passcode=token(ttl=2))
    await client.wait_closed(timeout=6)
    ended = time.time()
    (error,) = client.errors
    assert error.get("message") == "credential expired"
    assert exp - 1.05 <= ended <= exp + 1.5, ended - exp


async def test_in_band_refresh_extends_the_session_even_inside_a_transaction(
    secure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await secure(heartbeat_send_ms=0, heartbeat_receive_ms=0)
    client = await StompClient.connect(url(server), passcode=token(ttl=2))
    sub = await client.subscribe("/topic/news")
    await client.send_frame(Frame("BEGIN", (("transaction", "t1"),)))
    fresh = token(ttl=60)
    await client.send(
        "/app/auth/refresh", fresh, [("transaction", "t1"), ("content-type", "text/plain")]
    )
    await client.send("/topic/news", "held", [("transaction", "t1")])
    await asyncio.sleep(3)
    assert not client.closed, client.errors
    await client.send("/topic/news", "after", receipt=True)
    assert (await client.next_message(sub)).body == b"after"  # "held" waits for COMMIT
    assert fresh not in caplog.text
    await client.disconnect()


async def test_a_refresh_to_a_shorter_token_ends_the_session_sooner(secure: Any) -> None:
    """The relay's timer follows the new exp, also when it moved earlier (no
    heart-beats here to wake the connection otherwise)."""
    server = await secure(heartbeat_send_ms=0, heartbeat_receive_ms=0)
    client = await StompClient.connect(url(server), passcode=token(ttl=60))
    exp = time.time() + 2
    await client.send("/app/auth/refresh", token(ttl=2), receipt=True)
    await client.wait_closed(timeout=6)
    assert client.errors[0].get("message") == "credential expired"
    assert abs(time.time() - exp) < 1.3


async def test_refresh_must_keep_the_subject(secure: Any) -> None:
    server = await secure()
    client = await StompClient.connect(url(server), passcode=token("alice"))
    await client.send("/app/auth/refresh", token("mallory"))
    await client.wait_closed()
    assert client.errors[0].get("message") == "invalid token: different subject"


ROOMS_ACL = {
    "rules": [
        {
            "users": "*",
            "subscribe": ["/topic/room/{claim.rooms}", "/app/room/{claim.rooms}/participants"],
            "send": ["/app/room/{claim.rooms}/*", "/topic/room/{claim.rooms}"],
        }
    ]
}


async def test_refresh_to_fewer_rights_ends_the_session_naming_the_subscription(
    secure: Any,
) -> None:
    server = await secure(acl=ROOMS_ACL)
    client = await StompClient.connect(url(server), passcode=token(rooms=["a", "b"]))
    await client.subscribe("/topic/room/a", "sub-a")
    await client.subscribe("/topic/room/b", "sub-b")
    await client.send("/app/auth/refresh", token(rooms=["a"]))
    await client.wait_closed()
    (error,) = client.errors
    assert error.get("message") == "forbidden"
    assert b"sub-b" in error.body
    assert b"/topic/room/b" in error.body


@pytest.mark.node
async def test_stompjs_refresh_keeps_the_session(secure: Any, stompjs: StompJsClient) -> None:
    server = await secure(heartbeat_send_ms=0, heartbeat_receive_ms=0)
    await stompjs.connect(url(server), passcode=token(ttl=2))
    await stompjs.send("/app/auth/refresh", body=token(ttl=60))
    await asyncio.sleep(3)
    await stompjs.subscribe("/topic/news", sub_id="n", receipt="rn")
    await stompjs.expect("receipt", lambda e: e["receipt_id"] == "rn", timeout=5)


# -- authorization ---------------------------------------------------------------------

MEMBERS_ACL = {
    "rules": [
        {
            "users": "*",
            "subscribe": ["/topic/room/*", "/app/room/*/participants"],
            "send": ["/app/room/*/join", "/app/room/*/leave", "/app/room/*/message"],
            "members_only": True,
        }
    ]
}


async def test_acl_denies_by_default_and_gives_room_feeds_to_members_only(secure: Any) -> None:
    server = await secure(acl=MEMBERS_ACL)
    client = await StompClient.connect(url(server), passcode=token())
    with pytest.raises(StompClientError, match="forbidden"):
        await client.subscribe(ROOM)
    assert b"/topic/room/lobby" in client.errors[0].body
    client = await StompClient.connect(url(server), passcode=token())
    with pytest.raises(StompClientError, match="forbidden"):
        await client.subscribe("/app/room/lobby/participants")
    client = await StompClient.connect(url(server), passcode=token())
    await client.send("/app/room/lobby/join", b"", receipt=True)
    sub = await client.subscribe(ROOM)
    await client.send("/app/room/lobby/message", {"message": "hi"}, receipt=True)
    chat = await client.next_message(sub)
    assert dict(chat.headers)["x-event-type"] == "CHAT"
    with pytest.raises(StompClientError, match="forbidden"):
        await client.send(ROOM, "raw", receipt=True)  # raw SENDs are not in the rules
    client = await StompClient.connect(url(server), passcode=token())
    with pytest.raises(StompClientError, match="forbidden"):
        await client.subscribe("/topic/broadcast")
    # leaving a room while still subscribed to it: that feed is no longer allowed
    client = await StompClient.connect(url(server), passcode=token())
    await client.send("/app/room/lobby/join", b"", receipt=True)
    await client.subscribe(ROOM, "feed")
    await client.send("/app/room/lobby/leave", b"")
    await client.wait_closed()
    assert client.errors[0].get("message") == "forbidden"
    assert b"feed" in client.errors[0].body
    # unsubscribing first is the clean way out
    client = await StompClient.connect(url(server), passcode=token())
    await client.send("/app/room/lobby/join", b"", receipt=True)
    await client.subscribe(ROOM, "feed")
    await client.unsubscribe("feed")
    await client.send("/app/room/lobby/leave", b"", receipt=True)
    assert not client.closed


@pytest.mark.node
async def test_stompjs_sees_a_forbidden_subscription_as_an_error(
    secure: Any, stompjs: StompJsClient
) -> None:
    server = await secure(acl=ROOMS_ACL)
    await stompjs.connect(url(server), passcode=token(rooms=["a"]), reconnectDelay=0)
    await stompjs.subscribe("/topic/room/secret", sub_id="s", receipt="rs")
    error = await stompjs.expect("error", timeout=5)
    assert error["headers"]["message"] == "forbidden"


def test_an_acl_without_authentication_is_refused_at_start(tmp_path: Any) -> None:
    import subprocess
    import sys

    rules = tmp_path / "acl.toml"
    rules.write_text('[[rules]]\nusers = "*"\nsubscribe = ["/topic/**"]\n')
    done = subprocess.run(
        [sys.executable, "-m", "stomprelay", "serve", "--port", "0", "--acl", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "--acl needs authentication" in done.stderr


# -- forged events and sender stamps ---------------------------------------------------


@pytest.mark.parametrize("auth_on", [True, False])
async def test_reserved_headers_are_replaced_even_when_first(
    make_relay: Any, auth_on: bool
) -> None:
    auth = Authenticator(secret=SECRET) if auth_on else None
    server = await make_relay(auth=auth)
    creds = {"passcode": token("alice")} if auth_on else {"login": "alice"}
    watcher = await StompClient.connect(url(server), **creds)
    sub = await watcher.subscribe(ROOM)
    forger = await StompClient.connect(url(server), **creds)
    forged = {"type": "SYSTEM", "message": "forged", "serverId": "operator", "username": ""}
    await forger.send_frame(
        Frame(
            "SEND",
            (
                ("x-sender", "operator"),
                ("x-event-type", "SYSTEM"),
                ("x-sender-session", "nobody"),
                ("x-offset", "999"),
                ("x-server-id", "operator"),
                ("X-Event-Type", "SYSTEM"),
                ("x-offset:999", "a name that unescapes to x-offset:999 for STOMP 1.0"),
                ("destination", ROOM),
                ("x-event-type", "SYSTEM"),
                ("content-type", "application/json;charset=utf-8"),
                ("receipt", "r1"),
            ),
            json.dumps(forged).encode(),
        )
    )
    message = await watcher.next_message(sub)
    headers = message.headers
    names = [k for k, _ in headers]
    assert "x-event-type" not in names, "only the relay's events carry x-event-type"
    assert names.count("x-sender") == 1
    assert dict(headers)["x-sender"] == "alice"
    assert dict(headers)["x-sender-session"] == forger.session_id
    assert dict(headers)["x-offset"] != "999"
    assert "x-server-id" not in names
    assert not [n for n in names if n.lower() == "x-event-type" or ":" in n], names
    # and a relay-made event says what it is
    await forger.send("/app/room/lobby/join", {"username": "alice"}, receipt=True)
    join = await watcher.next_message(sub)
    assert dict(join.headers)["x-event-type"] == "JOIN"


async def test_empty_header_names_and_bad_logins_are_refused(make_relay: Any) -> None:
    server = await make_relay()
    client = await StompClient.connect(url(server), login="alice")
    await client.ws.send("SEND\ndestination:/topic/a\n:novalue\n\nx\x00")
    await client.wait_closed()
    assert client.errors[0].get("message") == "Empty header name"
    for login in ("a" * 65, "evil\u202etxt", "tab\tname"):
        with pytest.raises(StompClientError, match="login"):
            await StompClient.connect(url(server), login=login)
    assert not await server.relay.registry.sessions()
    ok = await StompClient.connect(url(server), login="Zoë")
    await ok.disconnect()


# -- rate limits ---------------------------------------------------------------------


async def test_a_flooding_session_is_cut_while_a_polite_one_keeps_every_message(
    make_relay: Any,
) -> None:
    server = await make_relay()
    reader = await StompClient.connect(url(server), login="reader")
    sub = await reader.subscribe("/topic/chat")
    polite = await StompClient.connect(url(server), login="polite")
    flood = await StompClient.connect(url(server), login="flood")
    flood_frames = "".join(f"SEND\ndestination:/topic/spam\n\n{i}\x00" for i in range(400))

    async def polite_sender() -> None:
        for i in range(40):
            await polite.send("/topic/chat", f"m{i}", receipt=i % 10 == 9)
            await asyncio.sleep(0.025)

    sending = asyncio.create_task(polite_sender())
    await flood.ws.send(flood_frames)
    await flood.wait_closed()
    assert flood.errors[0].get("message") == "rate limit exceeded"
    await sending
    got = [m.body for m in await reader.collect(40, sub, timeout=10)]
    assert got == [f"m{i}".encode() for i in range(40)]
    await eventually(lambda: counter(server, "stomprelay_rate_limited_total", limit="frames"))


async def test_the_byte_rate_limit(make_relay: Any) -> None:
    server = await make_relay(byte_rate=10_000, byte_burst=20_000)
    client = await StompClient.connect(url(server), login="big")
    for _ in range(5):
        with contextlib.suppress(Exception):
            await client.send("/topic/a", b"x" * 8000)
    await client.wait_closed()
    assert client.errors[0].get("message") == "rate limit exceeded"
    await eventually(lambda: counter(server, "stomprelay_rate_limited_total", limit="bytes"))


@pytest.mark.node
async def test_stompjs_flood_is_rate_limited(make_relay: Any, stompjs: StompJsClient) -> None:
    server = await make_relay(frame_rate=20, frame_burst=30)
    await stompjs.connect(url(server), login="js", reconnectDelay=0)
    for i in range(60):
        try:
            await stompjs.send("/topic/spam", body=str(i))
        except StompJsError:
            break  # the relay closed the session
    error = await stompjs.expect("error", timeout=5)
    assert error["headers"]["message"] == "rate limit exceeded"


# -- operators -----------------------------------------------------------------------


async def test_kick_ends_every_session_of_the_user_and_refuses_it_until_then(
    secure: Any,
) -> None:
    server = await secure()
    relay = server.relay
    alice1 = await StompClient.connect(url(server), passcode=token("alice"))
    alice2 = await StompClient.connect(url(server), passcode=token("alice"))
    bob = await StompClient.connect(url(server), passcode=token("bob"))
    sub = await bob.subscribe("/topic/news")
    await relay.kick("alice", int(time.time() * 1000) + 60_000)
    for client in (alice1, alice2):
        await client.wait_closed()
        assert client.errors[0].get("message") == "session ended by operator"
    await bob.send("/topic/news", "still here", receipt=True)
    assert (await bob.next_message(sub)).body == b"still here"
    error = await refused(server, passcode=token("alice"))
    assert error.get("message") == "access refused"
    await relay.kick("alice", None, lift=True)
    back = await StompClient.connect(url(server), passcode=token("alice"))
    await back.disconnect()
    await eventually(lambda: counter(server, "stomprelay_sessions_kicked_total") == 2)


async def test_fuzzed_connects_never_raise(secure: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Random CONNECT headers and tokens: each gets CONNECTED or one ERROR, and the
    relay logs no traceback."""
    server = await secure()
    rng = random.Random(9)
    alphabet = string.printable + "éü\u202e\x00"
    good = 0
    for i in range(60):
        headers: list[tuple[str, str]] = []
        for _ in range(rng.randrange(0, 6)):
            name = rng.choice(
                ["passcode", "login", "Authorization", "authorization", "host", "x", "heart-beat"]
            )
            kind = rng.random()
            if kind < 0.3:
                value = token(rng.choice(["alice", "bob", "a" * 70]), ttl=rng.choice([60, -60]))
            elif kind < 0.5:
                value = "Bearer " + token()[: rng.randrange(0, 200)]
            else:
                value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
            headers.append((name, value.replace("\x00", "").replace("\n", "")))
        client = await _raw_connect(server, {"headers": headers})
        done = asyncio.create_task(client.wait_closed(timeout=3))
        await asyncio.sleep(0.05)
        if got_connected(client) and not client.errors:
            good += 1
            await client.close()
        else:
            await done
            assert len(client.errors) == 1, (i, headers)
        done.cancel()
    assert "Traceback" not in caplog.text
    assert good < 60


async def test_frames_sent_with_a_refused_connect_are_never_acted_on(secure: Any) -> None:
    """CONNECT (no token) and a SEND in the same WebSocket message: the SEND waits
    for the credential, and with the CONNECT refused it is dropped unread."""
    server = await secure()
    reader = await StompClient.connect(url(server), passcode=token("reader"))
    sub = await reader.subscribe("/topic/news")
    raw = await _raw_connect(server, {"headers": [("x", "y")]})
    await raw.ws.send("SEND\ndestination:/topic/news\n\nsneaked in\x00")
    await raw.wait_closed()
    assert [e.get("message") for e in raw.errors] == ["authentication required"]
    await reader.expect_no_message(sub, 0.5)


async def test_stomp_py_forgeries_and_floods_over_tcp_and_websocket(make_relay: Any) -> None:
    """stomp.py, the Python client back-ends use: its own x-sender/x-event-type are
    replaced over WebSocket and TCP, and a flood over TCP hits the same limit."""
    server = await make_relay()
    clients = PyClients()
    try:
        reader = clients(server, "ws")
        await reader.connect(username="reader")
        await reader.subscribe("/topic/room/lobby")
        for kind in ("ws", "tcp12"):
            forger = clients(server, kind)
            await forger.connect(username=f"forger-{kind}")
            await forger.send(
                "/topic/room/lobby",
                '{"type":"SYSTEM","message":"forged","serverId":"operator"}',
                headers={"x-sender": "operator", "x-event-type": "SYSTEM"},
            )
            got = await reader.message()
            assert got.headers["x-sender"] == f"forger-{kind}"
            assert "x-event-type" not in got.headers
        flood = clients(server, "tcp12")
        await flood.connect(username="flood")
        for i in range(400):
            if not flood.conn.is_connected():
                break
            with contextlib.suppress(Exception):
                await flood.send("/topic/spam", str(i))
        error = await flood.next("error", timeout=5)
        assert error.headers["message"] == "rate limit exceeded"
    finally:
        await clients.aclose()
