"""The relay application: turns session events into routing and cluster work.

The transport (``server.py``) feeds bytes to a :class:`ServerSession` and hands
the resulting events to :meth:`Relay.handle`, in order, one connection at a
time; this module decides what each event means for the router and the cluster.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time

from stomprelay import __version__
from stomprelay.cluster.base import Bus
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.memory import MemoryBus
from stomprelay.errors import PeerError, PolicyError
from stomprelay.metrics import Metrics
from stomprelay.router import Route, Router, Sink, channels_for, parse_destination
from stomprelay.settings import Settings
from stomprelay.stomp.session import (
    Connected,
    DisconnectRequested,
    Event,
    MessageSent,
    ReceiptDue,
    ServerSession,
    Subscribed,
    Unsubscribed,
)

log = logging.getLogger(__name__)

SERVER_NAME = f"stomprelay/{__version__}"


def default_server_id() -> str:
    """Hostname plus a short random suffix, so restarted relays never collide."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:40] or 'relay'}-{secrets.token_hex(3)}"


class Relay:
    def __init__(
        self,
        settings: Settings | None = None,
        server_id: str | None = None,
        bus: Bus | None = None,
        keys: Keys | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.server_id = server_id or default_server_id()
        self.keys = keys or Keys()
        self.bus: Bus = bus or MemoryBus()
        self.router = Router(self.bus, self.keys, self.server_id)
        self.metrics = Metrics()
        self.sinks: dict[str, Sink] = {}
        self.started_at = time.time()

    async def start(self) -> None:
        await self.bus.start(self.router.dispatch)

    async def close(self) -> None:
        await self.bus.close()

    def new_session(self) -> ServerSession:
        return ServerSession(
            secrets.token_hex(8),
            self.server_id,
            time.monotonic(),
            self.settings,
            SERVER_NAME,
        )

    def attach(self, sink: Sink) -> None:
        self.sinks[sink.session.session_id] = sink
        self.metrics.connections.inc()

    async def detach(self, sink: Sink) -> None:
        """Forget a closed connection: drop its subscriptions everywhere."""
        session = sink.session
        if self.sinks.pop(session.session_id, None) is None:
            return
        self.metrics.connections.dec()
        for subscription in list(session.subscriptions.values()):
            await self.router.unsubscribe(sink, subscription)
        session.subscriptions.clear()

    async def handle(self, sink: Sink, events: list[Event]) -> None:
        """Act on a connection's events in order; refusals become ERROR frames."""
        session = sink.session
        for event in events:
            if session.closed:
                break
            try:
                await self._handle(sink, event)
            except PeerError as exc:
                self.metrics.errors.labels(exc.message).inc()
                session.fail(exc, _receipt_of(event))
        sink.flush()

    async def _handle(self, sink: Sink, event: Event) -> None:
        session = sink.session
        now = time.monotonic()
        if isinstance(event, MessageSent):
            await self._on_send(sink, event)
        elif isinstance(event, Subscribed):
            route = parse_destination(event.subscription.destination)
            if route.kind == "app":
                raise PolicyError(
                    "Unknown destination",
                    f"{event.subscription.destination} cannot be subscribed to.",
                )
            await self.router.subscribe(sink, event.subscription, route)
        elif isinstance(event, Unsubscribed):
            await self.router.unsubscribe(sink, event.subscription)
        elif isinstance(event, ReceiptDue):
            session.send_receipt(event.receipt_id, now)
        elif isinstance(event, DisconnectRequested):
            session.close("client disconnected")
        elif isinstance(event, Connected):
            log.info(
                "session %s connected with STOMP %s as %r",
                session.session_id,
                event.version,
                event.login,
            )

    async def _on_send(self, sink: Sink, event: MessageSent) -> None:
        frame = event.frame
        route = parse_destination(event.destination)
        if route.kind == "system":
            raise PolicyError(
                "Read-only destination",
                "/topic/system is written by operators through the HTTP API only.",
            )
        if route.kind == "app":
            raise PolicyError("Unknown destination", f"{event.destination} is not served here.")
        await self.publish(route, event.destination, frame.headers, frame.body)

    async def publish(
        self, route: Route, destination: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> None:
        envelope = self.router.envelope(destination, headers, body)
        await self.router.publish(channels_for(route, self.keys)[0], envelope)
        self.metrics.published.inc()


def _receipt_of(event: Event) -> str | None:
    if isinstance(event, MessageSent):
        return event.frame.get("receipt")
    if isinstance(event, Subscribed | Unsubscribed):
        for name, value in event.subscription.headers:
            if name == "receipt":
                return value
    return None
