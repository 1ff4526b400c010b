"""Dashboard benchmark: /admin at 10,000 rooms and 50,000 sessions, in headless Chromium.

A private ``redis-server`` gets ``BENCH_ADMIN_ROOMS`` rooms (10,000) and
``BENCH_ADMIN_SESSIONS`` sessions (50,000) written straight into the registry's
keys (tests/e2e/adminseed.py, the same seeding the dashboard's test uses), and
two relays share it. Debian's Chromium (/usr/bin/chromium, driven by
Playwright) then, ``BENCH_ADMIN_RUNS`` times (5) each:

- first page: a new browser context (nothing cached) opens /admin; the clock
  runs from the navigation until the overview has its relays and its first page
  of rooms drawn (``body[data-loaded=overview]`` and 10 room rows);
- room search: on the rooms view, a room id typed and searched; until its one
  row is drawn;
- user search: on the users view, a user searched; until their session's row is
  drawn;

and, for the server's share, the same requests straight to the API
(``/api/rooms?limit=10``, ``/api/rooms?q=...``, ``/api/sessions?q=...``).
Prints min / median / max in ms. Run: ``python bench/admin.py`` (a few minutes).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from adminseed import room_name, seed_registry, user_name  # noqa: E402
from procs import RedisServer, RelayProcess  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ROOMS = int(os.environ.get("BENCH_ADMIN_ROOMS", "10000"))
SESSIONS = int(os.environ.get("BENCH_ADMIN_SESSIONS", "50000"))
RUNS = int(os.environ.get("BENCH_ADMIN_RUNS", "5"))
TIMEOUT_MS = 30_000


def figures(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    print(
        f"{name:<38} min {ms[0]:7.0f}  median {statistics.median(ms):7.0f}  "
        f"max {ms[-1]:7.0f} ms  ({len(ms)} runs)"
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def api_time(url: str) -> float:
    def get() -> None:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()

    return timed(get)


def one_run(browser: Any, http: str, room: str, user: str) -> tuple[float, float, float]:
    """One fresh tab: (first page, room search, user search) in seconds."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(f"{http}/admin")
        page.wait_for_selector('body[data-loaded="overview"]')
        page.wait_for_selector("#overview-rooms tbody tr:nth-child(10)")
        opened = time.perf_counter() - started

        page.evaluate("location.hash = '#/rooms'")
        page.wait_for_selector('body[data-loaded="rooms"]')
        page.fill("#room-q", room)
        started = time.perf_counter()
        page.click("#room-search button")
        page.wait_for_selector(f'#rooms tr[data-room-id="{room}"]')
        found_room = time.perf_counter() - started
        assert page.locator("#rooms tbody tr").count() == 1

        page.evaluate("location.hash = '#/users'")
        page.wait_for_selector('body[data-loaded="users"]')
        page.fill("#user-q", user)
        started = time.perf_counter()
        page.click("#user-search button")
        page.wait_for_selector(f'#sessions tr[data-user="{user}"]')
        found_user = time.perf_counter() - started
        return opened, found_room, found_user
    finally:
        context.close()


def main() -> int:
    if not CHROMIUM.is_file():
        print(f"{CHROMIUM} is missing (Debian package chromium): no figures")
        return 0
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    redis = RedisServer(workdir).start()
    relays: list[RelayProcess] = []
    try:
        seeding = timed(lambda: seed_registry(redis.url, ROOMS, SESSIONS))
        print(f"seeded {ROOMS} rooms and {SESSIONS} sessions in {seeding:.1f} s")
        for server_id in ("relay-1", "relay-2"):
            relays.append(RelayProcess(workdir, server_id, redis_url=redis.url).start())
        http = relays[0].http
        rooms = [room_name(ROOMS * (i + 1) // (RUNS + 2)) for i in range(RUNS)]
        users = [user_name(SESSIONS * (i + 1) // (RUNS + 2)) for i in range(RUNS)]

        figures("API /api/rooms?limit=10", [api_time(f"{http}/api/rooms?limit=10") for _ in rooms])
        figures("API /api/rooms?q=<room>", [api_time(f"{http}/api/rooms?q={r}") for r in rooms])
        figures(
            "API /api/sessions?q=<user>", [api_time(f"{http}/api/sessions?q={u}") for u in users]
        )

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
            )
            first: list[float] = []
            room_search: list[float] = []
            user_search: list[float] = []
            for room, user in zip(rooms, users, strict=True):
                opened, found_room, found_user = one_run(browser, http, room, user)
                first.append(opened)
                room_search.append(found_room)
                user_search.append(found_user)
            browser.close()
        print(f"/admin in headless Chromium, {ROOMS} rooms, {SESSIONS} sessions, 2 relays:")
        figures("first page (relays + 10 rooms drawn)", first)
        figures("room search (one row drawn)", room_search)
        figures("user search (their session drawn)", user_search)
    finally:
        for relay in relays:
            relay.stop()
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
