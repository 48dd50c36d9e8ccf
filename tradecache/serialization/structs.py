"""Order events decoded straight from their bytes, their shape checked by msgspec in C.

`from_map(unpack(data))` builds a dict of the payload and then looks each key up in it again. A
load replays tens of thousands of stored events at once, so for order events msgspec decodes
the bytes into a Struct per schema instead: its fields are the schema's keys with the types
their codecs take on the wire (`Codec.wire`), and msgspec checks in C that the `type` is one of
them, every required key is there, no other key is, and each value has its wire type. A Struct
it gives is turned into the model event by the schema's compiled decoder, from attributes
instead of keys (`compile_decoder(from_struct=True)`: the same codecs, so the same values).
Whatever msgspec refuses (a key missing or unknown, a value of another type, not msgpack at
all) is decoded the usual way, which says what is wrong: the result, and every error, is the
one `from_map(unpack(data))` gives (a test holds the two to that on mutated payloads).

Only the common shapes take this path: free-form maps must be plain (`limits.PLAIN_MAP`), as for
`unpack_plain`; a bin, an extension type or deeper nesting is decoded the usual way.
"""

from __future__ import annotations

from types import GenericAlias
from typing import Any, Final, Union

import msgspec

from tradecache.serialization.limits import PLAIN_DEPTH
from tradecache.serialization.schemas import ACCOUNT_STATE_FIELDS, ORDER_SCHEMAS, SUBMIT_ORDER_FIELDS, Schema


def wire_struct(name: str, schema: Schema, extra: tuple[tuple[Any, ...], ...] = ()) -> Any:
    """The Struct of `name`'s payload (tag `type` = name), or None when a codec has no wire type;
    `extra`: fields beyond the schema's (msgspec field tuples)."""
    fields: list[tuple[Any, ...]] = list(extra)
    for field in schema.fields:
        wire = field.codec.wire
        if wire is None:
            return None
        if not field.may_be_absent:
            fields.append((field.key, wire))
        elif isinstance(field.default, dict):  # a fresh map each time, as `decode_fields` gives
            fields.append((field.key, wire, msgspec.field(default_factory=dict)))
        else:
            fields.append((field.key, wire, field.default))
    return msgspec.defstruct(
        f"Wire{name}", fields, tag_field="type", tag=name, kw_only=True, forbid_unknown_fields=True, gc=False
    )


# The order events' Structs by schema name (every order schema has wire types).
ORDER_STRUCTS: Final[dict[str, Any]] = {name: wire_struct(name, schema) for name, schema in ORDER_SCHEMAS.items()}
_DECODER: Final = msgspec.msgpack.Decoder(Union[tuple(ORDER_STRUCTS.values())])  # noqa: UP007  # a runtime union of types
# `decode_struct` without the call around it, for the hot path (`MsgPackSerializer.deserialize`):
# raises msgspec.DecodeError or RecursionError where `decode_struct` returns None.
STRUCT_DECODE: Final = _DECODER.decode


# The composite messages ingest takes most often (`Intake.check`), with their nested maps as Structs
# too. A nested order must carry its `type`: a tagged Struct alone lets it be absent, a union of
# tagged Structs does not (the class is checked after decoding).
_NESTED_ORDER: Final = Union[tuple(ORDER_STRUCTS[name] for name in ("OrderInitialized", "OrderDenied"))]  # noqa: UP007
SUBMIT_ORDER_STRUCT: Final[Any] = wire_struct(
    "SubmitOrder", Schema(dict, SUBMIT_ORDER_FIELDS), extra=(("order", _NESTED_ORDER),)
)
# Balances and margins: the map decoders read their keys and ignore `type`; any other key, or a
# value of another type, is left to them.
_BALANCE: Final = msgspec.defstruct(
    "WireAccountBalance", [("total", str), ("locked", str), ("free", str), ("currency", str), ("type", str, "")],
    kw_only=True, forbid_unknown_fields=True, gc=False,
)  # fmt: skip
_MARGIN: Final = msgspec.defstruct(
    "WireMarginBalance",
    [("initial", str), ("maintenance", str), ("currency", str), ("instrument_id", str | None, None), ("type", str, "")],
    kw_only=True, forbid_unknown_fields=True, gc=False,
)  # fmt: skip
ACCOUNT_STATE_STRUCT: Final[Any] = wire_struct(
    "AccountState",
    Schema(dict, ACCOUNT_STATE_FIELDS),
    extra=(
        ("balances", GenericAlias(list, (_BALANCE,))),  # list[...] of a Struct made at run time
        ("margins", GenericAlias(list, (_MARGIN,)), msgspec.field(default_factory=list)),
    ),
)
# How deeply those Structs nest: SubmitOrder -> order -> a free-form map (PLAIN_MAP) and the
# containers it may hold.
STRUCT_DEPTH: Final = 3 + PLAIN_DEPTH
# What `Intake.check` tries first: order events, SubmitOrder and AccountState.
COMMON_STRUCTS: Final[dict[str, Any]] = {
    **ORDER_STRUCTS, "SubmitOrder": SUBMIT_ORDER_STRUCT, "AccountState": ACCOUNT_STATE_STRUCT
}  # fmt: skip
_COMMON_DECODER: Final = msgspec.msgpack.Decoder(Union[tuple(COMMON_STRUCTS.values())])  # noqa: UP007


def decode_common(data: bytes) -> Any:
    """The Struct of an order event, SubmitOrder or AccountState, or None when msgspec refuses `data`."""
    try:
        return _COMMON_DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):  # too deep for msgspec: the map path refuses it by name
        return None


def decode_struct(data: bytes) -> Any:
    """The order event's Struct, or None when msgspec refuses `data` (decode it the usual way)."""
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError too
        # Nesting deeper than msgspec goes (a free-form map): the usual way refuses it within
        # its own depth limit, as a PayloadError.
        return None


__all__ = [
    "ACCOUNT_STATE_STRUCT",
    "COMMON_STRUCTS",
    "ORDER_STRUCTS",
    "STRUCT_DECODE",
    "STRUCT_DEPTH",
    "SUBMIT_ORDER_STRUCT",
    "decode_common",
    "decode_struct",
    "wire_struct",
]
