"""Credentials, the ACL and the name rules, without sockets (stomprelay.auth)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from stomprelay.auth import Acl, AuthError, Identity, check_name, token_of
from stomprelay.buckets import TokenBucket
from stomprelay.errors import PolicyError
from stomprelay.tokens import Authenticator, KeySource, issue_token, load_public_key

SECRET = "unit-test-secret-that-is-long-enough"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def rsa_pair() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem


def unsigned(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def refusal(auth: Authenticator, token: str | None) -> str:
    with pytest.raises(AuthError) as caught:
        run(auth.verify(token))
    return caught.value.message


def test_a_good_token_gives_its_identity() -> None:
    auth = Authenticator(secret=SECRET, audience="chat", issuer="https://id.example")
    token = issue_token(
        SECRET,
        "alice",
        name="Alice A.",
        audience="chat",
        issuer="https://id.example",
        claims={"roles": ["mod"], "rooms": ["lobby", "dev"]},
    )
    identity = run(auth.verify(token))
    assert (identity.user, identity.name, identity.verified) == ("alice", "Alice A.", True)
    assert identity.roles == {"mod"}
    assert identity.claim_values("rooms") == {"lobby", "dev"}
    assert identity.expires is not None
    assert identity.expires > time.time()


@dataclass(frozen=True)
class FromNow:
    """A claim's time, relative to when the test runs (not when it is collected: the
    suite runs for minutes after collection)."""

    seconds: int


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"exp": FromNow(-120)}, "invalid token: expired"),
        ({"nbf": FromNow(600)}, "invalid token: not yet valid"),
        ({"aud": "other"}, "invalid token: wrong audience"),
        ({"iss": "https://evil.example"}, "invalid token: wrong issuer"),
        ({"exp": None}, "invalid token: missing claim"),
        ({"sub": None}, "invalid token: missing claim"),
        ({"sub": "al\u202eice"}, "invalid token: bad subject"),
    ],
)
def test_bad_claims_are_refused_with_a_plain_reason(payload: dict[str, Any], message: str) -> None:
    auth = Authenticator(secret=SECRET, audience="chat", issuer="https://id.example", leeway=5)
    body = claims(aud="chat", iss="https://id.example")
    now = int(time.time())
    body.update({k: now + v.seconds if isinstance(v, FromNow) else v for k, v in payload.items()})
    body = {k: v for k, v in body.items() if v is not None}
    assert refusal(auth, jwt.encode(body, SECRET, algorithm="HS256")) == message


def test_leeway_accepts_a_token_just_expired() -> None:
    auth = Authenticator(secret=SECRET, leeway=30)
    token = jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")
    assert run(auth.verify(token)).user == "alice"


def test_missing_none_tampered_and_unknown_algorithms() -> None:
    auth = Authenticator(secret=SECRET)
    assert refusal(auth, None) == "authentication required"
    assert refusal(auth, "") == "authentication required"
    assert refusal(auth, "not a jwt") == "invalid token: malformed"
    assert refusal(auth, unsigned(claims())) == "invalid token: algorithm not allowed"
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    head, _body, sig = good.split(".")
    forged_body = base64.urlsafe_b64encode(json.dumps(claims(sub="mallory")).encode())
    tampered = f"{head}.{forged_body.rstrip(b'=').decode()}.{sig}"
    assert refusal(auth, tampered) == "invalid token: bad signature"
    assert refusal(
        auth, jwt.encode(claims(), "other-secret-of-some-length", algorithm="HS256")
    ) == ("invalid token: bad signature")
    assert refusal(auth, jwt.encode(claims(), SECRET, algorithm="HS512")) == (
        "invalid token: algorithm not allowed"
    )
    assert refusal(auth, "x" * 9000) == "invalid token: malformed"


def test_hs_rs_confusion_is_refused(tmp_path: Path) -> None:
    """A token 'signed' with HS256 using the public key as the secret must not pass
    a relay that only knows that public key, nor one that also has a secret."""
    private, pem = rsa_pair()
    (tmp_path / "pub.pem").write_bytes(pem)
    public = load_public_key(str(tmp_path / "pub.pem"))
    rs_only = Authenticator(public_keys=[public])
    good = jwt.encode(claims(), private, algorithm="RS256")
    assert run(rs_only.verify(good)).user == "alice"
    # PyJWT itself refuses a PEM as an HMAC key; build the forgery by hand.
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing = f"{head}.{b64(json.dumps(claims()).encode())}"
    forged = f"{signing}.{b64(hmac.new(pem, signing.encode(), hashlib.sha256).digest())}"
    assert refusal(rs_only, forged) == "invalid token: algorithm not allowed"
    both = Authenticator(secret=SECRET, public_keys=[public])
    assert refusal(both, forged) == "invalid token: bad signature"
    # and an RS256 token never meets the HMAC secret
    assert refusal(both, jwt.encode(claims(), rsa_pair()[0], algorithm="RS256")) == (
        "invalid token: bad signature"
    )


def test_es256_with_a_jwks_file_and_key_rotation(tmp_path: Path) -> None:
    first = ec.generate_private_key(ec.SECP256R1())
    second = ec.generate_private_key(ec.SECP256R1())

    def jwk(key: Any, kid: str) -> dict[str, Any]:
        entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        entry.update(kid=kid, use="sig", alg="ES256")
        return dict(entry)

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(first, "k1")]}))
    source = KeySource(str(path), refresh=300, min_refresh=0)
    source.load_now()
    auth = Authenticator(jwks=source)
    one = jwt.encode(claims(), first, algorithm="ES256", headers={"kid": "k1"})
    two = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k2"})
    assert run(auth.verify(one)).user == "alice"
    assert refusal(auth, two) == "invalid token: algorithm not allowed"  # no key k2 yet
    path.write_text(json.dumps({"keys": [jwk(first, "k1"), jwk(second, "k2")]}))
    assert run(auth.verify(two)).user == "alice"  # an unknown kid reloads the set
    wrong = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k1"})
    assert refusal(auth, wrong) == "invalid token: bad signature"


def test_token_of_prefers_the_bearer_header() -> None:
    assert token_of([("passcode", "p"), ("Authorization", "Bearer t")]) == "t"
    assert token_of([("authorization", "bearer  t2 ")]) == "t2"
    assert token_of([("authorization", "Basic xyz"), ("passcode", "p")]) == "p"
    assert token_of([("passcode", " ")]) is None
    assert token_of([]) is None


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "a" * 65, "ali\u202ece", "bob\u2066", "x\x00y", "tab\there", "zw\u200bj", "\ud800"],
)
def test_names_refuse_control_bidi_and_overlong(bad: str) -> None:
    with pytest.raises(PolicyError):
        check_name(bad, "login", 64)


def test_names_keep_ordinary_unicode() -> None:
    assert check_name("  Zoë 日本 😀 ", "username", 64) == "Zoë 日本 😀"
    assert check_name("a" * 64, "login", 64) == "a" * 64


ACL = {
    "rules": [
        {
            "roles": ["admin"],
            "subscribe": ["/topic/**"],
            "send": ["/topic/**", "/app/**"],
        },
        {
            "users": "*",
            "subscribe": [
                "/topic/room/{claim.rooms}",
                "/app/room/{claim.rooms}/participants",
                "/topic/user/{user}",
                "/topic/broadcast",
            ],
            "send": ["/app/room/{claim.rooms}/*"],
            "members_only": True,
        },
        {"claims": {"scope": "news:read"}, "subscribe": ["/topic/news/*"]},
    ]
}


def ident(user: str, **claims_: Any) -> Identity:
    roles = claims_.pop("roles", [])
    return Identity(user, user, True, None, frozenset(roles), claims_)


def test_acl_decisions() -> None:
    acl = Acl.from_document(ACL, "test")
    alice = ident("alice", rooms=["lobby"], scope="openid news:read")
    member = {"lobby"}.__contains__
    nobody = set[str]().__contains__
    assert acl.allows(alice, "subscribe", "/topic/room/lobby", member)
    assert not acl.allows(alice, "subscribe", "/topic/room/lobby", nobody)  # members only
    assert not acl.allows(alice, "subscribe", "/topic/room/secret", member)
    assert acl.allows(alice, "send", "/app/room/lobby/join", nobody)  # joining needs no membership
    assert not acl.allows(alice, "send", "/app/room/secret/join", nobody)
    assert acl.allows(alice, "subscribe", "/topic/user/alice", nobody)
    assert not acl.allows(alice, "subscribe", "/topic/user/bob", nobody)
    assert acl.allows(alice, "subscribe", "/topic/news/today", nobody)
    assert not acl.allows(alice, "send", "/topic/news/today", nobody)
    assert not acl.allows(alice, "send", "/topic/room/lobby", member)
    admin = ident("root", roles=["admin"])
    assert acl.allows(admin, "send", "/topic/room/any", nobody)
    assert acl.allows(admin, "subscribe", "/topic/a/b/c", nobody)


def test_acl_files_in_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "acl.toml"
    toml.write_text('[[rules]]\nusers = ["alice"]\nsubscribe = ["/topic/room/*"]\n')
    yaml_file = tmp_path / "acl.yaml"
    yaml_file.write_text("rules:\n  - users: [alice]\n    subscribe: ['/topic/room/*']\n")
    for path in (toml, yaml_file):
        acl = Acl.load(str(path))
        assert acl.allows(ident("alice"), "subscribe", "/topic/room/x", lambda r: False)
        assert not acl.allows(ident("bob"), "subscribe", "/topic/room/x", lambda r: False)


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"rules": "x"},
        {"rules": [{"users": ["a"]}]},
        {"rules": [{"subscribe": ["no-slash"]}]},
        {"rules": [{"subscribe": ["/a/**/b"]}]},
        {"rules": [{"subscribe": ["/a"], "typo": 1}]},
        {"rules": [{"subscribe": [1]}]},
    ],
)
def test_bad_acl_documents_are_refused(document: object) -> None:
    with pytest.raises(ValueError, match="test"):
        Acl.from_document(document, "test")


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.take(0.1)  # one token back after 100 ms
    assert not bucket.take(0.1)
    assert bucket.full(10.0)
    assert TokenBucket(rate=0, burst=1, now=0).take(0.0, 10**9)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda a, b, c: f"{a}.{b}.{c}",
            st.text(alphabet="ABCDEFGHIJKLMNOPabcdef0123456789-_=", max_size=60),
            st.text(alphabet="ABCDEFGHIJKLMNOPabcdef0123456789-_=", max_size=60),
            st.text(max_size=40),
        ),
        st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4).map(
            lambda h: base64.urlsafe_b64encode(json.dumps(h).encode()).decode() + ".e30.x"
        ),
    )
)
def test_fuzzed_tokens_only_ever_get_a_refusal(token: str) -> None:
    auth = Authenticator(secret=SECRET)
    with pytest.raises(AuthError) as caught:
        run(auth.verify(token))
    message = caught.value.message
    assert message == "authentication required" or message.startswith("invalid token")


def test_jwks_from_a_url_rotates_and_survives_an_outage() -> None:
    """A JWKS URL (as identity providers publish): a new kid is fetched on first
    sight; while the endpoint is down the keys already loaded keep working."""
    import http.server
    import threading

    first = ec.generate_private_key(ec.SECP256R1())
    second = ec.generate_private_key(ec.SECP256R1())

    def jwk(key: Any, kid: str) -> dict[str, Any]:
        entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        entry.update(kid=kid, use="sig")
        return dict(entry)

    state: dict[str, Any] = {"keys": [jwk(first, "k1")], "up": True, "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["hits"] += 1
            if not state["up"]:
                self.send_error(503)
                return
            body = json.dumps({"keys": state["keys"]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = KeySource(f"http://127.0.0.1:{server.server_port}/jwks", 300, 0)
        source.load_now()
        auth = Authenticator(jwks=source)
        one = jwt.encode(claims(), first, algorithm="ES256", headers={"kid": "k1"})
        two = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k2"})
        assert run(auth.verify(one)).user == "alice"
        state["keys"] = [jwk(first, "k1"), jwk(second, "k2")]
        assert run(auth.verify(two)).user == "alice"
        state["up"] = False
        hits = state["hits"]
        three = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k3"})
        assert refusal(auth, three) == "invalid token: algorithm not allowed"
        assert state["hits"] == hits + 1  # it tried
        assert run(auth.verify(one)).user == "alice"  # and kept what it had
    finally:
        server.shutdown()
