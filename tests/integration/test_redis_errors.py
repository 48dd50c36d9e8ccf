"""The Redis error classifier against the words real servers use, on every Redis line.

Each case provokes an error on a real redis-server of each line (`redis_line`: the pip 6.2 and
PATH's 7.x in the same run), as a plain command and inside a script (where 6.2 wraps it:
`Error running script ... -NOREPLICAS`), and checks what `classify` makes of it and what the
three users of the classifier raise: the Python API (`RedisCacheDatabase`), the daemon's `Store`
and, through it, the load service.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from tests.lines import ServerLine
from tests.unit.factories import OrderEvents
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import APPLY_SCRIPT, ScriptCall
from tradecache.cache.redis_errors import RedisFault, classify, reply_code, reply_text
from tradecache.dev.stack import HOST, RedisServer
from tradecache.errors import LeaseLost, StoreRefused, StoreUnavailable
from tradecache.model.identifiers import StrategyId, TraderId
from tradecache.model.ledger import Collection
from tradecache.model.orders import Order
from tradecache.serialization import MsgPackSerializer

pytestmark = pytest.mark.integration

TRADER = "ERRORS-1"
WRITE = "return redis.call('SET', KEYS[1], 1)"


@pytest.fixture
def server(redis_line: ServerLine) -> Iterator[RedisServer]:
    """A private server of the line (the tests change its configuration): each test runs per line."""
    with RedisServer(binary=redis_line.binary, appendonly=False) as started:
        yield started


def failure(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as exc:  # the point: whatever redis-py raised
        return exc
    raise AssertionError("the call did not fail")


def version(client: redis.Redis) -> int:
    return int(str(client.info("server")["redis_version"]).split(".")[0])


def test_refusals_of_the_data_are_refused_plain_and_inside_a_script(server: RedisServer) -> None:
    client = server.client()
    client.set("s", "x")
    cases = {
        "WRONGTYPE": failure(lambda: client.lpush("s", 1)),
        "WRONGTYPE in a script": failure(lambda: client.eval("return redis.call('LPUSH', KEYS[1], 1)", 1, "s")),
        "too many results to unpack": failure(
            lambda: client.eval("return redis.call('HSET', KEYS[1], unpack(ARGV))", 1, "h", *([b"a"] * 20_000))
        ),
        "our own WRONGTYPE": failure(lambda: client.eval("return redis.error_reply('WRONGTYPE tradecache: x')", 0)),
    }
    for name, exc in cases.items():
        assert classify(exc) == RedisFault.REFUSED, (name, exc)
        assert not re.search(r"script: [0-9a-f]{40}|Error running script", reply_text(exc)), reply_text(exc)
    assert reply_code(cases["WRONGTYPE in a script"]) == "WRONGTYPE"
    assert reply_text(cases["too many results to unpack"]).endswith("too many results to unpack")
    client.close()


def test_not_now_is_unavailable_plain_and_inside_a_script(server: RedisServer) -> None:
    client = server.client()
    found: dict[str, BaseException] = {}
    client.config_set("min-replicas-to-write", 1)
    found["NOREPLICAS"] = failure(lambda: client.set("a", 1))
    found["NOREPLICAS in a script"] = failure(lambda: client.eval(WRITE, 1, "a"))
    client.config_set("min-replicas-to-write", 0)
    client.config_set("maxmemory", 1)
    found["OOM"] = failure(lambda: client.set("a", 1))
    found["OOM in a script"] = failure(lambda: client.eval(WRITE, 1, "a"))
    client.config_set("maxmemory", 0)
    client.acl_setuser("u", enabled=True, passwords=["+p"], keys=["*"], commands=["+get", "+eval", "+ping"])
    user = redis.Redis(host=HOST, port=server.port, username="u", password="p")
    found["NOPERM"] = failure(lambda: user.set("a", 1))
    found["NOPERM in a script"] = failure(lambda: user.eval(WRITE, 1, "a"))
    user.close()
    client.replicaof(HOST, 1)  # a replica of nothing: read-only at once
    found["READONLY"] = failure(lambda: client.set("a", 1))
    found["READONLY in a script"] = failure(lambda: client.eval(WRITE, 1, "a"))
    client.replicaof("NO", "ONE")
    found["BUSY"] = busy_error(server)
    for name, exc in found.items():
        assert classify(exc) == RedisFault.UNAVAILABLE, (name, type(exc).__name__, str(exc))
    if version(client) < 7:  # the form that fooled the first-word classifier
        assert str(found["NOREPLICAS in a script"]).startswith("Error running script")
    assert reply_code(found["NOREPLICAS in a script"]) == "NOREPLICAS"
    client.close()


def busy_error(server: RedisServer) -> BaseException:
    """What a client gets while another one runs a script past the busy threshold."""
    admin = server.client()
    name = "busy-reply-threshold" if version(admin) >= 7 else "lua-time-limit"
    admin.config_set(name, 100)
    spin = "local t = redis.call('TIME'); local e = t[1] * 1e6 + t[2] + ARGV[1]; " \
           "while true do t = redis.call('TIME'); if t[1] * 1e6 + t[2] > e then break end end; return 1"  # fmt: skip
    runner = threading.Thread(target=lambda: server.client().eval(spin, 0, 1_500_000))
    runner.start()
    time.sleep(0.4)
    other = redis.Redis(host=HOST, port=server.port, socket_timeout=5)
    try:
        return failure(lambda: other.get("a"))
    finally:
        runner.join()
        other.close()
        admin.close()


def test_our_mistakes_are_bugs_and_our_fence_is_fenced(server: RedisServer) -> None:
    client = server.client()
    bugs = {
        "does not compile": failure(lambda: client.eval("return (", 0)),
        "unknown command": failure(lambda: client.execute_command("NOSUCHCOMMAND")),  # type: ignore[no-untyped-call]
        "wrong arity": failure(lambda: client.execute_command("GET")),  # type: ignore[no-untyped-call]
        "bad argument type": failure(lambda: client.set("a", {"a": 1})),  # type: ignore[arg-type]
    }
    for name, exc in bugs.items():
        assert classify(exc) == RedisFault.BUG, (name, exc)
    fenced = failure(lambda: client.eval("return redis.error_reply('FENCED tradecache: not yours')", 0))
    assert classify(fenced) == RedisFault.FENCED
    assert classify(ValueError("not a Redis error")) is None
    client.close()


def api(server: RedisServer) -> RedisCacheDatabase:
    config = CacheDatabaseConfig.from_url(server.url)
    return RedisCacheDatabase(TraderId(TRADER), logging.getLogger("tests"), MsgPackSerializer(), config)


def test_the_python_api_raises_ours(server: RedisServer) -> None:
    db, client = api(server), server.client()
    order = Order(OrderEvents(trader_id=TRADER).initialized())
    client.set(Keys(TRADER).entity(Collection.ORDERS, order.client_order_id.value), "not a list")
    with pytest.raises(StoreRefused, match="WRONGTYPE"):
        db.add_order(order)
    client.config_set("min-replicas-to-write", 1)
    with pytest.raises(StoreUnavailable, match="NOREPLICAS"):
        db.delete_strategy(StrategyId("S-1"))
    client.config_set("min-replicas-to-write", 0)
    db.delete_strategy(StrategyId("S-1"))  # and works again
    db.close()
    client.close()


async def test_the_daemon_store_raises_ours(server: RedisServer) -> None:
    keys = Keys(TRADER)
    client = redis.asyncio.Redis.from_url(server.url)
    store = Store(client, keys, MsgPackSerializer())
    await client.set(keys.lease(), "someone else")
    call = ScriptCall()
    call.fence(keys, "mine")
    call.checkpoint(keys, 7)
    with pytest.raises(LeaseLost, match="does not hold the lease"):
        await store.commit(call)
    await client.hset(keys.checkpoint(), "a", "b")  # now the wrong type
    call = ScriptCall()
    call.checkpoint(keys, 7)
    with pytest.raises(StoreRefused, match="WRONGTYPE"):
        await store.commit(call)
    await client.delete(keys.checkpoint())
    await client.config_set("min-replicas-to-write", 1)
    with pytest.raises(StoreUnavailable, match="NOREPLICAS"):
        await store.commit(call)
    await client.config_set("min-replicas-to-write", 0)
    assert await store.commit(call) == [1]
    assert await client.register_script(APPLY_SCRIPT)(keys=[], args=[0]) == []
    await client.aclose()
