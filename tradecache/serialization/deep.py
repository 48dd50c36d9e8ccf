"""JSON and msgpack for data nested deeper than the C libraries go (no recursion, no depth limit).

Stored payloads may hold maps nested up to msgpack's own limit (1,024 levels: a fill's `info`,
an instrument's map). orjson encodes 255 levels at most and decodes 1,024, Python's `json` stops
near 1,000 (RecursionError), msgpack packs 1,024. A load reply wraps a payload in a few more
levels, so each encoder here tries the fast C library first and, only when it refuses the depth
(or an integer beyond 64 bits), falls back to a loop over an explicit stack: slower, never
failing on depth. JSON output is the same either way: compact, or indented like
`json.dumps(indent=2, ensure_ascii=False)`; bytes become base64 strings; non-finite floats null.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from json.decoder import scanstring  # type: ignore[attr-defined]  # C-accelerated, not in typeshed
from typing import Any, Final

import msgpack
import orjson

# -- JSON out -------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot answer a {type(value).__name__} in JSON")


def json_bytes(value: Any, indent: int | None = None) -> bytes:
    """`value` as JSON (UTF-8), at any depth. Raises TypeError for a value JSON cannot hold."""
    option = orjson.OPT_INDENT_2 if indent == 2 else 0
    if indent in (None, 2):
        try:
            return orjson.dumps(value, default=_json_default, option=option)
        except orjson.JSONEncodeError:  # too deep, or an integer beyond 64 bits: the slow path
            pass
    return _dump_json(value, indent).encode()


def _json_scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "null"  # as orjson writes them
    if isinstance(value, str | int | float | bool) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(_json_default(value))


def _json_key(key: Any) -> str:
    if isinstance(key, bytes | bytearray | memoryview):
        key = _json_default(key)
    elif not isinstance(key, str):
        key = _json_scalar(key).strip('"')  # as json.dumps writes int/float/bool/None keys
    return json.dumps(key, ensure_ascii=False)


class _Open:
    """A container being written: what is left of it, whether it is a map, items written so far."""

    __slots__ = ("count", "is_map", "items")

    def __init__(self, items: Iterator[Any], is_map: bool) -> None:
        self.items = items
        self.is_map = is_map
        self.count = 0


_END: Final[Any] = object()


def _dump_json(value: Any, indent: int | None) -> str:
    out: list[str] = []
    stack: list[_Open] = []
    colon = ":" if indent is None else ": "

    def newline() -> str:
        return "" if indent is None else "\n" + " " * (indent * len(stack))

    def write(item: Any) -> None:
        if isinstance(item, dict) and item:
            out.append("{")
            stack.append(_Open(iter(item.items()), True))
        elif isinstance(item, list | tuple) and item:
            out.append("[")
            stack.append(_Open(iter(item), False))
        elif isinstance(item, dict | list | tuple):
            out.append("{}" if isinstance(item, dict) else "[]")
        else:
            out.append(_json_scalar(item))

    write(value)
    while stack:
        top = stack[-1]
        item = next(top.items, _END)
        if item is _END:
            stack.pop()
            out.append(newline() + ("}" if top.is_map else "]"))
            continue
        out.append(("," if top.count else "") + newline())
        top.count += 1
        if top.is_map:
            key, item = item
            out.append(_json_key(key) + colon)
        write(item)
    return "".join(out)


# -- JSON in --------------------------------------------------------------------------------

_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS: Final = {"true": True, "false": False, "null": None}


def _skip(text: str, pos: int) -> int:
    """The position of the first character at or after `pos` that is not white space."""
    while text[pos : pos + 1] in (" ", "\t", "\n", "\r"):
        pos += 1
    return pos


def json_value(text: bytes | str) -> Any:
    """Parse JSON at any depth (orjson first). Raises ValueError when `text` is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth" not in str(exc) and "recursion" not in str(exc):
            raise ValueError(str(exc)) from None
    return _parse_json(text.decode() if isinstance(text, bytes) else text)


def _parse_json(text: str) -> Any:
    """An explicit-stack parser: `stack` holds the open containers, `keys` the pending map keys."""
    stack: list[dict[str, Any] | list[Any]] = []
    keys: list[str | None] = []
    pos = _skip(text, 0)
    result: Any = _END

    def fail(what: str) -> ValueError:
        return ValueError(f"not JSON: {what} at character {pos}")

    while True:
        # A value starts at `pos`.
        char = text[pos : pos + 1]
        value: Any = _END
        if char == "{" or char == "[":
            container: dict[str, Any] | list[Any] = {} if char == "{" else []
            pos = _skip(text, pos + 1)
            closer = "}" if char == "{" else "]"
            if text[pos : pos + 1] == closer:
                value, pos = container, pos + 1
            else:
                stack.append(container)
                keys.append(None)
                if isinstance(container, dict):
                    pos = _read_key(text, pos, keys, fail)
                continue
        elif char == '"':
            value, pos = scanstring(text, pos + 1)
        else:
            number = _NUMBER.match(text, pos)
            word = next((w for w in _LITERALS if text.startswith(w, pos)), None)
            if number is not None and number.end() > pos:
                digits = number.group()
                value = float(digits) if number.group(1) or number.group(2) else int(digits)
                pos = number.end()
            elif word is not None:
                value, pos = _LITERALS[word], pos + len(word)
            else:
                raise fail("no value")
        # A value is complete: attach it, then close every container it completes.
        while True:
            pos = _skip(text, pos)
            if not stack:
                result = value
                break
            top = stack[-1]
            if isinstance(top, dict):
                key = keys[-1]
                assert key is not None
                top[key] = value
            else:
                top.append(value)
            char = text[pos : pos + 1]
            if char == ",":
                pos = _skip(text, pos + 1)
                if isinstance(top, dict):
                    pos = _read_key(text, pos, keys, fail)
                break
            if char != ("}" if isinstance(top, dict) else "]"):
                raise fail("expected ',' or the end of a container")
            value, pos = stack.pop(), pos + 1
            keys.pop()
        if result is not _END:
            if pos != len(text):
                raise fail("extra data")
            return result


def _read_key(text: str, pos: int, keys: list[str | None], fail: Any) -> int:
    """Read `"key" :` at `pos` into `keys[-1]`; the position of the value after it."""
    if text[pos : pos + 1] != '"':
        raise fail("expected a string key")
    key, pos = scanstring(text, pos + 1)
    pos = _skip(text, pos)
    if text[pos : pos + 1] != ":":
        raise fail("expected ':'")
    keys[-1] = key
    return _skip(text, pos + 1)


# -- msgpack out ----------------------------------------------------------------------------


def msgpack_header(count: int, small: int, big16: bytes, big32: bytes) -> bytes:
    """The header of a msgpack map (`0x80, 0xde, 0xdf`) or array (`0x90, 0xdc, 0xdd`) of `count`."""
    if count < 16:
        return bytes([small | count])
    if count < 2**16:
        return big16 + count.to_bytes(2, "big")
    return big32 + count.to_bytes(4, "big")


# The headers of maps and arrays of fewer than 16 items (one byte each), made once: a reply
# entry needs two of them, and making them took ~0.2 us each.
_SMALL_MAP_HEADERS: Final = tuple(bytes([0x80 | count]) for count in range(16))
_SMALL_ARRAY_HEADERS: Final = tuple(bytes([0x90 | count]) for count in range(16))


def map_header(count: int) -> bytes:
    if 0 <= count < 16:
        return _SMALL_MAP_HEADERS[count]
    return msgpack_header(count, 0x80, b"\xde", b"\xdf")


def array_header(count: int) -> bytes:
    if 0 <= count < 16:
        return _SMALL_ARRAY_HEADERS[count]
    return msgpack_header(count, 0x90, b"\xdc", b"\xdd")


def msgpack_bytes(value: Any) -> bytes:
    """`value` as msgpack (bytes as bin), at any depth."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    except ValueError:  # "recursion limit exceeded": the slow path
        pass
    out: list[bytes] = []
    pending: list[Any] = [value]
    while pending:  # depth first, in order: a container's header, then its items
        item = pending.pop()
        if isinstance(item, dict):
            out.append(map_header(len(item)))
            for key, inner in reversed(list(item.items())):
                pending.extend((inner, key))
        elif isinstance(item, list | tuple):
            out.append(array_header(len(item)))
            pending.extend(reversed(item))
        else:
            out.append(msgpack.packb(item, use_bin_type=True))
    return b"".join(out)


__all__ = ["array_header", "json_bytes", "json_value", "map_header", "msgpack_bytes", "msgpack_header"]
