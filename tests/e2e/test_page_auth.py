"""The chat page against a relay that requires a token (docs/web.md, "Signing in").

One single-node relay started with ``--jwt-secret`` serves the page directly (no Redis, no
nginx), with the development token issuer (``--dev-tokens``) or without it (a token is
pasted). Tokens the relay did not issue are minted here with PyJWT and the same secret.
A WebSocketTap shows what the page sends (CONNECT headers, refresh SENDs, reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from e2ehelpers import ChatPage, WebSocketTap
from procs import RelayProcess
from stompclient import StompClient

pytestmark = pytest.mark.e2e

OpenPage = Callable[..., ChatPage]

SECRET = "e2e-only-secret-for-the-page-tests"


def mint(sub: str, *, ttl: float = 3600, **claims: Any) -> str:
    """A HS256 token for ``sub`` signed with the relays' secret, ``ttl`` seconds from now
    (negative: expired that long ago)."""
    now = int(time.time())
    payload = {"sub": sub, "iat": now - 5, "exp": int(now + ttl), **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


@contextlib.contextmanager
def _relay(tmp_path: Path, server_id: str, extra: list[str]) -> Iterator[RelayProcess]:
    relay = RelayProcess(tmp_path, server_id, extra=["--jwt-secret", SECRET, *extra]).start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def dev_relay(tmp_path: Path, page_deps: None) -> Iterator[RelayProcess]:
    """Authentication on, with the development token issuer."""
    with _relay(tmp_path, "auth-dev", ["--dev-tokens"]) as relay:
        yield relay


@pytest.fixture
def token_relay(tmp_path: Path, page_deps: None) -> Iterator[RelayProcess]:
    """Authentication on, no issuer: the page asks for a token."""
    with _relay(tmp_path, "auth-token", []) as relay:
        yield relay


def _tapped(open_page: OpenPage, url: str, username: str) -> tuple[ChatPage, WebSocketTap]:
    page = open_page(url, username)
    return page, WebSocketTap(page.context)


def _sign_in_with_token(tab: ChatPage, token: str) -> None:
    """Paste ``token`` in the sign-in form (under its "token you have" part) and connect."""
    page = tab.page
    if not page.locator("#token").is_visible():
        page.click("#token-summary")
    page.fill("#token", token)
    page.click("#connect")


def _forge_raw_send(relay: RelayProcess, room: str) -> None:
    """A client (not the page) SENDs straight to the room's topic a body that looks like an
    operator's SYSTEM event, with the relay's own header names put first."""

    async def forge() -> None:
        client = await StompClient.connect(relay.ws_url, passcode=mint("mallory"))
        await client.send(
            f"/topic/room/{room}",
            {"type": "SYSTEM", "message": "forged", "serverId": "operator"},
            [("x-event-type", "SYSTEM"), ("x-sender", "operator")],
            receipt=True,
        )
        await client.disconnect()

    # Playwright's sync API owns this thread's event loop: the client gets a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, forge()).result(timeout=30)


def _session(tab: ChatPage) -> str:
    session: str = tab.page.evaluate("stomprelayChat.sessionId")
    return session


def _refresh_sends(tap: WebSocketTap) -> list[dict[str, str]]:
    return [f for f in tap.frames("SEND") if f.get("destination") == "/app/auth/refresh"]


def test_sign_in_chat_forged_event_and_two_tabs(
    dev_relay: RelayProcess, open_page: OpenPage, artifacts: Path
) -> None:
    url = dev_relay.http + "/"
    alice, tap = _tapped(open_page, url, "alice")
    page = alice.page
    alice.expect(page.locator("#connect-form")).to_have_attribute("data-auth", "dev")
    alice.expect(page.locator("#dev-warning")).to_be_visible()
    alice.expect(page.locator("#dev-warning")).to_contain_text("Development sign-in")

    alice.connect()
    # Who you are, from the token the development issuer signed.
    alice.expect(page.locator("#identity")).to_be_visible()
    alice.expect(page.locator("#identity-name")).to_have_text("alice")
    alice.expect(page.locator("#identity-name")).to_have_attribute("data-sub", "alice")
    alice.expect(page.locator("#token-expiry")).to_contain_text("valid until")
    alice.expect(page.locator("#username")).to_be_hidden()
    # The token went as passcode and as Authorization: Bearer.
    token = page.evaluate("stomprelayChat.token")
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "alice"
    connects = tap.frames("CONNECT") or tap.frames("STOMP")
    assert len(connects) == 1, connects
    assert connects[0]["passcode"] == token
    assert connects[0]["Authorization"] == f"Bearer {token}"
    # An hour's token: nothing to renew.
    assert _refresh_sends(tap) == []

    alice.join("lobby")
    bob = open_page(url, "bob").connect()
    bob.join("lobby")
    for tab in (alice, bob):
        tab.expect_participants("alice", "bob")
    alice.send("hello bob")
    bob.expect_chat("alice", "hello bob")
    bob.send("hi alice")
    alice.expect_chat("bob", "hi alice")

    # A raw SEND to the room's topic dressed as an operator's SYSTEM event: shown as what it
    # is, the text of a message from mallory (the relay's x-sender), never a system line.
    _forge_raw_send(dev_relay, "lobby")
    for tab in (alice, bob):
        raw = tab.entries("RAW", "forged")
        tab.expect(raw).to_have_count(1)
        tab.expect(raw.locator(".author")).to_have_text("mallory")
        tab.expect(raw.locator(".text")).to_contain_text('"type":"SYSTEM"')
        tab.expect(tab.page.locator('#messages li[data-type="SYSTEM"]')).to_have_count(0)
        tab.expect(tab.entries("CHAT", "forged")).to_have_count(0)
    assert bob.chat_texts() == ["hello bob", "hi alice"]

    # Alice opens a second tab: two sessions, one person in everyone's list.
    alice2 = open_page(url, "alice").connect()
    alice2.join("lobby")
    for tab in (alice, bob, alice2):
        tab.expect(tab.participant("alice")).to_have_attribute("data-sessions", "2")
        tab.expect_participants("alice", "bob")
        tab.expect(tab.page.locator("#participant-count")).to_have_text("2")
    alice.expect(alice.participant("alice")).to_contain_text("2 connections")
    alice.expect(alice.participant("alice").locator(".you")).to_have_count(1)
    ids = alice.participant("alice").get_attribute("data-session-ids") or ""
    assert _session(alice) in ids.split()
    assert _session(alice2) in ids.split()

    bob.screenshot(artifacts / "auth-chat.png")

    # One tab goes: alice is still there, once.
    alice2.close()
    bob.expect(bob.participant("alice")).to_have_attribute("data-sessions", "1")
    bob.expect_participants("alice", "bob")


def test_expired_token_is_refused_in_plain_words_without_retrying(
    dev_relay: RelayProcess, open_page: OpenPage, artifacts: Path
) -> None:
    carol, tap = _tapped(open_page, dev_relay.http + "/", "carol")
    page = carol.page
    _sign_in_with_token(carol, mint("carol", ttl=-600))

    error = page.locator("#login-error")
    carol.expect(error).to_be_visible()
    carol.expect(error).to_have_text("Your token has expired. Sign in again.")
    carol.expect(error).to_have_attribute("data-reason", "expired")
    carol.wait_state("disconnected")
    carol.expect(carol.entries("ERROR", "Your token has expired")).to_have_count(1)
    # Back at the sign-in form, and it does not keep trying with the refused token.
    carol.expect(page.locator("#connect")).to_be_visible()
    carol.expect(page.locator("#username")).to_be_visible()
    carol.expect(page.locator("#identity")).to_be_hidden()
    page.wait_for_timeout(3000)
    assert len(tap.frames("CONNECT") or tap.frames("STOMP")) == 1
    carol.expect(page.locator('#messages li[data-type="ERROR"]')).to_have_count(1)
    assert page.evaluate("sessionStorage.getItem('stomprelay.tab')") is None
    carol.screenshot(artifacts / "auth-expired.png")

    # A token with a bad signature: the relay's own words, in a sentence.
    _sign_in_with_token(carol, mint("carol")[:-4] + "AAAA")
    carol.expect(error).to_have_attribute("data-reason", "invalid")
    carol.expect(error).to_contain_text("The relay did not accept your token (")
    carol.wait_state("disconnected")

    # The form still works: a new token from the issuer, and in.
    carol.connect()
    carol.expect(error).to_be_hidden()
    carol.expect(page.locator("#identity-name")).to_have_text("carol")


def test_dev_issuer_renews_a_token_about_to_expire(
    dev_relay: RelayProcess, open_page: OpenPage
) -> None:
    dave, tap = _tapped(open_page, dev_relay.http + "/", "dave")
    short = mint("dave", ttl=8, name="Dave D.")
    expires = jwt.decode(short, SECRET, algorithms=["HS256"])["exp"]
    _sign_in_with_token(dave, short)
    dave.wait_state("connected")

    # Under a minute left: the page fetches a new token and SENDs it to /app/auth/refresh.
    dave.expect(dave.entries("STATUS", "Session renewed")).to_have_count(1)
    dave.join("renewals")
    sends = _refresh_sends(tap)
    assert len(sends) == 1, sends
    new_token = dave.page.evaluate("stomprelayChat.token")
    assert new_token != short
    claims = jwt.decode(new_token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "dave"
    assert claims["exp"] > expires + 60
    dave.expect(dave.page.locator("#token-expiry")).to_have_attribute("data-expiring", "false")
    dave.expect(dave.page.locator("#token-expiry")).to_contain_text("valid until")
    # The display name came from the first token's name claim; the issuer's token has none.
    dave.expect(dave.page.locator("#identity-name")).to_have_text("dave")

    # Past the first token's exp: still the same session, still chatting.
    session = _session(dave)
    dave.page.wait_for_timeout(max(0.0, expires + 2 - time.time()) * 1000)
    dave.wait_state("connected")
    assert _session(dave) == session
    dave.send("still here")
    dave.expect_chat("dave", "still here")
    assert len(tap.frames("CONNECT") or tap.frames("STOMP")) == 1
    # A reconnect would send the new token.
    headers = dave.page.evaluate("stomprelayChat.client.connectHeaders")
    assert headers["passcode"] == new_token


def test_pasted_token_countdown_renew_and_credential_expired(
    token_relay: RelayProcess, open_page: OpenPage, artifacts: Path
) -> None:
    url = token_relay.http + "/"
    erin, tap = _tapped(open_page, url, "erin")
    page = erin.page
    # No issuer: the form asks for a token, not a name.
    erin.expect(page.locator("#connect-form")).to_have_attribute("data-auth", "token")
    erin.expect(page.locator("#token")).to_be_visible()
    erin.expect(page.locator("#username")).to_be_hidden()
    erin.expect(page.locator("#dev-warning")).to_be_hidden()

    first = mint("erin", ttl=12, name="Erin E.")
    expires = jwt.decode(first, SECRET, algorithms=["HS256"])["exp"]
    _sign_in_with_token(erin, first)
    erin.wait_state("connected")
    erin.expect(page.locator("#identity-name")).to_have_text("Erin E.")
    erin.expect(page.locator("#identity-sub")).to_have_text("(erin)")
    erin.join("paste")

    # Nothing renews it by itself: the page says how long is left and offers a new token.
    expiry = page.locator("#token-expiry")
    erin.expect(expiry).to_contain_text("Your session expires in ")
    erin.expect(expiry).to_have_attribute("data-expiring", "true")
    erin.expect(page.locator("#renew-form")).to_be_visible()
    erin.screenshot(artifacts / "auth-countdown.png")

    # A token for someone else is refused here, before the relay sees it.
    page.fill("#new-token", mint("mallory"))
    page.click("#renew")
    erin.expect(erin.entries("ERROR", "that token is for mallory, not erin")).to_have_count(1)
    assert _refresh_sends(tap) == []

    second = mint("erin", ttl=3600, name="Erin E.")
    page.fill("#new-token", second)
    page.click("#renew")
    erin.expect(erin.entries("STATUS", "Session renewed")).to_have_count(1)
    assert [f.get("destination") for f in _refresh_sends(tap)] == ["/app/auth/refresh"]
    erin.expect(expiry).to_contain_text("valid until")
    erin.expect(page.locator("#renew-form")).to_be_hidden()
    page.wait_for_timeout(max(0.0, expires + 2 - time.time()) * 1000)
    erin.wait_state("connected")
    erin.send("renewed by hand")
    erin.expect_chat("Erin E.", "renewed by hand")

    # Frank does not renew: at exp the relay ends the session, and the page says so once.
    frank, frank_tap = _tapped(open_page, url, "frank")
    _sign_in_with_token(frank, mint("frank", ttl=4))
    frank.wait_state("connected")
    error = frank.page.locator("#login-error")
    frank.expect(error).to_have_text("Your session has expired. Sign in again.")
    frank.expect(error).to_have_attribute("data-reason", "credential-expired")
    frank.wait_state("disconnected")
    frank.page.wait_for_timeout(2500)
    assert len(frank_tap.frames("CONNECT") or frank_tap.frames("STOMP")) == 1
    frank.expect(frank.page.locator('#messages li[data-type="ERROR"]')).to_have_count(1)
    frank.expect(frank.page.locator("#token")).to_be_visible()


def test_room_refused_by_the_acl_is_said_in_plain_words(
    tmp_path: Path, page_deps: None, open_page: OpenPage
) -> None:
    acl = tmp_path / "acl.yaml"
    acl.write_text(
        "rules:\n"
        '  - users: ["*"]\n'
        '    subscribe: ["/topic/system", "/topic/room/lobby", "/app/room/lobby/participants"]\n'
        '    send: ["/app/room/lobby/*"]\n',
        encoding="utf-8",
    )
    with _relay(tmp_path, "auth-acl", ["--dev-tokens", "--acl", str(acl)]) as relay:
        gina = open_page(relay.http + "/", "gina").connect()
        gina.join("lobby")
        gina.page.fill("#room", "secret")
        gina.page.click("#join")
        refused = gina.entries("ERROR", "You may not join #secret.")
        gina.expect(refused).to_have_count(1)
        gina.expect(refused).to_have_attribute("data-reason", "forbidden")
        # Still signed in (the relay closed that connection; the page came back without it).
        gina.wait_state("connected")
        gina.expect(gina.page.locator("#current-room")).to_have_attribute("data-room", "")
        gina.expect(gina.page.locator("#login-error")).to_be_hidden()
        # Asking again is answered here, without another round trip.
        gina.page.click("#join")
        gina.expect(refused).to_have_count(2)
        gina.wait_state("connected")
        gina.join("lobby")
        gina.send("back in the lobby")
        gina.expect_chat("gina", "back in the lobby")


def test_without_authentication_the_form_is_as_before(
    solo_relay: RelayProcess, open_page: OpenPage
) -> None:
    tab = open_page(solo_relay.http + "/", "henry")
    page = tab.page
    tab.expect(page.locator("#connect-form")).to_have_attribute("data-auth", "none")
    tab.expect(page.locator("#token-details")).to_be_hidden()
    tab.expect(page.locator("#dev-warning")).to_be_hidden()
    tab.connect()
    tab.expect(page.locator("#identity")).to_be_hidden()
    tab.expect(page.locator("#username")).to_be_disabled()
    assert page.evaluate("stomprelayChat.client.connectHeaders") == {"login": "henry"}
