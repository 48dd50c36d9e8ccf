"""The load service's wire side (SPEC section 3): request bodies in, reply bytes out (pure).

Requests are JSON: `{"<id field>": "..."}` for one entity, `{}` / empty or
`{"limit": N, "cursor": C}` for a collection. Replies are JSON (bytes as base64) unless the
request asks `Accept: application/msgpack`. Anything a caller got wrong raises `BadRequest`,
which the service answers with micro error code 400 and a message saying what to fix.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import orjson

from tradecache.errors import BadRequest, Busy, ReplyTooLarge, RequestRefused, Unavailable
from tradecache.serialization.codecs import shown
from tradecache.serialization.deep import array_header, json_bytes, map_header, msgpack_bytes
from tradecache.wire import ACCEPT_HEADER, CURSOR_HEADER, MAX_PAGE_LIMIT, MSGPACK_TYPES


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which part of a collection to answer: ids after `after`, at most `limit` (None: all)."""

    after: str | None = None
    limit: int | None = None


def parse_body(data: bytes) -> dict[str, Any]:
    """The request's JSON object; an empty body is `{}`."""
    if not data.strip():
        return {}
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:  # a ValueError; bad UTF-8 lands here too
        raise BadRequest(f"the request body is not JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _refuse_unknown(body: Mapping[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        expected = ", ".join(f"'{key}'" for key in known) or "no keys"
        raise BadRequest(f"unknown key(s) {', '.join(shown(key) for key in unknown[:3])}; expected {expected}")


def id_request(data: bytes, id_field: str) -> str:
    """The entity id a one-entity request names, e.g. `{"client_order_id": "O-1"}` -> "O-1"."""
    body = parse_body(data)
    _refuse_unknown(body, (id_field,))
    if id_field not in body:
        raise BadRequest(f'missing \'{id_field}\': send {{"{id_field}": "<id>"}}')
    value = body[id_field]
    if not isinstance(value, str):
        raise BadRequest(f"'{id_field}' must be a string, got {type(value).__name__}")
    if not value or value != value.strip():
        raise BadRequest(f"'{id_field}' must be a non-empty id without surrounding spaces, got {shown(value)}")
    return value


def page_request(data: bytes) -> PageRequest:
    """Paging of a collection request: `{}` is everything, `{"limit": N, "cursor": C}` a page."""
    body = parse_body(data)
    _refuse_unknown(body, ("limit", "cursor"))
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise BadRequest(f"'limit' must be an integer, got {type(limit).__name__}")
    if limit is not None and not 1 <= limit <= MAX_PAGE_LIMIT:
        raise BadRequest(f"'limit' must be between 1 and {MAX_PAGE_LIMIT}, got {shown(limit)}")
    cursor = body.get("cursor")
    if cursor is None:
        return PageRequest(None, limit)
    if not isinstance(cursor, str):
        raise BadRequest(f"'cursor' must be the string of a {CURSOR_HEADER} header, got {type(cursor).__name__}")
    return PageRequest(decode_cursor(cursor), limit)


def encode_cursor(last_id: str) -> str:
    """An opaque cursor meaning "after this id" (base64url, so any id fits in a header)."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_id = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest(f"'cursor' {shown(cursor)} is not a cursor this service gave out") from None
    if not last_id or encode_cursor(last_id) != cursor:
        raise BadRequest(f"'cursor' {shown(cursor)} is not a cursor this service gave out")
    return last_id


def wants_msgpack(headers: Mapping[str, str] | None) -> bool:
    """Whether the request's `Accept` header (any case) names msgpack with a non-zero quality,
    e.g. `APPLICATION/MSGPACK`, `application/json, application/msgpack;q=0.9`."""
    for name, value in (headers or {}).items():
        if name.lower() == ACCEPT_HEADER.lower():
            return any(_accepted(media_range) in MSGPACK_TYPES for media_range in value.split(","))
    return False


def _accepted(media_range: str) -> str:
    """The media type of one `Accept` element, lower case; "" when its quality is 0."""
    media_type, *parameters = media_range.split(";")
    for parameter in parameters:
        name, _, quality = parameter.partition("=")
        if name.strip().lower() == "q" and quality.strip() in ("0", "0.", "0.0", "0.00", "0.000"):
            return ""
    return media_type.strip().lower()


def encode_reply(value: Any, as_msgpack: bool) -> bytes:
    """`value` in the reply's format, at any nesting depth (`serialization/deep.py`)."""
    return msgpack_bytes(value) if as_msgpack else json_bytes(value)


def encode_entry(key: str, item: bytes, as_msgpack: bool) -> bytes:
    """One `id: item` pair of a collection reply (the item already encoded), so a page can be
    measured and cut to fit the max payload before it is joined (`reply_parts`)."""
    if as_msgpack:
        return _packed(key) + item
    return encode_reply(key, False) + b":" + item


# msgspec packs a small map or a string in a fraction of msgpack.packb's time (which sets up a
# Packer per call) and to the same bytes (a test holds them to it); anything it refuses is
# packed by `encode_reply` as before.
_ENCODER: Final = msgspec.msgpack.Encoder()


def _packed(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value)
    except Exception:  # a type msgspec does not pack, or nesting past its depth
        return encode_reply(value, True)


def reply_parts(entries: list[bytes], as_msgpack: bool) -> list[bytes]:
    """A collection reply as the parts that, joined, make it (sent as one frame: `egress.py`)."""
    if not as_msgpack:
        return [b"{", b",".join(entries), b"}"]
    return [map_header(len(entries)), *entries]


def pack_with_raw_list(item: Mapping[str, Any], key: str, raw: list[bytes]) -> bytes:
    """msgpack of `item` plus `key`: the list of `raw` msgpack values spliced in as they are.

    A snapshot's `events` are the stored payloads: splicing them saves unpacking them into
    maps and packing them again (about half of a reply's bytes)."""
    packed = _packed(dict(item))
    # A map packs as its header then each key and value in order: the entries are kept as they
    # are and the header is made again for one more (its size is told by its first byte).
    entries = packed[_MAP_HEADER_SIZE.get(packed[0], 1) :]
    return b"".join((map_header(len(item) + 1), entries, _packed(key), array_header(len(raw)), *raw))


# The size of a msgpack map header by its first byte (a fixmap's is 1).
_MAP_HEADER_SIZE = {0xDE: 3, 0xDF: 5}


def error_body(code: str, message: str, as_msgpack: bool) -> bytes:
    return encode_reply({"error": {"code": int(code), "message": message}}, as_msgpack)


__all__ = [
    "BadRequest",
    "Busy",
    "PageRequest",
    "ReplyTooLarge",
    "RequestRefused",
    "Unavailable",
    "decode_cursor",
    "encode_cursor",
    "encode_entry",
    "encode_reply",
    "error_body",
    "id_request",
    "pack_with_raw_list",
    "page_request",
    "parse_body",
    "reply_parts",
    "wants_msgpack",
]
