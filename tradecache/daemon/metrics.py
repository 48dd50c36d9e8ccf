"""Prometheus metrics of SPEC section 4, on a registry of their own (one per daemon).

Callers use the typed methods below and never touch label plumbing. Label sets known in
advance are created at zero so every metric is in the first scrape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tradecache import __version__
from tradecache.errors import RejectReason

# From 50 us to 5 s: the client's defaults start at 5 ms, above most of what is measured here.
LATENCY_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS: Final = tuple(float(2**n) for n in range(14))  # 1 .. 8192
COLLECTIONS: Final = ("currencies", "instruments", "accounts", "orders", "positions", "strategies", "commands")
KINDS: Final = ("currency", "instrument", "order", "position", "account", "command", "strategy")


class Metrics:
    """Every tradecache metric, registered on `registry` (a fresh one when None)."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = __version__) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "tradecache_events", "Messages handled, by kind, type and outcome", ["kind", "type", "outcome"], registry=r
        )
        self.write_duration_seconds = Histogram(
            "tradecache_write_duration_seconds", "Time of the Redis write carrying the event", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.event_lag_seconds = Histogram(
            "tradecache_event_lag_seconds", "From publish (JetStream timestamp) to durable in Redis", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r,
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
            "tradecache_consumer_pending_messages",
            "Messages in the stream not yet delivered to the consumer",
            registry=r,
        )
        self.position_divergence = Counter(
            "tradecache_position_divergence", "Position events that disagree with the stored fills", registry=r
        )
        self.redis_up = Gauge("tradecache_redis_up", "1 when the last Redis operation succeeded", registry=r)
        self.nats_connected = Gauge("tradecache_nats_connected", "1 while connected to NATS", registry=r)
        self.build_info = Gauge("tradecache_build_info", "Build information", ["version"], registry=r)
        self.dead_letters = Counter(
            "tradecache_dead_letters", "Messages sent to the dead-letter subject, by reason", ["reason"], registry=r
        )
        self.build_info.labels(version=version).set(1)
        for collection in COLLECTIONS:
            self.keys.labels(collection=collection)
        for reason in RejectReason:
            self.dead_letters.labels(reason=reason.value)
        for kind in KINDS:
            self.write_duration_seconds.labels(kind=kind)
            self.event_lag_seconds.labels(kind=kind)

    def event(self, kind: str, type_name: str, outcome: str, n: int = 1) -> None:
        self.events.labels(kind=kind, type=type_name, outcome=outcome).inc(n)

    def write_duration(self, kind: str, seconds: float) -> None:
        self.write_duration_seconds.labels(kind=kind).observe(seconds)

    def event_lag(self, kind: str, seconds: float) -> None:
        self.event_lag_seconds.labels(kind=kind).observe(seconds)

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def set_keys(self, counts: Mapping[str, int]) -> None:
        for collection, count in counts.items():
            self.keys.labels(collection=collection).set(count)

    def load_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.load_requests.labels(endpoint=endpoint, outcome=outcome).inc()
        self.load_duration_seconds.labels(endpoint=endpoint).observe(seconds)

    def set_pending(self, pending: int) -> None:
        self.consumer_pending.set(pending)

    def divergence(self) -> None:
        self.position_divergence.inc()

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason=reason).inc()

    def set_redis_up(self, up: bool) -> None:
        self.redis_up.set(1 if up else 0)

    def set_nats_connected(self, connected: bool) -> None:
        self.nats_connected.set(1 if connected else 0)

    def render(self) -> bytes:
        rendered: bytes = generate_latest(self.registry)
        return rendered


__all__ = ["BATCH_BUCKETS", "COLLECTIONS", "LATENCY_BUCKETS", "Metrics"]
