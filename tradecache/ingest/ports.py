"""What ingest needs from the process it runs in, given to it by the app (`daemon/app.py`).

Ingest counts what it does through `IngestMetrics`; the daemon passes its Prometheus `Metrics`,
which has these methods, and a test may pass anything else that has them. So ingest imports
neither prometheus_client nor the daemon.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Literal, Protocol

EventOutcome = Literal["written", "duplicate", "dead_lettered"]


class IngestMetrics(Protocol):
    """The counters and gauges the ingest loop updates (SPEC section 4)."""

    def event(self, kind: str, type_name: str, outcome: EventOutcome, n: int = 1) -> None: ...

    def event_lag(self, kind: str, seconds: float) -> None: ...

    def count_events(self, counts: Mapping[tuple[str, str, str], int]) -> None: ...

    def event_lags(self, kind: str, seconds: Iterable[float]) -> None: ...

    def commit_duration(self, kinds: AbstractSet[str], seconds: float) -> None: ...

    def batch(self, size: int) -> None: ...

    def set_pending(self, pending: int) -> None: ...

    def divergence(self) -> None: ...

    def dead_letter(self, reason: str) -> None: ...

    def set_redis_up(self, up: bool) -> None: ...

    def set_lease(self, *, held: bool, standby: bool) -> None: ...

    def set_consumer(self, undelivered: int, ack_pending: int, redelivered: int, stuck: int) -> None: ...

    def redelivery(self) -> None: ...

    def stuck_acks_cleared(self, count: int) -> None: ...

    def set_memory(self, estimated_bytes: int) -> None: ...


__all__ = ["EventOutcome", "IngestMetrics"]
