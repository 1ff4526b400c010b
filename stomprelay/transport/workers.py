"""``stomprelay serve --workers N``: N relay processes on one port, supervised.

Each worker is a whole relay (``stomprelay serve`` as a child process) with
its own server id, registered in the Redis cluster like any relay; the kernel
spreads new connections over them. On Linux every worker binds the port
itself with SO_REUSEPORT; elsewhere the supervisor binds it once and each
worker inherits the listening socket. A worker that dies is started again
under a new server id, and the one that died is reaped by the cluster like
any dead relay. SIGTERM or SIGINT stops every worker gracefully.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: Seconds between checks of the workers, and the least time between restarts of one.
POLL = 0.2
RESTART_BACKOFF = 1.0


def worker_count(value: str) -> int:
    """``N`` or ``auto`` (the number of cores)."""
    if value == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        raise SystemExit(f"stomprelay: --workers is a number or 'auto', not {value!r}") from None
    if count < 1:
        raise SystemExit("stomprelay: --workers must be at least 1")
    return count


#: Options the supervisor sets per worker, or that only it reads.
PER_WORKER = ("--workers", "--server-id", "--worker-http-port")


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The serve arguments without the :data:`PER_WORKER` options."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in PER_WORKER:
            skip = True
            continue
        if arg.startswith(tuple(f"{name}=" for name in PER_WORKER)):
            continue
        out.append(arg)
    return out


class Supervisor:
    """Runs ``count`` ``stomprelay serve`` children on one port and keeps them
    running: each gets the parent's arguments (every option of
    :mod:`stomprelay.options`, the environment inherited) minus
    :data:`PER_WORKER`, and its own server id."""

    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        host: str,
        port: int,
        base_id: str | None,
        drain_timeout: float,
        http_port: int | None = None,
    ) -> None:
        self.count = count
        #: Worker i also serves its own /metrics and /health on http_port + i.
        self.http_port = http_port
        self.argv = worker_argv(argv)
        self.host = host
        self.port = port
        self.base_id = base_id or f"{socket.gethostname()[:32]}-{secrets.token_hex(2)}"
        self.drain_timeout = drain_timeout
        self.reuse_port = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")
        self._sock: socket.socket | None = None
        self._workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self._generation = [0] * count
        self._started_at = [0.0] * count
        self._stopping = False

    def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(4096)
        sock.set_inheritable(True)
        self._sock = sock

    def _start(self, index: int) -> None:
        self._generation[index] += 1
        server_id = f"{self.base_id}-w{index}.{self._generation[index]}"
        command = [sys.executable, "-m", "stomprelay", "serve", *self.argv]
        command += ["--server-id", server_id]
        if self.http_port is not None:
            command += ["--worker-http-port", str(self.http_port + index)]
        pass_fds: tuple[int, ...] = ()
        if self.reuse_port:
            command.append("--reuse-port")
        else:
            assert self._sock is not None
            command += ["--listen-fd", str(self._sock.fileno())]
            pass_fds = (self._sock.fileno(),)
        worker = subprocess.Popen(command, pass_fds=pass_fds)
        self._workers[index] = worker
        self._started_at[index] = time.monotonic()
        log.info("worker %d started as %s (pid %d)", index, server_id, worker.pid)

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        if not self.reuse_port:
            self._listen()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.count):
            self._start(index)
        print(
            f"stomprelay supervisor: {self.count} workers on {self.host}:{self.port} "
            f"({'SO_REUSEPORT' if self.reuse_port else 'one inherited socket'})",
            flush=True,
        )
        while not self._stopping:
            time.sleep(POLL)
            for index, worker in enumerate(self._workers):
                if worker is None or worker.poll() is None or self._stopping:
                    continue
                log.warning(
                    "worker %d (pid %d) exited with %s", index, worker.pid, worker.returncode
                )
                wait = RESTART_BACKOFF - (time.monotonic() - self._started_at[index])
                if wait > 0:
                    time.sleep(wait)
                self._start(index)
        return self._shutdown()

    def _shutdown(self) -> int:
        for worker in self._workers:
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout + 5
        for worker in self._workers:
            if worker is None:
                continue
            try:
                worker.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if self._sock is not None:
            self._sock.close()
        return 0
