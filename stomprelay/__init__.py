"""stomprelay: a STOMP 1.0-1.2 over WebSocket relay, clustered over Redis."""

__version__ = "0.1.0"
