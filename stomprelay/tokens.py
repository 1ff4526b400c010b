"""JWT credentials (PyJWT): verifying tokens at CONNECT and refresh, key sets,
development tokens (docs/security.md).

Imported only when a relay has authentication configured (or ``stomprelay
token`` runs): PyJWT and cryptography cost a relay without it ~10 MiB and its
start-up time. The identity a token gives, and everything decided from it, is
in :mod:`stomprelay.auth`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from stomprelay.auth import AuthError, Identity, check_name
from stomprelay.bounded import STOP_TIMEOUT, stop_task
from stomprelay.errors import PolicyError

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = ("HS256",)
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
#: Longest token accepted (a JWT with a few claims is well under 2 KiB).
MAX_TOKEN = 8 * 1024
#: How long a token is valid when ``stomprelay token`` is not told.
DEFAULT_TOKEN_TTL = 3600.0


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
            await stop_task(self._task, f"JWKS {self.shown} refresh", STOP_TIMEOUT)
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
