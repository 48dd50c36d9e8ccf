"""Enums print as their names where people read them, and keep their values everywhere else."""

from __future__ import annotations

import enum

import pytest

from tests.unit.factories import OrderEvents
from tradecache.model import enums
from tradecache.model.enums import OrderSide, OrderStatus, WireEnum
from tradecache.serialization import MsgPackSerializer

ALL = [member for value in vars(enums).values() if isinstance(value, enum.EnumType) and value is not WireEnum
       for member in value]  # fmt: skip


@pytest.mark.parametrize("member", ALL, ids=[f"{type(m).__name__}.{m.name}" for m in ALL])
def test_str_and_format_give_the_name_and_int_the_value(member: WireEnum) -> None:
    assert isinstance(member, WireEnum)
    assert str(member) == f"{member}" == "%s" % member == member.name  # noqa: UP031
    assert f"{member:>30}" == member.name.rjust(30)
    assert int(member) == member.value


def test_the_wire_form_is_still_the_name_and_comparisons_still_the_value() -> None:
    events = OrderEvents()
    order_filled = events.filled()
    serializer = MsgPackSerializer(timestamps_as_str=True)
    as_map = serializer.to_map(order_filled)
    assert as_map["order_side"] == order_filled.order_side.name
    assert serializer.from_map(as_map) == order_filled
    assert OrderStatus.FILLED > OrderStatus.PARTIALLY_FILLED
    assert OrderSide(1) is OrderSide.BUY
