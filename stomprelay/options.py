"""One declaration per option: ``stomprelay``'s flags, environment variables,
their checks, :class:`~stomprelay.settings.Settings` and the README's table.

Each :class:`~stomprelay.flags.Option` names its flag, its environment variable, its type, the
:class:`Settings` field(s) it fills (whose default is the option's default, so
each default is written once, in ``settings.py``), its help and its bounds.
:func:`add_options` builds the argparse options of a command from it,
:func:`check` validates the parsed values (an out-of-range value stops the
start with a message naming the flag), :func:`settings_of` makes the
:class:`Settings`, and ``python -m stomprelay.options --markdown`` prints the
README's configuration table (a unit test keeps the two equal).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import Any

from stomprelay.flags import (
    AUTH,
    HISTORY,
    REDIS,
    SERVE,
    Option,
    OptionError,
    Rule,
    comma_list,
    limit,
    markdown_table,
    not_no,
    not_zero,
)
from stomprelay.options_integration import INTEGRATION_OPTIONS
from stomprelay.settings import Limits, Settings

__all__ = ["AUTH", "HISTORY", "OPTIONS", "REDIS", "SERVE", "Option", "OptionError"]

log = logging.getLogger(__name__)


def _check_networks(value: Iterable[str]) -> None:
    from stomprelay.transport.hygiene import parse_networks

    parse_networks(value)


def _check_origins(value: Iterable[str]) -> None:
    from stomprelay.transport.hygiene import OriginPolicy

    OriginPolicy(tuple(value))


def _check_sender(value: str) -> None:
    """An ``x-sender`` value: 1 to 64 printable characters (a header value)."""
    if not 1 <= len(value) <= 64 or not value.isprintable():
        raise ValueError("--api-key-name is 1 to 64 printable characters")


def _redis_url_default() -> str | None:
    """``REDIS_URL``, else ``REDIS_HOST``/``REDIS_PORT``; None means single-node."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    host = os.environ.get("REDIS_HOST")
    if host:
        port = Option("--redis-port", "", "REDIS_PORT", kind=int, default=6379)
        return f"redis://{host}:{port.env_default(os.environ)}/0"
    return None


#: Every option of ``stomprelay serve``, and the groups other commands share.
OPTIONS: tuple[Option, ...] = (
    Option("--host", "address to listen on", "HOST", default="0.0.0.0"),
    Option("--port", "HTTP + WebSocket port", "PORT", kind=int, default=8080, minimum=0),
    Option(
        "--stomp-port",
        "also serve plain STOMP over TCP on this port (0 in the variable: off)",
        "STOMP_PORT",
        kind=int,
        from_env=lambda text: int(text) or None,
        shown="off",
        minimum=0,
    ),
    Option(
        "--server-id",
        "this relay's id (x-server-id)",
        "SERVER_ID",
        shown="hostname + random suffix",
    ),
    Option("--log-level", "logging level", "LOG_LEVEL", default="info"),
    Option(
        "--redis-url",
        "the cluster's Redis (or REDIS_HOST/REDIS_PORT)",
        "REDIS_URL",
        groups=frozenset({REDIS}),
        shown="none: single node",
    ),
    Option(
        "--redis-mode",
        "standalone (one Redis), sentinel (a master found through Sentinel) or cluster "
        "(Redis Cluster; --redis-url lists seed nodes, comma-separated; docs/redis.md)",
        "REDIS_MODE",
        default="standalone",
        choices=("standalone", "sentinel", "cluster"),
        groups=frozenset({REDIS}),
    ),
    Option(
        "--redis-sentinel",
        "sentinel mode: the sentinels, host:port[,host:port...]; --redis-url then gives "
        "only the master's password, database and TLS",
        "REDIS_SENTINELS",
        default="",
        groups=frozenset({REDIS}),
        shown="none",
    ),
    Option(
        "--redis-master-name",
        "sentinel mode: the monitored master's name",
        "REDIS_MASTER_NAME",
        default="mymaster",
        groups=frozenset({REDIS}),
    ),
    Option(
        "--redis-wait-replicas",
        "replicas that must hold a room message before its RECEIPT (Redis WAIT; "
        "standalone and sentinel modes; docs/redis.md)",
        "REDIS_WAIT_REPLICAS",
        ("redis_wait_replicas",),
        int,
        minimum=0,
    ),
    Option(
        "--redis-wait-timeout",
        "most milliseconds one WAIT blocks before the message is acknowledged anyway",
        "REDIS_WAIT_TIMEOUT_MS",
        ("redis_wait_timeout_ms",),
        int,
        minimum=0,
    ),
    Option(
        "--key-prefix",
        "prefix of every Redis key and channel",
        "KEY_PREFIX",
        default="stomp",
        groups=frozenset({REDIS}),
    ),
    Option(
        "--heartbeat-ms",
        "shortest STOMP heart-beat interval the relay agrees to, both directions; a "
        "client asking for more gets what it asks (0: no heart-beats); clients silent "
        "for 3x are closed",
        "HEARTBEAT_MS",
        ("heartbeat_send_ms", "heartbeat_receive_ms"),
        int,
        minimum=0,
    ),
    Option(
        "--connect-timeout",
        "seconds a connection has to send CONNECT",
        "CONNECT_TIMEOUT",
        ("connect_timeout",),
        float,
        positive=True,
    ),
    Option(
        "--liveness-interval",
        "seconds between relay heartbeat-key refreshes",
        "LIVENESS_INTERVAL",
        ("liveness_interval",),
        float,
        positive=True,
    ),
    Option(
        "--liveness-ttl",
        "seconds after which a relay that stopped refreshing counts as dead",
        "LIVENESS_TTL",
        ("liveness_ttl",),
        float,
        positive=True,
    ),
    Option(
        "--sweep-interval",
        "seconds between reaper sweeps",
        "SWEEP_INTERVAL",
        ("sweep_interval",),
        float,
        positive=True,
    ),
    Option(
        "--drain-timeout",
        "seconds a graceful stop waits for clients to close",
        "DRAIN_TIMEOUT",
        ("drain_timeout",),
        float,
        minimum=0,
    ),
    Option(
        "--history-size",
        "messages kept per room/topic log (0: no history, no offsets)",
        "HISTORY_SIZE",
        ("history_size",),
        int,
        groups=frozenset({HISTORY}),
        minimum=0,
    ),
    Option(
        "--history-ttl",
        "seconds a log lives after its last message",
        "HISTORY_TTL",
        ("history_ttl",),
        float,
        groups=frozenset({HISTORY}),
        positive=True,
    ),
    Option(
        "--history-min-age",
        "seconds a message stays in its log even past --history-size (an outage's "
        "journals are kept until every relay read them)",
        "HISTORY_MIN_AGE",
        ("history_min_age",),
        float,
        groups=frozenset({HISTORY}),
        minimum=0,
    ),
    Option(
        "--history-max-size",
        "most messages a log holds whatever their age (0: 10 x --history-size)",
        "HISTORY_MAX_SIZE",
        ("history_max_size",),
        int,
        groups=frozenset({HISTORY}),
        minimum=0,
    ),
    Option(
        "--history-max-topics",
        "most logs of /topic/{name} destinations (rooms not counted)",
        "HISTORY_MAX_TOPICS",
        ("history_max_topics",),
        int,
        groups=frozenset({HISTORY}),
        minimum=0,
    ),
    Option(
        "--history-rooms-only",
        "log rooms only",
        "HISTORY_ROOMS_ONLY",
        ("history_rooms_only",),
        bool,
        from_env=not_zero,
        groups=frozenset({HISTORY}),
    ),
    Option(
        "--journal-size",
        "messages kept while Redis is unreachable, appended once it is back",
        "JOURNAL_SIZE",
        ("journal_messages",),
        int,
        minimum=0,
    ),
    Option(
        "--journal-bytes",
        "body bytes of those messages",
        "JOURNAL_BYTES",
        ("journal_bytes",),
        int,
        minimum=0,
    ),
    Option(
        "--redis-timeout",
        "seconds one Redis command may take before Redis counts as down",
        "REDIS_TIMEOUT",
        ("redis_timeout",),
        float,
        positive=True,
    ),
    Option(
        "--redis-pool-size",
        "most Redis connections for the registry and logs (commands past it wait for one)",
        "REDIS_POOL_SIZE",
        ("redis_pool_size",),
        int,
        positive=True,
    ),
    Option(
        "--admin-token",
        "Bearer token of /api/* and /metrics (and of the routes that act: notifications, "
        "kick); unset: they answer loopback clients only, and the acting routes are off",
        "ADMIN_TOKEN",
        shown="off",
    ),
    Option(
        "--api-key",
        "Bearer key of the server API (publish, history, users; docs/api.md) for "
        "back-ends: it opens those routes only; the admin token opens them too",
        "API_KEY",
        shown="off",
    ),
    Option(
        "--api-key-name",
        "x-sender of the messages the API key publishes (the admin token's: operator)",
        "API_KEY_NAME",
        default="server",
        validate=_check_sender,
    ),
    Option(
        "--public-metrics",
        "serve /metrics to anyone; the API still needs the token",
        "PUBLIC_METRICS",
        ("public_metrics",),
        bool,
    ),
    Option(
        "--allowed-origins",
        "Origins a WebSocket handshake may come from besides the relay's own, comma "
        "separated, * wildcards (https://*.example.com), null, or * for any; others get 403",
        "ALLOWED_ORIGINS",
        ("allowed_origins",),
        comma_list,
        validate=_check_origins,
        shown="none: same origin only",
    ),
    Option(
        "--no-origin",
        "a handshake without an Origin header (non-browser clients): allow or refuse",
        "NO_ORIGIN",
        ("allow_no_origin",),
        default="allow",
        choices=("allow", "refuse"),
        to_setting=lambda value: value == "allow",
    ),
    Option(
        "--trusted-proxies",
        "CIDR ranges of proxies whose X-Forwarded-For is believed, comma separated (the "
        "client is its rightmost address that is not one of them)",
        "TRUSTED_PROXIES",
        ("trusted_proxies",),
        comma_list,
        validate=_check_networks,
        shown="none",
    ),
    Option(
        "--trust-proxy",
        "deprecated: --trusted-proxies 127.0.0.0/8,::1/128",
        "TRUST_PROXY",
        kind=bool,
    ),
    Option(
        "--max-connections-per-ip",
        "open connections per client address, per relay (0: no cap); past it: 429, or "
        "ERROR over TCP",
        "MAX_CONNECTIONS_PER_IP",
        ("max_connections_per_ip",),
        int,
        minimum=0,
    ),
    Option(
        "--handshake-rate",
        "connection handshakes per second per client address, per relay (0: no limit); "
        "past it: 429 with Retry-After",
        "HANDSHAKE_RATE",
        ("handshake_rate_per_ip",),
        float,
        minimum=0,
    ),
    Option(
        "--handshake-burst",
        "handshakes one client address may make at once",
        "HANDSHAKE_BURST",
        ("handshake_burst_per_ip",),
        int,
        minimum=1,
    ),
    Option(
        "--jwt-secret",
        "HS256 secret: CONNECT then needs a JWT (passcode or Authorization: Bearer); "
        "prefer the variable or --jwt-secret-file to keep it out of ps",
        "JWT_SECRET",
        groups=frozenset({AUTH}),
        shown="off",
    ),
    Option(
        "--jwt-secret-file",
        "read the HS256 secret from this file",
        "JWT_SECRET_FILE",
        groups=frozenset({AUTH}),
        shown="off",
    ),
    Option(
        "--jwt-audience",
        "required aud claim",
        "JWT_AUDIENCE",
        groups=frozenset({AUTH}),
        shown="not checked",
    ),
    Option(
        "--jwt-issuer",
        "required iss claim",
        "JWT_ISSUER",
        groups=frozenset({AUTH}),
        shown="not checked",
    ),
    Option(
        "--jwt-public-key",
        "PEM public key (RSA or EC) for RS*/PS*/ES* tokens; repeatable (the variable: "
        "comma-separated)",
        "JWT_PUBLIC_KEY",
        default=[],
        repeat=True,
        metavar="FILE",
        shown="off",
    ),
    Option(
        "--jwks",
        "JSON Web Key Set (file or http(s) URL), keys chosen by kid, reloaded every "
        "--jwks-refresh s and on an unknown kid",
        "JWKS",
        metavar="FILE_OR_URL",
        shown="off",
    ),
    Option(
        "--jwks-refresh",
        "seconds between reloads of the --jwks keys",
        "JWKS_REFRESH",
        ("jwks_refresh",),
        float,
        positive=True,
    ),
    Option(
        "--jwt-leeway",
        "seconds of clock skew allowed on exp, nbf, iat",
        "JWT_LEEWAY",
        ("jwt_leeway",),
        float,
        minimum=0,
    ),
    Option(
        "--users",
        "static users: a file of name:hash lines (bcrypt; `stomprelay users hash` makes one); "
        "CONNECT login/passcode checked against it",
        "USERS_FILE",
        metavar="FILE",
        shown="off",
    ),
    Option(
        "--acl",
        "per-destination SUBSCRIBE/SEND rules, TOML or YAML; deny by default; needs authentication",
        "ACL_FILE",
        metavar="FILE",
        shown="none: all open",
    ),
    *INTEGRATION_OPTIONS,
    Option(
        "--dev-tokens",
        "DEVELOPMENT ONLY: GET /dev/token?user=NAME hands a token for any user to anyone",
        "DEV_TOKENS",
        kind=bool,
    ),
    Option(
        "--frame-rate",
        "frames a second one session may send (token bucket; 0: no limit); past it: "
        "ERROR rate limit exceeded",
        "FRAME_RATE",
        ("frame_rate",),
        float,
        minimum=0,
    ),
    Option(
        "--frame-burst",
        "frames one session may send at once",
        "FRAME_BURST",
        ("frame_burst",),
        int,
        minimum=0,
    ),
    Option(
        "--byte-rate",
        "bytes a second one session may send (0: no limit)",
        "BYTE_RATE",
        ("byte_rate",),
        float,
        minimum=0,
    ),
    Option(
        "--byte-burst",
        "bytes one session may send at once",
        "BYTE_BURST",
        ("byte_burst",),
        int,
        minimum=0,
    ),
    Option(
        "--web-root",
        "folder served at /",
        "WEB_ROOT",
        shown="the installed package's pages (a checkout: its web/)",
    ),
    Option(
        "--uvloop",
        "run on uvloop where it is installed (--no-uvloop: asyncio's own loop)",
        "UVLOOP",
        kind="toggle",
        default=True,
        from_env=not_no,
        shown="on where uvloop installs (Linux, macOS)",
    ),
    Option(
        "--workers",
        "relay processes on one port, N or 'auto' (one per core); each is a cluster "
        "member with its own server id; needs Redis",
        "WORKERS",
        default="1",
    ),
    Option(
        "--worker-http-port",
        "also serve this process's own HTTP (/metrics, /health) here; with --workers, "
        "worker i on this port + i",
        kind=int,
        shown="off",
    ),
    Option(
        "--listen-backlog",
        "connections the kernel queues before the relay accepts them",
        "LISTEN_BACKLOG",
        ("listen_backlog",),
        int,
        minimum=1,
    ),
    Option(
        "--ws-ping-interval",
        "seconds between WebSocket pings (0: none; STOMP heart-beats and TCP keepalive "
        "find dead peers already)",
        "WS_PING_INTERVAL",
        ("ws_ping_interval",),
        float,
        minimum=0,
    ),
    Option(
        "--dashboard-interval",
        "seconds between two samples of a relay for the /admin charts (15 minutes kept, "
        "at most 1800 samples)",
        "DASHBOARD_INTERVAL",
        ("dashboard_interval",),
        float,
        minimum=0.05,
    ),
    # protocol limits (docs/protocol.md): flag and variable named after the setting
    limit("limits.max_frame_size", "largest STOMP frame, in bytes (STOMP 1.2 Size Limits)"),
    limit("limits.max_headers", "most headers in one frame"),
    limit("limits.max_header_line", "longest header line, in bytes, before unescaping"),
    limit("limits.max_command_line", "longest command line, in bytes"),
    limit("max_message_size", "largest WebSocket message (it may carry several frames)"),
    limit("max_subscriptions", "most subscriptions one session may hold"),
    limit("max_transactions", "most transactions open at once in one session"),
    limit("max_transaction_frames", "most frames held in one transaction before COMMIT"),
    limit("max_transaction_bytes", "most body bytes held in a session's open transactions"),
    limit("max_pending_acks", "most unacknowledged MESSAGEs on one client-ack subscription"),
    limit("send_queue_frames", "outgoing frames queued for one client before it is too slow"),
    limit("send_queue_bytes", "outgoing bytes queued for one client before it is too slow"),
    limit(
        "send_timeout",
        "seconds a client's socket may take nothing before the client is dropped",
        positive=True,
    ),
    limit("inbox_frames", "frames read from one socket and not yet handled before reading stops"),
    limit(
        "publish_pause", "SENDs of one client not yet acknowledged by Redis before reading stops"
    ),
    limit(
        "publish_timeout",
        "seconds a publisher may be held up before ERROR Publish backlog",
        positive=True,
    ),
    limit(
        "handshake_timeout",
        "seconds an HTTP connection may take to send a request head (and keep-alive idle time)",
        positive=True,
    ),
    limit("max_request_head", "most bytes of an HTTP request head"),
    limit("max_request_body", "most bytes of an HTTP request body (an API publish's: more)"),
    limit("api_max_inflight", "server API requests that act in flight on one relay (429 past)"),
    limit("max_chat_message", "longest chat message (characters) of /app/room/..."),
    limit("max_username", "longest username /app/room/... accepts"),
    limit("max_rooms_per_session", "most rooms one session may be in at once"),
    limit(
        "max_server_subscriptions",
        "most server-side subscriptions one user may hold (POST /api/users/{user}/subscribe)",
    ),
    limit(
        "api_confirm_timeout",
        "seconds the server API waits for the relays holding a user's sessions to confirm",
        positive=True,
    ),
    limit("max_login", "longest CONNECT login (and identity from a token) and room display text"),
    limit("max_history_request", "most messages a SUBSCRIBE with x-history may ask for", 0),
    limit(
        "max_temp_queues",
        "most temporary queues one session holds (a SEND's reply-to /temp-queue/{name})",
    ),
    # set by the --workers supervisor for its children
    Option("--reuse-port", "", kind=bool, hidden=True),
    Option("--listen-fd", "", kind=int, hidden=True),
)

BY_FLAG = {option.flag: option for option in OPTIONS}


RULES: tuple[Rule, ...] = (
    Rule(
        ("history_size", "history_max_size"),
        lambda v: bool(v["history_max_size"]) and v["history_max_size"] < v["history_size"],
        "--history-max-size must be 0 (ten times --history-size) or at least --history-size",
    ),
    Rule(
        ("redis_wait_replicas", "redis_mode"),
        lambda v: bool(v["redis_wait_replicas"]) and v["redis_mode"] == "cluster",
        "--redis-wait-replicas is for standalone and sentinel modes: on a cluster, WAIT "
        "cannot follow a room's appends to its shard",
    ),
    Rule(
        ("acl", "jwt_secret", "jwt_secret_file", "jwt_public_key", "jwks"),
        lambda v: (
            bool(v["acl"])
            and not (v["jwt_secret"] or v["jwt_secret_file"] or v["jwt_public_key"] or v["jwks"])
            and not (v.get("auth_hook_url") and "connect" in v.get("auth_hook_actions", ()))
            and not v.get("users")
        ),
        "--acl needs authentication (--jwt-secret, --jwt-public-key, --jwks, --users, or an "
        "--auth-hook-url asked about connect): without verified identities the rules "
        "would trust any login",
    ),
    Rule(
        ("dev_tokens", "jwt_secret", "jwt_secret_file"),
        lambda v: bool(v["dev_tokens"]) and not (v["jwt_secret"] or v["jwt_secret_file"]),
        "--dev-tokens needs --jwt-secret (it signs with it)",
    ),
    Rule(
        ("api_confirm_timeout", "handshake_timeout"),
        lambda v: v["api_confirm_timeout"] >= v["handshake_timeout"],
        "--api-confirm-timeout must be shorter than --handshake-timeout (an HTTP request "
        "must be answered within it)",
    ),
)


def add_options(
    parser: argparse.ArgumentParser,
    groups: Iterable[str],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Add the options of ``groups`` to ``parser``; OptionError for a bad variable."""
    wanted = set(groups)
    env = os.environ if environ is None else environ
    for option in OPTIONS:
        if option.groups & wanted:
            option.add_to(parser, env)
    if REDIS in wanted:
        # REDIS_HOST/REDIS_PORT stand in for REDIS_URL
        parser.set_defaults(redis_url=_redis_url_default())


def check(values: Mapping[str, Any]) -> None:
    """Every option present in ``values`` within its bounds, every rule kept;
    OptionError (naming the flag) otherwise."""
    for option in OPTIONS:
        if option.dest in values:
            problem = option.problem(values[option.dest])
            if problem is not None:
                raise OptionError(problem)
    for rule in RULES:
        if all(name in values for name in rule.needs) and rule.refuses(values):
            raise OptionError(rule.message)


def settings_of(values: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """The :class:`Settings` the (checked) ``values`` ask for; fields no option in
    ``values`` sets keep ``base``'s values."""
    check(values)
    chosen: dict[str, Any] = {}
    for option in OPTIONS:
        if option.dest not in values or not option.fields:
            continue
        value = values[option.dest]
        if option.to_setting is not None:
            value = option.to_setting(value)
        elif isinstance(value, list):
            value = tuple(value)
        for name in option.fields:
            chosen[name] = value
    if values.get("trust_proxy"):
        from stomprelay.transport.hygiene import LOOPBACK_PROXIES

        log.warning("--trust-proxy is deprecated: use --trusted-proxies 127.0.0.0/8,::1/128")
        proxies = tuple(chosen.get("trusted_proxies", ()))
        chosen["trusted_proxies"] = proxies + tuple(p for p in LOOPBACK_PROXIES if p not in proxies)
    settings = base or Settings()
    limits = {k.partition(".")[2]: v for k, v in chosen.items() if k.startswith("limits.")}
    top = {k: v for k, v in chosen.items() if not k.startswith("limits.")}
    return replace(settings, limits=replace(settings.limits, **limits), **top)


def markdown() -> str:
    """The README's configuration table (``python -m stomprelay.options --markdown``)."""
    return markdown_table(OPTIONS)


def settings_fields() -> set[str]:
    """Every Settings field name (``limits.x`` for the parser's)."""
    top = {f.name for f in fields(Settings) if f.name != "limits"}
    return top | {f"limits.{f.name}" for f in fields(Limits)}


def main(argv: list[str] | None = None) -> int:
    """``python -m stomprelay.options --markdown``: print the README's table."""
    args = argv if argv is not None else sys.argv[1:]
    if args != ["--markdown"]:
        print("usage: python -m stomprelay.options --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
