"""Numbers as people read them, for ``stomprelay inspect``'s tables: moments
relative to now ("3 min ago", "in 2 h"), durations and sizes with units.

Only the tables use these; ``--json`` prints the registry's own values (ms since
the epoch, ms, bytes), exact. Which column is a moment, a duration or a size is
told by its name, so a column added to a view later reads the same way. Pure:
the time is passed in.
"""

from __future__ import annotations

#: Units of a duration, largest first: (seconds, symbol).
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
#: Binary size units after bytes (IEC 80000-13).
_SIZES = ("KiB", "MiB", "GiB", "TiB")
#: A moment this close to now reads "just now".
_NOW_MS = 1000

#: Columns holding a moment (ms since the epoch) besides those named ``...At``.
MOMENT_COLUMNS = frozenset({"lastSeen", "lastActivity", "lastHeartbeat", "until"})


def duration(ms: float) -> str:
    """A length of time in its largest whole unit, with the next one when it
    says something: ``45 s``, ``3 min``, ``2 h 5 min``, ``3 d 4 h``; under a
    second in ms."""
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = int(ms // 1000)
    for i, (size, symbol) in enumerate(_UNITS):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            text = f"{whole} {symbol}"
            if i + 1 < len(_UNITS) and size > 60:
                below, below_symbol = _UNITS[i + 1]
                if rest // below:
                    text += f" {rest // below} {below_symbol}"
            return text
    return f"{seconds} s"  # pragma: no cover - the loop's last unit is 1 s


def moment(ms: int, now_ms: int) -> str:
    """A moment relative to ``now_ms``: ``3 min ago``, ``in 2 h``, ``just now``."""
    delta = ms - now_ms
    if abs(delta) < _NOW_MS:
        return "just now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(-delta)} ago"


def size(count: int) -> str:
    """Bytes with a binary unit: ``512 B``, ``1.5 KiB``, ``1 MiB``, ``256 MiB``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _SIZES:
        value /= 1024
        if value < 1024 or unit == _SIZES[-1]:
            return f"{value:.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _kind(column: str) -> str | None:
    if column.endswith("At") or column in MOMENT_COLUMNS:
        return "moment"
    if column.endswith(("_ms", "Ms")):
        return "duration"
    lowered = column.lower()
    if lowered.endswith(("bytes", "size", "memory")):
        return "size"
    return None


def cell(column: str, value: object, now_ms: int) -> str:
    """One table cell: moments, durations and sizes (by the column's name) in
    units, lists comma-separated, mappings as ``k=v``, None empty."""
    if isinstance(value, int) and not isinstance(value, bool):
        kind = _kind(column)
        if kind == "moment":
            return moment(value, now_ms) if value > 0 else "never"
        if kind == "duration":
            # Redis PTTL: -1 no expiry, -2 no key
            return {-1: "no expiry", -2: "gone"}.get(value, duration(value))
        if kind == "size" and value >= 0:
            return size(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)
