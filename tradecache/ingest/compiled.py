"""The compiled frame reader (`_frames.c`), or None: where the build had no C compiler, or where
`TRADECACHE_PURE_PYTHON=1` asks for the Python paths (for a suspected fault in it, and for the
tests, which run both). Everything it does has a Python path that gives the same results."""

from __future__ import annotations

from types import ModuleType

from tradecache.serialization.compiled import load

frames: ModuleType | None = load("tradecache.ingest._frames")
