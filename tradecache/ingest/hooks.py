"""Points where a test steps into the ingest loop, given to the daemon (`Daemon(config, ingest_hooks=...)`).

Production passes none. They are injected rather than read from the environment, so nothing a
deployment sets can reach them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class IngestHooks:
    # Awaited after each commit, before the deliveries it holds are acknowledged, with the number
    # of commits this process made so far. A test pauses here and kills the process, to check that
    # a commit without its ack loses and duplicates nothing.
    after_commit: Callable[[int], Awaitable[None]] | None = None


__all__ = ["IngestHooks"]
