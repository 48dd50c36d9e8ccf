"""Cost of ingest metrics per event: one `labels()` and `observe()` per event, beside per batch.

The per-event way is what the ingest loop did before (a `labels()` lookup and a lock per counter
increment and per lag observation); the per-batch way is `Metrics.count_events` and
`Metrics.event_lags`, as `Ingestor._record` calls them now. Both in the same run, on the same
batches (a realistic mix of kinds and types, 256 events each).

Usage: python benchmarks/metrics_bench.py [--events 200000] [--batch 256]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradecache.daemon.metrics import Metrics

MIX = [
    ("order", "OrderAccepted", 30), ("order", "OrderSubmitted", 20), ("order", "OrderFilled", 15),
    ("order", "OrderInitialized", 10), ("order", "OrderCanceled", 5), ("position", "PositionOpened", 5),
    ("account", "AccountState", 10), ("command", "SubmitOrder", 5),
]  # fmt: skip


def batches(events: int, size: int) -> list[list[tuple[str, str, float]]]:
    rng = random.Random(7)
    population = [(kind, type_name) for kind, type_name, weight in MIX for _ in range(weight)]
    made = []
    for start in range(0, events, size):
        made.append([(*rng.choice(population), rng.uniform(0.0005, 0.02)) for _ in range(min(size, events - start))])
    return made


def per_event(metrics: Metrics, work: list[list[tuple[str, str, float]]]) -> None:
    for batch in work:
        for kind, type_name, lag in batch:
            metrics.event(kind, type_name, "written")
            metrics.event_lag(kind, lag)


def per_batch(metrics: Metrics, work: list[list[tuple[str, str, float]]]) -> None:
    for batch in work:
        counts: Counter[tuple[str, str, str]] = Counter()
        lags: dict[str, list[float]] = {}
        for kind, type_name, lag in batch:
            counts[(kind, type_name, "written")] += 1
            lags.setdefault(kind, []).append(lag)
        metrics.count_events(counts)
        for kind, values in lags.items():
            metrics.event_lags(kind, values)


def timed(run: object, work: list[list[tuple[str, str, float]]], events: int) -> tuple[float, Metrics]:
    metrics = Metrics()
    started = time.perf_counter()
    run(metrics, work)  # type: ignore[operator]
    return (time.perf_counter() - started) / events * 1e6, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    work = batches(args.events, args.batch)
    timed(per_batch, work[:20], 20 * args.batch)  # warm up
    naive, first = timed(per_event, work, args.events)
    batched, second = timed(per_batch, work, args.events)
    same = _same(first, second)
    print(f"per event: {naive:.2f} us/event")
    print(f"per batch: {batched:.2f} us/event ({naive / batched:.1f}x less)")
    print(f"same exposition (counts, buckets, sums): {'yes' if same else 'NO'}")


def _same(first: Metrics, second: Metrics) -> bool:
    """Equal samples, sums compared to a relative 1e-9 (float additions in another order)."""
    def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect() for s in family.samples if not s.name.endswith("_created")
        }  # fmt: skip

    a, b = samples(first), samples(second)
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(a[k])) for k in a)


if __name__ == "__main__":
    main()
