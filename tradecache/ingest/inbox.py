"""The pull inbox's messages handed to a plain function as nats-py parses them.

nats-py hands a subscriber each message through a `Msg` object put on the subscription's queue,
taken by the subscription's task, and given to an awaited callback: at tens of thousands of
deliveries a second that is a sixth of the daemon's CPU (py-spy, `ingest_bench.py --profile`).
The ingest loop only appends each delivery to `PullMachine`'s list, so here the client's
per-message dispatch (`Client._process_msg`, the one place its parser hands a message over) is
wrapped: a message for a routed subscription id goes to its handler at once, with the subject,
the reply and the data, and the headers as nats-py parses them: a status line (or any header
block of an empty body) at once, a delivery's headers when first read (`LazyHeaders`: only a dead
letter reads them); any other message takes nats-py's own path unchanged.

The subscription is still an ordinary nats-py subscription (its id, SUB on reconnect, UNSUB),
and it keeps a callback doing the same through a `Msg`: should a nats-py release no longer have
these two methods, routing is not installed (logged once) and everything works as before, only
slower. nats-py is pinned below 3 in pyproject.toml; the integration tests run this path.

Bounds: nothing is queued here; the handler appends to the pull's list, which the pull's batch
and byte limits bound. A handler that raises is logged and the message dropped, as nats-py does
with a callback's error: the pull then misses a delivery, which it handles as a lost one (a
consumer sequence gap, read from the stream), and the connection's read loop goes on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Final

from tradecache.ingest.compiled import frames as _frames

Headers = Mapping[str, str] | None
# (subject, reply, data, headers): called in the order nats-py parses the messages.
RawHandler = Callable[[str, str, bytes, Headers], None]
# `_frames.scan(data, pos, handlers, headers_of)` -> (pos, outcome, extra, deliveries, payload bytes)
Scan = Callable[
    [bytes, int, dict[int, RawHandler], Callable[[bytes], Mapping[str, str]] | None], tuple[int, int, Any, int, int]
]

_ROUTES_ATTRIBUTE: Final = "_tradecache_inbox_routes"
# A header block that starts so carries no inline status (a status is `NATS/1.0 100 ...`).
_PLAIN_HEADER_LINE: Final = b"NATS/1.0\r\n"
log = logging.getLogger("tradecache.ingest.inbox")


class LazyHeaders(Mapping[str, str]):
    """A delivery's headers, parsed by nats-py's own line parser when first read.

    Producers send `Nats-Msg-Id` with every event and command (SPEC section 1), and parsing it as
    each message arrives cost ~1.6 us, a twentieth of the daemon's CPU per event; the daemon
    reads a delivery's headers only to dead-letter it. Read, they are the dict nats-py makes
    (empty, and so false, where nats-py would give None)."""

    __slots__ = ("_parse", "_parsed", "_raw")

    def __init__(self, raw: bytes, parse: Callable[[bytes], dict[str, str]]) -> None:
        self._raw = raw  # the whole block, `NATS/1.0\r\n` first
        self._parse = parse
        self._parsed: dict[str, str] | None = None

    def _headers(self) -> dict[str, str]:
        parsed = self._parsed
        if parsed is None:
            try:
                parsed = self._parse(self._raw[len(_PLAIN_HEADER_LINE) :])
            except Exception:  # nats-py, failing to parse a block, gives no headers
                parsed = {}
            self._parsed = parsed
        return parsed

    def __getitem__(self, name: str) -> str:
        return self._headers()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers())

    def __len__(self) -> int:
        return len(self._headers())

    def __repr__(self) -> str:
        return f"LazyHeaders({self._headers()!r})"


def _line_parser(nc: Any) -> Callable[[bytes], dict[str, str]] | None:
    """nats-py's parser of plain header lines, where it is the one its client uses: not where
    `fast_mail_parser` is installed (nats-py then parses with it, and post-processes)."""
    parse = getattr(type(nc), "_parse_header_lines", None)
    module = sys.modules.get(type(nc).__module__)
    if not callable(parse) or getattr(module, "parse_email", None) is not None:
        return None
    return parse  # type: ignore[no-any-return]  # a staticmethod of nats-py's Client


class _Routes:
    """The subscription ids of one client whose messages go straight to a handler."""

    def __init__(self, nc: Any) -> None:
        self.handlers: dict[int, RawHandler] = {}
        self._nc = nc
        self._process_msg = nc._process_msg
        self._process_headers = nc._process_headers
        self.parse_lines = _line_parser(nc)
        self.stats: dict[str, int] = nc.stats
        self.compiled = False  # the frames are read by `_FrameReader`

    async def process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        handler = self.handlers.get(sid)
        if handler is None:
            await self._process_msg(sid, subject, reply, data, headers)
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        parsed: Headers = None
        if headers:
            parse_lines = self.parse_lines
            plain = headers.startswith(_PLAIN_HEADER_LINE) and len(headers) > len(_PLAIN_HEADER_LINE) + 2
            if parse_lines is not None and data and plain:  # a body, and a block of headers, no status
                parsed = LazyHeaders(headers, parse_lines)
            else:  # a status line, an empty body or an empty block: as nats-py gives them, now
                parsed = await self._process_headers(headers)
        try:
            handler(subject.decode(), reply.decode(), data, parsed)
        except Exception:  # never into nats-py's read loop, which would drop the connection
            log.exception("an inbox message could not be handled; dropped", extra={"subject": subject[:200]})


# `_frames.scan`'s outcomes: all read; an incomplete frame at `pos`; something for nats-py's parser
# at `pos` (up to `extra`); the handler raised `extra` on the frame before `pos`.
_SCAN_DONE, _SCAN_PARTIAL, _SCAN_OTHER, _SCAN_FAILED = 0, 1, 2, 3


class _FrameReader:
    """nats-py's `Parser.parse` with the routed deliveries read in C first (`_frames.scan`).

    Per delivery, nats-py's parser costs ~2 us (regular expressions, a slice of a bytearray, an
    awaited call); the scan reads the frames nats-server writes for a routed subscription and
    calls its handler, and gives anything else (other operations, other subscriptions, status
    lines, an oversized or unusual frame) to nats-py's parser, in order. Between reads, an
    incomplete frame waits in the parser's own buffer, which nats-py clears on a reconnect."""

    def __init__(
        self,
        parser: Any,
        awaiting_control_line: object,
        handlers: dict[int, RawHandler],
        stats: dict[str, int],
        headers_of: Callable[[bytes], Mapping[str, str]] | None,
        scan: Scan,
    ) -> None:
        self._parser = parser
        self._parse = parser.parse
        self._idle = awaiting_control_line
        self._handlers = handlers
        self._stats = stats
        self._headers_of = headers_of
        self._scan = scan

    async def parse(self, data: bytes = b"") -> None:
        parser = self._parser
        if parser.state != self._idle:  # in the middle of a frame nats-py has begun
            await self._parse(data)
            return
        buffer = parser.buf
        if buffer:
            data = bytes(buffer) + data
            buffer.clear()
        pos, size, stats = 0, len(data), self._stats
        while pos < size:
            pos, code, extra, count, payload_bytes = self._scan(data, pos, self._handlers, self._headers_of)
            if count:
                stats["in_msgs"] += count
                stats["in_bytes"] += payload_bytes
            if code == _SCAN_PARTIAL:
                buffer.extend(data[pos:])
                return
            if code == _SCAN_OTHER:
                await self._parse(data[pos:extra])
                pos = extra
                if parser.buf is not buffer:  # reset (an error, a reconnect): the rest is dropped, as nats-py does
                    return
                if parser.state != self._idle or buffer:  # nats-py holds part of a frame
                    await self._parse(data[pos:])
                    return
            elif code == _SCAN_FAILED:
                log.error("an inbox message could not be handled; dropped", exc_info=extra)


def _install_reader(nc: Any, routes: _Routes) -> None:
    """Read the routed deliveries with `_frames.scan`, where it is built and nats-py's parser is
    the one it was written against (a `state`, a bytearray `buf`, an async `parse`)."""
    parser = getattr(nc, "_ps", None)
    idle = getattr(sys.modules.get(type(parser).__module__), "AWAITING_CONTROL_LINE", None)
    fits = idle is not None and isinstance(getattr(parser, "buf", None), bytearray) and hasattr(parser, "state")
    if _frames is None or parser is None or not fits or not callable(getattr(parser, "parse", None)):
        log.info("inbox deliveries are parsed by nats-py (the compiled frame reader is not available)")
        return
    parse_lines = routes.parse_lines
    headers_of = None if parse_lines is None else partial(LazyHeaders, parse=parse_lines)
    reader = _FrameReader(parser, idle, routes.handlers, routes.stats, headers_of, _frames.scan)
    parser.parse = reader.parse  # the read loop looks it up on the parser for each read
    routes.compiled = True


def _routes(nc: Any) -> _Routes | None:
    routes: _Routes | None = nc.__dict__.get(_ROUTES_ATTRIBUTE)
    if routes is not None:
        return routes
    if not all(callable(getattr(nc, name, None)) for name in ("_process_msg", "_process_headers")) or not isinstance(
        getattr(nc, "stats", None), dict
    ):
        log.warning("this nats-py has no per-message dispatch to route: inbox messages take its callback path")
        return None
    routes = _Routes(nc)
    setattr(nc, _ROUTES_ATTRIBUTE, routes)
    nc._process_msg = routes.process_msg  # the parser looks it up on the client for each message
    _install_reader(nc, routes)
    return routes


class InboxSubscription:
    """A subscription whose messages reach `handler` directly (or through nats-py's callback)."""

    def __init__(self, subscription: Any, routes: _Routes | None) -> None:
        self._subscription = subscription
        self._routes = routes
        self.direct = routes is not None
        self.compiled = routes is not None and routes.compiled  # read in C (`_frames.scan`)

    async def unsubscribe(self) -> None:
        if self._routes is not None:
            self._routes.handlers.pop(self._subscription._id, None)
        await self._subscription.unsubscribe()


async def subscribe_inbox(nc: Any, subject: str, handler: RawHandler) -> InboxSubscription:
    """Subscribe `nc` to `subject`, each message given to `handler` as soon as it is parsed."""

    async def through_msg(msg: Any) -> None:  # the path when routing is not installed
        handler(msg.subject, msg.reply, msg.data, msg.headers)

    subscription = await nc.subscribe(subject, cb=through_msg)
    routes = _routes(nc)
    sid = getattr(subscription, "_id", None)
    if routes is None or not isinstance(sid, int):
        return InboxSubscription(subscription, None)
    # From here the parser hands this id's messages to `handler`. A fresh inbox gets nothing
    # before its owner asks (a pull names it as the reply), so none went to the callback first.
    routes.handlers[sid] = handler
    return InboxSubscription(subscription, routes)
