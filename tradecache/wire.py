"""What the sidecar and a trading pod's client must agree on, byte for byte (SPEC sections 1 and 3):
subject names, header names, reply media types and the load service's error codes.

Both sides import this module and nothing heavier: it needs only the model's `Kind` and
`Collection`. The load endpoints are declared here once (`ENDPOINTS`): the service registers
them, the client and `tradecache load` ask them, the metrics label by them.

Subject names: three roots under the prefix, kept apart so that no stream captures a request or
a reply.

- `<prefix>.in.<trader_id>.<kind>`   what the node publishes (consumed from JetStream)
- `<prefix>.load.<trader_id>.<name>` load requests (NATS micro service)
- `<prefix>.dead.<trader_id>`        dead letters (kept by a second stream)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tradecache.errors import BadRequest, Busy, ReplyTooLarge, RequestRefused, Unavailable
from tradecache.model.ledger import Collection
from tradecache.model.messages import Kind

_KINDS = {kind.value: kind for kind in Kind}

# -- headers ----------------------------------------------------------------------------------
# JetStream drops a second publish with the same id inside its duplicate window.
MSG_ID_HEADER: Final = "Nats-Msg-Id"
ACCEPT_HEADER: Final = "Accept"
# The next page's cursor, on a collection reply that has more.
CURSOR_HEADER: Final = "Tradecache-Cursor"
# nats.micro's error headers (its `ERROR_HEADER`/`ERROR_CODE_HEADER`), spelled here so a client
# need not import nats.micro; a unit test checks they still match.
ERROR_HEADER: Final = "Nats-Service-Error"
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"

# -- reply formats ----------------------------------------------------------------------------
MSGPACK: Final = "application/msgpack"
# Media types answered in msgpack; `application/x-msgpack` is the older, unregistered name.
MSGPACK_TYPES: Final = frozenset({MSGPACK, "application/x-msgpack"})
# A page larger than this is refused: one reply must stay well inside NATS's max payload, and a
# caller asking for more wants the unpaged form.
MAX_PAGE_LIMIT: Final = 10_000

# -- error codes of a load reply (the `Nats-Service-Error-Code` header) ----------------------
# Declared on the refusals of `tradecache.errors` (one class per code), named here for both sides.
BAD_REQUEST: Final = BadRequest.code
TOO_LARGE: Final = ReplyTooLarge.code
BUSY: Final = Busy.code  # more requests in flight than allowed: ask again shortly
INTERNAL: Final = RequestRefused.code
UNAVAILABLE: Final = Unavailable.code  # Redis cannot answer now


@dataclass(frozen=True)
class Subjects:
    prefix: str
    trader_id: str

    @property
    def inbound(self) -> str:
        """The consumer's filter: every kind for this trader."""
        return f"{self.prefix}.in.{self.trader_id}.>"

    @property
    def inbound_root(self) -> str:
        """What the inbound stream captures: every trader's messages."""
        return f"{self.prefix}.in.>"

    def inbound_for(self, kind: Kind) -> str:
        return f"{self.prefix}.in.{self.trader_id}.{kind.value}"

    def inbound_for_name(self, kind: str) -> str:
        """`inbound_for` by the kind's name (`"order"`), for producers and tools."""
        return self.inbound_for(_KINDS[kind])

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead.{self.trader_id}"

    @property
    def dead_root(self) -> str:
        return f"{self.prefix}.dead.>"

    def load(self, name: str) -> str:
        return f"{self.prefix}.load.{self.trader_id}.{name}"

    def kind_of(self, subject: str) -> Kind | None:
        """The kind a subject names (its last token), or None if it is not one of ours."""
        head, _, last = subject.rpartition(".")
        if head != f"{self.prefix}.in.{self.trader_id}":
            return None
        return _KINDS.get(last)


# -- load endpoints (SPEC section 3): `<prefix>.load.<trader_id>.<name>` -----------------------
@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    collection: Collection | None  # None: `stats`
    id_field: str | None = None  # set: one entity; None: the whole collection (paged)

    @property
    def is_collection(self) -> bool:
        return self.collection is not None and self.id_field is None


ENDPOINTS: Final = (
    Endpoint("currency", Collection.CURRENCIES, "code"),
    Endpoint("currencies", Collection.CURRENCIES),
    Endpoint("instrument", Collection.INSTRUMENTS, "instrument_id"),
    Endpoint("instruments", Collection.INSTRUMENTS),
    Endpoint("account", Collection.ACCOUNTS, "account_id"),
    Endpoint("accounts", Collection.ACCOUNTS),
    Endpoint("order", Collection.ORDERS, "client_order_id"),
    Endpoint("orders", Collection.ORDERS),
    Endpoint("position", Collection.POSITIONS, "position_id"),
    Endpoint("positions", Collection.POSITIONS),
    Endpoint("strategy", Collection.STRATEGIES, "strategy_id"),
    Endpoint("submit_order_command", Collection.SUBMIT_ORDER, "client_order_id"),
    Endpoint("submit_order_commands", Collection.SUBMIT_ORDER),
    Endpoint("submit_order_list_command", Collection.SUBMIT_ORDER_LIST, "order_list_id"),
    Endpoint("submit_order_list_commands", Collection.SUBMIT_ORDER_LIST),
    Endpoint("stats", None),
)
ENDPOINTS_BY_NAME: Final = {endpoint.name: endpoint for endpoint in ENDPOINTS}


__all__ = [
    "ACCEPT_HEADER",
    "BAD_REQUEST",
    "BUSY",
    "CURSOR_HEADER",
    "ENDPOINTS",
    "ENDPOINTS_BY_NAME",
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "INTERNAL",
    "MAX_PAGE_LIMIT",
    "MSGPACK",
    "MSGPACK_TYPES",
    "MSG_ID_HEADER",
    "TOO_LARGE",
    "UNAVAILABLE",
    "Endpoint",
    "Subjects",
]
