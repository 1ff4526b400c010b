"""Drive a real @stomp/stompjs v7 client (tests/js/stomp_driver.mjs) from async Python tests.

The driver speaks line-delimited JSON over stdin/stdout; see tests/js/README.md for the
command and event protocol. Typical use::

    ensure_node_modules()
    async with await StompJsClient.start() as js:
        await js.connect(url, login="guest", passcode="guest")
        await js.subscribe("/topic/a", sub_id="s1", receipt="r1")
        await js.expect("receipt", lambda e: e["receipt_id"] == "r1")
        await js.send("/topic/a", body="hi")
        msg = await js.expect("message", lambda e: e["subscription"] == "s1")
"""

# The helpers deliberately take `timeout=` arguments (the tests read better that way).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

JS_DIR = Path(__file__).resolve().parent / "js"
DRIVER = JS_DIR / "stomp_driver.mjs"
REQUIRED_PACKAGES = ("@stomp/stompjs", "ws")
MIN_NODE_MAJOR = 18

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class StompJsError(RuntimeError):
    """The driver reported an exception, died, or an expected event did not arrive."""


class StompJsTimeout(StompJsError, TimeoutError):
    """An expected event did not arrive in time."""


def node_available() -> bool:
    """True when a `node` binary new enough for stompjs v7 (>= 18) is on PATH."""
    node = shutil.which("node")
    if node is None:
        return False
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        major = int(out.lstrip("v").split(".", 1)[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return False
    return major >= MIN_NODE_MAJOR


def _installed_matches_lock() -> bool:
    """True when node_modules holds exactly the versions pinned in package-lock.json."""
    try:
        lock = json.loads((JS_DIR / "package-lock.json").read_text(encoding="utf-8"))
        packages: dict[str, Any] = lock["packages"]
        for name in REQUIRED_PACKAGES:
            want = packages[f"node_modules/{name}"]["version"]
            manifest = JS_DIR / "node_modules" / name / "package.json"
            have = json.loads(manifest.read_text(encoding="utf-8"))["version"]
            if have != want:
                return False
    except (OSError, KeyError, ValueError):
        return False
    return True


def ensure_node_modules() -> None:
    """Install tests/js dependencies with `npm ci` when missing or not matching the lock file."""
    if _installed_matches_lock():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise StompJsError("npm is not on PATH; cannot install tests/js dependencies")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not _installed_matches_lock():
        raise StompJsError(
            f"npm ci in {JS_DIR} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )


def decode_binary_body(event: Mapping[str, Any]) -> bytes:
    """The exact body bytes of a "message" event."""
    return base64.b64decode(event.get("binaryBody_b64", ""))


class StompJsClient:
    """One node process running one stompjs Client, driven through JSON lines.

    Events are read continuously into a queue; `expect` takes the first queued event that
    matches and leaves the others in place for later calls, so nothing is lost.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._events: collections.deque[Event] = collections.deque()
        self._changed = asyncio.Condition()
        self._eof = False
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self._req_ids = itertools.count(1)
        self.history: list[Event] = []  # every event ever received, in order
        self._reader = asyncio.create_task(self._read_stdout())
        self._err_reader = asyncio.create_task(self._read_stderr())

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        *,
        debug: bool | None = None,
        node: str = "node",
        env: Mapping[str, str] | None = None,
        timeout: float = 10,
    ) -> Self:
        """Spawn the driver and wait for its "ready" event.

        `debug=True` sets STOMP_DEBUG=1 (stompjs debug log on the driver's stderr, kept in
        `stderr_tail`); `None` inherits STOMP_DEBUG from the environment.
        """
        child_env = dict(os.environ)
        if env is not None:
            child_env.update(env)
        if debug is not None:
            child_env["STOMP_DEBUG"] = "1" if debug else "0"
        proc = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            cwd=JS_DIR,
            env=child_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # one event line can carry a large base64 body
        )
        client = cls(proc)
        try:
            await client.expect("ready", timeout=timeout)
        except BaseException:
            await client.close()
            raise
        return client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float = 5) -> None:
        """Ask the driver to exit; kill it if it does not within `timeout` seconds."""
        if self._proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("exit")
            with contextlib.suppress(Exception):
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await self._proc.wait()
        for task in (self._reader, self._err_reader):
            if not task.done():
                try:
                    await asyncio.wait_for(task, 2)
                except TimeoutError:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    @property
    def pending(self) -> list[Event]:
        """Events received but not yet taken by `expect`."""
        return list(self._events)

    # -- I/O --------------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        try:
            while True:
                line = await self._proc.stdout.readline()
                if not line:
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    self._stderr_tail.append(f"[non-JSON stdout] {line!r}")
                    continue
                if not isinstance(event, dict):
                    continue
                async with self._changed:
                    self._events.append(event)
                    self.history.append(event)
                    self._changed.notify_all()
        finally:
            # Let the exit status be known before waiters report the driver's death.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 1)
            async with self._changed:
                self._eof = True
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                return
            self._stderr_tail.append(line.decode("utf-8", "replace").rstrip("\n"))

    async def command(self, cmd: str, **fields: Any) -> None:
        """Write one command line without waiting for any answer."""
        if self._proc.stdin is None or self._proc.stdin.is_closing():
            raise StompJsError("driver stdin is closed")
        payload = {"cmd": cmd, **fields}
        self._proc.stdin.write(json.dumps(payload).encode("utf-8") + b"\n")
        await self._proc.stdin.drain()

    async def call(self, cmd: str, timeout: float = 10, **fields: Any) -> Event:
        """Send a command tagged with a fresh "req" and wait for its "ok" (or raise)."""
        req = fields.pop("req", None) or f"req-{next(self._req_ids)}"
        await self.command(cmd, req=req, **fields)
        event = await self.expect(
            ("ok", "exception"), lambda e: e.get("reply_to") == req, timeout=timeout
        )
        if event["event"] == "exception":
            raise StompJsError(f"driver rejected {cmd!r}: {event.get('message')}")
        return event

    def _find(self, names: Collection[str], predicate: Predicate | None) -> int | None:
        for i, event in enumerate(self._events):
            if event.get("event") in names and (predicate is None or predicate(event)):
                return i
        return None

    async def _wait(
        self,
        event_name: str | Collection[str],
        predicate: Predicate | None,
        timeout: float,
        *,
        remove: bool,
    ) -> Event:
        names = {event_name} if isinstance(event_name, str) else set(event_name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                index = self._find(names, predicate)
                if index is not None:
                    event = self._events[index]
                    if remove:
                        del self._events[index]
                    return event
                if self._eof:
                    raise StompJsError(
                        f"driver exited (rc={self._proc.returncode}) while waiting for "
                        f"{sorted(names)}; pending={self.pending!r}\nstderr:\n{self.stderr_tail}"
                    )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise StompJsTimeout(
                        f"timed out after {timeout}s waiting for {sorted(names)}; "
                        f"pending={self.pending!r}\nstderr:\n{self.stderr_tail}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def expect(
        self,
        event_name: str | Collection[str],
        predicate: Predicate | None = None,
        timeout: float = 10,
    ) -> Event:
        """Wait for the first event named `event_name` (or any of several names) that
        satisfies `predicate`, remove it from the queue and return it.

        Events that do not match stay queued, in order, for later calls. Raises
        StompJsTimeout (a TimeoutError) on timeout and StompJsError when the driver exits
        before a match arrives.
        """
        return await self._wait(event_name, predicate, timeout, remove=True)

    async def peek(
        self,
        event_name: str | Collection[str],
        predicate: Predicate | None = None,
        timeout: float = 10,
    ) -> Event:
        """Like `expect` but leaves the matching event queued."""
        return await self._wait(event_name, predicate, timeout, remove=False)

    async def expect_no(
        self,
        event_name: str | Collection[str],
        predicate: Predicate | None = None,
        within: float = 0.5,
    ) -> None:
        """Assert that no matching event is queued or arrives within `within` seconds."""
        try:
            event = await self.peek(event_name, predicate, timeout=within)
        except StompJsTimeout:
            return
        raise AssertionError(f"unexpected event {event!r}")

    # -- convenience wrappers ---------------------------------------------------------------

    async def connect(
        self,
        url: str,
        *,
        login: str | None = None,
        passcode: str | None = None,
        headers: Mapping[str, str] | None = None,
        heartbeat_incoming: int = 0,
        heartbeat_outgoing: int = 0,
        timeout: float = 10,
        **options: Any,
    ) -> Event:
        """Connect and return the "connected" event; raise if an ERROR frame or a websocket
        close comes first. Extra keyword arguments go to the driver as they are (e.g.
        protocols=[...], stompVersions=[...], reconnectDelay=..., wsHeaders={...})."""
        hdrs = dict(headers or {})
        if login is not None:
            hdrs["login"] = login
        if passcode is not None:
            hdrs["passcode"] = passcode
        req = f"req-{next(self._req_ids)}"
        await self.command(
            "connect",
            req=req,
            url=url,
            headers=hdrs,
            heartbeatIncoming=heartbeat_incoming,
            heartbeatOutgoing=heartbeat_outgoing,
            **options,
        )
        event = await self.expect(
            ("connected", "error", "ws_close", "exception"),
            lambda e: e["event"] in ("error", "ws_close") or e.get("reply_to") == req,
            timeout=timeout,
        )
        if event["event"] != "connected":
            raise StompJsError(f"connect failed: {event!r}")
        # Drop the command's own "ok" (it precedes "connected") so it does not pile up.
        index = self._find({"ok"}, lambda e: e.get("reply_to") == req)
        if index is not None:
            del self._events[index]
        return event

    async def subscribe(
        self,
        destination: str,
        *,
        sub_id: str,
        ack: str = "auto",
        receipt: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Event:
        """Subscribe; returns the driver's "ok". A receipt, if asked for, arrives later as a
        "receipt" event with that receipt_id."""
        hdrs = dict(headers or {})
        if receipt is not None:
            hdrs["receipt"] = receipt
        return await self.call(
            "subscribe", id=sub_id, destination=destination, ack=ack, headers=hdrs
        )

    async def unsubscribe(self, sub_id: str, *, headers: Mapping[str, str] | None = None) -> Event:
        return await self.call("unsubscribe", subscription=sub_id, headers=dict(headers or {}))

    async def send(
        self,
        destination: str,
        *,
        body: str | None = None,
        binary_body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Event:
        fields: dict[str, Any] = {"destination": destination, "headers": dict(headers or {})}
        if binary_body is not None:
            fields["binaryBody_b64"] = base64.b64encode(binary_body).decode("ascii")
        else:
            fields["body"] = body or ""
        return await self.call("send", **fields)

    async def ack(
        self, subscription: str, message_id: str, headers: Mapping[str, str] | None = None
    ) -> Event:
        return await self.call(
            "ack", subscription=subscription, message_id=message_id, headers=dict(headers or {})
        )

    async def nack(
        self, subscription: str, message_id: str, headers: Mapping[str, str] | None = None
    ) -> Event:
        return await self.call(
            "nack", subscription=subscription, message_id=message_id, headers=dict(headers or {})
        )

    async def begin(self, tx: str) -> Event:
        return await self.call("begin", tx=tx)

    async def commit(self, tx: str) -> Event:
        return await self.call("commit", tx=tx)

    async def abort(self, tx: str) -> Event:
        return await self.call("abort", tx=tx)

    async def disconnect(self, timeout: float = 10) -> Event:
        """Graceful DISCONNECT; waits until stompjs' deactivate() resolves (the websocket
        closed). A "disconnected" event is queued only if the server sent the DISCONNECT
        RECEIPT before closing."""
        req = f"req-{next(self._req_ids)}"
        await self.command("disconnect", req=req)
        event = await self.expect(
            ("deactivated", "exception"), lambda e: e.get("reply_to") == req, timeout
        )
        if event["event"] == "exception":
            raise StompJsError(f"driver rejected 'disconnect': {event.get('message')}")
        index = self._find({"ok"}, lambda e: e.get("reply_to") == req)
        if index is not None:
            del self._events[index]
        return event
