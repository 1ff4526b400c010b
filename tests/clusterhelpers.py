"""Helpers of the multi-process cluster tests: polling, registry snapshots, stomp.py.

The registry check is exact: :func:`assert_registry` SCANs every ``stomp:*`` key and
compares the whole key space (names, types, contents) with what contract section 4
says it must hold for the given relays and sessions. Timestamps are checked for
presence and plausibility (milliseconds since the epoch), not for exact values.
"""

# The helpers take `timeout=` arguments on purpose (tests read better that way).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import stomp
from stomp.utils import Frame as PyFrame

from stomprelay import __version__
from stomprelay.cluster.keys import Keys

T = TypeVar("T")

PREFIX = "stomp"
K = Keys(PREFIX)
EVENT_CONTENT_TYPE = "application/json;charset=utf-8"
EVENT_FIELDS = ("type", "roomId", "sessionId", "username", "serverId", "timestamp")

# Scaled-down cluster timings (seconds): a relay refreshes its heartbeat key every
# LIVENESS_INTERVAL, the key lives LIVENESS_TTL, every relay sweeps every SWEEP_INTERVAL;
# so a dead relay must be gone within REAP_DEADLINE (TTL + one sweep, plus slack).
LIVENESS_INTERVAL = 0.3
LIVENESS_TTL = 1.5
SWEEP_INTERVAL = 0.5
DRAIN_TIMEOUT = 3.0
TTL_MS = int(LIVENESS_TTL * 1000)
REAP_DEADLINE = LIVENESS_TTL + SWEEP_INTERVAL + 2.5


def liveness_args(interval: float, ttl: float, sweep: float, drain: float) -> list[str]:
    """``stomprelay serve`` flags for the liveness timings of a test."""
    return [
        "--liveness-interval",
        str(interval),
        "--liveness-ttl",
        str(ttl),
        "--sweep-interval",
        str(sweep),
        "--drain-timeout",
        str(drain),
    ]


RELAY_ARGS = liveness_args(LIVENESS_INTERVAL, LIVENESS_TTL, SWEEP_INTERVAL, DRAIN_TIMEOUT)


# -- polling -----------------------------------------------------------------------------


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 5.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``check`` until it neither raises AssertionError nor returns a falsy value
    other than None (so plain assertion functions and predicates both work).

    Returns the last result; on timeout raises with the last AssertionError's text.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: AssertionError | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            if result is None or result:
                return result  # type: ignore[return-value]
            last = None
        except AssertionError as exc:
            last = exc
        if loop.time() >= deadline:
            message = f"timed out after {timeout}s waiting for {what or check}"
            if last is not None:
                raise AssertionError(f"{message}:\n{last}") from None
            raise AssertionError(message)
        await asyncio.sleep(interval)


# -- the server API --------------------------------------------------------------------


async def api_post(
    base: str, path: str, payload: object, token: str | None, timeout: float = 20
) -> tuple[int, Any]:
    """POST ``payload`` as JSON to a relay's HTTP API (``base``: ``http://host:port``)
    with a Bearer token; the status and the decoded JSON answer."""

    def post() -> tuple[int, Any]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(base + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    return await asyncio.to_thread(post)


# -- room events -------------------------------------------------------------------------


def check_room_event(
    event: Mapping[str, Any],
    *,
    type: str,
    room: str,
    session_id: str,
    username: str,
    server_id: str,
    participants: int | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> None:
    """Assert the contract fields of a room event (contract section 3)."""
    for name in EVENT_FIELDS:
        assert name in event, f"room event lacks {name!r}: {event}"
    assert event["type"] == type, event
    assert event["roomId"] == room, event
    assert event["sessionId"] == session_id, event
    assert event["username"] == username, event
    assert event["serverId"] == server_id, event
    assert isinstance(event["timestamp"], int), event
    assert abs(event["timestamp"] - time.time() * 1000) < 600_000, event
    if type in ("JOIN", "LEAVE"):
        assert isinstance(event.get("participants"), int), event
        if participants is not None:
            assert event["participants"] == participants, event
    if type == "LEAVE":
        assert event.get("reason") in ("left", "disconnected", "server-lost"), event
    if reason is not None:
        assert event.get("reason") == reason, event
    if message is not None:
        assert event.get("message") == message, event


# -- registry ----------------------------------------------------------------------------


class _Numeric:
    """Matches a plausible ms-since-epoch timestamp stored as decimal text."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str) or not other.isdigit():
            return False
        return abs(int(other) - time.time() * 1000) < 24 * 3600 * 1000

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<ms timestamp>"


class _Hex:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"[0-9a-f]{8,64}", other) is not None

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<hex token>"


TIMESTAMP: Any = _Numeric()
HEX: Any = _Hex()


@dataclass
class SessionSpec:
    """What the registry must hold about one connected session."""

    session_id: str
    server_id: str
    remote_address: str
    username: str = ""
    version: str = "1.2"
    #: Rooms joined, oldest first (the last is the current room).
    rooms: list[str] = field(default_factory=list)
    #: Who it is (CONNECT login or token sub), "" for no one.
    user: str = ""


@dataclass
class RelaySpec:
    server_id: str
    port: int
    host: str = "127.0.0.1"


def is_registry_key(key: str) -> bool:
    """Registry keys (contract section 4), as opposed to room logs (section 6),
    the liveness bookkeeping (fence, tombstones) and the dashboard's rings of
    samples (docs/operations.md), which their own tests check."""
    parts = key.split(":")
    return not (
        parts[1:2] == ["history"]
        or key == f"{PREFIX}:servers:liveness"
        or (parts[1:2] == ["servers"] and parts[-1] in ("reaped", "samples", "degraded"))
    )


def snapshot(r: redis.Redis) -> dict[str, tuple[str, Any]]:
    """Every ``stomp:*`` registry key: name -> (type, value). Strings carry (value, pttl)."""
    out: dict[str, tuple[str, Any]] = {}
    for key in r.scan_iter(match=f"{PREFIX}:*", count=1000):
        if not is_registry_key(key):
            continue
        kind = r.type(key)
        if kind == "string":
            value: Any = (r.get(key), r.pttl(key))
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "none":  # expired or deleted between SCAN and TYPE
            continue
        else:
            value = repr(kind)
        out[key] = (kind, value)
    return out


def expected_registry(
    relays: Iterable[RelaySpec], sessions: Iterable[SessionSpec], ttl_ms: int
) -> dict[str, tuple[str, Any]]:
    """The complete key space contract section 4 asks for (values may be matchers)."""
    relays = list(relays)
    sessions = list(sessions)
    p = PREFIX
    exp: dict[str, tuple[str, Any]] = {}
    exp[f"{p}:servers:active"] = ("set", {r.server_id for r in relays})
    for relay in relays:
        exp[K.server_info(relay.server_id)] = (
            "hash",
            {
                "host": relay.host,
                "port": str(relay.port),
                "version": __version__,
                "started-at": TIMESTAMP,
                "incarnation": HEX,
            },
        )
        exp[K.server_heartbeat(relay.server_id)] = ("string", ("<incarnation>", ttl_ms))
        owned = {s.session_id for s in sessions if s.server_id == relay.server_id}
        if owned:  # Redis holds no empty sets
            exp[K.server_sessions(relay.server_id)] = ("set", owned)
    if sessions:
        exp[f"{p}:sessions:active"] = ("set", {s.session_id for s in sessions})
    rooms: dict[str, set[str]] = {}
    for s in sessions:
        exp[K.session(s.session_id)] = (
            "hash",
            {
                "server-id": s.server_id,
                "user": s.user,
                "username": s.username,
                "remote-address": s.remote_address,
                "version": s.version,
                "connected-at": TIMESTAMP,
                "last-seen": TIMESTAMP,
                "rooms": ",".join(s.rooms),
            },
        )
        if s.rooms:
            exp[K.current_room(s.session_id)] = ("string", (s.rooms[-1], -1))
        if s.user:
            exp.setdefault(K.user_sessions(s.user), ("set", set()))[1].add(s.session_id)
        for room in s.rooms:
            rooms.setdefault(room, set()).add(s.session_id)
    for room, members in rooms.items():
        exp[K.room_participants(room)] = ("set", members)
        exp[K.room_info(room)] = (
            "hash",
            {
                "created-at": TIMESTAMP,
                "last-activity": TIMESTAMP,
                "participants": str(len(members)),
            },
        )
    return exp


def registry_diff(
    actual: Mapping[str, tuple[str, Any]], expected: Mapping[str, tuple[str, Any]]
) -> list[str]:
    """Human-readable differences; empty when the registry is exactly as expected."""
    problems: list[str] = []
    for key in sorted(set(actual) - set(expected)):
        problems.append(f"stray key {key}: {actual[key]}")
    for key in sorted(set(expected) - set(actual)):
        problems.append(f"missing key {key}: expected {expected[key]}")
    for key in sorted(set(actual) & set(expected)):
        (akind, avalue), (ekind, evalue) = actual[key], expected[key]
        if akind != ekind:
            problems.append(f"{key}: type {akind}, expected {ekind}")
            continue
        if ekind == "string":
            value, pttl = avalue
            want, ttl_ms = evalue
            if want == "<incarnation>":
                server_id = K.tag_of(key)
                info = actual.get(K.server_info(server_id), ("hash", {}))[1]
                if value != info.get("incarnation"):
                    problems.append(f"{key} = {value!r}, not the incarnation in {info}")
                if not 0 < pttl <= ttl_ms:
                    problems.append(f"{key}: PTTL {pttl} ms, expected 0 < PTTL <= {ttl_ms}")
            else:
                if value != want:
                    problems.append(f"{key} = {value!r}, expected {want!r}")
                if pttl != ttl_ms:
                    problems.append(f"{key}: PTTL {pttl}, expected {ttl_ms}")
        elif ekind == "hash":
            if set(avalue) != set(evalue):
                problems.append(f"{key}: fields {sorted(avalue)}, expected {sorted(evalue)}")
            for name, want in evalue.items():
                if name in avalue and want != avalue[name]:
                    problems.append(f"{key}[{name}] = {avalue[name]!r}, expected {want!r}")
        elif avalue != evalue:
            problems.append(f"{key} = {sorted(avalue)}, expected {sorted(evalue)}")
    return problems


def assert_registry(
    r: redis.Redis,
    relays: Iterable[RelaySpec],
    sessions: Iterable[SessionSpec],
    ttl_ms: int,
) -> None:
    actual = snapshot(r)
    problems = registry_diff(actual, expected_registry(relays, sessions, ttl_ms))
    if problems:
        listing = "\n".join(f"  {k}: {v}" for k, v in sorted(actual.items()))
        raise AssertionError(
            "registry differs from the contract:\n"
            + "\n".join(f"- {p}" for p in problems)
            + f"\nactual key space:\n{listing}"
        )


def owned_keys(
    snap: Mapping[str, tuple[str, Any]], server_id: str, session_ids: Iterable[str]
) -> list[str]:
    """Keys (or set members) that still mention a relay or any of its sessions."""
    ids = set(session_ids)
    found: list[str] = []
    for key, (kind, value) in snap.items():
        parts = key.replace("{", "").replace("}", "").split(":")
        if server_id in parts or ids & set(parts):
            found.append(key)
        elif kind == "set" and (ids | {server_id}) & set(value):
            found.append(f"{key} holds {sorted((ids | {server_id}) & set(value))}")
        elif kind == "hash" and value.get("server-id") == server_id:
            found.append(f"{key} owned by {server_id}")
    return found


# -- stomp.py ----------------------------------------------------------------------------


class PyStompClient(stomp.ConnectionListener):  # type: ignore[misc]
    """A real stomp.py 8.2 WebSocket connection, driven from asyncio tests.

    stomp.py's receiver thread calls the listener; frames land in thread-safe queues
    that the async helpers read through worker threads.
    """

    def __init__(self, port: int, name: str = "stomp.py", login: str | None = None) -> None:
        self.name = name
        self.login = login
        self.conn = stomp.WSStompConnection(
            [("127.0.0.1", port)],
            ws_path="/ws",
            heartbeats=(0, 0),
            reconnect_attempts_max=1,
            timeout=5,
            auto_decode=False,
        )
        self.conn.set_listener("multi-tests", self)
        self.messages: queue.Queue[PyFrame] = queue.Queue()
        self.receipts: queue.Queue[PyFrame] = queue.Queue()
        self.errors: list[PyFrame] = []
        self.connected_frame: PyFrame | None = None
        self._connected = threading.Event()
        self.history: list[PyFrame] = []
        self._held: list[PyFrame] = []

    # listener callbacks (receiver thread)
    def on_connected(self, frame: PyFrame) -> None:
        self.connected_frame = frame
        self._connected.set()

    def on_message(self, frame: PyFrame) -> None:
        self.history.append(frame)
        self.messages.put(frame)

    def on_receipt(self, frame: PyFrame) -> None:
        self.receipts.put(frame)

    def on_error(self, frame: PyFrame) -> None:
        self.errors.append(frame)

    # async API
    @property
    def session_id(self) -> str:
        assert self.connected_frame is not None
        return str(self.connected_frame.headers["session"])

    @property
    def server_id(self) -> str:
        assert self.connected_frame is not None
        return str(self.connected_frame.headers["x-server-id"])

    async def connect(self) -> None:
        await asyncio.to_thread(self.conn.connect, username=self.login, wait=True)
        assert await asyncio.to_thread(self._connected.wait, 5), f"{self.name}: no CONNECTED"

    async def receipt(self, receipt_id: str, timeout: float = 5) -> None:
        try:
            frame = await asyncio.to_thread(self.receipts.get, True, timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no RECEIPT {receipt_id}") from None
        assert frame.headers.get("receipt-id") == receipt_id, frame.headers

    async def subscribe(self, destination: str, sub_id: str, receipt: bool = True) -> None:
        if receipt:
            await asyncio.to_thread(self.conn.subscribe, destination, sub_id, receipt=f"r-{sub_id}")
            await self.receipt(f"r-{sub_id}")
        else:
            await asyncio.to_thread(self.conn.subscribe, destination, sub_id)

    async def send(
        self, destination: str, body: bytes | str, headers: Mapping[str, str] | None = None
    ) -> None:
        await asyncio.to_thread(self.conn.send, destination, body, headers=dict(headers or {}))

    async def next_message(
        self,
        predicate: Callable[[PyFrame], bool] | None = None,
        timeout: float = 5,
    ) -> PyFrame:
        """The first not-yet-taken message matching ``predicate``."""
        deadline = time.monotonic() + timeout
        for index, frame in enumerate(self._held):
            if predicate is None or predicate(frame):
                return self._held.pop(index)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: no matching message within {timeout}s; "
                    f"errors={[e.headers for e in self.errors]}"
                )
            try:
                frame = await asyncio.to_thread(self.messages.get, True, min(remaining, 0.2))
            except queue.Empty:
                continue
            if predicate is None or predicate(frame):
                return frame
            self._held.append(frame)

    async def close(self) -> None:
        if self.conn.is_connected():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self.conn.disconnect), 5)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.conn.transport.disconnect_socket)


async def right_after_refresh(rdb: Any, key: str, timeout: float = 10) -> None:
    """Return just after the relay refreshed ``key`` (its PTTL jumped back up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = rdb.pttl(key)
    while loop.time() < deadline:
        await asyncio.sleep(0.005)
        now = rdb.pttl(key)
        if now > last:
            return
        last = now
    raise AssertionError(f"{key} was not refreshed within {timeout}s")
