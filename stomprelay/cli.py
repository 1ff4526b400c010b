"""Command line: ``stomprelay serve`` runs a relay; ``inspect``, ``notify`` and
``kick`` are the operator's commands (:mod:`stomprelay.admin`); ``publish`` is the
server API's (:mod:`stomprelay.cli_api`); ``token`` signs development tokens.
``users hash`` hashes a password for ``--users``. The options come from
:mod:`stomprelay.options`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from stomprelay import __version__
from stomprelay.cli_api import add_publish, post_json
from stomprelay.cli_api import publish as publish_command
from stomprelay.cli_webhooks import add_partitions_option, add_webhooks_command
from stomprelay.options import (
    AUTH,
    BY_FLAG,
    HISTORY,
    REDIS,
    SERVE,
    OptionError,
    add_options,
    settings_of,
)
from stomprelay.options import check as check_options
from stomprelay.settings import Settings
from stomprelay.transport.workers import Supervisor, worker_count

if TYPE_CHECKING:
    from rich.table import Table

    from stomprelay.admin import Admin
    from stomprelay.cluster.connect import RedisTarget
    from stomprelay.passwords import UserFile

log = logging.getLogger("stomprelay")

DEFAULTS = Settings()
T = TypeVar("T")


def redis_target(args: argparse.Namespace) -> RedisTarget | None:
    """The Redis deployment the options name; None for a single node. Bad
    combinations stop the command with a message that names the option."""
    mode = getattr(args, "redis_mode", "standalone")
    url = args.redis_url
    if not url and mode == "standalone":
        return None  # a single node: redis-py is not even imported
    from stomprelay.cluster.connect import RedisTarget, parse_hosts

    if mode == "sentinel":
        try:
            sentinels = parse_hosts(args.redis_sentinel, 26379)
        except ValueError as exc:
            raise SystemExit(
                f"stomprelay: --redis-sentinel (host:port,...) is needed in sentinel mode: {exc}"
            ) from None
        return RedisTarget(url or "redis://", mode, sentinels, args.redis_master_name)
    if not url:
        if mode == "cluster":
            raise SystemExit("stomprelay: cluster mode needs --redis-url with the seed nodes")
        return None
    try:
        if mode == "cluster":
            from stomprelay.cluster.sharded import Seeds

            Seeds.parse(url)  # what the bus will read: one rule for a bad seed list
        return RedisTarget(url, mode)
    except ValueError as exc:
        raise SystemExit(f"stomprelay: --redis-url: {exc}") from None


def _secret(args: argparse.Namespace) -> str | None:
    if args.jwt_secret_file:
        try:
            return Path(args.jwt_secret_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise SystemExit(f"stomprelay: --jwt-secret-file: {exc.strerror}") from None
    return str(args.jwt_secret) if args.jwt_secret else None


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options; OptionError for a bad environment variable."""
    parser = argparse.ArgumentParser(
        prog="stomprelay", description="STOMP over WebSocket relay, clustered over Redis."
    )
    parser.add_argument("--version", action="version", version=f"stomprelay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a relay")
    add_options(serve, (SERVE, REDIS, HISTORY, AUTH))

    inspect = commands.add_parser("inspect", help="print the cluster registry")
    add_options(inspect, (REDIS,))
    inspect.add_argument(
        "what",
        choices=["servers", "sessions", "rooms", "room", "session", "keys", "webhooks", "queue"],
        help="keys: every key of the prefix with its type, TTL and content; webhooks: the "
        "webhook partitions and dead letters; queue NAME: one queue",
    )
    inspect.add_argument("id", nargs="?", help="room or session id, or queue name")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_partitions_option(inspect)

    notify = commands.add_parser(
        "notify", help="send a SYSTEM notification to /topic/system (or one room) cluster-wide"
    )
    add_options(notify, (REDIS,))
    notify.add_argument("message", help="the notification text")
    notify.add_argument("--room", help="send it into this room's /topic/room/{id} instead")
    notify.add_argument("--server", help="deliver only to the clients of this relay")
    # a room's log is trimmed and expired as the relays do (same flags and variables)
    add_options(notify, (HISTORY,))

    token = commands.add_parser(
        "token",
        help="DEVELOPMENT: print a HS256 JWT for a user, signed with --jwt-secret",
    )
    add_options(token, (AUTH,))
    token.add_argument("--user", required=True, help="the sub claim")
    token.add_argument("--name", help="the display name claim")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until exp")
    token.add_argument("--role", action="append", default=[], help="add to the roles claim")
    token.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another claim; VALUE is JSON when it parses (e.g. rooms='[\"lobby\"]')",
    )

    kick = commands.add_parser(
        "kick",
        help="end a user's sessions on every relay, and refuse it until --until",
    )
    add_options(kick, (REDIS,))
    kick.add_argument("user", help="the user (token sub, or CONNECT login)")
    kick.add_argument(
        "--until",
        help="refuse its CONNECTs until then: ISO 8601 (2026-12-31T12:00:00Z) or a "
        "duration (30s, 15m, 2h, 1d)",
    )
    kick.add_argument("--lift", action="store_true", help="lift a suspension (end no session)")
    kick.add_argument(
        "--api",
        help="use this relay's HTTP API (single node: http://host:port) instead of Redis",
    )
    BY_FLAG["--admin-token"].add_to(kick, os.environ)
    add_publish(commands)

    users = commands.add_parser("users", help="static users (--users FILE of name:hash lines)")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    hashing = users_commands.add_parser(
        "hash",
        help="read a password on standard input (its first line) and print its bcrypt hash",
    )
    hashing.add_argument(
        "--rounds",
        type=int,
        default=12,
        help="bcrypt cost: 2^N rounds, 4 to 31 (each check at CONNECT takes that long)",
    )
    add_webhooks_command(commands)
    return parser


def parse_until(text: str, now: float) -> int:
    """ms since the epoch of an ISO 8601 time or a duration from ``now``."""
    from stomprelay.notify import iso_ms

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip()
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return int((now + float(value[:-1]) * units[value[-1]]) * 1000)
    try:
        return iso_ms(value)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 nor a duration like 15m") from None


def token(args: argparse.Namespace) -> int:
    import json

    from stomprelay.tokens import issue_token

    secret = _secret(args)
    if not secret:
        print("stomprelay token: give --jwt-secret (or JWT_SECRET)", file=sys.stderr)
        return 2
    claims: dict[str, object] = {}
    if args.role:
        claims["roles"] = list(args.role)
    for item in args.claim:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            print(f"stomprelay token: --claim {item!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        try:
            claims[name] = json.loads(raw)
        except ValueError:
            claims[name] = raw
    print(
        issue_token(
            secret,
            args.user,
            name=args.name,
            ttl=args.ttl,
            claims=claims,
            audience=args.jwt_audience,
            issuer=args.jwt_issuer,
        )
    )
    return 0


def users(args: argparse.Namespace) -> int:
    """``stomprelay users hash``: the hash of the password on standard input (a
    terminal is asked without echo), for a ``name:hash`` line of ``--users``."""
    import getpass

    from stomprelay.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    try:
        print(hash_password(password, args.rounds))
    except ValueError as exc:
        print(f"stomprelay users hash: {exc}", file=sys.stderr)
        return 2
    return 0


def kick(args: argparse.Namespace) -> int:
    """Suspend (or lift) a user cluster-wide: through Redis, or one relay's API."""
    import time
    import urllib.parse

    from stomprelay.auth import check_name
    from stomprelay.errors import BackendUnavailable, PolicyError
    from stomprelay.notify import show_ms

    try:
        user = check_name(args.user, "user", DEFAULTS.max_login)
        until = None if args.lift or not args.until else parse_until(args.until, time.time())
    except (PolicyError, ValueError) as exc:
        print(f"stomprelay kick: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2
    if args.api:
        url = f"{args.api.rstrip('/')}/api/users/{urllib.parse.quote(user, safe='')}/kick"
        try:
            status, answer = post_json(
                url, {"until": until, "lift": bool(args.lift)}, args.admin_token
            )
        except OSError as exc:
            print(f"stomprelay kick: {exc}", file=sys.stderr)
            return 1
        if status >= 300:
            print(f"stomprelay kick: HTTP {status}: {json.dumps(answer)[:200]}", file=sys.stderr)
            return 1
        print(json.dumps(answer))
        return 0
    if not args.redis_url:
        print("stomprelay kick: give --redis-url (or REDIS_URL), or --api", file=sys.stderr)
        return 2
    try:
        asyncio.run(_with_admin(args, lambda admin: admin.kick(user, until, bool(args.lift))))
    except BackendUnavailable as exc:
        print(f"stomprelay kick: redis: {exc}", file=sys.stderr)
        return 1
    if args.lift:
        print(f"lifted the suspension of {user}")
    elif until:
        moment = show_ms(until)
        print(f"ended the sessions of {user}; refused until {moment}")
    else:
        print(f"ended the sessions of {user}")
    return 0


async def _with_admin(args: argparse.Namespace, act: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``act`` on the admin of the cluster the options name, then close it."""
    from stomprelay.admin import Admin
    from stomprelay.cluster.connect import make_client
    from stomprelay.cluster.history import HistoryPolicy
    from stomprelay.cluster.keys import Keys
    from stomprelay.factory import build_backends

    settings = settings_of(vars(args))
    client = make_client(args.redis_target, decode=False)

    async def publish(channel: str, envelope: Any) -> int:
        from redis.exceptions import RedisError

        from stomprelay.errors import BackendUnavailable

        try:
            return int(await client.publish(channel, envelope.to_json()))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(str(exc)) from exc

    backends = build_backends(settings, args.redis_target, Keys(args.key_prefix))
    admin = Admin(backends, HistoryPolicy.of(settings), publish=publish)
    try:
        return await act(admin)
    finally:
        await admin.close()
        await client.aclose()


async def notify(args: argparse.Namespace) -> int:
    """Publish a SYSTEM event envelope (operators only; clients cannot SEND there)."""
    from stomprelay.errors import BackendUnavailable, PolicyError

    if not args.redis_url:
        print("stomprelay notify: give --redis-url (or REDIS_URL)", file=sys.stderr)
        return 2

    def act(admin: Admin) -> Awaitable[Any]:
        return admin.notify(args.message, args.room or "", args.server or "")

    try:
        notified = await _with_admin(args, act)
    except PolicyError as exc:
        print(f"stomprelay notify: {exc.detail}", file=sys.stderr)
        return 2
    except BackendUnavailable as exc:
        print(f"stomprelay notify: redis: {exc}", file=sys.stderr)
        return 1
    if notified.offset is not None:
        print(f"appended to the log of room {args.room} at offset {notified.offset}")
    else:
        print(f"published on {notified.channel}: {notified.listeners} relay(s) listening")
    return 0


async def serve(args: argparse.Namespace) -> int:
    from stomprelay.cluster.keys import Keys
    from stomprelay.factory import build_backends, build_relay
    from stomprelay.transport import RelayServer

    settings = _settings(args)
    auth, acl = _access(args, settings)
    static_users = _users(args, settings)
    target = args.redis_target
    backends = build_backends(settings, target, Keys(args.key_prefix))
    try:
        relay = build_relay(
            settings,
            server_id=args.server_id,
            backends=backends,
            auth=auth,
            acl=acl,
            dev_tokens=args.dev_tokens,
            users=static_users,
        )
    except ValueError as exc:
        raise SystemExit(f"stomprelay: {exc}") from None
    if args.dev_tokens:
        log.warning(
            "--dev-tokens is on: GET /dev/token gives anyone a token for any user; "
            "never use it outside development"
        )
    server = RelayServer(
        relay,
        host=args.host,
        port=args.port,
        stomp_port=args.stomp_port,
        web_root=Path(args.web_root) if args.web_root else None,
        admin_token=args.admin_token,
        api_key=args.api_key,
        api_key_name=args.api_key_name,
        reuse_port=args.reuse_port,
        sock=socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None,
        extra_port=args.worker_http_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    mode = f"cluster via {target.describe()}" if target is not None else "single node"
    print(
        f"stomprelay {__version__} ({relay.server_id}, {mode}) on http://{args.host}:{server.port}/"
        f" - STOMP at ws://{args.host}:{server.port}/ws",
        flush=True,
    )
    await stop.wait()
    log.info("stopping: closing %d connections", len(server.connections))
    await server.stop()
    log.info("stopped")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    """The Settings of the options, checked (a value out of range stops the start)."""
    try:
        return settings_of(vars(args))
    except OptionError as exc:
        raise SystemExit(f"stomprelay: {exc}") from None


def _access(args: argparse.Namespace, settings: Settings) -> tuple[Any, Any]:
    """The authenticator and ACL the options ask for; bad files stop the start."""
    from stomprelay.auth import Acl

    secret = _secret(args)
    auth = None
    try:
        if secret or args.jwt_public_key or args.jwks:
            # PyJWT loads only into relays that check tokens
            from stomprelay.tokens import Authenticator, KeySource, load_public_key

            keys = [load_public_key(path) for path in args.jwt_public_key]
            jwks = None
            if args.jwks:
                jwks = KeySource(args.jwks, settings.jwks_refresh, settings.jwks_min_refresh)
                jwks.load_now()
            auth = Authenticator(
                secret=secret,
                public_keys=keys,
                jwks=jwks,
                audience=args.jwt_audience,
                issuer=args.jwt_issuer,
                leeway=settings.jwt_leeway,
                max_login=settings.max_login,
            )
        acl = Acl.load(args.acl) if args.acl else None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"stomprelay: {exc}") from None
    return auth, acl


def _users(args: argparse.Namespace, settings: Settings) -> UserFile | None:
    """The static users of ``--users``; a bad file stops the start naming its line."""
    if not args.users:
        return None
    from stomprelay.passwords import UserFile

    try:
        return UserFile.load(args.users, settings.max_login)
    except OSError as exc:
        raise SystemExit(f"stomprelay: --users {args.users}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SystemExit(f"stomprelay: --users: {exc}") from None


async def _rows(admin: Admin, what: str, item: str | None) -> list[dict[str, object]] | str:
    """The rows ``inspect`` prints, or why there are none (a message)."""
    if what == "servers":
        return await admin.servers()
    if what == "sessions":
        return await admin.sessions()
    if what == "rooms":
        return await admin.rooms()
    if what == "keys":
        return await admin.dump()
    if not item:
        return f"stomprelay inspect {what}: give a {what} id"
    if what == "session":
        record = await admin.session(item)
        return [record] if record is not None else f"no session {item}"
    if what == "queue":
        queue = await admin.queue(item)
        return [queue] if queue is not None else f"no queue {item}"
    room = await admin.room(item)
    if room is None:
        return f"no room {item}"
    info = {**room.info, **{f"history.{k}": v for k, v in (room.history or {}).items()}}
    return [{**info, **person} for person in room.participants] or [info]


async def inspect(args: argparse.Namespace) -> int:
    from stomprelay.errors import BackendUnavailable, PolicyError

    if args.what == "webhooks":
        from stomprelay.cli_webhooks import inspect_webhooks
        from stomprelay.cluster.keys import Keys

        return await inspect_webhooks(args, Keys(args.key_prefix))
    if not args.redis_url:
        print("stomprelay inspect: give --redis-url (or REDIS_URL)", file=sys.stderr)
        return 2
    try:
        rows = await _with_admin(args, lambda admin: _rows(admin, args.what, args.id))
    except BackendUnavailable as exc:
        print(f"stomprelay inspect: {exc}", file=sys.stderr)
        return 1
    except PolicyError as exc:  # a queue name that cannot be one
        print(f"stomprelay inspect: {exc.detail}", file=sys.stderr)
        return 2
    if isinstance(rows, str):
        print(rows, file=sys.stderr)
        return 1 if rows.startswith("no ") else 2
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    import time

    from rich.console import Console

    Console().print(inspect_table(args.what, rows, int(time.time() * 1000)))
    return 0


def inspect_table(what: str, rows: list[dict[str, object]], now_ms: int) -> Table:
    """``inspect``'s table: moments relative to ``now_ms``, durations and sizes in
    units (:mod:`stomprelay.humanize`); ``--json`` keeps the exact values."""
    from rich.table import Table

    from stomprelay.humanize import cell

    table = Table(title=f"{what} ({len(rows)})")
    columns = list(rows[0]) if rows else []
    for column in columns or ["(none)"]:  # rich prints nothing of a table without columns
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell(c, row.get(c), now_ms) for c in columns))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_options(vars(args))
    except OptionError as exc:
        raise SystemExit(f"stomprelay: {exc}") from None
    if hasattr(args, "redis_url"):
        args.redis_target = redis_target(args)
        if args.redis_target is not None and not args.redis_url:
            args.redis_url = args.redis_target.url
    level = getattr(args, "log_level", "warning").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.command == "serve":
        workers = worker_count(args.workers)
        if workers > 1:
            if not args.redis_url:
                raise SystemExit(
                    "stomprelay: --workers above 1 needs --redis-url: without Redis each "
                    "worker would be a separate single node, and clients on different "
                    "workers could not talk to each other"
                )
            if args.port == 0:
                raise SystemExit("stomprelay: --workers needs a fixed --port")
            supervisor = Supervisor(
                workers,
                list(sys.argv[2:] if argv is None else argv[1:]),
                args.host,
                args.port,
                args.server_id,
                args.drain_timeout,
                args.worker_http_port,
            )
            return supervisor.run() or 0
        return run_loop(serve(args), args.uvloop)
    if args.command == "notify":
        return asyncio.run(notify(args))
    if args.command == "token":
        return token(args)
    if args.command == "kick":
        return kick(args)
    if args.command == "publish":
        return publish_command(args, _with_admin)
    if args.command == "users":
        return users(args)
    if args.command == "webhooks":
        from stomprelay.cli_webhooks import replay

        return asyncio.run(replay(args))
    return asyncio.run(inspect(args))


def run_loop(main: Coroutine[Any, Any, int], use_uvloop: bool) -> int:
    """Run on uvloop where it is installed and wanted, else on asyncio's loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed: running on asyncio's event loop")
        else:
            return int(uvloop.run(main))
    return asyncio.run(main)


if __name__ == "__main__":
    sys.exit(main())
