"""Where Redis is, in the three modes the relay runs on (docs/redis.md, "Modes").

* ``standalone``: one Redis (``--redis-url redis://host:6379/0``).
* ``sentinel``: a master found through Sentinel (``--redis-sentinel h:p,h:p``,
  ``--redis-master-name``); ``--redis-url`` then gives only the password, the
  database and TLS for the master (its host is ignored). Connections follow a
  failover: a new connection asks the sentinels for the master, one that meets
  a demoted master (READONLY, or ROLE says replica) is dropped.
* ``cluster``: Redis Cluster from seed nodes (``--redis-url`` with several URLs
  separated by commas); commands follow MOVED/ASK, scripts are loaded again on
  NOSCRIPT, room channels are sharded (``sharded.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

MODES = ("standalone", "sentinel", "cluster")

#: Seconds to wait for a connection, and for any one command.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 3.0
#: Seconds a bus's or a registry's close may take, whatever Redis and its tasks do
#: (stomprelay.bounded): a paused Redis, a reader that swallowed its cancellation.
CLOSE_TIMEOUT = 4.0
#: Most connections one client (registry and log, or the bus) opens to Redis.
POOL_SIZE = 64


def parse_hosts(text: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """``h1:p1,h2:p2`` (or ``redis://h:p`` items) -> ((host, port), ...)."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "://" not in item:
            item = "redis://" + item
        parts = urlsplit(item)
        try:
            port = parts.port or default_port
        except ValueError:
            raise ValueError(f"bad port in {item!r}") from None
        if not parts.hostname:
            raise ValueError(f"no host in {item!r}")
        out.append((parts.hostname, port))
    if not out:
        raise ValueError("no host given")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A Redis deployment: its mode and where to find it."""

    url: str
    mode: str = "standalone"
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = "mymaster"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"redis mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError("sentinel mode needs --redis-sentinel host:port[,host:port...]")
        if self.mode != "cluster" and "," in self.url:
            raise ValueError("several Redis URLs are seed nodes: give --redis-mode cluster")

    @classmethod
    def of(cls, target: RedisTarget | str) -> RedisTarget:
        return target if isinstance(target, RedisTarget) else cls(target)

    @property
    def sharded(self) -> bool:
        return self.mode == "cluster"

    @property
    def first_url(self) -> str:
        return self.url.split(",")[0].strip()

    def describe(self) -> str:
        """For logs and ``/health``: no passwords."""
        if self.mode == "sentinel":
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {self.master_name} via {hosts}"
        hosts = ",".join(f"{h}:{p}" for h, p in parse_hosts(self.url, 6379))
        return f"{self.mode} {hosts}"


def _auth(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    out: dict[str, Any] = {}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        out["ssl"] = True
    return out


def make_client(
    target: RedisTarget | str,
    decode: bool,
    health_check: int = 0,
    timeout: float = COMMAND_TIMEOUT,
    pool_size: int = POOL_SIZE,
) -> Any:
    """A client that fails fast on a dead Redis, and queues on a busy pool.

    ``health_check``: PING a pooled connection idle this long (s) before using
    it, so one left stale by a Redis restart fails the check, not a command.
    A command that fails on a broken connection ("Connection closed by
    server") is retried once on a fresh one; every script is idempotent (an
    append by message id, a membership change only when SADD/SREM changed
    something), so a retry never doubles an event. A timeout is never retried.
    The standalone pool is bounded and blocking: past ``pool_size`` connections a
    command waits (up to ``timeout``) for one to come free, rather than failing as
    if Redis were down (a thousand clients connecting at once).
    """
    target = RedisTarget.of(target)
    common: dict[str, Any] = {
        "decode_responses": decode,
        "socket_connect_timeout": min(CONNECT_TIMEOUT, timeout),
        "socket_timeout": timeout,
        "health_check_interval": health_check,
    }
    if target.mode == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in parse_hosts(target.url, 6379)],
            max_connections=pool_size,
            require_full_coverage=False,
            retry=AsyncRetry(NoBackoff(), 1),
            **_auth(target.first_url),
            **common,
        )
    if target.mode == "sentinel":
        parts = urlsplit(target.first_url)
        db = int(parts.path.strip("/") or 0) if parts.path.strip("/").isdigit() else 0
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels),
            socket_timeout=min(CONNECT_TIMEOUT, timeout),
            socket_connect_timeout=min(CONNECT_TIMEOUT, timeout),
        )
        return sentinel.master_for(
            target.master_name,
            db=db,
            max_connections=pool_size,
            check_connection=True,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **_auth(target.first_url),
            **common,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        target.url,
        max_connections=pool_size,
        timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        **common,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool
