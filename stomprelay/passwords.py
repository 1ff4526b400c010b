"""Static users (``--users FILE``): ``name:hash`` lines checked at CONNECT.

For small deployments without a token issuer (docs/security.md). A line is a
user name, a colon and a bcrypt hash (``$2b$``, and the ``$2a$``/``$2y$`` that
``htpasswd -B`` writes, so an htpasswd file of bcrypt lines works as it is) or an
argon2 hash in PHC format (``$argon2id$v=19$m=...``, as ``argon2-cffi`` and the
``argon2`` command write it);
blank lines and ``#`` comments are skipped. ``stomprelay users hash`` makes a
hash from a password read on standard input.

CONNECT's ``login`` and ``passcode`` are checked against the file: ERROR
``authentication required`` when either is missing, ``invalid credentials``
when the user is unknown or the passcode wrong (one answer for both, and an
unknown user costs the same hashing time as a known one, so the answers do not
tell which users exist). bcrypt (the maintained ``bcrypt`` package, pyca) takes
a quarter of a second of CPU per check at cost 12: it runs in a worker thread
(it releases the GIL), never on the event loop.

bcrypt reads at most 72 bytes of a password; longer ones are refused when
hashing and never match a bcrypt hash (argon2 reads them whole).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from stomprelay.auth import AuthError, Identity, check_name
from stomprelay.errors import PolicyError

log = logging.getLogger(__name__)

#: A bcrypt hash in modular crypt format: version, cost, 22 salt and 31 hash characters.
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
#: An argon2 hash in PHC string format: variant, version, parameters, salt, hash.
ARGON2_HASH = re.compile(
    r"^\$argon2(?:id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$"
)
#: The most bytes of a password bcrypt reads.
MAX_PASSWORD = 72
#: Cost of new hashes (2^12 rounds: OWASP's floor for bcrypt is 10).
DEFAULT_ROUNDS = 12
MIN_ROUNDS, MAX_ROUNDS = 4, 31


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """A bcrypt hash of ``password``; ValueError for an empty or over-long one."""
    data = password.encode("utf-8")
    if not data:
        raise ValueError("the password is empty")
    if len(data) > MAX_PASSWORD:
        raise ValueError(f"bcrypt reads at most {MAX_PASSWORD} bytes of a password")
    if not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds is {MIN_ROUNDS} to {MAX_ROUNDS}")
    return bcrypt.hashpw(data, bcrypt.gensalt(rounds)).decode("ascii")


class UserFile:
    """The users of a ``--users`` file: name -> bcrypt or argon2 hash."""

    def __init__(self, hashes: Mapping[str, bytes], source: str = "") -> None:
        self.hashes = dict(hashes)
        self.source = source
        # an unknown user is checked against this, at the file's highest cost
        costs = [int(h[4:6]) for h in self.hashes.values() if h.startswith(b"$2")]
        costs = costs or [DEFAULT_ROUNDS]
        self._decoy = bcrypt.hashpw(b"decoy", bcrypt.gensalt(max(costs)))

    @classmethod
    def load(cls, path: str, max_login: int = 64) -> UserFile:
        """Read ``path``; ValueError naming the line of any bad one."""
        text = Path(path).read_text(encoding="utf-8")
        return cls.parse(text, path, max_login)

    @classmethod
    def parse(cls, text: str, source: str = "", max_login: int = 64) -> UserFile:
        hashes: dict[str, bytes] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}:{number}"
            name, colon, hashed = line.partition(":")
            if not colon:
                raise ValueError(f"{where}: a line is name:hash")
            try:
                user = check_name(name, "user name", max_login)
            except PolicyError as exc:
                raise ValueError(f"{where}: {exc.detail}") from None
            if user != name:
                raise ValueError(f"{where}: the user name has spaces around it")
            if not (BCRYPT_HASH.match(hashed) or ARGON2_HASH.match(hashed)):
                raise ValueError(
                    f"{where}: the hash of {user!r} is not a bcrypt ($2b$...) or argon2 "
                    "($argon2id$...) hash: make one with `stomprelay users hash`"
                )
            if user in hashes:
                raise ValueError(f"{where}: {user!r} is listed twice")
            hashes[user] = hashed.encode("ascii")
        if not hashes:
            raise ValueError(f"{source}: no users (lines of name:hash)")
        log.info("%s: %d static users", source, len(hashes))
        return cls(hashes, source)

    def matches(self, login: str, passcode: str) -> bool:
        """Whether ``passcode`` is ``login``'s password (blocking: bcrypt's time)."""
        data = passcode.encode("utf-8")
        known = self.hashes.get(login)
        if known is not None and known.startswith(b"$argon2"):
            try:
                return PasswordHasher().verify(known.decode("ascii"), data)
            except (VerificationError, InvalidHashError):
                return False
        if len(data) > MAX_PASSWORD:
            return False
        if known is None:
            bcrypt.checkpw(data, self._decoy)
            return False
        return bcrypt.checkpw(data, known)

    async def verify(self, login: str | None, passcode: str | None) -> Identity:
        """The identity ``login``/``passcode`` prove, or AuthError with a plain reason."""
        if not login or not passcode:
            raise AuthError(
                "authentication required",
                "This relay needs a login and passcode (a user of its users file).",
            )
        if not await asyncio.to_thread(self.matches, login, passcode):
            raise AuthError("invalid credentials", "The login or passcode is wrong.")
        return Identity(login, login, verified=True)
