"""The error tree of tradecache.

    TradecacheError
    ├── ConfigError          a configuration key is unknown or has a bad value
    ├── EventRejected        a message is not applied: .reason (a RejectReason) says why
    │   ├── PayloadError         the bytes are not a valid message (.field names the culprit)
    │   └── OrderEventRefused    the order's state machine or identity checks refuse the event
    ├── StoreUnavailable     Redis is down or timing out (retry later; never ack)
    ├── StoreRefused         Redis refused what a call carried (WRONGTYPE, a script error)
    ├── LeaseLost            another daemon holds the trader's lease: this one must not write
    ├── BusUnavailable       NATS is down or not answering (retry later)
    └── BusRefused           NATS refused what a publish carried (size, a header)

Errors keep their facts as attributes and build their message from them.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a message went to the dead-letter subject (the `Tradecache-Reason` header)."""

    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_SUBJECT = "wrong_subject"
    TRADER_MISMATCH = "trader_mismatch"
    INVALID_TRANSITION = "invalid_transition"
    UNKNOWN_ORDER = "unknown_order"
    INVALID_FIELD = "invalid_field"
    OVERSIZE = "oversize"
    # Beyond SPEC section 1's eight (SPEC section 7 lets the list grow; each is documented in
    # docs/ARCHITECTURE.md): a payload over a decode limit (nesting, elements, a string's length),
    # a free-form field over its configured cap, a message whose writes Redis refused, and a
    # conflicting duplicate.
    LIMIT_EXCEEDED = "limit_exceeded"
    FIELD_TOO_LARGE = "field_too_large"
    STORE_REFUSED = "store_refused"
    # An event (command) id already stored for the entity with other content (issue 12): a
    # repeat with the same content is a duplicate, silently; this one is reported.
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


class TradecacheError(Exception):
    """Base of every error tradecache raises on purpose."""


class ConfigError(TradecacheError):
    """A configuration value is missing, unknown or invalid."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class EventRejected(TradecacheError):
    """A message that will not be applied; it is dead-lettered with `reason`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class PayloadError(EventRejected):
    """The payload is not a valid message: not msgpack, an unknown type, a missing or bad field.

    `field` is the dotted path of the offending key ("" when the payload as a whole is bad).
    """

    def __init__(self, reason: RejectReason, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        where = f"field '{field}': " if field else ""
        super().__init__(reason, f"{where}{problem}")


class OrderEventRefused(EventRejected):
    """An order event the order refuses (bad transition, mismatched ids, overfill, unknown order)."""

    def __init__(self, reason: RejectReason, client_order_id: str, event_type: str, problem: str) -> None:
        self.client_order_id = client_order_id
        self.event_type = event_type
        self.problem = problem
        super().__init__(reason, f"{event_type} for order '{client_order_id}': {problem}")


class StoreUnavailable(TradecacheError):
    """Redis could not carry out `operation` (connection lost, timeout, read-only replica...)."""

    def __init__(self, operation: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(f"Redis unavailable during {operation}: {cause}")


class StoreRefused(TradecacheError):
    """Redis ran `operation` and refused what it carried (`cause` is Redis' own words)."""

    def __init__(self, operation: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(f"Redis refused {operation}: {cause}")


class LeaseLost(TradecacheError):
    """This process does not hold the trader's lease (any more): another daemon writes it."""

    def __init__(self, operation: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(f"lease lost during {operation}: {cause}")


class BusUnavailable(TradecacheError):
    """NATS could not carry out `operation`."""

    def __init__(self, operation: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(f"NATS unavailable during {operation}: {cause}")


class BusRefused(TradecacheError):
    """NATS (or JetStream) refused what `operation` carried: too large, a bad header..."""

    def __init__(self, operation: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(f"NATS refused {operation}: {cause}")


__all__ = [
    "BusRefused",
    "BusUnavailable",
    "ConfigError",
    "EventRejected",
    "LeaseLost",
    "OrderEventRefused",
    "PayloadError",
    "RejectReason",
    "StoreRefused",
    "StoreUnavailable",
    "TradecacheError",
]
