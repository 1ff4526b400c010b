"""The relay's wall clock, in one place (the sans-I/O core is handed time instead).

Registry records, events and envelopes carry milliseconds since the epoch; the
components above the core take a ``clock_ms`` callable so that tests can give
them another.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, as the registry and the events write them."""
    return int(time.time() * 1000)
