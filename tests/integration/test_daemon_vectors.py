"""Every vector scenario published on NATS, consumed by the daemon, and found in Redis as expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.daemon_harness import (
    daemon_config,
    database,
    publish_scenario,
    running_daemon,
    wait_for_checkpoint,
)
from tests.integration.test_cache_database import loaded_state
from tests.vectors.scenarios import Scenario, replay_into_store, scenario_paths
from tradecache.cache.keys import Keys
from tradecache.cache.plan import currency_fields
from tradecache.model import Collection
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer

pytestmark = pytest.mark.integration

PATHS = scenario_paths()


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
async def test_scenario_published_on_nats_lands_in_redis_as_expected(
    path: Path, redis_server: Any, nats_server: Any
) -> None:
    scenario = Scenario.load(path)
    db = database(redis_server.url, scenario.trader_id)
    db.flush()
    config = daemon_config(redis_server.url, nats_server.url, scenario.trader_id)
    async with running_daemon(config):
        last = await publish_scenario(nats_server.url, scenario)
        await wait_for_checkpoint(redis_server.url, scenario.trader_id, last)
    # The raw lists are exactly what the pure core says the seed layout holds.
    expected_store = replay_into_store(scenario).store
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(scenario.trader_id)
    for (collection, key), payloads in expected_store.lists.items():
        assert client.lrange(keys.entity(collection, key), 0, -1) == payloads, f"{collection}:{key}"
    for (collection, key), payload in expected_store.values.items():
        if collection == Collection.CURRENCIES:
            currency = MsgPackSerializer().deserialize(payload)
            assert isinstance(currency, Currency)
            stored = {k.decode(): v.decode() for k, v in client.hgetall(keys.entity(collection, key)).items()}
            assert stored == currency_fields(currency)
        else:
            assert client.get(keys.entity(collection, key)) == payload, f"{collection}:{key}"
    # And the seed API loads what NautilusTrader computed.
    assert loaded_state(db) == scenario.expected
    db.flush()
