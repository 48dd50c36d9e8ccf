"""`cache/lists.py`: lists read with pipelined LRANGEs answer what the read script answered, and
an error answer or a cancelled read never leaves a connection with answers nobody read.

On every Redis line, and each way of reading the answers (`CLIENTS`): from the hiredis reader in
bulk over RESP3 (redis-py 8's default) and RESP2, and answer by answer through redis-py with its
pure-Python parser. A connection that went back to the pool with an unread answer would hand
that answer to the next command, which is the failure these tests look for."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from redis._parsers import _AsyncRESP2Parser, _RESP2Parser

from tradecache.cache.lists import _HiredisAnswers, pipelined_lrange, read_lists, read_lists_async
from tradecache.cache.plan import READ_SCRIPT, read_result

pytestmark = pytest.mark.integration

# How a client reads: its keyword arguments for the sync and the asyncio client.
CLIENTS = {
    "hiredis-resp3": ({"protocol": 3}, {"protocol": 3}),
    "hiredis-resp2": ({"protocol": 2}, {"protocol": 2}),
    "python-parser": (
        {"protocol": 2, "parser_class": _RESP2Parser},
        {"protocol": 2, "parser_class": _AsyncRESP2Parser},
    ),
}

KEYS = ["t:{x}:orders:O-1", "t:{x}:orders:absent", "t:{x}:orders:Ö-ü €", "t:{x}:orders:O-2", "t:{x}:orders:empty-later"]


def _fill(client: redis.Redis) -> None:
    client.flushdb()
    client.rpush(KEYS[0], b"\x81\xa1a\x01", b"two", b"")
    client.rpush(KEYS[2], b"unicode key", b"\x00\xff" * 1000)
    client.rpush(KEYS[3], *[str(n).encode() for n in range(500)])


def _by_script(client: redis.Redis, keys: list[str]) -> list[Any]:
    values = client.register_script(READ_SCRIPT)(keys=keys, args=["LRANGE"])
    return [read_result("LRANGE", value) for value in values]


@pytest.fixture(params=list(CLIENTS))
def kind(request: Any) -> str:
    return str(request.param)


def sync_client(url: str, kind: str, **options: Any) -> redis.Redis:
    return redis.Redis.from_url(url, **CLIENTS[kind][0], **options)


def async_client(url: str, kind: str, **options: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, **CLIENTS[kind][1], **options)


@pytest.fixture
def client(redis_line_server: Any, kind: str) -> Any:
    client = sync_client(redis_line_server.url, kind)
    _fill(client)
    yield client
    client.close()


async def test_hiredis_answers_are_taken_in_bulk_and_other_parsers_answer_by_answer(
    redis_line_server: Any, kind: str
) -> None:
    """The bulk path is the one taken whenever redis-py reads with hiredis (if it silently were
    not, loads would lose what it saves and no other test would notice)."""
    sync = sync_client(redis_line_server.url, kind)
    aclient = async_client(redis_line_server.url, kind)
    try:
        connection: Any = sync.connection_pool.get_connection()
        aconnection: Any = await aclient.connection_pool.get_connection()
        bulk = kind.startswith("hiredis")
        assert (_HiredisAnswers.of(connection, asynchronous=False) is not None) == bulk
        assert (_HiredisAnswers.of(aconnection, asynchronous=True) is not None) == bulk
        assert _HiredisAnswers.of(connection, asynchronous=True) is None  # never the other client's way
        sync.connection_pool.release(connection)
        await aclient.connection_pool.release(aconnection)
    finally:
        sync.close()
        await aclient.aclose()


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_push_between_answers_is_handed_to_redis_py_not_taken_as_an_answer(
    redis_line_server: Any, asynchronous: bool
) -> None:
    """RESP3 with client tracking on: Redis pushes an invalidation when a key the connection read
    is written, between the answers of a long read when the write lands during it. The push goes
    to redis-py's handler; the answers are the lists, none shifted."""
    other = redis.Redis.from_url(redis_line_server.url)
    _fill(other)
    keys = KEYS * 20_000  # 100,000 answers: long enough for a write to land half-way
    expected = _by_script(other, KEYS) * 20_000
    tracked = "t:{x}:tracked"
    pushes: list[Any] = []

    def write_soon() -> None:
        time.sleep(0.02)
        other.rpush(tracked, b"written")

    sync = redis.Redis.from_url(redis_line_server.url, protocol=3, max_connections=1)
    aclient = redis.asyncio.Redis.from_url(redis_line_server.url, protocol=3, max_connections=1)
    try:
        for _attempt in range(5):  # the write must land while the answers are read: retried if early or late
            writer = threading.Thread(target=write_soon)
            if asynchronous:
                connection: Any = await aclient.connection_pool.get_connection()

                async def on_push(push: Any) -> None:
                    pushes.append(push)

                connection._parser.set_invalidation_push_handler(on_push)
                await aclient.connection_pool.release(connection)
                await aclient.execute_command("CLIENT", "TRACKING", "ON")
                await aclient.lrange(tracked, 0, -1)
                writer.start()
                got = await read_lists_async(aclient, keys)
            else:
                connection = sync.connection_pool.get_connection()
                connection._parser.set_invalidation_push_handler(pushes.append)
                sync.connection_pool.release(connection)
                sync.execute_command("CLIENT", "TRACKING", "ON")
                sync.lrange(tracked, 0, -1)
                writer.start()
                got = read_lists(sync, keys)
            writer.join()
            assert got == expected
            if pushes:
                break
        assert pushes, "no invalidation arrived during a read in 5 attempts"
        assert tracked.encode() in pushes[0][1]
        assert (await aclient.get("absent") if asynchronous else sync.get("absent")) is None  # nothing left unread
    finally:
        sync.close()
        await aclient.aclose()
        other.close()


def test_the_pipelined_command_is_what_redis_py_would_send() -> None:
    from redis.connection import Connection

    packed = b"".join(Connection().pack_command("LRANGE", key, 0, -1)[0] for key in KEYS)
    assert pipelined_lrange(KEYS) == packed


def test_sync_reads_equal_the_read_script_and_leave_the_connection_clean(client: redis.Redis) -> None:
    keys = KEYS * 300  # 1,500 answers: more than one socket read
    assert read_lists(client, keys) == _by_script(client, keys)
    assert read_lists(client, []) == []
    assert client.lrange(KEYS[0], 0, 0) == [b"\x81\xa1a\x01"]  # the next command gets its own answer


def test_a_key_of_another_type_raises_after_every_answer_was_read(redis_line_server: Any, kind: str) -> None:
    client = sync_client(redis_line_server.url, kind, max_connections=1)  # one connection: reused
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
    client: redis.Redis, redis_line_server: Any, kind: str
) -> None:
    keys = KEYS * 300
    expected = _by_script(client, keys)
    client.set("t:{x}:orders:a-string", b"not a list")
    aclient = async_client(redis_line_server.url, kind, max_connections=1)  # one connection: reused
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


async def test_a_cancelled_async_read_closes_its_connection(
    client: redis.Redis, redis_line_server: Any, kind: str
) -> None:
    keys = KEYS * 20_000  # 100,000 answers: long enough to be cancelled half-way
    aclient = async_client(redis_line_server.url, kind, max_connections=1)
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
    client: redis.Redis, redis_line_server: Any, kind: str
) -> None:
    """One deadline (socket_timeout) for all the answers: a stalled Redis is redis-py's
    TimeoutError (what `redis_errors.translate` calls unavailable), and the connection is dropped."""
    aclient = async_client(redis_line_server.url, kind, max_connections=1, socket_timeout=0.3)
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
