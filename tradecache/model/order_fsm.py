"""The order state machine as a lookup table.

Theory of operation. Most order events *request* a status (OrderAccepted requests ACCEPTED,
OrderFilled requests PARTIALLY_FILLED or FILLED, ...). Two rules decide what happens:

1. The pair (current status, requested status) is looked up in `TRANSITIONS`. A pair that is
   not in the table is refused with `OrderEventRefused(invalid_transition)`; the order is not
   touched. A pair that is there gives the resulting status, which is usually the requested one
   (the one exception: PENDING_UPDATE + SUBMITTED stays PENDING_UPDATE).
2. OrderModifyRejected, OrderCancelRejected and OrderUpdated request nothing. They return the
   order from PENDING_UPDATE (or PENDING_CANCEL for a cancel reject) to the status it had before
   it went pending, and that return must itself be in the table.

The table was probed on NautilusTrader 1.221.0 by applying every event in every status
(wire-format.md section 6.3).
"""

from __future__ import annotations

from typing import Final

from tradecache.errors import OrderEventRefused, RejectReason
from tradecache.model.enums import OrderStatus as S

_ANY_STATUS_CHANGE = {
    S.INITIALIZED: {
        S.DENIED: S.DENIED,
        S.EMULATED: S.EMULATED,
        S.RELEASED: S.RELEASED,
        S.SUBMITTED: S.SUBMITTED,
        # External orders found by reconciliation skip straight past submission.
        S.ACCEPTED: S.ACCEPTED,
        S.REJECTED: S.REJECTED,
        S.CANCELED: S.CANCELED,
        S.EXPIRED: S.EXPIRED,
        S.TRIGGERED: S.TRIGGERED,
    },
    S.EMULATED: {S.RELEASED: S.RELEASED, S.CANCELED: S.CANCELED, S.EXPIRED: S.EXPIRED},
    S.RELEASED: {S.DENIED: S.DENIED, S.SUBMITTED: S.SUBMITTED, S.CANCELED: S.CANCELED},
    S.SUBMITTED: {
        S.ACCEPTED: S.ACCEPTED,
        S.REJECTED: S.REJECTED,
        S.CANCELED: S.CANCELED,
        S.PENDING_UPDATE: S.PENDING_UPDATE,
        S.PENDING_CANCEL: S.PENDING_CANCEL,
        # A venue may fill before it acknowledges.
        S.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        S.FILLED: S.FILLED,
    },
    S.ACCEPTED: {
        S.REJECTED: S.REJECTED,
        S.CANCELED: S.CANCELED,
        S.EXPIRED: S.EXPIRED,
        S.TRIGGERED: S.TRIGGERED,
        S.PENDING_UPDATE: S.PENDING_UPDATE,
        S.PENDING_CANCEL: S.PENDING_CANCEL,
        S.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        S.FILLED: S.FILLED,
    },
    # A fill that arrives after the cancel went through is still a fill.
    S.CANCELED: {S.PARTIALLY_FILLED: S.PARTIALLY_FILLED, S.FILLED: S.FILLED},
    S.TRIGGERED: {
        S.REJECTED: S.REJECTED,
        S.CANCELED: S.CANCELED,
        S.EXPIRED: S.EXPIRED,
        S.PENDING_UPDATE: S.PENDING_UPDATE,
        S.PENDING_CANCEL: S.PENDING_CANCEL,
        S.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        S.FILLED: S.FILLED,
    },
    S.PENDING_UPDATE: {
        # A late OrderSubmitted does not take the order out of its pending state.
        S.SUBMITTED: S.PENDING_UPDATE,
        S.ACCEPTED: S.ACCEPTED,
        S.REJECTED: S.REJECTED,
        S.CANCELED: S.CANCELED,
        S.EXPIRED: S.EXPIRED,
        S.TRIGGERED: S.TRIGGERED,
        S.PENDING_UPDATE: S.PENDING_UPDATE,
        S.PENDING_CANCEL: S.PENDING_CANCEL,
        S.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        S.FILLED: S.FILLED,
    },
    S.PENDING_CANCEL: {
        S.ACCEPTED: S.ACCEPTED,
        S.REJECTED: S.REJECTED,
        S.CANCELED: S.CANCELED,
        S.EXPIRED: S.EXPIRED,
        S.PENDING_CANCEL: S.PENDING_CANCEL,
        S.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        S.FILLED: S.FILLED,
    },
    S.PARTIALLY_FILLED: {
        S.CANCELED: S.CANCELED,
        S.EXPIRED: S.EXPIRED,
        S.PENDING_UPDATE: S.PENDING_UPDATE,
        S.PENDING_CANCEL: S.PENDING_CANCEL,
        S.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
        S.FILLED: S.FILLED,
    },
    # DENIED, REJECTED, EXPIRED and FILLED are final: nothing moves them.
}

TRANSITIONS: Final[dict[tuple[S, S], S]] = {
    (current, requested): result for current, row in _ANY_STATUS_CHANGE.items() for requested, result in row.items()
}

# The same table as one row per current status, indexed by the status' value (an IntEnum): what
# `Order.apply` looks up, without building and hashing a tuple key.
TRANSITIONS_BY_STATUS: Final[list[dict[S, S]]] = [{} for _ in range(max(S) + 1)]
for (_current, _requested), _result in TRANSITIONS.items():
    TRANSITIONS_BY_STATUS[_current][_requested] = _result

CLOSED_STATUSES: Final = frozenset({S.DENIED, S.REJECTED, S.CANCELED, S.EXPIRED, S.FILLED})
OPEN_STATUSES: Final = frozenset({S.ACCEPTED, S.TRIGGERED, S.PENDING_CANCEL, S.PENDING_UPDATE, S.PARTIALLY_FILLED})
INFLIGHT_STATUSES: Final = frozenset({S.SUBMITTED, S.PENDING_CANCEL, S.PENDING_UPDATE})
PENDING_STATUSES: Final = frozenset({S.PENDING_UPDATE, S.PENDING_CANCEL})


def next_status(current: S, requested: S, *, client_order_id: str, event_type: str) -> S:
    """The status after `current` takes a request for `requested`; raises when the table refuses."""
    result = TRANSITIONS.get((current, requested))
    if result is None:
        raise OrderEventRefused(
            RejectReason.INVALID_TRANSITION,
            client_order_id,
            event_type,
            f"transition {current.name} -> {requested.name} is not allowed",
        )
    return result


__all__ = [
    "CLOSED_STATUSES",
    "INFLIGHT_STATUSES",
    "OPEN_STATUSES",
    "PENDING_STATUSES",
    "TRANSITIONS",
    "TRANSITIONS_BY_STATUS",
    "next_status",
]
