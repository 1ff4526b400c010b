"""Connection hygiene over real sockets: Origins at the handshake, the client address
behind trusted proxies, per-address caps and handshake rates, and an HTTP API that
tells no secrets (docs/security.md).

Every client here connects from 127.0.0.1; relays that list 127.0.0.0/8 as a trusted
proxy believe the ``X-Forwarded-For`` a test sends, which is how one test plays many
client addresses (and a client that is not on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from jsclient import StompJsClient, StompJsError
from rawstomp import RawStomp
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from stomprelay.factory import build_relay
from stomprelay.relay import Relay
from stomprelay.settings import Settings
from stomprelay.tokens import Authenticator
from stomprelay.transport import RelayServer

#: The test's own address, as a proxy: what lets a test choose the client address.
LOOPBACK_PROXY = ("127.0.0.0/8",)
CALM = "/topic/room/calm"
MESSAGES = 100  # within the per-session frame burst


async def ws(
    port: int,
    *,
    origin: str | None = None,
    forwarded: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> RawStomp:
    extra = dict(headers or {})
    if forwarded is not None:
        extra["X-Forwarded-For"] = forwarded
    conn = await connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=["v12.stomp"],  # type: ignore[list-item]
        origin=origin,  # type: ignore[arg-type]
        additional_headers=extra,
        max_size=None,
        open_timeout=5,
        ping_interval=None,
        close_timeout=2,
    )
    return RawStomp(conn)


async def handshake(port: int, **kwargs: Any) -> tuple[int, Mapping[str, str], bytes]:
    """Status, headers and body of a WebSocket handshake (101: it was accepted)."""
    try:
        client = await ws(port, **kwargs)
    except InvalidStatus as exc:
        response = exc.response
        return response.status_code, response.headers, response.body or b""
    await client.close()
    return 101, {}, b""


def _request(
    port: int, method: str, path: str, headers: Mapping[str, str] | None, body: bytes | None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(_request, port, method, path, headers, body)


def refused_count(metrics: bytes, reason: str) -> float:
    match = re.search(
        rb'^stomprelay_refused_connections_total\{reason="%s"\} (\S+)$' % reason.encode(),
        metrics,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


async def started(settings: Settings, admin_token: str | None = None) -> RelayServer:
    """A relay with an admin token (``make_relay`` takes none); the test stops it."""
    server = RelayServer(
        build_relay(settings, server_id="hygiene"),
        port=0,
        stomp_port=0,
        admin_token=admin_token,
    )
    await server.start()
    return server


# -- Origin at the handshake ----------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "origin", "status"),
    [
        (("https://example.com",), "https://example.com", 101),
        (("https://example.com",), "https://example.com.evil.com", 403),
        (("https://example.com",), "null", 403),
        (("https://example.com",), "http://example.com", 403),
        (("https://example.com",), "https://example.com:8443", 403),
        (("https://*.example.com",), "https://chat.example.com", 101),
        (("https://*.example.com",), "https://example.com", 403),
        (("https://*.example.com",), "https://chat.example.com.evil.com", 403),
        (("null",), "null", 101),
        (("*",), "http://anywhere.example", 101),
        ((), "http://evil.example", 403),
        ((), "null", 403),
    ],
    ids=[
        "listed",
        "suffix-attack",
        "null-not-listed",
        "other-scheme",
        "other-port",
        "wildcard",
        "wildcard-needs-a-label",
        "wildcard-suffix-attack",
        "null-listed",
        "any",
        "default-cross-site",
        "default-null",
    ],
)
async def test_origin_checked_at_the_handshake(
    make_relay: Any, allowed: tuple[str, ...], origin: str, status: int
) -> None:
    server = await make_relay(allowed_origins=allowed)
    got, headers, body = await handshake(server.port, origin=origin)
    assert got == status, body
    if status == 403:
        assert body == b"Origin not allowed\n", "a plain short body, before any STOMP"
        assert headers["Content-Type"].startswith("text/plain")
        assert not server.relay.sinks, "no STOMP session was opened"


async def test_same_origin_is_the_default(make_relay: Any) -> None:
    """The relay's own page (Origin host:port == Host) is let in; another port or host is not."""
    server = await make_relay()
    port = server.port
    assert (await handshake(port, origin=f"http://127.0.0.1:{port}"))[0] == 101
    assert (await handshake(port, origin=f"https://127.0.0.1:{port}"))[0] == 101
    assert (await handshake(port, origin=f"http://127.0.0.1:{port + 1}"))[0] == 403
    assert (await handshake(port, origin=f"http://localhost:{port}"))[0] == 403
    client = await ws(port, origin=f"http://127.0.0.1:{port}")
    connected = await client.connect()
    assert connected.get("session")
    await client.close()


async def test_same_origin_behind_a_trusted_proxy_uses_x_forwarded_host(make_relay: Any) -> None:
    """nginx talks to the relay with its own Host; the one the browser asked for comes
    in X-Forwarded-Host, believed from a trusted proxy only."""
    page = {
        "origin": "https://chat.example.com",
        "headers": {"X-Forwarded-Host": "chat.example.com"},
    }
    proxied = await make_relay(server_id="proxied", trusted_proxies=LOOPBACK_PROXY)
    assert (await handshake(proxied.port, **page))[0] == 101
    direct = await make_relay(server_id="direct")
    assert (await handshake(direct.port, **page))[0] == 403


@pytest.mark.parametrize(("allow", "status"), [(True, 101), (False, 403)], ids=["allow", "refuse"])
async def test_no_origin_header(make_relay: Any, allow: bool, status: int) -> None:
    """Non-browser clients send no Origin: served unless --no-origin refuse."""
    server = await make_relay(allow_no_origin=allow)
    assert (await handshake(server.port))[0] == status


async def test_origin_refusals_are_counted(make_relay: Any) -> None:
    server = await make_relay()
    for _ in range(3):
        assert (await handshake(server.port, origin="http://evil.example"))[0] == 403
    _, _, metrics = await request(server.port, "/metrics")
    assert refused_count(metrics, "origin") == 3


@pytest.mark.node
async def test_stompjs_from_another_origin_is_refused(make_relay: Any) -> None:
    """stomp.js under Node (ws's ``origin`` option) as a page on another site would be."""
    server = await make_relay(allowed_origins=("https://chat.example.com",))
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with await StompJsClient.start() as js:
        with pytest.raises(StompJsError, match="connect failed"):
            await js.connect(url, origin="https://chat.example.com.evil.com", timeout=5)
        errors = [e for e in js.history if e.get("event") == "ws_error"]
        assert any("403" in str(e.get("message")) for e in errors), js.history
        assert not any(e.get("event") == "connected" for e in js.history)
    assert not server.relay.sinks
    async with await StompJsClient.start() as js:
        event = await js.connect(url, origin="https://chat.example.com")
        assert event["headers"]["version"] == "1.2"


# -- the client address behind trusted proxies ----------------------------------------


async def remote_of(server: RelayServer, client: RawStomp) -> str:
    connected = await client.connect()
    status, _, body = await request(server.port, "/api/sessions")
    assert status == 200, body
    sessions = {s["sessionId"]: s for s in json.loads(body)}
    address: str = sessions[connected.get("session")]["remoteAddress"]
    return address


@pytest.mark.parametrize(
    ("trusted", "forwarded", "remote"),
    [
        (LOOPBACK_PROXY, "203.0.113.7", "203.0.113.7"),
        # the rightmost address that is not a proxy of ours: what the client cannot forge
        (("127.0.0.0/8", "10.0.0.0/8"), "198.51.100.1, 203.0.113.7, 10.0.0.2", "203.0.113.7"),
        (LOOPBACK_PROXY, "127.0.0.1, 203.0.113.7", "203.0.113.7"),
        (LOOPBACK_PROXY, "203.0.113.7, not-an-address", "127.0.0.1:"),
        # a direct client (not from a trusted proxy) cannot forge it
        ((), "203.0.113.7", "127.0.0.1:"),
        (("10.0.0.0/8",), "203.0.113.7", "127.0.0.1:"),
    ],
    ids=["proxied", "rightmost-untrusted", "forged-loopback", "garbage", "direct", "other-proxy"],
)
async def test_x_forwarded_for_believed_only_from_a_trusted_proxy(
    make_relay: Any, trusted: tuple[str, ...], forwarded: str, remote: str
) -> None:
    server = await make_relay(trusted_proxies=trusted)
    client = await ws(server.port, forwarded=forwarded)
    got = await remote_of(server, client)
    if remote.endswith(":"):
        assert got.startswith(remote), got
    else:
        assert got == remote
    await client.close()


# -- per-address limits ----------------------------------------------------------------


async def calm_relay(make_relay: Any, **settings: Any) -> tuple[RelayServer, RawStomp, RawStomp]:
    """A relay behind a (pretend) trusted proxy, and a subscriber and a publisher of one
    room on it, each from an address of its own."""
    server = await make_relay(trusted_proxies=LOOPBACK_PROXY, **settings)
    subscriber = await ws(server.port, forwarded="198.51.100.10")
    await subscriber.connect()
    await subscriber.subscribe(CALM)
    publisher = await ws(server.port, forwarded="198.51.100.11")
    await publisher.connect()
    return server, subscriber, publisher


async def every_message_arrives(
    subscriber: RawStomp, publisher: RawStomp, during: asyncio.Task[int]
) -> None:
    """The publisher sends MESSAGES while ``during`` attacks; the subscriber gets
    each of them once, in order."""
    for n in range(MESSAGES):
        await publisher.send(CALM, str(n).encode())
        await asyncio.sleep(0.002)
    got = []
    while len(got) < MESSAGES:
        frame = await subscriber.expect("MESSAGE", timeout=10)
        got.append(int(frame.body))
    assert got == list(range(MESSAGES))
    assert await during > 0, "the attack was refused throughout"


async def hammer(port: int, address: str, seconds: float) -> int:
    """Handshakes from ``address`` for ``seconds``; how many got 429."""
    refused = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        status, _, _ = await handshake(port, forwarded=address)
        assert status in (101, 429), status
        refused += status == 429
    return refused


async def test_per_address_cap_trips_while_a_neighbour_keeps_every_message(
    make_relay: Any,
) -> None:
    server, subscriber, publisher = await calm_relay(
        make_relay, max_connections_per_ip=5, handshake_rate_per_ip=0
    )
    attacker = "203.0.113.66"
    held = [await ws(server.port, forwarded=attacker) for _ in range(5)]
    status, _, body = await handshake(server.port, forwarded=attacker)
    assert (status, body) == (429, b"too many connections\n")
    attack = asyncio.create_task(hammer(server.port, attacker, 1.0))
    await every_message_arrives(subscriber, publisher, attack)
    # one connection less: one more may come in
    await held.pop().close()
    for _ in range(50):
        if (await handshake(server.port, forwarded=attacker))[0] == 101:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("a slot freed by a close was not given back")
    _, _, metrics = await request(server.port, "/metrics")
    assert refused_count(metrics, "ip_cap") >= 2
    for client in [*held, subscriber, publisher]:
        await client.close()


async def test_per_address_cap_on_stomp_over_tcp(make_relay: Any) -> None:
    """Over plain TCP, one ERROR then close: there is no HTTP status to give."""
    server = await make_relay(max_connections_per_ip=3, handshake_rate_per_ip=0)
    held = [await asyncio.open_connection("127.0.0.1", server.stomp_port) for _ in range(3)]
    for reader, writer in held:  # the sessions are open: they answer a CONNECT
        writer.write(b"CONNECT\naccept-version:1.2\n\n\x00")
        assert (await asyncio.wait_for(reader.readuntil(b"\x00"), 5)).startswith(b"CONNECTED")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.stomp_port)
    refusal = await asyncio.wait_for(reader.read(), 5)
    assert refusal == b"ERROR\nmessage:too many connections\n\n\x00"
    writer.close()
    for _, held_writer in held:
        held_writer.close()


async def test_handshake_rate_trips_while_a_neighbour_keeps_every_message(
    make_relay: Any,
) -> None:
    server, subscriber, publisher = await calm_relay(
        make_relay, handshake_rate_per_ip=1.0, handshake_burst_per_ip=5
    )
    attacker = "203.0.113.77"
    for _ in range(5):
        assert (await handshake(server.port, forwarded=attacker))[0] == 101
    status, headers, body = await handshake(server.port, forwarded=attacker)
    assert (status, body) == (429, b"too many connection attempts\n")
    assert int(headers["Retry-After"]) >= 1
    attack = asyncio.create_task(hammer(server.port, attacker, 1.0))
    await every_message_arrives(subscriber, publisher, attack)
    assert (await handshake(server.port, forwarded="198.51.100.12"))[0] == 101, (
        "other addresses are not held up"
    )
    _, _, metrics = await request(server.port, "/metrics")
    assert refused_count(metrics, "ip_rate") >= 2
    await subscriber.close()
    await publisher.close()


# -- the HTTP API tells no secrets ------------------------------------------------------

ADMIN = "s3cret-admin"
NON_LOOPBACK = {"X-Forwarded-For": "203.0.113.7"}


@pytest.fixture
async def admin_relay() -> Any:
    server = await started(Settings(), admin_token=ADMIN)
    yield server
    await server.stop()


@pytest.mark.parametrize("path", ["/api/servers", "/api/sessions", "/api/rooms", "/api/rooms/x"])
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        (f"Basic {ADMIN}", 401),
        (f"Bearer {ADMIN}x", 401),
        (f"Bearer {ADMIN}", None),
        (f"bearer {ADMIN}", None),
        (f"BEARER  {ADMIN}", None),
    ],
    ids=["none", "wrong", "basic", "longer", "right", "lower-case", "upper-case"],
)
async def test_api_needs_the_admin_token(
    admin_relay: RelayServer, path: str, authorization: str | None, status: int | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    got, answer_headers, body = await request(admin_relay.port, path, headers=headers)
    if status is None:
        assert got in (200, 404), body  # /api/rooms/x: no such room
    else:
        assert got == status
        assert answer_headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["error"]
        assert ADMIN.encode() not in body


async def test_metrics_need_the_token_unless_public(admin_relay: RelayServer) -> None:
    assert (await request(admin_relay.port, "/metrics"))[0] == 401
    auth = {"Authorization": f"Bearer {ADMIN}"}
    status, _, body = await request(admin_relay.port, "/metrics", headers=auth)
    assert status == 200
    assert b"stomprelay_refused_connections" in body
    public = await started(Settings(public_metrics=True), admin_token=ADMIN)
    try:
        assert (await request(public.port, "/metrics"))[0] == 200
        assert (await request(public.port, "/api/sessions"))[0] == 401, "the API stays closed"
    finally:
        await public.stop()


async def test_without_a_token_the_api_answers_loopback_only() -> None:
    """Behind a trusted proxy the forwarded address counts: nginx on the same host does
    not open the API to everyone, and a client cannot forge its way onto loopback."""
    server = await started(Settings(trusted_proxies=LOOPBACK_PROXY))
    try:
        for path in ("/api/sessions", "/api/servers", "/metrics"):
            assert (await request(server.port, path))[0] == 200, path
            status, _, body = await request(server.port, path, headers=NON_LOOPBACK)
            assert status == 403, path
            assert "admin token" in json.loads(body)["error"]
        forged = {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}
        assert (await request(server.port, "/api/sessions", headers=forged))[0] == 403
        for path in ("/health", "/ready", "/", "/auth/config"):
            assert (await request(server.port, path, headers=NON_LOOPBACK))[0] == 200, path
    finally:
        await server.stop()
    public = await started(Settings(trusted_proxies=LOOPBACK_PROXY, public_metrics=True))
    try:
        assert (await request(public.port, "/metrics", headers=NON_LOOPBACK))[0] == 200
        assert (await request(public.port, "/api/rooms", headers=NON_LOOPBACK))[0] == 403
    finally:
        await public.stop()


async def test_a_direct_client_cannot_claim_to_be_elsewhere(make_relay: Any) -> None:
    """With no trusted proxy, X-Forwarded-For is ignored: the peer (loopback) counts."""
    server = await make_relay()
    assert (await request(server.port, "/api/sessions", headers=NON_LOOPBACK))[0] == 200


async def test_ready_says_ready_or_degraded_only(
    make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_relay()
    status, _, body = await request(server.port, "/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    monkeypatch.setattr(Relay, "ready", property(lambda self: False))
    status, _, body = await request(server.port, "/ready")
    assert (status, json.loads(body)) == (503, {"status": "degraded"})


@pytest.mark.parametrize(
    ("server_id", "status"),
    [("relay-1", 202), ("hygiene", 202), ("a b", 400), ("x*", 400), ("r" * 65, 400), ("../x", 400)],
)
async def test_notification_server_id_is_validated(
    admin_relay: RelayServer, server_id: str, status: int
) -> None:
    body = json.dumps({"message": "hello", "serverId": server_id}).encode()
    got, _, answer = await request(
        admin_relay.port,
        "/api/system/notifications",
        method="POST",
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        body=body,
    )
    assert got == status, answer


async def test_auth_config_and_dev_token_off(make_relay: Any) -> None:
    server = await make_relay()
    status, _, body = await request(server.port, "/auth/config")
    assert (status, json.loads(body)) == (200, {"required": False, "devTokens": False})
    assert (await request(server.port, "/dev/token?user=alice"))[0] == 404


async def test_dev_tokens_when_on(make_relay: Any) -> None:
    secret = "dev-secret-" + "x" * 32
    server = await make_relay(auth=Authenticator(secret=secret), dev_tokens=True)
    status, _, body = await request(server.port, "/auth/config")
    assert (status, json.loads(body)) == (200, {"required": True, "devTokens": True})
    status, headers, body = await request(server.port, "/dev/token?user=alice")
    assert status == 200
    assert headers["cache-control"] == "no-store"
    token = json.loads(body)["token"]
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "alice"
    for bad in ("", "%E2%80%AEalice", "a%00b", "x" * 65):
        assert (await request(server.port, f"/dev/token?user={bad}"))[0] == 400, bad


KICK = "/api/users/{user}/kick"


@pytest.mark.parametrize(
    ("user", "body", "status"),
    [
        ("alice", b"", 202),
        ("alice", b'{"until": "2030-01-01T00:00:00Z"}', 202),
        ("alice", b'{"until": 1893456000000}', 202),
        ("alice", b'{"until": null}', 202),
        ("%E2%80%AEalice", b"", 400),
        ("a%07b", b"", 400),
        ("x" * 257, b"", 400),
        ("alice", b'{"until": "next tuesday"}', 400),
        ("alice", b'{"until": true}', 400),
        ("alice", b"[1]", 400),
    ],
)
async def test_kick_route(admin_relay: RelayServer, user: str, body: bytes, status: int) -> None:
    got, _, answer = await request(
        admin_relay.port,
        KICK.format(user=user),
        method="POST",
        headers={"Authorization": f"Bearer {ADMIN}"},
        body=body,
    )
    assert got == status, answer
    if status == 202:
        reply = json.loads(answer)
        assert reply["user"] == "alice"
        assert reply["until"] in (None, 1893456000000)


async def test_kick_needs_the_token(admin_relay: RelayServer, make_relay: Any) -> None:
    path = KICK.format(user="alice")
    assert (await request(admin_relay.port, path, method="POST", body=b""))[0] == 401
    open_relay = await make_relay()
    got, _, body = await request(open_relay.port, path, method="POST", body=b"")
    assert got == 403, "acting routes need a configured token, even from loopback"
    assert "admin-token" in json.loads(body)["error"]


async def test_kick_ends_the_users_sessions(admin_relay: RelayServer) -> None:
    client = await ws(admin_relay.port)
    await client.connect(headers=[("login", "mallory")])
    got, _, answer = await request(
        admin_relay.port,
        KICK.format(user="mallory"),
        method="POST",
        headers={"Authorization": f"Bearer {ADMIN}"},
        body=b"",
    )
    assert got == 202, answer
    frames = await client.frames_until_closed(timeout=5)
    assert [f.get("message") for f in frames if f.command == "ERROR"] == [
        "session ended by operator"
    ]
    with contextlib.suppress(Exception):
        await client.close()


async def test_kick_route_suspends_and_lift_only_lifts(admin_relay: RelayServer) -> None:
    """``--until`` refuses the user's CONNECTs; ``{"lift": true}`` (``stomprelay kick
    --lift --api``) ends the suspension and ends no session; a later plain kick does
    not lift a suspension."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    port = admin_relay.port

    async def post(user: str, body: bytes) -> tuple[int, bytes]:
        status, _, answer = await request(
            port, KICK.format(user=user), method="POST", headers=admin, body=body
        )
        return status, answer

    assert (await post("mallory", b'{"until": 4102444800000}'))[0] == 202
    assert admin_relay.relay.access.suspended["mallory"] == 4102444800000
    assert (await post("mallory", b""))[0] == 202
    assert "mallory" in admin_relay.relay.access.suspended, "a plain kick keeps the suspension"
    refused = await ws(port)
    await refused.send_frame("CONNECT", [("accept-version", "1.2"), ("login", "mallory")])
    assert (await refused.expect("ERROR")).get("message") == "access refused"
    bob = await ws(port)
    await bob.connect(headers=[("login", "bob")])
    status, answer = await post("bob", b'{"lift": true}')
    assert status == 202, answer
    assert json.loads(answer) == {"user": "bob", "lifted": True}
    await bob.receipted("SUBSCRIBE", [("id", "s"), ("destination", "/topic/a")])  # still on
    assert (await post("mallory", b'{"lift": true}'))[0] == 202
    assert "mallory" not in admin_relay.relay.access.suspended
    back = await ws(port)
    await back.connect(headers=[("login", "mallory")])
    for client in (refused, bob, back):
        with contextlib.suppress(Exception):
            await client.close()
