"""The one table of options: every flag and variable kept, Settings filled from
it, checks naming the flag, and the README's table generated from it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from stomprelay.cli import build_parser
from stomprelay.options import (
    OPTIONS,
    OptionError,
    add_options,
    check,
    markdown,
    settings_fields,
    settings_of,
)
from stomprelay.settings import Limits, Settings

README = Path(__file__).resolve().parents[2] / "README.md"

#: Every option the parser had before the table (taken from that parser, with no
#: environment variable set): flag -> default, per command. The table may add
#: options; it may not drop, rename or change the default of one of these.
REDIS_OPTIONS: dict[str, Any] = {
    "--redis-url": None,
    "--redis-mode": "standalone",
    "--redis-sentinel": "",
    "--redis-master-name": "mymaster",
    "--key-prefix": "stomp",
}
HISTORY_OPTIONS: dict[str, Any] = {
    "--history-size": 200,
    "--history-ttl": 86400.0,
    "--history-min-age": 120.0,
    "--history-max-size": 0,
    "--history-max-topics": 1000,
    "--history-rooms-only": False,
}
AUTH_OPTIONS: dict[str, Any] = {
    "--jwt-secret": None,
    "--jwt-secret-file": None,
    "--jwt-audience": None,
    "--jwt-issuer": None,
}
FROZEN: dict[str, dict[str, Any]] = {
    "serve": {
        "--host": "0.0.0.0",
        "--port": 8080,
        "--stomp-port": None,
        "--server-id": None,
        "--log-level": "info",
        **REDIS_OPTIONS,
        "--heartbeat-ms": 1000,
        "--connect-timeout": 10.0,
        "--liveness-interval": 3.0,
        "--liveness-ttl": 10.0,
        "--sweep-interval": 5.0,
        "--drain-timeout": 10.0,
        **HISTORY_OPTIONS,
        "--journal-size": 10000,
        "--journal-bytes": 16777216,
        "--redis-timeout": 3.0,
        "--redis-pool-size": 64,
        "--redis-wait-replicas": 0,
        "--redis-wait-timeout": 500,
        "--web-root": None,
        "--allowed-origins": (),
        "--no-origin": "allow",
        "--trusted-proxies": (),
        "--trust-proxy": False,
        "--max-connections-per-ip": 1000,
        "--handshake-rate": 50.0,
        "--handshake-burst": 200,
        "--public-metrics": False,
        "--admin-token": None,
        "--uvloop": True,
        "--workers": "1",
        "--listen-backlog": 4096,
        "--ws-ping-interval": 0.0,
        "--worker-http-port": None,
        **AUTH_OPTIONS,
        "--jwt-public-key": [],
        "--jwks": None,
        "--jwks-refresh": 300.0,
        "--jwt-leeway": 30.0,
        "--acl": None,
        "--dev-tokens": False,
        "--frame-rate": 50.0,
        "--frame-burst": 200,
        "--byte-rate": 524288,
        "--byte-burst": 2097152,
        "--reuse-port": False,
        "--listen-fd": None,
    },
    "inspect": {
        **REDIS_OPTIONS,
        "--json": False,
    },
    "notify": {
        **REDIS_OPTIONS,
        "--room": None,
        "--server": None,
        **HISTORY_OPTIONS,
    },
    "token": {
        **AUTH_OPTIONS,
        "--name": None,
        "--ttl": 3600.0,
        "--role": [],
        "--claim": [],
    },
    "kick": {
        **REDIS_OPTIONS,
        "--until": None,
        "--lift": False,
        "--api": None,
        "--admin-token": None,
    },
}

#: The environment variables of the options before the table, with a value and
#: what the parsed option then holds.
FROZEN_ENV = [
    ("HOST", "127.0.0.2", "--host", "127.0.0.2"),
    ("PORT", "9000", "--port", 9000),
    ("STOMP_PORT", "61613", "--stomp-port", 61613),
    ("STOMP_PORT", "0", "--stomp-port", None),
    ("SERVER_ID", "r-9", "--server-id", "r-9"),
    ("LOG_LEVEL", "debug", "--log-level", "debug"),
    ("REDIS_URL", "redis://r:1/0", "--redis-url", "redis://r:1/0"),
    ("REDIS_MODE", "sentinel", "--redis-mode", "sentinel"),
    ("REDIS_SENTINELS", "s:26379", "--redis-sentinel", "s:26379"),
    ("REDIS_MASTER_NAME", "m2", "--redis-master-name", "m2"),
    ("KEY_PREFIX", "p", "--key-prefix", "p"),
    ("HEARTBEAT_MS", "750", "--heartbeat-ms", 750),
    ("CONNECT_TIMEOUT", "2.5", "--connect-timeout", 2.5),
    ("LIVENESS_INTERVAL", "1", "--liveness-interval", 1.0),
    ("LIVENESS_TTL", "4", "--liveness-ttl", 4.0),
    ("SWEEP_INTERVAL", "2", "--sweep-interval", 2.0),
    ("DRAIN_TIMEOUT", "3", "--drain-timeout", 3.0),
    ("HISTORY_SIZE", "1000", "--history-size", 1000),
    ("HISTORY_TTL", "600", "--history-ttl", 600.0),
    ("HISTORY_MIN_AGE", "5", "--history-min-age", 5.0),
    ("HISTORY_MAX_SIZE", "5000", "--history-max-size", 5000),
    ("HISTORY_MAX_TOPICS", "7", "--history-max-topics", 7),
    ("HISTORY_ROOMS_ONLY", "1", "--history-rooms-only", True),
    ("JOURNAL_SIZE", "5", "--journal-size", 5),
    ("JOURNAL_BYTES", "6", "--journal-bytes", 6),
    ("REDIS_TIMEOUT", "1.5", "--redis-timeout", 1.5),
    ("REDIS_POOL_SIZE", "8", "--redis-pool-size", 8),
    ("REDIS_WAIT_REPLICAS", "1", "--redis-wait-replicas", 1),
    ("REDIS_WAIT_TIMEOUT_MS", "250", "--redis-wait-timeout", 250),
    ("WEB_ROOT", "/srv/web", "--web-root", "/srv/web"),
    ("ALLOWED_ORIGINS", "https://a, https://b", "--allowed-origins", ("https://a", "https://b")),
    ("NO_ORIGIN", "refuse", "--no-origin", "refuse"),
    ("TRUSTED_PROXIES", "10.0.0.0/8", "--trusted-proxies", ("10.0.0.0/8",)),
    ("TRUST_PROXY", "1", "--trust-proxy", True),
    ("MAX_CONNECTIONS_PER_IP", "3", "--max-connections-per-ip", 3),
    ("HANDSHAKE_RATE", "2.5", "--handshake-rate", 2.5),
    ("HANDSHAKE_BURST", "4", "--handshake-burst", 4),
    ("PUBLIC_METRICS", "yes", "--public-metrics", True),
    ("ADMIN_TOKEN", "t", "--admin-token", "t"),
    ("UVLOOP", "0", "--uvloop", False),
    ("WORKERS", "auto", "--workers", "auto"),
    ("LISTEN_BACKLOG", "128", "--listen-backlog", 128),
    ("WS_PING_INTERVAL", "20", "--ws-ping-interval", 20.0),
    ("JWT_SECRET", "s", "--jwt-secret", "s"),
    ("JWT_SECRET_FILE", "/f", "--jwt-secret-file", "/f"),
    ("JWT_AUDIENCE", "aud", "--jwt-audience", "aud"),
    ("JWT_ISSUER", "iss", "--jwt-issuer", "iss"),
    ("JWT_PUBLIC_KEY", "a.pem,b.pem", "--jwt-public-key", ["a.pem", "b.pem"]),
    ("JWKS", "https://k", "--jwks", "https://k"),
    ("JWKS_REFRESH", "60", "--jwks-refresh", 60.0),
    ("JWT_LEEWAY", "5", "--jwt-leeway", 5.0),
    ("ACL_FILE", "acl.toml", "--acl", "acl.toml"),
    ("DEV_TOKENS", "true", "--dev-tokens", True),
    ("FRAME_RATE", "9", "--frame-rate", 9.0),
    ("FRAME_BURST", "10", "--frame-burst", 10),
    ("BYTE_RATE", "11", "--byte-rate", 11.0),
    ("BYTE_BURST", "12", "--byte-burst", 12),
]

#: The issue's protocol limits, each a flag named after its setting.
LIMITS = {
    "--max-frame-size": "limits.max_frame_size",
    "--max-headers": "limits.max_headers",
    "--max-header-line": "limits.max_header_line",
    "--max-command-line": "limits.max_command_line",
    "--max-message-size": "max_message_size",
    "--max-subscriptions": "max_subscriptions",
    "--max-transactions": "max_transactions",
    "--max-pending-acks": "max_pending_acks",
    "--send-queue-frames": "send_queue_frames",
    "--send-queue-bytes": "send_queue_bytes",
    "--send-timeout": "send_timeout",
}

REQUIRED = {"inspect": ["servers"], "notify": ["hello"], "token": ["--user", "u"], "kick": ["u"]}
ALL_VARIABLES = {o.env for o in OPTIONS if o.env} | {"REDIS_HOST", "REDIS_PORT"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def dest_of(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


@pytest.mark.parametrize("command", sorted(FROZEN))
def test_every_old_flag_keeps_its_default(clean_env: pytest.MonkeyPatch, command: str) -> None:
    args = vars(parse(command, *REQUIRED.get(command, [])))
    for flag, default in FROZEN[command].items():
        dest = dest_of(flag)
        assert dest in args, f"{command} lost {flag}"
        value = args[dest]
        assert value == default, f"{command} {flag}: {value!r}, was {default!r}"
        assert type(value) is type(default), f"{command} {flag}: {type(value)}"


@pytest.mark.parametrize(("variable", "text", "flag", "value"), FROZEN_ENV)
def test_every_old_variable_still_sets_its_option(
    clean_env: pytest.MonkeyPatch, variable: str, text: str, flag: str, value: object
) -> None:
    clean_env.setenv(variable, text)
    assert getattr(parse("serve"), dest_of(flag)) == value


def test_redis_host_and_port_stand_in_for_redis_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_HOST", "cache")
    clean_env.setenv("REDIS_PORT", "6380")
    for command in ("serve", "notify", "kick"):
        assert parse(command, *REQUIRED.get(command, [])).redis_url == "redis://cache:6380/0"


def test_a_bad_number_in_a_variable_names_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MAX_FRAME_SIZE", "big")
    with pytest.raises(OptionError, match="MAX_FRAME_SIZE"):
        build_parser()


def test_the_parsed_defaults_are_the_default_settings(clean_env: pytest.MonkeyPatch) -> None:
    assert settings_of(vars(parse("serve"))) == Settings()


def test_the_odd_names_reach_their_settings(clean_env: pytest.MonkeyPatch) -> None:
    settings = settings_of(
        vars(
            parse(
                "serve",
                "--journal-size=7",
                "--heartbeat-ms=750",
                "--redis-wait-timeout=9",
                "--trust-proxy",
                "--trusted-proxies=10.0.0.0/8",
                "--no-origin=refuse",
                "--handshake-rate=3",
                "--max-frame-size=1000",
                "--send-timeout=2.5",
            )
        )
    )
    assert settings.journal_messages == 7
    assert (settings.heartbeat_send_ms, settings.heartbeat_receive_ms) == (750, 750)
    assert settings.redis_wait_timeout_ms == 9
    assert settings.trusted_proxies == ("10.0.0.0/8", "127.0.0.0/8", "::1/128")
    assert settings.allow_no_origin is False
    assert settings.handshake_rate_per_ip == 3.0
    assert settings.limits == Limits(max_frame_size=1000)
    assert settings.send_timeout == 2.5


@pytest.mark.parametrize(("flag", "field"), sorted(LIMITS.items()))
def test_every_protocol_limit_is_a_flag(
    clean_env: pytest.MonkeyPatch, flag: str, field: str
) -> None:
    option = next(o for o in OPTIONS if o.flag == flag)
    assert option.fields == (field,)
    assert option.env == field.rpartition(".")[2].upper()
    assert field in settings_fields()
    with pytest.raises(OptionError, match=flag):
        check({option.dest: 0})


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--max-frame-size", "0"], "--max-frame-size"),
        (["--journal-size", "-1"], "--journal-size"),
        (["--redis-timeout", "0"], "--redis-timeout"),
        (["--handshake-burst", "0"], "--handshake-burst"),
        (["--history-ttl", "0"], "--history-ttl"),
        (["--history-size", "50", "--history-max-size", "20"], "--history-max-size"),
        (["--redis-mode", "cluster", "--redis-wait-replicas", "1"], "--redis-wait-replicas"),
        (["--acl", "rules.toml"], "--acl needs authentication"),
        (["--dev-tokens"], "--dev-tokens needs --jwt-secret"),
        (["--api-confirm-timeout", "10"], "--api-confirm-timeout must be shorter"),
        (["--api-confirm-timeout", "0"], "--api-confirm-timeout"),
        (["--trusted-proxies", "not-a-net"], "--trusted-proxies"),
    ],
)
def test_values_out_of_range_name_the_flag(
    clean_env: pytest.MonkeyPatch, argv: list[str], said: str
) -> None:
    with pytest.raises(OptionError, match=said):
        check(vars(parse("serve", *argv)))


def test_static_users_count_as_authentication_for_the_acl(clean_env: pytest.MonkeyPatch) -> None:
    check(vars(parse("serve", "--acl", "rules.toml", "--users", "users.txt")))
    clean_env.setenv("USERS_FILE", "users.txt")
    assert parse("serve").users == "users.txt"


def test_a_variable_outside_the_choices_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NO_ORIGIN", "maybe")
    with pytest.raises(OptionError, match="NO_ORIGIN"):
        check(vars(parse("serve")))


def test_notify_checks_only_its_own_options(clean_env: pytest.MonkeyPatch) -> None:
    values = vars(parse("notify", "hi", "--history-size", "1000"))
    assert settings_of(values).history_size == 1000
    with pytest.raises(OptionError, match="--history-min-age"):
        check(vars(parse("notify", "hi", "--history-min-age", "-1")))


def test_the_readme_table_is_the_generated_one() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| flag | env | default | meaning |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    assert "\n".join(lines[start:end]) + "\n" == markdown(), (
        "regenerate the table: python -m stomprelay.options --markdown"
    )


def test_readme_keeps_its_first_lines() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make run     # the relay and its web chat page" in text.split("## ")[0]
    assert "make test    # every check and test" in text.split("## ")[0]


def test_every_option_has_help_and_one_flag() -> None:
    flags = [o.flag for o in OPTIONS]
    assert len(flags) == len(set(flags))
    envs = [o.env for o in OPTIONS if o.env]
    assert len(envs) == len(set(envs))
    for option in OPTIONS:
        assert option.hidden or option.help, option.flag
        for name in option.fields:
            assert name in settings_fields(), (option.flag, name)


def test_add_options_reads_the_environment_it_is_given() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, ("serve",), {"MAX_HEADERS": "9"})
    assert parser.parse_args([]).max_headers == 9


def test_workers_pass_every_option_but_their_own() -> None:
    from stomprelay.transport.workers import worker_argv

    argv = ["--workers", "2", "--max-frame-size", "1024", "--server-id=x", "--no-uvloop"]
    argv += ["--worker-http-port", "9100", "--journal-size=5", "--trust-proxy"]
    assert worker_argv(argv) == [
        "--max-frame-size",
        "1024",
        "--no-uvloop",
        "--journal-size=5",
        "--trust-proxy",
    ]
