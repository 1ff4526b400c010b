#!/usr/bin/env python3
"""Render ``deploy/nginx.conf.template`` into an nginx configuration.

The docker-compose deployment and the end-to-end tests use the same template, so the
proxy the tests drive is the proxy that ships. Placeholders are ``${NAME}`` with an
upper-case name; nginx's own variables (``$host``, ``$http_upgrade``) are lower case and
are left alone, which is why this is not ``string.Template`` or plain ``envsubst``.

    python deploy/render_nginx.py            # rewrite deploy/nginx.conf for compose
    python deploy/render_nginx.py --check    # exit 1 if deploy/nginx.conf is stale
    python deploy/render_nginx.py --listen 127.0.0.1:8080 \\
        --upstream 127.0.0.1:8081 --upstream 127.0.0.1:8082 --prefix /tmp/stomprelay-nginx
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf.template"
RENDERED = HERE / "nginx.conf"

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")

#: What docker-compose.yml runs: the two relays by service name, logs to the container's
#: stdout/stderr, the official nginx image's pid file and cache directory.
COMPOSE_LISTEN = "80"
COMPOSE_UPSTREAMS = ("relay-1:8080", "relay-2:8080")
COMPOSE_PATHS = {
    "PID_FILE": "/var/run/nginx.pid",
    "ERROR_LOG": "stderr",
    "ACCESS_LOG": "/dev/stdout",
    "TEMP_DIR": "/var/cache/nginx",
}

HEADER = (
    "# GENERATED from deploy/nginx.conf.template by deploy/render_nginx.py; do not edit.\n"
    "# Change the template, then run: python deploy/render_nginx.py\n\n"
)


def upstream_lines(servers: Sequence[str], indent: str = " " * 8) -> str:
    """``server host:port ...;`` lines for the upstream block (first line unindented)."""
    if not servers:
        raise ValueError("at least one upstream server is needed")
    lines = [f"server {server} max_fails=1 fail_timeout=5s;" for server in servers]
    return f"\n{indent}".join(lines)


def render_text(template: str, values: Mapping[str, str]) -> str:
    """Fill every ``${NAME}``; a placeholder without a value is an error, as is a spare value."""
    missing = sorted({m.group(1) for m in PLACEHOLDER.finditer(template)} - set(values))
    if missing:
        raise KeyError(f"no value for placeholder(s): {', '.join(missing)}")
    unused = sorted(set(values) - {m.group(1) for m in PLACEHOLDER.finditer(template)})
    if unused:
        raise KeyError(f"the template has no placeholder(s): {', '.join(unused)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def render(
    listen: str,
    upstreams: Sequence[str],
    *,
    pid_file: str,
    error_log: str,
    access_log: str,
    temp_dir: str,
    template: str | None = None,
) -> str:
    """The configuration text for one deployment."""
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    body = render_text(
        text,
        {
            "LISTEN": listen,
            "UPSTREAM_SERVERS": upstream_lines(upstreams),
            "PID_FILE": pid_file,
            "ERROR_LOG": error_log,
            "ACCESS_LOG": access_log,
            "TEMP_DIR": temp_dir,
        },
    )
    return HEADER + body


def render_compose() -> str:
    """What ``deploy/nginx.conf`` (mounted by docker-compose.yml) must contain."""
    return render(
        COMPOSE_LISTEN,
        COMPOSE_UPSTREAMS,
        pid_file=COMPOSE_PATHS["PID_FILE"],
        error_log=COMPOSE_PATHS["ERROR_LOG"],
        access_log=COMPOSE_PATHS["ACCESS_LOG"],
        temp_dir=COMPOSE_PATHS["TEMP_DIR"],
    )


def render_local(listen: str, upstreams: Sequence[str], prefix: Path) -> str:
    """A configuration whose pid file, logs and temp files all live under ``prefix``."""
    prefix = prefix.resolve()
    return render(
        listen,
        upstreams,
        pid_file=str(prefix / "nginx.pid"),
        error_log=str(prefix / "error.log"),
        access_log=str(prefix / "access.log"),
        temp_dir=str(prefix / "temp"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if deploy/nginx.conf is stale")
    parser.add_argument("--listen", help="listen address (default: the compose values)")
    parser.add_argument("--upstream", action="append", help="relay host:port (repeat)")
    parser.add_argument("--prefix", type=Path, help="directory for pid, logs and temp files")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where to write (default: deploy/nginx.conf, or PREFIX/nginx.conf)",
    )
    args = parser.parse_args(argv)

    local = args.listen or args.upstream or args.prefix
    if local:
        if not (args.listen and args.upstream and args.prefix):
            parser.error("--listen, --upstream and --prefix go together")
        text = render_local(args.listen, args.upstream, args.prefix)
        if not args.check:
            (args.prefix / "temp").mkdir(parents=True, exist_ok=True)
    else:
        text = render_compose()
    output = args.output or (args.prefix / "nginx.conf" if local else RENDERED)

    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            print(f"{output} is stale: run python deploy/render_nginx.py", file=sys.stderr)
            return 1
        return 0
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
