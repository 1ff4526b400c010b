"""Access and moderation without sockets: identities, kicks, suspensions, the checks
that refuse an access configuration opening the relay by mistake."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from stomprelay.access import Access, check_access
from stomprelay.auth import Acl, AuthError, Identity
from stomprelay.cluster.envelope import Envelope
from stomprelay.cluster.registry import OperatorCommand, SessionRecord, Suspensions
from stomprelay.errors import BackendUnavailable, PolicyError
from stomprelay.factory import build_relay
from stomprelay.settings import Settings
from stomprelay.tokens import Authenticator


@dataclass
class FakeSession:
    session_id: str
    closed: bool = False
    failed: list[PolicyError] = field(default_factory=list)

    def fail(self, exc: PolicyError, receipt: str | None = None) -> None:
        self.failed.append(exc)
        self.closed = True


@dataclass
class FakeSink:
    session: FakeSession
    flushed: int = 0

    def flush(self) -> None:
        self.flushed += 1


class FakeModeration:
    def __init__(self, found: Suspensions | None = None, down: bool = False) -> None:
        self.found = found or Suspensions()
        self.down = down
        self.suspended: list[OperatorCommand] = []

    async def suspend(self, command: OperatorCommand, channel: str, envelope: Envelope) -> None:
        if self.down:
            raise BackendUnavailable("redis: simulated outage")
        self.suspended.append(command)

    async def suspensions(self, now_ms: int) -> Suspensions:
        return self.found


async def _guard(call: Any) -> None:
    await call()


def make_access(
    moderation: FakeModeration | None = None, **sessions: str
) -> tuple[Access, dict[str, Any], dict[str, SessionRecord]]:
    """An Access whose sessions ``id=user`` are connected (unverified, as a login)."""
    sinks: dict[str, Any] = {}
    records: dict[str, SessionRecord] = {}
    kicked: list[None] = []
    access = Access(
        Settings(),
        auth=None,
        acl=None,
        dev_tokens=False,
        moderation=moderation or FakeModeration(),
        control_channel="stomp:control",
        sinks=sinks,
        records=records,
        guard=_guard,
        on_kicked=lambda: kicked.append(None),
    )
    for session_id, user in sessions.items():
        sinks[session_id] = FakeSink(FakeSession(session_id))
        access.identities[session_id] = Identity(user, user)
        records[session_id] = SessionRecord(
            session_id=session_id,
            server_id="r",
            username=user,
            remote_address="127.0.0.1",
            version="1.2",
            connected_at=1_000,
            last_seen=1_000,
        )
    return access, sinks, records


def control(action: str, user: str, until: int | None = None) -> Envelope:
    body = json.dumps({"action": action, "user": user, "until": until}).encode()
    return Envelope(id="k", origin="operator", destination="", headers=(), body=body, ts=0)


def test_an_acl_needs_authentication_and_dev_tokens_a_secret() -> None:
    acl = Acl([])
    with pytest.raises(ValueError, match="an ACL needs authentication"):
        check_access(None, acl, False)
    with pytest.raises(ValueError, match="--dev-tokens needs --jwt-secret"):
        check_access(None, None, True)
    with pytest.raises(ValueError, match="an ACL needs authentication"):
        build_relay(acl=acl)
    check_access(Authenticator(secret="s" * 32), acl, True)


def test_a_kick_ends_the_users_sessions_and_suspends_it() -> None:
    access, sinks, _ = make_access(a="alice", b="bob", c="alice")
    until = int(time.time() * 1000) + 60_000
    access.control(control("kick", "alice", until))
    assert [s for s, sink in sinks.items() if sink.session.closed] == ["a", "c"]
    assert sinks["a"].session.failed[0].message == "session ended by operator"
    assert access.suspended == {"alice": until}
    access.control(control("lift", "alice"))
    assert access.suspended == {}
    access.control(Envelope(id="x", origin="o", destination="", headers=(), body=b"{", ts=0))


async def test_a_kick_with_redis_down_still_ends_local_sessions() -> None:
    access, sinks, _ = make_access(FakeModeration(down=True), a="alice")
    with pytest.raises(BackendUnavailable):
        await access.kick("alice", None)
    assert sinks["a"].session.closed


async def test_suspensions_found_at_start_end_sessions_kicked_after_they_connected() -> None:
    found = Suspensions(kicked={"alice": 2_000, "bob": 500})
    access, sinks, _ = make_access(FakeModeration(found), a="alice", b="bob")
    await access.reload_suspensions()
    assert sinks["a"].session.closed
    assert not sinks["b"].session.closed, "kicked before it connected"


def test_a_suspended_user_is_refused_and_senders_are_stamped() -> None:
    access, _, _ = make_access(a="alice")
    access.suspended["mallory"] = int(time.time() * 1000) + 60_000
    with pytest.raises(AuthError, match="access refused"):
        access._not_suspended(Identity("mallory", "mallory"))
    assert access.sender("a") == (("x-sender", "alice"), ("x-sender-session", "a"))
    access.forget("a")
    assert access.sender("a") == (("x-sender-session", "a"),)
