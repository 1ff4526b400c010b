"""Static users (stomprelay.passwords): the file, the hashes, the answers at CONNECT."""

from __future__ import annotations

import pytest

from stomprelay.auth import AuthError, looks_like_token
from stomprelay.passwords import UserFile, hash_password
from stomprelay.tokens import issue_token


@pytest.fixture(scope="module")
def guest_hash() -> str:
    return hash_password("guest", 4)


def test_a_hash_matches_its_password_only(guest_hash: str) -> None:
    users = UserFile.parse(f"guest:{guest_hash}")
    assert users.matches("guest", "guest")
    assert not users.matches("guest", "Guest")
    assert not users.matches("nobody", "guest")
    assert not users.matches("guest", "g" * 100)
    assert hash_password("guest", 4) != guest_hash, "each hash has its own salt"


def test_htpasswd_bcrypt_lines_are_read(guest_hash: str) -> None:
    """``htpasswd -B`` writes $2y$; comments and blank lines are skipped."""
    text = f"# made by htpasswd -nbB\n\n  guest:{guest_hash.replace('$2b$', '$2y$')}  \n"
    assert UserFile.parse(text).matches("guest", "guest")


def test_argon2_lines_are_read() -> None:
    """An argon2 hash in PHC format (argon2-cffi's, the argon2 command's) is a user's
    hash too; it reads passwords past bcrypt's 72 bytes whole."""
    from argon2 import PasswordHasher

    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    long = "p" * 100
    users = UserFile.parse(f"guest:{hasher.hash('guest')}\nlong:{hasher.hash(long)}\n")
    assert users.matches("guest", "guest")
    assert not users.matches("guest", "Guest")
    assert users.matches("long", long)
    assert not users.matches("long", long[:72])
    assert not users.matches("nobody", "guest")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("guest", "f:1: a line is name:hash"),
        ("guest:guest", "f:1: the hash of 'guest' is not a bcrypt"),
        ("guest:$argon2id$v=19$m=65536$c2FsdA$aGFzaA", "is not a bcrypt"),
        (":{h}", "f:1: The user name must not be empty"),
        ("gu\u202eest:{h}", "must not contain control"),
        ("guest:{h}\nguest:{h}", "f:2: 'guest' is listed twice"),
        (" guest :{h}", "spaces around it"),
        ("# nobody\n", "f: no users"),
    ],
)
def test_bad_files_name_the_line(guest_hash: str, text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said.replace("$", r"\$")):
        UserFile.parse(text.replace("{h}", guest_hash), "f")


@pytest.mark.parametrize(
    ("password", "rounds", "said"),
    [("", 12, "empty"), ("é" * 37, 12, "72 bytes"), ("ok", 3, "rounds"), ("ok", 32, "rounds")],
)
def test_what_cannot_be_hashed_is_refused(password: str, rounds: int, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        hash_password(password, rounds)


async def test_verify_answers_in_plain_words(guest_hash: str) -> None:
    users = UserFile.parse(f"guest:{guest_hash}")
    identity = await users.verify("guest", "guest")
    assert (identity.user, identity.name, identity.verified) == ("guest", "guest", True)
    for login, passcode, message in [
        (None, None, "authentication required"),
        ("guest", None, "authentication required"),
        ("guest", "", "authentication required"),
        (None, "guest", "authentication required"),
        ("guest", "wrong", "invalid credentials"),
        ("mallory", "guest", "invalid credentials"),
    ]:
        with pytest.raises(AuthError) as caught:
            await users.verify(login, passcode)
        assert caught.value.message == message


def test_only_a_jwt_shaped_passcode_is_a_token() -> None:
    assert looks_like_token(issue_token("k" * 32, "bob", ttl=60))
    for other in (None, "", "guest", "a.b.c", "eyJ.only-two", "eyJhbGc.x.y.z", "eyJ a.b.c"):
        assert not looks_like_token(other)
