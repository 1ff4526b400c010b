"""Command line: ``stomprelay serve`` (and ``inspect`` for the registry)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from stomprelay import __version__
from stomprelay.relay import Relay
from stomprelay.server import RelayServer
from stomprelay.settings import Settings

DEFAULTS = Settings()

log = logging.getLogger("stomprelay")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"stomprelay: {name} must be an integer, not {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stomprelay", description="STOMP over WebSocket relay, clustered over Redis."
    )
    parser.add_argument("--version", action="version", version=f"stomprelay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a relay")
    serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=_env_int("PORT", 8080))
    serve.add_argument(
        "--stomp-port",
        type=int,
        default=(os.environ.get("STOMP_PORT") and _env_int("STOMP_PORT", 0)) or None,
        help="also serve plain STOMP over TCP on this port (off by default)",
    )
    serve.add_argument("--server-id", default=os.environ.get("SERVER_ID") or None)
    serve.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    serve.add_argument(
        "--heartbeat-ms",
        type=int,
        default=_env_int("HEARTBEAT_MS", DEFAULTS.heartbeat_send_ms),
        help="heart-beat the relay offers, both directions (0: none)",
    )
    serve.add_argument(
        "--connect-timeout",
        type=float,
        default=float(os.environ.get("CONNECT_TIMEOUT", DEFAULTS.connect_timeout)),
    )
    return parser


async def serve(args: argparse.Namespace) -> int:
    settings = Settings(
        heartbeat_send_ms=args.heartbeat_ms,
        heartbeat_receive_ms=args.heartbeat_ms,
        connect_timeout=args.connect_timeout,
    )
    relay = Relay(settings=settings, server_id=args.server_id)
    server = RelayServer(relay, host=args.host, port=args.port, stomp_port=args.stomp_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    print(
        f"stomprelay {__version__} ({relay.server_id}) on http://{args.host}:{server.port}/ "
        f"- STOMP at ws://{args.host}:{server.port}/ws",
        flush=True,
    )
    await stop.wait()
    log.info("stopping: closing %d connections", len(server.connections))
    await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper() if hasattr(args, "log_level") else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        return asyncio.run(serve(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
