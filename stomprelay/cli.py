"""Command line: ``stomprelay serve`` runs a relay, ``stomprelay inspect`` reads the registry."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stomprelay import __version__
from stomprelay.settings import Settings
from stomprelay.transport.workers import Supervisor, worker_count

if TYPE_CHECKING:
    from stomprelay.cluster.connect import RedisTarget

log = logging.getLogger("stomprelay")

DEFAULTS = Settings()


def _env_number(name: str, default: float, kind: type[int] | type[float] = int) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise SystemExit(f"stomprelay: {name} must be a number, not {value!r}") from None


def redis_url_from_env() -> str | None:
    """``REDIS_URL``, else ``REDIS_HOST``/``REDIS_PORT``; None means single-node."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    host = os.environ.get("REDIS_HOST")
    if host:
        return f"redis://{host}:{int(_env_number('REDIS_PORT', 6379))}/0"
    return None


def _add_redis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=redis_url_from_env(),
        help="Redis URL (env REDIS_URL, or REDIS_HOST/REDIS_PORT); none: single-node",
    )
    parser.add_argument(
        "--redis-mode",
        choices=("standalone", "sentinel", "cluster"),
        default=os.environ.get("REDIS_MODE", "standalone"),
        help="standalone (one Redis), sentinel (a master found through Sentinel) or "
        "cluster (Redis Cluster; --redis-url lists seed nodes, comma-separated); "
        "env REDIS_MODE (docs/redis.md)",
    )
    parser.add_argument(
        "--redis-sentinel",
        default=os.environ.get("REDIS_SENTINELS", ""),
        help="sentinel mode: the sentinels, host:port[,host:port...] (env REDIS_SENTINELS); "
        "--redis-url then gives only the master's password, database and TLS",
    )
    parser.add_argument(
        "--redis-master-name",
        default=os.environ.get("REDIS_MASTER_NAME", "mymaster"),
        help="sentinel mode: the monitored master's name (env REDIS_MASTER_NAME)",
    )
    parser.add_argument(
        "--key-prefix",
        default=os.environ.get("KEY_PREFIX", "stomp"),
        help="prefix of every Redis key and channel (default stomp)",
    )


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


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_hygiene_options(serve: argparse.ArgumentParser) -> None:
    """Connection hygiene (docs/security.md): Origins, proxies, per-address limits."""
    serve.add_argument(
        "--allowed-origins",
        type=_comma_list,
        default=_comma_list(os.environ.get("ALLOWED_ORIGINS", "")),
        help="Origins a WebSocket handshake may come from besides the relay's own, comma "
        "separated, * wildcards (https://*.example.com), null, or * for any "
        "(env ALLOWED_ORIGINS; default: same origin only)",
    )
    serve.add_argument(
        "--no-origin",
        choices=["allow", "refuse"],
        default=os.environ.get("NO_ORIGIN") or "allow",
        help="a handshake without an Origin header (non-browser clients): allow (default) "
        "or refuse (env NO_ORIGIN)",
    )
    serve.add_argument(
        "--trusted-proxies",
        type=_comma_list,
        default=_comma_list(os.environ.get("TRUSTED_PROXIES", "")),
        help="CIDR ranges of proxies whose X-Forwarded-For is believed, comma separated "
        "(env TRUSTED_PROXIES; default: none)",
    )
    serve.add_argument(
        "--trust-proxy",
        action="store_true",
        default=os.environ.get("TRUST_PROXY", "") in ("1", "true", "yes"),
        help="deprecated: --trusted-proxies 127.0.0.0/8,::1/128 (env TRUST_PROXY=1)",
    )
    serve.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=int(_env_number("MAX_CONNECTIONS_PER_IP", DEFAULTS.max_connections_per_ip)),
        help="open connections per client address (0: no cap; env MAX_CONNECTIONS_PER_IP)",
    )
    serve.add_argument(
        "--handshake-rate",
        type=float,
        default=_env_number("HANDSHAKE_RATE", DEFAULTS.handshake_rate_per_ip, float),
        help="connection handshakes per second per client address (0: no limit; "
        "env HANDSHAKE_RATE)",
    )
    serve.add_argument(
        "--handshake-burst",
        type=int,
        default=int(_env_number("HANDSHAKE_BURST", DEFAULTS.handshake_burst_per_ip)),
        help="handshakes one client address may make at once (env HANDSHAKE_BURST)",
    )
    serve.add_argument(
        "--public-metrics",
        action="store_true",
        default=os.environ.get("PUBLIC_METRICS", "") in ("1", "true", "yes"),
        help="serve /metrics to anyone (env PUBLIC_METRICS=1); the API still needs the token",
    )


def _add_history_options(parser: argparse.ArgumentParser) -> None:
    """The log's retention (docs/history.md): the relay's, and that of the commands
    that append to a log themselves (``notify --room``), so that they trim and expire
    it as the relays do (same flags, same environment variables)."""
    parser.add_argument(
        "--history-size",
        type=int,
        default=int(_env_number("HISTORY_SIZE", DEFAULTS.history_size)),
        help="messages kept per destination's log (0: no history, no offsets)",
    )
    parser.add_argument(
        "--history-ttl",
        type=float,
        default=_env_number("HISTORY_TTL", DEFAULTS.history_ttl, float),
        help="seconds a log lives after its last message",
    )
    parser.add_argument(
        "--history-min-age",
        type=float,
        default=_env_number("HISTORY_MIN_AGE", DEFAULTS.history_min_age, float),
        help="seconds a message stays in its log even past --history-size",
    )
    parser.add_argument(
        "--history-max-size",
        type=int,
        default=int(_env_number("HISTORY_MAX_SIZE", DEFAULTS.history_max_size)),
        help="most messages a log holds whatever their age (0: 10 x --history-size)",
    )
    parser.add_argument(
        "--history-max-topics",
        type=int,
        default=int(_env_number("HISTORY_MAX_TOPICS", DEFAULTS.history_max_topics)),
        help="most logs of /topic/{name} destinations (rooms not counted)",
    )
    parser.add_argument(
        "--history-rooms-only",
        action="store_true",
        default=os.environ.get("HISTORY_ROOMS_ONLY", "") not in ("", "0"),
        help="log rooms only (env HISTORY_ROOMS_ONLY=1)",
    )


def _history_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Settings` fields of :func:`_add_history_options`, checked."""
    for name in ("history_size", "history_min_age", "history_max_size", "history_max_topics"):
        if getattr(args, name) < 0:
            raise SystemExit(f"stomprelay: --{name.replace('_', '-')} must not be negative")
    if args.history_max_size and args.history_max_size < args.history_size:
        raise SystemExit(
            "stomprelay: --history-max-size must be 0 (ten times --history-size) or at "
            "least --history-size"
        )
    if args.history_ttl <= 0:
        raise SystemExit("stomprelay: --history-ttl must be positive")
    return {
        "history_size": args.history_size,
        "history_ttl": args.history_ttl,
        "history_max_topics": args.history_max_topics,
        "history_rooms_only": args.history_rooms_only,
        "history_min_age": args.history_min_age,
        "history_max_size": args.history_max_size,
    }


def _hygiene_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields of the hygiene options, checked (a bad value stops the start)."""
    from stomprelay.transport.hygiene import LOOPBACK_PROXIES, OriginPolicy, parse_networks

    proxies = tuple(args.trusted_proxies)
    if args.trust_proxy:
        log.warning("--trust-proxy is deprecated: use --trusted-proxies 127.0.0.0/8,::1/128")
        proxies += tuple(p for p in LOOPBACK_PROXIES if p not in proxies)
    try:
        parse_networks(proxies)
        OriginPolicy(args.allowed_origins)
    except ValueError as exc:
        raise SystemExit(f"stomprelay: {exc}") from None
    if args.no_origin not in ("allow", "refuse"):
        raise SystemExit(f"stomprelay: NO_ORIGIN is allow or refuse, not {args.no_origin!r}")
    if args.max_connections_per_ip < 0 or args.handshake_rate < 0 or args.handshake_burst < 1:
        raise SystemExit(
            "stomprelay: --max-connections-per-ip and --handshake-rate must not be negative, "
            "--handshake-burst must be at least 1"
        )
    return {
        "allowed_origins": tuple(args.allowed_origins),
        "allow_no_origin": args.no_origin == "allow",
        "trusted_proxies": proxies,
        "max_connections_per_ip": args.max_connections_per_ip,
        "handshake_rate_per_ip": args.handshake_rate,
        "handshake_burst_per_ip": args.handshake_burst,
        "public_metrics": args.public_metrics,
    }


def _add_auth_options(parser: argparse.ArgumentParser) -> None:
    """How tokens are checked (docs/security.md); shared by serve and token."""
    parser.add_argument(
        "--jwt-secret",
        default=os.environ.get("JWT_SECRET") or None,
        help="HS256 secret: CONNECT then needs a JWT (env JWT_SECRET; prefer the env or "
        "--jwt-secret-file to keep it out of ps)",
    )
    parser.add_argument(
        "--jwt-secret-file",
        default=os.environ.get("JWT_SECRET_FILE") or None,
        help="read the HS256 secret from this file (env JWT_SECRET_FILE)",
    )
    parser.add_argument(
        "--jwt-audience",
        default=os.environ.get("JWT_AUDIENCE") or None,
        help="required aud claim (env JWT_AUDIENCE)",
    )
    parser.add_argument(
        "--jwt-issuer",
        default=os.environ.get("JWT_ISSUER") or None,
        help="required iss claim (env JWT_ISSUER)",
    )


def _secret(args: argparse.Namespace) -> str | None:
    if args.jwt_secret_file:
        try:
            return Path(args.jwt_secret_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise SystemExit(f"stomprelay: --jwt-secret-file: {exc.strerror}") from None
    return str(args.jwt_secret) if args.jwt_secret else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stomprelay", description="STOMP over WebSocket relay, clustered over Redis."
    )
    parser.add_argument("--version", action="version", version=f"stomprelay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a relay")
    serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(_env_number("PORT", 8080)))
    serve.add_argument(
        "--stomp-port",
        type=int,
        default=int(_env_number("STOMP_PORT", 0)) or None,
        help="also serve plain STOMP over TCP on this port (env STOMP_PORT; off by default)",
    )
    serve.add_argument(
        "--server-id",
        default=os.environ.get("SERVER_ID") or None,
        help="this relay's id (env SERVER_ID; default: hostname plus a random suffix)",
    )
    serve.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    _add_redis_options(serve)
    serve.add_argument(
        "--heartbeat-ms",
        type=int,
        default=int(_env_number("HEARTBEAT_MS", DEFAULTS.heartbeat_send_ms)),
        help="shortest STOMP heart-beat interval the relay agrees to, both directions; "
        "a client asking for more gets what it asks (0: no heart-beats)",
    )
    serve.add_argument(
        "--connect-timeout",
        type=float,
        default=_env_number("CONNECT_TIMEOUT", DEFAULTS.connect_timeout, float),
    )
    serve.add_argument(
        "--liveness-interval",
        type=float,
        default=_env_number("LIVENESS_INTERVAL", DEFAULTS.liveness_interval, float),
        help="seconds between heartbeat-key refreshes",
    )
    serve.add_argument(
        "--liveness-ttl",
        type=float,
        default=_env_number("LIVENESS_TTL", DEFAULTS.liveness_ttl, float),
        help="seconds after which a relay that stopped refreshing counts as dead",
    )
    serve.add_argument(
        "--sweep-interval",
        type=float,
        default=_env_number("SWEEP_INTERVAL", DEFAULTS.sweep_interval, float),
        help="seconds between reaper sweeps",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=_env_number("DRAIN_TIMEOUT", DEFAULTS.drain_timeout, float),
        help="seconds a graceful stop waits for clients to close",
    )
    _add_history_options(serve)
    serve.add_argument(
        "--journal-size",
        type=int,
        default=int(_env_number("JOURNAL_SIZE", DEFAULTS.journal_messages)),
        help="messages kept while Redis is unreachable, appended once it is back",
    )
    serve.add_argument(
        "--journal-bytes",
        type=int,
        default=int(_env_number("JOURNAL_BYTES", DEFAULTS.journal_bytes)),
        help="body bytes of those messages",
    )
    serve.add_argument(
        "--redis-timeout",
        type=float,
        default=_env_number("REDIS_TIMEOUT", DEFAULTS.redis_timeout, float),
        help="seconds one Redis command may take before Redis counts as down",
    )
    serve.add_argument(
        "--redis-pool-size",
        type=int,
        default=int(_env_number("REDIS_POOL_SIZE", DEFAULTS.redis_pool_size)),
        help="most connections to Redis for the registry and logs (commands past it wait)",
    )
    serve.add_argument(
        "--redis-wait-replicas",
        type=int,
        default=int(_env_number("REDIS_WAIT_REPLICAS", DEFAULTS.redis_wait_replicas)),
        help="replicas that must have a room message before its RECEIPT (Redis WAIT; "
        "standalone and sentinel modes; docs/redis.md)",
    )
    serve.add_argument(
        "--redis-wait-timeout",
        type=int,
        default=int(_env_number("REDIS_WAIT_TIMEOUT_MS", DEFAULTS.redis_wait_timeout_ms)),
        help="most milliseconds one WAIT blocks before the message is acknowledged anyway",
    )
    serve.add_argument(
        "--web-root",
        default=os.environ.get("WEB_ROOT") or None,
        help="folder served at / (env WEB_ROOT; default: the web/ folder beside the package)",
    )
    _add_hygiene_options(serve)
    serve.add_argument(
        "--admin-token",
        default=os.environ.get("ADMIN_TOKEN") or None,
        help="Bearer token of POST /api/system/notifications (env ADMIN_TOKEN; unset: off)",
    )
    serve.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("UVLOOP", "1") not in ("0", "false", "no"),
        help="run on uvloop where it is installed (the default; env UVLOOP=0 or --no-uvloop: off)",
    )
    serve.add_argument(
        "--workers",
        default=os.environ.get("WORKERS", "1"),
        help="relay processes on this port, N or 'auto' (one per core); needs Redis",
    )
    serve.add_argument(
        "--listen-backlog",
        type=int,
        default=int(_env_number("LISTEN_BACKLOG", DEFAULTS.listen_backlog)),
        help="connections the kernel queues before the relay accepts them",
    )
    serve.add_argument(
        "--ws-ping-interval",
        type=float,
        default=_env_number("WS_PING_INTERVAL", DEFAULTS.ws_ping_interval, float),
        help="seconds between WebSocket pings (0: none; STOMP heart-beats find dead peers)",
    )
    serve.add_argument(
        "--worker-http-port",
        type=int,
        default=None,
        help="also serve HTTP (/metrics, /health) on this port, for this process only; "
        "with --workers, worker i uses this port + i",
    )
    _add_auth_options(serve)
    serve.add_argument(
        "--jwt-public-key",
        action="append",
        default=[p for p in os.environ.get("JWT_PUBLIC_KEY", "").split(",") if p],
        metavar="FILE",
        help="PEM public key (RSA or EC) for RS256/ES256 tokens; repeatable "
        "(env JWT_PUBLIC_KEY, comma-separated)",
    )
    serve.add_argument(
        "--jwks",
        default=os.environ.get("JWKS") or None,
        metavar="FILE_OR_URL",
        help="JSON Web Key Set (file or http(s) URL), keys chosen by kid, reloaded every "
        "--jwks-refresh s and on an unknown kid (env JWKS)",
    )
    serve.add_argument(
        "--jwks-refresh",
        type=float,
        default=_env_number("JWKS_REFRESH", DEFAULTS.jwks_refresh, float),
    )
    serve.add_argument(
        "--jwt-leeway",
        type=float,
        default=_env_number("JWT_LEEWAY", DEFAULTS.jwt_leeway, float),
        help="seconds of clock skew allowed on exp/nbf/iat",
    )
    serve.add_argument(
        "--acl",
        default=os.environ.get("ACL_FILE") or None,
        metavar="FILE",
        help="per-destination rules, TOML or YAML (env ACL_FILE); deny by default; "
        "needs authentication",
    )
    serve.add_argument(
        "--dev-tokens",
        action="store_true",
        default=os.environ.get("DEV_TOKENS", "") in ("1", "true", "yes"),
        help="DEVELOPMENT ONLY: GET /dev/token hands a token for any user to anyone",
    )
    serve.add_argument(
        "--frame-rate",
        type=float,
        default=_env_number("FRAME_RATE", DEFAULTS.frame_rate, float),
        help="frames a second one session may send (token bucket; 0: no limit)",
    )
    serve.add_argument(
        "--frame-burst",
        type=int,
        default=int(_env_number("FRAME_BURST", DEFAULTS.frame_burst)),
    )
    serve.add_argument(
        "--byte-rate",
        type=float,
        default=_env_number("BYTE_RATE", DEFAULTS.byte_rate, float),
        help="bytes a second one session may send (0: no limit)",
    )
    serve.add_argument(
        "--byte-burst",
        type=int,
        default=int(_env_number("BYTE_BURST", DEFAULTS.byte_burst)),
    )
    # set by the --workers supervisor for its children
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)

    inspect = commands.add_parser("inspect", help="print the cluster registry")
    _add_redis_options(inspect)
    inspect.add_argument(
        "what",
        choices=["servers", "sessions", "rooms", "room", "session", "keys"],
        help="keys: every key of the prefix with its type, TTL and content",
    )
    inspect.add_argument("id", nargs="?", help="room or session id")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")

    notify = commands.add_parser(
        "notify", help="send a SYSTEM notification to /topic/system (or one room) cluster-wide"
    )
    _add_redis_options(notify)
    notify.add_argument("message", help="the notification text")
    notify.add_argument("--room", help="send it into this room's /topic/room/{id} instead")
    notify.add_argument("--server", help="deliver only to the clients of this relay")
    _add_history_options(notify)

    token = commands.add_parser(
        "token",
        help="DEVELOPMENT: print a HS256 JWT for a user, signed with --jwt-secret",
    )
    _add_auth_options(token)
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
    _add_redis_options(kick)
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
    kick.add_argument(
        "--admin-token", default=os.environ.get("ADMIN_TOKEN") or None, help="for --api"
    )
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


def kick(args: argparse.Namespace) -> int:
    """Suspend (or lift) a user cluster-wide: through Redis, or one relay's API."""
    import json
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    from stomprelay.auth import check_name
    from stomprelay.errors import PolicyError
    from stomprelay.notify import show_ms

    try:
        user = check_name(args.user, "user", DEFAULTS.max_login)
        until = None if args.lift or not args.until else parse_until(args.until, time.time())
    except (PolicyError, ValueError) as exc:
        print(f"stomprelay kick: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2
    if args.api:
        request = urllib.request.Request(
            f"{args.api.rstrip('/')}/api/users/{urllib.parse.quote(user, safe='')}/kick",
            data=json.dumps({"until": until, "lift": bool(args.lift)}).encode(),
            headers={"content-type": "application/json"}
            | ({"authorization": f"Bearer {args.admin_token}"} if args.admin_token else {}),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                print(reply.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            print(f"stomprelay kick: HTTP {exc.code}: {exc.read()[:200]!r}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"stomprelay kick: {exc}", file=sys.stderr)
            return 1
        return 0
    if not args.redis_url:
        print("stomprelay kick: give --redis-url (or REDIS_URL), or --api", file=sys.stderr)
        return 2
    code = asyncio.run(_kick_redis(args, user, until))
    if code:
        return code
    if args.lift:
        print(f"lifted the suspension of {user}")
    elif until:
        moment = show_ms(until)
        print(f"ended the sessions of {user}; refused until {moment}")
    else:
        print(f"ended the sessions of {user}")
    return 0


async def _kick_redis(args: argparse.Namespace, user: str, until: int | None) -> int:
    from stomprelay.cluster.keys import Keys
    from stomprelay.cluster.redis_backend import RedisRegistry
    from stomprelay.errors import BackendUnavailable
    from stomprelay.notify import kick_command, operator_command

    keys = Keys(args.key_prefix)
    registry = RedisRegistry(args.redis_target, keys)
    try:
        command = operator_command(user, until, bool(args.lift))
        await registry.suspend(command, keys.control_channel, kick_command(command))
    except BackendUnavailable as exc:
        print(f"stomprelay kick: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        await registry.close()
    return 0


async def notify(args: argparse.Namespace) -> int:
    """Publish a SYSTEM event envelope (operators only; clients cannot SEND there)."""
    from redis.exceptions import RedisError

    from stomprelay.cluster.connect import make_client
    from stomprelay.cluster.keys import Keys
    from stomprelay.errors import PolicyError
    from stomprelay.notify import system_notification

    if not args.redis_url:
        print("stomprelay notify: give --redis-url (or REDIS_URL)", file=sys.stderr)
        return 2
    try:
        channel, envelope = system_notification(
            Keys(args.key_prefix), args.message, args.room or "", args.server or ""
        )
    except PolicyError as exc:
        print(f"stomprelay notify: {exc.detail}", file=sys.stderr)
        return 2
    if args.room and not args.server:
        # A room's SYSTEM event takes its place in the room's log (docs/history.md).
        from stomprelay.cluster.history import HistoryPolicy
        from stomprelay.cluster.redis_backend import RedisRegistry
        from stomprelay.errors import BackendUnavailable

        policy = HistoryPolicy.of(Settings(**_history_settings(args)))
        registry = RedisRegistry(args.redis_target, Keys(args.key_prefix), policy=policy)
        try:
            logged = await registry.log.append(f"room:{args.room}", channel, envelope, envelope.ts)
        except BackendUnavailable as exc:
            print(f"stomprelay notify: {exc}", file=sys.stderr)
            return 1
        finally:
            await registry.close()
        print(f"appended to the log of room {args.room} at offset {logged.offset}")
        return 0
    client = make_client(args.redis_target, decode=False)
    try:
        relays = await client.publish(channel, envelope.to_json())
    except (RedisError, OSError) as exc:
        print(f"stomprelay notify: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    print(f"published on {channel}: {relays} relay(s) listening")
    return 0


async def serve(args: argparse.Namespace) -> int:
    from stomprelay.cluster.keys import Keys
    from stomprelay.factory import build_relay
    from stomprelay.transport import RelayServer

    settings = Settings(
        heartbeat_send_ms=args.heartbeat_ms,
        heartbeat_receive_ms=args.heartbeat_ms,
        connect_timeout=args.connect_timeout,
        liveness_interval=args.liveness_interval,
        liveness_ttl=args.liveness_ttl,
        sweep_interval=args.sweep_interval,
        drain_timeout=args.drain_timeout,
        **_history_settings(args),
        journal_messages=args.journal_size,
        journal_bytes=args.journal_bytes,
        redis_timeout=args.redis_timeout,
        redis_pool_size=args.redis_pool_size,
        redis_wait_replicas=args.redis_wait_replicas,
        redis_wait_timeout_ms=args.redis_wait_timeout,
        listen_backlog=args.listen_backlog,
        ws_ping_interval=args.ws_ping_interval,
        **_hygiene_settings(args),
        frame_rate=args.frame_rate,
        frame_burst=args.frame_burst,
        byte_rate=args.byte_rate,
        byte_burst=args.byte_burst,
        jwt_leeway=args.jwt_leeway,
        jwks_refresh=args.jwks_refresh,
    )
    auth, acl = _access(args, settings)
    for name in ("journal_size", "journal_bytes"):
        if getattr(args, name) < 0:
            raise SystemExit(f"stomprelay: --{name.replace('_', '-')} must not be negative")
    if args.redis_wait_replicas < 0 or args.redis_wait_timeout < 0:
        raise SystemExit(
            "stomprelay: --redis-wait-replicas and --redis-wait-timeout must not be negative"
        )
    if args.redis_wait_replicas and args.redis_target is not None and args.redis_target.sharded:
        raise SystemExit(
            "stomprelay: --redis-wait-replicas is for standalone and sentinel modes: on a "
            "cluster, WAIT cannot follow a room's appends to its shard"
        )
    if args.redis_timeout <= 0 or args.redis_pool_size <= 0:
        raise SystemExit("stomprelay: --redis-timeout and --redis-pool-size must be positive")
    target = args.redis_target
    relay = build_relay(
        settings,
        server_id=args.server_id,
        target=target,
        keys=Keys(args.key_prefix),
        auth=auth,
        acl=acl,
        dev_tokens=args.dev_tokens,
    )
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
    if acl is not None and auth is None:
        raise SystemExit(
            "stomprelay: --acl needs authentication (--jwt-secret, --jwt-public-key or "
            "--jwks): without verified identities the rules would trust any login"
        )
    if args.dev_tokens and not secret:
        raise SystemExit("stomprelay: --dev-tokens needs --jwt-secret (it signs with it)")
    return auth, acl


def _redacted(url: str) -> str:
    """A Redis URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


async def inspect(args: argparse.Namespace) -> int:
    from stomprelay.cluster.keys import Keys
    from stomprelay.cluster.redis_backend import RedisRegistry
    from stomprelay.cluster.registry import room_json, server_json, session_json
    from stomprelay.errors import BackendUnavailable

    if not args.redis_url:
        print("stomprelay inspect: give --redis-url (or REDIS_URL)", file=sys.stderr)
        return 2
    registry = RedisRegistry(args.redis_target, Keys(args.key_prefix))
    rows: list[dict[str, object]]
    try:
        if args.what == "servers":
            rows = [
                {**server_json(r), "alive": alive, "sessions": n}
                for r, alive, n in await registry.servers()
            ]
        elif args.what == "sessions":
            rows = [session_json(r) for r in await registry.sessions()]
        elif args.what == "rooms":
            rows = [room_json(r) for r in await registry.rooms()]
        elif args.what == "keys":
            rows = [
                {"key": name, "type": kind, "ttl_ms": ttl, "content": content}
                for name, kind, ttl, content in await registry.dump()
            ]
        elif args.what == "room":
            if not args.id:
                print("stomprelay inspect room: give a room id", file=sys.stderr)
                return 2
            from stomprelay.cluster.history import log_json

            room = await registry.room(args.id)
            history = await registry.log.read(f"room:{args.id}", 0, 0)
            if room is None and not history.epoch:
                print(f"no room {args.id}", file=sys.stderr)
                return 1
            info = {
                **(room_json(room) if room else {"roomId": args.id, "participants": 0}),
                **{f"history.{k}": v for k, v in log_json(history).items()},
            }
            rows = [
                {**info, "sessionId": p.session_id, "username": p.username, "serverId": p.server_id}
                for p in await registry.participants(args.id)
            ] or [info]
        else:
            if not args.id:
                print("stomprelay inspect session: give a session id", file=sys.stderr)
                return 2
            record = await registry.session(args.id)
            if record is None:
                print(f"no session {args.id}", file=sys.stderr)
                return 1
            rows = [session_json(record)]
    except BackendUnavailable as exc:
        print(f"stomprelay inspect: {exc}", file=sys.stderr)
        return 1
    finally:
        await registry.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.what} ({len(rows)})")
    columns = list(rows[0]) if rows else []
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console().print(table)
    return 0


def _cell(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
