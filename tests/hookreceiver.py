"""A real HTTP receiver for the authorization hook, on the standard library's
``http.server`` (a thread of its own, so a slow hook never stalls the relay's loop).

It verifies each request's ``X-Stomprelay-Signature`` with its own HMAC code (not
the relay's), records every request, and answers what the test's ``decide``
returns: ``(status, body)``, or None to hold the request until the receiver closes
(a hook past its timeout).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Decide = Callable[[dict[str, Any]], "tuple[int, bytes] | None"]


def allow(**fields: Any) -> tuple[int, bytes]:
    return 200, json.dumps({"allow": True, **fields}).encode()


def deny(reason: str, **fields: Any) -> tuple[int, bytes]:
    return 200, json.dumps({"allow": False, "reason": reason, **fields}).encode()


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """The receiver's check: ``t=<unix>,v1=<hex>``, a recent ``t``, the HMAC equal."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256)
    return abs(now - t) <= tolerance and hmac.compare_digest(expected.hexdigest(), parts["v1"])


class HookReceiver:
    """``with HookReceiver(decide, secret) as hook``: ``hook.url``, ``hook.requests``."""

    def __init__(self, decide: Decide, secret: str = "") -> None:
        self.decide = decide
        self.secret = secret
        self.requests: list[dict[str, Any]] = []
        #: One entry per request: whether its signature checked out.
        self.signatures: list[bool] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the relay reuses connections

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = json.loads(body)
                signed = self.headers.get("X-Stomprelay-Signature", "")
                with receiver._lock:
                    receiver.requests.append(request)
                    receiver.signatures.append(verify(receiver.secret, signed, body, time.time()))
                answer = receiver.decide(request)
                if answer is None:
                    receiver.release.wait(30)
                    return
                status, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def count(self, action: str, destination: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r["action"] == action
                and (destination is None or r.get("destination") == destination)
            )
