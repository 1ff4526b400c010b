"""What the transport needs of the application behind it, and what it hands over.

The transport (the listeners, the HTTP and STOMP protocols, the hub) knows the
relay only through :class:`Application`; the relay implements it and the
transport never reaches past it. What the application gets back for each
STOMP connection is a :class:`~stomprelay.router.Sink` (the router's word
for a subscriber's connection): the session, and a way to have its queued
frames written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from stomprelay.admin import Admin
from stomprelay.api import ServerApi
from stomprelay.dashboard import Dashboard
from stomprelay.router import Sink
from stomprelay.stomp.session import Event, ServerSession
from stomprelay.transport.http import Status


class Application(Status, Protocol):
    """Everything the transport calls on the relay, and nothing more.

    The HTTP routes read the relay's :class:`~stomprelay.transport.http.Status`
    and act through its :attr:`admin` (``stomprelay/admin.py``, which the
    command line uses too) and its :attr:`api` (the server API).

    Lifecycle: :meth:`start` once the listeners are bound (``host`` and
    ``port`` say where, for the registry), :meth:`close` at the end of a stop.
    Per STOMP connection: :meth:`new_session` makes its sans-I/O session,
    :meth:`attach` once it is open, :meth:`handle` for each batch of its
    events, :meth:`detach` once its socket is gone (a task kept by
    :meth:`background`). Backpressure: :meth:`sent_to` names the destinations
    a batch published to and :meth:`congested` whether a local subscriber of
    one of them cannot take more (the publisher is then read no further).
    """

    #: Where the listeners are bound (the name and port other relays see).
    host: str
    port: int

    @property
    def admin(self) -> Admin: ...

    @property
    def api(self) -> ServerApi:
        """The server API's operations (``stomprelay/api.py``)."""
        ...

    @property
    def dashboard(self) -> Dashboard:
        """The operators' dashboard's reads (``stomprelay/dashboard.py``)."""
        ...

    @property
    def sinks(self) -> Mapping[str, Sink]:
        """The attached connections by session id (a stop waits for it to empty)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def new_session(self) -> ServerSession: ...

    def attach(self, sink: Sink) -> None: ...

    async def detach(self, sink: Sink) -> None: ...

    async def handle(self, sink: Sink, events: list[Event]) -> None: ...

    def handle_now(self, sink: Sink, events: list[Event]) -> bool:
        """Handle ``events`` at once if nothing in them can wait; False: not handled."""
        ...

    def sent_to(self, events: list[Event]) -> set[str]: ...

    def congested(self, destinations: set[str]) -> bool: ...

    def background(self, task: asyncio.Task[None]) -> None: ...
