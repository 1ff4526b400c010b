"""``stomprelay inspect``'s tables read as people read them; ``--json`` stays exact."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from stomprelay.cli import inspect_table
from stomprelay.humanize import cell, duration, moment, size

NOW = 1_800_000_000_000  # ms since the epoch


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (0, "0 ms"),
        (250, "250 ms"),
        (1000, "1 s"),
        (45_000, "45 s"),
        (59_999, "59 s"),
        (60_000, "1 min"),
        (3 * 60_000 + 10_000, "3 min"),
        (3_600_000, "1 h"),
        (2 * 3_600_000 + 5 * 60_000, "2 h 5 min"),
        (86_400_000, "1 d"),
        (3 * 86_400_000 + 4 * 3_600_000 + 59 * 60_000, "3 d 4 h"),
    ],
)
def test_durations(ms: int, shown: str) -> None:
    assert duration(ms) == shown


@pytest.mark.parametrize(
    ("offset", "shown"),
    [
        (0, "just now"),
        (-999, "just now"),
        (-3 * 60_000, "3 min ago"),
        (-3 * 60_000 - 30_000, "3 min ago"),
        (2 * 3_600_000, "in 2 h"),
        (-5_000, "5 s ago"),
        (-400 * 86_400_000, "400 d ago"),
    ],
)
def test_moments_relative_to_now(offset: int, shown: str) -> None:
    assert moment(NOW + offset, NOW) == shown


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024, "1 MiB"),
        (256 * 1024 * 1024, "256 MiB"),
        (3 * 1024**3 + 1024**3 // 10, "3.1 GiB"),
        (5 * 1024**5, "5120 TiB"),
    ],
)
def test_sizes_have_binary_units(count: int, shown: str) -> None:
    assert size(count) == shown


def test_cells_are_read_by_the_column_name() -> None:
    assert cell("startedAt", NOW - 180_000, NOW) == "3 min ago"
    assert cell("lastSeen", NOW - 7_200_000, NOW) == "2 h ago"
    assert cell("lastActivity", NOW + 7_200_000, NOW) == "in 2 h"
    assert cell("connectedAt", 0, NOW) == "never"
    assert cell("ttl_ms", 90_000, NOW) == "1 min"
    assert cell("ttl_ms", -1, NOW) == "no expiry"
    assert cell("ttl_ms", -2, NOW) == "gone"
    assert cell("maxBytes", 1024 * 1024, NOW) == "1 MiB"
    assert cell("frameSize", 64 * 1024, NOW) == "64 KiB"
    # counts, ports, offsets and ids stay numbers; booleans stay booleans
    assert cell("port", 8080, NOW) == "8080"
    assert cell("participants", 3, NOW) == "3"
    assert cell("rooms", ["a", "b"], NOW) == "a,b"
    assert cell("history.lastOffset", 17, NOW) == "17"
    assert cell("alive", True, NOW) == "True"
    assert cell("content", {"a": 1}, NOW) == "a=1"
    assert cell("currentRoom", None, NOW) == ""


def _render(rows: list[dict[str, object]], what: str = "servers") -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(inspect_table(what, rows, NOW))
    return out.getvalue()


def test_the_inspect_table_shows_units_and_keeps_other_values() -> None:
    rows: list[dict[str, object]] = [
        {
            "serverId": "relay-1",
            "port": 8080,
            "startedAt": NOW - 3 * 3_600_000,
            "alive": True,
            "sessions": 12,
        },
        {
            "serverId": "relay-2",
            "port": 8081,
            "startedAt": NOW - 42_000,
            "alive": False,
            "sessions": 0,
        },
    ]
    text = _render(rows)
    assert "servers (2)" in text
    assert "3 h ago" in text
    assert "42 s ago" in text
    assert "8080" in text
    assert str(NOW - 42_000) not in text
    # the rows themselves (what --json prints) are not touched
    assert rows[1]["startedAt"] == NOW - 42_000


def test_an_empty_view_is_an_empty_table() -> None:
    assert "rooms (0)" in _render([], "rooms")
