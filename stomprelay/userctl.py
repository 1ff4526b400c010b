"""The server API's acts on a user's sessions, wherever they are: subscribe,
unsubscribe, disconnect (``POST /api/users/{user}/...``, contract section 10).

The relay that takes the call changes the registry first (a subscription kept for
the sessions the user opens later), then reads which relays hold the user's
sessions and sends each a request on its own channel (``stomp:server:<id>``,
which every relay listens to for its whole life). Each relay acts on its local
sessions of the user (:class:`~stomprelay.usersubs.ServerSubs`, or the kick path
for a disconnect) and answers on the asking relay's channel with the sessions it
acted on. The call returns once every relay asked has answered, or after
``api_confirm_timeout`` with the relays and sessions that did not confirm (a relay
that died or stalled): it never hangs. Asking again is safe: every act is
idempotent.

Both envelopes are marked with the header ``x-control:user`` and carry JSON:
``{"op": "subscribe"|"unsubscribe"|"disconnect", "request", "replyTo", "user",
"argument"}`` and ``{"op": "answer", "request", "server", "sessions"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.keys import Keys
from stomprelay.cluster.registry import Directory, ServerSubscriptions
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.usersubs import LocalAct, subscribable, subscription_id

log = logging.getLogger(__name__)

CONTROL_HEADER = ("x-control", "user")
OPS = ("subscribe", "unsubscribe", "disconnect")
#: The body of the ERROR that ends a session when the call gave no reason.
DEFAULT_REASON = "The server ended this session."
#: Longest reason a disconnect takes (characters).
MAX_REASON = 1000
#: (session id, server id) of each session of a user, from the registry.
SessionsOf = Callable[[str], Awaitable[list[tuple[str, str]]]]


def registry_sessions(directory: Directory) -> SessionsOf:
    """The user's sessions as the registry's per-user index lists them."""

    async def sessions_of(user: str) -> list[tuple[str, str]]:
        return [
            (str(row["sessionId"]), str(row["serverId"]))
            for row in await directory.user_sessions(user)
        ]

    return sessions_of


class FieldError(PolicyError):
    """A call the API refuses (400), naming the request field at fault."""

    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__("Invalid request", detail)
        self.field = field_name


class NotConfirmed(BackendUnavailable):
    """A relay holding a session of the user did not confirm in time (a 503); ``body``
    is the answer with what was done and what was not (``unconfirmed``)."""

    def __init__(self, body: dict[str, object]) -> None:
        super().__init__(
            "not every relay holding the user's sessions confirmed in time (see "
            "unconfirmed); what was done stays done, and asking again is safe"
        )
        self.body = body


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a call did: the sessions confirmed, and what did not confirm in time
    (``unconfirmed``: relay id -> the registry's sessions of the user there)."""

    user: str
    sessions: list[str]
    unconfirmed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.unconfirmed

    def answer(self, head: Mapping[str, object]) -> dict[str, object]:
        """The API's answer: ``head`` then :meth:`as_json`; :class:`NotConfirmed`
        when a relay did not confirm."""
        body = {**head, **self.as_json()}
        if self.unconfirmed:
            raise NotConfirmed(body)
        return body

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"user": self.user, "sessions": len(self.sessions)}
        if self.unconfirmed:
            body["unconfirmed"] = {
                "servers": sorted(self.unconfirmed),
                "sessions": sorted(s for ids in self.unconfirmed.values() for s in ids),
            }
        return body


def control_envelope(origin: str, body: Mapping[str, object]) -> Envelope:
    return Envelope(
        id=f"{origin}-ctl-{secrets.token_hex(6)}",
        origin=origin,
        destination="",
        headers=(CONTROL_HEADER,),
        body=json.dumps(body).encode("utf-8"),
        ts=int(time.time() * 1000),
    )


@dataclass(slots=True)
class _Waiter:
    """One call's requests in flight: the relays still to answer, what answered."""

    pending: set[str]
    sessions: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class UserControl:
    """The server API's user acts (see the module docstring). Handed this relay's id,
    the key names, the bus's publish, the registry's server-side subscriptions, the
    user's sessions as the registry lists them, what each act does on this relay's
    sessions, a way to keep a task, and the settings it needs."""

    def __init__(
        self,
        server_id: str,
        keys: Keys,
        publish: Callable[[str, Envelope], Awaitable[None]],
        registry: ServerSubscriptions,
        sessions_of: SessionsOf,
        acts: Mapping[str, LocalAct],
        spawn: Callable[[asyncio.Task[None]], None],
        *,
        timeout: float,
        most: int,
    ) -> None:
        self.server_id = server_id
        self.keys = keys
        self._publish = publish
        self._registry = registry
        self._sessions_of = sessions_of
        self._acts = acts
        self._spawn = spawn
        self.timeout = timeout
        self.most = most
        self._own_channel = keys.server_channel(server_id)
        #: request id -> its waiter
        self._waiters: dict[str, _Waiter] = {}

    # -- the API calls -----------------------------------------------------------

    async def subscribe(self, user: str, destination: str) -> Outcome:
        """Keep the subscription for ``user``, then apply it on every session."""
        _check_destination(destination)
        kept = await self._registry.add_server_subscription(user, destination, self.most)
        if kept == "full":
            raise FieldError(
                "destination",
                f"{user[:64]} holds {self.most} server-side subscriptions already "
                "(--max-server-subscriptions).",
            )
        return await self._ask("subscribe", user, destination)

    async def unsubscribe(self, user: str, destination: str) -> Outcome:
        """Forget the subscription, then take it off every session of ``user``."""
        _check_destination(destination)
        await self._registry.remove_server_subscription(user, destination)
        return await self._ask("unsubscribe", user, destination)

    async def disconnect(self, user: str, reason: str) -> Outcome:
        """End every session of ``user`` with ERROR ``session ended by server``."""
        if len(reason) > MAX_REASON:
            raise FieldError("reason", f"A reason is at most {MAX_REASON} characters.")
        return await self._ask("disconnect", user, reason or DEFAULT_REASON)

    # -- the same, as the API answers them -------------------------------------

    async def subscribe_user(self, user: str, destination: str) -> dict[str, object]:
        """``POST /api/users/{user}/subscribe``'s answer: ``{"user", "destination",
        "subscription", "sessions"}``; :class:`FieldError` for a bad destination,
        :class:`NotConfirmed` when a relay did not confirm in time."""
        outcome = await self.subscribe(user, destination)
        return outcome.answer(_head(user, destination))

    async def unsubscribe_user(self, user: str, destination: str) -> dict[str, object]:
        outcome = await self.unsubscribe(user, destination)
        return outcome.answer(_head(user, destination))

    async def disconnect_user(self, user: str, reason: str) -> dict[str, object]:
        """``{"user", "sessions"}``: how many sessions ended."""
        outcome = await self.disconnect(user, reason)
        return outcome.answer({"user": user})

    async def _ask(self, op: str, user: str, argument: str) -> Outcome:
        """Send the request to each relay that holds a session of ``user``; wait for
        their answers, at most :attr:`timeout`."""
        by_server: dict[str, list[str]] = {}
        for session_id, server_id in await self._sessions_of(user):
            by_server.setdefault(server_id, []).append(session_id)
        request = secrets.token_hex(8)
        waiter = self._waiters[request] = _Waiter(set(by_server))
        try:
            body: dict[str, object] = {
                "op": op,
                "request": request,
                "replyTo": self._own_channel,
                "user": user,
                "argument": argument,
            }
            for server_id in sorted(by_server):
                await self._publish(
                    self.keys.server_channel(server_id), control_envelope(self.server_id, body)
                )
            if waiter.pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        await waiter.done.wait()
        finally:
            del self._waiters[request]
        unconfirmed = {s: by_server[s] for s in waiter.pending}
        if unconfirmed:
            log.warning(
                "%s of %r: no answer in %.1f s from %s", op, user, self.timeout, sorted(unconfirmed)
            )
        return Outcome(user, sorted(set(waiter.sessions)), unconfirmed)

    # -- the bus side ------------------------------------------------------------

    def handles(self, channel: str, envelope: Envelope) -> bool:
        """Whether ``envelope`` is a request or answer of these calls (then handled);
        False for anything else the relay's own channel carries."""
        if channel != self._own_channel or CONTROL_HEADER not in envelope.headers:
            return False
        try:
            body = json.loads(envelope.body)
            op = str(body["op"])
            request = str(body["request"])
        except (ValueError, KeyError, TypeError, RecursionError):
            log.warning("ignoring a malformed user request %s", envelope.id)
            return True
        if op == "answer":
            self._answered(request, body)
        elif op in self._acts:
            task = asyncio.get_running_loop().create_task(self._act(op, request, body))
            self._spawn(task)
        else:
            log.warning("ignoring user request %s: unknown op %r", envelope.id, op[:32])
        return True

    def _answered(self, request: str, body: dict[str, object]) -> None:
        waiter = self._waiters.get(request)
        sessions = body.get("sessions")
        if waiter is None or not isinstance(sessions, list):
            return  # a late answer (the call timed out) or a malformed one
        waiter.sessions.extend(str(s) for s in sessions)
        waiter.pending.discard(str(body.get("server")))
        if not waiter.pending:
            waiter.done.set()

    async def _act(self, op: str, request: str, body: dict[str, object]) -> None:
        """Do a request on this relay's sessions, then answer it."""
        try:
            user, argument, reply_to = (str(body[k]) for k in ("user", "argument", "replyTo"))
            sessions = await self._acts[op](user, argument)
        except (KeyError, PolicyError) as exc:
            log.warning("ignoring a user request %s: %s", request, exc)
            return
        except BackendUnavailable as exc:  # no answer: the call names this relay
            log.warning("user request %s not done: %s", request, exc)
            return
        answer = {
            "op": "answer",
            "request": request,
            "server": self.server_id,
            "sessions": sessions,
        }
        try:
            await self._publish(reply_to, control_envelope(self.server_id, answer))
        except BackendUnavailable as exc:
            log.warning("could not answer user request %s: %s", request, exc)


def _head(user: str, destination: str) -> dict[str, object]:
    return {"user": user, "destination": destination, "subscription": subscription_id(destination)}


def _check_destination(destination: str) -> None:
    try:
        subscribable(destination)
    except PolicyError as exc:
        raise FieldError("destination", exc.detail) from None
