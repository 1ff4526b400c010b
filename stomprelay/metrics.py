"""Prometheus metrics of one relay, on a registry of its own.

A registry per relay (not the process-wide default) lets tests run several
relays in one process and keeps ``/metrics`` to this relay's numbers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "stomprelay_connections", "Open client connections", registry=self.registry
        )
        self.frames_in = Counter(
            "stomprelay_frames_received", "STOMP frames received", registry=self.registry
        )
        self.published = Counter(
            "stomprelay_messages_published",
            "Messages published to the bus",
            registry=self.registry,
        )
        self.delivered = Counter(
            "stomprelay_messages_delivered",
            "MESSAGE frames queued to clients",
            registry=self.registry,
        )
        self.errors = Counter(
            "stomprelay_errors",
            "ERROR frames sent, by message",
            ["message"],
            registry=self.registry,
        )
        self.slow_consumers = Counter(
            "stomprelay_slow_consumers",
            "Clients dropped for not reading",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
