"""Sockets: the connection class, the listeners, the timer scheduler, HTTP routes."""

from stomprelay.transport.connection import Connection
from stomprelay.transport.listeners import RelayServer

__all__ = ["Connection", "RelayServer"]
