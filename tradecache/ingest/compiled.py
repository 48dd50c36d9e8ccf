"""The compiled frame reader (`_frames.c`), or None: where the build had no C compiler, or where
`TRADECACHE_PURE_PYTHON=1` asks for the Python paths (for a suspected fault in it, and for the
tests, which run both). Everything it does has a Python path that gives the same results."""

from __future__ import annotations

from types import ModuleType

from tradecache.serialization.compiled import pure_python


def _load() -> ModuleType | None:
    if pure_python():
        return None
    try:
        from tradecache.ingest import _frames
    except ImportError:
        return None
    return _frames


frames: ModuleType | None = _load()
