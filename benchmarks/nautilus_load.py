"""NautilusTrader's own `CacheDatabaseAdapter.load_orders()` on a Redis that tradecache filled.

Run as a process of its own (NautilusTrader keeps process-wide state: its logger, a runtime, the
currency registry), by `load_bench.py` and `scale_bench.py`; prints one JSON line:
{"orders": n, "seconds": s, "version": "1.221.0"}.

Usage: python benchmarks/nautilus_load.py REDIS_URL TRADER_ID
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlparse


def measure(redis_url: str, trader: str) -> dict[str, Any]:
    import msgspec
    import nautilus_trader
    from nautilus_trader.cache.config import CacheConfig
    from nautilus_trader.cache.database import CacheDatabaseAdapter
    from nautilus_trader.common.config import DatabaseConfig
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.identifiers import TraderId
    from nautilus_trader.serialization.serializer import MsgSpecSerializer

    url = urlparse(redis_url)
    adapter = CacheDatabaseAdapter(
        trader_id=TraderId(trader),
        instance_id=UUID4(),
        serializer=MsgSpecSerializer(encoding=msgspec.msgpack, timestamps_as_str=True),
        config=CacheConfig(database=DatabaseConfig(host=url.hostname, port=url.port)),
    )
    try:
        started = time.perf_counter()
        orders = adapter.load_orders()
        seconds = time.perf_counter() - started
    finally:
        adapter.close()
    return {"orders": len(orders), "seconds": seconds, "version": nautilus_trader.__version__}


def run(redis_url: str, trader: str) -> dict[str, Any]:
    """`measure` in a process of its own."""
    done = subprocess.run([sys.executable, __file__, redis_url, trader], capture_output=True, text=True,
                          timeout=3600, check=False)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"NautilusTrader's load_orders() failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2])), flush=True)
