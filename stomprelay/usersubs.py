"""Server-side subscriptions on one relay: a back-end's subscription applied to the
local sessions of a user, and the notices that tell them (contract section 10).

A back-end subscribes a user (``POST /api/users/{user}/subscribe``); every relay
holding a session of that user is asked (:mod:`stomprelay.userctl`) and applies it
here, as if the session had sent SUBSCRIBE with id ``server-`` + the first 16 hex
digits of SHA-256(destination) and ``ack:auto``: the router's subscription, live
cluster-wide once :meth:`ServerSubs.apply` returns (what a RECEIPT means), with no
JOIN and outside the ACL. A session that connects later gets every stored one
right after CONNECTED (:meth:`ServerSubs.connected`), before the frames it sent
after its CONNECT are acted on.

The MESSAGEs of a server-side subscription carry ``subscription:server-...``; a
stomp.js client, which knows no such id, hands them to its ``onUnhandledMessage``.
A session learns its server-side subscriptions by subscribing to
``/user/queue/subscriptions`` (relay-only: nobody may SEND there): right away one
``subscribe`` notice for each it holds, then one per change, each a MESSAGE whose
body is ``{"action": "subscribe"|"unsubscribe", "destination", "subscription"}``.
A session that did not subscribe there gets no notice; the subscription works
the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from stomprelay.auth import Identity
from stomprelay.cluster.registry import ServerSubscriptions
from stomprelay.destinations import own_route
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.locks import KeyedLocks
from stomprelay.router import Route, Router, Sink, parse_destination
from stomprelay.stomp.frames import PreparedMessage
from stomprelay.stomp.session import Subscription

log = logging.getLogger(__name__)

#: Where a session hears of its server-side subscriptions.
NOTICE_DESTINATION = "/user/queue/subscriptions"
#: The notice queue in either form: a session's own, or addressed to a user.
_NOTICE = re.compile(r"/user/(?:[^/]+/)?queue/subscriptions")
SERVER_PREFIX = "server-"
#: Kinds of destination a back-end may subscribe a user to: rooms and topics.
SUBSCRIBABLE = frozenset({"room", "topic", "broadcast", "system"})
NOTICE_TYPE = "application/json;charset=utf-8"


def subscription_id(destination: str) -> str:
    """``server-`` + the first 16 hex digits of SHA-256(destination): the same id on
    every session and relay, so applying one twice is seen and a back-end can tell it."""
    return SERVER_PREFIX + hashlib.sha256(destination.encode("utf-8")).hexdigest()[:16]


def is_notice_destination(destination: str) -> bool:
    """Whether a SEND goes to a notice queue (``/user/queue/subscriptions`` or
    ``/user/{user}/queue/subscriptions``), which only the relay writes."""
    return _NOTICE.fullmatch(destination) is not None


def subscribable(destination: str) -> Route:
    """The route of a destination a back-end may subscribe a user to (a room, a topic,
    ``/topic/broadcast``, ``/topic/system``, or the user's own ``/user/queue/{name}``
    but the notices'), else :class:`PolicyError`."""
    route = parse_destination(destination)
    own_queue = route.kind == "user" and not route.name and destination != NOTICE_DESTINATION
    if route.kind not in SUBSCRIBABLE and not own_queue:
        raise PolicyError(
            "Invalid destination",
            "A server-side subscription is to /topic/room/{id}, /topic/{name} or "
            f"/user/queue/{{name}}; {destination[:120]} is not one.",
        )
    return route


def notice_body(action: str, destination: str) -> bytes:
    """The body of a notice on ``/user/queue/subscriptions``."""
    return json.dumps(
        {"action": action, "destination": destination, "subscription": subscription_id(destination)}
    ).encode("utf-8")


class ServerSubs:
    """Applies and removes server-side subscriptions on this relay's sessions of a user,
    and tells them. Handed the sessions by id, who each is, the router, the registry's
    server-side subscriptions (read at CONNECT), a message-id maker, and the
    degraded mode's ``guard`` for its reads (fail fast while Redis is down)."""

    def __init__(
        self,
        sinks: Mapping[str, Sink],
        identities: Mapping[str, Identity],
        router: Router,
        registry: ServerSubscriptions,
        next_message_id: Callable[[], str],
        guard: Callable[[Callable[[], Awaitable[list[str]]]], Awaitable[list[str]]],
    ) -> None:
        self._sinks = sinks
        self._identities = identities
        self._router = router
        self._registry = registry
        self._next_id = next_message_id
        self._guard = guard
        #: One change of a user's sessions at a time: a CONNECT's read of the stored
        #: subscriptions and an unsubscribe meanwhile leave no stale subscription.
        self.locks = KeyedLocks()

    def sessions_of(self, user: str) -> list[Sink]:
        """This relay's open sessions of ``user``."""
        out = []
        for session_id, identity in list(self._identities.items()):
            sink = self._sinks.get(session_id)
            if identity.user == user and sink is not None and not sink.session.closed:
                out.append(sink)
        return out

    # -- what the cross-relay requests do here -------------------------------

    async def apply(self, user: str, destination: str) -> list[str]:
        """Subscribe every local session of ``user``; the ids of those that hold it."""
        route = subscribable(destination)
        async with self.locks.hold(user):
            return [
                sink.session.session_id
                for sink in self.sessions_of(user)
                if await self._add(sink, destination, route, user)
            ]

    async def remove(self, user: str, destination: str) -> list[str]:
        """Unsubscribe every local session of ``user``; the ids of those without it."""
        sub_id = subscription_id(destination)
        async with self.locks.hold(user):
            done = []
            for sink in self.sessions_of(user):
                session = sink.session
                subscription = session.subscriptions.get(sub_id)
                if subscription is not None and subscription.server:
                    del session.subscriptions[sub_id]
                    await self._router.unsubscribe(sink, subscription)
                    self._notify(sink, "unsubscribe", destination)
                if subscription is None or subscription.server:
                    done.append(session.session_id)
            return done

    async def connected(self, sink: Sink, user: str) -> None:
        """A new session of ``user``: every stored server-side subscription, now
        (none while Redis is down: :meth:`resync` gives them once it is back)."""
        if user:
            await self._settle(user, [sink])

    async def resync(self) -> None:
        """Redis is back: each local session of a user holds exactly the stored
        server-side subscriptions (what was asked while this relay could not hear,
        or could not read, is done now)."""
        users = {identity.user for identity in list(self._identities.values())}
        users.discard("")
        for user in sorted(users):
            if not await self._settle(user, None):
                return

    async def _settle(self, user: str, sinks: list[Sink] | None) -> bool:
        """Give ``sinks`` (None: every local session of ``user``) the stored
        server-side subscriptions, and take away those no longer stored; False
        when Redis could not be read. The read is made under the user's lock: an
        unsubscribe that arrives meanwhile is acted on after it, not before."""
        async with self.locks.hold(user):
            try:
                stored = await self._guard(lambda: self._registry.server_subscriptions(user))
            except BackendUnavailable as exc:
                log.warning("server-side subscriptions of %r unread: %s", user, exc)
                return False
            routes: dict[str, Route] = {}
            for destination in stored:
                try:
                    routes[destination] = subscribable(destination)
                except PolicyError:
                    log.warning("ignoring a stored server-side subscription to %r", destination)
            for sink in self.sessions_of(user) if sinks is None else sinks:
                session = sink.session
                for held in [s for s in session.subscriptions.values() if s.server]:
                    if held.destination not in routes:
                        del session.subscriptions[held.id]
                        await self._router.unsubscribe(sink, held)
                        self._notify(sink, "unsubscribe", held.destination)
                for destination, route in routes.items():
                    await self._add(sink, destination, route, user)
        return True

    async def _add(self, sink: Sink, destination: str, route: Route, user: str) -> bool:
        """The subscription on one session (False: a client's own holds its id);
        ``/user/queue/{name}`` is the queue of the session's ``user``."""
        session = sink.session
        sub_id = subscription_id(destination)
        existing = session.subscriptions.get(sub_id)
        if existing is not None:
            if not existing.server:
                log.warning(
                    "session %s: its subscription %s keeps a server-side one out",
                    session.session_id,
                    sub_id,
                )
            return existing.server
        if session.closed:
            return False
        headers = (("id", sub_id), ("destination", destination), ("ack", "auto"))
        subscription = Subscription(sub_id, destination, "auto", headers, server=True)
        session.subscriptions[sub_id] = subscription
        if route.kind == "user":
            route = own_route(route, user)
        await self._router.subscribe(sink, subscription, route)
        self._notify(sink, "subscribe", destination)
        return True

    # -- notices ---------------------------------------------------------------

    def subscribed(self, sink: Sink, subscription: Subscription) -> bool:
        """A client's SUBSCRIBE to the notice queue (True; the router has no part in
        it): a ``subscribe`` notice for each server-side subscription it holds."""
        if subscription.destination != NOTICE_DESTINATION:
            return False
        session = sink.session
        identity = self._identities.get(session.session_id)
        if identity is None or not identity.user:
            raise PolicyError(
                "forbidden", f"{NOTICE_DESTINATION} is a user's: this session has no user."
            )
        for held in list(session.subscriptions.values()):
            if held.server:
                self._notify(sink, "subscribe", held.destination, subscription.id)
        return True

    def _notify(self, sink: Sink, action: str, destination: str, only: str = "") -> None:
        """A notice to the session's subscriptions of the notice queue (or ``only``)."""
        session = sink.session
        targets = [
            s.id
            for s in session.subscriptions.values()
            if s.destination == NOTICE_DESTINATION and (not only or s.id == only)
        ]
        if not targets:
            return
        message = PreparedMessage(
            NOTICE_DESTINATION,
            self._next_id(),
            (("content-type", NOTICE_TYPE),),
            notice_body(action, destination),
        )
        now = time.monotonic()
        for target in targets:
            session.deliver(message, target, now)
        sink.flush()


#: What the cross-relay requests ask of this relay: (user, argument) -> session ids.
LocalAct = Callable[[str, str], Awaitable[list[str]]]
