"""Access and moderation: who a session is, what it may do, and operators' kicks.

One component (docs/security.md) that the relay asks at CONNECT (the identity, from
a verified token or the login as given), at every SEND and SUBSCRIBE (the ACL), at
``SEND /app/auth/refresh`` (a new token for the same subject) and when an operator's
command arrives on the control channel (end a user's sessions, suspend or lift it).
It is handed what it uses: the settings, the authenticator and ACL, the registry's
moderation calls, the relay's sessions by id (to end them) and the records of their
rooms (members-only rules); it reaches into no one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from stomprelay.auth import (
    REFRESH_DESTINATION,
    Acl,
    AuthError,
    Identity,
    check_name,
    looks_like_token,
    room_of,
    token_of,
)
from stomprelay.clock import now_ms
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.registry import Moderation, SessionRecord
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.hook import ALLOWED, Verdict
from stomprelay.notify import kick_command, operator_command, show_ms
from stomprelay.router import Sink
from stomprelay.settings import Settings
from stomprelay.stomp.frames import Headers
from stomprelay.stomp.session import Connected, MessageSent, ServerSession, Subscribed, Subscription
from stomprelay.users import check_user_destination, hook_destination, is_user_destination
from stomprelay.usersubs import NOTICE_DESTINATION, is_notice_destination

if TYPE_CHECKING:
    from stomprelay.hook import AuthHook

    # bcrypt and PyJWT are imported only where authentication is configured
    from stomprelay.passwords import UserFile
    from stomprelay.tokens import Authenticator

log = logging.getLogger(__name__)


def check_access(
    auth: Authenticator | None,
    acl: Acl | None,
    dev_tokens: bool,
    hook: AuthHook | None = None,
    users: UserFile | None = None,
) -> None:
    """Refuse settings that would open the relay by mistake (a start-up ValueError)."""
    hooked = hook is not None and hook.asks("connect")
    if acl is not None and auth is None and users is None and not hooked:
        raise ValueError(
            "an ACL needs authentication: without verified identities its rules would "
            "trust whatever login a client claims (give --jwt-secret, --jwt-public-key, "
            "--jwks, --users, or an --auth-hook-url asked about connect)"
        )
    if dev_tokens and (auth is None or not auth.secret):
        raise ValueError("--dev-tokens needs --jwt-secret (it signs tokens with it)")


class Access:
    """Identities, the ACL, credential refresh, suspensions and operators' kicks."""

    def __init__(
        self,
        settings: Settings,
        *,
        auth: Authenticator | None,
        acl: Acl | None,
        dev_tokens: bool,
        moderation: Moderation,
        control_channel: str,
        sinks: Mapping[str, Sink],
        records: Mapping[str, SessionRecord],
        guard: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]],
        on_kicked: Callable[[], None] = lambda: None,
        hook: AuthHook | None = None,
        users: UserFile | None = None,
    ) -> None:
        check_access(auth, acl, dev_tokens, hook, users)
        self.settings = settings
        #: Verifies tokens at CONNECT and refresh; None: no tokens.
        self.auth = auth
        #: Static users (``--users``): CONNECT's login and passcode; None: none.
        self.users = users
        #: Per-destination rules; None: every destination open (as RabbitMQ's default).
        self.acl = acl
        #: Development only: GET /dev/token hands out tokens for any user.
        self.dev_tokens = dev_tokens
        #: The back-end's authorization hook (after the token and the ACL); None: off.
        self.hook = hook
        self._moderation = moderation
        self._control_channel = control_channel
        self._sinks = sinks
        self._records = records
        self._guard = guard
        self._on_kicked = on_kicked
        #: session id -> who it is (from its token, or its CONNECT login)
        self.identities: dict[str, Identity] = {}
        #: user -> refused until (ms since the epoch), from the operators' kicks
        self.suspended: dict[str, int] = {}

    async def start(self) -> None:
        if self.auth is not None:
            await self.auth.start()

    # -- sessions -------------------------------------------------------------

    async def admit(
        self, session: ServerSession, event: Connected, remote: str = ""
    ) -> Identity | None:
        """Who the CONNECT says it is: a verified token, a static user whose passcode
        matched (a token-shaped passcode is a token where both are configured), or
        (authentication off) its ``login`` as given; then the hook's word (which may
        name the user); refused while an operator suspends it. None: the session
        closed while its credential was checked."""
        token = token_of(event.headers)
        if self.users is not None and (self.auth is None or not looks_like_token(token)):
            identity = await self.users.verify(event.login, first_of(event.headers).get("passcode"))
        elif self.auth is not None:
            identity = await self.auth.verify(token)
        elif event.login:
            login = check_name(event.login, "login", self.settings.max_login)
            identity = Identity(login, login)
        else:
            identity = Identity("", "")
        if self.hook is not None and self.hook.asks("connect"):
            identity = await self._hook_connect(self.hook, session, event, identity, remote)
        self._not_suspended(identity)
        if session.closed:
            return None
        self.identities[session.session_id] = identity
        self._expire_at(session, identity)
        return identity

    async def _hook_connect(
        self,
        hook: AuthHook,
        session: ServerSession,
        event: Connected,
        identity: Identity,
        remote: str,
    ) -> Identity:
        """Ask the hook about a CONNECT (after the token, if any, was verified). It may
        name the user: without a token, that name is a verified identity (the ACL
        applies to it); with one, the token's subject stays."""
        request = hook_request("connect", session.session_id, identity, remote)
        if not identity.verified:
            request.pop("user", None)  # a login as claimed: sent as ``login`` only
        headers = first_of(event.headers)
        if event.login:
            request["login"] = event.login
        if "passcode" in headers:
            request["passcode"] = headers["passcode"]
        request["headers"] = {
            k: v
            for k, v in headers.items()
            if k not in ("passcode", "login") and k.lower() != "authorization"
        }
        verdict = await hook.decide(request)
        if not verdict.allow:
            raise AuthError(
                "access refused", verdict.reason or "The authorization service refused."
            )
        if identity.verified:
            return identity
        if verdict.user is None:
            # the hook vouched for no name: under an ACL, a claimed login names no one
            return Identity("", identity.name) if self.acl is not None else identity
        user = check_name(verdict.user, "user", self.settings.max_login)
        log.info("session %s authenticated by the hook as %s", session.session_id, user)
        return Identity(user, user, verified=True)

    def forget(self, session_id: str) -> None:
        self.identities.pop(session_id, None)

    def user_of(self, session_id: str) -> str:
        """Who a session is, as user destinations address it ("" for no one)."""
        identity = self.identities.get(session_id)
        return identity.user if identity is not None else ""

    def sender(self, session_id: str) -> Headers:
        """``x-sender`` / ``x-sender-session`` the relay stamps on a client's SEND
        (reserved: whatever the client put there was stripped)."""
        identity = self.identities.get(session_id)
        if identity is None or not identity.user:
            return (("x-sender-session", session_id),)
        return (("x-sender", identity.user), ("x-sender-session", session_id))

    def _not_suspended(self, identity: Identity) -> None:
        until = self.suspended.get(identity.user) if identity.user else None
        if until is not None and until > now_ms():
            raise AuthError(
                "access refused",
                f"An operator suspended {identity.user!r} until {show_ms(until)}.",
            )

    @staticmethod
    def _expire_at(session: ServerSession, identity: Identity) -> None:
        """End the session at its token's ``exp`` (a deadline on its own clock)."""
        if identity.expires is None:
            session.expires_at = None
            return
        wall = time.time()
        session.expires_at = time.monotonic() + max(0.0, identity.expires - wall)

    # -- authorization --------------------------------------------------------

    def authorize(self, session: ServerSession, event: MessageSent | Subscribed) -> None:
        """The ACL's decision for a SEND or SUBSCRIBE (the refresh is outside it),
        after the rule of user destinations (:func:`check_user_destination`)."""
        if isinstance(event, Subscribed):
            action, destination = "subscribe", event.subscription.destination
        elif event.destination != REFRESH_DESTINATION:
            action, destination = "send", event.destination
            if is_notice_destination(destination):
                raise PolicyError(
                    "Read-only destination",
                    f"{NOTICE_DESTINATION} is written by the relay only.",
                )
        else:
            return
        if is_user_destination(destination):
            check_user_destination(action, destination, self.user_of(session.session_id))
        self._check(session, action, destination)

    @staticmethod
    def _hooked(event: MessageSent | Subscribed) -> tuple[str, str] | None:
        if isinstance(event, Subscribed):
            if event.subscription.server:
                return None  # a back-end's decision already
            return "subscribe", event.subscription.destination
        if event.destination == REFRESH_DESTINATION:
            return None
        return "send", hook_destination(event.destination)

    def known(self, session: ServerSession, event: MessageSent | Subscribed) -> Verdict | None:
        """The hook's word on ``event`` when known without asking: :data:`ALLOWED`
        when the hook is not asked about it, a cached answer (:meth:`apply` acts
        on it), or None: only :meth:`consult` can tell (the SEND must leave the
        synchronous path)."""
        hook = self.hook
        what = self._hooked(event)
        if hook is None or what is None or not hook.asks(what[0]):
            return ALLOWED
        return hook.cached(self.user_of(session.session_id), *what)

    def apply(self, verdict: Verdict) -> None:
        """Act on what :meth:`known` gave (a refusal raises ``forbidden``)."""
        if verdict is not ALLOWED and self.hook is not None:
            self.hook.observe("cached")
        enforce(verdict)

    async def consult(
        self, session: ServerSession, event: MessageSent | Subscribed, remote: str = ""
    ) -> None:
        """The hook's word on a SEND or SUBSCRIBE the ACL allowed (cached per user,
        action and destination for the answer's ``ttl``); PolicyError ``forbidden``
        on a refusal, ``authorization unavailable`` without an answer."""
        hook = self.hook
        what = self._hooked(event)
        if hook is None or what is None or not hook.asks(what[0]):
            return
        action, destination = what
        identity = self.identities.get(session.session_id) or Identity("", "")
        request = hook_request(action, session.session_id, identity, remote)
        request["destination"] = destination
        if isinstance(event, Subscribed):
            headers = event.subscription.headers
        else:
            headers = event.frame.headers
        request["headers"] = first_of(headers)
        enforce(await hook.decide(request))

    def _check(self, session: ServerSession, action: str, destination: str) -> None:
        acl = self.acl
        if acl is None:
            return
        identity = self.identities.get(session.session_id) or Identity("", "")
        record = self._records.get(session.session_id)
        rooms = record.rooms if record is not None else []
        if not acl.allows(identity, action, destination, rooms.__contains__):
            raise PolicyError(
                "forbidden", f"{identity.user} may not {action} to {destination[:120]}."
            )

    def _recheck(self, session: ServerSession, subscription: Subscription) -> None:
        if subscription.server:
            return  # a back-end's decision, outside the ACL
        try:
            self._check(session, "subscribe", subscription.destination)
        except PolicyError:
            raise PolicyError(
                "forbidden",
                f"Subscription {subscription.id} to {subscription.destination[:120]} is no "
                "longer allowed for this session.",
            ) from None

    def left(self, session: ServerSession, room_id: str) -> None:
        """The session left ``room_id``: under members-only rules, the room's feeds are
        no longer its own (a subscription to one ends the session)."""
        if self.acl is None:
            return
        for subscription in list(session.subscriptions.values()):
            if room_of(subscription.destination) == room_id:
                self._recheck(session, subscription)

    async def refresh(self, session: ServerSession, body: bytes) -> None:
        """``SEND /app/auth/refresh``: a new token for the same ``sub`` replaces
        the credential; every subscription is checked again under it."""
        auth = self.auth
        if auth is None:
            raise PolicyError(
                "Unknown destination",
                "Static users have no token to refresh."
                if self.users is not None
                else "Authentication is off here: there is nothing to refresh.",
            )
        try:
            token = body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise AuthError("invalid token: malformed", "The token is not text.") from None
        identity = await auth.verify(token)
        current = self.identities.get(session.session_id)
        if current is not None and identity.user != current.user:
            raise AuthError(
                "invalid token: different subject",
                "A refresh must carry the same sub as the session's token.",
            )
        self._not_suspended(identity)
        self.identities[session.session_id] = identity
        self._expire_at(session, identity)
        log.info("session %s refreshed its credential", session.session_id)
        for subscription in list(session.subscriptions.values()):
            self._recheck(session, subscription)

    # -- moderation -----------------------------------------------------------

    async def kick(self, user: str, until_ms: int | None, lift: bool = False) -> None:
        """End ``user``'s sessions on every relay (ERROR ``session ended by
        operator``) and refuse its CONNECTs until ``until_ms`` (None: no ban);
        ``lift``: only end a suspension."""
        command = operator_command(user, until_ms, lift)
        envelope = kick_command(command)
        try:
            await self._moderation.suspend(command, self._control_channel, envelope)
        except BackendUnavailable:
            # Redis is down: end the sessions here at least (the others cannot hear)
            self.control(envelope)
            raise

    def control(self, envelope: Envelope) -> None:
        """An operator's command from the control channel."""
        try:
            command = json.loads(envelope.body)
            user = str(command["user"])
            until = command.get("until")
            action = command.get("action")
        except (ValueError, KeyError, TypeError, RecursionError):
            log.warning("ignoring a malformed control message %s", envelope.id)
            return
        if action == "lift":
            self.suspended.pop(user, None)
            return
        if action != "kick":
            return
        if isinstance(until, int) and until > now_ms():
            self.suspended[user] = until
        self._end_sessions(lambda identity, record: user in self._names(identity, record))

    async def load_suspensions(self) -> None:
        """Kicks made while this relay was away (or before it started): the
        suspensions it must enforce, and the sessions it must still end (a user
        suspended now, or kicked after the session connected)."""
        found = await self._moderation.suspensions(now_ms())
        self.suspended = found.until

        def missed(identity: Identity, record: SessionRecord | None) -> bool:
            for user in self._names(identity, record):
                if user in found.until:
                    return True
                kicked = found.kicked.get(user)
                if kicked is not None and record is not None and kicked >= record.connected_at:
                    return True
            return False

        self._end_sessions(missed)

    async def reload_suspensions(self) -> None:
        """:meth:`load_suspensions` unless Redis is down (a kick published while this
        relay could not hear it is found once Redis is back)."""
        with contextlib.suppress(BackendUnavailable):
            await self._guard(self.load_suspensions)

    @staticmethod
    def _names(identity: Identity, record: SessionRecord | None) -> set[str]:
        """The names a kick finds a session by: the token's ``sub``; without
        authentication, also the name it joined rooms as (its login may differ)."""
        names = {identity.user}
        if not identity.verified and record is not None:
            names.add(record.username)
        names.discard("")
        return names

    def end_user(self, user: str, reason: str) -> list[str]:
        """End this relay's sessions of ``user`` (its identity's user: the token's
        ``sub``, or the CONNECT login) with ERROR ``session ended by server``,
        ``reason`` its body, and no suspension; the ids of the sessions ended."""
        return self._end_sessions(
            lambda identity, _record: identity.user == user,
            PolicyError("session ended by server", reason),
        )

    def _end_sessions(
        self,
        chosen: Callable[[Identity, SessionRecord | None], bool],
        error: PolicyError | None = None,
    ) -> list[str]:
        ended = []
        for session_id, identity in list(self.identities.items()):
            record = self._records.get(session_id)
            if not chosen(identity, record):
                continue
            sink = self._sinks.get(session_id)
            if sink is None or sink.session.closed:
                continue
            if error is None:
                log.info("session %s of %s ended by an operator", session_id, identity.user)
                self._on_kicked()
            else:
                log.info("session %s of %s ended by the server API", session_id, identity.user)
            sink.session.fail(
                error or PolicyError("session ended by operator", "An operator ended this session.")
            )
            sink.flush()
            ended.append(session_id)
        return ended


def hook_request(action: str, session_id: str, identity: Identity, remote: str) -> dict[str, Any]:
    """The common fields of a request to the authorization hook (contract section 11)."""
    request: dict[str, Any] = {"action": action, "sessionId": session_id}
    if identity.user:
        request["user"] = identity.user
    if identity.verified and identity.claims:
        request["claims"] = dict(identity.claims)
    request["remoteAddress"] = remote
    return request


def first_of(headers: Headers) -> dict[str, str]:
    """Headers as a JSON object; of a repeated name the first wins (STOMP 1.2)."""
    found: dict[str, str] = {}
    for name, value in headers:
        found.setdefault(name, value)
    return found


def enforce(verdict: Verdict) -> None:
    """A hook's refusal of a SEND or SUBSCRIBE as the ERROR ``forbidden``."""
    if not verdict.allow:
        raise PolicyError("forbidden", verdict.reason or "The authorization service refused.")
