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
    ├── BusRefused           NATS refused what a publish carried (size, a header)
    ├── LoadError            the client's load request was answered with an error (.code)
    ├── RebuildRefused       `tradecache rebuild` would be unsafe or incomplete now
    └── RequestRefused       the load service answers a request with an error (.code), not a result
        ├── BadRequest           400: the request's body is not what the endpoint takes
        ├── ReplyTooLarge        413: the answer would pass the max payload; ask in pages
        ├── Busy                 429: more requests in flight than allowed; ask again shortly
        └── Unavailable          503: Redis cannot answer now

This drawing is the whole tree: tests/unit/test_errors.py compares it with the classes. Errors
keep their facts as attributes and build their message from them. A load reply's error code is
declared here, on its class, and `tradecache.wire` names it for both sides.
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


class LoadError(TradecacheError):
    """The sidecar answered a load request with an error (`code`: 400, 413, 429, 503 or 500)."""

    def __init__(self, endpoint: str, code: int, message: str) -> None:
        self.endpoint = endpoint
        self.code = code
        self.message = message
        super().__init__(f"load {endpoint}: {code} {message}")


class RebuildRefused(TradecacheError):
    """Rebuilding now would be unsafe or incomplete; the message says why and what to do."""


class RequestRefused(TradecacheError):
    """A request answered with a micro error (`code`, `message`) rather than a result; this class
    itself is the 500 of an internal error."""

    code = "500"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BadRequest(RequestRefused):
    """The body is not what the endpoint takes (a missing or unknown key, a bad cursor...)."""

    code = "400"


class ReplyTooLarge(RequestRefused):
    """The reply would not fit in NATS's max payload: the caller should ask in pages. `cursor`:
    where a paging caller goes on when the page's first item alone does not fit (after it)."""

    code = "413"

    def __init__(self, message: str, cursor: str | None = None) -> None:
        super().__init__(message)
        self.cursor = cursor


class Busy(RequestRefused):
    """More requests in flight than `load.max_in_flight`: answered at once, try again shortly."""

    code = "429"


class Unavailable(RequestRefused):
    """Redis cannot answer now (down, timing out, loading, read-only)."""

    code = "503"


__all__ = [
    "BadRequest",
    "BusRefused",
    "BusUnavailable",
    "Busy",
    "ConfigError",
    "EventRejected",
    "LeaseLost",
    "LoadError",
    "OrderEventRefused",
    "PayloadError",
    "RebuildRefused",
    "RejectReason",
    "ReplyTooLarge",
    "RequestRefused",
    "StoreRefused",
    "StoreUnavailable",
    "TradecacheError",
    "Unavailable",
]
