"""``stomprelay publish``: the server API's publish from a shell (contract section 10).

Through Redis (``--redis-url``: the same append as the relays', so the same
idempotency), or through one relay's HTTP API (``--api URL``, with
``--api-key`` or ``--admin-token``). :func:`post_json` is also how ``kick
--api`` calls a relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from stomprelay.options import BY_FLAG, HISTORY, REDIS, add_options, settings_of

if TYPE_CHECKING:
    from stomprelay.admin import Admin

T = TypeVar("T")
WithAdmin = Callable[
    [argparse.Namespace, Callable[["Admin"], Awaitable[T]]], Coroutine[Any, Any, T]
]
#: Seconds an ``--api`` request may take.
API_TIMEOUT = 10.0


def add_publish(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``publish`` command's options."""
    publish = commands.add_parser(
        "publish",
        help="publish a message to a room, topic or /user/{user}/queue/{name}, as a back-end",
    )
    add_options(publish, (REDIS, HISTORY))
    publish.add_argument("destination", help="e.g. /topic/room/lobby or /user/alice/queue/messages")
    publish.add_argument("body", help="the message body ('-': read it from stdin)")
    publish.add_argument(
        "--idempotency-key",
        help="a repeat with the same key on the same destination publishes nothing "
        "and prints the first result",
    )
    publish.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header of the message (repeatable)",
    )
    publish.add_argument(
        "--api",
        help="publish through this relay's HTTP API (http://host:port) instead of Redis",
    )
    for flag in ("--api-key", "--api-key-name", "--admin-token"):
        BY_FLAG[flag].add_to(publish, os.environ)


def post_json(url: str, payload: object, token: str | None) -> tuple[int, object]:
    """POST ``payload`` as JSON with a Bearer ``token``: the status and the JSON
    answer (the text where it is not JSON); OSError when the relay is unreachable."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"content-type": "application/json"}
        | ({"authorization": f"Bearer {token}"} if token else {}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")[:200]


def _request(args: argparse.Namespace) -> dict[str, object] | str:
    """The publish request of the arguments, or what is wrong with them."""
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            return f"--header {item!r} is not NAME=VALUE"
        headers[name] = value
    if args.body == "-":
        raw = sys.stdin.buffer.read()
        try:
            body: dict[str, object] = {"body": raw.decode("utf-8")}
        except UnicodeDecodeError:
            import base64

            body = {"bodyBase64": base64.b64encode(raw).decode("ascii")}
    else:
        body = {"body": args.body}
    data: dict[str, object] = {"destination": args.destination, **body}
    if headers:
        data["headers"] = headers
    if args.idempotency_key is not None:
        data["idempotencyKey"] = args.idempotency_key
    return data


def publish(args: argparse.Namespace, with_admin: WithAdmin[dict[str, object]]) -> int:
    """Print the result as JSON: 0 when published, 2 for a request the API refuses,
    1 when Redis or the relay cannot be reached."""
    data = _request(args)
    if isinstance(data, str):
        print(f"stomprelay publish: {data}", file=sys.stderr)
        return 2
    if args.api:
        try:
            status, answer = post_json(
                f"{args.api.rstrip('/')}/api/publish", data, args.api_key or args.admin_token
            )
        except OSError as exc:
            print(f"stomprelay publish: {exc}", file=sys.stderr)
            return 1
        if status != 200:
            print(f"stomprelay publish: HTTP {status}: {json.dumps(answer)}", file=sys.stderr)
            return 2 if 400 <= status < 500 else 1
        print(json.dumps(answer))
        return 0
    if not args.redis_url:
        print("stomprelay publish: give --redis-url (or REDIS_URL), or --api", file=sys.stderr)
        return 2
    from stomprelay.api import ApiError, Message, ServerApi
    from stomprelay.errors import BackendUnavailable

    settings = settings_of(vars(args))

    async def act(admin: Admin) -> dict[str, object]:
        api = ServerApi(admin.backends, admin.policy, settings, origin="cli")
        return await api.publish(data["destination"], Message.of(data, settings), args.api_key_name)

    try:
        result = asyncio.run(with_admin(args, act))
    except ApiError as exc:
        print(f"stomprelay publish: {exc.status}: {json.dumps(exc.as_json())}", file=sys.stderr)
        return 1 if exc.status == 503 else 2
    except BackendUnavailable as exc:
        print(f"stomprelay publish: redis: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
