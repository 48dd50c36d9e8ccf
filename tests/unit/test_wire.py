"""tradecache/wire.py spells names other libraries own; these tests fail if they drift apart."""

from __future__ import annotations

from nats.micro import request as micro_request

from tradecache import wire
from tradecache.service.protocol import BadRequest, Busy, ReplyTooLarge, RequestRefused, Unavailable


def test_error_headers_are_nats_micros() -> None:
    assert wire.ERROR_HEADER == micro_request.ERROR_HEADER
    assert wire.ERROR_CODE_HEADER == micro_request.ERROR_CODE_HEADER


def test_refusals_answer_the_wire_codes() -> None:
    codes = {cls: cls.code for cls in (RequestRefused, BadRequest, Busy, ReplyTooLarge, Unavailable)}
    assert codes == {
        RequestRefused: wire.INTERNAL,
        BadRequest: wire.BAD_REQUEST,
        Busy: wire.BUSY,
        ReplyTooLarge: wire.TOO_LARGE,
        Unavailable: wire.UNAVAILABLE,
    }
    assert sorted(codes.values()) == ["400", "413", "429", "500", "503"]


def test_msgpack_is_among_the_msgpack_types() -> None:
    assert wire.MSGPACK in wire.MSGPACK_TYPES
