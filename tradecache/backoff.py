"""The one backoff used for every retry: delays that double from `first` up to `cap` (pure).

`next()` gives the delay to wait before the next attempt, `reset()` starts again after a
success. Callers sleep themselves, so this holds no I/O and tests need no clock.
"""

from __future__ import annotations

from typing import Final

FIRST: Final = 0.05
CAP: Final = 2.0


class Backoff:
    """Exponential backoff without jitter (one process retries; there is no herd to spread)."""

    __slots__ = ("_next", "attempts", "cap", "first")

    def __init__(self, first: float = FIRST, cap: float = CAP) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"need 0 < first <= cap, got first={first}, cap={cap}")
        self.first = first
        self.cap = cap
        self.attempts = 0  # failures since the last reset
        self._next = first

    def next(self) -> float:
        """The delay before the next attempt (after a failure)."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
        self._next = self.first

    @property
    def failing(self) -> bool:
        """True after a failure and until the next reset."""
        return self.attempts > 0


__all__ = ["CAP", "FIRST", "Backoff"]
