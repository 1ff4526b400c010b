"""A real HTTP receiver for the webhooks, on the standard library's ``http.server``
(a thread of its own), on a port that stays the same across :meth:`down` and
:meth:`up` (so a relay meets a refused connection, then the same URL again).

It checks every batch's ``X-Stomprelay-Signature`` with the test side's own HMAC
code (:func:`hookreceiver.verify`, not the relay's), answers what ``status`` says
(or holds the request while ``hold`` is set), and keeps what it acknowledged:
each event once per id (:attr:`events`, in arrival order) and the repeats
(:attr:`duplicates`). :func:`check_room_order` replays a room's events and says
where their order is impossible.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hookreceiver import verify


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Post:
    """One POST the receiver answered."""

    status: int
    ids: list[str]
    signed: bool
    content_type: str
    #: Wall time (s) it arrived (before any hold).
    arrived: float


class WebhookReceiver:
    """``with WebhookReceiver(secret) as receiver``: ``receiver.url``; set
    ``receiver.status`` (200, 500, ...) or ``receiver.hold`` (an Event cleared:
    requests wait until it is set); :meth:`down` / :meth:`up` refuse connections
    and take them again."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks"
        self.status = 200
        #: Requests wait here while it is clear (set: answered at once).
        self.hold = threading.Event()
        self.hold.set()
        #: Requests that arrived and are waiting on ``hold``.
        self.held = 0
        self._lock = threading.Lock()
        #: Every POST answered, in the order they were answered.
        self.posts: list[Post] = []
        #: Events acknowledged (2xx), first copy of each id, in arrival order.
        self.events: list[dict[str, Any]] = []
        #: Wall time (s) each acknowledged id was first acknowledged.
        self.acked_at: dict[str, float] = {}
        #: Acknowledged copies per id beyond the first.
        self.duplicates: Counter[str] = Counter()
        self.bad_signatures = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                signed = verify(
                    receiver.secret,
                    self.headers.get("X-Stomprelay-Signature", ""),
                    body,
                    time.time(),
                )
                if not receiver.hold.is_set():
                    with receiver._lock:
                        receiver.held += 1
                    receiver.hold.wait(120)
                status = receiver.status
                receiver._record(
                    Post(status, [], signed, self.headers.get("Content-Type", ""), arrived), body
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: new connections are refused (kept ones are closed)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.set()
        self.down()

    # -- what arrived ------------------------------------------------------------

    def _record(self, post: Post, body: bytes) -> None:
        batch = json.loads(body)["events"]
        now = time.time()
        post.ids.extend(e["id"] for e in batch)
        with self._lock:
            self.posts.append(post)
            if not post.signed:
                self.bad_signatures += 1
            if not 200 <= post.status < 300:
                return
            for event in batch:
                if event["id"] in self.acked_at:
                    self.duplicates[event["id"]] += 1
                    continue
                self.acked_at[event["id"]] = now
                self.events.append(event)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.snapshot() if e["type"] == kind]

    def max_lag(self) -> float:
        """Longest time (s) from an event's timestamp to its first acknowledgement."""
        with self._lock:
            return max(
                (self.acked_at[e["id"]] - e["timestamp"] / 1000 for e in self.events),
                default=0.0,
            )


def check_room_order(events: Iterable[dict[str, Any]]) -> list[str]:
    """Where the room events (in arrival order, one copy per id) are in an impossible
    order: a session leaving a room it had not joined, a room occupied while it had
    participants or vacated while it still had some, a join after which no
    ``room.occupied`` follows an empty room. Empty when the order is consistent."""
    problems: list[str] = []
    inside: dict[str, set[str]] = {}
    occupied: dict[str, bool] = {}
    last: dict[str, str] = {}
    for event in events:
        room = event.get("roomId")
        if not room or not event["type"].startswith("room."):
            continue
        people = inside.setdefault(room, set())
        kind, session = event["type"], event.get("sessionId", "")
        if kind == "room.joined":
            if session in people:
                problems.append(f"{room}: {session} joined twice")
            people.add(session)
        elif kind == "room.left":
            if session not in people:
                problems.append(f"{room}: {session} left before joining")
            people.discard(session)
        elif kind == "room.occupied":
            if occupied.get(room) or len(people) != 1 or last.get(room) != "room.joined":
                problems.append(f"{room}: occupied with {len(people)} inside")
            occupied[room] = True
        elif kind == "room.vacated":
            if not occupied.get(room) or people or last.get(room) != "room.left":
                problems.append(f"{room}: vacated with {len(people)} inside")
            occupied[room] = False
        last[room] = kind
    return problems
