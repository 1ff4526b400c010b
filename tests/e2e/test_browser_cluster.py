"""Two people in two headless Chromium tabs, on two relays behind a real nginx.

nginx balances round robin, so a tab reconnects until it lands on the relay the other tab
is not on; from then on everything the two see has crossed Redis.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from e2ehelpers import ChatPage, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

OpenPage = Callable[..., ChatPage]


def _two_on_different_relays(cluster: Cluster, open_page: OpenPage) -> tuple[ChatPage, ChatPage]:
    alice = open_page(cluster.url, "alice").connect()
    bob = open_page(cluster.url, "bob").connect()
    bob.move_off(alice.server_id())
    assert {alice.server_id(), bob.server_id()} == {"relay-1", "relay-2"}
    return alice, bob


def _room_over_http(cluster: Cluster, room: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{cluster.url}api/rooms/{room}", timeout=5) as resp:
        data: dict[str, object] = json.loads(resp.read())
        return data


def test_chat_across_relays_then_one_tab_closes(cluster: Cluster, open_page: OpenPage) -> None:
    alice, bob = _two_on_different_relays(cluster, open_page)

    alice.join("lobby")
    # Bob picks the room from the list the page reads from /api/rooms.
    bob.join_from_list("lobby")

    for page in (alice, bob):
        page.expect_participants("alice", "bob")
    # Each sees the other on the other relay.
    alice.expect(alice.participant("bob")).to_have_attribute("data-server-id", bob.server_id())
    bob.expect(bob.participant("alice")).to_have_attribute("data-server-id", alice.server_id())
    alice.expect(alice.entries("JOIN", "bob joined")).to_have_count(1)

    alice.send("hello from alice")
    bob.expect_chat("alice", "hello from alice")
    bob.send("hi alice, bob here")
    alice.expect_chat("bob", "hi alice, bob here")
    # Both see the same conversation in the same order.
    for page in (alice, bob):
        texts = page.page.locator('#messages li[data-type="CHAT"] .text').all_text_contents()
        assert texts == ["hello from alice", "hi alice, bob here"]

    bob.close()
    alice.expect(alice.entries("LEAVE", "bob left (disconnected)")).to_have_count(1)
    alice.expect_participants("alice")
    room = _room_over_http(cluster, "lobby")
    assert [p["username"] for p in room["participants"]] == ["alice"]  # type: ignore[index]


def test_relay_killed_tab_fails_over_and_keeps_chatting(
    cluster: Cluster, open_page: OpenPage, artifacts: Path
) -> None:
    alice, bob = _two_on_different_relays(cluster, open_page)
    alice.join("lobby")
    bob.join("lobby")
    for page in (alice, bob):
        page.expect_participants("alice", "bob")
    alice.send("before the crash")
    bob.expect_chat("alice", "before the crash")

    lost, survivor = alice.server_id(), bob.server_id()
    joins_seen = bob.entries("JOIN", "alice joined").count()
    cluster.relays[lost].kill()

    # Alice's tab notices, reconnects through nginx to the surviving relay, and rejoins.
    alice.expect(alice.entries("ERROR", "Connection lost")).to_have_count(1)
    alice.expect(alice.page.locator("#server-id")).to_have_attribute("data-server-id", survivor)
    alice.wait_state("connected")
    alice.expect(alice.entries("STATUS", "Rejoined #lobby")).to_have_count(1)
    alice.expect(alice.page.locator("#current-room")).to_have_attribute("data-room", "lobby")

    # Bob sees her come back, then the reaper remove her session on the dead relay.
    bob.expect(bob.entries("JOIN", "alice joined")).to_have_count(joins_seen + 1)
    bob.expect(bob.entries("LEAVE", "alice left (their relay went away)")).to_have_count(1)
    alice.expect(
        alice.entries("LEAVE", f"Your previous connection on {lost} left the room")
    ).to_have_count(1)
    for page in (alice, bob):
        page.expect_participants("alice", "bob")
        page.expect(page.participant("alice")).to_have_attribute("data-server-id", survivor)

    alice.send("back, now on the other relay")
    bob.expect_chat("alice", "back, now on the other relay")
    bob.send("welcome back")
    alice.expect_chat("bob", "welcome back")

    alice.screenshot(artifacts / "page-a.png")
    bob.screenshot(artifacts / "page-b.png")
