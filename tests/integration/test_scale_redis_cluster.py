"""Every vector scenario published on NATS and consumed by a daemon writing to a 3-master Redis Cluster.

The daemon runs with `redis: {url: <one node>, cluster: true}`. Each scenario must then be found in the
cluster exactly as the pure core lays it out (hash-tagged keys `{trader-<id>}:...`, all in one slot, none
without the tag), load back through `RedisCacheDatabase(CacheDatabaseConfig(cluster=True))` as the
scenario's expected state, and be answered the same by every load endpoint of the daemon.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nats
import pytest
import redis
import redis.asyncio

from tests.cluster import RedisCluster
from tests.integration.daemon_harness import daemon_config, publish_scenario, running_daemon, wait_for
from tests.integration.load_helpers import (
    ask,
    check_command_endpoints,
    check_reference_endpoints,
    check_snapshot_endpoints,
)
from tests.integration.test_cache_database import loaded_state
from tests.vectors.scenarios import Scenario, replay_into_store, scenario_paths
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.cache.keys import Keys
from tradecache.cache.plan import currency_fields
from tradecache.model import Collection
from tradecache.model.identifiers import TraderId
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

PATHS = scenario_paths()
# Own subjects and streams, so this module never shares a consumer's history with other tests.
PREFIX = "scalerc"
NATS_SECTION = {"subject_prefix": PREFIX, "stream": "SCALE_RC", "dead_letter_stream": "SCALE_RC_DEAD"}


def text(value: Any) -> str:
    """A Redis reply item as text (redis-py types them bytes | str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def cluster_database(cluster: RedisCluster, trader_id: str) -> RedisCacheDatabase:
    config = CacheDatabaseConfig(host="127.0.0.1", port=cluster.nodes[0].port, cluster=True)
    return RedisCacheDatabase(TraderId(trader_id), logging.getLogger("tests"), MsgPackSerializer(), config)


def checkpoint(client: redis.RedisCluster, keys: Keys) -> int:
    raw = client.get(keys.checkpoint())
    return 0 if raw is None else int(raw)


def check_raw_layout(client: redis.RedisCluster, scenario: Scenario, keys: Keys) -> None:
    """Lists, strings and hashes hold exactly what the pure core writes for the scenario."""
    expected_store = replay_into_store(scenario).store
    for (collection, key), payloads in expected_store.lists.items():
        assert client.lrange(keys.entity(collection, key), 0, -1) == payloads, f"{collection}:{key}"
    for (collection, key), payload in expected_store.values.items():
        if collection == Collection.CURRENCIES:
            currency = MsgPackSerializer().deserialize(payload)
            assert isinstance(currency, Currency)
            stored = {text(k): text(v) for k, v in client.hgetall(keys.entity(collection, key)).items()}
            assert stored == currency_fields(currency)
        else:
            assert client.get(keys.entity(collection, key)) == payload, f"{collection}:{key}"
    for (collection, key), fields in expected_store.hashes.items():
        stored_hash = {text(k): v for k, v in client.hgetall(keys.entity(collection, key)).items()}
        assert stored_hash == fields, f"{collection}:{key}"


def check_key_placement(client: Any, trader_id: str) -> None:
    """Every key of the trader carries the hash tag, so all share one slot; none is left untagged."""
    nodes = redis.RedisCluster.ALL_NODES
    tagged = list(client.scan_iter(match=f"{{trader-{trader_id}}}:*", target_nodes=nodes))
    untagged = list(client.scan_iter(match=f"trader-{trader_id}:*", target_nodes=nodes))
    assert untagged == []
    assert any(key.endswith(b":tradecache:checkpoint") for key in tagged)
    assert len({client.keyslot(key) for key in tagged}) == 1


async def pages(nc: Any, subject: str, as_msgpack: bool) -> dict[str, Any]:
    """A collection read one item per page, following `Tradecache-Cursor` to the end."""
    items: dict[str, Any] = {}
    body: dict[str, Any] = {"limit": 1}
    while True:
        reply = await ask(nc, subject, body, as_msgpack=as_msgpack)
        assert reply.error_code is None, reply.value
        assert len(reply.value) <= 1
        items.update(reply.value)
        if reply.cursor is None:
            return items
        body = {"limit": 1, "cursor": reply.cursor}


async def check_load_endpoints(nats_url: str, scenario: Scenario, client: redis.RedisCluster, keys: Keys) -> None:
    """Every load endpoint (JSON and msgpack) answers the scenario's expected state."""
    subjects = Subjects(PREFIX, scenario.trader_id)
    expected = scenario.expected
    nc = await nats.connect(nats_url)
    try:
        for as_msgpack in (False, True):

            async def load(name: str, body: Any = None, *, as_msgpack: bool = as_msgpack) -> Any:
                reply = await ask(nc, subjects.load(name), body, as_msgpack=as_msgpack)
                assert reply.error_code is None, reply.value
                return reply.value

            found = await check_snapshot_endpoints(
                load, expected, lambda collection, key: client.lrange(keys.entity(collection, key), 0, -1), as_msgpack
            )
            for plural, items in found.items():
                assert await pages(nc, subjects.load(plural), as_msgpack) == items
            await check_reference_endpoints(load, expected)
            await check_command_endpoints(load, expected)

            stats = await load("stats")
            assert stats["last_applied_sequence"] == checkpoint(client, keys)
            assert stats["keys"]["orders"] == len(expected["orders"])
            assert stats["keys"]["positions"] == len(expected["positions"])
            assert stats["keys"]["accounts"] == len(expected["accounts"])
    finally:
        await nc.close()


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
async def test_scenario_lands_in_a_redis_cluster_and_loads_back(
    path: Path, redis_line_cluster: RedisCluster, nats_server: Any
) -> None:
    scenario = Scenario.load(path)
    db = cluster_database(redis_line_cluster, scenario.trader_id)
    db.flush()
    keys = Keys(scenario.trader_id, hash_tag=True)
    client = redis.RedisCluster.from_url(redis_line_cluster.url)
    config = daemon_config(
        redis_line_cluster.url, nats_server.url, scenario.trader_id, redis={"cluster": True}, nats=NATS_SECTION
    )
    assert config.redis.cluster
    try:
        async with running_daemon(config) as daemon:
            last = await publish_scenario(nats_server.url, scenario, prefix=PREFIX)
            await wait_for(lambda: checkpoint(client, keys) >= last, timeout=15)
            assert daemon.is_ready()
            assert daemon.store is not None and isinstance(daemon.store.client, redis.asyncio.RedisCluster)
            check_raw_layout(client, scenario, keys)
            check_key_placement(client, scenario.trader_id)
            assert loaded_state(db) == scenario.expected
            await check_load_endpoints(nats_server.url, scenario, client, keys)
        db.flush()
        assert list(client.scan_iter(match=keys.scan_pattern(), target_nodes=redis.RedisCluster.ALL_NODES)) == []
    finally:
        client.close()
        db.close()


def test_the_scenarios_spread_over_every_master(redis_line_cluster: RedisCluster) -> None:
    """The traders' slots fall on more than one master, so the run above exercised cross-node routing."""
    client: Any = redis.RedisCluster.from_url(redis_line_cluster.url)
    try:
        owners = {
            client.get_node_from_key(Keys(Scenario.load(path).trader_id, hash_tag=True).checkpoint()).port
            for path in PATHS
        }
    finally:
        client.close()
    assert owners == {node.port for node in redis_line_cluster.nodes}
