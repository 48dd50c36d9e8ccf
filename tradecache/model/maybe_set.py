"""A set of fixed size that may say "maybe" for what it was never given (a Bloom filter).

For `Ledger.assume_empty_store`: which entities a rebuild has written, however many there are,
in a bounded amount of memory. A key that was added is always found; one that was not is found
with a small probability that grows as the filter fills. So it can only ever cost a read
that was not needed, never skip one that was.
"""

from __future__ import annotations

from typing import Final

DEFAULT_BITS: Final = 1 << 23  # 1 MiB: ~3% "maybe" for a key never added, after 1M were
_MASK64: Final = (1 << 64) - 1


class MaybeSet:
    """Bloom filter over Python's own `hash` (process-local, like the set it stands for)."""

    __slots__ = ("_bits", "_hashes", "_mask")

    def __init__(self, bits: int = DEFAULT_BITS, hashes: int = 3) -> None:
        if bits < 8 or bits & (bits - 1):
            raise ValueError(f"bits must be a power of two of at least 8, not {bits}")
        self._bits = bytearray(bits // 8)
        self._mask = bits - 1
        self._hashes = hashes

    # Each bit position is (h + i * step) mod size for i < hashes: written out in both methods,
    # as they run for every write and every lookup of a rebuild.
    def add(self, key: object) -> None:
        h = hash(key) & _MASK64
        step = (h >> 32) | 1  # odd: with a power-of-two size, the positions are distinct
        bits, mask = self._bits, self._mask
        for _ in range(self._hashes):
            position = h & mask
            bits[position >> 3] |= 1 << (position & 7)
            h += step

    def __contains__(self, key: object) -> bool:
        h = hash(key) & _MASK64
        step = (h >> 32) | 1
        bits, mask = self._bits, self._mask
        for _ in range(self._hashes):
            position = h & mask
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
            h += step
        return True


__all__ = ["MaybeSet"]
