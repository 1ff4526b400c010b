"""The operators' dashboard (/admin) in headless Chromium, against real relays and Redis.

Two relays share one redis-server; the page is served by one of them. stomp.py
clients make a room; the page shows both relays, the room and its participants,
notifies the room, kicks a user (its stomp.py session ends), suspends another,
lifts the suspension and disconnects them, shows each relay's degraded period
after a Redis stall, and shows a relay killed with SIGKILL turn dead (held in
"being reaped" while the test holds its reaper lock, as a slow sweeper would) and
then disappear once reaped. With 10,000 rooms and 50,000
sessions seeded in Redis, the first page renders and a search finds one room.
Screenshots go to test-artifacts/e2e/ (printed).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import stomp
from adminseed import room_name, seed_registry, user_name
from e2ehelpers import FAST_LIVENESS, TIMEOUT_MS
from procs import RedisServer, RelayProcess, wait_for

from stomprelay.cluster.keys import Keys

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "admin-secret-for-tests"
API_KEY = "server-api-key-for-tests"
#: The name alice shows in the room (her login is "alice").
ALICE_NAME = "Alice of Wonderland"
#: Samples every half second, so the charts have points within the test.
FAST_SAMPLES = ["--dashboard-interval", "0.5"]


class Relays:
    def __init__(self, redis_server: RedisServer, relays: dict[str, RelayProcess]) -> None:
        self.redis = redis_server
        self.relays = relays

    def admin_url(self, server_id: str = "relay-1") -> str:
        return f"{self.relays[server_id].http}/admin"


def _start(tmp_path: Path, ids: tuple[str, ...], extra: list[str], seed: bool = False) -> Relays:
    server = RedisServer(tmp_path).start()
    if seed:
        seed_registry(server.url, rooms=10_000, sessions=50_000)
    relays: dict[str, RelayProcess] = {}
    try:
        for server_id in ids:
            relays[server_id] = RelayProcess(
                tmp_path, server_id, redis_url=server.url, extra=[*FAST_LIVENESS, *extra]
            ).start()
    except Exception:
        for relay in relays.values():
            relay.stop()
        server.stop()
        raise
    return Relays(server, relays)


def _stop(found: Relays) -> None:
    for relay in found.relays.values():
        relay.stop()
    found.redis.stop()


@pytest.fixture
def two_relays(tmp_path: Path, page_deps: None) -> Iterator[Relays]:
    """Redis and two relays with an admin token (liveness and samples fast)."""
    found = _start(tmp_path, ("relay-1", "relay-2"), ["--admin-token", TOKEN, *FAST_SAMPLES])
    try:
        yield found
    finally:
        _stop(found)


@pytest.fixture
def seeded_relay(tmp_path: Path, page_deps: None) -> Iterator[Relays]:
    """Redis with 10,000 rooms and 50,000 sessions, one relay with the server API's key
    and without an admin token."""
    found = _start(tmp_path, ("relay-1",), [*FAST_SAMPLES, "--api-key", API_KEY], seed=True)
    try:
        yield found
    finally:
        _stop(found)


class AdminTab:
    """One tab on /admin, in a context of its own."""

    def __init__(self, browser: Any, url: str) -> None:
        from playwright.sync_api import expect

        self.expect = expect
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url)

    def locator(self, selector: str, **options: Any) -> Any:
        return self.page.locator(selector, **options)

    def sign_in(self, token: str) -> None:
        self.expect(self.locator("#sign-in")).to_be_visible()
        self.page.fill("#token", token)
        self.page.click("#sign-in-form button[type=submit]")

    def view(self, hash_: str, loaded: str) -> None:
        self.page.evaluate("h => { location.hash = h; }", hash_)
        self.expect(self.locator("body")).to_have_attribute("data-loaded", loaded)

    def relay_row(self, server_id: str) -> Any:
        return self.locator(f'#relays tbody tr[data-server-id="{server_id}"]')

    def confirm(self) -> None:
        self.expect(self.locator("#confirm")).to_be_visible()
        self.page.click("#confirm-ok")

    def screenshot(self, artifacts: Path, name: str) -> None:
        path = artifacts / f"admin-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_admin(browser: Any) -> Iterator[Callable[[str], AdminTab]]:
    tabs: list[AdminTab] = []

    def factory(url: str) -> AdminTab:
        tab = AdminTab(browser, url)
        tabs.append(tab)
        return tab

    yield factory
    errors = [e for tab in tabs for e in tab.errors]
    for tab in tabs:
        tab.close()
    assert not errors, f"uncaught errors in the page: {errors}"


class StompUser(stomp.ConnectionListener):  # type: ignore[misc]
    """A stomp.py WebSocket client in a room; notes its ERROR frames and its end."""

    def __init__(self, relay: RelayProcess, login: str) -> None:
        self.login = login
        self.errors: list[str] = []
        self.bodies: list[str] = []
        self.heard = threading.Condition()
        self.ended = threading.Event()
        self.conn = stomp.WSStompConnection(
            [("127.0.0.1", relay.port)],
            ws_path="/ws",
            # the relay's heart-beats every second: stomp.py ends a connection that
            # reads nothing for ``timeout`` s, and these clients only listen
            heartbeats=(0, 1000),
            reconnect_attempts_max=1,
            timeout=5,
        )
        self.conn.set_listener("admin-test", self)
        self.conn.connect(username=login, wait=True)

    def on_message(self, frame: Any) -> None:
        with self.heard:
            self.bodies.append(str(frame.body))
            self.heard.notify_all()

    def wait_for_body(self, text: str) -> bool:
        with self.heard:
            return self.heard.wait_for(
                lambda: any(text in body for body in self.bodies), TIMEOUT_MS / 1000
            )

    def on_error(self, frame: Any) -> None:
        self.errors.append(str(frame.headers.get("message", "")))

    def on_disconnected(self) -> None:
        self.ended.set()

    def join(self, room: str, name: str = "") -> None:
        """Join ``room`` showing ``name`` there (the login when empty)."""
        self.conn.subscribe(f"/topic/room/{room}", f"sub-{room}")
        self.conn.send(f"/app/room/{room}/join", json.dumps({"username": name or self.login}))

    def say(self, room: str, text: str) -> None:
        self.conn.send(f"/app/room/{room}/message", json.dumps({"message": text}))

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect()


def _connected(relay: RelayProcess, login: str, into: list[StompUser]) -> bool:
    """Connect ``login`` (True), or not yet (False: the relay refused it)."""
    try:
        into.append(StompUser(relay, login))
    except stomp.exception.ConnectFailedException:
        return False
    return True


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_dashboard_shows_the_cluster_kicks_and_sees_a_relay_die(
    two_relays: Relays, open_admin: Callable[[str], AdminTab], artifacts: Path
) -> None:
    relay1, relay2 = two_relays.relays["relay-1"], two_relays.relays["relay-2"]
    # the token is required: the API refuses without it, the page asks for it
    for path in ("/api/dashboard/servers", "/api/rooms?limit=5", "/api/sessions?q=a"):
        assert _get(relay1.http + path)[0] == 401
        assert _get(relay1.http + path, "wrong")[0] == 401
    tab = open_admin(two_relays.admin_url())
    tab.expect(tab.locator("#main")).to_be_hidden()
    tab.screenshot(artifacts, "sign-in")
    tab.sign_in("wrong")
    tab.expect(tab.locator("#error")).to_contain_text("refused")
    tab.sign_in(TOKEN)
    tab.expect(tab.locator("body")).to_have_attribute("data-loaded", "overview")
    assert tab.page.evaluate("sessionStorage.getItem('stomprelay.adminToken')") == TOKEN
    assert TOKEN not in tab.page.url

    # both relays, up
    for server_id in ("relay-1", "relay-2"):
        tab.expect(tab.relay_row(server_id)).to_have_attribute("data-state", "up")

    # a room made by stomp.py clients on both relays
    alice = StompUser(relay2, "alice")
    bob = StompUser(relay1, "bob")
    users = [alice, bob]
    try:
        # alice shows another name in the room than her login: the page acts on the login
        alice.join("lobby", ALICE_NAME)
        bob.join("lobby")
        alice.say("lobby", "hello from stomp.py")
        room_row = tab.locator('#overview-rooms tr[data-room-id="lobby"]')
        tab.expect(room_row.locator('[data-field="participants"]')).to_have_text("2")
        tab.expect(tab.relay_row("relay-2").locator('[data-field="sessions"]')).to_have_text("1")
        tab.screenshot(artifacts, "overview")

        room_row.locator("a").click()
        tab.expect(tab.locator("body")).to_have_attribute("data-loaded", "room")
        participants = tab.locator("#room-participants tbody tr")
        tab.expect(participants).to_have_count(2)
        tab.expect(tab.locator("#room-participant-pager .range")).to_have_text("1-2 of 2")
        alice_row = tab.locator('#room-participants tr[data-user="alice"]')
        tab.expect(alice_row).to_contain_text("relay-2")
        tab.expect(alice_row).to_contain_text(ALICE_NAME)
        tab.expect(alice_row.locator("a")).to_have_attribute("href", "#/user/alice")
        said = tab.locator("#room-messages li", has_text="hello from stomp.py")
        tab.expect(said.locator("strong")).to_have_text(ALICE_NAME)
        tab.screenshot(artifacts, "room")

        # the charts have points of both relays
        for i in range(30):
            (alice if i % 2 else bob).say("lobby", f"message {i}")
        tab.view("#/charts", "charts")
        chart = tab.locator('svg[data-chart="connections"]')
        tab.expect(chart.locator('polyline[data-series="relay-2"]')).to_have_count(1)
        tab.expect(chart.locator('polyline[data-series="cluster"]')).to_have_count(1)
        tab.screenshot(artifacts, "charts")

        # a notification to the room, from the page, reaches its subscribers
        tab.view("#/room/lobby", "room")
        tab.page.click("#room-notify")
        tab.expect(tab.locator("body")).to_have_attribute("data-loaded", "notify")
        tab.expect(tab.locator("#notify-target")).to_have_value("lobby")
        tab.page.fill("#notify-message", "the lobby closes at noon")
        tab.page.click("#notify-form button[type=submit]")
        tab.expect(tab.locator("#confirm-text")).to_contain_text("room lobby")
        tab.confirm()
        assert bob.wait_for_body("the lobby closes at noon")
        assert alice.wait_for_body("the lobby closes at noon")

        # a kick from the page ends alice's session
        tab.view("#/room/lobby", "room")
        tab.locator('#room-participants tr[data-user="alice"] button').click()
        tab.expect(tab.locator("#confirm-text")).to_contain_text("Kick alice")
        tab.confirm()
        assert alice.ended.wait(TIMEOUT_MS / 1000), "alice's session did not end"
        assert alice.errors, "the kick ends the session with an ERROR frame"
        assert bob.conn.is_connected()
        tab.expect(participants).to_have_count(1)
        tab.view("#/users?q=alice", "users")
        tab.expect(tab.locator("#sessions")).to_contain_text("No session.")
        tab.view("#/users?q=bob", "users")
        tab.expect(tab.locator('#sessions tr[data-user="bob"]')).to_have_count(1)
        tab.screenshot(artifacts, "users")

        # bob suspended from his page: his session ends, and he is refused until lifted
        tab.view("#/user/bob", "user")
        tab.page.click("#user-suspend")
        tab.page.fill("#confirm-minutes", "30")
        tab.confirm()
        assert bob.ended.wait(TIMEOUT_MS / 1000), "bob's session did not end"
        with pytest.raises(stomp.exception.ConnectFailedException):
            StompUser(relay1, "bob")
        tab.page.click("#user-lift")
        tab.confirm()
        tab.expect(tab.locator("#toast")).to_contain_text("lifted")
        back: list[StompUser] = []
        wait_for(lambda: _connected(relay1, "bob", back), timeout=15, what="bob back in")
        again = back[0]
        users.append(again)

        # disconnected from the page, with a reason: an ERROR frame, no suspension
        tab.view("#/user/bob", "user")
        tab.expect(tab.locator("#user-online")).to_have_text("online")
        tab.page.click("#user-disconnect")
        tab.page.fill("#confirm-reason", "maintenance")
        tab.confirm()
        assert again.ended.wait(TIMEOUT_MS / 1000), "bob's new session did not end"
        assert again.errors == ["session ended by server"]
    finally:
        for user in users:
            user.close()

    # Redis stalls: both relays go degraded, and once it is back each shows the period
    # (relay-2's through the ring it could only write once Redis answered again)
    two_relays.redis.pause()
    try:
        wait_for(lambda: not relay1.ready() and not relay2.ready(), timeout=30, what="degraded")
    finally:
        two_relays.redis.resume()
    wait_for(lambda: relay1.ready() and relay2.ready(), timeout=30, what="ready again")
    tab.view("#/overview", "overview")
    for server_id in ("relay-1", "relay-2"):
        tab.expect(tab.relay_row(server_id).locator("ul.periods li")).to_have_count(1)
    tab.screenshot(artifacts, "degraded-periods")

    # relay-2 killed: dead, held as "being reaped" while its lock is taken, then gone
    keys = Keys()
    client = redis.Redis.from_url(two_relays.redis.url)
    try:
        client.set(keys.reaper_lock("relay-2"), "a-slow-sweeper", px=120_000)
        relay2.kill()
        row = tab.relay_row("relay-2")
        tab.expect(row).to_have_attribute("data-state", "dead")
        tab.expect(row.locator('[data-field="state"]')).to_have_text("dead, being reaped")
        tab.screenshot(artifacts, "relay-dead")
        client.delete(keys.reaper_lock("relay-2"))
        tab.expect(row).to_have_count(0)
        tab.expect(tab.relay_row("relay-1")).to_have_attribute("data-state", "up")

        # a relay that stops takes its rings with it (a dead one's expire)
        assert client.exists(keys.server_samples("relay-1"), keys.server_degraded("relay-1")) == 2
        assert relay1.terminate() == 0
        assert not client.exists(keys.server_samples("relay-1"), keys.server_degraded("relay-1"))
        assert 0 < client.pttl(keys.server_samples("relay-2")) <= 3_600_000
    finally:
        client.close()


def test_dashboard_at_10000_rooms_and_50000_sessions(
    seeded_relay: Relays, open_admin: Callable[[str], AdminTab], artifacts: Path
) -> None:
    relay = seeded_relay.relays["relay-1"]
    # no admin token: reads from loopback, read-only; the list routes are paged
    status, body = _get(relay.http + "/api/rooms?q=room-0424&limit=5")
    assert status == 200
    assert body["total"] == 10
    assert len(body["rooms"]) == 5
    status, body = _get(relay.http + "/api/sessions?limit=3&offset=49998")
    assert status == 200
    assert body["total"] == 50_000
    assert len(body["sessions"]) == 2
    assert _get(relay.http + "/api/rooms?limit=0")[0] == 400

    tab = open_admin(seeded_relay.admin_url())
    tab.expect(tab.locator("body")).to_have_attribute("data-loaded", "overview")
    tab.expect(tab.locator("#overview-room-total")).to_have_text("(10000)")
    rows = tab.locator("#overview-rooms tbody tr")
    tab.expect(rows).to_have_count(10)
    # most recently active first
    tab.expect(rows.first).to_have_attribute("data-room-id", room_name(9_999))
    tab.expect(tab.locator("#access")).to_have_attribute("data-access", "read-only")
    tab.screenshot(artifacts, "overview-10000-rooms")

    tab.view("#/rooms", "rooms")
    tab.page.fill("#room-q", room_name(4_242))
    tab.page.click("#room-search button")
    tab.expect(tab.locator("#rooms tbody tr")).to_have_count(1)
    tab.expect(tab.locator(f'#rooms tr[data-room-id="{room_name(4_242)}"]')).to_have_count(1)
    tab.expect(tab.locator("#room-total")).to_have_text("(1 found)")
    tab.screenshot(artifacts, "room-search")

    # the second page of every room, by the pager
    tab.view("#/rooms", "rooms")
    tab.page.click("#room-pager button:text('Next')")
    tab.expect(tab.locator("#room-pager .range")).to_have_text("26-50 of 10000")

    tab.view(f"#/users?q={user_name(31_415)}", "users")
    tab.expect(tab.locator(f'#sessions tr[data-user="{user_name(31_415)}"]')).to_have_count(1)
    # no admin token, only the API key: a user's page (the server API's, which needs the
    # key) says what it needs, no sign-in form is offered, and the actions stay off
    tab.page.evaluate("h => { location.hash = h; }", f"#/user/{user_name(31_415)}")
    tab.expect(tab.locator("#error")).to_contain_text("--admin-token")
    tab.expect(tab.locator("#sign-in")).to_be_hidden()
    tab.expect(tab.locator("#user-kick")).to_be_disabled()
    # the API key in the tab's storage is no admin token: dropped, nothing enabled
    tab.page.evaluate(f"sessionStorage.setItem('stomprelay.adminToken', '{API_KEY}')")
    tab.page.reload()
    tab.expect(tab.locator("#error")).to_contain_text("--admin-token")
    tab.expect(tab.locator("#access")).to_have_attribute("data-access", "read-only")
    tab.expect(tab.locator("#user-kick")).to_be_disabled()
    tab.expect(tab.locator("#sign-out")).to_be_hidden()
    assert tab.page.evaluate("sessionStorage.getItem('stomprelay.adminToken')") is None
    wait_for(lambda: relay.healthy(), timeout=5, what="relay still healthy")
