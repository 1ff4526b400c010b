"""User destinations on one relay: who may use them, and the per-user channels.

A message to ``/user/{user}/queue/{name}`` is appended to that user's inbox log
and published on the user's channel (``stomp:broadcast:user:{<user>}``), which a
relay listens to exactly while it holds a session of that user: delivery is
routed to the relays that hold the user, never broadcast to all of them
(docs/contract.md, section 9). :class:`UserChannels` keeps those subscriptions
in step with the relay's sessions, counts what arrives on them, and hands
envelopes that are not messages (no ``/user/...`` destination: commands for the
user's sessions) to whoever registered for them (:attr:`UserChannels.on_control`).

:func:`check_user_destination` is the rule every SEND and SUBSCRIBE to a user
destination passes before the ACL: a session subscribes to its own queues
(``/user/queue/{name}``) and sends to a user's (``/user/{user}/queue/{name}``),
and a session with no user does neither.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.destinations import USER_PREFIX, Route, canonical, own_route, parse_destination
from stomprelay.errors import PolicyError

log = logging.getLogger(__name__)


def check_user_destination(action: str, destination: str, user: str) -> Route:
    """The route of a user destination a session whose user is ``user`` may
    ``action`` ("send" or "subscribe"), own queues resolved to ``user``'s; ERROR
    ``forbidden`` for someone else's queue, a SEND to ``/user/queue/...``, or a
    session with no user."""
    route = parse_destination(destination)
    if not user:
        raise PolicyError(
            "forbidden",
            "User destinations need a user: this session has none (connect with a "
            "login, or a token with a sub).",
        )
    if action == "subscribe":
        if route.name:
            raise PolicyError(
                "forbidden",
                "A session subscribes to its own user's queues only: /user/queue/{name}.",
            )
        return own_route(route, user)
    if not route.name:
        raise PolicyError(
            "forbidden",
            "/user/queue/{name} is subscribed to; send to /user/{user}/queue/{name}.",
        )
    return route


def is_user_destination(destination: str) -> bool:
    return destination.startswith(USER_PREFIX)


def hook_destination(destination: str) -> str:
    """The destination the authorization hook is asked about: a user's queue by its
    one spelling inside the relay (``/user/{user}/queue/{name}``, ``{user}``
    percent-encoded as the relay encodes it), so that ``/user/b%6Fb/queue/x`` is the
    same question, and the same cached answer, as ``/user/bob/queue/x``. Any other
    destination, and one that does not parse (refused before the hook is asked), as
    it is."""
    if not is_user_destination(destination):
        return destination
    try:
        route = parse_destination(destination)
    except PolicyError:
        return destination
    return canonical(route, destination)


class UserChannels:
    """The per-user channels of one relay: listened to while the relay holds a
    session of the user, counted as they deliver.

    Handed the key maker, the router's ``listen``/``unlisten`` (reference counted,
    so a user's channel stays while any of the user's sessions or subscriptions
    here needs it) and ``on_envelope`` (a metric: envelopes received on a user
    channel)."""

    def __init__(
        self,
        keys: Keys,
        listen: Callable[[str], Awaitable[None]],
        unlisten: Callable[[str], Awaitable[None]],
        on_envelope: Callable[[], None] = lambda: None,
    ) -> None:
        self._keys = keys
        self._listen = listen
        self._unlisten = unlisten
        self._on_envelope = on_envelope
        #: What every user channel's name starts with ("stomp:broadcast:user:{").
        self._head = keys.user_channel("")[:-1]
        #: session id -> the user channel listened to for it
        self._held: dict[str, str] = {}
        #: Commands for a user's sessions (envelopes without a /user/ destination
        #: on a user's channel): called with (user, envelope).
        self.on_control: Callable[[str, Envelope], None] | None = None

    def users(self) -> set[str]:
        """The users this relay holds a session of."""
        found = {self._keys.user_of_channel(c) for c in self._held.values()}
        return {u for u in found if u}

    async def connected(self, session_id: str, user: str) -> None:
        """A session of ``user`` connected here: listen to the user's channel (once
        this returns, whatever is published on it reaches this relay)."""
        if not user or session_id in self._held:
            return
        channel = self._keys.user_channel(user)
        self._held[session_id] = channel
        await self._listen(channel)

    async def disconnected(self, session_id: str) -> None:
        channel = self._held.pop(session_id, None)
        if channel is not None:
            await self._unlisten(channel)

    def received(self, channel: str, envelope: Envelope) -> bool:
        """Count an envelope from a bus channel; True when it was a user channel's
        command, handled here (a message goes on to the router: False)."""
        if not channel.startswith(self._head):
            return False  # (most envelopes: one comparison)
        user = self._keys.user_of_channel(channel)
        if user is None:
            return False
        self._on_envelope()
        if is_user_destination(envelope.destination):
            return False
        handler = self.on_control
        if handler is None:
            log.debug("no handler for command %s on %s", envelope.id, channel)
        else:
            handler(user, envelope)
        return True
