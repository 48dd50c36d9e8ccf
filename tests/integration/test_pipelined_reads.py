"""`cache/lists.py`: lists read with pipelined LRANGEs answer what the read script answered, and
an error answer or a cancelled read never leaves a connection with answers nobody read.

On every Redis line: a connection that went back to the pool with an unread answer would hand
that answer to the next command, which is the failure these tests look for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio

from tradecache.cache.lists import pipelined_lrange, read_lists, read_lists_async
from tradecache.cache.plan import READ_SCRIPT, read_result

pytestmark = pytest.mark.integration

KEYS = ["t:{x}:orders:O-1", "t:{x}:orders:absent", "t:{x}:orders:Ö-ü €", "t:{x}:orders:O-2", "t:{x}:orders:empty-later"]


def _fill(client: redis.Redis) -> None:
    client.flushdb()
    client.rpush(KEYS[0], b"\x81\xa1a\x01", b"two", b"")
    client.rpush(KEYS[2], b"unicode key", b"\x00\xff" * 1000)
    client.rpush(KEYS[3], *[str(n).encode() for n in range(500)])


def _by_script(client: redis.Redis, keys: list[str]) -> list[Any]:
    values = client.register_script(READ_SCRIPT)(keys=keys, args=["LRANGE"])
    return [read_result("LRANGE", value) for value in values]


@pytest.fixture
def client(redis_line_server: Any) -> Any:
    client = redis.Redis.from_url(redis_line_server.url)
    _fill(client)
    yield client
    client.close()


def test_the_pipelined_command_is_what_redis_py_would_send() -> None:
    from redis.connection import Connection

    packed = b"".join(Connection().pack_command("LRANGE", key, 0, -1)[0] for key in KEYS)
    assert pipelined_lrange(KEYS) == packed


def test_sync_reads_equal_the_read_script_and_leave_the_connection_clean(client: redis.Redis) -> None:
    keys = KEYS * 300  # 1,500 answers: more than one socket read
    assert read_lists(client, keys) == _by_script(client, keys)
    assert read_lists(client, []) == []
    assert client.lrange(KEYS[0], 0, 0) == [b"\x81\xa1a\x01"]  # the next command gets its own answer


def test_a_key_of_another_type_raises_after_every_answer_was_read(redis_line_server: Any) -> None:
    client = redis.Redis.from_url(redis_line_server.url, max_connections=1)  # one connection: reused
    try:
        _fill(client)
        client.set("t:{x}:orders:a-string", b"not a list")
        before = client.client_id()
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            read_lists(client, [KEYS[0], "t:{x}:orders:a-string", KEYS[3]])
        # The same connection, kept (every answer was read: redis-py did not have to drop it for
        # data left unread), and its next answer is its own, not the third LRANGE's.
        assert client.client_id() == before
        assert client.get("t:{x}:orders:a-string") == b"not a list"
        assert client.lrange(KEYS[0], 0, -1) == [b"\x81\xa1a\x01", b"two", b""]
    finally:
        client.close()


async def test_async_reads_equal_the_read_script_and_errors_leave_the_connection_clean(
    client: redis.Redis, redis_line_server: Any
) -> None:
    keys = KEYS * 300
    expected = _by_script(client, keys)
    client.set("t:{x}:orders:a-string", b"not a list")
    aclient = redis.asyncio.Redis.from_url(redis_line_server.url, max_connections=1)  # one connection: reused
    try:
        assert await read_lists_async(aclient, keys) == expected
        before = await aclient.client_id()
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await read_lists_async(aclient, [KEYS[0], "t:{x}:orders:a-string", KEYS[3]])
        assert await aclient.client_id() == before  # kept: nothing was left unread
        assert await aclient.get("t:{x}:orders:a-string") == b"not a list"
        assert await read_lists_async(aclient, keys) == expected
    finally:
        await aclient.aclose()


async def test_a_cancelled_async_read_closes_its_connection(client: redis.Redis, redis_line_server: Any) -> None:
    keys = KEYS * 20_000  # 100,000 answers: long enough to be cancelled half-way
    aclient = redis.asyncio.Redis.from_url(redis_line_server.url, max_connections=1)
    try:
        reading = asyncio.ensure_future(read_lists_async(aclient, keys))
        for _ in range(50):  # until it has read some answers but not all
            await asyncio.sleep(0.002)
            if reading.done():
                break
        assert not reading.done(), "the read ended before it could be cancelled: make it longer"
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        # The one connection was closed, not returned with answers left: the next command on it
        # reconnects and gets its own answer.
        assert await aclient.lrange(KEYS[3], 0, 2) == [b"0", b"1", b"2"]
        assert await aclient.get("no-such-key") is None
    finally:
        await aclient.aclose()


async def test_a_redis_that_stops_answering_half_way_times_out_as_redis_py_would(
    client: redis.Redis, redis_line_server: Any
) -> None:
    """One deadline (socket_timeout) for all the answers: a stalled Redis is redis-py's
    TimeoutError (what `redis_errors.translate` calls unavailable), and the connection is dropped."""
    aclient = redis.asyncio.Redis.from_url(redis_line_server.url, max_connections=1, socket_timeout=0.3)
    try:
        assert await aclient.ping()
        client.execute_command("CLIENT", "PAUSE", 1500, "ALL")  # commands wait, answers stop
        started = asyncio.get_running_loop().time()
        with pytest.raises(redis.exceptions.TimeoutError):
            await read_lists_async(aclient, KEYS * 100)
        assert asyncio.get_running_loop().time() - started < 1.2  # the deadline, not the pause
        client.execute_command("CLIENT", "UNPAUSE")
        assert await read_lists_async(aclient, KEYS) == _by_script(client, KEYS)
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
        await aclient.aclose()
