"""Each extension point is declared once; what depends on it is derived, and these tests check the
derivations (docs/ARCHITECTURE.md, "Where to change what").

- the message types: the schema table (`serialization/schemas.py`, compiled in `msgpack.py`)
- the subject kinds: `model.messages.Kind`
- the load endpoints: `wire.ENDPOINTS`
- the collections counted by `tradecache_keys`: `cache.keys.COUNTED`
- the apply script's operations: `cache.plan.OPERATIONS`
"""

from __future__ import annotations

import re

from tradecache.cache.keys import COUNTED, Keys
from tradecache.cache.plan import APPLY_SCRIPT, OPERATIONS, READ_COMMANDS, ScriptCall
from tradecache.daemon import metrics as metric_labels
from tradecache.daemon.metrics import Metrics
from tradecache.model.ledger import Collection, Mark, Write, WriteOp
from tradecache.model.messages import Kind
from tradecache.serialization.msgpack import MESSAGE_TYPES
from tradecache.service.endpoints import ENDPOINTS as SERVICE_ENDPOINTS
from tradecache.wire import ENDPOINTS, ENDPOINTS_BY_NAME, Subjects


def test_metric_label_sets_are_derived_from_their_tables() -> None:
    assert tuple(kind.value for kind in Kind) == metric_labels.KINDS
    assert tuple(endpoint.name for endpoint in ENDPOINTS) == metric_labels.LOAD_ENDPOINTS
    assert tuple(COUNTED) == metric_labels.COLLECTIONS
    assert frozenset(MESSAGE_TYPES) | {"unknown"} == metric_labels.MESSAGE_TYPE_LABELS


def test_a_fresh_registry_has_a_series_for_every_declared_value() -> None:
    text = Metrics().render().decode()
    for endpoint in ENDPOINTS:
        assert f'tradecache_load_requests_total{{endpoint="{endpoint.name}",outcome="ok"}} 0.0' in text
    for collection in COUNTED:
        assert f'tradecache_keys{{collection="{collection}"}} 0.0' in text
    for kind in Kind:
        assert f'tradecache_event_lag_seconds_count{{kind="{kind.value}"}} 0.0' in text


def test_a_message_type_counted_by_its_own_label() -> None:
    metrics = Metrics()
    some_type = sorted(MESSAGE_TYPES)[0]
    metrics.event("order", some_type, "written")
    metrics.event("order", "NotAType", "written")
    text = metrics.render().decode()
    assert f'tradecache_events_total{{kind="order",outcome="written",type="{some_type}"}} 1.0' in text
    assert 'tradecache_events_total{kind="order",outcome="written",type="other"} 1.0' in text


def test_the_endpoint_table_is_the_one_the_service_serves() -> None:
    assert SERVICE_ENDPOINTS is ENDPOINTS
    assert set(ENDPOINTS_BY_NAME) == {endpoint.name for endpoint in ENDPOINTS}
    assert len(ENDPOINTS_BY_NAME) == len(ENDPOINTS) == 16
    subjects = Subjects("tc", "TRADER-001")
    assert subjects.load(ENDPOINTS[0].name) == f"tc.load.TRADER-001.{ENDPOINTS[0].name}"
    for endpoint in ENDPOINTS:
        if endpoint.collection is not None:  # every collection an endpoint reads can be read
            assert endpoint.collection in READ_COMMANDS


def test_every_collection_is_counted_once_and_served() -> None:
    counted = [collection for group in COUNTED.values() for collection in group]
    assert sorted(counted) == sorted(Collection)
    served = {endpoint.collection for endpoint in ENDPOINTS if endpoint.collection is not None}
    assert served == set(Collection)


def _lua_table(name: str) -> dict[str, str]:
    match = re.search(rf"local {name} = \{{(.*?)\}}\n(?=--|local)", APPLY_SCRIPT, re.S)
    assert match is not None, name
    return {op: " ".join(value.split()) for op, value in re.findall(r"([A-Z]) = (\{[^}]*\}|[^,}]+)", match.group(1))}


def test_the_script_tables_are_generated_from_the_operation_table() -> None:
    assert _lua_table("nkeys") == {op: str(shape.nkeys) for op, shape in OPERATIONS.items()}
    assert _lua_table("nargs") == {op: str(shape.nargs) for op, shape in OPERATIONS.items() if shape.nargs is not None}
    assert _lua_table("expected") == {
        op: "false" if shape.first is None else f"'{shape.first}'" for op, shape in OPERATIONS.items()
    }
    assert _lua_table("others") == {
        op: "{" + ", ".join(f"'{kind}'" for kind in shape.others) + "}"
        for op, shape in OPERATIONS.items()
        if shape.others
    }


def _every_operation() -> ScriptCall:
    keys = Keys("TRADER-001")
    call = ScriptCall()
    order = Write(WriteOp.APPEND, Collection.ORDERS, "O-1")
    call.fence(keys, "token")
    call.append_event(order, keys, "e-1", b"payload")
    call.check_event(order, keys, "e-1", b"payload")
    call.set_value(Write(WriteOp.SET, Collection.INSTRUMENTS, "EUR/USD.SIM"), keys, b"instrument")
    call.set_command(Write(WriteOp.SET, Collection.SUBMIT_ORDER, "O-1"), keys, "c-1", b"command")
    call.replace_value(Write(WriteOp.SET, Collection.CURRENCIES, "EUR"), keys, "currency-key", b"eur")
    strategy = Write(WriteOp.MERGE, Collection.STRATEGIES, "S-1")
    call.set_hash(strategy, keys, {"a": b"1", "b": b"2"}, replace=True)
    call.set_hash(strategy, keys, {"c": b"3"}, replace=False)
    call.delete(Write(WriteOp.DELETE, Collection.STRATEGIES, "S-1"), keys)
    call.closed(Mark(Collection.ORDERS, "O-1", closed=True), keys)
    call.closed(Mark(Collection.ORDERS, "O-1", closed=False), keys)
    call.closed(Mark(Collection.POSITIONS, "P-1", closed=True, event_id="e-2", later=1), keys)
    call.hold_opening(keys, "O-2", b"opening half")
    call.release_opening(keys, "O-2")
    call.expect_new(keys, "O-3")
    call.checkpoint(keys, 42)
    return call


def test_script_calls_carry_exactly_the_keys_and_args_the_table_declares() -> None:
    """Walk a call as the script does, with the table's counts: it must end exactly at the end."""
    call = _every_operation()
    assert call.args[0] == call.count
    seen: list[str] = []
    k, a = 0, 1
    while a < len(call.args):
        op = str(call.args[a])
        shape = OPERATIONS[op]
        seen.append(op)
        nargs = shape.nargs if shape.nargs is not None else 2 + 2 * int(call.args[a + 2])  # id, count, pairs
        k, a = k + shape.nkeys, a + 1 + nargs
    assert (k, a) == (len(call.keys), len(call.args))
    assert sorted(set(seen)) == sorted(OPERATIONS)
    assert len(seen) == call.count
