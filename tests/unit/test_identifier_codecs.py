"""Identifier codecs: the shortcut for ids seen the first time (`plainly_valid`) builds exactly
what the identifier's class does, and refuses nothing it accepts nor accepts anything it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradecache.errors import PayloadError
from tradecache.model import identifiers
from tradecache.model.identifiers import Identifier, plainly_valid
from tradecache.serialization.codecs import identifier

KINDS = [
    cls
    for cls in vars(identifiers).values()
    if isinstance(cls, type) and issubclass(cls, Identifier) and cls not in (Identifier, identifiers.KeyPart)
]
# Texts near the checks' edges: empty, ':' parts (namespace words), control and other unprintable characters.
TEXTS = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="ab-.:/ \x00\x1f\x7f\u00a0\u2028", max_size=10),
    st.sampled_from(["", ":", "orders", "a:orders:b", "O-1", "AUD/USD.SIM", "EXTERNAL", "x:web_7f3a", "a\u00a0b"]),
)


def test_the_shortcut_applies_to_plain_and_key_part_kinds_only() -> None:
    assert plainly_valid(identifiers.VenueOrderId) is bool
    assert plainly_valid(identifiers.ClientOrderId) is not None
    for kind in (identifiers.TraderId, identifiers.StrategyId, identifiers.AccountId, identifiers.InstrumentId):
        assert plainly_valid(kind) is None


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
@given(text=TEXTS)
def test_a_first_seen_id_decodes_as_its_class_builds_it(kind: type[Identifier], text: str) -> None:
    decode = identifier(kind).decode  # a fresh codec: nothing seen yet
    valid = plainly_valid(kind)
    try:
        expected = kind(text)
    except ValueError as exc:
        assert valid is None or not valid(text)  # the shortcut never passes what the class refuses
        with pytest.raises(PayloadError) as refused:
            decode(text, "id")
        assert str(exc) in str(refused.value)
        return
    got = decode(text, "id")
    assert type(got) is kind and got == expected and str.__str__(got) == text
    assert decode(text, "id") is got  # remembered
