"""Identity and access: JWT credentials, the ACL, and the text rules for names.

Authentication is off unless a key is configured (``--jwt-secret``,
``--jwt-public-key``, ``--jwks``). Then CONNECT needs a JWT, in ``passcode`` or
an ``Authorization: Bearer`` header; the token's ``sub`` is who the session is
(its ``name`` claim the display name), and a ``SEND`` to
``/app/auth/refresh`` replaces the credential in-band (docs/security.md).

The ACL (``--acl FILE``) maps users, roles and claims to the destinations they
may SUBSCRIBE and SEND to; once a file is given, anything it does not allow is
refused. Decisions use server-side state only: the verified claims, and the
room memberships the relay itself holds.

Everything here is pure but :class:`KeySource`'s URL fetch; a token never
appears in an exception message or a log line.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
import tomllib
import unicodedata
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from stomprelay.errors import PolicyError

log = logging.getLogger(__name__)

#: The in-band refresh destination: outside the ACL and outside transactions.
REFRESH_DESTINATION = "/app/auth/refresh"
HMAC_ALGORITHMS = ("HS256",)
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
#: Longest token accepted (a JWT with a few claims is well under 2 KiB).
MAX_TOKEN = 8 * 1024
#: Characters refused in every name: bidi embeddings, overrides and isolates,
#: and the implicit marks (they reorder how a name is shown next to others').
BIDI_CONTROLS = frozenset(
    "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
#: How long a token is valid when ``stomprelay token`` is not told.
DEFAULT_TOKEN_TTL = 3600.0


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


class KeySource:
    """A JWKS document from a file or an http(s) URL, reloaded every
    ``refresh`` s and, for an unknown ``kid``, at most every ``min_refresh`` s."""

    def __init__(self, location: str, refresh: float, min_refresh: float) -> None:
        self.location = location
        #: The location for logs: a URL without its credentials or query.
        self.shown = _redacted_url(location)
        self.refresh = refresh
        self.min_refresh = min_refresh
        self.keys: dict[str, jwt.PyJWK] = {}
        #: Keys without a ``kid``: tried in turn.
        self.anonymous: list[jwt.PyJWK] = []
        self._loaded_at = -float("inf")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> bytes:
        if self.location.startswith(("http://", "https://")):
            with urllib.request.urlopen(self.location, timeout=5) as reply:
                data: bytes = reply.read(1024 * 1024)
                return data
        return Path(self.location).read_bytes()

    def load_now(self) -> None:
        """Read the set (at start: a bad file stops the relay with a clear message)."""
        try:
            raw = self._read()
        except Exception as exc:
            raise ValueError(f"JWKS {self.shown} could not be read: {exc}") from None
        self._install(raw)

    def _install(self, raw: bytes) -> None:
        try:
            document = json.loads(raw)
            keys: dict[str, jwt.PyJWK] = {}
            anonymous: list[jwt.PyJWK] = []
            for entry in document.get("keys", []):
                if entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK.from_dict(entry)
                except jwt.PyJWTError as exc:
                    log.warning("JWKS %s: skipping a key: %s", self.shown, exc)
                    continue
                if entry.get("kid"):
                    keys[str(entry["kid"])] = key
                else:
                    anonymous.append(key)
        except (ValueError, AttributeError, TypeError, RecursionError) as exc:
            raise ValueError(f"JWKS {self.shown} is not a JSON Web Key Set: {exc}") from None
        self.keys, self.anonymous = keys, anonymous
        self._loaded_at = time.monotonic()
        log.info("JWKS %s: %d keys loaded", self.shown, len(keys) + len(anonymous))

    async def reload(self, forced: bool = False) -> None:
        async with self._lock:
            since = time.monotonic() - self._loaded_at
            if since < (self.min_refresh if forced else self.refresh * 0.5):
                return
            try:
                self._install(await asyncio.to_thread(self._read))
            except Exception as exc:
                # keep the keys we have: a JWKS endpoint that blinks locks nobody out
                self._loaded_at = time.monotonic()
                log.warning("JWKS %s could not be reloaded: %s", self.shown, type(exc).__name__)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.refresh)
                await self.reload()

        self._task = asyncio.get_running_loop().create_task(loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _redacted_url(location: str) -> str:
    if not location.startswith(("http://", "https://")):
        return location
    parts = urllib.parse.urlsplit(location)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def load_public_key(path: str) -> Any:
    """A PEM public key (RSA or EC) for RS*/PS* or ES* tokens."""
    data = Path(path).read_bytes()
    for algorithm in (RSAAlgorithm(RSAAlgorithm.SHA256), ECAlgorithm(ECAlgorithm.SHA256)):
        try:
            return algorithm.prepare_key(data)
        except (jwt.InvalidKeyError, ValueError, TypeError):
            continue
    raise ValueError(f"{path} holds no RSA or EC public key in PEM form")


def _key_kind(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec"
    return "?"


class Authenticator:
    """Verifies JWTs (PyJWT) with the configured keys; ``alg`` decides which key
    family may be used, so ``none`` and HS/RS confusion are refused by design."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_keys: Iterable[Any] = (),
        jwks: KeySource | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 30.0,
        max_login: int = 64,
    ) -> None:
        self.secret = secret
        self.public_keys = list(public_keys)
        self.jwks = jwks
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.max_login = max_login
        if not (secret or self.public_keys or jwks):
            raise ValueError("authentication needs a secret, a public key or a JWKS")

    async def start(self) -> None:
        if self.jwks is not None:
            self.jwks.start()

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()

    async def _candidates(self, alg: str, kid: str | None) -> list[Any]:
        if alg in HMAC_ALGORITHMS:
            return [self.secret] if self.secret else []
        if alg in RSA_ALGORITHMS:
            kind = "rsa"
        elif alg in EC_ALGORITHMS:
            kind = "ec"
        else:
            return []
        found: list[Any] = []
        jwks = self.jwks
        if jwks is not None:
            if kid is not None:
                if kid not in jwks.keys:
                    await jwks.reload(forced=True)  # the issuer may have rotated its keys
                key = jwks.keys.get(kid)
                if key is not None:
                    found.append(key.key)
            else:
                found.extend(k.key for k in jwks.anonymous)
        if kid is None or not found:
            found.extend(self.public_keys)
        return [k for k in found if _key_kind(k) == kind]

    async def verify(self, token: str | None) -> Identity:
        """The identity a token proves, or AuthError with a plain reason."""
        if not token:
            raise AuthError(
                "authentication required",
                "This relay needs a token: send a JWT as passcode or as an "
                "'Authorization: Bearer' CONNECT header.",
            )
        if len(token) > MAX_TOKEN:
            raise AuthError("invalid token: malformed", f"Tokens are at most {MAX_TOKEN} bytes.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid token: malformed", "The token is not a JWT.") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or not isinstance(kid, str | None):
            raise AuthError("invalid token: malformed", "The token's header is not valid.")
        keys = await self._candidates(alg, kid)
        if not keys:
            raise AuthError(
                "invalid token: algorithm not allowed",
                f"Tokens signed with {alg[:16]!r} are not accepted here"
                + (" (no key with that kid)." if kid is not None else "."),
            )
        claims: dict[str, Any] | None = None
        failure: AuthError | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={
                        "require": ["exp", "sub"],
                        "verify_aud": self.audience is not None,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                failure = AuthError("invalid token: bad signature", "The signature does not match.")
            except jwt.PyJWTError as exc:
                failure = _refusal(exc)
                break
        if claims is None:
            assert failure is not None
            raise failure
        return self.identity(claims)

    def identity(self, claims: dict[str, Any]) -> Identity:
        sub = claims.get("sub")
        try:
            user = check_name(sub, "token subject", self.max_login)
            name = check_name(claims.get("name") or user, "token name", self.max_login)
        except PolicyError as exc:
            raise AuthError("invalid token: bad subject", exc.detail) from None
        roles = claims.get("roles", ())
        role_set = frozenset(
            roles.split()
            if isinstance(roles, str)
            else (r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else ()
        )
        exp = claims.get("exp")
        return Identity(
            user,
            name,
            verified=True,
            expires=float(exp) if isinstance(exp, int | float) else None,
            roles=role_set,
            claims=claims,
        )

    def issue(
        self,
        user: str,
        name: str | None = None,
        ttl: float = DEFAULT_TOKEN_TTL,
        claims: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        """A HS256 token for ``user`` (development and tests: ``stomprelay token``)."""
        if not self.secret:
            raise ValueError("issuing tokens needs --jwt-secret")
        return issue_token(
            self.secret,
            user,
            name=name,
            ttl=ttl,
            claims=claims,
            audience=self.audience,
            issuer=self.issuer,
            now=now,
        )


def issue_token(
    secret: str,
    user: str,
    *,
    name: str | None = None,
    ttl: float = DEFAULT_TOKEN_TTL,
    claims: Mapping[str, Any] | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"sub": user, "iat": issued, "exp": issued + int(ttl)}
    if name:
        payload["name"] = name
    if audience:
        payload["aud"] = audience
    if issuer:
        payload["iss"] = issuer
    payload.update(claims or {})
    return jwt.encode(payload, secret, algorithm="HS256")


#: PyJWT's errors, most specific first, as the ERROR message and body they become.
REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "invalid token: expired", "The token's exp has passed."),
    (jwt.ImmatureSignatureError, "invalid token: not yet valid", "Its nbf or iat is ahead."),
    (jwt.InvalidAudienceError, "invalid token: wrong audience", "It is not meant for this relay."),
    (jwt.InvalidIssuerError, "invalid token: wrong issuer", "Its issuer is not trusted here."),
    (jwt.MissingRequiredClaimError, "invalid token: missing claim", "It lacks exp or sub."),
    (jwt.InvalidAlgorithmError, "invalid token: algorithm not allowed", "That alg is refused."),
    (jwt.InvalidKeyError, "invalid token: bad signature", "The signature does not match."),
    (jwt.DecodeError, "invalid token: malformed", "The token could not be decoded."),
)


def _refusal(exc: Exception) -> AuthError:
    for kind, message, detail in REFUSALS:
        if isinstance(exc, kind):
            return AuthError(message, detail)
    return AuthError("invalid token", "The token was refused.")


# -- the ACL ----------------------------------------------------------------

ACTIONS = ("subscribe", "send")
RULE_KEYS = frozenset({"users", "roles", "claims", "subscribe", "send", "members_only", "comment"})


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/")


@dataclass(frozen=True, slots=True)
class Pattern:
    """A destination pattern: segments split on ``/``; ``*`` and ``?`` glob
    within one segment, ``**`` (last) any rest, ``{user}`` the session's own
    user, ``{claim.NAME}`` one of the values of token claim NAME, any other
    ``{name}`` one segment."""

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
                    if seg != identity.user:
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
        try:
            if path.endswith((".yaml", ".yml")):
                document = yaml.safe_load(text) or {}
            else:
                document = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
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
