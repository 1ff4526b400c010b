"""Private conversations in the page: a DM between two tabs on two relays behind nginx.

Each tab is its own user (the STOMP login), on its own relay, so every DM crosses Redis
(the recipient's per-user channel). The reloaded tab's WebSocket goes through Playwright
(``WebSocketTap``) to keep it offline while the other one writes, and to check the
inbox SUBSCRIBE it sends after the reload (a resume, not the history again).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2ehelpers import ChatPage, Cluster, WebSocketTap

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

OpenPage = Callable[..., ChatPage]
API_KEY = "e2e-back-end-key"


def _publish(cluster: Cluster, destination: str, body: str) -> dict[str, Any]:
    """``POST /api/publish`` through nginx, as the application's back-end would."""
    request = urllib.request.Request(
        f"{cluster.url}api/publish",
        data=json.dumps({"destination": destination, "body": body}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _in_a_room(cluster: Cluster, open_page: OpenPage) -> tuple[ChatPage, ChatPage, WebSocketTap]:
    """alice and bob (bob's WebSocket tapped) on different relays, both in #dm."""
    alice = open_page(cluster.url, "alice").connect()
    bob = open_page(cluster.url, "bob")
    tap = WebSocketTap(bob.context)
    bob.connect()
    bob.move_off(alice.server_id())
    assert {alice.server_id(), bob.server_id()} == {"relay-1", "relay-2"}
    alice.join("dm")
    bob.join("dm")
    for page in (alice, bob):
        page.expect_participants("alice", "bob")
    return alice, bob, tap


def test_dm_unread_then_reload_shows_it_once(
    cluster: Cluster, open_page: OpenPage, artifacts: Path
) -> None:
    alice, bob, tap = _in_a_room(cluster, open_page)
    # The participant list carries user ids: the other person is a button, oneself not.
    alice.expect(alice.participant("bob")).to_have_attribute("data-user-id", "bob")
    alice.expect(alice.participant("alice").locator("button.dm-open")).to_have_count(0)

    alice.open_conversation("bob")
    alice.send_dm("hello bob")
    # Alice's own copy comes back through her inbox (x-recipient): it is her side.
    alice.expect(alice.dms("hello bob")).to_have_count(1)
    assert alice.dm_lines() == ["out alice: hello bob"]

    # Bob has not opened anything: the message waits as unread, in the list and beside
    # alice's name in the room.
    bob.expect_unread("alice", 1)
    bob.expect(bob.participant("alice").locator(".unread")).to_have_text("1")
    bob.expect(bob.page.locator("#dm-unread")).to_have_text("1")
    bob.expect(bob.page.locator("#conversation")).to_be_hidden()
    alice.send_dm("are you there?")
    bob.expect_unread("alice", 2)

    # Bob reloads; his tab stays offline while alice writes once more.
    subscribed = len(tap.inbox_subscriptions())
    assert subscribed == len(tap.frames("CONNECT"))  # one inbox per connection
    tap.hold = True
    bob.reload()
    bob.wait_state("reconnecting")
    alice.send_dm("sent while you reloaded")
    alice.expect(alice.dms()).to_have_count(3)
    tap.hold = False
    bob.wait_state("connected")

    # The unread count came back with the page and counts what it missed.
    bob.expect_unread("alice", 3)
    resumed = tap.inbox_subscriptions()[subscribed:]
    assert len(resumed) == 1, resumed
    assert "x-history" not in resumed[0]
    assert int(resumed[0]["x-since-offset"]) > 0
    assert resumed[0]["x-since-epoch"]
    assert "receipt" in resumed[0]

    bob.open_from_list("alice")
    said = ["hello bob", "are you there?", "sent while you reloaded"]
    for text in said:
        bob.expect(bob.dms(text)).to_have_count(1)
    assert bob.dm_lines() == [f"in alice: {text}" for text in said]
    bob.expect_unread("alice", 0)
    bob.expect(bob.page.locator("#dm-unread")).to_be_hidden()
    # From a person, not the back-end: no back-end badge.
    bob.expect(bob.page.locator("#dm-messages .backend")).to_have_count(0)

    bob.send_dm("hi alice")
    alice.expect(alice.dms("hi alice")).to_have_count(1)
    # Alice has the conversation open: nothing unread.
    alice.expect_unread("bob", 0)
    bob.screenshot(artifacts / "dm-bob.png")

    # Alice reloads too: both sides of the conversation come back, each once, in order.
    alice.reload()
    alice.wait_state("connected")
    alice.expect_unread("bob", 0)
    alice.open_from_list("bob")
    alice.expect(alice.dms()).to_have_count(4)
    assert alice.dm_lines() == [
        "out alice: hello bob",
        "out alice: are you there?",
        "out alice: sent while you reloaded",
        "in bob: hi alice",
    ]
    alice.screenshot(artifacts / "dm-alice.png")


def test_dm_after_a_relay_failover(cluster: Cluster, open_page: OpenPage) -> None:
    alice, bob, tap = _in_a_room(cluster, open_page)
    bob.open_conversation("alice")
    bob.send_dm("before the crash")
    alice.expect_unread("bob", 1)

    # Bob's relay dies; his tab is kept offline while alice answers on the other relay.
    lost = bob.server_id()
    tap.hold = True
    cluster.relays[lost].kill()
    bob.wait_state("reconnecting")
    alice.open_from_list("bob")
    alice.send_dm("while your relay was down")
    alice.expect(alice.dms()).to_have_count(2)
    tap.hold = False

    bob.wait_state("connected")
    bob.expect(bob.page.locator("#server-id")).not_to_have_attribute("data-server-id", lost)
    # The conversation stayed open: what alice wrote meanwhile is in it, once, already read.
    bob.expect(bob.dms("while your relay was down")).to_have_count(1)
    assert bob.dm_lines() == ["out bob: before the crash", "in alice: while your relay was down"]
    bob.expect_unread("alice", 0)

    bob.send_dm("back on the other relay")
    alice.expect(alice.dms("back on the other relay")).to_have_count(1)
    assert [line.split(": ", 1)[1] for line in alice.dm_lines()] == [
        "before the crash",
        "while your relay was down",
        "back on the other relay",
    ]


@pytest.mark.relay_args("--api-key", API_KEY, "--api-key-name", "server")
def test_back_end_message_has_its_badge_and_a_user_called_server_does_not(
    cluster: Cluster, open_page: OpenPage, artifacts: Path
) -> None:
    """A DM from the server API (x-sender without x-sender-session) against one from a
    person who signed in as "server": two conversations, one with the back-end badge."""
    impostor = open_page(cluster.url, "server").connect()
    bob = open_page(cluster.url, "bob").connect()
    bob.move_off(impostor.server_id())
    for page in (impostor, bob):
        page.join("shop")
    impostor.expect_participants("server", "bob")

    answer = _publish(cluster, "/user/bob/queue/messages", "Your order has shipped")
    assert answer["offset"] >= 1, answer
    impostor.open_conversation("bob")
    impostor.send_dm("This is the server. Send me your password.")

    backend, person = bob.conversation_link("server", "backend"), bob.conversation_link("server")
    bob.expect_unread("server", 1)
    bob.expect(backend).to_have_attribute("data-unread", "1")
    bob.expect(backend.locator(".backend")).to_have_text("back-end")
    bob.expect(person.locator(".backend")).to_have_count(0)

    bob.open_from_list("server", "backend")
    entry = bob.dms("Your order has shipped")
    bob.expect(entry).to_have_attribute("data-backend", "true")
    bob.expect(entry.locator(".backend")).to_be_visible()
    bob.expect(bob.page.locator("#conversation-badge")).to_be_visible()
    # No answering a back-end: its conversation has no composer.
    bob.expect(bob.page.locator("#dm-message")).to_be_disabled()
    bob.expect(bob.page.locator("#conversation-readonly")).to_be_visible()
    bob.screenshot(artifacts / "dm-backend.png")

    bob.open_from_list("server")
    entry = bob.dms("Send me your password")
    bob.expect(entry).not_to_have_attribute("data-backend", "true")
    bob.expect(bob.page.locator("#dm-messages .backend")).to_have_count(0)
    bob.expect(bob.page.locator("#conversation-badge")).to_be_hidden()
    bob.expect(bob.page.locator("#dm-message")).to_be_enabled()

    # After a reload the back-end's message is still the back-end's.
    bob.reload()
    bob.wait_state("connected")
    bob.open_from_list("server", "backend")
    bob.expect(bob.dms("Your order has shipped")).to_have_attribute("data-backend", "true")
