"""Sockets: the listeners, the HTTP and STOMP protocols, the timer scheduler, HTTP routes.

The transport reaches the relay only through ``app.Application``.
"""

from stomprelay.transport.http_protocol import HttpProtocol
from stomprelay.transport.listeners import RelayServer
from stomprelay.transport.stomp_protocol import StompProtocol

__all__ = ["HttpProtocol", "RelayServer", "StompProtocol"]
