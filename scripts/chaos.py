#!/usr/bin/env python3
"""Chaos, full size (not CI): lose nothing and duplicate nothing while everything fails.

Publishes N events in a realistic mix (orders placed, amended, filled, canceled, rejected; fills
with positions that grow, close and flip; account states; commands; strategy state) with
JetStream acks and `Nats-Msg-Id`, retrying while NATS is down, into the daemon (a subprocess)
while, at random points drawn from the seed, the daemon is SIGKILLed K times (some at the exact
point between a commit and its ack) and restarted, Redis (appendfsync always) is SIGKILLed
and restarted R times and NATS restarted R times. At the end every key of the trader in Redis
must equal a clean run of the same stream through the pure core.

The same code path as the CI test tests/integration/test_chaos.py (both use tests/chaos.py).

    .venv/bin/python scripts/chaos.py                       # 100k events, 20 kills, 3 + 3 restarts
    .venv/bin/python scripts/chaos.py --events 20000 --kills 5 --seed 7

Prints the seed, the fault schedule, the counts (events, kills, restarts, publish retries, final
list lengths, duplicates found, lost) and exits 1 when anything differs from the clean run.
Private redis-server and nats-server processes are started on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.chaos import ChaosPlan, run_chaos  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="messages published (default 100000)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the daemon (default 20)")
    parser.add_argument("--redis-restarts", type=int, default=3, help="SIGKILL+restarts of Redis (default 3)")
    parser.add_argument("--nats-restarts", type=int, default=3, help="restarts of NATS (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and printed)")
    parser.add_argument(
        "--rate", type=float, default=1500.0, help="published messages per second; 0: as fast as acks (default 1500)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--keep-log", action="store_true", help="keep the daemon's log (kept anyway on failure)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    plan = ChaosPlan(
        events=args.events,
        kills=args.kills,
        redis_restarts=args.redis_restarts,
        nats_restarts=args.nats_restarts,
        seed=seed,
        rate=args.rate or None,
        timeout=args.timeout,
        keep_log=args.keep_log,
    )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"seed {seed} (replay with --seed {seed})", flush=True)
    report = asyncio.run(run_chaos(plan, say=lambda line: print(line, flush=True)))
    print()
    for line in report.lines():
        print(line)
    if not report.comparison.equal:
        print(f"differences: {report.comparison.problems()}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
