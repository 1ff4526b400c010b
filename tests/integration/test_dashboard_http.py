"""The dashboard's HTTP side on one node: /admin and its assets, the list routes with
and without ``?q=&offset=&limit=``, the dashboard's views behind the admin token,
and the relay's own samples."""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.request
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser

from apiclient import call
from stompclient import StompClient

from stomprelay.transport import RelayServer

MakeRelay = Callable[..., Awaitable[RelayServer]]
ADMIN = "operator-token"


def base(server: RelayServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["content-type"], response.read()


async def test_the_page_and_every_asset_it_loads_are_served(make_relay: MakeRelay) -> None:
    server = await make_relay()
    status, kind, html = await asyncio.to_thread(fetch, base(server) + "/admin")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    page = html.decode()
    # the sign-in form, submitted before the script runs, puts the token in no URL
    tags = Tags()
    tags.feed(page)
    assert tags.by_id["sign-in-form"].get("method") == "post"
    assert "name" not in tags.by_id["token"]
    for asset in ("style.css", "admin.css", "admin.js"):
        assert f'"{asset}"' in page
        status, _, body = await asyncio.to_thread(fetch, f"{base(server)}/{asset}")
        assert status == 200
        assert body


class Tags(HTMLParser):
    """The attributes of every element with an id, by id."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.by_id[str(found["id"])] = found


def fetch_raw(port: int, target: str) -> int:
    """The status of ``GET target``, the target sent exactly as given."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


async def test_a_path_with_two_leading_slashes_is_not_found(make_relay: MakeRelay) -> None:
    # a page served at //admin.html would fetch //api/... from another host
    server = await make_relay()
    for target in ("//admin.html", "//index.html", "//admin", "///admin.js", "//"):
        assert await asyncio.to_thread(fetch_raw, server.port, target) == 404, target
    for target in ("/admin.html", "/index.html", "/admin", "/"):
        assert await asyncio.to_thread(fetch_raw, server.port, target) == 200, target


async def test_the_lists_answer_as_before_without_a_page(make_relay: MakeRelay) -> None:
    server = await make_relay(admin_token=ADMIN)
    url = base(server)
    people = [
        await StompClient.connect(f"ws://127.0.0.1:{server.port}/ws", login=name)
        for name in ("ann", "anna", "ben")
    ]
    try:
        for i, client in enumerate(people):
            room = ("lobby", "lobby", "annex")[i]
            await client.send(f"/app/room/{room}/join", json.dumps({"username": f"u{i}"}))
        status, rooms, _ = await call(url, "GET", "/api/rooms", token=ADMIN)
        for _ in range(100):
            if status == 200 and len(rooms) == 2 and sum(r["participants"] for r in rooms) == 3:
                break
            await asyncio.sleep(0.05)
            status, rooms, _ = await call(url, "GET", "/api/rooms", token=ADMIN)
        assert isinstance(rooms, list)
        assert sorted(r["roomId"] for r in rooms) == ["annex", "lobby"]
        status, sessions, _ = await call(url, "GET", "/api/sessions", token=ADMIN)
        assert isinstance(sessions, list)
        assert len(sessions) == 3

        status, page, _ = await call(url, "GET", "/api/rooms?q=nne&limit=5", token=ADMIN)
        assert status == 200
        assert [r["roomId"] for r in page["rooms"]] == ["annex"]
        assert (page["total"], page["offset"], page["limit"], page["q"]) == (1, 0, 5, "nne")
        assert page["rooms"][0]["history"]["lastOffset"] >= 1
        assert page["rooms"][0]["rate"] >= 1

        status, page, _ = await call(url, "GET", "/api/sessions?q=ann&limit=1", token=ADMIN)
        assert status == 200
        assert page["total"] == 2
        assert len(page["sessions"]) == 1
        status, page, _ = await call(url, "GET", "/api/sessions?q=ann&offset=1", token=ADMIN)
        assert len(page["sessions"]) == 1

        status, refused, _ = await call(url, "GET", "/api/sessions?offset=x", token=ADMIN)
        assert (status, refused["field"]) == (400, "offset")

        # a room's participants, a page at a time (by user id); the whole list without
        status, room, _ = await call(url, "GET", "/api/rooms/lobby", token=ADMIN)
        assert len(room["participants"]) == 2
        assert "participantTotal" not in room
        seen = []
        for offset in (0, 1):
            path = f"/api/rooms/lobby?offset={offset}&limit=1"
            status, room, _ = await call(url, "GET", path, token=ADMIN)
            assert status == 200
            assert (room["participantTotal"], room["offset"], room["limit"]) == (2, offset, 1)
            seen += [p["userId"] for p in room["participants"]]
        assert seen == ["ann", "anna"]
        status, refused, _ = await call(url, "GET", "/api/rooms/lobby?limit=0", token=ADMIN)
        assert (status, refused["field"]) == (400, "limit")
    finally:
        for client in people:
            await client.close()


async def test_the_views_need_the_token_and_show_this_relay(make_relay: MakeRelay) -> None:
    server = await make_relay(admin_token=ADMIN, dashboard_interval=0.05)
    url = base(server)
    for path in ("/api/dashboard/servers", "/api/dashboard/samples", "/api/rooms?q="):
        assert (await call(url, "GET", path))[0] == 401
    status, view, _ = await call(url, "GET", "/api/dashboard/servers", token=ADMIN)
    assert status == 200
    assert view["adminToken"] is True
    (relay,) = view["servers"]
    assert (relay["serverId"], relay["state"], relay["self"]) == ("test-relay", "up", True)
    status, samples, _ = await call(url, "GET", "/api/dashboard/samples", token=ADMIN)
    for _ in range(100):
        if len(samples["servers"]["test-relay"]) >= 2:
            break
        await asyncio.sleep(0.05)
        status, samples, _ = await call(url, "GET", "/api/dashboard/samples", token=ADMIN)
    assert samples["interval"] == 0.05
    assert samples["window"] == 900
    first = samples["servers"]["test-relay"][0]
    assert set(first) == {"t", "connections", "sends", "deliveries", "rttMs", "degraded"}
    assert samples["cluster"]


async def test_the_api_key_is_no_admin_token(make_relay: MakeRelay) -> None:
    # --api-key alone: the page learns there is no admin token (so it asks for none and
    # stays read-only), and the key acts on none of the operator routes
    server = await make_relay(api_key="the-api-key")
    url = base(server)
    status, view, _ = await call(url, "GET", "/api/dashboard/servers")
    assert (status, view["adminToken"]) == (200, False)
    notify = {"message": "hello"}
    status, _, _ = await call(url, "POST", "/api/system/notifications", notify, "the-api-key")
    assert status == 403
    assert (await call(url, "POST", "/api/users/ann/kick", {}, token="the-api-key"))[0] == 403
