"""Secrets in the configuration: a wrapper that never shows its value, and URL masking (the one
function of `tradecache.redaction`, re-exported here)."""

from __future__ import annotations

from tradecache.redaction import MASK, mask_url


class Secret:
    """A secret string: `repr()` and `str()` give '***'; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


__all__ = ["MASK", "Secret", "mask_url"]
