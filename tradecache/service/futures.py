"""Futures no one awaits any more (a read not needed after all, a job given up): their outcome is
taken, so that asyncio does not log an error nobody retrieved."""

from __future__ import annotations

import asyncio
from typing import Any


def retrieved(work: asyncio.Future[Any]) -> None:
    """Take the outcome of work no one waits for (asyncio would log its error as never retrieved)."""
    if not work.cancelled():
        work.exception()


__all__ = ["retrieved"]
