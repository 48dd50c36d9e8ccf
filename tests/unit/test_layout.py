"""redis.layout (seed | nautilus) and adoption's key parsing, without a server."""

from __future__ import annotations

import msgpack
import pytest

from tests.unit.test_config import attribute, config_of, refusal
from tradecache.cache import CacheDatabaseConfig
from tradecache.cache.adoption import entity_of, plan_index
from tradecache.cache.keys import Keys, Layout
from tradecache.cache.plan import plan_writes, read_result
from tradecache.cache.replay import currency_from_hash, strategy_state_from
from tradecache.errors import ConfigError
from tradecache.model.enums import CurrencyType
from tradecache.model.ledger import Collection, Write, WriteOp
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer

AUD = Currency("AUD", 2, 36, "Australian dollar", CurrencyType.FIAT)


def _encode(message: object) -> bytes:
    return MsgPackSerializer().serialize(message)  # type: ignore[arg-type]


def test_the_layout_comes_from_the_config_file_and_the_environment() -> None:
    assert attribute(config_of({}), "redis.layout") == "seed"
    assert attribute(config_of({"TRADECACHE_REDIS_LAYOUT": "nautilus"}), "redis.layout") == "nautilus"
    assert config_of({}, redis={"layout": "nautilus"}).redis.cache_config().layout == "nautilus"
    error = refusal({"redis": {"layout": "nt"}}, {})
    assert (error.key, "'seed' or 'nautilus'" in error.problem) == ("redis.layout", True)


def test_cache_database_config_refuses_an_unknown_layout() -> None:
    with pytest.raises(ConfigError, match=r"redis\.layout"):
        CacheDatabaseConfig(layout="other")
    assert "layout='nautilus'" in repr(CacheDatabaseConfig(layout="nautilus"))


def test_strategy_state_keys_per_layout() -> None:
    seed, nautilus = Keys("T-1"), Keys("T-1", layout="nautilus")
    assert seed.entity(Collection.STRATEGIES, "S-1") == "trader-T-1:strategies:S-1:State"
    assert nautilus.entity(Collection.STRATEGIES, "S-1") == "trader-T-1:strategies:S-1:state"
    assert nautilus.strategy_states("S-1") == ("trader-T-1:strategies:S-1:state", "trader-T-1:strategies:S-1:State")
    assert seed.strategy_states("S-1") == ("trader-T-1:strategies:S-1:State", "trader-T-1:strategies:S-1:state")


def test_the_nautilus_layout_writes_a_currency_as_nautilus_traders_msgpack_string() -> None:
    keys = Keys("T-1", layout=Layout.NAUTILUS)
    call = plan_writes([Write(WriteOp.SET, Collection.CURRENCIES, "AUD", AUD)], keys, _encode)
    assert call.keys == ["trader-T-1:currencies:AUD", keys.index(Collection.CURRENCIES)]
    assert call.args[:3] == [1, "R", "AUD"]
    stored = call.args[3]
    assert isinstance(stored, bytes)
    expected = {"precision": 2, "iso4217": 36, "name": "Australian dollar", "currency_type": "FIAT"}
    assert msgpack.unpackb(stored) == expected
    assert currency_from_hash("AUD", stored) == AUD


def test_the_seed_layout_still_writes_a_hash_which_reads_the_same() -> None:
    call = plan_writes([Write(WriteOp.SET, Collection.CURRENCIES, "AUD", AUD)], Keys("T-1"), _encode)
    assert call.args[1] == "H"
    fields = dict(zip(call.args[4::2], call.args[5::2], strict=True))
    assert currency_from_hash("AUD", fields) == AUD  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layout", "written", "deleted", "op"),
    [
        ("nautilus", "trader-T-1:strategies:S-1:state", "trader-T-1:strategies:S-1:State", "R"),
        ("seed", "trader-T-1:strategies:S-1:State", "trader-T-1:strategies:S-1:state", "M"),
    ],
)
def test_a_strategy_write_removes_the_other_layouts_copy(layout: str, written: str, deleted: str, op: str) -> None:
    keys = Keys("T-1", layout=layout)
    state = {"a": b"\x01", "b": b"2"}
    call = plan_writes([Write(WriteOp.MERGE, Collection.STRATEGIES, "S-1", state)], keys, _encode)
    assert call.keys[0::2] == [deleted, written]
    assert [arg for arg in call.args if arg in ("D", "R", "M")] == ["D", op]
    if op == "R":
        assert msgpack.unpackb(call.args[-1]) == state


def test_deleting_a_strategy_removes_both_forms() -> None:
    call = plan_writes([Write(WriteOp.DELETE, Collection.STRATEGIES, "S-1")], Keys("T-1"), _encode)
    assert sorted(call.keys[0::2]) == ["trader-T-1:strategies:S-1:State", "trader-T-1:strategies:S-1:state"]


def test_strategy_state_reads_both_forms() -> None:
    state = {"a": b"\x00\xff"}
    assert strategy_state_from(msgpack.packb(state, use_bin_type=True)) == state
    assert strategy_state_from({b"a": b"\x00\xff"}) == state
    assert strategy_state_from(None) == {}
    with pytest.raises(ValueError, match="holds a int"):
        strategy_state_from(msgpack.packb({"a": 1}))


def test_a_typed_read_gives_a_hash_or_a_string() -> None:
    assert read_result("TYPED", [b"hash", [b"f", b"v"]]) == {"f": b"v"}
    assert read_result("TYPED", [b"string", b"\x81"]) == b"\x81"
    assert read_result("TYPED", None) is None


@pytest.mark.parametrize(
    ("key", "entity"),
    [
        ("trader-T-1:orders:O-1", (Collection.ORDERS, "O-1")),
        ("trader-T-1:positions:EUR/USD.SIM-S-1-000", (Collection.POSITIONS, "EUR/USD.SIM-S-1-000")),
        ("trader-T-1:accounts:SIM-001", (Collection.ACCOUNTS, "SIM-001")),
        ("trader-T-1:instruments:AUD/USD.SIM", (Collection.INSTRUMENTS, "AUD/USD.SIM")),
        ("trader-T-1:currencies:USD", (Collection.CURRENCIES, "USD")),
        ("trader-T-1:strategies:S-1:State", (Collection.STRATEGIES, "S-1")),
        ("trader-T-1:strategies:S-1:state", (Collection.STRATEGIES, "S-1")),
        ("trader-T-1:commands:submit_order:O-1", (Collection.SUBMIT_ORDER, "O-1")),
        ("trader-T-1:commands:submit_order_list:OL-1", (Collection.SUBMIT_ORDER_LIST, "OL-1")),
        ("trader-T-1:strategies:S-1", None),
        ("trader-T-1:orders:", None),
        ("trader-T-1:index:orders", None),
        ("trader-T-1:snapshots:positions:P-1", None),
        ("trader-T-1:tradecache:index:orders", None),
        ("trader-T-12:orders:O-1", None),
        ("trader-T-1:actors:A-1:state", None),
    ],
)
def test_a_scanned_key_names_its_entity_or_nothing(key: str, entity: tuple[Collection, str] | None) -> None:
    assert entity_of(Keys("T-1"), key) == entity


def test_hash_tagged_keys_are_parsed_too() -> None:
    keys = Keys("T-1", hash_tag=True)
    assert entity_of(keys, "{trader-T-1}:orders:O-1") == (Collection.ORDERS, "O-1")
    assert entity_of(keys, "trader-T-1:orders:O-1") is None


def test_an_index_batch_pairs_each_key_with_its_collections_index() -> None:
    keys = Keys("T-1")
    batch = plan_index(keys, ["trader-T-1:orders:O-1", "trader-T-1:index:orders", "trader-T-1:strategies:S-1:state"])
    assert batch.ids == ["O-1", "S-1"]
    assert batch.keys == [
        "trader-T-1:orders:O-1",
        keys.index(Collection.ORDERS),
        "trader-T-1:strategies:S-1:state",
        keys.index(Collection.STRATEGIES),
    ]
