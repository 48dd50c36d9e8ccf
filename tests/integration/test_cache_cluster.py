"""RedisCacheDatabase against a real 3-master Redis Cluster started on loopback by the tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.test_cache_database import loaded_state, write_through_api
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.model.identifiers import TraderId
from tradecache.serialization import MsgPackSerializer

pytestmark = pytest.mark.integration

PATHS = [p for p in scenario_paths() if p.stem in {
    "position_flip_long_to_short_netting",
    "bracket_entry_tp_filled_sl_canceled",
    "cash_account_multi_currency",
    "currencies_and_instruments_catalog",
}]  # fmt: skip


def cluster_db(cluster: Any, trader_id: str) -> RedisCacheDatabase:
    config = CacheDatabaseConfig.from_url(cluster.url, cluster=True)
    return RedisCacheDatabase(TraderId(trader_id), logging.getLogger("tests"), MsgPackSerializer(), config)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_scenario_round_trips_through_a_redis_cluster(redis_line_cluster: Any, path: Path) -> None:
    scenario = Scenario.load(path)
    db = cluster_db(redis_line_cluster, scenario.trader_id)
    db.flush()
    write_through_api(db, scenario)
    assert loaded_state(db) == scenario.expected
    db.flush()
    assert loaded_state(db)["orders"] == {}


def test_all_of_a_traders_keys_share_one_hash_slot(redis_line_cluster: Any) -> None:
    scenario = Scenario.load(PATHS[0])
    db = cluster_db(redis_line_cluster, scenario.trader_id)
    db.flush()
    write_through_api(db, scenario)
    client = redis.RedisCluster.from_url(redis_line_cluster.url)
    keys = list(client.scan_iter(match=f"{{trader-{scenario.trader_id}}}:*", target_nodes=redis.RedisCluster.ALL_NODES))
    assert len(keys) > 5
    slots = {client.keyslot(key) for key in keys}
    assert len(slots) == 1
    assert all(key.startswith(f"{{trader-{scenario.trader_id}}}:".encode()) for key in keys)
    db.flush()
