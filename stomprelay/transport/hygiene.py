"""Connection hygiene, as pure helpers: which Origins may open a WebSocket, who
the client is behind a proxy, and per-address connection and handshake limits.

Nothing here touches a socket or reads a clock: the protocols pass
the request's headers, the socket's peer and ``now`` in (docs/security.md).

- Origins (RFC 6454): a browser names the page that opens a WebSocket in
  ``Origin``, and sends the site's cookies whoever the page is; checking it at
  the handshake is what stops another site's page from opening a session in a
  visitor's name (cross-site WebSocket hijacking).
- ``X-Forwarded-For`` is whatever the peer wrote: it is believed only from a
  trusted proxy, and then only as far as the proxies go. Each proxy appends the
  address it saw, so the rightmost entry that is not one of our proxies is the
  first address no proxy of ours vouches for: the client. Everything left of it
  is the client's own word.
- Per-address limits: open connections, and handshakes per second as a token
  bucket. State is kept only for addresses that have a connection open or a
  bucket still refilling, so memory follows the live load, not every address
  ever seen. IPv6 clients count per /64 (one subscriber's usual allocation);
  a per-address limit on single IPv6 addresses would cost an attacker nothing.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stomprelay.buckets import TokenBucket

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What ``--trust-proxy`` (deprecated) stands for: a proxy on the same host.
LOOPBACK_PROXIES = ("127.0.0.0/8", "::1/128")
#: Ports an Origin or Host leaves out (RFC 6454 section 4, RFC 6455 section 3).
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Seconds between sweeps of per-address state nobody needs any more.
SWEEP_INTERVAL = 1.0

_HOST = r"(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]@?#]+)"
_ORIGIN = re.compile(rf"([A-Za-z][A-Za-z0-9+.-]*)://{_HOST}(?::([0-9]{{1,5}}|\*))?")
_AUTHORITY = re.compile(rf"{_HOST}(?::([0-9]{{1,5}}))?")


# -- addresses ---------------------------------------------------------------------


def parse_address(text: str) -> Address | None:
    """An IP address as a proxy or socket gives it (``1.2.3.4``, ``::1``,
    ``[::1]:5000``, ``1.2.3.4:5000``), IPv4-mapped IPv6 as IPv4; None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDR ranges (a bare address is its own range); ValueError names a bad one."""
    networks = []
    for cidr in cidrs:
        cidr = cidr.strip()
        if not cidr:
            continue
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def is_loopback(address: str) -> bool:
    parsed = parse_address(address)
    return parsed is not None and parsed.is_loopback


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks = parse_networks(cidrs)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer: str) -> bool:
        address = parse_address(peer)
        return address is not None and self._trusted(address)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str, forwarded: Sequence[str]) -> str:
        """The client's address: the socket's ``peer`` unless it is a trusted proxy;
        then the rightmost ``X-Forwarded-For`` entry (over every copy of the header,
        in order) that is not a trusted proxy. An entry that is no IP address ends
        the walk with the peer: a proxy chain we cannot read names nobody."""
        peer_address = parse_address(peer)
        if peer_address is None:
            return peer
        if not self.networks or not self._trusted(peer_address):
            return str(peer_address)
        entries = [e for value in forwarded for e in value.split(",") if e.strip()]
        leftmost: Address | None = None
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                return str(peer_address)
            if not self._trusted(address):
                return str(address)
            leftmost = address
        # every hop is one of ours (a client inside the trusted ranges): the first of them
        return str(leftmost or peer_address)


# -- origins -----------------------------------------------------------------------


def _default_port(scheme: str) -> int | None:
    return DEFAULT_PORTS.get(scheme)


def _host_regex(host: str) -> re.Pattern[str]:
    """``*`` matches one whole label (``*.example.com``) or part of one (``app-*``),
    never a dot; a host of ``*`` alone matches every host."""
    if host == "*":
        return re.compile(r".+")
    labels = []
    for label in host.split("."):
        if label == "*":
            labels.append(r"[^.]+")
        else:
            labels.append("[^.]*".join(re.escape(part) for part in label.split("*")))
    return re.compile(r"\.".join(labels))


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """One allowed origin: ``scheme://host[:port]`` with ``*`` wildcards in the
    host (per label) and as the port; ``null``; or ``*`` (any origin)."""

    text: str
    scheme: str = ""
    host: re.Pattern[str] | None = None
    #: None: the scheme's default port; -1: any port.
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> OriginPattern:
        text = text.strip()
        if text in ("*", "null"):
            return cls(text)
        match = _ORIGIN.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not an origin (scheme://host[:port], null or *)")
        scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
        if port == "*":
            number: int | None = -1
        elif port is not None:
            number = int(port)
        else:
            number = _default_port(scheme)
            if number is None:
                raise ValueError(f"{text!r} needs a port: {scheme} has no default")
        return cls(text, scheme, _host_regex(host), number)

    def matches(self, origin: str) -> bool:
        if self.text == "*":
            return True
        if self.text == "null":
            return origin == "null"
        parsed = parse_origin(origin)
        if parsed is None or self.host is None:
            return False
        scheme, host, port = parsed
        return (
            scheme == self.scheme
            and (self.port == -1 or port == self.port)
            and self.host.fullmatch(host) is not None
        )


def parse_origin(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a serialized origin, the default port filled in;
    None for ``null`` and anything that is not one (a path, userinfo, spaces)."""
    match = _ORIGIN.fullmatch(origin)
    if match is None or match.group(3) == "*":
        return None
    scheme, host = match.group(1).lower(), match.group(2).lower()
    port = int(match.group(3)) if match.group(3) else _default_port(scheme)
    return scheme, host, port


def same_origin(origin: str, hosts: Iterable[str]) -> bool:
    """Whether the Origin's host and port are those the request was addressed to
    (its ``Host``, or what a trusted proxy says it was). A Host without a port has
    the Origin scheme's default one: the scheme itself the relay cannot see."""
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    scheme, host, port = parsed
    for authority in hosts:
        match = _AUTHORITY.fullmatch(authority.strip())
        if match is None:
            continue
        their_port = int(match.group(2)) if match.group(2) else _default_port(scheme)
        if match.group(1).lower() == host and their_port == port:
            return True
    return False


class OriginPolicy:
    """Which handshakes may proceed by their ``Origin`` header.

    The request's own origin (same host and port) is always allowed, as the web
    page the relay serves comes from there; ``allowed`` adds more; a missing
    Origin (non-browser clients) is allowed when ``allow_missing``; ``null``
    (sandboxed frames, ``file:`` pages, some redirects) only when listed.
    """

    def __init__(self, allowed: Iterable[str] = (), allow_missing: bool = True) -> None:
        self.patterns = tuple(OriginPattern.parse(text) for text in allowed if text.strip())
        self.allow_missing = allow_missing

    def allows(self, origins: Sequence[str], hosts: Iterable[str]) -> bool:
        """``origins``: every Origin header of the request (two are refused: which
        would the browser have meant?); ``hosts``: the authorities it counts as its own."""
        if not origins:
            return self.allow_missing
        if len(origins) > 1:
            return False
        origin = origins[0].strip()
        if origin != "null" and same_origin(origin, hosts):
            return True
        return any(pattern.matches(origin) for pattern in self.patterns)


# -- per-address limits ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection is turned away: ``reason`` is the metric label."""

    reason: str  # "origin", "ip_cap" or "ip_rate"
    status: int
    text: str
    #: Seconds until a handshake would be admitted (the ``Retry-After`` header).
    retry_after: int | None = None
    #: The address was not being refused until now (the one refusal worth an INFO line).
    first: bool = True


ORIGIN_REFUSED = Refusal("origin", 403, "Origin not allowed\n")


class _Entry:
    __slots__ = ("bucket", "connections", "refused")

    def __init__(self, bucket: TokenBucket | None) -> None:
        self.connections = 0
        self.bucket = bucket
        self.refused = False


def limit_key(address: str) -> str:
    """What an address counts under: itself, or its /64 for (non-loopback) IPv6."""
    parsed = parse_address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and not parsed.is_loopback:
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


class AddressLimits:
    """Open connections and handshake rate per client address, for one relay.

    ``max_connections`` 0 and ``rate`` 0 turn each limit off. :meth:`admit`
    takes a handshake token and checks the cap; :meth:`acquire` and
    :meth:`release` count a connection that was let in.
    """

    def __init__(self, max_connections: int, rate: float, burst: int) -> None:
        self.max_connections = max(max_connections, 0)
        self.rate = max(rate, 0.0)
        self.burst = max(burst, 1)
        self._entries: dict[str, _Entry] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        """Addresses with state (what the bounded-memory promise is about)."""
        return len(self._entries)

    def connections(self, address: str) -> int:
        entry = self._entries.get(limit_key(address))
        return entry.connections if entry is not None else 0

    def admit(self, address: str, now: float) -> Refusal | None:
        """One handshake from ``address``: None to go on, or why not."""
        if now >= self._next_sweep:
            self.sweep(now)
        if not self.max_connections and not self.rate:
            return None
        key = limit_key(address)
        entry = self._entries.get(key)
        if entry is None:
            bucket = TokenBucket(self.rate, self.burst, now) if self.rate else None
            entry = self._entries[key] = _Entry(bucket)
        refusal = None
        if entry.bucket is not None and not entry.bucket.take(now):
            wait = (1.0 - entry.bucket.level) / self.rate
            refusal = Refusal(
                "ip_rate",
                429,
                "too many connection attempts\n",
                retry_after=max(1, math.ceil(wait)),
                first=not entry.refused,
            )
        elif self.max_connections and entry.connections >= self.max_connections:
            refusal = Refusal("ip_cap", 429, "too many connections\n", first=not entry.refused)
        entry.refused = refusal is not None
        return refusal

    def acquire(self, address: str) -> None:
        if not self.max_connections and not self.rate:
            return
        key = limit_key(address)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(None)
        entry.connections += 1

    def release(self, address: str, now: float) -> None:
        key = limit_key(address)
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.connections = max(entry.connections - 1, 0)
        if not entry.connections and (entry.bucket is None or entry.bucket.full(now)):
            del self._entries[key]

    def sweep(self, now: float) -> None:
        """Forget addresses with no connection and a full bucket."""
        self._next_sweep = now + SWEEP_INTERVAL
        idle = [
            key
            for key, entry in self._entries.items()
            if not entry.connections and (entry.bucket is None or entry.bucket.full(now))
        ]
        for key in idle:
            del self._entries[key]
