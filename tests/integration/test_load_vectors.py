"""Every vector scenario published, then every load endpoint answers what NautilusTrader computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nats
import pytest
import redis

from tests.integration.daemon_harness import (
    daemon_config,
    database,
    publish_scenario,
    running_daemon,
    wait_for,
    wait_for_checkpoint,
)
from tests.integration.load_helpers import (
    ask,
    check_command_endpoints,
    check_reference_endpoints,
    check_snapshot_endpoints,
)
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.cache.keys import Keys
from tradecache.service import endpoints
from tradecache.service.build_worker import MIN_CPUS, usable_cpus
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

PATHS = scenario_paths()


@pytest.mark.parametrize("as_msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
async def test_every_endpoint_answers_the_expected_state(
    path: Path, as_msgpack: bool, redis_server: Any, nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every page of orders, positions and accounts shared with the build worker (a chunk of one
    # entity too), so that what NautilusTrader computed is also what the worker's half answers.
    monkeypatch.setattr(endpoints, "MIN_SHARED", 1)
    scenario = Scenario.load(path)
    database(redis_server.url, scenario.trader_id).flush()
    subjects = Subjects("tradecache", scenario.trader_id)
    expected = scenario.expected
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(scenario.trader_id)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, scenario.trader_id)) as daemon:
        last = await publish_scenario(nats_server.url, scenario)
        await wait_for_checkpoint(redis_server.url, scenario.trader_id, last)
        worker = daemon.build_worker
        assert (worker is None) == (usable_cpus() < MIN_CPUS)  # one CPU: the loop builds alone
        if worker is not None:
            await wait_for(lambda: worker.available, timeout=30)
        nc = await nats.connect(nats_server.url)
        try:

            async def load(name: str, body: Any = None) -> Any:
                reply = await ask(nc, subjects.load(name), body, as_msgpack=as_msgpack)
                assert reply.error_code is None, reply.value
                return reply.value

            await check_snapshot_endpoints(
                load, expected, lambda collection, key: client.lrange(keys.entity(collection, key), 0, -1), as_msgpack
            )
            instruments, currencies = await check_reference_endpoints(load, expected)
            assert all(instrument["id"] == instrument_id for instrument_id, instrument in instruments.items())
            assert all(c["code"] == code and c["type"] == "Currency" for code, c in currencies.items())
            await check_command_endpoints(load, expected)

            rebuilt = any(expected.get(name) for name in ("orders", "positions", "accounts"))
            if worker is not None:
                assert (worker.jobs > 0) == rebuilt and worker.failures == 0
            stats = await load("stats")
            assert stats["last_applied_sequence"] >= last
            assert stats["keys"]["orders"] == len(expected["orders"])
        finally:
            await nc.close()
    client.close()
