"""Every vector scenario published, then every load endpoint answers what NautilusTrader computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
import redis

from tests.integration.daemon_harness import (
    daemon_config,
    database,
    publish_scenario,
    running_daemon,
    wait_for_checkpoint,
)
from tests.integration.load_helpers import ask, without_events
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.cache.keys import Keys
from tradecache.daemon.subjects import Subjects
from tradecache.model import Collection

pytestmark = pytest.mark.integration

PATHS = scenario_paths()
# Snapshot collections: endpoint (plural, singular, id field) and the stored list they replay.
SNAPSHOTS = (
    ("orders", "order", "client_order_id", Collection.ORDERS),
    ("positions", "position", "position_id", Collection.POSITIONS),
    ("accounts", "account", "account_id", Collection.ACCOUNTS),
)


def command_fields(commands: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {key: {name: command.get(name) for name in fields} for key, command in commands.items()}


@pytest.mark.parametrize("as_msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
async def test_every_endpoint_answers_the_expected_state(
    path: Path, as_msgpack: bool, redis_server: Any, nats_server: Any
) -> None:
    scenario = Scenario.load(path)
    database(redis_server.url, scenario.trader_id).flush()
    subjects = Subjects("tradecache", scenario.trader_id)
    expected = scenario.expected
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(scenario.trader_id)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, scenario.trader_id)):
        last = await publish_scenario(nats_server.url, scenario)
        await wait_for_checkpoint(redis_server.url, scenario.trader_id, last)
        nc = await nats.connect(nats_server.url)
        try:

            async def load(name: str, body: Any = None) -> Any:
                reply = await ask(nc, subjects.load(name), body, as_msgpack=as_msgpack)
                assert reply.error_code is None, reply.value
                return reply.value

            for plural, single, id_field, collection in SNAPSHOTS:
                items = await load(plural)
                assert without_events(items) == expected[plural], plural
                for entity_id, item in items.items():
                    assert await load(single, {id_field: entity_id}) == item
                    if as_msgpack:  # bytes stay bytes: the events are the stored payloads' maps
                        stored = client.lrange(keys.entity(collection, entity_id), 0, -1)
                        assert item["events"] == [msgpack.unpackb(p, raw=False) for p in stored]
                assert await load(single, {id_field: "NO-SUCH-ID"}) is None

            instruments = await load("instruments")
            assert sorted(instruments) == expected["instruments"]
            for instrument_id, instrument in instruments.items():
                assert instrument["id"] == instrument_id
                assert await load("instrument", {"instrument_id": instrument_id}) == instrument
            currencies = await load("currencies")
            assert sorted(currencies) == expected["currencies"]
            for code, currency in currencies.items():
                assert currency["code"] == code and currency["type"] == "Currency"
                assert await load("currency", {"code": code}) == currency

            commands = await load("submit_order_commands")
            wanted = ("command_id", "strategy_id", "position_id")
            assert command_fields(commands, wanted) == expected["submit_order_commands"]
            for key, command in commands.items():
                assert await load("submit_order_command", {"client_order_id": key}) == command
            lists = await load("submit_order_list_commands")
            assert {
                key: {"command_id": c["command_id"], "client_order_ids": [o["client_order_id"] for o in c["orders"]]}
                for key, c in lists.items()
            } == expected["submit_order_list_commands"]
            for key, command in lists.items():
                assert await load("submit_order_list_command", {"order_list_id": key}) == command

            stats = await load("stats")
            assert stats["last_applied_sequence"] >= last
            assert stats["keys"]["orders"] == len(expected["orders"])
        finally:
            await nc.close()
    client.close()
