"""What a relay is handed of the cluster, as one value (built by ``stomprelay.factory``)."""

from __future__ import annotations

from dataclasses import dataclass

from stomprelay.cluster.base import Bus
from stomprelay.cluster.history import Log
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.queue_store import QueueStore
from stomprelay.cluster.registry import Registry
from stomprelay.cluster.webhook_steps import WebhookSteps
from stomprelay.webhook_events import MemoryWebhookLog


@dataclass(frozen=True)
class Backends:
    """What a relay is handed of the cluster: the bus, the registry, the log (None:
    history off) and the key names they share; ``queues``: where /queue/ messages
    wait (None: in this process)."""

    bus: Bus
    registry: Registry
    log: Log | None
    keys: Keys
    #: The in-memory webhook partitions (single node with webhooks on), else None.
    webhook_log: MemoryWebhookLog | None = None
    #: The registry steps' webhook events (None: webhooks off); the relay counts them.
    webhooks: WebhookSteps | None = None
    queues: QueueStore | None = None
