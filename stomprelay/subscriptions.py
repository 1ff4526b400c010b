"""Clients' SUBSCRIBE and UNSUBSCRIBE, and the RECEIPT a replay waits for.

A SUBSCRIBE to a room's participants is answered by the room application; any
other goes to the router, which may have history to replay (``x-history``,
``x-since-offset``). When the SUBSCRIBE asked for a RECEIPT, the replay waits
for it: the client learns the subscription is in place (and, resuming, whether
its offset was recovered: ``x-recovered``) before the first replayed MESSAGE.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stomprelay.destinations import own_route
from stomprelay.errors import PolicyError
from stomprelay.metrics import Metrics
from stomprelay.rooms import Rooms
from stomprelay.router import Replay, Resume, Router, Sink, parse_destination
from stomprelay.stomp.frames import Headers
from stomprelay.stomp.session import Event, MessageSent, ReceiptDue, Subscribed, Unsubscribed


def receipt_of(event: Event) -> str | None:
    """The receipt id a SEND, SUBSCRIBE or UNSUBSCRIBE asked for, if any."""
    if isinstance(event, MessageSent):
        return event.receipt
    if isinstance(event, Subscribed | Unsubscribed):
        for name, value in event.subscription.headers:
            if name == "receipt":
                return value
    return None


class Subscriptions:
    """Sets up and ends clients' subscriptions, and sends the RECEIPTs that must come
    before a replay. Handed the router, the rooms, the metrics and the most messages
    a client may ask for (``max_history``), and ``user_of`` (who a session is: its
    ``/user/queue/{name}`` is that user's queue)."""

    def __init__(
        self,
        router: Router,
        rooms: Rooms,
        metrics: Metrics,
        max_history: int,
        user_of: Callable[[str], str] = lambda _: "",
    ) -> None:
        self.router = router
        self.user_of = user_of
        self.rooms = rooms
        self.metrics = metrics
        self.max_history = max_history
        #: (session id, receipt id) -> RECEIPT headers and replay of a SUBSCRIBE.
        self._after_receipt: dict[tuple[str, str], tuple[Headers, Replay | None]] = {}

    async def subscribe(self, sink: Sink, event: Subscribed) -> None:
        subscription = event.subscription
        route = parse_destination(subscription.destination)
        if route.kind == "app":
            if route.action != "participants":
                raise PolicyError(
                    "Unknown destination",
                    f"{subscription.destination} cannot be subscribed to.",
                )
            await self.rooms.reply_participants(sink, subscription.id, route.name)
            return
        if route.kind == "user":
            # access allowed only the session's own queues, and only with a user
            route = own_route(route, self.user_of(sink.session.session_id))
        resume = Resume.of(subscription, self.max_history)
        if resume.asked:
            self.metrics.resumes.labels("history" if resume.since is None else "resume").inc()
        headers, replay = await self.router.subscribe(sink, subscription, route, resume)
        receipt = receipt_of(event)
        if receipt is not None:
            self._after_receipt[(sink.session.session_id, receipt)] = (headers, replay)
            if resume.since is not None:
                recovered = dict(headers).get("x-recovered", "false")
                self.metrics.recovered.labels(recovered).inc()
        elif replay is not None:
            await replay()

    async def unsubscribe(self, sink: Sink, event: Unsubscribed) -> None:
        await self.router.unsubscribe(sink, event.subscription)

    async def receipt(self, sink: Sink, event: ReceiptDue) -> None:
        """Send the RECEIPT (with a SUBSCRIBE's headers), then the replay it held back."""
        session = sink.session
        extra, replay = self._after_receipt.pop((session.session_id, event.receipt_id), ((), None))
        session.send_receipt(event.receipt_id, time.monotonic(), extra)
        if replay is not None:
            sink.flush()
            await replay()

    def skip_receipt(self, session_id: str, receipt_id: str) -> None:
        """The session closed before its RECEIPT: the replay it held back is dropped."""
        self._after_receipt.pop((session_id, receipt_id), None)
