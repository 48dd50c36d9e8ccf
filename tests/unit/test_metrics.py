"""The metrics of SPEC section 4: names, types and labels as exposed, and what each method records."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tradecache import __version__
from tradecache.daemon.metrics import KINDS, LOAD_ENDPOINTS, MIXED_KIND, OTHER, Metrics, observe_many
from tradecache.errors import RejectReason
from tradecache.serialization.msgpack import MESSAGE_TYPES

# SPEC section 4, written out again here so that a renamed metric fails a test.
SPEC_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "tradecache_events_total": ("counter", frozenset({"kind", "type", "outcome"})),
    "tradecache_write_duration_seconds": ("histogram", frozenset({"kind"})),
    "tradecache_event_lag_seconds": ("histogram", frozenset({"kind"})),
    "tradecache_batch_size": ("histogram", frozenset()),
    "tradecache_keys": ("gauge", frozenset({"collection"})),
    "tradecache_load_requests_total": ("counter", frozenset({"endpoint", "outcome"})),
    "tradecache_load_duration_seconds": ("histogram", frozenset({"endpoint"})),
    "tradecache_consumer_pending_messages": ("gauge", frozenset()),
    "tradecache_position_divergence_total": ("counter", frozenset()),
    "tradecache_redis_up": ("gauge", frozenset()),
    "tradecache_nats_connected": ("gauge", frozenset()),
    "tradecache_build_info": ("gauge", frozenset({"version"})),
}
COLLECTIONS = ("currencies", "instruments", "accounts", "orders", "positions", "strategies", "commands")
REASONS = (
    "malformed", "unknown_type", "wrong_subject", "trader_mismatch",
    "invalid_transition", "unknown_order", "invalid_field", "oversize",
)  # fmt: skip


def exposed_metrics(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Exposed name -> (type, label names of its samples), as a Prometheus scraper would parse `text`.

    The parser drops a counter's `_total` from the family name; it is put back here. Histogram
    samples carry `le` besides the metric's own labels; it is left out.
    """
    exposed = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        exposed[name] = (family.type, frozenset(labels))
    return exposed


def record_one_of_each(metrics: Metrics) -> None:
    """Give every metric at least one sample, so label names can be read off the scrape."""
    metrics.event("order", "OrderFilled", "written")
    metrics.write_duration("order", 0.001)
    metrics.event_lag("order", 0.002)
    metrics.batch(3)
    metrics.set_keys({"orders": 1})
    metrics.load_request("order", "ok", 0.0005)
    metrics.set_pending(4)
    metrics.divergence()
    metrics.set_redis_up(True)
    metrics.set_nats_connected(True)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, version="1.2.3")


def test_every_spec_metric_is_in_the_first_scrape_with_its_type(metrics: Metrics) -> None:
    exposed = exposed_metrics(metrics.render().decode())
    for name, (kind, _) in SPEC_METRICS.items():
        assert name in exposed, name
        assert exposed[name][0] == kind, name


def test_every_spec_metric_carries_exactly_the_spec_labels(metrics: Metrics) -> None:
    record_one_of_each(metrics)
    exposed = exposed_metrics(metrics.render().decode())
    for name, (kind, labels) in SPEC_METRICS.items():
        assert exposed[name] == (kind, labels), name


def test_the_dead_letter_counter_is_exposed_by_reason(metrics: Metrics) -> None:
    exposed = exposed_metrics(metrics.render().decode())
    assert exposed["tradecache_dead_letters_total"] == ("counter", frozenset({"reason"}))


def test_the_exposed_text_names_counters_with_total(metrics: Metrics) -> None:
    text = metrics.render().decode()
    assert "# TYPE tradecache_events_total counter" in text
    assert "# TYPE tradecache_load_requests_total counter" in text
    assert "# TYPE tradecache_position_divergence_total counter" in text
    assert "tradecache_events_total_total" not in text


def test_metrics_without_a_registry_get_a_fresh_one_not_the_global_one() -> None:
    first, second = Metrics(), Metrics()
    assert first.registry is not REGISTRY
    assert first.registry is not second.registry
    assert REGISTRY.get_sample_value("tradecache_build_info", {"version": __version__}) is None
    assert first.registry.get_sample_value("tradecache_build_info", {"version": __version__}) == 1


def test_metrics_register_on_the_registry_they_are_given(registry: CollectorRegistry, metrics: Metrics) -> None:
    assert metrics.registry is registry
    assert registry.get_sample_value("tradecache_build_info", {"version": "1.2.3"}) == 1


def test_two_metrics_in_one_process_do_not_clash() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.event("order", "OrderFilled", "written", n=2)
    second.event("order", "OrderFilled", "written")
    labels = {"kind": "order", "type": "OrderFilled", "outcome": "written"}
    assert first.registry.get_sample_value("tradecache_events_total", labels) == 2
    assert second.registry.get_sample_value("tradecache_events_total", labels) == 1


def test_one_registry_cannot_hold_two_metrics(registry: CollectorRegistry, metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(registry)


def test_known_label_sets_start_at_zero(registry: CollectorRegistry, metrics: Metrics) -> None:
    for collection in COLLECTIONS:
        assert registry.get_sample_value("tradecache_keys", {"collection": collection}) == 0
    for reason in REASONS:
        assert registry.get_sample_value("tradecache_dead_letters_total", {"reason": reason}) == 0
    for endpoint in LOAD_ENDPOINTS:
        for outcome in ("ok", "not_found", "error"):
            labels = {"endpoint": endpoint, "outcome": outcome}
            assert registry.get_sample_value("tradecache_load_requests_total", labels) == 0
    assert registry.get_sample_value("tradecache_write_duration_seconds_count", {"kind": "order"}) == 0
    assert registry.get_sample_value("tradecache_event_lag_seconds_count", {"kind": "position"}) == 0
    for name in ("consumer_pending_messages", "position_divergence_total", "redis_up", "nats_connected"):
        assert registry.get_sample_value(f"tradecache_{name}") == 0, name


@pytest.mark.parametrize("outcome", ["written", "duplicate", "dead_lettered"])
def test_event_counts_by_kind_type_and_outcome(registry: CollectorRegistry, metrics: Metrics, outcome: str) -> None:
    metrics.event("order", "OrderAccepted", outcome)  # type: ignore[arg-type]
    metrics.event("order", "OrderAccepted", outcome, n=4)  # type: ignore[arg-type]
    labels = {"kind": "order", "type": "OrderAccepted", "outcome": outcome}
    assert registry.get_sample_value("tradecache_events_total", labels) == 5


def test_an_unknown_event_outcome_is_refused(registry: CollectorRegistry, metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.event("order", "OrderAccepted", "lost")  # type: ignore[arg-type]
    assert registry.get_sample_value("tradecache_events_total", {"kind": "order", "type": "OrderAccepted"}) is None


def events_series(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in registry.collect()
        if family.name == "tradecache_events"
        for sample in family.samples
        if sample.name == "tradecache_events_total"
    ]


def test_every_known_message_type_keeps_its_own_series_after_any_amount_of_junk(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    for i in range(1000):  # junk types and kinds first, as a misbehaving producer would send
        metrics.event(f"kind{i}", f"Type{i}", "dead_lettered")
    metrics.event("order", "X" * 200, "dead_lettered")
    for type_name in sorted(MESSAGE_TYPES):
        metrics.event("order", type_name, "written")
    metrics.event("order", "unknown", "dead_lettered")  # intake's name for an unreadable payload
    series = events_series(registry)
    assert len(series) == 1 + len(MESSAGE_TYPES) + 1 + 1  # other/other, each type, unknown, order/other
    count = "tradecache_events_total"
    assert registry.get_sample_value(count, {"kind": OTHER, "type": OTHER, "outcome": "dead_lettered"}) == 1000
    assert registry.get_sample_value(count, {"kind": "order", "type": OTHER, "outcome": "dead_lettered"}) == 1
    for type_name in ("OrderCanceled", "OrderFilled", "CurrencyPair", "AccountState", "SubmitOrderList"):
        labels = {"kind": "order", "type": type_name, "outcome": "written"}
        assert registry.get_sample_value("tradecache_events_total", labels) == 1, type_name


def test_an_unknown_load_endpoint_or_kind_shares_other(registry: CollectorRegistry, metrics: Metrics) -> None:
    for i in range(300):
        metrics.load_request(f"junk{i}", "error", 0.001)
        metrics.write_duration(f"junk{i}", 0.001)
    metrics.load_request("orders", "ok", 0.001)
    metrics.write_duration("order", 0.001)
    count = "tradecache_load_requests_total"
    assert registry.get_sample_value(count, {"endpoint": OTHER, "outcome": "error"}) == 300
    assert registry.get_sample_value(count, {"endpoint": "orders", "outcome": "ok"}) == 1
    assert registry.get_sample_value("tradecache_write_duration_seconds_count", {"kind": OTHER}) == 300
    assert registry.get_sample_value("tradecache_write_duration_seconds_count", {"kind": "order"}) == 1


def test_shed_load_requests_are_counted_by_endpoint_and_reason(registry: CollectorRegistry, metrics: Metrics) -> None:
    for endpoint in LOAD_ENDPOINTS:
        for reason in ("busy", "no_reply"):
            labels = {"endpoint": endpoint, "reason": reason}
            assert registry.get_sample_value("tradecache_load_shed_total", labels) == 0
    metrics.load_shed("orders", "busy")
    metrics.load_shed("orders", "busy")
    metrics.load_shed("order", "no_reply")
    assert registry.get_sample_value("tradecache_load_shed_total", {"endpoint": "orders", "reason": "busy"}) == 2
    assert registry.get_sample_value("tradecache_load_shed_total", {"endpoint": "order", "reason": "no_reply"}) == 1
    with pytest.raises(ValueError, match="reason"):
        metrics.load_shed("orders", "tired")  # type: ignore[arg-type]


def test_write_duration_lands_in_fine_latency_buckets(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.write_duration("order", 0.00007)
    bucket = "tradecache_write_duration_seconds_bucket"
    assert registry.get_sample_value(bucket, {"kind": "order", "le": "5e-05"}) == 0
    assert registry.get_sample_value(bucket, {"kind": "order", "le": "0.0001"}) == 1
    assert registry.get_sample_value(bucket, {"kind": "order", "le": "5.0"}) == 1
    assert registry.get_sample_value("tradecache_write_duration_seconds_sum", {"kind": "order"}) == pytest.approx(7e-5)


def test_a_commit_is_observed_once_under_its_single_kind_or_mixed(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.commit_duration({"order"}, 0.002)
    metrics.commit_duration({"order", "account", "position"}, 0.004)
    metrics.commit_duration(set(), 0.5)  # a commit that carried no event (only refusals): nothing observed
    count = "tradecache_write_duration_seconds_count"
    assert registry.get_sample_value(count, {"kind": "order"}) == 1
    assert registry.get_sample_value(count, {"kind": MIXED_KIND}) == 1
    assert registry.get_sample_value(count, {"kind": "account"}) == 0
    total = sum(registry.get_sample_value(count, {"kind": kind}) or 0 for kind in (*KINDS, MIXED_KIND))
    assert total == 2  # a sum over kinds counts commits, each once
    seconds = registry.get_sample_value("tradecache_write_duration_seconds_sum", {"kind": MIXED_KIND})
    assert seconds == pytest.approx(0.004)


def test_event_lag_is_observed_by_kind(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.event_lag("account", 0.3)
    metrics.event_lag("account", 7.0)
    metrics.event_lags("account", [0.009, 0.012])  # either side of 10 ms, in buckets of their own
    bucket = "tradecache_event_lag_seconds_bucket"
    assert registry.get_sample_value(bucket, {"kind": "account", "le": "0.0075"}) == 0
    assert registry.get_sample_value(bucket, {"kind": "account", "le": "0.01"}) == 1
    assert registry.get_sample_value(bucket, {"kind": "account", "le": "0.015"}) == 2
    assert registry.get_sample_value(bucket, {"kind": "account", "le": "0.25"}) == 2
    assert registry.get_sample_value(bucket, {"kind": "account", "le": "0.5"}) == 3
    assert registry.get_sample_value(bucket, {"kind": "account", "le": "5.0"}) == 3
    assert registry.get_sample_value(bucket, {"kind": "account", "le": "+Inf"}) == 4


def bucket_bounds(text: str, name: str, labels: dict[str, str]) -> list[str]:
    """The `le` bounds of histogram `name`'s series with `labels`, in exposed order."""
    return [
        sample.labels["le"]
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_bucket" and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def test_histogram_buckets_are_the_documented_ones(metrics: Metrics) -> None:
    text = metrics.render().decode()
    latency = ["5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1"]
    latency += ["0.25", "0.5", "1.0", "2.5", "5.0", "+Inf"]
    assert bucket_bounds(text, "tradecache_write_duration_seconds", {"kind": "order"}) == latency
    lag = [*latency[:7], "0.0075", "0.01", "0.015", "0.02", *latency[8:]]  # finer around 10 ms
    assert bucket_bounds(text, "tradecache_event_lag_seconds", {"kind": "order"}) == lag
    assert bucket_bounds(text, "tradecache_load_duration_seconds", {"endpoint": "order"}) == latency
    assert bucket_bounds(text, "tradecache_batch_size", {}) == [str(float(2**n)) for n in range(14)] + ["+Inf"]


def test_batch_size_is_observed(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.batch(1)
    metrics.batch(300)
    assert registry.get_sample_value("tradecache_batch_size_bucket", {"le": "1.0"}) == 1
    assert registry.get_sample_value("tradecache_batch_size_bucket", {"le": "256.0"}) == 1
    assert registry.get_sample_value("tradecache_batch_size_bucket", {"le": "512.0"}) == 2
    assert registry.get_sample_value("tradecache_batch_size_sum") == 301


def test_set_keys_sets_the_given_collections_and_leaves_the_others(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.set_keys({"orders": 12, "commands": 3})
    metrics.set_keys({"orders": 10})
    assert registry.get_sample_value("tradecache_keys", {"collection": "orders"}) == 10
    assert registry.get_sample_value("tradecache_keys", {"collection": "commands"}) == 3
    assert registry.get_sample_value("tradecache_keys", {"collection": "positions"}) == 0


def test_set_keys_refuses_an_unknown_collection_and_sets_nothing(registry: CollectorRegistry, metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="collection"):
        metrics.set_keys({"orders": 5, "widgets": 1})
    assert registry.get_sample_value("tradecache_keys", {"collection": "orders"}) == 0
    assert registry.get_sample_value("tradecache_keys", {"collection": "widgets"}) is None


def test_load_request_counts_and_times_by_endpoint(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.load_request("order", "ok", 0.0004)
    metrics.load_request("order", "not_found", 0.0002)
    metrics.load_request("orders", "error", 0.02)
    count = "tradecache_load_requests_total"
    assert registry.get_sample_value(count, {"endpoint": "order", "outcome": "ok"}) == 1
    assert registry.get_sample_value(count, {"endpoint": "order", "outcome": "not_found"}) == 1
    assert registry.get_sample_value(count, {"endpoint": "orders", "outcome": "error"}) == 1
    assert registry.get_sample_value("tradecache_load_duration_seconds_count", {"endpoint": "order"}) == 2
    bucket = {"endpoint": "order", "le": "0.00025"}
    assert registry.get_sample_value("tradecache_load_duration_seconds_bucket", bucket) == 1


def test_an_unknown_load_outcome_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.load_request("order", "timeout", 0.1)  # type: ignore[arg-type]


def test_pending_divergence_and_connectivity_gauges(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.set_pending(42)
    metrics.divergence()
    metrics.divergence()
    metrics.set_redis_up(True)
    metrics.set_nats_connected(True)
    assert registry.get_sample_value("tradecache_consumer_pending_messages") == 42
    assert registry.get_sample_value("tradecache_position_divergence_total") == 2
    assert registry.get_sample_value("tradecache_redis_up") == 1
    assert registry.get_sample_value("tradecache_nats_connected") == 1
    metrics.set_redis_up(False)
    metrics.set_nats_connected(False)
    assert registry.get_sample_value("tradecache_redis_up") == 0
    assert registry.get_sample_value("tradecache_nats_connected") == 0


@pytest.mark.parametrize("reason", REASONS)
def test_dead_letter_counts_by_reason(registry: CollectorRegistry, metrics: Metrics, reason: str) -> None:
    metrics.dead_letter(reason)
    metrics.dead_letter(RejectReason(reason))
    assert registry.get_sample_value("tradecache_dead_letters_total", {"reason": reason}) == 2


def test_an_unknown_dead_letter_reason_is_counted_as_other(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.dead_letter("bored")
    assert registry.get_sample_value("tradecache_dead_letters_total", {"reason": "bored"}) is None
    assert registry.get_sample_value("tradecache_dead_letters_total", {"reason": OTHER}) == 1
    assert registry.get_sample_value("tradecache_dead_letters_total", {"reason": "malformed"}) == 0


def test_build_info_carries_the_version_with_value_one() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    assert registry.get_sample_value("tradecache_build_info", {"version": __version__}) == 1


def test_render_is_prometheus_text(metrics: Metrics) -> None:
    record_one_of_each(metrics)
    rendered = metrics.render()
    assert isinstance(rendered, bytes)
    families = {family.name: family for family in text_string_to_metric_families(rendered.decode())}
    events = families["tradecache_events"]
    [written] = [sample for sample in events.samples if sample.name == "tradecache_events_total"]
    assert written.labels == {"kind": "order", "type": "OrderFilled", "outcome": "written"}
    assert written.value == 1


# -- per batch: the same series as per event, counted in bulk -----------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect() for s in family.samples if not s.name.endswith("_created")
    }  # fmt: skip


LAGS = (0.0, 0.00005, 0.00007, 0.001, 0.0049, 0.005, 0.3, 5.0, 7.5, 1e9)


def test_counting_a_batch_at_once_equals_counting_each_event() -> None:
    each, bulk = Metrics(), Metrics()
    events = [("order", "OrderFilled", "written")] * 3 + [("account", "AccountState", "duplicate")] * 2
    events += [("junk", "Nonsense", "dead_lettered")] * 4  # unknown labels: OTHER, in both ways
    for kind, type_name, outcome in events:
        each.event(kind, type_name, outcome)  # type: ignore[arg-type]
    bulk.count_events({("order", "OrderFilled", "written"): 3, ("account", "AccountState", "duplicate"): 2,
                       ("junk", "Nonsense", "dead_lettered"): 4})  # fmt: skip
    bulk.count_events({("order", "OrderFilled", "written"): 1})  # a later batch reuses the kept series
    each.event("order", "OrderFilled", "written")
    assert samples(each) == samples(bulk)
    assert bulk.registry.get_sample_value("tradecache_events_total", {
        "kind": OTHER, "type": OTHER, "outcome": "dead_lettered"}) == 4  # fmt: skip


def test_counting_a_batch_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="outcome"):
        Metrics().count_events({("order", "OrderFilled", "lost"): 1})


@pytest.mark.parametrize("kind", ["order", "account", "junk"])
def test_lags_observed_at_once_equal_lags_observed_one_by_one(kind: str) -> None:
    each, bulk = Metrics(), Metrics()
    for lag in LAGS:
        each.event_lag(kind, lag)
    bulk.event_lags(kind, LAGS)
    bulk.event_lags(kind, [])  # nothing observed, nothing changed
    assert samples(each) == samples(bulk)


def test_observing_many_without_the_client_internals_falls_back_to_observe() -> None:
    class Plain:  # a histogram child without prometheus_client's private attributes
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    observe_many(plain, LAGS)
    assert plain.seen == list(LAGS)


def test_observing_many_touches_each_bucket_once_and_the_sum_once() -> None:
    metrics = Metrics()
    child = metrics.event_lag_seconds.labels(kind="order")
    observe_many(child, [0.001, 0.001, 0.002, 6.0])
    get = metrics.registry.get_sample_value
    assert get("tradecache_event_lag_seconds_bucket", {"kind": "order", "le": "0.001"}) == 2
    assert get("tradecache_event_lag_seconds_bucket", {"kind": "order", "le": "0.0025"}) == 3
    assert get("tradecache_event_lag_seconds_bucket", {"kind": "order", "le": "5.0"}) == 3
    assert get("tradecache_event_lag_seconds_bucket", {"kind": "order", "le": "+Inf"}) == 4
    assert get("tradecache_event_lag_seconds_count", {"kind": "order"}) == 4
    assert get("tradecache_event_lag_seconds_sum", {"kind": "order"}) == pytest.approx(6.004)
