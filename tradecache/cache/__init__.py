"""Redis storage: key layout, the pure write plan, the atomic apply script and the Python API."""

from tradecache.cache.config import CacheDatabaseConfig
from tradecache.cache.database import RedisCacheDatabase
from tradecache.cache.keys import Keys

__all__ = ["CacheDatabaseConfig", "Keys", "RedisCacheDatabase"]
