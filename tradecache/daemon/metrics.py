"""Prometheus metrics of SPEC section 4, on a registry of their own (one per daemon).

Callers use the typed methods of `Metrics` and never touch label plumbing. Label sets known in
advance (collections, dead-letter reasons, load endpoints, event kinds) are created at zero, so
every series is in the first scrape and `rate()` works from the first increment.

Closed label sets (outcomes, collections, shed reasons) are checked: a value outside them is a
bug and raises `ValueError`. Labels whose value can come from outside -- a dead-lettered
message's `type` is whatever its payload says, its `kind` whatever its subject says -- have a
known set too (the subject kinds, every message type of the schema table, the load endpoints,
the dead-letter reasons): a known value always has its own series, and every unknown value is
counted as `OTHER`. So a misbehaving producer can neither grow the registry nor take a known
value's place.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tradecache import __version__
from tradecache.cache.keys import COUNTED
from tradecache.errors import RejectReason
from tradecache.ingest.ports import EventOutcome
from tradecache.model.messages import Kind
from tradecache.serialization.msgpack import MESSAGE_TYPES
from tradecache.service.ports import LoadOutcome, ShedReason
from tradecache.wire import ENDPOINTS

EVENT_OUTCOMES: Final[tuple[str, ...]] = get_args(EventOutcome)
LOAD_OUTCOMES: Final[tuple[str, ...]] = get_args(LoadOutcome)
SHED_REASONS: Final[tuple[str, ...]] = get_args(ShedReason)
# Every label set below is derived from the one table that declares it (checked by
# tests/unit/test_extension_points.py): a new collection, kind, endpoint or message type needs
# no change here.
COLLECTIONS: Final[tuple[str, ...]] = tuple(COUNTED)
# The subject kinds of SPEC section 1 and the load endpoints of SPEC section 3.
KINDS: Final[tuple[str, ...]] = tuple(kind.value for kind in Kind)
# `kind` of a write-duration observation whose commit carried events of several kinds.
MIXED_KIND: Final = "mixed"
LOAD_ENDPOINTS: Final[tuple[str, ...]] = tuple(endpoint.name for endpoint in ENDPOINTS)

# What retention removes (`tradecache_retention_removed_total{kind}`).
RETENTION_KINDS: Final = (
    "orders", "submit_order_commands", "submit_order_list_commands", "positions", "position_fills", "account_states",
)  # fmt: skip
# From 50 us to 5 s: the client's defaults start at 5 ms, above most of what is measured here.
LATENCY_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# Event lag: the latency buckets with three more around 10 ms, the lag a trickle should stay under
# (issue 15's goal; an alert's threshold is likely near it). Between 10 and 25 ms alone, a p99 of
# 12-15 ms read back as 15-23 ms (`histogram_quantile` spreads a bucket's events evenly).
LAG_BUCKETS: Final = tuple(sorted((*LATENCY_BUCKETS, 0.0075, 0.015, 0.02)))
SWEEP_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS: Final = tuple(float(2**n) for n in range(14))  # 1, 2, 4, ... 8192

# Message types: the schema table's, and the one intake gives a payload it cannot read.
MESSAGE_TYPE_LABELS: Final = frozenset(MESSAGE_TYPES) | {"unknown"}
DEAD_LETTER_REASONS: Final = tuple(reason.value for reason in RejectReason)
OTHER: Final = "other"


class _KnownLabel:
    """A label with a known set of values: each keeps its own series; anything else is `OTHER`."""

    def __init__(self, known: frozenset[str] | tuple[str, ...]) -> None:
        self._known = frozenset(known)

    def admit(self, value: str) -> str:
        return value if value in self._known else OTHER


def observe_many(histogram: Any, values: Iterable[float]) -> None:
    """`histogram.observe(v)` for each value, with one increment per bucket touched and one of the sum.

    This reaches into prometheus_client's Histogram (`_upper_bounds`, `_buckets`, `_sum`: the
    per-bucket counts, which it makes cumulative when collected) because its public API takes one
    value at a time, a lock each, which cost more than the rest of the per-event bookkeeping.
    Without those attributes (another client version) each value is observed the public way.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    histogram._raise_if_not_observable()
    hits = [0] * len(bounds)
    amount = 0.0
    left = bisect.bisect_left
    for value in values:
        amount += value
        hits[left(bounds, value)] += 1  # the first bound >= value, as observe() finds it
    if not any(hits):
        return
    total.inc(amount)
    for index, count in enumerate(hits):
        if count:
            buckets[index].inc(count)


def _check(label: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{label} must be one of {', '.join(allowed)}; got {value!r}")
    return value


class Metrics:
    """Every tradecache metric, registered on `registry` (a fresh one when None, never the global one).

    Two instances never clash, since each has its own registry. `version` is the value of the
    `version` label of `tradecache_build_info`.
    """

    def __init__(self, registry: CollectorRegistry | None = None, version: str = __version__) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Counters are declared without `_total`: the client appends it to the exposed name.
        self.events = Counter(
            "tradecache_events", "Messages handled, by kind, type and outcome", ["kind", "type", "outcome"], registry=r
        )
        self.write_duration_seconds = Histogram(
            "tradecache_write_duration_seconds", "Time of the Redis write carrying the event", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.event_lag_seconds = Histogram(
            "tradecache_event_lag_seconds", "From publish (JetStream timestamp) to durable in Redis", ["kind"],
            buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "tradecache_batch_size", "Deliveries per fetched batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.keys = Gauge("tradecache_keys", "Stored entities per collection", ["collection"], registry=r)
        self.load_requests = Counter(
            "tradecache_load_requests", "Load requests by endpoint and outcome", ["endpoint", "outcome"], registry=r
        )
        self.load_duration_seconds = Histogram(
            "tradecache_load_duration_seconds", "Time to answer a load request", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.consumer_pending = Gauge(
            "tradecache_consumer_pending_messages", "Messages in the stream not yet delivered to the consumer",
            registry=r,
        )  # fmt: skip
        self.position_divergence = Counter(
            "tradecache_position_divergence", "Position events that disagree with the stored fills", registry=r
        )
        self.redis_up = Gauge("tradecache_redis_up", "1 when the last Redis operation succeeded", registry=r)
        self.nats_connected = Gauge("tradecache_nats_connected", "1 while connected to NATS", registry=r)
        # Not in SPEC section 4: what /readyz answers, so an alert can follow readiness itself.
        self.ready = Gauge("tradecache_ready", "1 when /readyz answers 200 (NATS, Redis, consumer bound)", registry=r)
        self.build_info = Gauge("tradecache_build_info", "Build information (value 1)", ["version"], registry=r)
        self.dead_letters = Counter(
            "tradecache_dead_letters", "Messages sent to the dead-letter subject, by reason", ["reason"], registry=r
        )
        # Beyond SPEC section 4 (issue 16): what would otherwise be blind spots.
        self.ingest_stalled = Gauge(
            "tradecache_ingest_stalled", "1 while messages wait and nothing was committed for ingest.stall_seconds",
            registry=r,
        )  # fmt: skip
        self.lease_held = Gauge(
            "tradecache_lease_held", "1 while this daemon holds the trader's lease (it alone writes the trader)",
            registry=r,
        )  # fmt: skip
        self.standby = Gauge(
            "tradecache_standby", "1 while another daemon holds the trader's lease and this one waits", registry=r
        )
        self.consumer_ack_pending = Gauge(
            "tradecache_consumer_ack_pending_messages", "Messages delivered to the consumer and not acknowledged",
            registry=r,
        )  # fmt: skip
        self.consumer_redelivered = Gauge(
            "tradecache_consumer_redelivered_messages",
            "Messages pending acknowledgement that were delivered more than once", registry=r,
        )  # fmt: skip
        self.consumer_stuck_acks = Gauge(
            "tradecache_consumer_stuck_acks", "Acks pending below the consumer's ack floor (never cleared by acks)",
            registry=r,
        )  # fmt: skip
        self.redeliveries = Counter(
            "tradecache_redeliveries", "Deliveries JetStream made more than once (after an ack wait ran out)",
            registry=r,
        )  # fmt: skip
        self.stuck_acks_cleared_total = Counter(
            "tradecache_stuck_acks_cleared", "Stuck acks cleared by re-creating the consumer", registry=r
        )
        self.memory_state_bytes = Gauge(
            "tradecache_state_memory_bytes", "Estimated bytes of the orders, positions, accounts and instruments held",
            registry=r,
        )  # fmt: skip
        # Not in SPEC section 4: load requests refused unserved (see ShedReason).
        self.load_shed_requests = Counter(
            "tradecache_load_shed", "Load requests not served: busy (answered 429) or without a reply subject",
            ["endpoint", "reason"], registry=r,
        )  # fmt: skip
        # Not in SPEC section 4: the load build worker (service/build_worker.py).
        self.build_worker_up = Gauge(
            "tradecache_load_build_worker_up", "1 while the load build worker is ready (0: off, starting or failed)",
            registry=r,
        )  # fmt: skip
        self.build_worker_share = Gauge(
            "tradecache_load_build_worker_share",
            "The share of each page's rebuilds the load build worker takes (it follows the balance; 0: off)",
            registry=r,
        )  # fmt: skip
        self.build_worker_failures = Counter(
            "tradecache_load_build_worker_failures",
            "Load build workers killed (died, hung or answered out of shape): their share rebuilt on the loop",
            registry=r,
        )  # fmt: skip
        # Retention (issue 12): what sweeps removed, by kind, and how long each took.
        self.retention_removed = Counter(
            "tradecache_retention_removed", "Entities retention removed from Redis, by kind", ["kind"], registry=r
        )
        self.retention_sweep_seconds = Histogram(
            "tradecache_retention_sweep_seconds", "Time of one retention sweep (all its slices)",
            buckets=SWEEP_BUCKETS, registry=r,
        )  # fmt: skip
        self.retention_sweeps = Counter(
            "tradecache_retention_sweeps", "Retention sweeps, by outcome (ok, failed)", ["outcome"], registry=r
        )
        self._kinds = _KnownLabel(KINDS)
        self._types = _KnownLabel(MESSAGE_TYPE_LABELS)
        self._endpoints = _KnownLabel(LOAD_ENDPOINTS)
        self._reasons = _KnownLabel(DEAD_LETTER_REASONS)
        # The series of each (endpoint, outcome), kept: labels() costs a lock and a lookup per call,
        # on the hot path of every load request. Only known endpoints are kept (others are rare).
        self._load_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        # The same for ingest: the event counter's series by (kind, type, outcome) as given, and
        # the lag histogram's by kind (only known values are kept; an unknown one is `OTHER`).
        self._event_children: dict[tuple[str, str, str], Any] = {}
        self._lag_children: dict[str, Any] = {}
        self._start(version)

    def _start(self, version: str) -> None:
        """Create the known label sets at zero and the constant series."""
        self.build_info.labels(version=version).set(1)
        for collection in COLLECTIONS:
            self.keys.labels(collection=collection).set(0)
        for reason in RejectReason:
            self.dead_letters.labels(reason=reason.value)
        for kind in KINDS:
            self.write_duration_seconds.labels(kind=kind)
            self.event_lag_seconds.labels(kind=kind)
        self.write_duration_seconds.labels(kind=MIXED_KIND)
        for removed in RETENTION_KINDS:
            self.retention_removed.labels(kind=removed)
        for outcome in ("ok", "failed"):
            self.retention_sweeps.labels(outcome=outcome)
        for endpoint in LOAD_ENDPOINTS:
            self.load_duration_seconds.labels(endpoint=endpoint)
            for outcome in LOAD_OUTCOMES:
                self.load_requests.labels(endpoint=endpoint, outcome=outcome)
            for shed in SHED_REASONS:
                self.load_shed_requests.labels(endpoint=endpoint, reason=shed)

    def event(self, kind: str, type_name: str, outcome: EventOutcome, n: int = 1) -> None:
        """Count `n` messages of `kind` (subject kind) and `type_name` (payload type) with `outcome`.

        Raises ValueError for an unknown outcome or a negative `n`.
        """
        _check("outcome", outcome, EVENT_OUTCOMES)
        labels = {"kind": self._kinds.admit(kind), "type": self._types.admit(type_name), "outcome": outcome}
        self.events.labels(**labels).inc(n)

    def count_events(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Count a batch's messages at once: `counts` maps (kind, type, outcome) to how many.

        The same series as `event` (one `labels()` per distinct triple, kept for later batches
        instead of one per message). Raises ValueError for an unknown outcome or a negative count.
        """
        for triple, n in counts.items():
            child = self._event_children.get(triple)
            if child is None:
                kind, type_name, outcome = triple
                _check("outcome", outcome, EVENT_OUTCOMES)
                labels = {"kind": self._kinds.admit(kind), "type": self._types.admit(type_name), "outcome": outcome}
                child = self.events.labels(**labels)
                if OTHER not in (labels["kind"], labels["type"]):
                    self._event_children[triple] = child
            child.inc(n)

    def write_duration(self, kind: str, seconds: float) -> None:
        """Observe how long one Redis commit took; `kind` is the kind of every event it carried, or
        `MIXED_KIND` when they were of several kinds. Call it once per commit (`commit_duration`)."""
        label = kind if kind == MIXED_KIND else self._kinds.admit(kind)
        self.write_duration_seconds.labels(kind=label).observe(seconds)

    def commit_duration(self, kinds: AbstractSet[str], seconds: float) -> None:
        """Observe one commit that carried events of `kinds` (nothing when it carried none).

        The time is that of one script call for the whole batch, so it is observed once, under the
        batch's single kind or `MIXED_KIND`: a sum over kinds then counts each commit once."""
        if kinds:
            self.write_duration(next(iter(kinds)) if len(kinds) == 1 else MIXED_KIND, seconds)

    def event_lag(self, kind: str, seconds: float) -> None:
        """Observe the time from publish (JetStream timestamp) to durable in Redis."""
        self.event_lag_seconds.labels(kind=self._kinds.admit(kind)).observe(seconds)

    def event_lags(self, kind: str, seconds: Iterable[float]) -> None:
        """Observe many event lags of `kind` at once: the same histogram as `event_lag`."""
        child = self._lag_children.get(kind)
        if child is None:
            admitted = self._kinds.admit(kind)
            child = self.event_lag_seconds.labels(kind=admitted)
            if admitted != OTHER:
                self._lag_children[kind] = child
        observe_many(child, seconds)

    def batch(self, size: int) -> None:
        """Observe the number of deliveries in one fetched batch."""
        self.batch_size.observe(size)

    def set_keys(self, counts: Mapping[str, int]) -> None:
        """Set `tradecache_keys` for each collection given; others keep their value.

        Raises ValueError, before setting anything, if a name is not one of `COLLECTIONS`.
        """
        for collection in counts:
            _check("collection", collection, COLLECTIONS)
        for collection, count in counts.items():
            self.keys.labels(collection=collection).set(count)

    def load_request(self, endpoint: str, outcome: LoadOutcome, seconds: float) -> None:
        """Count one load request on `endpoint` and observe how long it took to answer.

        Raises ValueError for an unknown outcome.
        """
        children = self._load_children.get((endpoint, outcome))
        if children is None:  # first time for this pair: check and create the series once
            _check("outcome", outcome, LOAD_OUTCOMES)
            label = self._endpoints.admit(endpoint)
            children = (
                self.load_requests.labels(endpoint=label, outcome=outcome),
                self.load_duration_seconds.labels(endpoint=label),
            )
            if label != OTHER:
                self._load_children[(endpoint, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def load_shed(self, endpoint: str, reason: ShedReason) -> None:
        """Count one load request refused unserved. Raises ValueError for an unknown reason."""
        _check("reason", reason, SHED_REASONS)
        self.load_shed_requests.labels(endpoint=self._endpoints.admit(endpoint), reason=reason).inc()

    def set_pending(self, pending: int) -> None:
        """Set the number of messages in the stream not yet delivered to the consumer."""
        self.consumer_pending.set(pending)

    def divergence(self) -> None:
        """Count one position event that disagrees with the position rebuilt from fills."""
        self.position_divergence.inc()

    def dead_letter(self, reason: RejectReason | str) -> None:
        """Count one dead letter by reason (one `RejectReason` has not: `OTHER`)."""
        value = reason.value if isinstance(reason, RejectReason) else reason
        self.dead_letters.labels(reason=self._reasons.admit(value)).inc()

    def set_redis_up(self, up: bool) -> None:
        self.redis_up.set(1 if up else 0)

    def set_nats_connected(self, connected: bool) -> None:
        self.nats_connected.set(1 if connected else 0)

    def set_lease(self, *, held: bool, standby: bool) -> None:
        self.lease_held.set(1 if held else 0)
        self.standby.set(1 if standby else 0)

    def set_consumer(self, undelivered: int, ack_pending: int, redelivered: int, stuck: int) -> None:
        """The consumer's state as JetStream reports it."""
        self.consumer_pending.set(undelivered)
        self.consumer_ack_pending.set(ack_pending)
        self.consumer_redelivered.set(redelivered)
        self.consumer_stuck_acks.set(stuck)

    def redelivery(self) -> None:
        self.redeliveries.inc()

    def stuck_acks_cleared(self, count: int) -> None:
        self.stuck_acks_cleared_total.inc(count)
        self.consumer_stuck_acks.set(0)

    def set_memory(self, estimated_bytes: int) -> None:
        self.memory_state_bytes.set(estimated_bytes)

    def retention_sweep(self, removed: Mapping[str, int], seconds: float) -> None:
        """Count what one retention sweep removed (kinds of `RETENTION_KINDS`) and its time."""
        for kind, count in removed.items():
            self.retention_removed.labels(kind=_check("kind", kind, RETENTION_KINDS)).inc(count)
        self.retention_sweep_seconds.observe(seconds)
        self.retention_sweeps.labels(outcome="ok").inc()

    def retention_failed(self) -> None:
        self.retention_sweeps.labels(outcome="failed").inc()

    def follow_stall(self, is_stalled: Callable[[], bool]) -> None:
        """`tradecache_ingest_stalled` is read from `is_stalled` at each scrape."""
        self.ingest_stalled.set_function(lambda: 1.0 if is_stalled() else 0.0)

    def follow_build_worker(self, is_up: Callable[[], bool], share: Callable[[], float]) -> None:
        """`tradecache_load_build_worker_up` and `_share` are read from `is_up` and `share` at each scrape."""
        self.build_worker_up.set_function(lambda: 1.0 if is_up() else 0.0)
        self.build_worker_share.set_function(share)

    def build_worker_failed(self) -> None:
        self.build_worker_failures.inc()

    def follow_readiness(self, is_ready: Callable[[], bool]) -> None:
        """`tradecache_ready` is read from `is_ready` at each scrape."""
        self.ready.set_function(lambda: 1.0 if is_ready() else 0.0)

    def render(self) -> bytes:
        """This registry in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)


__all__ = [
    "BATCH_BUCKETS",
    "COLLECTIONS",
    "EVENT_OUTCOMES",
    "KINDS",
    "LATENCY_BUCKETS",
    "LOAD_ENDPOINTS",
    "LOAD_OUTCOMES",
    "MESSAGE_TYPE_LABELS",
    "MIXED_KIND",
    "OTHER",
    "RETENTION_KINDS",
    "SHED_REASONS",
    "EventOutcome",
    "LoadOutcome",
    "Metrics",
    "ShedReason",
    "observe_many",
]
