"""Helpers for the end-to-end tests: nginx as a test process, the cluster, a chat tab.

Kept out of conftest.py so test modules can import them by a name no other test
directory uses.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

from procs import ROOT, RedisServer, RelayProcess, free_port, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WEB = ROOT / "web"
STOMPJS_BUNDLE = WEB / "node_modules" / "@stomp" / "stompjs" / "bundles" / "stomp.umd.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
#: Playwright waits (ms): generous for CI, far below the test timeout.
TIMEOUT_MS = 15_000
#: Relay liveness settings short enough that a killed relay is reaped within ~3 s.
FAST_LIVENESS = ["--liveness-interval", "0.5", "--liveness-ttl", "2", "--sweep-interval", "0.5"]


def load_render_nginx() -> ModuleType:
    """``deploy/render_nginx.py`` as a module (deploy/ is not a package)."""
    path = ROOT / "deploy" / "render_nginx.py"
    spec = importlib.util.spec_from_file_location("render_nginx", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_nginx", module)
    spec.loader.exec_module(module)
    return module


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )


# -- nginx ------------------------------------------------------------------------------


class NginxProcess:
    """nginx in the foreground on a free loopback port, everything it writes in ``workdir``."""

    def __init__(self, workdir: Path, upstreams: list[str]) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        self.binary = binary
        self.prefix = workdir / "nginx"
        self.upstreams = upstreams
        self.port = free_port()
        self.conf = self.prefix / "nginx.conf"
        self.log_path = self.prefix / "nginx.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> NginxProcess:
        (self.prefix / "temp").mkdir(parents=True, exist_ok=True)
        render = load_render_nginx()
        self.conf.write_text(
            render.render_local(f"127.0.0.1:{self.port}", self.upstreams, self.prefix),
            encoding="utf-8",
        )
        out = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-c",
                str(self.conf),
                "-p",
                f"{self.prefix}/",
                "-e",
                str(self.prefix / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._proxying, timeout=15, what=f"nginx on {self.port} proxying /health")
        return self

    def _proxying(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url + "health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def log(self) -> str:
        parts = []
        for path in (self.log_path, self.prefix / "error.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# -- a cluster behind nginx ---------------------------------------------------------------


class Cluster:
    """Redis, relays ``relay-1`` and ``relay-2``, and nginx balancing over both."""

    def __init__(self, redis: RedisServer, relays: dict[str, RelayProcess], nginx: NginxProcess):
        self.redis = redis
        self.relays = relays
        self.nginx = nginx

    @property
    def url(self) -> str:
        return self.nginx.url

    def logs(self) -> str:
        parts = [
            f"--- relay {sid} ---\n{relay.log()[-8000:]}" for sid, relay in self.relays.items()
        ]
        parts.append(f"--- nginx ---\n{self.nginx.log()[-4000:]}")
        return "\n".join(parts)


# -- a tab's WebSocket, seen from the test -----------------------------------------------


def stomp_frames(messages: list[str], command: str) -> list[dict[str, str]]:
    """The headers (and ``command``) of every ``command`` frame in WebSocket messages."""
    found = []
    for message in messages:
        for raw in message.split("\x00"):
            raw = raw.lstrip("\r\n")
            head, _, _ = raw.partition("\n\n")
            lines = head.split("\n")
            if not lines or lines[0].strip() != command:
                continue
            headers = {"command": command}
            for line in lines[1:]:
                name, sep, value = line.rstrip("\r").partition(":")
                if sep and name not in headers:
                    headers[name] = value
            found.append(headers)
    return found


class WebSocketTap:
    """Every WebSocket a browser context opens to ``/ws``, routed through Playwright.

    Records what the page sends (``sent``, one string per WebSocket message) and, while
    ``hold`` is true, closes each new connection at once, so the page is offline and retries
    by itself (stompjs' reconnect delay) until the test lets it through again.
    """

    def __init__(self, context: Any) -> None:
        self.sent: list[str] = []
        self.hold = False
        self.refused = 0
        context.route_web_socket(re.compile(r"/ws(\?.*)?$"), self._route)

    def _route(self, ws: Any) -> None:
        if self.hold:
            self.refused += 1
            ws.close(code=1013, reason="held by the test")
            return
        server = ws.connect_to_server()

        def forward(message: str | bytes) -> None:
            self.sent.append(message if isinstance(message, str) else message.decode())
            server.send(message)

        ws.on_message(forward)

    def frames(self, command: str) -> list[dict[str, str]]:
        return stomp_frames(self.sent, command)

    def room_subscriptions(self, room: str) -> list[dict[str, str]]:
        """The SUBSCRIBE frames the page sent for ``/topic/room/{room}``, in order."""
        destination = f"/topic/room/{room}"
        return [f for f in self.frames("SUBSCRIBE") if f.get("destination") == destination]

    def inbox_subscriptions(self) -> list[dict[str, str]]:
        """The SUBSCRIBE frames the page sent for its inbox, ``/user/queue/messages``."""
        return [
            f for f in self.frames("SUBSCRIBE") if f.get("destination") == "/user/queue/messages"
        ]


# -- the chat page ------------------------------------------------------------------------


class ChatPage:
    """One person's tab on the chat page, driven through its ids and data attributes."""

    def __init__(self, browser: Any, url: str, username: str, width: int, height: int):
        from playwright.sync_api import expect

        self.expect = expect
        self.username = username
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url)
        self.closed = False

    # -- actions ---------------------------------------------------------------------------

    def connect(self) -> ChatPage:
        self.page.fill("#username", self.username)
        self.page.click("#connect")
        self.wait_state("connected")
        return self

    def disconnect(self) -> None:
        self.page.click("#disconnect")
        self.wait_state("disconnected")

    def move_off(self, server_id: str, attempts: int = 20) -> None:
        """Reconnect (nginx balances round robin) until this page is not on ``server_id``."""
        for _ in range(attempts):
            if self.server_id() != server_id:
                return
            self.disconnect()
            self.page.click("#connect")
            self.wait_state("connected")
        raise AssertionError(f"{self.username} stayed on {server_id} after {attempts} reconnects")

    def join(self, room: str) -> None:
        self.page.fill("#room", room)
        self.page.click("#join")
        self.expect(self.page.locator("#current-room")).to_have_attribute("data-room", room)

    def join_from_list(self, room: str) -> None:
        button = self.page.locator(f'#rooms button[data-room="{room}"]')
        self.expect(button).to_be_enabled()
        button.click()
        self.expect(self.page.locator("#current-room")).to_have_attribute("data-room", room)

    def send(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.click("#send")
        self.expect(self.page.locator("#message")).to_have_value("")

    def reload(self) -> None:
        """Reload the tab (same tab: its sessionStorage stays)."""
        self.page.reload()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.context.close()

    # -- what the page shows ---------------------------------------------------------------

    def wait_state(self, state: str) -> None:
        self.expect(self.page.locator("#state")).to_have_attribute("data-state", state)

    def server_id(self) -> str:
        value = self.page.locator("#server-id").get_attribute("data-server-id")
        return value or ""

    def entries(self, kind: str, text: str) -> Any:
        """Log entries of one type (CHAT, JOIN, LEAVE, ...) whose text contains ``text``."""
        return self.page.locator(f'#messages li[data-type="{kind}"]').filter(has_text=text)

    def expect_chat(self, author: str, text: str) -> None:
        entry = self.entries("CHAT", text)
        self.expect(entry).to_have_count(1)
        self.expect(entry.locator(".author")).to_have_text(author)
        self.expect(entry.locator(".text")).to_have_text(text)

    def chat_texts(self) -> list[str]:
        """The text of every CHAT entry in the log, top to bottom."""
        texts: list[str] = self.page.locator(
            '#messages li[data-type="CHAT"] .text'
        ).all_text_contents()
        return texts

    def log_lines(self) -> list[str]:
        """Every log entry as ``TYPE: text``, top to bottom."""
        lines: list[str] = self.page.locator("#messages li").evaluate_all(
            "items => items.map(li =>"
            " li.dataset.type + ': ' + li.querySelector('.text').textContent)"
        )
        return lines

    def participants(self) -> Any:
        return self.page.locator("#participants li")

    def expect_participants(self, *usernames: str) -> None:
        """Exactly these people (one session each) in the participant list, eventually."""
        self.expect(self.participants()).to_have_count(len(usernames))
        for username in usernames:
            self.expect(self.participant(username)).to_have_count(1)
        assert sorted(self.participant_names()) == sorted(usernames)

    def participant(self, username: str) -> Any:
        return self.page.locator(f'#participants li[data-username="{username}"]')

    def participant_names(self) -> list[str]:
        names: list[str] = self.participants().evaluate_all(
            "items => items.map(item => item.dataset.username)"
        )
        return names

    # -- private conversations -------------------------------------------------------------

    def open_conversation(self, username: str) -> None:
        """Click ``username`` in the participant list: their private conversation opens."""
        button = self.participant(username).locator("button.dm-open")
        self.expect(button).to_be_enabled()
        button.click()
        self.expect_conversation(username)

    def conversation_link(self, peer: str, kind: str = "user") -> Any:
        return self.page.locator(f'#conversations button[data-peer="{peer}"][data-kind="{kind}"]')

    def open_from_list(self, peer: str, kind: str = "user") -> None:
        self.conversation_link(peer, kind).click()
        self.expect_conversation(peer)

    def expect_conversation(self, peer: str) -> None:
        self.expect(self.page.locator("#conversation")).to_be_visible()
        self.expect(self.page.locator("#conversation-peer")).to_have_attribute("data-peer", peer)

    def send_dm(self, text: str) -> None:
        self.page.fill("#dm-message", text)
        self.page.click("#dm-send")
        self.expect(self.page.locator("#dm-message")).to_have_value("")

    def dms(self, text: str = "") -> Any:
        """Entries of the open conversation (containing ``text``)."""
        found = self.page.locator('#dm-messages li[data-type="DM"]')
        return found.filter(has_text=text) if text else found

    def dm_lines(self) -> list[str]:
        """The open conversation, top to bottom, as ``direction author: text``."""
        lines: list[str] = self.dms().evaluate_all(
            "items => items.map(li => li.dataset.direction + ' '"
            " + li.querySelector('.author').textContent + ': '"
            " + li.querySelector('.text').textContent)"
        )
        return lines

    def expect_unread(self, peer: str, count: int) -> None:
        """The conversation list, and the participant list if ``peer`` is in it, say
        ``count`` unread messages from ``peer``."""
        link = self.conversation_link(peer)
        self.expect(link).to_have_attribute("data-unread", str(count))
        badge = link.locator(".unread")
        if count:
            self.expect(badge).to_be_visible()
            self.expect(badge).to_have_text(str(count))
        else:
            self.expect(badge).to_be_hidden()

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)
