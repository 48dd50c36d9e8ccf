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

from typing import Any, Final, Union

import msgspec

from tradecache.serialization.schemas import ORDER_SCHEMAS, Schema


def wire_struct(name: str, schema: Schema) -> Any:
    """The Struct of `name`'s payload (tag `type` = name), or None when a codec has no wire type."""
    fields: list[tuple[Any, ...]] = []
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


def decode_struct(data: bytes) -> Any:
    """The order event's Struct, or None when msgspec refuses `data` (decode it the usual way)."""
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError too
        # Nesting deeper than msgspec goes (a free-form map): the usual way refuses it within
        # its own depth limit, as a PayloadError.
        return None


__all__ = ["ORDER_STRUCTS", "decode_struct", "wire_struct"]
