"""A token bucket with the clock passed in (rate limits of sessions and addresses)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; :meth:`take` says
    whether ``amount`` were there (and takes them). A rate of 0 never refuses."""

    __slots__ = ("burst", "level", "rate", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.level = self.burst
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        if self.rate <= 0:
            return True
        level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if level < amount:
            self.level = level
            return False
        self.level = level - amount
        return True

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled (its state can be forgotten)."""
        return self.rate <= 0 or self.level + (now - self.stamp) * self.rate >= self.burst
