"""Durable rooms in the page: history for a late joiner, resume after a reload.

Two headless Chromium tabs on two relays behind a real nginx (as in
test_browser_cluster.py), so the history and the replay come out of Redis. Each tab's
WebSocket is routed through Playwright (``WebSocketTap``) to check the SUBSCRIBE headers the
page sends (docs/history.md) and, for the reload, to keep the reloaded tab offline while the
other one talks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2ehelpers import ChatPage, Cluster, WebSocketTap

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

OpenPage = Callable[..., ChatPage]


def _tapped(open_page: OpenPage, cluster: Cluster, username: str) -> tuple[ChatPage, WebSocketTap]:
    page = open_page(cluster.url, username)
    return page, WebSocketTap(page.context)


def _on_different_relays(
    cluster: Cluster, open_page: OpenPage
) -> tuple[ChatPage, ChatPage, WebSocketTap]:
    alice = open_page(cluster.url, "alice").connect()
    bob, tap = _tapped(open_page, cluster, "bob")
    bob.connect()
    bob.move_off(alice.server_id())
    assert {alice.server_id(), bob.server_id()} == {"relay-1", "relay-2"}
    return alice, bob, tap


def test_late_joiner_sees_the_room_history(
    cluster: Cluster, open_page: OpenPage, artifacts: Path
) -> None:
    alice, bob, tap = _on_different_relays(cluster, open_page)
    alice.join("history")
    said = ["first of three", "second of three", "third of three"]
    for text in said:
        alice.send(text)
    alice.expect_chat("alice", said[-1])

    bob.join("history")
    for text in said:
        bob.expect_chat("alice", text)
        bob.expect(bob.entries("CHAT", text)).to_have_attribute("data-history", "true")
    assert bob.chat_texts() == said
    bob.expect(bob.page.locator('#messages li[data-type="HISTORY"]')).to_have_count(1)
    bob.expect(bob.page.locator('#messages li[data-type="MISSED"]')).to_have_count(0)
    # The history sits under "Earlier messages", above the line saying bob joined.
    lines = bob.log_lines()
    assert lines.index("HISTORY: Earlier messages") < lines.index("CHAT: first of three")
    assert lines.index("CHAT: third of three") < lines.index("STATUS: You joined #history.")

    subscribes = tap.room_subscriptions("history")
    assert len(subscribes) == 1, subscribes
    assert subscribes[0]["x-history"] == "50"
    assert "receipt" in subscribes[0]
    assert "x-since-offset" not in subscribes[0]

    # Live from here, once, not marked as history.
    alice.send("and now live")
    bob.expect_chat("alice", "and now live")
    bob.expect(bob.entries("CHAT", "and now live")).not_to_have_attribute("data-history", "true")
    assert bob.chat_texts() == [*said, "and now live"]
    bob.expect_participants("alice", "bob")

    bob.screenshot(artifacts / "history-join.png")


def test_reload_shows_what_was_missed_exactly_once(
    cluster: Cluster, open_page: OpenPage, artifacts: Path
) -> None:
    alice, bob, tap = _on_different_relays(cluster, open_page)
    alice.join("resume")
    bob.join("resume")
    for page in (alice, bob):
        page.expect_participants("alice", "bob")
    before = ["before the reload 1", "before the reload 2"]
    for text in before:
        alice.send(text)
    for text in before:
        bob.expect_chat("alice", text)
    old_relay = bob.server_id()

    # Bob reloads his tab; it stays offline (retrying) while alice says five things.
    tap.hold = True
    bob.reload()
    bob.wait_state("reconnecting")
    assert tap.refused >= 1
    alice.expect(alice.entries("LEAVE", "bob left (disconnected)")).to_have_count(1)
    away = [f"while bob was away {n}" for n in range(1, 6)]
    for text in away:
        alice.send(text)
    alice.expect_chat("alice", away[-1])
    subscribed = len(tap.room_subscriptions("resume"))

    tap.hold = False
    bob.wait_state("connected")
    bob.expect(bob.page.locator("#current-room")).to_have_attribute("data-room", "resume")

    # Resumed from where the tab left off, not from the history.
    bob.expect(bob.entries("MISSED", "5 messages you missed")).to_have_count(1)
    bob.expect(bob.page.locator('#messages li[data-type="MISSED"]')).to_have_count(1)
    bob.expect(bob.entries("MISSED", "messages you missed")).to_have_attribute("data-count", "5")
    resumed = tap.room_subscriptions("resume")[subscribed:]
    assert len(resumed) == 1, resumed
    assert "x-history" not in resumed[0]
    assert int(resumed[0]["x-since-offset"]) > 0
    assert resumed[0]["x-since-epoch"]
    assert "receipt" in resumed[0]

    # Every message exactly once, in order: the earlier ones kept over the reload, then
    # the five it missed under the notice.
    for text in [*before, *away]:
        bob.expect_chat("alice", text)
    assert bob.chat_texts() == [*before, *away]
    lines = bob.log_lines()
    assert lines.index("HISTORY: Earlier messages") < lines.index(f"CHAT: {before[0]}")
    assert lines.index(f"CHAT: {before[-1]}") < lines.index("MISSED: 5 messages you missed")
    assert lines.index("MISSED: 5 messages you missed") < lines.index(f"CHAT: {away[0]}")
    # The page knows the connection before the reload was its own.
    bob.expect(
        bob.entries("LEAVE", f"Your previous connection on {old_relay} left the room")
    ).to_have_count(1)
    for page in (alice, bob):
        page.expect_participants("alice", "bob")

    alice.send("welcome back")
    bob.expect_chat("alice", "welcome back")
    assert bob.chat_texts() == [*before, *away, "welcome back"]
    bob.expect(bob.page.locator('#messages li[data-type="GAP"]')).to_have_count(0)

    bob.screenshot(artifacts / "history-reload.png")
