"""Secrets in the configuration: a wrapper that never shows its value, and URL masking."""

from __future__ import annotations

from typing import Final

MASK: Final = "***"


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


def mask_url(url: str) -> str:
    """`url` with the password in its user info replaced by '***'.

    `scheme://user:pw@host` becomes `scheme://user:***@host`. A lone user part is a token for NATS
    (`nats://token@host`) and is masked whole; for Redis it is a username and is kept.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{scheme}://{user}:{MASK}@{hostpart}"
    if scheme.lower().startswith("redis"):
        return url
    return f"{scheme}://{MASK}@{hostpart}"


__all__ = ["MASK", "Secret", "mask_url"]
