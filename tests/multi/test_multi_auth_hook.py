"""The authorization hook across relay processes on Redis (docs/security.md): each
relay asks the same back-end, which names the users; the ACL then applies to those
names, and what one relay let through reaches subscribers the others let in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hookreceiver import HookReceiver, allow, deny
from stompclient import StompClientError

SECRET = "cluster-hook-secret-0123456789"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}


def backend(request: dict[str, Any]) -> tuple[int, bytes]:
    if request["action"] == "connect":
        login = str(request.get("login", ""))
        if PASSWORDS.get(login) != request.get("passcode"):
            return deny("unknown user or wrong passcode")
        return allow(user=login)
    if request.get("destination") == "/topic/team/secret" and request.get("user") != "bob":
        return deny("bob's only")
    return allow(ttl=30)


async def test_relays_on_redis_ask_the_hook_and_apply_the_acl_to_its_users(
    start_relay: Any, stomp_clients: Any, tmp_path: Path
) -> None:
    acl = tmp_path / "acl.toml"
    acl.write_text(
        '[[rules]]\nusers = "*"\nsubscribe = ["/topic/team/**"]\nsend = ["/topic/team/**"]\n'
    )
    with HookReceiver(backend, SECRET) as hook:
        flags = ["--auth-hook-url", hook.url, "--auth-hook-secret", SECRET, "--acl", str(acl)]
        a = start_relay("A", extra=flags)
        b = start_relay("B", extra=flags)
        bob = await stomp_clients(a, login="bob", passcode="builder")
        sub = await bob.subscribe("/topic/team/secret")
        alice = await stomp_clients(b, login="alice", passcode="wonderland")
        with pytest.raises(StompClientError, match="forbidden"):
            await alice.subscribe("/topic/team/secret")
        alice = await stomp_clients(b, login="alice", passcode="wonderland")
        with pytest.raises(StompClientError, match="forbidden"):
            await alice.subscribe("/topic/elsewhere")  # the ACL's refusal
        with pytest.raises(StompClientError, match="access refused"):
            await stomp_clients(b, login="alice", passcode="guess")
        bob_b = await stomp_clients(b, login="bob", passcode="builder")
        await bob_b.send("/topic/team/secret", "from B", receipt=True)
        message = await bob.next_message(sub)
        assert message.body == b"from B"
        assert dict(message.headers)["x-sender"] == "bob"
        assert hook.count("connect") == 5
        assert hook.count("subscribe", "/topic/elsewhere") == 0
        assert all(hook.signatures)
