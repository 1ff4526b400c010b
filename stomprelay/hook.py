"""The back-end authorization hook: the relay asks an HTTP endpoint whether a
CONNECT, SUBSCRIBE or SEND may go ahead (docs/security.md, contract section 11).

The request is ``POST`` of one JSON object, signed like the webhooks
(``X-Stomprelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw
body>")>``); the answer is ``200 {"allow", "reason"?, "user"?, "ttl"?}``. Anything
else (a timeout, another status, a body that is not that object) refuses with ERROR
``authorization unavailable``: the hook fails closed.

The HTTP client (:mod:`stomprelay.httpclient`, shared with the webhooks) is asyncio
streams driven by h11, keep-alive connections kept in a pool; a semaphore bounds
the requests in flight here. SUBSCRIBE and SEND answers are kept
for their ``ttl`` per (user, action, destination) in a bounded LRU, so a busy room
does not ask once per frame; CONNECT answers never are (a cached CONNECT would
accept a wrong passcode).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11

from stomprelay.errors import PolicyError
from stomprelay.httpclient import SIGNATURE_HEADER as SIGNATURE_HEADER
from stomprelay.httpclient import Poster, check_http_url
from stomprelay.httpclient import signature as signature

log = logging.getLogger(__name__)

#: The actions a hook may be asked about (``--auth-hook-actions``).
ACTIONS = ("connect", "subscribe", "send")
#: Longest reason shown in an ERROR body (characters).
MAX_REASON = 200
#: Longest answer read (bytes): a verdict is a few fields.
MAX_ANSWER = 64 * 1024
#: Longest a cached answer is kept (seconds), whatever ``ttl`` the hook gives.
MAX_TTL = 24 * 3600.0
#: Cached answers kept at most (least recently used go first).
CACHE_SIZE = 10_000
#: Requests in flight at most, and idle connections kept.
CONCURRENCY = 32


def check_actions(actions: tuple[str, ...]) -> None:
    """Refuse an unknown action in ``--auth-hook-actions`` (a start-up ValueError)."""
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise ValueError(
            f"--auth-hook-actions takes {', '.join(ACTIONS)}; not {', '.join(unknown)}"
        )


def check_url(url: str) -> None:
    """An ``http://`` or ``https://`` URL with a host (a start-up ValueError)."""
    check_http_url(url, "--auth-hook-url")


def sanitized(reason: str) -> str:
    """A hook's reason fit for an ERROR body: no control characters, at most
    :data:`MAX_REASON` characters."""
    text = "".join(c if c.isprintable() else " " for c in reason)
    return text.strip()[:MAX_REASON]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A hook's answer."""

    allow: bool
    reason: str = ""
    #: The user the hook names (a CONNECT it authenticated), or None.
    user: str | None = None
    #: Seconds the answer may be reused (SUBSCRIBE and SEND only).
    ttl: float = 0.0

    @classmethod
    def parse(cls, body: bytes) -> Verdict:
        """The answer in ``body``; ValueError when it is not ``{"allow": bool, ...}``."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ValueError("not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("allow"), bool):
            raise ValueError('no boolean "allow"')
        reason = data.get("reason", "")
        user = data.get("user")
        ttl = data.get("ttl", 0)
        if not isinstance(reason, str) or (user is not None and not isinstance(user, str)):
            raise ValueError('"reason" and "user" are strings')
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0:
            raise ValueError('"ttl" is a number of seconds, 0 or more')
        return cls(data["allow"], sanitized(reason), user or None, min(float(ttl), MAX_TTL))


#: The answer for what the hook is not asked about.
ALLOWED = Verdict(True)


def unavailable(detail: str) -> PolicyError:
    return PolicyError(
        "authorization unavailable", f"The authorization service did not answer ({detail})."
    )


class AuthHook:
    """Asks the back-end's hook; keeps SUBSCRIBE/SEND answers for their ``ttl``."""

    def __init__(
        self,
        url: str,
        *,
        actions: tuple[str, ...] = ("connect", "subscribe"),
        timeout: float = 2.0,
        secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = CACHE_SIZE,
        concurrency: int = CONCURRENCY,
    ) -> None:
        check_url(url)
        check_actions(actions)
        self.url = url
        self.actions = frozenset(actions)
        self.timeout = timeout
        self._secret = secret
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, Verdict]] = OrderedDict()
        self._cache_size = cache_size
        self._limit = asyncio.Semaphore(concurrency)
        self._poster = Poster(url, max_answer=MAX_ANSWER, idle_max=concurrency)
        #: Told each decision's outcome: ``allowed``, ``refused``, ``unavailable``
        #: or ``cached`` (the relay counts them in its metrics).
        self.observe: Callable[[str], None] = lambda _outcome: None

    def asks(self, action: str) -> bool:
        return action in self.actions

    # -- the cache --------------------------------------------------------------

    def cached(self, user: str, action: str, destination: str) -> Verdict | None:
        """A SUBSCRIBE/SEND answer still within its ``ttl``, or None."""
        key = (user, action, destination)
        found = self._cache.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return found[1]

    def _keep(self, user: str, action: str, destination: str, verdict: Verdict) -> None:
        # A session without a user is known to the hook by its session, address or
        # headers only: its answer is not another anonymous session's.
        if verdict.ttl <= 0 or action == "connect" or not user:
            return
        key = (user, action, destination)
        self._cache[key] = (self._clock() + verdict.ttl, verdict)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- asking -----------------------------------------------------------------

    async def decide(self, request: Mapping[str, Any]) -> Verdict:
        """The hook's answer to ``request`` (its ``action`` among them), from the
        cache for a SUBSCRIBE/SEND answered within its ``ttl``; PolicyError
        ``authorization unavailable`` when the hook cannot give one."""
        action = str(request["action"])
        user = str(request.get("user") or "")
        destination = str(request.get("destination") or "")
        if action != "connect":
            found = self.cached(user, action, destination)
            if found is not None:
                self.observe("cached")
                return found
        try:
            verdict = await self.ask(request)
        except PolicyError:
            self.observe("unavailable")
            raise
        self.observe("allowed" if verdict.allow else "refused")
        self._keep(user, action, destination, verdict)
        return verdict

    async def ask(self, request: Mapping[str, Any]) -> Verdict:
        """One signed POST, within :attr:`timeout` (waiting for a slot included)."""
        body = json.dumps(request, separators=(",", ":"), default=str).encode("utf-8")
        headers = self._poster.headers(body, self._secret, int(time.time()))
        try:
            async with asyncio.timeout(self.timeout), self._limit:
                status, answer = await self._poster.post(headers, body)
        except TimeoutError:
            log.warning("authorization hook: no answer within %.1f s", self.timeout)
            raise unavailable("timeout") from None
        except (OSError, h11.ProtocolError, ValueError) as exc:
            log.warning("authorization hook: %s", exc)
            raise unavailable("no valid HTTP answer") from None
        if status != 200:
            log.warning("authorization hook answered HTTP %d", status)
            raise unavailable(f"HTTP {status}")
        try:
            return Verdict.parse(answer)
        except ValueError as exc:
            log.warning("authorization hook: malformed answer (%s)", exc)
            raise unavailable("malformed answer") from None

    async def close(self) -> None:
        self._poster.close()
