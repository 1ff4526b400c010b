"""Connection hygiene's pure helpers (stomprelay/transport/hygiene.py): Origin
patterns, the client address behind trusted proxies, per-address limits with a
clock passed in. No sockets, no sleeps."""

from __future__ import annotations

import pytest

from stomprelay.transport.hygiene import (
    AddressLimits,
    OriginPattern,
    OriginPolicy,
    TrustedProxies,
    is_loopback,
    limit_key,
    parse_address,
    parse_networks,
    same_origin,
)

# -- origins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "origin", "matches"),
    [
        ("https://example.com", "https://example.com", True),
        ("https://example.com", "https://example.com:443", True),
        ("https://example.com", "https://EXAMPLE.com", True),
        ("https://example.com", "https://example.com.evil.com", False),
        ("https://example.com", "https://evil-example.com", False),
        ("https://example.com", "https://sub.example.com", False),
        ("https://example.com", "http://example.com", False),
        ("https://example.com", "https://example.com:8443", False),
        ("https://example.com", "null", False),
        ("https://example.com", "https://example.com/path", False),
        ("https://example.com", "https://user@example.com", False),
        ("https://*.example.com", "https://chat.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "https://a.b.example.com", False),
        ("https://*.example.com", "https://chat.example.com.evil.com", False),
        ("https://*.example.com", "https://evil.com/.example.com", False),
        ("https://*.example.com", "https://chatexample.com", False),
        ("https://*.*.example.com", "https://a.b.example.com", True),
        ("https://app-*.example.com", "https://app-eu.example.com", True),
        ("https://app-*.example.com", "https://app-eu.evil.example.com", False),
        ("http://localhost:*", "http://localhost:5173", True),
        ("http://localhost:*", "http://localhost", True),
        ("http://localhost:*", "https://localhost:5173", False),
        ("http://localhost:8080", "http://localhost:8081", False),
        ("http://[::1]:8080", "http://[::1]:8080", True),
        ("https://*", "https://anything.example.org", True),
        ("https://*", "http://anything.example.org", False),
        ("null", "null", True),
        ("null", "https://example.com", False),
        ("*", "null", True),
        ("*", "https://whatever.example", True),
    ],
)
def test_origin_patterns(pattern: str, origin: str, matches: bool) -> None:
    assert OriginPattern.parse(pattern).matches(origin) is matches


@pytest.mark.parametrize(
    "bad", ["example.com", "https://", "https://example.com/", "ftp://example.com", "https:/x"]
)
def test_bad_origin_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"origin|port"):
        OriginPattern.parse(bad)


@pytest.mark.parametrize(
    ("origin", "hosts", "same"),
    [
        ("http://relay.example:8080", ["relay.example:8080"], True),
        ("http://relay.example", ["relay.example"], True),
        ("http://relay.example", ["relay.example:80"], True),
        ("https://relay.example", ["relay.example"], True),
        ("https://relay.example", ["relay.example:443"], True),
        ("https://relay.example", ["relay.example:80"], False),
        ("http://relay.example:8080", ["relay.example"], False),
        ("http://evil.example", ["relay.example"], False),
        ("http://relay.example.evil.com", ["relay.example"], False),
        ("http://[::1]:8080", ["[::1]:8080"], True),
        ("http://relay.example", ["proxy.internal", "relay.example"], True),
        ("null", ["null"], False),
        ("http://relay.example", [], False),
        ("http://relay.example", ["bad host:x"], False),
    ],
)
def test_same_origin(origin: str, hosts: list[str], same: bool) -> None:
    assert same_origin(origin, hosts) is same


def test_origin_policy() -> None:
    default = OriginPolicy()
    assert default.allows([], ["relay:8080"]), "no Origin: non-browser clients are served"
    assert default.allows(["http://relay:8080"], ["relay:8080"]), "the relay's own page"
    assert not default.allows(["http://evil.example"], ["relay:8080"])
    assert not default.allows(["null"], ["relay:8080"])
    assert not default.allows(["http://relay:8080", "http://relay:8080"], ["relay:8080"])

    strict = OriginPolicy(["https://*.example.com", "null"], allow_missing=False)
    assert not strict.allows([], ["relay:8080"])
    assert strict.allows(["https://chat.example.com"], ["relay:8080"])
    assert strict.allows(["null"], ["relay:8080"])
    assert strict.allows(["http://relay:8080"], ["relay:8080"]), "same origin stays allowed"
    assert not strict.allows(["https://example.com"], ["relay:8080"])

    assert OriginPolicy(["*"]).allows(["http://evil.example"], ["relay:8080"])


# -- addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("203.0.113.7:5000", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:5000", "2001:db8::1"),
        ("::ffff:198.51.100.2", "198.51.100.2"),
        ("unknown", None),
        ("", None),
        ("203.0.113.999", None),
        ("_hidden", None),
    ],
)
def test_parse_address(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed is not None else None) == address


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8", " ::1 ", "", "192.168.1.7/24"])] == [
        "10.0.0.0/8",
        "::1/128",
        "192.168.1.0/24",
    ]
    with pytest.raises(ValueError, match="not-a-range"):
        parse_networks(["10.0.0.0/8", "not-a-range"])


def test_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.8.9.10")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("203.0.113.7")
    assert not is_loopback("")
    assert not is_loopback("localhost")


PROXIES = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # a direct client cannot forge its address
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),
        ("203.0.113.7", [], "203.0.113.7"),
        # from a proxy: the rightmost address that is not a proxy of ours
        ("10.0.0.2", ["203.0.113.7"], "203.0.113.7"),
        ("10.0.0.2", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
        ("10.0.0.2", ["198.51.100.1, 203.0.113.7, 10.0.0.9"], "203.0.113.7"),
        ("10.0.0.2", ["198.51.100.1", "203.0.113.7, 10.0.0.9"], "203.0.113.7"),
        ("127.0.0.1", ["127.0.0.1, 203.0.113.7"], "203.0.113.7"),
        ("10.0.0.2", ["[2001:db8::5]:4711"], "2001:db8::5"),
        # nothing forwarded, or everyone a proxy
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.3, 10.0.0.4"], "10.0.0.3"),
        ("10.0.0.2", ["203.0.113.7, "], "203.0.113.7"),
        # garbage: the peer
        ("10.0.0.2", ["203.0.113.7, garbage"], "10.0.0.2"),
        ("10.0.0.2", ["unknown"], "10.0.0.2"),
        # an entry left of the client is the client's own word: not looked at
        ("10.0.0.2", ["garbage, 203.0.113.7"], "203.0.113.7"),
        ("::ffff:10.0.0.2", ["203.0.113.7"], "203.0.113.7"),
    ],
)
def test_client_behind_trusted_proxies(peer: str, forwarded: list[str], client: str) -> None:
    assert PROXIES.client(peer, forwarded) == client


def test_no_trusted_proxies_believe_nothing() -> None:
    nobody = TrustedProxies()
    assert not nobody
    assert nobody.client("127.0.0.1", ["203.0.113.7"]) == "127.0.0.1"
    assert not nobody.trusts("127.0.0.1")
    assert PROXIES.trusts("10.1.2.3")
    assert not PROXIES.trusts("127.0.0.2")


# -- per-address limits --------------------------------------------------------------


def test_limit_key_groups_ipv6_by_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::9")
    assert limit_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("203.0.113.7") == "203.0.113.7"
    assert limit_key("::1") == "::1"


def test_connection_cap() -> None:
    limits = AddressLimits(max_connections=2, rate=0, burst=1)
    for _ in range(2):
        assert limits.admit("203.0.113.7", 0.0) is None
        limits.acquire("203.0.113.7")
    refusal = limits.admit("203.0.113.7", 0.0)
    assert refusal is not None
    assert (refusal.reason, refusal.status, refusal.retry_after) == ("ip_cap", 429, None)
    assert refusal.first
    again = limits.admit("203.0.113.7", 0.1)
    assert again is not None
    assert not again.first, "one log line per run of refusals"
    assert limits.admit("198.51.100.1", 0.1) is None, "other addresses are not affected"
    limits.release("203.0.113.7", 0.2)
    assert limits.admit("203.0.113.7", 0.2) is None
    assert limits.connections("203.0.113.7") == 1


def test_handshake_rate_is_a_token_bucket() -> None:
    limits = AddressLimits(max_connections=0, rate=2.0, burst=3)
    assert [limits.admit("203.0.113.7", 10.0) is None for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    refusal = limits.admit("203.0.113.7", 10.0)
    assert refusal is not None
    assert (refusal.reason, refusal.status, refusal.retry_after) == ("ip_rate", 429, 1)
    assert limits.admit("198.51.100.1", 10.0) is None
    assert limits.admit("203.0.113.7", 10.6) is None, "a token back after 0.5 s"
    assert limits.admit("203.0.113.7", 10.6) is not None


def test_retry_after_rounds_up() -> None:
    limits = AddressLimits(max_connections=0, rate=0.25, burst=1)
    assert limits.admit("203.0.113.7", 0.0) is None
    refusal = limits.admit("203.0.113.7", 1.0)
    assert refusal is not None
    assert refusal.retry_after == 3  # 0.25 of a token back after 1 s: 3 s to go


def test_limits_off() -> None:
    limits = AddressLimits(max_connections=0, rate=0, burst=1)
    for _ in range(10_000):
        assert limits.admit("203.0.113.7", 0.0) is None
        limits.acquire("203.0.113.7")
    assert len(limits) == 0, "no state kept when nothing is limited"


def test_state_is_forgotten_once_idle() -> None:
    """Bounded memory: an address with no connection and a full bucket leaves no trace."""
    limits = AddressLimits(max_connections=10, rate=1.0, burst=5)
    for n in range(1000):
        assert limits.admit(f"198.51.{n // 256}.{n % 256}", 0.0) is None
    assert len(limits) == 1000
    limits.admit("203.0.113.7", 0.2)
    limits.acquire("203.0.113.7")
    limits.sweep(0.3)
    assert len(limits) == 1001, "buckets still refilling are kept"
    limits.sweep(1.0)  # one token taken at 1/s: full again after 1 s
    assert len(limits) == 1, "only the address with an open connection"
    limits.release("203.0.113.7", 1.5)  # its bucket full since 1.2: forgotten at once
    assert len(limits) == 0
    limits.admit("203.0.113.7", 2.0)
    assert len(limits) == 1
    limits.admit("198.51.100.1", 5.0)  # the periodic sweep runs from admit
    assert len(limits) == 1


def test_release_of_an_unknown_address_is_harmless() -> None:
    limits = AddressLimits(max_connections=1, rate=0, burst=1)
    limits.release("203.0.113.7", 0.0)
    assert len(limits) == 0
