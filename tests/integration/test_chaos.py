"""Chaos, CI size: ~10k events while the daemon is SIGKILLed 5 times and Redis and NATS restart once.

The scenario and every check are in `tests/chaos.py` (also run at full size by `scripts/chaos.py`).
Redis is SIGKILLed and restarted under load, so the test runs once per Redis line (tests/lines.py).
The seed is fixed so a failure can be replayed (`TRADECACHE_CHAOS_SEED` overrides it; the seed
decides the feed, the fault kinds, their points and delays, not the timing).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.backends import Announce
from tests.chaos import ChaosPlan, run_chaos
from tests.lines import ServerLine

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("TRADECACHE_CHAOS_SEED", "20240607"))
PLAN = ChaosPlan(events=10_000, kills=5, redis_restarts=1, nats_restarts=1, seed=SEED, timeout=150.0)


async def test_chaos_loses_and_duplicates_nothing(announce: Announce, redis_line: ServerLine) -> None:
    report = await run_chaos(dataclasses.replace(PLAN, redis_binary=redis_line.binary), say=announce)
    for line in report.lines():
        announce(line)
    comparison = report.comparison
    # Every fault of the plan happened.
    assert sum(report.kills.values()) == PLAN.kills
    assert (report.redis_restarts, report.nats_restarts) == (PLAN.redis_restarts, PLAN.nats_restarts)
    # The daemon never died by itself and stopped cleanly at the end.
    assert report.unexpected_exits == 0
    assert report.daemon_exit_code == 0
    # The stream holds each message once, in feed order, despite retried publishes.
    assert report.stream_messages == PLAN.events
    assert report.stream_in_feed_order
    # Nothing acked before it was written; everything acked at the end; nothing dead-lettered.
    assert report.monitor_samples > 0
    assert report.ack_violations == []
    assert report.acked_to == PLAN.events
    assert report.dead_letters == 0
    # Redis equals a clean run of the same stream, key by key: zero lost, zero duplicated.
    assert comparison.events_expected > PLAN.events  # fills go to their order and their position
    assert comparison.duplicates == 0
    assert comparison.lost == 0
    assert comparison.equal, comparison.problems()
    assert comparison.events_found == comparison.events_expected
    assert report.ok
