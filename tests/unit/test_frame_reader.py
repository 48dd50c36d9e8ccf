"""The compiled frame reader (`ingest/_frames.c`) against nats-py's own parser.

The same stream of protocol frames, cut into reads anywhere, is given to nats-py's `Parser` alone
and to a `Parser` read by `_FrameReader`: every message reaches its receiver with the same
subject, reply, payload and headers, in the same order, whichever path read it, and every other
operation (PING, PONG, +OK, INFO, statuses, other subscriptions, unusual spacing) still reaches
nats-py. `ack_numbers` gives what the Python reading of an ack subject gives, or leaves it to it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from tradecache.ingest import _frames
from tradecache.ingest.inbox import _FrameReader
from tradecache.ingest.intake import _ack_metadata, ack_metadata

ROUTED = (1, 2)  # subscription ids with a handler; 3 is another subscription of the client
Seen = tuple[Any, ...]


class Client:
    """What nats-py's parser calls on its client, recorded in order."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self.seen.append(("msg", sid, subject.decode(), reply.decode(), data, headers))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.seen.append(("info", info))

    async def _process_err(self, message: str) -> None:
        self.seen.append(("err", message))


def read_by_nats_py(reads: list[bytes]) -> list[Seen]:
    client = Client()
    parser = Parser(client)

    async def run() -> None:
        for data in reads:
            await parser.parse(data)

    asyncio.run(run())
    return client.seen


def read_by_frame_reader(reads: list[bytes], with_headers: bool = True) -> tuple[list[Seen], Client, Parser]:
    client = Client()
    parser = Parser(client)

    def handler(sid: int) -> Any:
        def handle(subject: str, reply: str, data: bytes, headers: Mapping[str, str] | None) -> None:
            client.seen.append(("msg", sid, subject, reply, data, headers))

        return handle

    handlers = {sid: handler(sid) for sid in ROUTED}
    headers_of = (lambda raw: raw) if with_headers else None  # the block as it came, to compare
    reader = _FrameReader(parser, AWAITING_CONTROL_LINE, handlers, client.stats, headers_of, _frames.scan)  # type: ignore[arg-type]

    async def run() -> None:
        for data in reads:
            await reader.parse(data)

    asyncio.run(run())
    return client.seen, client, parser


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(stream), *(point % (len(stream) + 1) for point in points)})
    return [stream[start:end] for start, end in itertools.pairwise(edges)]


def msg(sid: int, subject: str, payload: bytes, reply: str = "", headers: bytes = b"") -> bytes:
    reply_part = f" {reply}" if reply else ""
    if headers:
        line = f"HMSG {subject} {sid}{reply_part} {len(headers)} {len(headers) + len(payload)}\r\n"
    else:
        line = f"MSG {subject} {sid}{reply_part} {len(payload)}\r\n"
    return line.encode() + headers + payload + b"\r\n"


PLAIN = b"NATS/1.0\r\nNats-Msg-Id: abc-1\r\nX-Other: 2\r\n\r\n"
STATUS = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n\r\n"
HEARTBEAT = b"NATS/1.0 100 Idle Heartbeat\r\n\r\n"
EMPTY_BLOCK = b"NATS/1.0\r\n\r\n"
REPLY = "$JS.ACK.TRADECACHE.tc.1.12.12.1764112094914872368.0"

frames = st.one_of(
    st.builds(
        msg,
        st.sampled_from((1, 2, 3)),
        st.sampled_from(("_INBOX.abc.1", "tc.T-1.order.O-1", "é.x")),
        st.one_of(st.binary(max_size=300), st.just(b""), st.binary(min_size=70_000, max_size=70_010)),
        st.sampled_from(("", REPLY, "reply.1")),
        st.sampled_from((b"", PLAIN, STATUS, HEARTBEAT, EMPTY_BLOCK)),
    ),
    st.sampled_from(
        (
            b"PING\r\n",
            b"PONG\r\n",
            b"+OK\r\n",
            b'INFO {"server_id":"x","max_payload":1048576}\r\n',
            b"MSG  _INBOX.abc 1 5\r\nhello\r\n",  # two spaces: nats-py's regular expression reads it
            b"MSG _INBOX.abc\t1 5\r\nhello\r\n",  # a tab, likewise
            b"HMSG _INBOX.abc 1 12 12\r\nNATS/1.0\r\n\r\n\r\n",  # an empty block, no body
        )
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, min_size=1, max_size=25), st.lists(st.integers(min_value=0), max_size=12))
def test_any_stream_cut_anywhere_reaches_everyone_as_through_nats_py(stream: list[bytes], points: list[int]) -> None:
    joined = b"".join(stream)
    reads = cut(joined, points)
    expected = read_by_nats_py(reads)
    seen, _client, parser = read_by_frame_reader(reads)
    assert seen == expected
    assert parser.buf == b"" and parser.state == AWAITING_CONTROL_LINE
    # Without a line parser for headers, frames with headers all go to nats-py: the same again.
    assert read_by_frame_reader(reads, with_headers=False)[0] == expected


def test_routed_deliveries_are_counted_in_the_client_stats() -> None:
    frames_ = [msg(1, "a", b"12345", REPLY, PLAIN), msg(3, "b", b"xy"), msg(2, "c", b"")]
    _seen, client, _parser = read_by_frame_reader([b"".join(frames_)])
    assert client.stats == {"in_msgs": 2, "in_bytes": 5}  # sid 3 is nats-py's to count


def test_a_frame_split_in_two_reads_waits_in_the_parsers_buffer() -> None:
    frame = msg(1, "_INBOX.x.1", b"payload", REPLY, PLAIN)
    client = Client()
    parser = Parser(client)
    seen: list[Seen] = []
    reader = _FrameReader(parser, AWAITING_CONTROL_LINE, {1: lambda *parts: seen.append(parts)}, client.stats,
                          lambda raw: raw, _frames.scan)  # type: ignore[arg-type]  # fmt: skip
    asyncio.run(reader.parse(frame[:20]))
    assert seen == [] and parser.buf == frame[:20] and parser.state == AWAITING_CONTROL_LINE
    asyncio.run(reader.parse(frame[20:]))
    assert seen == [("_INBOX.x.1", REPLY, b"payload", PLAIN)] and parser.buf == b""


def test_a_handler_that_raises_costs_its_own_frame_only(caplog: pytest.LogCaptureFixture) -> None:
    client = Client()
    parser = Parser(client)
    kept: list[bytes] = []

    def handler(_subject: str, _reply: str, data: bytes, _headers: object) -> None:
        if data == b"boom":
            raise RuntimeError("handler failed")
        kept.append(data)

    reader = _FrameReader(parser, AWAITING_CONTROL_LINE, {1: handler}, client.stats, None, _frames.scan)
    stream = b"".join(msg(1, "s", data) for data in (b"1", b"boom", b"2")) + b"PING\r\n"
    with caplog.at_level(logging.ERROR, logger="tradecache.ingest.inbox"):
        asyncio.run(reader.parse(stream))
    assert kept == [b"1", b"2"] and client.seen == [("ping",)]
    [record] = [r for r in caplog.records if "could not be handled" in r.getMessage()]
    assert record.exc_info is not None and "handler failed" in str(record.exc_info[1])


@pytest.mark.parametrize(
    "line",
    [
        b"MSG s 1 99999999999999999999999\r\n",  # a size past 18 digits
        b"HMSG s 1 10 5\r\n",  # a header block longer than the whole
        b"MSG s x1 5\r\n",  # not a number
        b"MSG s 1 r r 5\r\n",  # too many tokens
        b"MSG s 1 -5\r\n",
    ],
)
def test_a_control_line_it_does_not_read_goes_to_nats_py(line: bytes) -> None:
    position, outcome, end, count, _ = _frames.scan(line + b"hello\r\n", 0, {1: print}, None)
    assert (position, outcome, end, count) == (0, 2, len(line), 0)


def test_a_large_frame_not_yet_complete_goes_to_nats_py_and_a_small_one_waits() -> None:
    large = msg(1, "s", b"x" * 70_000)
    assert _frames.scan(large[:1000], 0, {1: print}, None)[:3] == (0, 2, 1000)
    small = msg(1, "s", b"x" * 100)
    assert _frames.scan(small[:50], 0, {1: print}, None)[:3] == (0, 1, None)
    # A line with no end yet: it waits, up to nats-py's limit on a control line.
    assert _frames.scan(b"MSG s 1 5", 0, {}, None)[:3] == (0, 1, None)
    assert _frames.scan(b"M" * 5000, 0, {}, None)[:3] == (0, 2, 5000)


def test_a_subject_that_is_not_utf8_fails_its_frame_only() -> None:
    stream = b"MSG \xff\xfe 1 2\r\nab\r\n" + msg(1, "ok", b"cd")
    seen: list[Seen] = []
    position, outcome, error, _count, _ = _frames.scan(stream, 0, {1: lambda *parts: seen.append(parts)}, None)
    assert outcome == 3 and isinstance(error, UnicodeDecodeError) and seen == []
    assert _frames.scan(stream, position, {1: lambda *parts: seen.append(parts)}, None)[1] == 0
    assert seen == [("ok", "", b"cd", None)]


def test_scan_refuses_arguments_of_the_wrong_types() -> None:
    with pytest.raises(TypeError):
        _frames.scan("text", 0, {}, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _frames.scan(b"abc", 4, {}, None)


ack_tokens = st.one_of(
    st.from_regex(r"\A[0-9]{1,20}\Z"),
    st.sampled_from(("+1", " 1", "1_0", "٣", "", "-1", "0x1", "TRADECACHE", "tc")),
)


@settings(max_examples=500)
@given(st.lists(ack_tokens, min_size=0, max_size=13), st.sampled_from(("$JS.ACK.", "$JS.ACK.S.C.", "$JS.NAK.", "")))
def test_ack_numbers_agree_with_the_python_reading(tokens: list[str], prefix: str) -> None:
    reply = prefix + ".".join(tokens)
    numbers = _frames.ack_numbers(reply)
    try:
        python: object = _ack_metadata(reply)
    except (ValueError, IndexError) as error:
        python = type(error)
    if isinstance(python, type):  # refused: by the Python reading, whatever the C one says
        assert numbers is None
        with pytest.raises(python):
            ack_metadata(reply)
    else:
        assert numbers in (None, python)
        assert ack_metadata(reply) == python


def test_ack_numbers_of_both_subject_versions() -> None:
    assert _frames.ack_numbers(REPLY) == (12, 12, 1764112094914872368, 0, 1)
    v2 = "$JS.ACK.domain.account.TRADECACHE.tc.3.40.41.1764112094914872368.7.token"
    assert _frames.ack_numbers(v2) == (40, 41, 1764112094914872368, 7, 3) == _ack_metadata(v2)
    assert _frames.ack_numbers("$JS.ACK.S.C.1.2.3.4.99999999999999999999") is None  # past 18 digits


frame_starts = st.sampled_from((b"", b"MSG s 1 ", b"HMSG s 2 r ", b"MSG s 1 r 3\r\n", b"HMSG s 1 12 ", b"PING\r\n"))


@settings(max_examples=500)
@given(frame_starts, st.binary(max_size=400), st.sampled_from((b"", b"\r\n", b"5\r\nhello\r\n", b"NATS/1.0\r\n")))
def test_any_bytes_are_read_within_the_buffer_and_the_scan_always_moves_on(
    start: bytes, middle: bytes, end: bytes
) -> None:
    data = start + middle + end
    delivered: list[Seen] = []
    pos = 0
    for _ in range(len(data) + 1):  # each outcome but the last two moves past something
        found, outcome, extra, count, _payload_bytes = _frames.scan(
            data, pos, {1: lambda *parts: delivered.append(parts), 2: lambda *parts: delivered.append(parts)},
            lambda raw: raw,
        )  # fmt: skip
        assert pos <= found <= len(data) and count >= 0
        if outcome in (0, 1):
            return
        if outcome == 2:
            assert found < extra <= len(data)
            pos = extra
        else:
            assert outcome == 3 and found > pos
            pos = found
    raise AssertionError("the scan did not move on")
