"""`tradecache run` with a test hook: the daemon stops before acknowledging its N-th commit.

Run as `python -m tests.integration.paused_daemon --pause-after N --config FILE` (what
`DaemonProcess(..., pause_after=N)` starts). It logs `PAUSED_LOG` and waits for ever with the
commit in Redis and its deliveries unacknowledged; the test then kills it (SIGKILL) and checks
that the next daemon loses and duplicates nothing. The hook is given to the daemon
(`IngestHooks`), never read from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Final

from tradecache.config import load_config
from tradecache.daemon.app import Daemon
from tradecache.ingest.hooks import IngestHooks
from tradecache.logs import configure_logging

PAUSED_LOG: Final = "test hook: paused after commit, before ack"


def pause_after(commits: int, log: logging.Logger) -> IngestHooks:
    """Hooks that stop the loop for ever once `commits` commits are made, before their ack."""

    async def after_commit(made: int) -> None:
        if made >= commits:
            log.warning(PAUSED_LOG, extra={"commits": made})
            await asyncio.Event().wait()

    return IngestHooks(after_commit=after_commit)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="paused_daemon")
    parser.add_argument("--config", required=True)
    parser.add_argument("--pause-after", type=int, required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config, os.environ)
    configure_logging(config.logging.level, config.logging.format)
    hooks = pause_after(args.pause_after, logging.getLogger("tradecache"))
    return asyncio.run(Daemon(config, ingest_hooks=hooks).run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
