"""The relay's listeners: HTTP + WebSocket on one port, optional STOMP over TCP.

Both are plain ``loop.create_server`` listeners: the HTTP one's protocol is
:class:`~stomprelay.transport.http_protocol.HttpProtocol` (which hands a
WebSocket upgrade to a STOMP protocol), the TCP one's
:class:`~stomprelay.transport.stomp_protocol.StompProtocol`. The sockets reach
the relay only through :class:`~stomprelay.transport.app.Application`. The
listen backlog is a setting (``Settings.listen_backlog``), so thousands of
clients connecting at once queue in the kernel instead of being refused or
retried. ``reuse_port``
lets ``stomprelay serve --workers N`` run N relays on one port (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

from stomprelay.transport.api_http import ApiRoutes
from stomprelay.transport.app import Application
from stomprelay.transport.dashboard_http import DashboardRoutes
from stomprelay.transport.http import HttpApp
from stomprelay.transport.http_protocol import HttpProtocol
from stomprelay.transport.hub import Hub, SocketProtocol
from stomprelay.transport.stomp_protocol import StompProtocol
from stomprelay.transport.timers import Timers

log = logging.getLogger(__name__)


class RelayServer:
    """Listeners of one relay, and its graceful stop."""

    def __init__(
        self,
        relay: Application,
        host: str = "127.0.0.1",
        port: int = 8080,
        stomp_port: int | None = None,
        web_root: Path | None = None,
        admin_token: str | None = None,
        api_key: str | None = None,
        api_key_name: str = "server",
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        extra_port: int | None = None,
    ) -> None:
        self.relay = relay
        self.host = host
        self.port = port
        self.stomp_port = stomp_port
        self.reuse_port = reuse_port
        #: A listening socket made by a parent process (``--workers`` without SO_REUSEPORT).
        self._sock = sock
        #: A second HTTP/WebSocket port of this process alone (a worker's /metrics).
        self.extra_port = extra_port
        self._web_root = web_root
        self._admin_token = admin_token
        self._api_key = api_key
        self._api_key_name = api_key_name
        self.timers = Timers()
        self._hub: Hub | None = None
        self._servers: list[asyncio.Server] = []
        self._gone = asyncio.Event()

    @property
    def connections(self) -> set[SocketProtocol]:
        """Every open socket's protocol (an upgraded WebSocket's is a StompProtocol)."""
        return self._hub.connections if self._hub is not None else set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        relay = self.relay
        settings = relay.settings
        api = ApiRoutes(
            relay.api,
            settings,
            admin_token=self._admin_token,
            api_key=self._api_key,
            api_key_name=self._api_key_name,
        )
        http = HttpApp(
            relay.admin,
            relay,
            relay.sinks,
            self._web_root,
            self._admin_token,
            api,
            dashboard=DashboardRoutes(relay.dashboard, admin_token=bool(self._admin_token)),
        )
        hub = Hub(relay, self.timers, http)
        hub.on_gone = self._gone.set
        self._hub = hub
        if self._sock is not None:
            ws_server = await loop.create_server(
                lambda: HttpProtocol(hub), sock=self._sock, backlog=settings.listen_backlog
            )
        else:
            ws_server = await loop.create_server(
                lambda: HttpProtocol(hub),
                self.host,
                self.port,
                backlog=settings.listen_backlog,
                reuse_port=self.reuse_port or None,
            )
        self._servers.append(ws_server)
        if self.port == 0 or self._sock is not None:
            self.port = ws_server.sockets[0].getsockname()[1]
        # What other relays and operators see: a wildcard address names no host.
        wildcard = self.host in ("", "0.0.0.0", "::")
        relay.host = socket.gethostname() if wildcard else self.host
        relay.port = self.port
        await relay.start()
        if self.stomp_port is not None:
            tcp_server = await loop.create_server(
                lambda: StompProtocol(hub),
                self.host,
                self.stomp_port,
                backlog=settings.listen_backlog,
                reuse_port=self.reuse_port or None,
            )
            self._servers.append(tcp_server)
            if self.stomp_port == 0:
                self.stomp_port = tcp_server.sockets[0].getsockname()[1]
        if self.extra_port is not None:
            extra = await loop.create_server(
                lambda: HttpProtocol(hub),
                self.host,
                self.extra_port,
                backlog=settings.listen_backlog,
            )
            self._servers.append(extra)
        log.info(
            "relay %s listening on http://%s:%d (STOMP at /ws)%s",
            relay.server_id,
            self.host,
            self.port,
            f", STOMP/TCP on {self.stomp_port}" if self.stomp_port is not None else "",
        )

    async def stop(self) -> None:
        """Stop accepting, close every client with 1001, clean up; all within the drain time.

        Clients get most of ``drain_timeout`` to complete the close handshake;
        connections still open then are aborted (a frozen client cannot hold
        the stop up), and the relay's registry entries go last, which also
        covers any session whose own cleanup did not finish.
        """
        loop = asyncio.get_running_loop()
        drain = self.relay.settings.drain_timeout
        end = loop.time() + drain
        for server in self._servers:
            server.close()
        hub = self._hub
        start = loop.time()
        if hub is not None:
            for connection in list(hub.connections):
                connection.shutdown()
            await self._wait_gone(hub, loop.time() + drain * 0.6)
            log.debug(
                "stop: %d connections left after the close handshakes (%.2f s)",
                len(hub.connections),
                loop.time() - start,
            )
            for connection in list(hub.connections):
                connection.abort()
            await self._wait_gone(hub, end - drain * 0.2)
            log.debug(
                "stop: %d connections, %d sessions left after aborting (%.2f s)",
                len(hub.connections),
                len(self.relay.sinks),
                loop.time() - start,
            )
        # sessions still being cleaned up (LEAVE events) finish or are cancelled
        await self.relay.close()
        log.debug("stop: relay closed (%.2f s)", loop.time() - start)
        self.timers.close()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), max(end - loop.time(), 0.1))

    async def _wait_gone(self, hub: Hub, until: float) -> None:
        loop = asyncio.get_running_loop()
        relay = self.relay
        # connections open, or sessions still being detached (LEAVE events)
        while (hub.connections or relay.sinks) and loop.time() < until:
            self._gone.clear()
            try:
                await asyncio.wait_for(self._gone.wait(), max(until - loop.time(), 0.01))
            except TimeoutError:
                return
