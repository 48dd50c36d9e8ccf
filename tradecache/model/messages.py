"""Every message the sidecar takes in, as one type, and the subject kind each belongs on."""

from __future__ import annotations

from enum import StrEnum

from tradecache.model.events import (
    AccountState,
    OrderEvent,
    PositionEvent,
    StrategyDeleted,
    StrategyState,
    SubmitOrder,
    SubmitOrderList,
)
from tradecache.model.instruments import Instrument
from tradecache.model.values import Currency

Message = (
    OrderEvent
    | PositionEvent
    | AccountState
    | SubmitOrder
    | SubmitOrderList
    | StrategyState
    | StrategyDeleted
    | Currency
    | Instrument
)


class Kind(StrEnum):
    """What a message is: the last token of its subject (`<prefix>.in.<trader_id>.<kind>`)."""

    CURRENCY = "currency"
    INSTRUMENT = "instrument"
    ORDER = "order"
    POSITION = "position"
    ACCOUNT = "account"
    COMMAND = "command"
    STRATEGY = "strategy"


def kind_of(message: Message) -> Kind:
    """The subject kind a message belongs on."""
    if isinstance(message, OrderEvent):
        return Kind.ORDER
    if isinstance(message, PositionEvent):
        return Kind.POSITION
    if isinstance(message, AccountState):
        return Kind.ACCOUNT
    if isinstance(message, (SubmitOrder, SubmitOrderList)):
        return Kind.COMMAND
    if isinstance(message, (StrategyState, StrategyDeleted)):
        return Kind.STRATEGY
    if isinstance(message, Currency):
        return Kind.CURRENCY
    return Kind.INSTRUMENT


def type_name_of(message: Message) -> str:
    """The message's wire `type`."""
    if isinstance(message, Currency):
        return "Currency"
    if isinstance(message, Instrument):
        return message.type
    return message.type_name


__all__ = ["Kind", "Message", "kind_of", "type_name_of"]
