"""The server API on a single node (contract section 10): who may call it, its
errors, history, broadcast and the OpenAPI document against the served routes."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from apiclient import call, publish
from stompclient import StompClient
from websockets.asyncio.client import connect

from stomprelay.openapi import document
from stomprelay.settings import Limits
from stomprelay.transport import RelayServer
from stomprelay.transport.api_http import ROUTES

MakeRelay = Callable[..., Awaitable[RelayServer]]
KEY, ADMIN = "back-end-key", "operator-token"
LOBBY = "/topic/room/lobby"


def base(server: RelayServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def subscriber(server: RelayServer, destination: str = LOBBY) -> tuple[StompClient, str]:
    client = await StompClient.connect(f"ws://127.0.0.1:{server.port}/ws", login="watcher")
    return client, await client.subscribe(destination)


def test_the_document_lists_exactly_the_routes_served() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    listed = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert listed == set(ROUTES)


async def test_every_documented_route_is_served(make_relay: MakeRelay) -> None:
    """Each path of the document answers on a real relay (never the static 404),
    and a path it does not list is not the API's."""
    server = await make_relay(api_key=KEY)
    served = await call(base(server), "GET", "/api/openapi.json", token=KEY)
    assert served[0] == 200
    assert served[1] == json.loads(json.dumps(document()))
    for path, ops in document()["paths"].items():
        concrete = path.replace("{user}", "alice")
        for method in ops:
            status, answer, headers = await call(
                base(server), method.upper(), concrete, {"destination": LOBBY}, KEY
            )
            assert headers.get_content_type() == "application/json", (method, path)
            assert status != 404 or "no route" not in answer["error"], (method, path)
    status, answer, _ = await call(base(server), "POST", "/api/users/alice/nothing", {}, KEY)
    assert status in (401, 404)


async def test_publish_reaches_subscribers_as_the_server(make_relay: MakeRelay) -> None:
    server = await make_relay(api_key=KEY, admin_token=ADMIN)
    client, sub = await subscriber(server)
    status, answer = await publish(
        base(server), KEY, destination=LOBBY, body="hello", headers={"x-app": "shop"}
    )
    assert status == 200
    assert set(answer) == {"destination", "messageId", "offset", "epoch"}
    assert answer["destination"] == LOBBY
    assert answer["offset"] == 1
    assert answer["epoch"]
    frame = await client.next_message(sub)
    assert frame.body == b"hello"
    assert frame.get("x-sender") == "server"
    assert frame.get("x-sender-session") is None
    assert frame.get("x-app") == "shop"
    assert frame.get("message-id") == answer["messageId"]
    assert frame.get("x-offset") == "1"
    assert frame.get("x-epoch") == answer["epoch"]

    status, answer = await publish(
        base(server), ADMIN, destination=LOBBY, bodyBase64=base64.b64encode(b"\x00\xff").decode()
    )
    assert status == 200
    assert answer["offset"] == 2
    frame = await client.next_message(sub)
    assert frame.body == b"\x00\xff"
    assert frame.get("x-sender") == "operator"
    assert frame.get("content-type") == "application/octet-stream"
    await client.close()


async def test_broadcast_answers_one_result_per_destination(make_relay: MakeRelay) -> None:
    server = await make_relay(api_key=KEY)
    client, news = await subscriber(server, "/topic/news")
    status, answer, _ = await call(
        base(server),
        "POST",
        "/api/broadcast",
        {"destinations": [LOBBY, "/topic/news", "/app/room/x/join", "/topic/system"], "body": "b"},
        KEY,
    )
    assert status == 200
    results = answer["results"]
    assert [r["destination"] for r in results] == [
        LOBBY,
        "/topic/news",
        "/app/room/x/join",
        "/topic/system",
    ]
    assert results[0]["offset"] == 1
    assert results[1]["offset"] == 1
    assert results[2]["status"] == 400
    assert results[2]["field"] == "destination"
    assert results[3]["status"] == 400
    assert (await client.next_message(news)).body == b"b"
    for bad_list in ([], "x", [LOBBY] * 101):
        status, answer, _ = await call(
            base(server), "POST", "/api/broadcast", {"destinations": bad_list, "body": ""}, KEY
        )
        assert (status, answer["field"]) == (400, "destinations")
    await client.close()


async def test_history_reads_after_an_offset_or_the_last_ones(make_relay: MakeRelay) -> None:
    server = await make_relay(api_key=KEY)
    for text in ("one", "two", "three"):
        assert (await publish(base(server), KEY, destination=LOBBY, body=text))[0] == 200
    await publish(base(server), KEY, destination=LOBBY, bodyBase64="AP8=")
    q = "/api/history?destination=%2Ftopic%2Froom%2Flobby"
    status, answer, _ = await call(base(server), "GET", f"{q}&since=1&limit=2", token=KEY)
    assert status == 200
    assert answer["offset"] == 4
    assert answer["epoch"]
    assert [m["offset"] for m in answer["messages"]] == [2, 3]
    assert [m["body"] for m in answer["messages"]] == ["two", "three"]
    first = answer["messages"][0]
    assert set(first) == {"offset", "messageId", "headers", "body"}
    assert first["headers"]["x-sender"] == "server"
    status, answer, _ = await call(base(server), "GET", f"{q}&limit=2", token=KEY)
    assert [m["offset"] for m in answer["messages"]] == [3, 4]
    assert answer["messages"][1]["bodyBase64"] == "AP8="
    status, answer, _ = await call(
        base(server), "GET", "/api/history?destination=/topic/room/empty", token=KEY
    )
    assert (status, answer["messages"], answer["offset"], answer["epoch"]) == (200, [], 0, None)


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"body": "x"}, "destination", "destination"),
        ({"destination": "/exchange/x", "body": "x"}, "destination", "not served"),
        ({"destination": "/queue/x", "body": "x"}, "destination", "not a room"),
        ({"destination": "/topic/room/a b", "body": "x"}, "destination", "Room ids"),
        ({"destination": "/app/room/a/join", "body": "x"}, "destination", "not a room"),
        ({"destination": "/user/al/queue/subscriptions", "body": "x"}, "destination", "relay only"),
        ({"destination": "/user/queue/messages", "body": "x"}, "destination", "not a room"),
        ({"destination": LOBBY}, "body", "body"),
        ({"destination": LOBBY, "body": "x", "bodyBase64": "eA=="}, "body", "not both"),
        ({"destination": LOBBY, "bodyBase64": "!!"}, "bodyBase64", "base64"),
        ({"destination": LOBBY, "body": 3}, "body", "body"),
        ({"destination": LOBBY, "body": "x", "headers": {"x-sender": "me"}}, "headers", "x-sender"),
        ({"destination": LOBBY, "body": "x", "headers": {"X-Offset": "1"}}, "headers", "X-Offset"),
        ({"destination": LOBBY, "body": "x", "headers": {"a:b": "1"}}, "headers", "a:b"),
        ({"destination": LOBBY, "body": "x", "headers": {"a": "1\n2"}}, "headers", "character"),
        ({"destination": LOBBY, "body": "x", "headers": {"a": 1}}, "headers", "string"),
        ({"destination": LOBBY, "body": "x", "headers": ["a"]}, "headers", "object"),
        ({"destination": LOBBY, "body": "x", "idempotencyKey": ""}, "idempotencyKey", "1 to"),
        ({"destination": LOBBY, "body": "x", "idempotencyKey": 7}, "idempotencyKey", "1 to"),
        (
            {"destination": "/topic/news", "body": "x", "idempotencyKey": "k"},
            "idempotencyKey",
            "not logged",
        ),
    ],
)
async def test_a_bad_publish_is_a_400_naming_its_field(
    make_relay: MakeRelay, fields: dict[str, Any], field: str, says: str
) -> None:
    server = await make_relay(api_key=KEY, history_rooms_only=True)
    status, answer = await publish(base(server), KEY, **fields)
    assert status == 400, answer
    assert answer["field"] == field
    assert says in answer["error"]


async def test_error_statuses(make_relay: MakeRelay) -> None:
    server = await make_relay(
        api_key=KEY, admin_token=ADMIN, history_rooms_only=True, limits=Limits(max_frame_size=1024)
    )
    url = base(server)
    # 400: not JSON, not an object, a bad query, a bad user
    status, answer, _ = await call(
        url,
        "POST",
        "/api/publish",
        token=KEY,
        raw=b'{"destination": "/topic/a", "body": "\\ud800"}',
    )
    assert (status, answer["field"]) == (400, "body")
    for raw in (b"{", b"[1]", b"\xff"):
        status, answer, _ = await call(url, "POST", "/api/publish", token=KEY, raw=raw)
        assert status == 400
        assert "JSON" in answer["error"]
    status, answer, _ = await call(url, "GET", "/api/history?destination=x&since=-1", token=KEY)
    assert (status, answer["field"]) == (400, "since")
    status, answer, _ = await call(url, "GET", "/api/history", token=KEY)
    assert (status, answer["field"]) == (400, "destination")
    status, answer, _ = await call(url, "GET", "/api/users/%FF", token=KEY)
    assert (status, answer["field"]) == (400, "user")
    status, answer, _ = await call(url, "GET", "/api/users/" + "u" * 257, token=KEY)
    assert (status, answer["field"]) == (400, "user")
    # 401: no token, a wrong one
    for token in (None, "wrong"):
        status, answer, headers = await call(url, "POST", "/api/publish", {}, token)
        assert status == 401
        assert "Bearer" in answer["error"]
        assert headers["www-authenticate"].startswith("Bearer")
    # 403: the API key on an operator route (the admin token opens it)
    status, answer, _ = await call(url, "GET", "/api/sessions", token=KEY)
    assert status == 403
    assert "admin token" in answer["error"]
    assert (await call(url, "GET", "/api/sessions", token=ADMIN))[0] == 200
    # 404: a destination with no log
    status, answer, _ = await call(url, "GET", "/api/history?destination=/topic/news", token=KEY)
    assert (status, answer["field"]) == (404, "destination")
    # 405: a method the route does not take
    status, answer, headers = await call(url, "DELETE", "/api/publish", token=KEY)
    assert status == 405
    assert headers["allow"] == "POST"
    # 413: a body past 2 x --max-frame-size, and a request past the API's body limit
    status, answer = await publish(url, KEY, destination=LOBBY, body="x" * 2049)
    assert (status, answer["field"]) == (413, "body")
    assert (await publish(url, KEY, destination=LOBBY, body="x" * 2048))[0] == 200
    # (the head alone: the relay answers before the body, and a client still writing
    # one would see the close as a reset)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Length: 1048576\r\n\r\n"
    )
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert "too large" in json.loads(payload)["error"]
    # an unlogged destination takes no key but publishes with offset 0
    status, answer = await publish(url, KEY, destination="/topic/news", body="x")
    assert (status, answer["offset"], answer["epoch"]) == (200, 0, "")


async def test_with_no_key_reads_are_loopback_only_and_writes_off(make_relay: MakeRelay) -> None:
    server = await make_relay()
    url = base(server)
    status, answer, _ = await call(url, "GET", "/api/history?destination=/topic/room/a")
    assert status == 200
    status, answer = await publish(url, None, destination=LOBBY, body="x")
    assert status == 403
    assert "--api-key" in answer["error"]
    status, answer = await publish(url, "anything", destination=LOBBY, body="x")
    assert status == 403


async def test_with_no_key_a_remote_client_reads_nothing(make_relay: MakeRelay) -> None:
    """Behind a trusted proxy the client is the forwarded address: not loopback."""
    server = await make_relay(trusted_proxies=("127.0.0.0/8",))
    status, answer, _ = await call(
        base(server),
        "GET",
        "/api/history?destination=/topic/room/a",
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert status == 403
    assert "loopback" in answer["error"]


async def test_the_api_key_alone_opens_the_api(make_relay: MakeRelay) -> None:
    """With a key and no admin token, the key opens the API routes; the operator
    routes stay as they were (loopback reads, no writes)."""
    server = await make_relay(api_key=KEY)
    url = base(server)
    assert (await publish(url, KEY, destination=LOBBY, body="x"))[0] == 200
    assert (await publish(url, None, destination=LOBBY, body="x"))[0] == 401
    status, _, _ = await call(url, "POST", "/api/system/notifications", {"message": "m"}, KEY)
    assert status == 403


async def test_a_websocket_client_is_unaffected(make_relay: MakeRelay) -> None:
    server = await make_relay(api_key=KEY)
    async with connect(f"ws://127.0.0.1:{server.port}/ws", subprotocols=["v12.stomp"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "v12.stomp"


async def test_a_user_as_long_as_the_relay_allows_is_reachable(make_relay: MakeRelay) -> None:
    """A user up to ``--max-login`` (past the default 64) can connect, so the user
    routes take that user too, and disconnect reaches the session."""
    server = await make_relay(api_key=KEY, max_login=200)
    user = "u" * 150
    client = await StompClient.connect(f"ws://127.0.0.1:{server.port}/ws", login=user)
    status, answer, _ = await call(base(server), "GET", f"/api/users/{user}", token=KEY)
    assert (status, answer["online"]) == (200, True)
    route = f"/api/users/{user}/disconnect"
    status, answer, _ = await call(base(server), "POST", route, {"reason": "bye"}, KEY)
    assert (status, answer["sessions"]) == (200, 1)
    await client.wait_closed()
    assert [e.get("message") for e in client.errors] == ["session ended by server"]


async def test_an_unknown_api_route_is_a_json_404(make_relay: MakeRelay) -> None:
    """Every refusal under /api is JSON: a GET of a route that does not exist too
    (a user with a raw slash in a GET, a typo), not the web root's text page."""
    server = await make_relay(api_key=KEY, admin_token=ADMIN)
    for path in ("/api/nothing", "/api/users/a/b", "/api/users", "/api"):
        status, answer, headers = await call(base(server), "GET", path, token=ADMIN)
        assert (status, headers.get_content_type()) == (404, "application/json"), path
        assert "error" in answer, path
