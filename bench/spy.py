"""py-spy's raw output read into shares of samples: the part shared by the profile
scripts (bench/profile.py, bench/profile_rooms.py).

``py-spy record --format raw`` writes one line per distinct stack: its frames
(``function (file:line)``, outermost first, after the thread) joined by ``;``,
a space, and the number of samples. A *part* is a name and the needles that
mark it: a stack counts for the part when any of its frames holds one of them
(the part's own code and everything it calls).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Parts = Sequence[tuple[str, Sequence[str]]]


@dataclass
class Samples:
    total: int = 0
    #: the innermost frame (as ``own_key`` names it) -> its samples
    own: collections.Counter[str] = field(default_factory=collections.Counter)
    #: part -> samples of the stacks in it
    parts: collections.Counter[str] = field(default_factory=collections.Counter)


def tally(raw: str, parts: Parts, own_key: Callable[[str], str] = lambda frame: frame) -> Samples:
    """Count ``raw``'s samples: in all, by innermost frame, and by part."""
    samples = Samples()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first is the thread
        samples.total += count
        if frames:
            samples.own[own_key(frames[-1])] += count
        for name, needles in parts:
            if any(n in f for f in frames for n in needles):
                samples.parts[name] += count
    return samples


def print_shares(header: str, samples: Samples, names: Sequence[str], most: int) -> None:
    """``header``, then each part's share and the ``most`` frames with most samples of
    their own."""
    print(f"\n== {header}")
    total = samples.total
    if not total:
        print("   no samples (is py-spy allowed to read the process?)")
        return
    print("   share of samples in (total)")
    for name in names:
        print(f"   {samples.parts[name] / total * 100:5.1f}%  {name}")
    print("   most samples of their own (self)")
    for name, count in samples.own.most_common(most):
        print(f"   {count / total * 100:5.1f}%  {name[:110]}")
