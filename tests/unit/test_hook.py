"""The authorization hook's pure parts: answers parsed strictly, reasons sanitised,
signatures as a receiver checks them, and the answer cache (ttl, bound) on a fake
clock. The HTTP exchange itself is in tests/integration/test_auth_hook.py."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from stomprelay.hook import MAX_REASON, AuthHook, Verdict, sanitized, signature


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"null",
        b'{"allow": 1}',
        b'{"allow": true, "ttl": -1}',
        b'{"allow": true, "ttl": "5"}',
        b'{"allow": true, "user": 5}',
        b'{"allow": false, "reason": []}',
        b"\xff",
        b"[" * 100_000,
    ],
)
def test_a_malformed_answer_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match=r'JSON|"allow"|strings|"ttl"'):
        Verdict.parse(body)


def test_an_answer_keeps_its_fields() -> None:
    verdict = Verdict.parse(
        b'{"allow": false, "reason": "no\\u0000pe\\u202e", "user": "bob", "ttl": 5}'
    )
    assert verdict == Verdict(False, "no pe", "bob", 5.0)
    assert Verdict.parse(b'{"allow": true}') == Verdict(True)
    assert len(sanitized("x" * 1000)) == MAX_REASON


def test_the_signature_is_what_an_independent_receiver_computes() -> None:
    body = b'{"action":"connect"}'
    header = signature("s3cret", body, 1700000000)
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert (t, v1) == ("1700000000", expected)


def test_cached_answers_expire_and_the_cache_is_bounded() -> None:
    now = [100.0]
    hook = AuthHook("http://127.0.0.1:9/h", clock=lambda: now[0], cache_size=2)
    hook._keep("bob", "subscribe", "/topic/a", Verdict(True, ttl=10))
    hook._keep("bob", "connect", "", Verdict(True, ttl=10))  # never kept
    hook._keep("bob", "send", "/topic/a", Verdict(False, ttl=0))  # no ttl: not kept
    hook._keep("", "subscribe", "/topic/a", Verdict(True, ttl=10))  # no user: not kept
    assert hook.cached("", "subscribe", "/topic/a") is None
    assert hook.cached("bob", "subscribe", "/topic/a") == Verdict(True, ttl=10)
    assert hook.cached("bob", "connect", "") is None
    assert hook.cached("bob", "send", "/topic/a") is None
    assert hook.cached("alice", "subscribe", "/topic/a") is None
    hook._keep("bob", "subscribe", "/topic/b", Verdict(True, ttl=10))
    hook._keep("bob", "subscribe", "/topic/c", Verdict(True, ttl=10))
    assert hook.cached("bob", "subscribe", "/topic/a") is None  # the oldest went
    now[0] = 110.0
    assert hook.cached("bob", "subscribe", "/topic/c") is None  # expired


@pytest.mark.parametrize(
    ("url", "actions"),
    [("ftp://x/h", ("connect",)), ("http:///h", ("connect",)), ("http://x/h", ("publish",))],
)
def test_bad_settings_are_refused(url: str, actions: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="--auth-hook"):
        AuthHook(url, actions=actions)
