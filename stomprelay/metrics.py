"""Prometheus metrics of one relay, on a registry of its own.

A registry per relay (not the process-wide default) lets tests run several
relays in one process and keeps ``/metrics`` to this relay's numbers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


def counter_total(counter: Counter) -> float:
    """A counter's value (the sum over its labels), through the public ``collect``."""
    return sum(
        sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


class Metrics:
    """The relay's Prometheus metrics in a registry of its own (``/metrics``)."""

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
        self.rate_limited = Counter(
            "stomprelay_rate_limited",
            "Sessions ended for sending too fast, by limit (frames, bytes)",
            ["limit"],
            registry=self.registry,
        )
        self.kicked = Counter(
            "stomprelay_sessions_kicked",
            "Sessions ended by an operator (stomprelay kick)",
            registry=self.registry,
        )
        self.auth_hook = Counter(
            "stomprelay_auth_hook_answers",
            "Authorization hook decisions, by outcome (allowed, refused, unavailable, cached)",
            ["outcome"],
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "stomprelay_refused_connections",
            "Connections turned away at the handshake, by reason (origin, ip_cap, ip_rate)",
            ["reason"],
            registry=self.registry,
        )
        self.publish_batches = Counter(
            "stomprelay_publish_batches",
            "Round trips of the publish pipeline (each carries every SEND that waited)",
            registry=self.registry,
        )
        self.publisher_pauses = Counter(
            "stomprelay_publisher_pauses",
            "Times a publisher's socket was read no further until a slow subscriber caught up",
            registry=self.registry,
        )

        self.user_envelopes = Counter(
            "stomprelay_user_envelopes_received",
            "Envelopes this relay received on users' channels (it holds a session of each)",
            registry=self.registry,
        )
        self.appends = Counter(
            "stomprelay_log_appends",
            "Messages appended to a destination's log by this relay",
            registry=self.registry,
        )
        self.repaired_messages = Counter(
            "stomprelay_gap_repair_messages",
            "Messages a relay read back from a log to fill a gap in its subscription",
            registry=self.registry,
        )
        self.repair_seconds = Counter(
            "stomprelay_gap_repair_seconds",
            "Time spent reading gaps back from logs",
            registry=self.registry,
        )
        self.resumes = Counter(
            "stomprelay_subscribe_replays",
            "SUBSCRIBEs asking for history (x-history) or a resume (x-since-offset)",
            ["kind"],
            registry=self.registry,
        )
        self.recovered = Counter(
            "stomprelay_resumes",
            "Resumes answered in a RECEIPT, by x-recovered",
            ["recovered"],
            registry=self.registry,
        )
        self.journaled = Counter(
            "stomprelay_journaled_messages",
            "Messages kept in the journal while Redis was unreachable",
            registry=self.registry,
        )
        self.degraded = Gauge(
            "stomprelay_degraded",
            "1 while Redis counts as unreachable (local delivery only)",
            registry=self.registry,
        )
        self.degraded_seconds = Gauge(
            "stomprelay_degraded_seconds",
            "Seconds this relay spent without Redis since it started",
            registry=self.registry,
        )
        # request/reply (docs/protocol.md "Request/reply")
        self.temp_queues = Gauge(
            "stomprelay_temp_queues",
            "Temporary queues (reply-to:/temp-queue/...) of this relay's sessions",
            registry=self.registry,
        )
        self.replies = Counter(
            "stomprelay_replies",
            "Replies to a /reply-queue/ of this relay, by outcome: delivered, or dropped "
            "(the session that asked has ended, or the queue is unknown)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_events_queued = Counter(
            "stomprelay_webhook_events_queued",
            "Webhook events this relay's registry steps appended to a partition, by type",
            ["type"],
            registry=self.registry,
        )
        # webhooks (docs/webhooks.md): the partitions this relay delivers
        self.webhook_delivered = Counter(
            "stomprelay_webhook_events_delivered",
            "Webhook events the receiver acknowledged (2xx)",
            registry=self.registry,
        )
        self.webhook_batches = Counter(
            "stomprelay_webhook_batches",
            "Webhook POSTs the receiver acknowledged (2xx)",
            registry=self.registry,
        )
        self.webhook_retries = Counter(
            "stomprelay_webhook_retries",
            "Webhook POSTs that failed and will be retried, by cause (refused, timeout, status)",
            ["cause"],
            registry=self.registry,
        )
        self.webhook_failed = Counter(
            "stomprelay_webhook_events_failed",
            "Webhook events in POSTs that failed (once per attempt)",
            registry=self.registry,
        )
        self.webhook_dead = Counter(
            "stomprelay_webhook_events_dead_lettered",
            "Webhook events moved to the dead-letter stream past --webhook-max-age",
            registry=self.registry,
        )
        self.webhook_lag = Histogram(
            "stomprelay_webhook_delivery_lag_seconds",
            "Seconds from an event's timestamp to the receiver's 2xx",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )
        self.webhook_partitions = Gauge(
            "stomprelay_webhook_partitions_held",
            "Webhook partitions this relay delivers now (holds the lease of)",
            registry=self.registry,
        )
        self.webhook_pending = Gauge(
            "stomprelay_webhook_events_pending",
            "Webhook events queued in the partitions this relay holds, not yet delivered",
            registry=self.registry,
        )

        # queues (docs/queues.md)
        self.queue_messages = Counter(
            "stomprelay_queue_messages",
            "Queue messages by what happened: sent, refused (queue full), delivered, "
            "acked, requeued (NACK or a consumer's end), dead_lettered",
            ["event"],
            registry=self.registry,
        )
        self.queue_consumers = Gauge(
            "stomprelay_queue_consumers",
            "Subscriptions to /queue/ destinations on this relay",
            registry=self.registry,
        )

    def repaired(self, messages: int, seconds: float) -> None:
        self.repaired_messages.inc(messages)
        self.repair_seconds.inc(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
