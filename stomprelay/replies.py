"""Request/reply through temporary queues, as RabbitMQ's STOMP does (contract section 12).

A SEND with ``reply-to:/temp-queue/{name}`` gives its session a temporary queue
``{name}``, private to it. The responder does not see that name: the relay
rewrites the header to ``/reply-queue/<token>``, where the token names, without
showing them, the relay and the queue (:func:`~stomprelay.destinations.reply_token`:
the relay id, base64url, then 128 random bits). A SEND to that ``/reply-queue/``
from any session on any relay is published on the named relay's own channel
(``stomp:server:<id>``, contract section 4: targeted delivery, which every relay
listens to for its whole life), so it reaches that relay and no other; there
:class:`Replies` looks the random part up and queues the MESSAGE to the session
with ``destination`` and ``subscription`` both ``/temp-queue/{name}``, without a
SUBSCRIBE. A temporary queue lives as long as its session: once the session has
ended, replies to it are dropped and counted (``stomprelay_replies_total
{outcome="dropped"}``), as are replies to a token this relay never made (a forged
or stale one: unguessable, and like RabbitMQ's unroutable messages, dropped
without telling the responder). A session holds at most ``max_temp_queues``.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Protocol, overload

from stomprelay.cluster.envelope import Envelope
from stomprelay.destinations import (
    REPLY_QUEUE_PREFIX,
    TEMP_QUEUE_PREFIX,
    parse_destination,
    reply_token,
)
from stomprelay.errors import PolicyError
from stomprelay.stomp.frames import PreparedMessage
from stomprelay.stomp.session import MessageSent, ServerSession, Subscribed

log = logging.getLogger(__name__)

#: The SEND header that names where replies go (RabbitMQ's and JMS's name).
REPLY_TO = "reply-to"


class ReplySink(Protocol):
    """Where a reply goes: an open connection's session, flushed once queued."""

    @property
    def session(self) -> ServerSession: ...

    def flush(self) -> None: ...


class Replies:
    """The temporary queues of one relay's sessions, and the replies sent to them.

    Handed this relay's id, the name of its own channel, the relay's connections by
    session id (read only), the most temporary queues a session may hold, and for
    the metrics ``on_reply(outcome)`` ("delivered" or "dropped") and
    ``on_queues(count)`` (the temporary queues held now)."""

    def __init__(
        self,
        server_id: str,
        own_channel: str,
        sinks: Mapping[str, ReplySink],
        most: int,
        on_reply: Callable[[str], None] = lambda _outcome: None,
        on_queues: Callable[[int], None] = lambda _count: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server_id = server_id
        self._own_channel = own_channel
        self._sinks = sinks
        self.most = most
        self._on_reply = on_reply
        self._on_queues = on_queues
        self._clock = clock
        #: session id -> {temporary queue name: its reply token}
        self._by_session: dict[str, dict[str, str]] = {}
        #: reply token -> (session id, temporary queue name)
        self._by_token: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    # -- a session's frames ----------------------------------------------------

    @overload
    def admit(self, session_id: str, event: MessageSent) -> MessageSent: ...

    @overload
    def admit(self, session_id: str, event: Subscribed) -> Subscribed: ...

    def admit(self, session_id: str, event: MessageSent | Subscribed) -> MessageSent | Subscribed:
        """The event to act on: a SEND's ``reply-to:/temp-queue/{name}`` rewritten to
        the queue's ``/reply-queue/`` (the queue made on first use); a SEND to a
        ``/temp-queue/``, or a SUBSCRIBE to either kind, refused (PolicyError)."""
        if isinstance(event, Subscribed):
            destination = event.subscription.destination
            if destination.startswith(TEMP_QUEUE_PREFIX):
                raise _temp_only()
            if destination.startswith(REPLY_QUEUE_PREFIX):
                raise PolicyError(
                    "Send-only destination",
                    "A /reply-queue/ is sent to (a reply), never subscribed to.",
                )
            return event
        if event.destination.startswith(TEMP_QUEUE_PREFIX):
            raise _temp_only()
        frame = event.frame
        reply_to = frame.get(REPLY_TO)
        if reply_to is None or not reply_to.startswith(TEMP_QUEUE_PREFIX):
            return event  # any other reply-to goes to the responder as it is
        name = parse_destination(reply_to).name
        rewritten = REPLY_QUEUE_PREFIX + self._token(session_id, name)
        headers = list(frame.headers)
        at = next(i for i, (key, _) in enumerate(headers) if key == REPLY_TO)
        headers[at] = (REPLY_TO, rewritten)
        return dataclasses.replace(event, frame=dataclasses.replace(frame, headers=tuple(headers)))

    def _token(self, session_id: str, name: str) -> str:
        if session_id not in self._sinks:
            # ended while its SEND was on the way (detached already): a queue made now
            # would outlive it, so the reply-to leads nowhere and replies are dropped
            return reply_token(self.server_id, secrets.token_urlsafe(16))
        queues = self._by_session.setdefault(session_id, {})
        token = queues.get(name)
        if token is not None:
            return token
        if len(queues) >= self.most:
            raise PolicyError(
                "Too many temporary queues",
                f"A session may hold at most {self.most} temporary queues (--max-temp-queues); "
                "reuse a reply-to name.",
            )
        token = reply_token(self.server_id, secrets.token_urlsafe(16))
        queues[name] = token
        self._by_token[token] = (session_id, name)
        self._on_queues(len(self._by_token))
        return token

    def forget(self, session_id: str) -> None:
        """The session ended: its temporary queues go, replies to them are dropped."""
        queues = self._by_session.pop(session_id, None)
        if queues:
            for token in queues.values():
                self._by_token.pop(token, None)
            self._on_queues(len(self._by_token))

    # -- replies from the bus ----------------------------------------------------

    def received(self, channel: str, envelope: Envelope) -> bool:
        """Deliver a reply that came on this relay's own channel (True: handled here,
        delivered or dropped); False for anything else."""
        if channel != self._own_channel or not envelope.destination.startswith(REPLY_QUEUE_PREFIX):
            return False
        owner = self._by_token.get(envelope.destination[len(REPLY_QUEUE_PREFIX) :])
        sink = self._sinks.get(owner[0]) if owner is not None else None
        if owner is None or sink is None:
            log.debug("dropping reply %s: no temporary queue (its session ended)", envelope.id)
            self._on_reply("dropped")
            return True
        session_id, name = owner
        temp = TEMP_QUEUE_PREFIX + name
        message = PreparedMessage(temp, envelope.id, envelope.headers, envelope.body)
        if sink.session.deliver_reply(message, self._clock()):
            sink.flush()
            self._on_reply("delivered")
        else:
            log.debug("[%s] dropping reply %s: the session is closing", session_id, envelope.id)
            self._on_reply("dropped")
        return True


def _temp_only() -> PolicyError:
    return PolicyError(
        "Reply-only destination",
        "A /temp-queue/{name} is named in a SEND's reply-to header only; replies to it "
        "arrive without a SUBSCRIBE, with subscription /temp-queue/{name}.",
    )
