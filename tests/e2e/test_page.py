"""The chat page on its own: text stays text, it works at phone width, it is labelled.

One single-node relay serves the page directly (no Redis, no nginx).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from e2ehelpers import WEB, ChatPage
from procs import RelayProcess

pytestmark = pytest.mark.e2e

OpenPage = Callable[..., ChatPage]

#: DOM sinks that parse HTML or code; the page must put network text in with textContent.
HTML_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment"
    r"|\beval\s*\(|new\s+Function\s*\(|setHTMLUnsafe|srcdoc"
)


def test_page_script_has_no_html_sinks() -> None:
    for path in [*sorted(WEB.glob("*.js")), WEB / "index.html"]:
        source = path.read_text(encoding="utf-8")
        found = HTML_SINKS.findall(source)
        assert not found, f"{path.name} uses {found}"
    # No inline script or handler attributes in the page itself.
    html = (WEB / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\son[a-z]+\s*=", html)


def test_markup_in_messages_and_names_is_shown_as_text(
    solo_relay: RelayProcess, open_page: OpenPage
) -> None:
    url = solo_relay.http + "/"
    mallory = open_page(url, "<b>mallory</b>").connect()
    mallory.join("lobby")
    attack = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'
    mallory.send(attack)

    entry = mallory.entries("CHAT", "<img src=x")
    mallory.expect(entry).to_have_count(1)
    mallory.expect(entry.locator(".text")).to_have_text(attack)
    mallory.expect(entry.locator(".author")).to_have_text("<b>mallory</b>")
    mallory.expect(mallory.participant("<b>mallory</b>")).to_have_count(1)

    page = mallory.page
    assert page.locator("#messages img, #messages script, #participants b").count() == 0
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_phone_width_layout_labels_and_live_region(
    solo_relay: RelayProcess, open_page: OpenPage, artifacts: Path
) -> None:
    phone = open_page(solo_relay.http + "/", "sam", width=390, height=844)
    page = phone.page

    # Every control has a visible or programmatic label.
    for label, selector in (
        ("Username", "#username"),
        ("Room name", "#room"),
        ("Message", "#message"),
    ):
        assert page.get_by_label(label, exact=True).get_attribute("id") == selector[1:]
    log = page.locator("#messages")
    assert log.get_attribute("role") == "log"
    assert log.get_attribute("aria-live") == "polite"
    assert page.locator("#state").get_attribute("role") == "status"

    # Keyboard only: the username field has focus, Enter connects.
    phone.expect(page.locator("#username")).to_be_focused()
    page.keyboard.type("sam")
    page.keyboard.press("Enter")
    phone.wait_state("connected")
    phone.expect(page.locator("#server-id")).to_have_attribute("data-server-id", "solo")
    page.locator("#room").fill("phone-test")
    page.locator("#room").press("Enter")
    phone.expect(page.locator("#message")).to_be_focused()
    page.keyboard.type("a long word that must wrap: " + "x" * 120)
    page.keyboard.press("Enter")
    phone.expect(phone.entries("CHAT", "must wrap")).to_have_count(1)
    phone.expect_participants("sam")

    # Nothing wider than the screen, and the main controls are on it.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("#username", "#room", "#join", "#message", "#send", "#messages"):
        box = page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0, selector
        assert box["x"] + box["width"] <= 390, selector

    # Heart-beats run from a Worker (background tabs) and the client reconnects by itself.
    settings = page.evaluate(
        "({strategy: stomprelayChat.client.heartbeatStrategy,"
        " reconnect: stomprelayChat.client.reconnectDelay,"
        " outgoing: stomprelayChat.client.heartbeatOutgoing})"
    )
    assert settings == {"strategy": "worker", "reconnect": 1000, "outgoing": 10000}

    phone.screenshot(artifacts / "page-phone.png")


def test_invalid_room_name_is_refused_in_the_page(
    solo_relay: RelayProcess, open_page: OpenPage
) -> None:
    tab = open_page(solo_relay.http + "/", "rita").connect()
    tab.page.fill("#room", "no spaces allowed")
    tab.page.click("#join")
    tab.expect(tab.page.locator("#room")).to_have_attribute("aria-invalid", "true")
    tab.expect(tab.page.locator("#current-room")).to_have_attribute("data-room", "")
    # The relay never saw the bad name: the connection is still up.
    tab.wait_state("connected")
    tab.join("ok.room-1")
    tab.expect(tab.page.locator("#room")).not_to_have_attribute("aria-invalid", "true")
