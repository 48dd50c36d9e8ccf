"""The fixed-size filter behind `Ledger.assume_empty_store`: never a false "no"."""

from __future__ import annotations

import pytest

from tradecache.model.maybe_set import MaybeSet


def test_every_key_added_is_found_and_few_others_are() -> None:
    found = MaybeSet(bits=1 << 16)
    added = [("orders", f"O-{i}") for i in range(2000)]
    for key in added:
        found.add(key)
    assert all(key in found for key in added)
    others = sum(("orders", f"X-{i}") in found for i in range(10_000))
    assert others < 300  # ~0.2% expected with 2,000 keys in 65,536 bits and 3 hashes


def test_a_full_filter_says_maybe_to_everything_but_never_no_to_what_it_holds() -> None:
    tiny = MaybeSet(bits=8, hashes=1)
    for i in range(100):
        tiny.add(i)
    assert all(i in tiny for i in range(100))


def test_the_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        MaybeSet(bits=1000)
