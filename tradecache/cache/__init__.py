"""Redis storage: key layout, the pure write plan, the atomic apply script and the Python API.

The names below are loaded on first use (PEP 562), so importing a pure module of this package
(`cache.plan`, `cache.keys`) does not import redis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tradecache.cache.config import CacheDatabaseConfig
    from tradecache.cache.database import RedisCacheDatabase
    from tradecache.cache.keys import Keys

_WHERE = {
    "CacheDatabaseConfig": "tradecache.cache.config",
    "Keys": "tradecache.cache.keys",
    "RedisCacheDatabase": "tradecache.cache.database",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["CacheDatabaseConfig", "Keys", "RedisCacheDatabase"]
