"""What the load service needs from the process it runs in, given to it by the app.

`LoadStore` is the Redis access the `Loader` reads through (the daemon passes its
`cache.aio.Store`); `LoadMetrics` is what `LoadService` counts (the daemon passes its Prometheus
`Metrics`). So the service imports neither the daemon nor prometheus_client, and a test can give
it any object with these methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

from tradecache.model.ledger import Collection

LoadOutcome = Literal["ok", "not_found", "error"]
# Load requests not served: answered 429 at once (`busy`), or dropped with no reply subject.
ShedReason = Literal["busy", "no_reply"]


class LoadStore(Protocol):
    """The reads a load request makes (one trader's Redis); each raises `StoreUnavailable` when
    Redis cannot answer."""

    async def read_entity(self, collection: Collection, entity_id: str) -> Any: ...

    async def read_ids(self, collection: Collection, after: str | None, count: int | None) -> list[str]: ...

    async def read_entities(self, collection: Collection, ids: Sequence[str]) -> list[Any]: ...

    async def read_instruments(self, instrument_ids: Iterable[str]) -> dict[str, bytes]: ...

    async def count(self, collection: Collection) -> int: ...

    @property
    def commits(self) -> int:
        """Writes committed so far by this process (any number that changes with each)."""
        ...


class LoadMetrics(Protocol):
    """The load service's counters (SPEC section 4, plus shed requests)."""

    def load_request(self, endpoint: str, outcome: LoadOutcome, seconds: float) -> None: ...

    def load_shed(self, endpoint: str, reason: ShedReason) -> None: ...


__all__ = ["LoadMetrics", "LoadOutcome", "LoadStore", "ShedReason"]
