"""End-to-end fixtures: headless Chromium (Playwright), a real nginx, relays and Redis.

Chromium is Debian's ``/usr/bin/chromium`` (Playwright never downloads a browser here);
nginx runs in the foreground with a configuration rendered from
``deploy/nginx.conf.template``, the template docker-compose.yml's nginx uses too. The
browser tests skip, saying why, only when one of those two binaries is missing; CI
installs both (Debian packages ``chromium`` and ``nginx``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2ehelpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    FAST_LIVENESS,
    ROOT,
    STOMPJS_BUNDLE,
    TIMEOUT_MS,
    WEB,
    ChatPage,
    Cluster,
    NginxProcess,
    nginx_binary,
)
from procs import RedisServer, RelayProcess


def _ensure_web_deps() -> None:
    """``npm ci`` in web/ when the stompjs bundle the page loads is not installed."""
    marker = WEB / "node_modules" / ".package-lock.json"
    lock = WEB / "package-lock.json"
    if (
        STOMPJS_BUNDLE.is_file()
        and marker.is_file()
        and marker.stat().st_mtime >= lock.stat().st_mtime
    ):
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"{STOMPJS_BUNDLE.relative_to(ROOT)} is missing and npm is not on PATH: "
            "install node/npm, then run `cd web && npm ci`"
        )
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True, timeout=300
    )


@pytest.fixture(scope="session")
def web_deps() -> None:
    """web/node_modules as package-lock.json pins it (``npm ci`` when it is not)."""
    _ensure_web_deps()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _need_binaries() -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium); CI installs it")
    if nginx_binary() is None:
        pytest.skip("nginx is missing (Debian package nginx); CI installs it")


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Redis, two relays and nginx; ``@pytest.mark.relay_args(...)`` adds flags to both
    relays' command lines."""
    _need_binaries()
    _ensure_web_deps()
    marker = request.node.get_closest_marker("relay_args")
    extra = [*FAST_LIVENESS, *(marker.args if marker is not None else ())]
    redis = RedisServer(tmp_path).start()
    relays: dict[str, RelayProcess] = {}
    nginx: NginxProcess | None = None
    try:
        for server_id in ("relay-1", "relay-2"):
            relays[server_id] = RelayProcess(
                tmp_path, server_id, redis_url=redis.url, extra=extra
            ).start()
        nginx = NginxProcess(tmp_path, [f"127.0.0.1:{r.port}" for r in relays.values()]).start()
        found = Cluster(redis, relays, nginx)
        request.node.stash[_CLUSTER] = found
        yield found
    finally:
        if nginx is not None:
            nginx.stop()
        for relay in relays.values():
            relay.stop()
        redis.stop()


@pytest.fixture
def solo_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """One single-node relay (no Redis, no nginx) serving the page directly."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium); CI installs it")
    _ensure_web_deps()
    relay = RelayProcess(tmp_path, "solo").start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def page_deps() -> None:
    """What a test that starts its own relay for the page needs: Chromium (else it skips)
    and the page's npm packages."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium); CI installs it")
    _ensure_web_deps()


_CLUSTER = pytest.StashKey[Cluster]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and _CLUSTER in item.stash:
        report.sections.append(("cluster logs", item.stash[_CLUSTER].logs()))
    return report


# -- the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (module-scoped: its event loop is
    closed before any other directory's asyncio tests run)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium); CI installs it")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., ChatPage]]:
    """``open_page(url, username, width=1280, height=800)``: a new tab in its own context."""
    pages: list[ChatPage] = []

    def factory(url: str, username: str, width: int = 1280, height: int = 800) -> ChatPage:
        page = ChatPage(browser, url, username, width, height)
        pages.append(page)
        return page

    yield factory
    errors = [f"{p.username}: {e}" for p in pages for e in p.errors]
    for page in pages:
        with contextlib.suppress(Exception):
            page.close()
    assert not errors, f"uncaught errors in the page: {errors}"
