"""Many lists read in one round trip: one `LRANGE key 0 -1` per key, pipelined, no script.

Loading a collection of orders, positions or accounts reads thousands of lists. Through the read
script, Redis turns each list into a Lua table and back (~10 us an order of 4 events, 0.1 s of
10,000 orders, and 0.12-0.15 s wall); as plain pipelined commands it answers the same lists in a
third of that, and hiredis parses the answers in C: the client here writes the commands itself
and reads the answers off the connection, without redis-py's pipeline objects (which cost more in
Python than the script did). With redis-py's hiredis parser, the answers are taken straight from
its reader (`_HiredisAnswers`) and the socket read only when the reader has no whole answer left:
redis-py's `read_response` per answer cost 2 us on the asyncio client (timeouts, checks and an
await each), ~20 ms of a 10,000-order load on the event loop, five times the parsing itself.
Another parser (the pure-Python one, or a redis-py whose parser looks different) is read answer
by answer as before. Each list is read atomically (one command); a chunk of
them is not, which the callers never relied on (a page or a load is read chunk by chunk anyway).

Standalone Redis only (a cluster client has no single connection to pipeline on): the callers
use the read script there. An error answer (WRONGTYPE: a key of another type) is raised once
every answer has been read, so the connection goes back to the pool clean; a connection that
failed half-way, or whose reading was cancelled, is closed rather than reused.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
from collections.abc import Generator, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

_RANGE_TAIL = b"\r\n$1\r\n0\r\n$2\r\n-1\r\n"


def pipelines(command: str, client: Any) -> bool:
    """Whether a collection read with the read script's `command` is done here instead: lists, on
    a standalone client (a cluster client is neither class)."""
    return command == "LRANGE" and isinstance(client, (redis.Redis, redis.asyncio.Redis))


def pipelined_lrange(keys: Sequence[str]) -> bytes:
    """The RESP of `LRANGE key 0 -1` for each key, in order: the bytes redis-py's `pack_commands`
    makes (a test holds them to it) in a twentieth of its time (0.035 vs 0.7 ms for 200 keys)."""
    parts = []
    for key in keys:
        name = key.encode()
        parts.append(b"*4\r\n$6\r\nLRANGE\r\n$%d\r\n%s%s" % (len(name), name, _RANGE_TAIL))
    return b"".join(parts)


def read_lists(client: redis.Redis, keys: Sequence[str]) -> list[list[bytes]]:
    """Every list `keys` name (an absent key: an empty list), in one round trip."""
    if not keys:
        return []
    pool: Any = client.connection_pool  # redis-py leaves these untyped
    connection = pool.get_connection()
    clean = False
    try:
        connection.send_packed_command([pipelined_lrange(keys)])
        direct = _HiredisAnswers.of(connection, asynchronous=False)
        if direct is None:
            answers, refused = _collect(connection.read_response, len(keys))
        else:
            answers, refused = direct.read_sync(len(keys))
        clean = True
    finally:
        if not clean:
            connection.disconnect()
        pool.release(connection)
    if refused is not None:
        raise refused
    return answers


async def read_lists_async(client: redis.asyncio.Redis, keys: Sequence[str]) -> list[list[bytes]]:
    """`read_lists` on the asyncio client."""
    if not keys:
        return []
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    clean = False
    try:
        await connection.send_packed_command([pipelined_lrange(keys)])
        direct = _HiredisAnswers.of(connection, asynchronous=True)
        # One deadline (socket_timeout) for all the answers: redis-py's own, set up per answer,
        # cost more than the answer (a timer armed and cancelled each time: 1.5x the time of a
        # page of cached replies). `timeout=math.inf` reads one answer without it (redis-py 8
        # documents it; an older one arms an endless timer instead: as slow as before, as correct).
        try:
            async with asyncio.timeout(connection.socket_timeout):
                if direct is not None:
                    answers, refused = await direct.read_async(len(keys))
                else:
                    answers, refused = await _collect_async(connection, len(keys))
        except TimeoutError:
            raise redis.exceptions.TimeoutError(f"Timeout reading {len(keys)} lists") from None
        clean = True
    finally:
        if not clean:  # an error or a cancellation with answers left unread
            await connection.disconnect()
        await pool.release(connection)
    if refused is not None:
        raise refused
    return answers


async def _collect_async(connection: Any, count: int) -> tuple[list[list[bytes]], ResponseError | None]:
    answers: list[list[bytes]] = []
    refused: ResponseError | None = None
    for _ in range(count):
        try:
            answers.append(await connection.read_response(timeout=math.inf))
        except ResponseError as exc:
            refused = refused or exc
            answers.append([])
    return answers, refused


def _collect(read: Any, count: int) -> tuple[list[list[bytes]], redis.exceptions.ResponseError | None]:
    answers: list[list[bytes]] = []
    refused: redis.exceptions.ResponseError | None = None
    for _ in range(count):
        try:
            answers.append(read())
        except redis.exceptions.ResponseError as exc:
            refused = refused or exc
            answers.append([])
    return answers, refused


class _HiredisAnswers:
    """Answers taken from the hiredis reader of a redis-py connection's parser, in C, reading the
    socket only when it holds no whole answer. Errors as redis-py's `read_response` gives them: an
    error answer (a `ResponseError`) is kept for the caller, a connection-level one (LOADING, a
    closed socket) raised; the parser's own socket reads raise redis-py's TimeoutError."""

    def __init__(self, parser: Any, gets: Any, more: Any) -> None:
        self._parser = parser
        self._gets = gets
        # The reader's "no whole answer yet" (redis-py 6+ gives its own object, 5 the default False).
        self._not_enough = getattr(sys.modules.get(type(parser).__module__), "NOT_ENOUGH_DATA", False)
        self._more = more
        # RESP3 (redis-py 8's default) may put a push (a server notice) between two answers: it is
        # handed to redis-py, as its own reading would, and is not an answer.
        self._push = getattr(sys.modules.get("hiredis"), "PushNotification", None)

    @classmethod
    def of(cls, connection: Any, *, asynchronous: bool) -> _HiredisAnswers | None:
        """For a connection whose parser reads with hiredis; None otherwise."""
        parser = getattr(connection, "_parser", None)
        reader: Any = getattr(parser, "_reader", None)
        more = getattr(parser, "read_from_socket", None)
        if type(reader).__module__ != "hiredis" or more is None or inspect.iscoroutinefunction(more) != asynchronous:
            return None
        if str(getattr(connection, "protocol", 2)) != "2" and not hasattr(parser, "handle_push_response"):
            return None  # pushes possible, and no way to hand them on
        return cls(parser, reader.gets, more)

    @staticmethod
    def _taken(answer: Any, answers: list[Any], refused: ResponseError | None) -> ResponseError | None:
        if isinstance(answer, RedisConnectionError):
            raise answer
        if isinstance(answer, ResponseError):
            answers.append([])
            return refused or answer
        answers.append(answer)
        return refused

    def _answers(self, count: int) -> Generator[Any, None, tuple[list[Any], ResponseError | None]]:
        """`count` answers and the first error answer among them; yields None when the reader holds
        no whole answer (the caller reads the socket) and each push (the caller hands it to
        redis-py), so that one loop serves the sync and the asyncio reads."""
        answers: list[Any] = []
        refused: ResponseError | None = None
        gets, not_enough, push, append = self._gets, self._not_enough, self._push, answers.append
        while len(answers) < count:
            answer = gets()
            if answer.__class__ is list:  # the usual answer, looked at first
                append(answer)
            elif answer is not_enough:
                yield None
            elif push is not None and answer.__class__ is push:
                yield answer
            else:
                refused = self._taken(answer, answers, refused)
        return answers, refused

    def read_sync(self, count: int) -> tuple[list[Any], ResponseError | None]:
        steps = self._answers(count)
        try:
            while True:
                push = next(steps)
                if push is None:
                    self._more()
                else:
                    self._parser.handle_push_response(push)
        except StopIteration as done:
            result: tuple[list[Any], ResponseError | None] = done.value
            return result
        except OSError as exc:  # as redis-py's read_response says it
            raise RedisConnectionError(f"Error while reading from Redis: {exc}") from exc

    async def read_async(self, count: int) -> tuple[list[Any], ResponseError | None]:
        steps = self._answers(count)
        try:
            while True:
                push = next(steps)
                if push is None:
                    await self._more()
                else:
                    await self._parser.handle_push_response(push)
        except StopIteration as done:
            result: tuple[list[Any], ResponseError | None] = done.value
            return result
        except OSError as exc:
            raise RedisConnectionError(f"Error while reading from Redis: {exc}") from exc


__all__ = ["pipelined_lrange", "pipelines", "read_lists", "read_lists_async"]
