"""The compiled Struct decoders (`_struct_decode.c`), or None: where the build had no C compiler,
or where `TRADECACHE_PURE_PYTHON=1` asks for the Python paths (for a suspected fault in it, and
for the tests, which compare both). Everything it does has a Python path that gives the same
results (`msgpack.compile_decoder` writes it)."""

from __future__ import annotations

import os
from types import ModuleType


def pure_python() -> bool:
    """Whether TRADECACHE_PURE_PYTHON asks for the Python paths instead of the compiled modules."""
    return os.environ.get("TRADECACHE_PURE_PYTHON", "") not in ("", "0")


def _load() -> ModuleType | None:
    if pure_python():
        return None
    try:
        from tradecache.serialization import _struct_decode
    except ImportError:
        return None
    return _struct_decode


struct_decode: ModuleType | None = _load()
