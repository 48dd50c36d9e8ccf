"""The pure domain model: values, identifiers, messages, orders, positions, accounts, the ledger.

Nothing in this package does I/O.
"""

from tradecache.model.accounts import Account, replay_account
from tradecache.model.ledger import Collection, Ledger, Outcome, Write, WriteOp
from tradecache.model.messages import Kind, Message, kind_of
from tradecache.model.orders import Order, replay_order
from tradecache.model.positions import Position, replay_position, split_flip
from tradecache.model.values import Currency, Money, Price, Quantity

__all__ = [
    "Account",
    "Collection",
    "Currency",
    "Kind",
    "Ledger",
    "Message",
    "Money",
    "Order",
    "Outcome",
    "Position",
    "Price",
    "Quantity",
    "Write",
    "WriteOp",
    "kind_of",
    "replay_account",
    "replay_order",
    "replay_position",
    "split_flip",
]
