"""Redis ACL and TLS: the daemon works as a user confined to its trader's keys, over mutual TLS too.

The ACL user may run only the commands the daemon sends (`DAEMON_COMMANDS`, found by running it:
a command the daemon starts to use must be added here, and to the operators' ACL) on keys
`trader-<id>:*`. The daemon stores a vector scenario and a HEDGING flip under it exactly as
expected, and Redis' ACL LOG stays empty: it never even tried to touch another key or run another
command. With `RETENTION_COMMANDS` added, its retention sweeps remove what they should, likewise.
docs/DEPLOYMENT.md gives operators both lists. The same user, used directly, gets NOPERM on another
trader's keys, scripts included. A wrong password stops the start.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import nats
import nats.js.errors
import pytest
import redis
import redis.exceptions

from tests.integration.daemon_harness import daemon_config, running_daemon, wait_for
from tests.integration.secure_servers import (
    SecureRedisServer,
    assert_stored_as_expected,
    flush_trader,
    publish_scenario_as,
    refused_start,
    wait_for_checkpoint_of,
)
from tests.integration.test_ingest_processes import flip_feed
from tests.integration.test_retention import Feed as RetentionFeed
from tests.integration.tls import TlsFiles, make_tls_files
from tests.unit.factories import new_event_id, next_ts
from tests.vectors.scenarios import Scenario, replay_into_store, scenario_paths
from tradecache.cache.keys import Keys
from tradecache.cache.plan import APPLY_SCRIPT, READ_SCRIPT
from tradecache.config.sections import NatsConfig
from tradecache.dev.stack import NatsServer
from tradecache.model import Collection
from tradecache.model.enums import OrderType
from tradecache.model.events import SubmitOrderList
from tradecache.model.identifiers import OrderListId, StrategyId, TraderId
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

SCENARIO = "market_order_single_fill_fx"  # currencies, instrument, account, order, command, position
ACL_USER = "tradecache-sidecar"
RETENTION_USER = "tradecache-retention"
ACL_PASSWORD = "acl-password-for-tests"
OTHER_TRADER = "OTHER-1"

# What the daemon sends, and what its Lua scripts call (Redis checks those against the ACL too).
DAEMON_COMMANDS = (
    "ping",  # start-up check
    "client|setinfo",  # redis-py names itself on every new connection
    "get",  # the checkpoint, the lease holder
    "pttl",  # how long the lease holder has left (logged by a standby)
    "evalsha",
    "script|load",  # APPLY_SCRIPT and READ_SCRIPT (loaded once, then by sha)
    "zcard",  # key counts for tradecache_keys
    "zrangebylex",  # paged loads
    # inside APPLY_SCRIPT / READ_SCRIPT
    "type",
    "hget",  # a stored event's digest (duplicates and conflicts)
    "time",  # when an order or position closed (retention's closed sets)
    "llen",  # a position's fills when it went flat
    "rpush",
    "zadd",
    "zrem",
    "set",  # (also sent alone: the lease, SET NX PX)
    "del",
    "pexpire",  # the lease renewed
    "hset",
    "hdel",  # an opening half released by its PositionOpened (HEDGING flips)
    "lrange",  # (also sent alone: the lists of a collection, pipelined)
    "hgetall",
    # with retention of closed orders only: a purged order's tombstone, read with the stored
    # state and checked by APPLY_SCRIPT's E
    "zmscore",
)
# What retention's sweep adds (`config.retention`): its reads and its purge script.
RETENTION_COMMANDS = (
    "zrangebyscore",  # the closed sets, oldest first
    "exists",
    "hincrby",  # the fills trimmed from a position's head
    "lindex",
    "ltrim",
    "zremrangebyscore",  # tombstones past the retention age
    "zscore",
)


def acl_rules(server: SecureRedisServer, trader_id: str, commands: tuple[str, ...] = DAEMON_COMMANDS) -> list[str]:
    """Keys `trader-<id>:*`, no channels, and `commands` (those this server knows: 7.0 has no SETINFO)."""
    admin = server.admin()
    command: Any = admin.execute_command  # untyped in redis-py
    known = []
    try:
        for name in commands:
            try:
                command("ACL", "SETUSER", "probe", "reset", f"+{name}")
                known.append(name)
            except redis.exceptions.ResponseError as exc:
                if "Unknown command" not in str(exc):
                    raise
    finally:
        command("ACL", "DELUSER", "probe")
        admin.close()
    return [f"~trader-{trader_id}:*", "resetchannels", "-@all", *(f"+{name}" for name in known)]


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario.load(next(p for p in scenario_paths() if p.stem == SCENARIO))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="module")
def nats_plain() -> Iterator[NatsServer]:
    """A NATS of this module's own, so no other test's consumer or stream history meets these traders."""
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="module")
def acl_redis(scenario: Scenario) -> Iterator[SecureRedisServer]:
    with SecureRedisServer() as server:
        server.add_acl_user(ACL_USER, ACL_PASSWORD, acl_rules(server, scenario.trader_id))
        yield server


@pytest.fixture(scope="module")
def tls_redis(scenario: Scenario, tls_files: TlsFiles) -> Iterator[SecureRedisServer]:
    """TLS only (no plain port), client certificates required, and the same ACL user."""
    with SecureRedisServer(tls=tls_files, tls_auth_clients="yes") as server:
        server.add_acl_user(ACL_USER, ACL_PASSWORD, acl_rules(server, scenario.trader_id))
        yield server


def _strategy_messages(trader_id: str) -> list[tuple[str, bytes]]:
    """StrategyState for two strategies, then StrategyDeleted of the second: the hash merge and delete."""

    def state(strategy_id: str, fields: dict[str, bytes]) -> bytes:
        message = {
            "type": "StrategyState",
            "trader_id": trader_id,
            "strategy_id": strategy_id,
            "state": fields,
            "ts_event": "1700000000000000000",
        }
        packed: bytes = msgpack.packb(message, use_bin_type=True)
        return packed

    deleted = {
        "type": "StrategyDeleted",
        "trader_id": trader_id,
        "strategy_id": "S-002",
        "ts_event": "1700000000000000001",
    }
    return [
        ("strategy", state("S-001", {"counter": b"\x00\x01", "run": uuid.uuid4().bytes})),
        ("strategy", state("S-002", {"x": b"1"})),
        ("strategy", msgpack.packb(deleted, use_bin_type=True)),
    ]


async def _run_daemon_and_check(
    server: SecureRedisServer, nats_server: NatsServer, scenario: Scenario, redis_keys: dict[str, Any]
) -> None:
    """Run the daemon as the ACL user; publish the scenario and strategy messages; check Redis and the ACL log."""
    admin = server.admin()
    trader = scenario.trader_id
    flush_trader(admin, trader)
    await _purge_stream(nats_server.url)  # each run ingests its own messages only
    admin.acl_log_reset()
    config = daemon_config(
        server.url_for(ACL_USER, ACL_PASSWORD),
        nats_server.url,
        trader,
        redis=redis_keys,
        metrics={"key_count_interval": 0.05},
    )
    try:
        async with running_daemon(config):
            await publish_scenario_as(scenario, servers=[nats_server.url])
            last = await _publish_strategy_messages(nats_server.url, trader)
            await wait_for_checkpoint_of(admin, trader, last)
            await _check_loads(nats_server.url, scenario)
            assert_stored_as_expected(admin, scenario)
            # A HEDGING flip: its opening half held in the pending hash, then released (HDEL) by
            # the PositionOpened that names the new position.
            keys = Keys(trader)
            before, after = flip_feed(trader, "P-20261207-ACL-1", new_id="P-20261207-ACL-2")
            last = await _publish(nats_server.url, trader, [*before, *after])
            await wait_for_checkpoint_of(admin, trader, last)
            assert admin.llen(keys.entity(Collection.POSITIONS, "P-20261207-ACL-2")) == 1
            assert admin.hlen(keys.pending_openings()) == 0
        keys = Keys(trader)
        assert admin.hgetall(keys.entity(Collection.STRATEGIES, "S-001"))[b"counter"] == b"\x00\x01"
        assert not admin.exists(keys.entity(Collection.STRATEGIES, "S-002"))
        # Not one refused attempt but adoption's SCAN: the daemon stayed inside its keys and its
        # command list. Once, at start, it tries to index keys another writer left without
        # our indexes (cache/adoption.py); this user may not SCAN, so it goes on without (a warning).
        log = [entry for entry in admin.acl_log() if not _setinfo_on_an_old_server(admin, entry)]
        scans = [entry for entry in log if entry["object"] == "scan" and entry["reason"] == "command"]
        assert [entry["count"] for entry in scans] in ([], [1])
        refusals = [entry for entry in log if entry not in scans]
        assert refusals == [], "\n".join(f"{r['reason']} {r['object']} {r.get('username')}" for r in refusals)
        stray = [key for key in admin.scan_iter(count=1000) if not key.startswith(f"trader-{trader}:".encode())]
        assert stray == []
    finally:
        flush_trader(admin, trader)
        admin.close()


def _setinfo_on_an_old_server(admin: redis.Redis, entry: dict[str, Any]) -> bool:
    """redis-py sends CLIENT SETINFO on connecting; Redis before 7.2 has no such command, and 6.x logs it
    as an ACL refusal of `client` (7.0 refuses it as unknown first). Nothing the daemon needs."""
    version = str(admin.info("server")["redis_version"])
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) < (7, 2) and entry.get("object") == "client"


LOADED_COLLECTIONS = {
    "currencies": Collection.CURRENCIES,
    "instruments": Collection.INSTRUMENTS,
    "accounts": Collection.ACCOUNTS,
    "orders": Collection.ORDERS,
    "positions": Collection.POSITIONS,
    "submit_order_commands": Collection.SUBMIT_ORDER,
}


async def _check_loads(nats_url: str, scenario: Scenario) -> None:
    """The load service works under the same ACL: every collection, one strategy, and stats."""
    stored = replay_into_store(scenario).store
    subjects = Subjects("tradecache", scenario.trader_id)
    nc = await nats.connect(nats_url)
    try:

        async def load(name: str, body: dict[str, Any]) -> Any:
            reply = await nc.request(subjects.load(name), json.dumps(body).encode(), timeout=5)
            assert not (reply.headers or {}).get("Nats-Service-Error"), f"{name}: {reply.headers} {reply.data!r}"
            return json.loads(reply.data)

        for name, collection in LOADED_COLLECTIONS.items():
            wanted = {key for c, key in [*stored.lists, *stored.values] if c == collection}
            assert wanted, f"the scenario has no {name}: a useless check"
            assert set(await load(name, {})) == wanted, name
        strategy = await load("strategy", {"strategy_id": "S-001"})
        assert base64.b64decode(strategy["counter"]) == b"\x00\x01"
        stats = await load("stats", {})
        assert stats["keys"]["orders"] == len([c for c, _ in stored.lists if c == Collection.ORDERS])
    finally:
        await nc.close()


async def _purge_stream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):  # not made yet: the first run
            await nc.jetstream().purge_stream(NatsConfig().stream)
    finally:
        await nc.close()


async def _publish_strategy_messages(nats_url: str, trader_id: str) -> int:
    return await _publish(nats_url, trader_id, _strategy_messages(trader_id))


async def _publish(nats_url: str, trader_id: str, messages: list[tuple[str, bytes]]) -> int:
    """Publish (kind, payload) pairs in order; the stream sequence of the last."""
    subjects = Subjects("tradecache", trader_id)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = 0
        for name, payload in messages:
            last = (await js.publish(subjects.inbound_for_name(name), payload)).seq
        return last
    finally:
        await nc.close()


async def test_daemon_as_an_acl_user_stores_a_scenario_and_is_refused_nothing(
    acl_redis: SecureRedisServer, nats_plain: NatsServer, scenario: Scenario
) -> None:
    await _run_daemon_and_check(acl_redis, nats_plain, scenario, {})


async def test_daemon_over_mutual_tls_as_an_acl_user_stores_a_scenario(
    tls_redis: SecureRedisServer, tls_files: TlsFiles, nats_plain: NatsServer, scenario: Scenario
) -> None:
    # The server accepts only TLS clients with a certificate of its CA, so the daemon's working proves
    # it presented one.
    for refused in (tls_redis.plain_client(), tls_redis.as_user(ACL_USER, ACL_PASSWORD, client_cert=False)):
        with pytest.raises(redis.exceptions.ConnectionError):
            refused.ping()
        refused.close()
    tls_keys = {
        "ssl_ca_certs": str(tls_files.ca.cert),
        "ssl_certfile": str(tls_files.client.cert),
        "ssl_keyfile": str(tls_files.client.key),
    }
    await _run_daemon_and_check(tls_redis, nats_plain, scenario, tls_keys)


def test_the_acl_user_cannot_reach_another_traders_keys(acl_redis: SecureRedisServer, scenario: Scenario) -> None:
    admin = acl_redis.admin()
    own, other = Keys(scenario.trader_id), Keys(OTHER_TRADER)
    other_order = other.entity(Collection.ORDERS, "O-1")
    admin.rpush(other_order, b"someone else's event")
    admin.set(other.checkpoint(), b"42")
    user = acl_redis.as_user(ACL_USER, ACL_PASSWORD)
    try:
        # Control: the same commands work on its own keys, so the refusals below are about the keys.
        assert user.get(own.checkpoint()) is None
        assert user.lrange(own.entity(Collection.ORDERS, "O-1"), 0, -1) == []
        look_alike = f"trader-{scenario.trader_id}0:orders:O-1"  # trader-FX-1180 is not trader-FX-118
        for key in (other_order, other.checkpoint(), look_alike, "trader-OTHER-1", "unrelated"):
            for attempt in (
                lambda key=key: user.get(key),
                lambda key=key: user.set(key, b"x"),
                lambda key=key: user.lrange(key, 0, -1),
                lambda key=key: user.rpush(key, b"x"),
                lambda key=key: user.delete(key),
                lambda key=key: user.type(key),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    attempt()
        # Scripts do not open a way around it: each key a script touches is checked.
        for script, args in ((READ_SCRIPT, ["LRANGE"]), (APPLY_SCRIPT, [])):
            with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)noperm|no permissions"):
                user.register_script(script)(keys=[other_order], args=args)
        # Nor do the commands that see every key.
        for command in (("KEYS", "*"), ("SCAN", "0"), ("FLUSHDB",), ("FLUSHALL",), ("CONFIG", "GET", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*command)  # type: ignore[no-untyped-call]
        assert admin.lrange(other_order, 0, -1) == [b"someone else's event"]
        assert admin.get(other.checkpoint()) == b"42"
    finally:
        admin.delete(other_order, other.checkpoint())
        user.close()
        admin.close()


def test_a_wrong_redis_password_stops_the_start_with_exit_1_and_a_clear_message(
    acl_redis: SecureRedisServer, nats_plain: NatsServer
) -> None:
    config = {
        "trader_id": "SECURITY-002",
        "redis": {"url": acl_redis.url_for(ACL_USER, "not-the-password"), "socket_connect_timeout": 2.0},
        "nats": {"servers": [nats_plain.url]},
        "logging": {"level": "INFO", "format": "json"},
    }
    refused = refused_start(config)
    assert refused.exit_code == 1, refused.log
    assert refused.seconds < 15, f"took {refused.seconds:.1f} s to give up:\n{refused.log}"
    assert "Redis refused the credentials" in refused.log, refused.log
    assert "invalid username-password pair" in refused.log, refused.log
    assert "Traceback" not in refused.log, refused.log


def test_the_acl_in_the_deployment_guide_is_the_one_tested_here() -> None:
    """docs/DEPLOYMENT.md gives operators the rules this module runs the daemon under, with and
    without retention."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    start = text.index("ACL SETUSER tradecache-sidecar")
    rule = text[start : text.index("```", start)].split()
    assert "~trader-<TRADER_ID>:*" in rule and "resetchannels" in rule and "-@all" in rule
    assert sorted(word[1:] for word in rule if word.startswith("+")) == sorted(DAEMON_COMMANDS)
    opening = text.index("```", text.index("With retention", start)) + 3  # the block after it
    extra = text[opening : text.index("```", opening)].split()
    assert sorted(word[1:] for word in extra) == sorted(RETENTION_COMMANDS)


async def _publish_closed_order_list(nats_url: str, trader: str) -> int:
    """An order list of two orders, both rejected; the stream sequence of the last message."""
    nc = await nats.connect(nats_url)
    try:
        feed = RetentionFeed(nc.jetstream(), trader)
        lists = [feed.orders("L-1"), feed.orders("L-2")]
        listed = tuple(dataclasses.replace(events.initialized(OrderType.MARKET), order_list_id=OrderListId("OL-1"))
                       for events in lists)  # fmt: skip
        await feed.send("command", SubmitOrderList(
            trader_id=TraderId(trader), strategy_id=StrategyId("Tester-001"), order_list_id=OrderListId("OL-1"),
            orders=listed, command_id=new_event_id(), ts_init=next_ts(), client_id=None, position_id=None,
        ))  # fmt: skip
        for init, events in zip(listed, lists, strict=True):
            await feed.send("order", init, events.submitted(), events.rejected())
        return feed.last
    finally:
        await nc.close()


def _removed(daemon: Any, kind: str) -> float:
    return daemon.metrics.registry.get_sample_value("tradecache_retention_removed_total", {"kind": kind}) or 0.0


async def test_retention_as_an_acl_user_removes_what_it_should_and_is_refused_nothing(
    acl_redis: SecureRedisServer, nats_plain: NatsServer, scenario: Scenario
) -> None:
    """The sweep's commands (`RETENTION_COMMANDS`, which docs/DEPLOYMENT.md lists) on top of the daemon's."""
    server, trader = acl_redis, scenario.trader_id
    server.add_acl_user(RETENTION_USER, ACL_PASSWORD,
                        acl_rules(server, trader, DAEMON_COMMANDS + RETENTION_COMMANDS))  # fmt: skip
    admin = server.admin()
    flush_trader(admin, trader)
    await _purge_stream(nats_plain.url)
    admin.acl_log_reset()
    retention = {"closed_orders_after": 1, "closed_positions_after": 1, "account_states": 1, "sweep_interval": 0.25}
    config = daemon_config(server.url_for(RETENTION_USER, ACL_PASSWORD), nats_plain.url, trader, retention=retention)
    keys = Keys(trader)
    try:
        async with running_daemon(config) as daemon:
            await publish_scenario_as(scenario, servers=[nats_plain.url])
            before, after = flip_feed(trader)  # NETTING: one position, flat once, then open again
            await _publish(nats_plain.url, trader, [*before, *after])
            last = await _publish_closed_order_list(nats_plain.url, trader)
            await wait_for_checkpoint_of(admin, trader, last)
            # The filled orders and older account states go; the position's closed cycle is
            # trimmed from the head of its list (LTRIM, and HINCRBY of the fills trimmed); the
            # order list goes once none of its orders is left (EXISTS of each).
            netting = keys.entity(Collection.POSITIONS, "EUR/USD.SIM-Tester-001")
            order_list = keys.entity(Collection.SUBMIT_ORDER_LIST, "OL-1")
            await wait_for(lambda: _removed(daemon, "orders") >= 5 and admin.llen(netting) == 1
                           and not admin.exists(order_list), timeout=20)  # fmt: skip
            assert not admin.exists(keys.entity(Collection.ORDERS, "O-1"))
        log = [entry for entry in admin.acl_log() if not _setinfo_on_an_old_server(admin, entry)]
        refusals = [entry for entry in log if not (entry["object"] == "scan" and entry["reason"] == "command")]
        assert refusals == [], "\n".join(f"{r['reason']} {r['object']} {r.get('username')}" for r in refusals)
    finally:
        flush_trader(admin, trader)
        admin.close()
