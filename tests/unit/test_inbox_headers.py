"""`ingest/inbox.py`'s LazyHeaders: read, a delivery's headers are what nats-py's client would
have parsed as the message arrived (so a dead letter carries the same), on odd blocks too."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.aio.client
import pytest

from tradecache.ingest.deadletter import sanitized
from tradecache.ingest.inbox import LazyHeaders, _line_parser

BLOCKS = [
    b"NATS/1.0\r\nNats-Msg-Id: 1b4e28ba-2fa1-11d2-883f-0016d3cca427\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: a\r\nX-Other: b: c\r\n\r\n",  # a colon in a value
    b"NATS/1.0\r\nName:Value\r\nTabbed:\tvalue\t\r\n\r\n",  # no space, a tab
    b"NATS/1.0\r\nRepeated: 1\r\nRepeated: 2\r\n\r\n",  # the last one wins, as in nats-py
    b"NATS/1.0\r\nno colon here\r\nKept: yes\r\n\r\n",
    b"NATS/1.0\r\nBad Name: dropped\r\n\xff\xfe: dropped too\r\nUtf8: caf\xc3\xa9 \xff\r\n\r\n",
    b"NATS/1.0\r\n: empty name\r\n\r\n",
    b"NATS/1.0\r\nX: \r\n\r\n",  # an empty value
    b"NATS/1.0\r\nno colon at all\r\n\r\n",  # nothing parses: nats-py gives None, these are empty
]


def nats_py_headers(raw: bytes) -> dict[str, str] | None:
    client = nats.aio.client.Client()
    parsed: dict[str, str] | None = asyncio.run(client._process_headers(raw))
    return parsed


@pytest.mark.parametrize("raw", BLOCKS)
def test_read_they_are_what_nats_py_parses(raw: bytes) -> None:
    parse = _line_parser(nats.aio.client.Client())
    assert parse is not None, "this nats-py has its line parser: the lazy path is taken"
    lazy = LazyHeaders(raw, parse)
    expected = nats_py_headers(raw)
    assert dict(lazy) == (expected or {})
    assert bool(lazy) == bool(expected)  # nats-py's None and an empty block are both false
    assert lazy == (expected or {}) and (expected or {}) == lazy
    assert sanitized(lazy) == sanitized(expected)  # the dead letter's headers


def test_parsed_once_when_first_read() -> None:
    calls: list[bytes] = []

    def parse(raw: bytes) -> dict[str, str]:
        calls.append(raw)
        return {"Nats-Msg-Id": "x"}

    lazy = LazyHeaders(BLOCKS[0], parse)
    assert calls == []
    assert lazy["Nats-Msg-Id"] == "x" and lazy.get("Status") is None and list(lazy) == ["Nats-Msg-Id"]
    assert calls == [BLOCKS[0][len(b"NATS/1.0\r\n") :]]


def test_a_block_that_fails_to_parse_is_no_headers() -> None:
    def parse(raw: bytes) -> dict[str, str]:
        raise ValueError("broken")

    lazy = LazyHeaders(BLOCKS[0], parse)
    assert not lazy and dict(lazy) == {} and sanitized(lazy) == ({}, [])


def test_where_nats_py_parses_with_another_library_headers_are_parsed_at_once(monkeypatch: Any) -> None:
    monkeypatch.setattr(nats.aio.client, "parse_email", lambda raw: None, raising=False)
    assert _line_parser(nats.aio.client.Client()) is None
