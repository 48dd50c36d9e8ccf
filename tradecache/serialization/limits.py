"""Decode limits: a payload is refused while it is unpacked, before it can expand in memory.

msgpack is compact: one byte (0x80) is an empty map, which Python holds in ~70 bytes, so a 1 MiB
payload of empty maps would become ~80 MB of objects before any field check could refuse it.
`unpack_limited` hands msgpack limits on each container's length, on strings and bins, and on
extension types, and counts every container, map entry and array item as containers complete
(msgpack's `object_hook` / `list_hook`): past `max_elements` unpacking stops at once, so what
was built is bounded by the limit, not by the payload, and is released with the error.

The limits are derived from the schemas (`schemas.py`) and three settings:
- the largest legitimate message is a StrategyState with `max_state_fields` fields: its map is
  the longest container, and, with the few keys around it, the most elements a message needs;
  every other schema is far smaller (an OrderInitialized has 25 keys; an AccountState 5 per
  balance; a SubmitOrderList ~30 per order, and it fits in the payload limit);
- nesting: the deepest schema path is SubmitOrderList -> orders[] -> OrderInitialized ->
  exec_algorithm_params (4 levels); free-form maps (`info`, `options`, `exec_algorithm_params`)
  may nest `FREE_FORM_DEPTH` more. Deeper data would also break later steps (msgpack re-encoding
  stops at 512 levels, JSON replies at 254);
- strings: identifiers are short; the longest text is free-form (a reason, an `info` value), so
  strings are capped by `max_field_bytes`; bins (strategy state values, bins inside `info`) by
  `max_state_value_bytes` or `max_field_bytes`, whichever is larger. msgpack extension types are
  never part of the wire format and are refused.

`check_fields` then applies the per-field caps with the field's name in the error: a free-form
field (or a key the schema does not know, which is stored as received) larger than
`max_field_bytes`, a strategy state value larger than `max_state_value_bytes`, a state with more
than `max_state_fields` fields. It costs nothing for a payload smaller than every cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack
import msgspec

from tradecache.errors import PayloadError, RejectReason

# Nesting below the schemas' own: what a producer may put inside `info` and the like.
FREE_FORM_DEPTH: Final = 8
# SubmitOrderList -> orders[] -> OrderInitialized -> exec_algorithm_params (see the module docstring).
SCHEMA_DEPTH: Final = 4
# Keys around a StrategyState's `state` (type, trader_id, strategy_id, ts_event), the two maps
# themselves, and room for a few more.
STATE_ENVELOPE: Final = 16
# Free-form fields: maps whose content the schemas leave to the producer.
FREE_FORM_KEYS: Final = frozenset({"info", "options", "exec_algorithm_params"})


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one payload may hold. `derive` builds it from the configuration."""

    max_depth: int
    max_elements: int
    max_str_len: int
    max_bin_len: int
    max_field_bytes: int
    max_state_fields: int
    max_state_value_bytes: int
    # No payload this small can break a field cap: each state field takes at least 2 bytes.
    below_every_cap: int = 0
    # Nor can one this small hold more elements than allowed (each takes a byte or more) or a
    # string too long: `unpack_plain` may decode it.
    plain_size: int = 0

    @classmethod
    def derive(
        cls, *, max_field_bytes: int = 65_536, max_state_fields: int = 100_000, max_state_value_bytes: int = 262_144
    ) -> DecodeLimits:
        return cls(
            max_depth=SCHEMA_DEPTH + FREE_FORM_DEPTH,
            max_elements=max_state_fields + STATE_ENVELOPE,
            max_str_len=max_field_bytes,
            max_bin_len=max(max_state_value_bytes, max_field_bytes),
            max_field_bytes=max_field_bytes,
            max_state_fields=max_state_fields,
            max_state_value_bytes=max_state_value_bytes,
            below_every_cap=min(max_field_bytes, max_state_value_bytes, 2 * max_state_fields),
            plain_size=min(
                max_state_fields + STATE_ENVELOPE, max_field_bytes, max(max_state_value_bytes, max_field_bytes)
            ),
        )


DEFAULT_LIMITS: Final = DecodeLimits.derive()


class _Tally:
    """Counts elements as msgpack completes each container; raises past the limit."""

    __slots__ = ("containers", "left")

    def __init__(self, max_elements: int) -> None:
        self.left = max_elements
        self.containers = 0

    def container(self, value: Any) -> Any:
        self.left -= len(value) + 1  # an empty map costs memory too
        self.containers += 1
        if self.left < 0:
            raise _TooManyElements
        return value


class _TooManyElements(ValueError):
    pass


def limit_exceeded(field: str, problem: str) -> PayloadError:
    return PayloadError(RejectReason.LIMIT_EXCEEDED, field, problem)


# What most payloads are: a map with string keys of strings, integers, floats, booleans and nil,
# and maps (string keys) and arrays of those, nested at most PLAIN_DEPTH deep. msgspec decodes
# exactly that in C, checking it as it goes, in about half of msgpack's time; anything else (a bin,
# an extension type, a key that is not a string, deeper nesting, bad UTF-8, trailing bytes) it
# refuses, and msgpack then decodes it or says what is wrong, as it always did.
PLAIN_DEPTH: Final = 6
_Plain: Any = str | int | float | bool | None
for _ in range(PLAIN_DEPTH):
    _Plain = str | int | float | bool | None | list[_Plain] | dict[str, _Plain]
# A free-form map (`info`, `options`) as typed decoders (`structs.py`) expect it: plain as above.
PLAIN_MAP: Final[Any] = dict[str, _Plain]
_PLAIN_DECODER: Final = msgspec.msgpack.Decoder(PLAIN_MAP)


def unpack_plain(data: bytes) -> dict[str, Any] | None:
    """The map `data` holds when it is plain (see above: then msgpack would give the same map);
    None when it is not, or is not msgpack at all."""
    try:
        decoded: dict[str, Any] = _PLAIN_DECODER.decode(data)
    except Exception:  # not plain: the caller decodes it with msgpack, which names the problem
        return None
    return decoded


def unpack_limited(data: bytes, limits: DecodeLimits) -> Any:
    """msgpack.unpackb within `limits`. Raises PayloadError (limit_exceeded or malformed)."""
    tally = _Tally(limits.max_elements)
    try:
        decoded = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_elements,
            max_map_len=limits.max_elements,
            max_ext_len=0,
            object_hook=tally.container,
            list_hook=tally.container,
        )
    except _TooManyElements:
        raise limit_exceeded("", f"more than {limits.max_elements} map entries and array items") from None
    except msgpack.StackError:
        raise limit_exceeded("", f"nesting deeper than {limits.max_depth} levels") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        text = str(exc)
        if "exceeds max_" in text:  # msgpack's own words for a container, string or bin too long
            raise limit_exceeded("", f"{_limit_name(text)} is over the decode limit ({text})") from None
        # UnicodeDecodeError (a ValueError) lands here too: strings must be UTF-8.
        raise PayloadError(RejectReason.MALFORMED, "", f"not valid msgpack: {exc}") from None
    except RecursionError:
        raise limit_exceeded("", f"nesting deeper than {limits.max_depth} levels") from None
    if tally.containers > limits.max_depth and depth_of(decoded) > limits.max_depth:
        raise limit_exceeded("", f"nesting deeper than {limits.max_depth} levels")
    return decoded


def _limit_name(text: str) -> str:
    for name, shown in (("str", "a string"), ("bin", "a bin"), ("array", "an array"), ("map", "a map")):
        if f"max_{name}_len" in text:
            return shown
    return "an extension type (never part of the wire format)" if "max_ext_len" in text else "a value"


def depth_of(value: Any) -> int:
    """How deeply maps and arrays nest in `value` (a scalar is 0). Iterative: no recursion limit."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return deepest


def packed_size(value: Any) -> int:
    size: int = len(msgpack.packb(value, use_bin_type=True))
    return size


def check_fields(data: dict[str, Any], size: int, known: frozenset[str] | None, limits: DecodeLimits) -> None:
    """The per-field caps (see the module docstring); `size` is the payload's length in bytes and
    `known` the schema's keys (None: every key is the message's own, as in an instrument).

    A field is never larger than the payload that holds it, so a payload within every cap is
    not looked at: the common case costs one comparison.
    """
    if size <= limits.below_every_cap:
        return
    state = data.get("state")
    if isinstance(state, dict) and data.get("type") == "StrategyState":
        _check_state(state, size, limits)
    if size <= limits.max_field_bytes:
        return
    for key, value in data.items():
        free_form = key in FREE_FORM_KEYS or (known is not None and key not in known and key != "type")
        if free_form and isinstance(value, (dict, list, str, bytes)) and len(value) > 0:
            found = packed_size(value)
            if found > limits.max_field_bytes:
                raise PayloadError(
                    RejectReason.FIELD_TOO_LARGE,
                    key,
                    f"{found} bytes, more than ingest.max_field_bytes ({limits.max_field_bytes})",
                )


def _check_state(state: dict[Any, Any], size: int, limits: DecodeLimits) -> None:
    if len(state) > limits.max_state_fields:
        raise PayloadError(
            RejectReason.FIELD_TOO_LARGE,
            "state",
            f"{len(state)} fields, more than ingest.max_state_fields ({limits.max_state_fields})",
        )
    if size <= limits.max_state_value_bytes:
        return
    for name, value in state.items():
        if isinstance(value, bytes) and len(value) > limits.max_state_value_bytes:
            raise PayloadError(
                RejectReason.FIELD_TOO_LARGE,
                f"state.{name}",
                f"{len(value)} bytes, more than ingest.max_state_value_bytes ({limits.max_state_value_bytes})",
            )


__all__ = [
    "DEFAULT_LIMITS",
    "FREE_FORM_DEPTH",
    "FREE_FORM_KEYS",
    "PLAIN_DEPTH",
    "PLAIN_MAP",
    "DecodeLimits",
    "check_fields",
    "depth_of",
    "limit_exceeded",
    "unpack_limited",
    "unpack_plain",
]
