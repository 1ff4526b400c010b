"""What every socket of one relay shares, and what every socket's protocol does first.

:class:`Hub` holds the application, the timers, the HTTP routes, the
connection hygiene (``hygiene.py``) and the once-per-turn writer: the router
queues frames in a session and calls ``flush``, which only marks the
connection; once per event-loop turn the hub writes every marked connection's
frames. :class:`SocketProtocol` is the part of both protocols that is about
the socket itself: its options, who the client is, its timer entry, and the
hand-over from the HTTP protocol to the STOMP one on a WebSocket upgrade (one
protocol object per socket at any time).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from stomprelay.transport.app import Application
from stomprelay.transport.hygiene import (
    ORIGIN_REFUSED,
    AddressLimits,
    OriginPolicy,
    Refusal,
    TrustedProxies,
    parse_address,
)

if TYPE_CHECKING:
    from stomprelay.transport.http import HttpApp
    from stomprelay.transport.timers import Timers

log = logging.getLogger(__name__)

#: The transport's write buffer high-water mark: past it, frames wait in the connection.
WRITE_HIGH_WATER = 256 * 1024
#: Seconds a closing socket gets before it is aborted.
CLOSE_TIMEOUT = 2.0
#: Writer turns between two collections of the garbage collector's young generation.
YOUNG_EVERY = 8


def collect_young() -> None:
    """Collect the garbage collector's young generations now, a little at a time.

    CPython starts a collection when allocations outnumber deallocations by 700;
    under a flood that keeps messages (a room's log, the MESSAGE cache) old
    objects die as fast as young ones are made, the count stays low, and tens of
    thousands of young objects pile up for one collection of several ms: every
    room's messages wait for it. Collected every few writer turns, the young
    generation stays small and each pause short (the oldest generation is left to
    the automatic collections)."""
    if gc.isenabled():
        gc.collect(1 if gc.get_count()[1] >= gc.get_threshold()[1] else 0)


class Writer(Protocol):
    """What the hub writes once per turn: a STOMP connection with frames queued."""

    def write_now(self) -> None: ...


class Hub:
    """What every connection of one listener shares: the application, the
    timers, the HTTP routes, the hygiene checks and the once-per-turn writer."""

    def __init__(self, app: Application, timers: Timers, http: HttpApp) -> None:
        self.app = app
        settings = self.settings = app.settings
        self.metrics = app.metrics
        self.timers = timers
        self.http = http
        #: Connection hygiene (hygiene.py): proxies believed, Origins let in, per-address limits.
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.origins = OriginPolicy(settings.allowed_origins, settings.allow_no_origin)
        self.limits = AddressLimits(
            settings.max_connections_per_ip,
            settings.handshake_rate_per_ip,
            settings.handshake_burst_per_ip,
        )
        #: The protocol of every open socket (one each: HTTP, or STOMP once upgraded).
        self.connections: set[SocketProtocol] = set()
        self._dirty: list[Writer] = []
        self._scheduled = False
        self._turns = 0
        #: Writer turns so far: a connection written in one of the last few is busy.
        self.turn = 0
        self._loop = asyncio.get_event_loop()
        #: Called once a connection is gone (the server waits on it while stopping).
        self.on_gone: Callable[[], None] | None = None
        self._resumed = asyncio.Event()

    def wake_publishers(self) -> None:
        """A subscriber's socket took its backlog (or it went): held-back publishers look again."""
        resumed, self._resumed = self._resumed, asyncio.Event()
        resumed.set()

    async def resumed(self) -> None:
        await self._resumed.wait()

    def mark(self, connection: Writer) -> None:
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._write_all)

    def _write_all(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self.turn += 1
        for connection in dirty:
            connection.write_now()
        self._turns += 1
        if self._turns >= YOUNG_EVERY:
            self._turns = 0
            collect_young()

    def gone(self) -> None:
        """A connection is gone (closed, and its session detached)."""
        if self.on_gone is not None:
            self.on_gone()

    def refused(self, refusal: Refusal, client: str, origin: str | None = None) -> None:
        """Count a turned-away connection; log the first of a run from one address
        (a flood is one line, and the metric), and every Origin refusal (a page the
        operator may have meant to allow names itself there)."""
        self.metrics.refused_connections.labels(refusal.reason).inc()
        if refusal is ORIGIN_REFUSED:
            log.info("handshake from %s refused: Origin %r is not allowed", client, origin)
        elif refusal.first:
            log.info("connections from %s refused: %s", client, refusal.text.strip())
        else:
            log.debug("connection from %s refused: %s", client, refusal.text.strip())


class SocketProtocol(asyncio.Protocol, metaclass=abc.ABCMeta):
    """The socket side every protocol here shares: options, the client's address,
    the timer entry, closing with a deadline, and handing the socket over."""

    __slots__ = (
        "__weakref__",
        "_deadline",
        "_token",
        "client",
        "hub",
        "peer",
        "remote",
        "transport",
    )

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        #: Who the client is, for the registry and the API: the socket's peer
        #: (``ip:port``), or the address a trusted proxy forwarded (``ip``).
        self.remote = ""
        #: The client's address alone: what per-address limits count and the API checks.
        self.client = ""
        #: The socket's peer address (a trusted proxy's, behind one).
        self.peer = ""
        self._token = 0
        #: When the socket is aborted (a handshake, HTTP or closing timeout), if set.
        self._deadline: float | None = None

    def _setup(self, transport: asyncio.BaseTransport) -> asyncio.Transport:
        """A new socket: its options and its peer; counted among the hub's connections."""
        # uvloop's transports implement asyncio.Transport without subclassing it
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        hub = self.hub
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and hub.settings.tcp_keepalive:
            with contextlib.suppress(OSError):
                # dead peers that negotiated no heart-beat are still found
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if hasattr(socket, "TCP_KEEPIDLE"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            address = parse_address(str(peer[0]))
            self.peer = self.client = str(address) if address is not None else str(peer[0])
            shown = f"[{self.peer}]" if ":" in self.peer else self.peer
            self.remote = f"{shown}:{peer[1]}"
        hub.connections.add(self)
        return transport

    def _take_over(self, previous: SocketProtocol) -> asyncio.Transport:
        """The socket ``previous`` served is this protocol's now (a WebSocket upgrade):
        the caller has already made it the transport's protocol."""
        transport = previous.transport
        assert transport is not None
        hub = self.hub
        self.transport = transport
        self.remote, self.client, self.peer = previous.remote, previous.client, previous.peer
        previous.transport = None
        hub.connections.discard(previous)
        hub.timers.remove(previous._token)
        hub.connections.add(self)
        self._token = hub.timers.add(self)
        return transport

    def _forget(self) -> None:
        """The socket is gone: out of the hub's connections and timers."""
        self.hub.connections.discard(self)
        self.hub.timers.remove(self._token)
        self.transport = None

    def client_of(self, forwarded: list[str]) -> str:
        """The client's address given a request's ``X-Forwarded-For`` values (believed
        only from a trusted proxy)."""
        return self.hub.proxies.client(self.peer, forwarded) if self.peer else self.client

    def _abort_after(self, seconds: float) -> None:
        """Abort the socket if it is still open ``seconds`` from now."""
        self._deadline = time.monotonic() + seconds
        self.hub.timers.update(self._token)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Server stopping: close this socket once what it owes the client is sent."""

    # Timed (timers.py): subclasses say when, and what happens then.
    @abc.abstractmethod
    def deadline(self) -> float | None:
        """When :meth:`on_deadline` is next due (the handshake, a heart-beat, a close)."""

    @abc.abstractmethod
    def on_deadline(self, now: float) -> None:
        """The deadline came: act on it (refuse, send a heart-beat, abort)."""
