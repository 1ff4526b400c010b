"""A back-end talking to stomprelay's server API (docs/api.md), standard library only.

It posts a notice into a room, sends one user a private message with an
idempotency key (and retries it, as a back-end would after a timeout: the
relay answers the first result and delivers nothing twice), and reads the
room's history back. Run it against a relay started with ``--api-key``::

    python examples/backend.py --relay http://127.0.0.1:8080 --api-key KEY \\
        --room lobby --user alice

It prints one JSON line per step and exits 0, or prints the relay's error
and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any


class RelayApi:
    """The few calls a back-end needs, with the key sent as a Bearer token."""

    def __init__(self, relay: str, api_key: str, timeout: float = 10.0) -> None:
        self.relay = relay.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _call(self, method: str, path: str, body: object = None) -> Any:
        request = urllib.request.Request(
            self.relay + path,
            data=None if body is None else json.dumps(body).encode("utf-8"),
            headers={
                "authorization": f"Bearer {self.api_key}",
                "content-type": "application/json",
            },
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read() or b"{}")
            raise RuntimeError(f"{method} {path}: {exc.code} {error}") from None

    def publish(
        self,
        destination: str,
        body: str,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        request: dict[str, object] = {"destination": destination, "body": body}
        if headers:
            request["headers"] = headers
        if idempotency_key is not None:
            request["idempotencyKey"] = idempotency_key
        result: dict[str, Any] = self._call("POST", "/api/publish", request)
        return result

    def history(self, destination: str, since: int = 0, limit: int = 100) -> dict[str, Any]:
        query = urllib.parse.urlencode({"destination": destination, "since": since, "limit": limit})
        result: dict[str, Any] = self._call("GET", f"/api/history?{query}")
        return result


def user_queue(user: str, queue: str = "messages") -> str:
    """A user's queue: the user percent-encoded (``%2F`` for ``/``), as in Spring."""
    return f"/user/{urllib.parse.quote(user, safe='')}/queue/{queue}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relay", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--user", required=True)
    args = parser.parse_args(argv)
    api = RelayApi(args.relay, args.api_key)
    room = f"/topic/room/{args.room}"
    try:
        notice = api.publish(room, "the shop opens at nine", headers={"x-kind": "notice"})
        print(json.dumps({"step": "room", **notice}))
        # one key per business event: a retry (after a timeout, a crash) is safe
        key = f"order-shipped-{uuid.uuid4()}"
        text = f"{args.user}, your order has shipped"
        dm = api.publish(user_queue(args.user), text, idempotency_key=key)
        print(json.dumps({"step": "dm", **dm}))
        retry = api.publish(user_queue(args.user), text, idempotency_key=key)
        print(json.dumps({"step": "retry", "same": retry == dm, **retry}))
        history = api.history(room, since=max(0, notice["offset"] - 1), limit=10)
        print(
            json.dumps({"step": "history", "bodies": [m.get("body") for m in history["messages"]]})
        )
    except (RuntimeError, OSError) as exc:
        print(f"backend: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
