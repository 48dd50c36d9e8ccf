"""The compiled modules, each or None: where the build had no C compiler, or where
`TRADECACHE_PURE_PYTHON=1` asks for the Python paths (for a suspected fault in one, and for the
tests, which compare both). Everything they do has a Python path that gives the same results:
`_struct_decode.c` runs the Struct decoders `msgpack.compile_decoder` writes (`struct_decode`
here); `ingest/_frames.c` reads NATS frames (`ingest/compiled.py` loads it with `load`)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def pure_python() -> bool:
    """Whether TRADECACHE_PURE_PYTHON asks for the Python paths instead of the compiled modules."""
    return os.environ.get("TRADECACHE_PURE_PYTHON", "") not in ("", "0")


def load(name: str) -> ModuleType | None:
    """The compiled module `name`, or None (not built, or the Python paths asked for)."""
    if pure_python():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


struct_decode: ModuleType | None = load("tradecache.serialization._struct_decode")
