"""MsgPackSerializer: wire bytes <-> model objects, NautilusTrader's msgpack format.

`deserialize(data)` decodes, validates every field and returns the model object; anything wrong
raises `PayloadError` whose `.reason` is `malformed` (not msgpack, not a map, no `type`, a
required key missing), `unknown_type` or `invalid_field`, and whose message names the field.
`serialize(obj)` writes the map back in NautilusTrader's key order; with `timestamps_as_str`
the top-level `ts_*` values are decimal strings (19-digit nanoseconds stay exact).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

import msgpack
import msgspec

from tradecache.errors import PayloadError, RejectReason
from tradecache.model.enums import (
    ContingencyType,
    CurrencyType,
    OrderSide,
    OrderType,
    TrailingOffsetType,
    TriggerType,
)
from tradecache.model.events import (
    AccountBalance,
    AccountState,
    MarginBalance,
    OrderEvent,
    OrderFilled,
    OrderInitialized,
    PositionEvent,
    StrategyDeleted,
    StrategyState,
    SubmitOrder,
    SubmitOrderList,
)
from tradecache.model.identifiers import InstrumentId
from tradecache.model.instruments import (
    COMMON_INSTRUMENT_KEYS,
    INSTRUMENT_TYPES,
    Instrument,
    instrument_class,
)
from tradecache.model.key_parts import key_part_problem
from tradecache.model.messages import Message
from tradecache.model.values import Currency, Money, on_currency_change
from tradecache.serialization import codecs
from tradecache.serialization.codecs import Field, invalid
from tradecache.serialization.compiled import struct_decode as _compiled
from tradecache.serialization.limits import DecodeLimits, unpack_limited, unpack_plain
from tradecache.serialization.schemas import (
    ACCOUNT_STATE_FIELDS,
    CURRENCY_FIELDS,
    ORDER_SCHEMAS,
    POSITION_SCHEMAS,
    STRATEGY_STATE_FIELDS,
    SUBMIT_ORDER_FIELDS,
    SUBMIT_ORDER_LIST_FIELDS,
    Schema,
)
from tradecache.serialization.structs import (
    ACCOUNT_STATE_STRUCT,
    COMMON_STRUCTS,
    ORDER_STRUCTS,
    STRUCT_DECODE,
    SUBMIT_ORDER_STRUCT,
)
from tradecache.serialization.structs import decode_common as struct_of_common

_SCHEMAS: dict[str, Schema] = {**ORDER_SCHEMAS, **POSITION_SCHEMAS}
_PRICE_OPTIONS = ("price", "trigger_price", "activation_price")
_NEEDS_PRICE = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.LIMIT_IF_TOUCHED})
_NEEDS_TRIGGER = frozenset(
    {OrderType.STOP_MARKET, OrderType.MARKET_IF_TOUCHED, OrderType.STOP_LIMIT, OrderType.LIMIT_IF_TOUCHED}
)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def decode_fields(fields: tuple[Field, ...], data: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Decode the keys `fields` names from `data` into keyword arguments for a model class."""
    values: dict[str, Any] = {}
    for field in fields:
        key = field.key
        if key in data:
            values[key] = field.codec.decode(data[key], f"{path}.{key}" if path else key)
        elif field.may_be_absent:
            values[key] = field.default
        else:
            raise PayloadError(RejectReason.MALFORMED, _join(path, key), "required field is missing")
    return values


_ABSENT = object()


def compile_decoder(
    schema: Schema,
    *,
    nested: bool = False,
    from_struct: bool = False,
    then: Callable[[Any], Any] | None = None,
    native: bool = True,
) -> Callable[..., Any]:
    """A decoder specialised to one schema: `decode_fields` + the constructor, unrolled.

    The generic loop costs a call, a lookup and a branch per field; on the hot path (every message
    the daemon takes in, every event a load replays) it is unrolled into straight-line code, as
    `dataclasses` itself does for `__init__`, and a codec's `fast` expression decides the common
    case in place: its `decode` is called only for what that expression leaves (MISS), so errors
    are `decode`'s own. With `nested`, the decoder takes the map's path (`orders[1]`) as well.
    With `from_struct`, it takes the msgspec Struct `structs.py` decoded instead of a map: every
    key is an attribute, present (an absent one holds its field's default), its value of the
    codec's `wire` type (so a codec's `fast_wire` expression, which skips the class test, is used).
    With `then`, the result is handed to it and what it returns is returned (a check that raises).
    A Struct decoder runs in C where `_struct_decode.c` is built (`compiled_struct_decoder`: the
    same steps, caches and functions); `native=False` asks for the Python source regardless.
    """
    if from_struct and not nested and native:
        compiled = compiled_struct_decoder(schema, then)
        if compiled is not None:
            return compiled
    env: dict[str, Any] = {"cls": schema.cls, "ABSENT": _ABSENT, "MISS": codecs.MISS, "missing": _missing,
                           "dict": dict, "join": _join}  # fmt: skip
    body = ["def decode(data, path=''):" if nested else "def decode(data):"]
    for n, field in enumerate(schema.fields):
        inner = field.codec.inner
        codec = field.codec if inner is None else inner
        env[f"decode{n}"] = codec.decode
        key = repr(field.key)
        where = f"join(path, {key})" if nested else key
        value = f"v{n}"
        call = f"decode{n}({value}, {where})"
        expression = codec.fast_wire if from_struct and codec.fast_wire is not None else codec.fast
        if expression is not None:
            env[f"env{n}"] = codec.env
            fast = expression.format(v=value, e=f"env{n}")
            convert = [f"    x{n} = {fast}"]
            if "MISS" in expression:
                convert += [f"    if x{n} is MISS:", f"        x{n} = {call}"]
        else:
            convert = [f"    x{n} = {call}"]
        if inner is not None:  # nil is allowed: decoded as None
            nil = [f"    if {value} is None:", f"        x{n} = None", "    else:"]
            convert = [*nil, *("    " + line for line in convert)]
        if from_struct:
            body.append(f"    {value} = data.{field.key}")
            body.extend(convert)
        elif field.may_be_absent:
            env[f"default{n}"] = field.default
            fallback = f"dict(default{n})" if isinstance(field.default, dict) else f"default{n}"
            body.append(f"    {value} = data.get({key}, ABSENT)")
            body.append(f"    if {value} is ABSENT:")
            body.append(f"        x{n} = {fallback}")
            body.append("    else:")
            body.extend("    " + line for line in convert)
        else:
            body.append(f"    {value} = data[{key}] if {key} in data else missing({where})")
            body.extend(convert)
    body.extend(_construct(schema, env))
    if then is not None:  # the check the result goes through, called from here rather than wrapped
        env["then"] = then
        body[-1] = body[-1].replace("    return ", "    return then(", 1) + ")"
    exec("\n".join(body), env)
    decoder: Callable[..., Any] = env["decode"]
    return decoder


# How a decoder builds its result (`_construction`): each slot of an event class set from a field
# (its index in the schema), to a fixed default, or to what a default factory makes.
_FROM_FIELD: Final = "field"
_FIXED: Final = "fixed"
_FACTORY: Final = "factory"


def _construction(schema: Schema) -> list[tuple[str, str, Any]] | None:
    """The slots of `schema.cls` in order, each (name, source, index or value); None when the class
    is called with keyword arguments instead.

    An event class (a slotted dataclass with nothing to run after `__init__`) is built by setting
    its slots one by one, its other fields to their defaults, as `__init__` would: calling it
    with ~20 keyword arguments cost 3x as much. Anything else is called with keyword arguments.
    """
    cls = schema.cls
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or params.frozen or not hasattr(cls, "__slots__") or hasattr(cls, "__post_init__"):
        return None
    given = {field.key: n for n, field in enumerate(schema.fields)}
    slots: list[tuple[str, str, Any]] = []
    for field in dataclasses.fields(cls):
        if field.name in given:
            slots.append((field.name, _FROM_FIELD, given[field.name]))
        elif field.default is not dataclasses.MISSING:
            slots.append((field.name, _FIXED, field.default))
        elif field.default_factory is not dataclasses.MISSING:
            slots.append((field.name, _FACTORY, field.default_factory))
        else:
            raise TypeError(f"{cls.__name__}.{field.name} is not in its schema and has no default")
    if set(given) - {field.name for field in dataclasses.fields(cls)}:
        raise TypeError(f"{cls.__name__} has no field for some keys of its schema")
    return slots


def _construct(schema: Schema, env: dict[str, Any]) -> list[str]:
    """The lines that build the result from `x0`, `x1`... (one per schema field): see `_construction`."""
    slots = _construction(schema)
    if slots is None:
        arguments = ", ".join(f"{field.key}=x{n}" for n, field in enumerate(schema.fields))
        return [f"    return cls({arguments})"]
    env["new"] = object.__new__
    lines = ["    obj = new(cls)"]
    for n, (name, source, value) in enumerate(slots):
        if source == _FROM_FIELD:
            lines.append(f"    obj.{name} = x{value}")
        elif source == _FIXED:
            env[f"fixed{n}"] = value
            lines.append(f"    obj.{name} = fixed{n}")
        else:
            env[f"factory{n}"] = value
            lines.append(f"    obj.{name} = factory{n}()")
    return [*lines, "    return obj"]


def _step_kinds() -> dict[str | None, int]:
    """The compiled decoders' step for each fast expression a codec declares for a Struct's values
    (`_struct_decode.c` does what the expression says); a field with any other one leaves its
    schema to the Python source."""
    if _compiled is None:
        return {}
    return {
        None: _compiled.STEP_CALL,
        "{v}": _compiled.STEP_PASS,
        codecs.PRICE.fast_wire: _compiled.STEP_DICT,
        codecs.CURRENCY.fast_wire: _compiled.STEP_DICT_NOSPACE,
        codecs.TIMESTAMP.fast: _compiled.STEP_TIMESTAMP,
        codecs.UUID.fast_wire: _compiled.STEP_PREDICATE,
    }


_STEP_KINDS: Final = _step_kinds()
# `identifiers.plain_rule`'s names, as the compiled identifier step takes them.
_RULES: Final[dict[str | None, int]] = (
    {None: _compiled.RULE_NONE, "text": _compiled.RULE_TEXT, "key_part": _compiled.RULE_KEY_PART} if _compiled else {}
)


def compiled_struct_decoder(schema: Schema, then: Callable[[Any], Any] | None = None) -> Callable[[Any], Any] | None:
    """`compile_decoder(schema, from_struct=True, then=then)` run in C (`_struct_decode.c`), or None
    where that module is not there or a field's fast expression is not one it knows."""
    if _compiled is None:
        return None
    steps = []
    for field in schema.fields:
        inner = field.codec.inner
        codec = field.codec if inner is None else inner
        expression = codec.fast_wire if codec.fast_wire is not None else codec.fast
        kind = _STEP_KINDS.get(expression)
        if kind is None:
            return None
        if kind in (_compiled.STEP_DICT, _compiled.STEP_DICT_NOSPACE) and codec.env.__class__ is not dict:
            return None
        if kind == _compiled.STEP_TIMESTAMP and codec.env.__class__ is not int:
            return None
        identifier: tuple[Any, ...] = ()
        if kind == _compiled.STEP_DICT and codec.identifier is not None:
            cls, rule, size = codec.identifier
            kind, identifier = _compiled.STEP_IDENTIFIER, (cls, _RULES[rule], size)
        steps.append((field.key, kind, inner is not None, codec.env, codec.decode, field.key, *identifier))
    slots = _construction(schema)
    sources = {_FROM_FIELD: _compiled.SLOT_FIELD, _FIXED: _compiled.SLOT_FIXED, _FACTORY: _compiled.SLOT_FACTORY}
    if slots is not None:
        build = _compiled.BUILD_SLOTS
        specs = tuple(
            (name, sources[source], value if source == _FROM_FIELD else 0, None if source == _FROM_FIELD else value)
            for name, source, value in slots
        )
    else:
        build = _compiled.BUILD_DICT if schema.cls is dict else _compiled.BUILD_CALL
        specs = ()
    decoder: Callable[[Any], Any] = _compiled.StructDecoder(
        tuple(steps), build, schema.cls, object.__new__, specs, then
    )
    return decoder


def _missing(key: str) -> Any:
    raise PayloadError(RejectReason.MALFORMED, key, "required field is missing")


def encode_fields(fields: tuple[Field, ...], obj: Any, out: dict[str, Any], ts_as_str: bool) -> None:
    for field in fields:
        out[field.key] = field.codec.encode(getattr(obj, field.key), ts_as_str)


def _to_timestamp_str(data: dict[str, Any]) -> dict[str, Any]:
    """Top-level `ts_*` integers as strings (the nested maps keep their integers)."""
    return {
        key: str(value) if key.startswith("ts_") and isinstance(value, int) and not isinstance(value, bool) else value
        for key, value in data.items()
    }


class MsgPackSerializer:
    """Encode and decode messages in NautilusTrader's msgpack wire format."""

    def __init__(self, timestamps_as_str: bool = True) -> None:
        self.timestamps_as_str = timestamps_as_str

    # -- bytes ---------------------------------------------------------------------------

    def deserialize(self, data: bytes) -> Message:
        """Decode one message. Raises `PayloadError` naming the field and the problem.

        Raises:
            PayloadError: the bytes are not a valid message; `.reason` and `.field` say why and where.
        """
        if data.__class__ is bytes:  # an order event of the usual shape: straight from the bytes
            try:
                wire = STRUCT_DECODE(data)  # `structs.decode_struct`, without its call
            except (msgspec.DecodeError, RecursionError):
                pass  # decoded the usual way below, which says why
            else:
                try:
                    return _FROM_STRUCT[wire.__class__](wire)
                except PayloadError:
                    pass  # decoded the usual way below, which raises the same error
        return self.from_map(unpack(data))

    def serialize(self, obj: Message) -> bytes:
        """Encode one message as NautilusTrader does (a msgpack map).

        Raises:
            TypeError: `obj` is not a message of the model.
        """
        packed: bytes = msgpack.packb(self.to_map(obj), use_bin_type=True)
        return packed

    def deserialize_instrument(self, data: bytes) -> Instrument:
        """Decode an instrument of any type, known or not.

        Raises:
            PayloadError: the bytes are not a valid instrument.
        """
        return decode_instrument(unpack(data))

    # -- maps ----------------------------------------------------------------------------

    def from_map(self, data: dict[str, Any]) -> Message:
        """Decode one message from its unpacked map.

        Raises:
            PayloadError: the map is not a valid message; `.reason` and `.field` say why and where.
        """
        type_name = data.get("type")
        if not isinstance(type_name, str) or not type_name:
            raise PayloadError(RejectReason.MALFORMED, "type", "missing, empty or not a string")
        decoder = _DECODERS.get(type_name)
        if decoder is not None:
            return decoder(data)
        if type_name in INSTRUMENT_TYPES or looks_like_instrument(data):
            return decode_instrument(data)
        raise PayloadError(RejectReason.UNKNOWN_TYPE, "type", f"unknown message type {type_name!r}")

    def to_map(self, obj: Message, *, top_level: bool = True) -> dict[str, Any]:
        """One message as the map `serialize` packs (`top_level`: timestamps as strings if so configured).

        Raises:
            TypeError: `obj` is not a message of the model.
        """
        ts_as_str = self.timestamps_as_str and top_level
        if isinstance(obj, Instrument):
            return _to_timestamp_str(obj.data) if ts_as_str else dict(obj.data)
        if isinstance(obj, Currency):
            return encode_currency(obj)
        out: dict[str, Any] = {"type": obj.type_name}
        if isinstance(obj, (OrderEvent, PositionEvent)):
            encode_fields(_SCHEMAS[obj.type_name].fields, obj, out, ts_as_str)
        elif isinstance(obj, AccountState):
            _encode_account_state(obj, out, ts_as_str)
        elif isinstance(obj, SubmitOrder):
            _encode_submit_order(self, obj, out, ts_as_str)
        elif isinstance(obj, SubmitOrderList):
            _encode_submit_order_list(self, obj, out, ts_as_str)
        elif isinstance(obj, StrategyState):
            encode_fields(STRATEGY_STATE_FIELDS[:2], obj, out, ts_as_str)
            out["state"] = dict(obj.state)
            encode_fields(STRATEGY_STATE_FIELDS[2:], obj, out, ts_as_str)
        elif isinstance(obj, StrategyDeleted):
            encode_fields(STRATEGY_STATE_FIELDS, obj, out, ts_as_str)
        else:
            raise TypeError(f"cannot serialize {type(obj).__name__}")
        return out


def unpack(data: bytes, limits: DecodeLimits | None = None) -> dict[str, Any]:
    """Unpack msgpack bytes into a map with string keys, or raise PayloadError (malformed, or
    limit_exceeded when `limits` are given: see `limits.py`; stored data is read without them)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(RejectReason.MALFORMED, "", f"expected bytes, got {type(data).__name__}")
    if limits is None or len(data) <= limits.plain_size:
        plain = unpack_plain(data)
        if plain is not None:
            return plain
    if limits is not None:
        decoded = unpack_limited(data, limits)
    else:
        try:
            decoded = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # UnicodeDecodeError (a ValueError) lands here too: strings must be UTF-8.
            raise PayloadError(RejectReason.MALFORMED, "", f"not valid msgpack: {exc}") from None
        except RecursionError:
            raise PayloadError(RejectReason.MALFORMED, "", "msgpack nesting is too deep") from None
    if not isinstance(decoded, dict):
        raise PayloadError(RejectReason.MALFORMED, "", f"expected a msgpack map, got {type(decoded).__name__}")
    try:
        # strict_map_key lets bin keys through; a message's keys are strings. Joining them is the
        # test at C speed: it raises TypeError on the first key that is not a string.
        "".join(decoded)
    except TypeError:
        for key in decoded:
            if type(key) is not str:
                raise PayloadError(RejectReason.MALFORMED, "", f"map key {codecs.shown(key)} is not a string") from None
    return decoded


def timestamps_are_strings(data: dict[str, Any]) -> bool:
    """Whether no top-level `ts_*` value is an integer (booleans count as integers here)."""
    type_name = data.get("type")
    known = KNOWN_KEYS.get(type_name) if isinstance(type_name, str) else None
    if known is None or not isinstance(type_name, str):
        return not any(key.startswith("ts_") and isinstance(value, int) for key, value in data.items())
    get = data.get
    for key in _TS_KEYS[type_name]:
        if isinstance(get(key), int):
            return False
    if data.keys() <= _STORED_KEYS[type_name]:  # the usual case, checked without building a set
        return True
    # Keys the schema does not name are stored too: look at those the slow way.
    return not any(key.startswith("ts_") and isinstance(data[key], int) for key in data.keys() - known)


def _decode_order_initialized(data: dict[str, Any]) -> OrderInitialized:
    return _checked_initialized(_DECODE_INITIALIZED(data))


def _decode_order_filled(data: dict[str, Any]) -> OrderFilled:
    return _checked_fill(_DECODE_FILLED(data))


def _checked_initialized(init: OrderInitialized) -> OrderInitialized:
    check_order_initialized(init, "")
    return init


def _checked_fill(fill: OrderFilled) -> OrderFilled:
    if not fill.last_qty.is_positive():
        raise invalid("last_qty", f"a fill's quantity must be positive, got {fill.last_qty}")
    return fill


_DECODE_INITIALIZED = compile_decoder(ORDER_SCHEMAS["OrderInitialized"])
_DECODE_FILLED = compile_decoder(ORDER_SCHEMAS["OrderFilled"])


def _from_struct(name: str) -> Callable[[Any], Message]:
    """The decoder of `name`'s Struct (`structs.py`), with the checks its map decoder makes."""
    checks: dict[str, Callable[[Any], Any]] = {"OrderInitialized": _checked_initialized, "OrderFilled": _checked_fill}
    return compile_decoder(ORDER_SCHEMAS[name], from_struct=True, then=checks.get(name))


# Struct class -> its decoder (`deserialize`'s path for order events).
_FROM_STRUCT: Final[dict[type, Callable[[Any], Message]]] = {
    struct: _from_struct(name) for name, struct in ORDER_STRUCTS.items()
}


# -- OrderInitialized rules ------------------------------------------------------------------


def check_order_initialized(init: OrderInitialized, path: str) -> None:
    """Rules beyond field types: positive quantity, a side, options that fit the order type."""
    if init.order_side == OrderSide.NO_ORDER_SIDE:
        raise invalid(_join(path, "order_side"), "an order needs a side (BUY or SELL)")
    if not init.quantity.is_positive():
        raise invalid(_join(path, "quantity"), f"must be positive, got {init.quantity}")
    if init.contingency_type != ContingencyType.NO_CONTINGENCY and not init.linked_order_ids:
        raise invalid(_join(path, "linked_order_ids"), f"required for contingency {init.contingency_type.name}")
    if init.exec_algorithm_id is not None and init.exec_spawn_id is None:
        raise invalid(_join(path, "exec_spawn_id"), "required when exec_algorithm_id is set")
    _check_options(init.options, init.order_type, _join(path, "options"))


# The options an order may carry, with the codec of each (nil is always allowed) and the strings
# it is known to take (its cache, or an enum's names): one of those, or for `INT` an int, needs
# no call of `decode` (whose value `_check_options` drops: it only refuses).
_TRIGGER_TYPE: Final = codecs.enum(TriggerType)
_TRAILING_OFFSET_TYPE: Final = codecs.enum(TrailingOffsetType)
_OPTION_CODECS: Final = tuple(
    (key, codec.decode, codec.env if codec is not codecs.INT else None)
    for key, codec in (
        *((key, codecs.PRICE) for key in _PRICE_OPTIONS),
        ("display_qty", codecs.QUANTITY),
        ("trigger_type", _TRIGGER_TYPE),
        ("trailing_offset_type", _TRAILING_OFFSET_TYPE),
        ("trailing_offset", codecs.PRICE),
        ("limit_offset", codecs.PRICE),
        ("expire_time_ns", codecs.INT),
    )
)


def _check_options(options: dict[str, Any], order_type: OrderType, path: str) -> None:
    if not options:
        if order_type in _NEEDS_PRICE or order_type in _NEEDS_TRIGGER:
            raise invalid(_join(path, "price"), f"a {order_type.name} order needs its options")
        return
    get = options.get
    for key, decode, known in _OPTION_CODECS:
        value = get(key)
        if value is None:
            continue
        if value.__class__ is str:
            if known is not None and value in known:
                continue
        elif value.__class__ is int and known is None:
            continue
        decode(value, _join(path, key))  # the path is only built for a value that is there to check
    if order_type in _NEEDS_PRICE and get("price") is None:
        raise invalid(_join(path, "price"), f"a {order_type.name} order needs a price")
    if order_type in _NEEDS_TRIGGER and get("trigger_price") is None:
        raise invalid(_join(path, "trigger_price"), f"a {order_type.name} order needs a trigger_price")


def _decode_nested_order(value: Any, path: str) -> OrderInitialized:
    if not isinstance(value, dict):
        raise invalid(path, f"expected an OrderInitialized map, got {type(value).__name__}")
    if value.get("type") != "OrderInitialized":
        raise invalid(_join(path, "type"), "expected 'OrderInitialized'")
    init: OrderInitialized = _DECODE_NESTED_INITIALIZED(value, path)
    check_order_initialized(init, path)
    return init


_DECODE_NESTED_INITIALIZED = compile_decoder(ORDER_SCHEMAS["OrderInitialized"], nested=True)
# The plain fields of the composite messages, compiled into decoders of keyword-argument maps.
_ACCOUNT_STATE = compile_decoder(Schema(dict, ACCOUNT_STATE_FIELDS))
_SUBMIT_ORDER = compile_decoder(Schema(dict, SUBMIT_ORDER_FIELDS))
_SUBMIT_ORDER_LIST = compile_decoder(Schema(dict, SUBMIT_ORDER_LIST_FIELDS))
_STRATEGY_STATE = compile_decoder(Schema(dict, STRATEGY_STATE_FIELDS))
_CURRENCY = compile_decoder(Schema(dict, CURRENCY_FIELDS))


# -- composite messages --------------------------------------------------------------------


def _decode_account_state(data: dict[str, Any]) -> AccountState:
    values = _ACCOUNT_STATE(data)
    balances = data.get("balances")
    if not isinstance(balances, list) or not balances:
        raise invalid("balances", "expected a non-empty list of AccountBalance maps")
    margins = data.get("margins", [])
    if not isinstance(margins, list):
        raise invalid("margins", "expected a list of MarginBalance maps")
    values["balances"] = tuple(_decode_balance(item, f"balances[{i}]") for i, item in enumerate(balances))
    values["margins"] = tuple(_decode_margin(item, f"margins[{i}]") for i, item in enumerate(margins))
    return AccountState(**values)


def _map_with_currency(value: Any, path: str) -> tuple[dict[str, Any], str]:
    if not isinstance(value, dict):
        raise invalid(path, f"expected a map, got {type(value).__name__}")
    code = value.get("currency")
    if not isinstance(code, str) or not code:
        raise invalid(_join(path, "currency"), "expected a currency code")
    return value, code


def _amount(data: dict[str, Any], key: str, code: str, path: str) -> Money:
    if key not in data:
        raise PayloadError(RejectReason.MALFORMED, _join(path, key), "required field is missing")
    return _money(data[key], code, _join(path, key))


# Balances' and margins' amounts by (amount, currency code), as `codecs` keeps order events'
# money: an account state repeats most of its amounts (a locked "0.00", a total that moves only
# on fills). Only amounts parsed without error are kept, so a refusal is worded as before. Bounded
# like `codecs`' caches, and emptied when a Currency message changes what a code names (the
# amounts parsed before hold the old currency).
_AMOUNTS: dict[tuple[str, str], Money] = {}
_AMOUNTS_SIZE: Final = 16_384
on_currency_change(_AMOUNTS.clear)
_amount_in_range: Final = codecs.in_range(Money.from_amount_str)


def _money(value: Any, code: str, where: str) -> Money:
    if value.__class__ is str:  # a cache key: nothing else on the wire is known hashable
        found = _AMOUNTS.get((value, code))
        if found is not None:
            return found
    try:
        money: Money = _amount_in_range(value, code)
    except ValueError as exc:
        raise invalid(where, str(exc)) from None
    except ArithmeticError:  # decimal.Overflow, should a huge exponent get past `in_range`
        raise invalid(where, f"{codecs.shown(value)} is out of range") from None
    if value.__class__ is str:
        if len(_AMOUNTS) >= _AMOUNTS_SIZE:
            _AMOUNTS.clear()
        _AMOUNTS[(value, code)] = money
    return money


def _decode_balance(value: Any, path: str) -> AccountBalance:
    data, code = _map_with_currency(value, path)
    total = _amount(data, "total", code, path)
    locked = _amount(data, "locked", code, path)
    free = _amount(data, "free", code, path)
    return _balance(total, locked, free, path)


def _balance(total: Money, locked: Money, free: Money, path: str) -> AccountBalance:
    if total.raw - locked.raw != free.raw:
        raise invalid(path, f"total {total} - locked {locked} != free {free}")
    return AccountBalance(total, locked, free)


_INSTRUMENT_ID_OR_NIL: Final = codecs.optional(codecs.identifier(InstrumentId)).decode


def _decode_margin(value: Any, path: str) -> MarginBalance:
    data, code = _map_with_currency(value, path)
    initial = _amount(data, "initial", code, path)
    maintenance = _amount(data, "maintenance", code, path)
    instrument_id = _INSTRUMENT_ID_OR_NIL(data.get("instrument_id"), _join(path, "instrument_id"))
    return MarginBalance(initial, maintenance, instrument_id)


# -- the common messages straight from their Structs (`structs.py`, `decode_common`) ---------
# Any PayloadError here sends the payload the usual way, which raises it with its full path.


def _balance_from_struct(wire: Any) -> AccountBalance:
    code = wire.currency
    if not code:
        raise invalid("currency", "expected a currency code")
    total = _money(wire.total, code, "")
    locked = _money(wire.locked, code, "")
    free = _money(wire.free, code, "")
    return _balance(total, locked, free, "")


def _margin_from_struct(wire: Any) -> MarginBalance:
    code = wire.currency
    if not code:
        raise invalid("currency", "expected a currency code")
    initial = _money(wire.initial, code, "")
    maintenance = _money(wire.maintenance, code, "")
    return MarginBalance(initial, maintenance, _INSTRUMENT_ID_OR_NIL(wire.instrument_id, "instrument_id"))


def _account_state_from_struct(wire: Any) -> AccountState:
    values = _ACCOUNT_STATE_FROM_STRUCT(wire)
    if not wire.balances:
        raise invalid("balances", "expected a non-empty list of AccountBalance maps")
    values["balances"] = tuple(map(_balance_from_struct, wire.balances))
    values["margins"] = tuple(map(_margin_from_struct, wire.margins)) if wire.margins else ()
    return AccountState(**values)


def _submit_order_from_struct(wire: Any) -> SubmitOrder:
    if wire.order.__class__ is not _INITIALIZED_STRUCT:
        raise invalid("order.type", "expected 'OrderInitialized'")
    values = _SUBMIT_ORDER_FROM_STRUCT(wire)
    values["order"] = _FROM_STRUCT[_INITIALIZED_STRUCT](wire.order)
    return SubmitOrder(**values)


_INITIALIZED_STRUCT: Final = ORDER_STRUCTS["OrderInitialized"]
_ACCOUNT_STATE_FROM_STRUCT: Final = compile_decoder(Schema(dict, ACCOUNT_STATE_FIELDS), from_struct=True)
_SUBMIT_ORDER_FROM_STRUCT: Final = compile_decoder(Schema(dict, SUBMIT_ORDER_FIELDS), from_struct=True)
_COMMON_FROM_STRUCT: Final[dict[type, Callable[[Any], Message]]] = {
    **_FROM_STRUCT,
    SUBMIT_ORDER_STRUCT: _submit_order_from_struct,
    ACCOUNT_STATE_STRUCT: _account_state_from_struct,
}


def decode_common(data: bytes) -> tuple[Message, bool] | None:
    """An order event, SubmitOrder or AccountState straight from its bytes, and whether its
    top-level timestamps are strings (what `timestamps_are_strings` says of its map); None when
    msgspec refuses the payload or a field is invalid: decode it the usual way, which says why.

    No limit is checked here: the caller hands only payloads too small to break one (a Struct's
    nesting is fixed, at most 9 levels: SubmitOrder -> order -> a plain free-form map).
    """
    wire = struct_of_common(data)
    if wire is None:
        return None
    cls = wire.__class__
    try:
        message = _COMMON_FROM_STRUCT[cls](wire)
    except PayloadError:
        return None
    for key in _STRUCT_TS_KEYS[cls]:  # every one is required: no default stands in for it
        if isinstance(getattr(wire, key), int):
            return message, False
    return message, True


def _encode_account_state(state: AccountState, out: dict[str, Any], ts_as_str: bool) -> None:
    encode_fields(ACCOUNT_STATE_FIELDS[:3], state, out, ts_as_str)
    out["balances"] = [
        {
            "type": "AccountBalance",
            "total": b.total.amount_str(),
            "locked": b.locked.amount_str(),
            "free": b.free.amount_str(),
            "currency": b.currency.code,
        }
        for b in state.balances
    ]
    out["margins"] = [
        {
            "type": "MarginBalance",
            "initial": m.initial.amount_str(),
            "maintenance": m.maintenance.amount_str(),
            "currency": m.currency.code,
            "instrument_id": None if m.instrument_id is None else m.instrument_id.value,
        }
        for m in state.margins
    ]
    encode_fields(ACCOUNT_STATE_FIELDS[3:], state, out, ts_as_str)


def _decode_submit_order(data: dict[str, Any]) -> SubmitOrder:
    values = _SUBMIT_ORDER(data)
    if "order" not in data:
        raise PayloadError(RejectReason.MALFORMED, "order", "required field is missing")
    values["order"] = _decode_nested_order(data["order"], "order")
    return SubmitOrder(**values)


def _encode_submit_order(
    serializer: MsgPackSerializer, command: SubmitOrder, out: dict[str, Any], ts_as_str: bool
) -> None:
    encode_fields(SUBMIT_ORDER_FIELDS[:3], command, out, ts_as_str)
    out["order"] = serializer.to_map(command.order, top_level=False)
    encode_fields(SUBMIT_ORDER_FIELDS[3:], command, out, ts_as_str)


def _decode_submit_order_list(data: dict[str, Any]) -> SubmitOrderList:
    values = _SUBMIT_ORDER_LIST(data)
    orders = data.get("orders")
    if not isinstance(orders, list) or not orders:
        raise invalid("orders", "expected a non-empty list of OrderInitialized maps")
    values["orders"] = tuple(_decode_nested_order(item, f"orders[{i}]") for i, item in enumerate(orders))
    return SubmitOrderList(**values)


def _encode_submit_order_list(
    serializer: MsgPackSerializer, command: SubmitOrderList, out: dict[str, Any], ts_as_str: bool
) -> None:
    encode_fields(SUBMIT_ORDER_LIST_FIELDS[:4], command, out, ts_as_str)
    out["orders"] = [serializer.to_map(order, top_level=False) for order in command.orders]
    encode_fields(SUBMIT_ORDER_LIST_FIELDS[4:], command, out, ts_as_str)


def _decode_strategy_state(data: dict[str, Any]) -> StrategyState:
    values = _STRATEGY_STATE(data)
    state = data.get("state")
    if not isinstance(state, dict):
        raise invalid("state", "expected a map of field name to bytes")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, bytes):
            raise invalid(f"state.{key}", "expected string keys and bytes (msgpack bin) values")
    values["state"] = state
    return StrategyState(**values)


def _decode_strategy_deleted(data: dict[str, Any]) -> StrategyDeleted:
    return StrategyDeleted(**_STRATEGY_STATE(data))


def decode_currency(data: dict[str, Any]) -> Currency:
    values = _CURRENCY(data)
    if "currency_type" not in data:
        raise PayloadError(RejectReason.MALFORMED, "currency_type", "required field is missing")
    values["currency_type"] = codecs.enum(CurrencyType).decode(data["currency_type"], "currency_type")
    if not values["code"] or " " in values["code"]:
        raise invalid("code", f"{values['code']!r} is not a currency code")
    problem = key_part_problem(values["code"])  # the code is part of the currency's key
    if problem is not None:
        raise invalid("code", f"currency code {problem}")
    if not 0 <= values["precision"] <= 16:
        raise invalid("precision", f"must be 0..16, got {values['precision']}")
    return Currency(**values)


def encode_currency(currency: Currency) -> dict[str, Any]:
    return {
        "type": "Currency",
        "code": currency.code,
        "precision": currency.precision,
        "iso4217": currency.iso4217,
        "name": currency.name,
        "currency_type": currency.currency_type.name,
    }


# -- instruments ---------------------------------------------------------------------------


def looks_like_instrument(data: dict[str, Any]) -> bool:
    return all(key in data for key in COMMON_INSTRUMENT_KEYS)


def decode_instrument(data: dict[str, Any]) -> Instrument:
    """Check the keys positions rely on and keep the whole map."""
    type_name = data.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise PayloadError(RejectReason.MALFORMED, "type", "missing, empty or not a string")
    cls = instrument_class(type_name)
    for key in (*COMMON_INSTRUMENT_KEYS, *cls.required_keys):
        if key not in data:
            raise PayloadError(RejectReason.MALFORMED, key, f"required field of {type_name} is missing")
    codecs.identifier(InstrumentId).decode(data["id"], "id")
    for key in ("price_precision", "size_precision"):
        if key in data:
            precision = codecs.INT.decode(data[key], key)
            if not 0 <= precision <= 16:
                raise invalid(key, f"must be 0..16, got {precision}")
    codecs.PRICE.decode(data["price_increment"], "price_increment")
    if data.get("multiplier") is not None:
        codecs.QUANTITY.decode(data["multiplier"], "multiplier")
    if "is_inverse" in data:
        codecs.BOOL.decode(data["is_inverse"], "is_inverse")
    _check_instrument_currencies(cls, data)
    for key in ("ts_event", "ts_init"):
        if key in data:
            codecs.TIMESTAMP.decode(data[key], key)
    return cls(data)


def _check_instrument_currencies(cls: type[Instrument], data: dict[str, Any]) -> None:
    """The currencies a position on this instrument books in must be readable now: a fill is
    applied to its position after the order took it, too late to refuse it cleanly. (Known types
    require their quote key; a type we do not know, e.g. a synthetic instrument, may have none.)"""
    key = cls.quote_key if cls.quote_key in data else "currency"
    if key in data:
        codecs.CURRENCY.decode(data[key], key)
    if data.get("is_inverse") is True and cls.get_cost_currency is Instrument.get_cost_currency:
        # An inverse instrument books PnL in its base currency (`Instrument.base_currency`).
        base = next((k for k in ("base_currency", "underlying") if isinstance(data.get(k), str)), None)
        if base is None:
            raise invalid("base_currency", "an inverse instrument needs its base currency")
        codecs.CURRENCY.decode(data[base], base)


_DECODERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    **{name: compile_decoder(schema) for name, schema in _SCHEMAS.items()},
    "OrderInitialized": _decode_order_initialized,
    "OrderFilled": _decode_order_filled,
    "AccountState": _decode_account_state,
    "SubmitOrder": _decode_submit_order,
    "SubmitOrderList": _decode_submit_order_list,
    "StrategyState": _decode_strategy_state,
    "StrategyDeleted": _decode_strategy_deleted,
    "Currency": decode_currency,
}
# Every `type` a message may have: those decoded above and the instrument types known by name.
MESSAGE_TYPES: Final = frozenset(_DECODERS) | frozenset(INSTRUMENT_TYPES)

# The keys each message type's schema names (what `check_fields` treats as the message's own;
# any other key is stored as received, so it is capped like a free-form field).
KNOWN_KEYS: dict[str, frozenset[str]] = {
    **{name: frozenset(field.key for field in schema.fields) for name, schema in _SCHEMAS.items()},
    "AccountState": frozenset(field.key for field in ACCOUNT_STATE_FIELDS) | {"balances", "margins"},
    "SubmitOrder": frozenset(field.key for field in SUBMIT_ORDER_FIELDS) | {"order"},
    "SubmitOrderList": frozenset(field.key for field in SUBMIT_ORDER_LIST_FIELDS) | {"orders"},
    "StrategyState": frozenset(field.key for field in STRATEGY_STATE_FIELDS) | {"state"},
    "StrategyDeleted": frozenset(field.key for field in STRATEGY_STATE_FIELDS),
    "Currency": frozenset(field.key for field in CURRENCY_FIELDS) | {"currency_type"},
}

# The `ts_*` keys each message type's schema names.
_TS_KEYS: Final = {name: tuple(key for key in keys if key.startswith("ts_")) for name, keys in KNOWN_KEYS.items()}
# What a payload of each type holds when it has nothing the schema does not name: its keys and `type`.
_STORED_KEYS: Final = {name: keys | {"type"} for name, keys in KNOWN_KEYS.items()}

# The `ts_*` keys of each Struct `decode_common` takes.
_STRUCT_TS_KEYS: Final = {struct: _TS_KEYS[name] for name, struct in COMMON_STRUCTS.items()}

__all__ = [
    "KNOWN_KEYS",
    "MESSAGE_TYPES",
    "Message",
    "MsgPackSerializer",
    "check_order_initialized",
    "decode_common",
    "decode_instrument",
    "timestamps_are_strings",
    "unpack",
]
