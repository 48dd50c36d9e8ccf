"""A 3-node NATS cluster with R3 streams: one node is killed -9 mid-run and nothing is lost or doubled.

One daemon per trader (every vector scenario's trader, plus a generated feed of a few thousand
messages for one more) runs against the cluster with all three servers in `nats.servers` and
`nats.stream_replicas: 3`. The messages of all traders are interleaved and published through the
node the generated feed's daemon is connected to; halfway through, that node gets SIGKILL. The
publisher carries on through the surviving nodes (retrying with the same `Nats-Msg-Id`), the
daemons reconnect, and at the end every trader's Redis content equals what a clean run writes
(the pure core's replay: exact list contents and lengths), the streams hold each message once,
and every daemon is up and ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import pytest
import redis

from tests.backends import Announce
from tests.integration.daemon_harness import daemon_config, database, wait_for
from tests.integration.test_cache_database import loaded_state
from tests.nats_cluster import ClusterNode, NatsCluster
from tests.unit import factories
from tests.vectors.scenarios import SCENARIO_KINDS, Scenario, replay_into_store, scenario_paths, state_from_store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import currency_fields
from tradecache.daemon.app import Daemon
from tradecache.dev.stack import HOST
from tradecache.model import Collection
from tradecache.model.enums import AccountType, OrderSide, OrderType
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

PREFIX = "scalenats"
STREAM = "SCALE_NATS"
DEAD_STREAM = "SCALE_NATS_DEAD"
NATS_SECTION = {"subject_prefix": PREFIX, "stream": STREAM, "dead_letter_stream": DEAD_STREAM, "stream_replicas": 3}
GENERATED_TRADER = "GEN-777"
GENERATED_ORDERS = 700  # 4 order events each, an account state every 10th: ~2,900 messages
PUBLISH_DEADLINE = 30.0  # seconds one message may take to be stored, retries included
SERIALIZER = MsgPackSerializer(timestamps_as_str=True)
# 34 daemons share this test's event loop: idle pulls expiring every 0.1 s (the harness default) would
# cost more than the publishing; a full batch still triggers the next pull at once.
FETCH_EXPIRES = 1.0


def text(value: Any) -> str:
    """A Redis reply item as text (redis-py types them bytes | str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Outgoing:
    trader_id: str
    subject: str
    payload: bytes
    msg_id: str


@pytest.fixture
def nats_cluster(announce: Announce) -> Iterator[NatsCluster]:
    with NatsCluster(3, name="tradecache-scale") as cluster:
        ports = ", ".join(str(node.port) for node in cluster.nodes)
        announce(f"NATS cluster of 3 JetStream nodes, local {cluster.binary} on ports {ports}")
        yield cluster


def generated_scenario(trader_id: str, orders: int) -> Scenario:
    """Orders of one instrument (initialized, submitted, accepted, filled into one NETTING position whose
    fills go +100, +100, -250 (a flip), +50 (flat), ...) and account states; expected = a clean replay."""
    instrument = factories.currency_pair()
    messages: list[tuple[str, str, bytes]] = [("instrument", "CurrencyPair", SERIALIZER.serialize(instrument))]
    pattern = ((OrderSide.BUY, "100"), (OrderSide.BUY, "100"), (OrderSide.SELL, "250"), (OrderSide.BUY, "50"))
    for n in range(orders):
        side, quantity = pattern[n % len(pattern)]
        events = factories.OrderEvents(f"O-GEN-{n}", trader_id=trader_id, instrument_id=instrument.id.value)
        venue = f"V-GEN-{n}"
        order_events = [
            events.initialized(OrderType.MARKET, side, quantity),
            events.submitted(),
            events.accepted(venue),
            events.filled(
                quantity,
                f"1.1{n % 1000:04d}",
                side=side,
                order_type=OrderType.MARKET,
                position_id=f"{instrument.id.value}-GEN",
                venue_order_id=venue,
            ),
        ]
        messages.extend(("order_event", type(event).__name__, SERIALIZER.serialize(event)) for event in order_events)
        if n % 10 == 9:
            total = str(1_000_000 - n)
            state = factories.account_state(AccountType.MARGIN, [("USD", f"{total}.00", "0.00")], base_currency="USD")
            messages.append(("account_state", "AccountState", SERIALIZER.serialize(state)))
    scenario = Scenario(f"generated {trader_id}", trader_id, messages, {}, None)
    scenario.expected = state_from_store(replay_into_store(scenario).store)
    return scenario


def interleaved(scenarios: Sequence[Scenario]) -> list[Outgoing]:
    """All messages, each trader's in its order, spread evenly over the run so that every trader
    has messages both before and after the kill. The message id is fixed per message (not per
    payload), so a retry is dropped by JetStream while a scenario's deliberate duplicate is kept."""
    placed: list[tuple[float, int, Outgoing]] = []
    for rank, scenario in enumerate(scenarios):
        subjects = Subjects(PREFIX, scenario.trader_id)
        count = len(scenario.messages)
        for index, (kind, _type, payload) in enumerate(scenario.messages):
            subject = subjects.inbound_for(SCENARIO_KINDS[kind])
            outgoing = Outgoing(scenario.trader_id, subject, payload, f"{scenario.trader_id}-{index}")
            placed.append(((index + 0.5) / count, rank, outgoing))
    placed.sort(key=lambda item: (item[0], item[1]))
    return [outgoing for _, _, outgoing in placed]


async def publish(js: Any, message: Outgoing) -> tuple[int, int]:
    """Publish until JetStream acknowledges; returns (stream sequence, retries needed)."""
    deadline = time.monotonic() + PUBLISH_DEADLINE
    retries = 0
    while True:
        try:
            ack = await js.publish(
                message.subject, message.payload, timeout=1.0, headers={"Nats-Msg-Id": message.msg_id}
            )
            return int(ack.seq), retries
        except (nats.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            retries += 1
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_daemons(configs: Sequence[Any]) -> AsyncIterator[dict[str, tuple[Daemon, asyncio.Task[int]]]]:
    """One daemon per config; the first starts alone (it creates the R3 streams), the rest together."""
    daemons: dict[str, tuple[Daemon, asyncio.Task[int]]] = {}

    def start(config: Any) -> None:
        daemon = Daemon(config)
        daemons[config.trader_id] = (daemon, asyncio.create_task(daemon.run()))

    def all_ready() -> bool:
        for trader_id, (daemon, task) in daemons.items():
            if task.done():
                raise RuntimeError(f"daemon of {trader_id} exited early with {task.result()}")
            if not daemon.is_ready():
                return False
        return True

    try:
        start(configs[0])
        await wait_for(all_ready, timeout=20)
        for config in configs[1:]:
            start(config)
        await wait_for(all_ready, timeout=30)
        yield daemons
    finally:
        for daemon, _task in daemons.values():
            daemon.request_stop()
        tasks = [task for _, task in daemons.values()]
        codes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        assert codes == [0] * len(daemons), dict(zip(daemons, codes, strict=True))


def check_redis(client: redis.Redis, scenario: Scenario) -> None:
    """The trader's keys hold exactly what a clean run writes, and load back as expected."""
    expected_store = replay_into_store(scenario).store
    keys = Keys(scenario.trader_id)
    for (collection, key), payloads in expected_store.lists.items():
        stored = client.lrange(keys.entity(collection, key), 0, -1)
        assert len(stored) == len(payloads), f"{scenario.trader_id} {collection}:{key}"
        assert stored == payloads, f"{scenario.trader_id} {collection}:{key}"
    for (collection, key), payload in expected_store.values.items():
        if collection == Collection.CURRENCIES:
            currency = SERIALIZER.deserialize(payload)
            assert isinstance(currency, Currency)
            stored_fields = {text(k): text(v) for k, v in client.hgetall(keys.entity(collection, key)).items()}
            assert stored_fields == currency_fields(currency)
        else:
            assert client.get(keys.entity(collection, key)) == payload, f"{scenario.trader_id} {collection}:{key}"
    for collection in (Collection.ORDERS, Collection.POSITIONS, Collection.ACCOUNTS):
        indexed = sorted(text(item) for item in client.zrange(keys.index(collection), 0, -1))
        assert indexed == expected_store.keys(collection), f"{scenario.trader_id} {collection}"
    db = database_for(scenario.trader_id, client)
    try:
        assert loaded_state(db) == scenario.expected, scenario.trader_id
    finally:
        db.close()


def flush(redis_url: str, trader_id: str) -> None:
    db = database(redis_url, trader_id)
    try:
        db.flush()
    finally:
        db.close()


def database_for(trader_id: str, client: redis.Redis) -> Any:
    kwargs = client.connection_pool.connection_kwargs
    return database(f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}", trader_id)


def readyz(daemon: Daemon) -> int:
    connection = http.client.HTTPConnection(HOST, daemon.health.port, timeout=2)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status
    finally:
        connection.close()


async def test_killing_a_nats_node_mid_run_loses_and_doubles_nothing(
    nats_cluster: NatsCluster, redis_server: Any, announce: Announce
) -> None:
    scenarios = [generated_scenario(GENERATED_TRADER, GENERATED_ORDERS)]
    scenarios += [Scenario.load(path) for path in scenario_paths()]
    assert len({s.trader_id for s in scenarios}) == len(scenarios)
    feed = interleaved(scenarios)
    assert len(feed) > 3000
    for scenario in scenarios:
        flush(redis_server.url, scenario.trader_id)
    configs = [
        daemon_config(
            redis_server.url,
            nats_cluster.urls[0],
            s.trader_id,
            nats={**NATS_SECTION, "servers": nats_cluster.urls},
            ingest={"fetch_expires": FETCH_EXPIRES},
        )
        for s in scenarios
    ]
    assert all(c.nats.stream_replicas == 3 and len(c.nats.servers) == 3 for c in configs)
    client = redis.Redis.from_url(redis_server.url)
    started = time.monotonic()
    async with running_daemons(configs) as daemons:
        watched, _ = daemons[GENERATED_TRADER]
        target: ClusterNode = nats_cluster.node_for(watched.nc.connected_url)
        survivors = [node for node in nats_cluster.nodes if node is not target]
        on_target = [t for t, (d, _) in daemons.items() if nats_cluster.node_for(d.nc.connected_url) is target]

        # The daemon made both streams R3, and its consumer is replicated too.
        admin = await nats.connect(servers=[node.url for node in survivors])
        try:
            js = admin.jetstream()
            for name in (STREAM, DEAD_STREAM):
                info = await js.stream_info(name)
                assert info.config.num_replicas == 3, name
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2, name
            consumer = await js.consumer_info(STREAM, f"tradecache-{GENERATED_TRADER}")
            assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2
            inbound_cluster = (await js.stream_info(STREAM)).cluster
            assert inbound_cluster is not None
            leaders = {"stream": inbound_cluster.leader, "consumer": consumer.cluster.leader}
            led_by_target = [what for what, leader in leaders.items() if leader == target.server_name]

            # Publish through the node about to die (it is first, and the list is not shuffled).
            publisher = await nats.connect(servers=[target.url, *(n.url for n in survivors)], dont_randomize=True)
            assert nats_cluster.node_for(publisher.connected_url) is target
            last: dict[str, int] = {}
            retries = 0
            kill_at = len(feed) // 2
            try:
                pjs = publisher.jetstream()
                for index, message in enumerate(feed):
                    if index == kill_at:
                        # Mid-run: the daemons have applied part of the feed and are pulling the rest.
                        assert int(client.get(Keys(GENERATED_TRADER).checkpoint()) or 0) > 0
                        nats_cluster.kill(target)
                        killed_at = time.monotonic()
                    sequence, tries = await publish(pjs, message)
                    retries += tries
                    last[message.trader_id] = max(last.get(message.trader_id, 0), sequence)
                assert nats_cluster.node_for(publisher.connected_url) in survivors
            finally:
                await publisher.close()
            published_at = time.monotonic()

            # Every daemon catches up to the last message of its trader.
            for trader_id, sequence in last.items():
                checkpoint = Keys(trader_id).checkpoint()
                await wait_for(lambda key=checkpoint, seq=sequence: int(client.get(key) or 0) >= seq, timeout=45)
            caught_up_at = time.monotonic()

            # The streams hold every message once, and every dead letter once.
            inbound = await js.stream_info(STREAM)
            assert inbound.state.messages == len(feed)
            rejected = sum(len(replay_into_store(s).rejected) for s in scenarios)
            assert rejected > 0
            await wait_for(lambda: dead_count(js, rejected), timeout=10)
        finally:
            await admin.close()

        # The daemons stayed up, moved to a surviving node, and are ready again.
        for trader_id, (daemon, task) in daemons.items():
            assert not task.done(), trader_id
            await wait_for(daemon.is_ready, timeout=15)
            assert nats_cluster.node_for(daemon.nc.connected_url) in survivors, trader_id
        assert watched.nc.stats["reconnects"] >= 1
        assert await asyncio.to_thread(readyz, watched) == 200  # the health server runs on this loop
        assert int(client.get(Keys(GENERATED_TRADER).checkpoint()) or 0) == last[GENERATED_TRADER]

    for scenario in scenarios:
        check_redis(client, scenario)
    client.close()
    announce(
        f"NATS cluster kill: {len(feed)} messages, {len(daemons)} daemons ({len(on_target)} on the killed node), "
        f"killed node led: {', '.join(led_by_target) or 'neither the stream nor the consumer'}; "
        f"{retries} publish retries; publish took {published_at - started:.1f} s "
        f"({published_at - killed_at:.1f} s after the kill), catch-up {caught_up_at - published_at:.1f} s"
    )


async def dead_count(js: Any, expected: int) -> bool:
    info = await js.stream_info(DEAD_STREAM)
    count = int(info.state.messages)
    assert count <= expected, f"{count} dead letters, expected {expected}: some were stored twice"
    return count == expected


async def test_a_daemon_started_while_jetstream_has_no_quorum_waits_and_binds(
    nats_cluster: NatsCluster, redis_server: Any
) -> None:
    """With 2 of 3 nodes down JetStream cannot answer (no meta leader): the daemon keeps trying to
    bind instead of failing, and once the nodes are back it creates the R3 streams and is ready."""
    scenario = Scenario.load(next(p for p in scenario_paths() if p.stem == "market_order_single_fill_fx"))
    flush(redis_server.url, scenario.trader_id)
    lone, *down = nats_cluster.nodes
    for node in down:
        nats_cluster.kill(node)
    nats_section = {**NATS_SECTION, "stream": "SCALE_QUORUM", "dead_letter_stream": "SCALE_QUORUM_DEAD"}
    config = daemon_config(
        redis_server.url, lone.url, scenario.trader_id, nats={**nats_section, "servers": nats_cluster.urls}
    )
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: daemon.nc is not None and daemon.nc.is_connected, timeout=10)
        await asyncio.sleep(3)  # JetStream refuses or times out meanwhile
        assert not task.done(), task.result()
        assert not daemon.is_ready()
        for node in down:
            node.start()
        await wait_for(lambda: daemon.is_ready() or task.done(), timeout=25)
        assert not task.done(), task.result()
        last = await publish_scenario_to(nats_cluster.urls, scenario, prefix=PREFIX)
        await wait_for(lambda: checkpoint_of(redis_server.url, scenario.trader_id) >= last, timeout=15)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=20) == 0
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        info = await nc.jetstream().stream_info("SCALE_QUORUM")
        assert info.config.num_replicas == 3
    finally:
        await nc.close()
    client = redis.Redis.from_url(redis_server.url)
    try:
        check_redis(client, scenario)
    finally:
        client.close()


async def publish_scenario_to(servers: list[str], scenario: Scenario, prefix: str) -> int:
    subjects = Subjects(prefix, scenario.trader_id)
    nc = await nats.connect(servers=servers)
    try:
        js = nc.jetstream()
        last = 0
        for index, (kind, _type, payload) in enumerate(scenario.messages):
            message = Outgoing(scenario.trader_id, subjects.inbound_for(SCENARIO_KINDS[kind]), payload, str(index))
            last, _ = await publish(js, message)
        return last
    finally:
        await nc.close()


def checkpoint_of(redis_url: str, trader_id: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.get(Keys(trader_id).checkpoint()) or 0)
    finally:
        client.close()


def test_the_generated_feed_moves_its_position_through_flips_and_flat() -> None:
    """The generated feed exercises what matters for a lost/duplicated message: splits and reopenings."""
    scenario = generated_scenario("GEN-778", 8)
    replay = replay_into_store(scenario)
    assert replay.rejected == [] and replay.duplicates == 0
    fills = replay.store.lists[(Collection.POSITIONS, "EUR/USD.SIM-GEN")]
    assert len(fills) == 8 + 2  # each of the two flips is stored as a closing and an opening half
    assert len(scenario.expected["orders"]) == 8
    assert scenario.expected["positions"]["EUR/USD.SIM-GEN"]["quantity"] == "0"
    logging.getLogger("tests").debug("generated feed: %d messages", len(scenario.messages))
