"""Identity and access: who a session is, the ACL, and the text rules for names.

Authentication is off unless a key is configured (``--jwt-secret``,
``--jwt-public-key``, ``--jwks``) or static users are (``--users``). With a key,
CONNECT needs a JWT, in ``passcode`` or an ``Authorization: Bearer`` header,
checked by :mod:`stomprelay.tokens`; the token's ``sub`` is who the session is
(its ``name`` claim the display name), and a ``SEND`` to ``/app/auth/refresh``
replaces the credential in-band (docs/security.md). With static users, CONNECT's
``login`` and ``passcode`` are checked against the users file
(:mod:`stomprelay.passwords`); with both, a token-shaped passcode is a token.

The ACL (``--acl FILE``) maps users, roles and claims to the destinations they
may SUBSCRIBE and SEND to; once a file is given, anything it does not allow is
refused. Decisions use server-side state only: the verified claims, and the
room memberships the relay itself holds. Everything here is pure.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from stomprelay.errors import PolicyError

log = logging.getLogger(__name__)

#: The in-band refresh destination: outside the ACL and outside transactions.
REFRESH_DESTINATION = "/app/auth/refresh"
#: Characters refused in every name: bidi embeddings, overrides and isolates,
#: and the implicit marks (they reorder how a name is shown next to others').
BIDI_CONTROLS = frozenset(
    "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class AuthError(PolicyError):
    """A refused credential: the ERROR's message is one of the plain phrases
    docs/security.md lists (``authentication required``, ``invalid token: ...``)."""


def check_text(value: object, what: str, limit: int, *, multiline: bool = False) -> str:
    """Text a user gave: 1 to ``limit`` characters after trimming, no control
    characters (``multiline``, a chat message: but newlines and tabs) and no lone
    surrogates; a name (not ``multiline``) has no format, separator or
    bidi-control characters either, so it cannot pose as another or reorder
    what is shown next to it."""
    if not isinstance(value, str):
        raise PolicyError(f"Invalid {what}", f"The {what} must be a string.")
    text = value.strip()
    if not text:
        raise PolicyError(f"Missing {what}", f"The {what} must not be empty.")
    if len(text) > limit:
        raise PolicyError(
            f"{what.capitalize()} too long", f"The {what} is limited to {limit} characters."
        )
    refused = ("Cc", "Cs") if multiline else ("Cc", "Cf", "Cs", "Zl", "Zp")
    for c in text:
        if multiline:
            if c in "\n\t" or unicodedata.category(c) not in refused:
                continue
        elif c not in BIDI_CONTROLS and unicodedata.category(c) not in refused:
            continue
        raise PolicyError(
            f"Invalid {what}",
            f"The {what} must not contain control"
            + ("" if multiline else ", format or bidi-override")
            + f" characters (found U+{ord(c):04X}).",
        )
    return text


def check_name(value: object, what: str, limit: int) -> str:
    """A login, username or display name (see :func:`check_text`)."""
    return check_text(value, what, limit)


@dataclass(frozen=True, slots=True, eq=False)
class Identity:
    """Who a session is. ``verified``: from a token the relay checked; else the
    CONNECT ``login`` as the client gave it (authentication off)."""

    user: str
    name: str
    verified: bool = False
    #: ``exp`` of the token (seconds since the epoch), or None.
    expires: float | None = None
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def claim_values(self, name: str) -> frozenset[str]:
        """A claim as a set of strings: a list, or a space-separated string
        (OAuth 2 ``scope``)."""
        value = self.claims.get(name)
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list | tuple):
            return frozenset(str(v) for v in value if isinstance(v, str | int))
        if isinstance(value, bool | int | float):
            return frozenset({str(value).lower() if isinstance(value, bool) else str(value)})
        return frozenset()


def token_of(headers: Iterable[tuple[str, str]]) -> str | None:
    """The credential of a CONNECT: ``Authorization: Bearer <jwt>`` (stomp.js
    ``connectHeaders``), else ``passcode`` (the first of each name wins)."""
    seen: dict[str, str] = {}
    for name, value in headers:
        seen.setdefault(name.lower() if name.lower() == "authorization" else name, value)
    authorization = seen.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    passcode = seen.get("passcode")
    return passcode.strip() if passcode and passcode.strip() else None


#: A JWT in compact form (RFC 7519): its header is base64url JSON, so it starts ``eyJ``.
_TOKEN_SHAPE = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def looks_like_token(credential: str | None) -> bool:
    """Whether a credential is shaped as a JWT: with static users and a JWT key
    both configured, such a passcode is checked as a token, any other as a password."""
    return credential is not None and _TOKEN_SHAPE.match(credential) is not None


# -- the ACL ----------------------------------------------------------------

ACTIONS = ("subscribe", "send")
RULE_KEYS = frozenset({"users", "roles", "claims", "subscribe", "send", "members_only", "comment"})


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/")


@dataclass(frozen=True, slots=True)
class Pattern:
    """A destination pattern: segments split on ``/``; ``*`` and ``?`` glob
    within one segment, ``**`` (last) any rest, ``{user}`` the session's own
    user (as it is, or percent-encoded as in ``/user/{user}/queue/{name}``),
    ``{claim.NAME}`` one of the values of token claim NAME, any other ``{name}``
    one segment."""

    text: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if not isinstance(text, str) or not text.startswith("/"):
            raise ValueError(f"pattern {text!r} must be a string starting with '/'")
        parts = tuple(_segments(text))
        if "**" in parts[:-1]:
            raise ValueError(f"pattern {text!r}: '**' may only be the last segment")
        return cls(text, parts)

    def matches(self, destination: str, identity: Identity) -> bool:
        segs = _segments(destination)
        parts = self.parts
        if parts and parts[-1] == "**":
            if len(segs) < len(parts) - 1:
                return False
            parts = parts[:-1]
            segs = segs[: len(parts)]
        elif len(segs) != len(parts):
            return False
        for part, seg in zip(parts, segs, strict=True):
            if part.startswith("{") and part.endswith("}"):
                name = part[1:-1]
                if name == "user":
                    # a user destination's {user} is percent-encoded (%2F for '/')
                    if seg != identity.user and unquote(seg) != identity.user:
                        return False
                elif name.startswith("claim."):
                    if seg not in identity.claim_values(name[len("claim.") :]):
                        return False
                elif not seg:
                    return False
            elif not fnmatch.fnmatchcase(seg, part):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Rule:
    """One ACL rule: whom it applies to (users, roles, claims) and the destinations
    they may subscribe to and send to; ``members_only``: rooms they must have joined."""

    users: frozenset[str] | None
    roles: frozenset[str] | None
    claims: tuple[tuple[str, str], ...]
    subscribe: tuple[Pattern, ...]
    send: tuple[Pattern, ...]
    members_only: bool

    def applies_to(self, identity: Identity) -> bool:
        if self.users is not None and identity.user not in self.users and "*" not in self.users:
            return False
        if self.roles is not None and not (self.roles & identity.roles):
            return False
        return all(value in identity.claim_values(name) for name, value in self.claims)


def room_of(destination: str) -> str | None:
    """The room a destination belongs to (its topic, participant list or
    message action), for rules that need membership; None for others."""
    if destination.startswith("/topic/room/"):
        return destination[len("/topic/room/") :]
    if destination.startswith("/app/room/"):
        room, _, action = destination[len("/app/room/") :].rpartition("/")
        if action in ("participants", "message"):
            return room
    return None


class Acl:
    """Rules in file order; a destination is allowed when a rule for the
    identity lists it (and, with ``members_only``, the session is in the room)."""

    def __init__(self, rules: list[Rule], source: str = "") -> None:
        self.rules = rules
        self.source = source

    @classmethod
    def load(cls, path: str) -> Acl:
        text = Path(path).read_text(encoding="utf-8")
        if path.endswith((".yaml", ".yml")):
            import yaml  # only for a YAML rules file

            try:
                document = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: {exc}") from None
        else:
            try:
                document = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: {exc}") from None
        return cls.from_document(document, path)

    @classmethod
    def from_document(cls, document: object, source: str = "") -> Acl:
        if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
            raise ValueError(f"{source}: the rules file needs a list named 'rules'")
        return cls([_rule(entry, i, source) for i, entry in enumerate(document["rules"])], source)

    def allows(
        self,
        identity: Identity,
        action: str,
        destination: str,
        member_of: Callable[[str], bool],
    ) -> bool:
        room = room_of(destination)
        for rule in self.rules:
            if not rule.applies_to(identity):
                continue
            patterns = rule.subscribe if action == "subscribe" else rule.send
            if not any(p.matches(destination, identity) for p in patterns):
                continue
            if rule.members_only and room is not None and not member_of(room):
                continue
            return True
        return False


def _strings(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be a string or a list of strings")


def _rule(entry: object, index: int, source: str) -> Rule:
    where = f"{source}: rule {index + 1}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a table")
    unknown = set(entry) - RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(RULE_KEYS)})")
    claims = entry.get("claims", {})
    if not isinstance(claims, dict):
        raise ValueError(f"{where}: claims must be a table of claim = value")
    try:
        rule = Rule(
            users=frozenset(_strings(entry["users"], "users")) if "users" in entry else None,
            roles=frozenset(_strings(entry["roles"], "roles")) if "roles" in entry else None,
            claims=tuple(
                (str(k), v2) for k, v in claims.items() for v2 in _strings(v, f"claim {k}")
            ),
            subscribe=tuple(
                Pattern.parse(p) for p in _strings(entry.get("subscribe", []), "subscribe")
            ),
            send=tuple(Pattern.parse(p) for p in _strings(entry.get("send", []), "send")),
            members_only=bool(entry.get("members_only", False)),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not rule.subscribe and not rule.send:
        raise ValueError(f"{where} allows nothing: give subscribe and/or send patterns")
    return rule
