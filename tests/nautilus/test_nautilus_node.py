"""Real NautilusTrader nodes (1.221.0, and 1.231.0 where Python 3.12 exists) with the sidecar.

Each node runs in its own process with the Python of its venv (tests/nautilus/node.py), against
this session's redis-server and nats-server:
1. a BacktestEngine trades (market, limit and stop orders, partial fills, a position opened,
   flipped and closed, an order list, account updates, strategy state saved) with
   TradecacheBridge -> NATS -> `tradecache run` (layout nautilus) -> Redis; what tradecache then
   loads (Python API, load service) equals the node's own cache;
2. a fresh node with the read-only cache database starts from that Redis: it loads the same
   orders, positions, accounts, instruments, currencies and strategy state, its integrity check
   passes, and Redis is byte for byte unchanged afterwards;
3. a Redis written by NautilusTrader's own cache database loads in tradecache (Python API, load
   service, `tradecache load`) equal to what NautilusTrader itself loads from it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
import redis

from tests.integration.daemon_process import DaemonProcess
from tests.nautilus.versions import REPO, SECOND_VENV, NodeVersion, find_python312, installed_version, node_versions
from tests.nautilus.views import api_view, node_view, service_view
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.cache.keys import Keys
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

VERSIONS = node_versions()
NODE_TIMEOUT = 300


def _trader(version: NodeVersion, role: str) -> str:
    return f"NT{version.version.replace('.', '')}-{role}"


def run_node(version: NodeVersion, command: str, trader: str, redis_url: str, nats_url: str | None = None) -> Any:
    """Run tests/nautilus/node.py with the version's Python; its JSON result."""
    found = installed_version(version.python)
    assert found == version.version, (
        f"NautilusTrader {version.version} with tradecache is not importable by {version.python} "
        f"(found {found!r}); run scripts/setup"
        + (f" (it makes {SECOND_VENV.name} with Python 3.12)" if version.python.is_relative_to(SECOND_VENV) else "")
    )
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    out = Path(tempfile.mkdtemp(prefix="tc-node-")) / "result.json"
    args = [str(version.python), "-m", "tests.nautilus.node", command, "--trader", trader, "--redis", host_port]
    args += ["--out", str(out)] + (["--nats", nats_url] if nats_url else [])
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=NODE_TIMEOUT)
    output = f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"node {command} failed ({done.returncode}):\n{output}"
    return json.loads(out.read_text())


def database(redis_url: str, trader: str, layout: str = "nautilus") -> RedisCacheDatabase:
    config = CacheDatabaseConfig.from_url(redis_url, layout=layout)
    return RedisCacheDatabase(TraderId(trader), logging.getLogger("tests"), MsgPackSerializer(), config)


def redis_snapshot(client: redis.Redis, trader: str) -> dict[bytes, bytes]:
    """Every key of the trader with its DUMP (type and value): equal snapshots, equal data."""
    return {key: client.dump(key) for key in client.scan_iter(match=Keys(trader).scan_pattern(), count=1000)}


def start_daemon(redis_url: str, nats_url: str, trader: str) -> DaemonProcess:
    daemon = DaemonProcess(
        {
            "trader_id": trader,
            "redis": {"url": redis_url, "layout": "nautilus"},
            "nats": {"servers": [nats_url]},
            "ingest": {"fetch_expires": 0.1},
            "logging": {"level": "INFO"},
        }
    )
    daemon.start()
    daemon.wait_for_log("ingest started", timeout=30)
    return daemon


async def wait_until_applied(nats_url: str, trader: str, timeout: float = 30.0) -> dict[str, Any]:
    """The sidecar's stats once it has applied everything the stream holds for the trader."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = Subjects("tradecache", trader).load("stats")
        deadline = time.monotonic() + timeout
        while True:
            info = await js.consumer_info("TRADECACHE", f"tradecache-{trader}")
            stats = json.loads((await nc.request(subject, b"", timeout=5)).data)
            if info.num_pending == 0 and info.num_ack_pending == 0 and stats["last_applied_sequence"] > 0:
                return dict(stats)
            assert time.monotonic() < deadline, f"sidecar still behind: {info}, {stats}"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def dead_letters(nats_url: str, trader: str) -> list[tuple[str, str]]:
    """(reason, error) of every dead letter the sidecar published for the trader."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = Subjects("tradecache", trader).dead
        found = []
        subscription = await js.subscribe(subject, ordered_consumer=True)
        try:
            while True:
                try:
                    message = await subscription.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    return found
                headers = message.headers or {}
                found.append((headers.get("Tradecache-Reason", ""), headers.get("Tradecache-Error", "")))
        finally:
            await subscription.unsubscribe()
    finally:
        await nc.close()


async def service_replies(nats_url: str, trader: str, strategy_ids: list[str]) -> dict[str, Any]:
    """The load service's answers (msgpack) for every collection and each strategy."""
    nc = await nats.connect(nats_url)
    subjects = Subjects("tradecache", trader)
    headers = {"Accept": "application/msgpack"}
    try:
        replies = {}
        for name in ("orders", "positions", "accounts", "instruments", "currencies"):
            reply = await nc.request(subjects.load(name), b"", timeout=10, headers=headers)
            assert not (reply.headers or {}).get("Nats-Service-Error"), reply.headers
            replies[name] = msgpack.unpackb(reply.data, raw=False)
        strategies = {}
        for sid in strategy_ids:
            body = json.dumps({"strategy_id": sid}).encode()
            reply = await nc.request(subjects.load("strategy"), body, timeout=10, headers=headers)
            strategies[sid] = msgpack.unpackb(reply.data, raw=False)
        return service_view(replies, strategies)
    finally:
        await nc.close()


def assert_same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    """`found == expected`, comparing collection by collection so that a failure names the one."""
    assert sorted(found) == sorted(expected)
    for name in expected:
        if found[name] != expected[name]:
            for key in sorted(set(found[name]) | set(expected[name])):
                assert (name, key, found[name].get(key)) == (name, key, expected[name].get(key))


def check_commands(db: RedisCacheDatabase, client: redis.Redis, dump: dict[str, Any]) -> None:
    """Every order came with its SubmitOrder, or with the SubmitOrderList that carried it, stored
    as the node serialized it (1.231's `correlation_id` and `params` included)."""
    recorded = [msgpack.unpackb(base64.b64decode(raw), raw=False) for raw in dump["commands"].values()]
    assert sorted(command["type"] for command in recorded) == ["ModifyOrder", *["SubmitOrder"] * 4, "SubmitOrderList"]
    for command in recorded:
        if command["type"] == "ModifyOrder":
            continue  # not a stored type: passed on to the risk engine, never published
        if command["type"] == "SubmitOrder":
            key = db.keys.entity(Collection.SUBMIT_ORDER, command["order"]["client_order_id"])
        else:
            key = db.keys.entity(Collection.SUBMIT_ORDER_LIST, command["order_list_id"])
        assert msgpack.unpackb(client.get(key), raw=False) == command
    singles = {cid.value for cid in db.load_submit_order_commands()}
    lists = db.load_submit_order_list_commands()
    in_lists = {cid.value for command in lists.values() for cid in command.client_order_ids}
    assert sorted(oid.value for oid in lists) == dump["order_lists"]
    assert singles | in_lists == set(dump["orders"])
    assert singles and in_lists and not singles & in_lists


@pytest.mark.parametrize("version", VERSIONS, ids=[v.label for v in VERSIONS])
async def test_bridge_feeds_the_sidecar_and_a_fresh_node_starts_from_its_redis(
    version: NodeVersion, redis_server: Any, nats_server: Any
) -> None:
    trader = _trader(version, "BRIDGE")
    db = database(redis_server.url, trader)
    db.flush()
    client = redis.Redis.from_url(redis_server.url)
    daemon = start_daemon(redis_server.url, nats_server.url, trader)
    try:
        node = await asyncio.to_thread(run_node, version, "trade", trader, redis_server.url, nats_server.url)
        stats = await wait_until_applied(nats_server.url, trader)
        assert node["version"] == version.version
        bridge = node["bridge"]
        assert bridge["published"] == bridge["queued"] > 40 and bridge["dropped"] == 0 and bridge["depth"] == 0
        assert await dead_letters(nats_server.url, trader) == []
        expected = node_view(node)
        strategy_ids = sorted(expected["strategies"])
        # What the node did, for the record: partial fills, a flip, a close, a saved state.
        assert {o["summary"]["order_type"] for o in expected["orders"].values()} == {"MARKET", "LIMIT", "STOP_MARKET"}
        assert max(o["summary"]["event_count"] for o in expected["orders"].values()) >= 6
        assert [p["is_closed"] for p in expected["positions"].values()] == [True]
        assert expected["strategies"][strategy_ids[0]]["phase"] == b"flat"

        assert_same(api_view(db, client, strategy_ids), expected)
        assert_same(await service_replies(nats_server.url, trader, strategy_ids), expected)
        check_commands(db, client, node)
        assert stats["keys"]["orders"] == len(expected["orders"])
        # The node's layout: currencies and strategy state as NautilusTrader stores them.
        assert client.type(f"trader-{trader}:currencies:USD") == b"string"
        assert client.exists(f"trader-{trader}:strategies:{strategy_ids[0]}:state")
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()[-3000:]

    before = redis_snapshot(client, trader)
    fresh = await asyncio.to_thread(run_node, version, "fresh", trader, redis_server.url)
    assert fresh["integrity"] is True
    assert_same(node_view(fresh), expected)
    assert redis_snapshot(client, trader) == before, "the read-only cache database wrote to Redis"
    db.flush()
    db.close()
    client.close()


@pytest.mark.parametrize("version", VERSIONS, ids=[v.label for v in VERSIONS])
async def test_a_redis_written_by_nautilus_trader_loads_in_tradecache_as_nautilus_loads_it(
    version: NodeVersion, redis_server: Any, nats_server: Any
) -> None:
    trader = _trader(version, "OWN")
    db = database(redis_server.url, trader, layout="seed")
    db.flush()
    client = redis.Redis.from_url(redis_server.url)
    loaded = await asyncio.to_thread(run_node, version, "own-db", trader, redis_server.url)
    assert loaded["integrity"] is True
    expected = node_view(loaded)
    assert expected["orders"] and expected["positions"] and expected["strategies"]
    assert not client.exists(Keys(trader).index(Collection.ORDERS))
    strategy_ids = sorted(expected["strategies"])

    # The Python API: its first load builds the missing indexes by SCAN.
    assert_same(api_view(db, client, strategy_ids), expected)
    assert client.exists(Keys(trader).indexed())

    # The daemon and the load service, on a copy of NautilusTrader's keys without our indexes.
    for key in client.scan_iter(match=f"trader-{trader}:tradecache:*"):
        client.delete(key)
    daemon = start_daemon(redis_server.url, nats_server.url, trader)
    try:
        assert_same(await service_replies(nats_server.url, trader, strategy_ids), expected)
        printed = subprocess.run(
            [sys.executable, "-m", "tradecache", "load", "orders", "--config", str(daemon.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert printed.returncode == 0, printed.stderr
        orders = json.loads(printed.stdout)
        assert {cid: {k: v for k, v in item.items() if k != "events"} for cid, item in orders.items()} == {
            cid: order["summary"] for cid, order in expected["orders"].items()
        }
        currency = subprocess.run(
            [sys.executable, "-m", "tradecache", "load", "currency", "USD", "--config", str(daemon.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert currency.returncode == 0, currency.stderr
        assert json.loads(currency.stdout)["precision"] == 2
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()[-3000:]
    db.flush()
    db.close()
    client.close()


def test_every_node_version_that_can_run_here_is_tested(announce: Any) -> None:
    tested = [v.version for v in VERSIONS]
    python312 = find_python312()
    announce(
        f"NautilusTrader nodes tested: {', '.join(tested)}"
        + ("" if python312 else " (no Python 3.12 here: 1.231.0 cannot be installed, so it is not tested)")
    )
    assert tested[0] == "1.221.0"
    assert ("1.231.0" in tested) == (python312 is not None or (SECOND_VENV / "bin" / "python").exists())
