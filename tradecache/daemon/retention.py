"""The retention timer: a sweep of the trader's policy every `retention.sweep_interval` seconds,
while this daemon holds the trader's lease. I/O only: what to read and remove is planned by
`cache/retention.py`, whose `sweep` generator this module drives.

Each purge call is made under the pipeline's lock, so that it never falls between an ingest
chunk's read of stored state and that chunk's commit (a purge there would let the commit append
to an order the purge had just removed); the purge itself is fenced by the lease token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from tradecache.cache.keys import Keys
from tradecache.cache.plan import as_text
from tradecache.cache.purge_script import CLOCK_SCRIPT, PURGE_SCRIPT
from tradecache.cache.redis_errors import translated
from tradecache.cache.retention import (
    Clock,
    ClosedIds,
    IndexPage,
    ReadKeys,
    Request,
    RetentionPolicy,
    Sweep,
    SweepReport,
    sweep,
)
from tradecache.daemon.metrics import Metrics
from tradecache.errors import LeaseLost, StoreRefused, StoreUnavailable
from tradecache.ingest.lease import Lease

# The longest pause between two slices of a sweep (see `SweepExecutor.run`).
MAX_PAUSE: Final = 0.05


class SweepExecutor:
    """Answers a sweep's requests with one Redis round trip each (asyncio)."""

    def __init__(
        self, client: Any, keys: Keys, lock: contextlib.AbstractAsyncContextManager[None] | None = None
    ) -> None:
        self.client = client
        self.keys = keys
        self.lock = lock or asyncio.Lock()
        self._clock = client.register_script(CLOCK_SCRIPT)
        self._purge = client.register_script(PURGE_SCRIPT)

    async def run(self, steps: Sweep) -> SweepReport:
        """Drive `steps` to its end; raises StoreUnavailable, StoreRefused or LeaseLost.

        After each slice it pauses as long as the slice took: a sweep then takes at most half of
        the event loop, so ingest keeps its latency while thousands of entities go."""
        request: Request = next(steps)
        started = time.perf_counter()
        while True:
            with translated("retention sweep"):
                answer = await self.answer(request)
            try:
                request = steps.send(answer)
            except StopIteration as done:
                report: SweepReport = done.value
                return report
            if isinstance(request, ClosedIds | IndexPage):  # a new slice begins
                await asyncio.sleep(min(time.perf_counter() - started, MAX_PAUSE))
                started = time.perf_counter()

    async def answer(self, request: Request) -> Any:
        if isinstance(request, Clock):
            return int(await self._clock(keys=[self.keys.lease()]))
        if isinstance(request, ClosedIds):
            found = await self.client.zrangebyscore(request.key, "-inf", request.cutoff_ms, start=0, num=request.limit)
            return [as_text(item) for item in found]
        if isinstance(request, IndexPage):
            start = "-" if request.after is None else "(" + request.after
            return [as_text(item) for item in await self.client.zrangebylex(request.key, start, "+", 0, request.limit)]
        if isinstance(request, ReadKeys):
            pipe = self.client.pipeline(transaction=False)
            for read in request.reads:
                if read.command == "LRANGE":
                    pipe.lrange(read.key, 0, read.count - 1 if read.count > 0 else -1)
                elif read.command == "GET":
                    pipe.get(read.key)
                elif read.command == "HGET":
                    pipe.hget(read.key, read.field)
                else:
                    pipe.llen(read.key)
            return await pipe.execute()
        async with self.lock:  # a Purge: never inside an ingest chunk
            return await self._purge(keys=request.keys, args=request.args)


class Retention:
    """Sweeps `policy` over the trader every `interval` seconds while `lease` is held."""

    def __init__(
        self,
        executor: SweepExecutor,
        policy: RetentionPolicy,
        interval: float,
        metrics: Metrics,
        log: logging.Logger,
        lease: Lease | None = None,
    ) -> None:
        self.executor = executor
        self.policy = policy
        self.interval = interval
        self.metrics = metrics
        self.log = log
        self.lease = lease

    async def run(self, stopping: asyncio.Event) -> None:
        if not self.policy.enabled:
            return
        self.log.info("retention on", extra={"policy": str(self.policy), "interval": self.interval})
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.interval)
            if stopping.is_set():
                return
            await self.sweep_once()

    async def sweep_once(self) -> SweepReport | None:
        """One sweep, if this daemon holds the lease; None when it did not run or failed (logged)."""
        token = None if self.lease is None else self.lease.token
        if self.lease is not None and token is None:
            return None  # a standby: the lease holder sweeps
        started = time.perf_counter()
        try:
            report = await self.executor.run(sweep(self.policy, self.executor.keys, token))
        except (StoreUnavailable, StoreRefused, LeaseLost) as exc:
            self.metrics.retention_failed()
            self.log.warning("retention sweep not finished; the next one goes on", extra={"error": str(exc)})
            return None
        seconds = time.perf_counter() - started
        self.metrics.retention_sweep(report.removed(), seconds)
        if any(report.removed().values()):
            facts = {**report.removed(), "skipped": report.skipped, "calls": report.calls}
            self.log.info("retention sweep", extra={**facts, "seconds": round(seconds, 3)})
        return report


__all__ = ["Retention", "SweepExecutor"]
