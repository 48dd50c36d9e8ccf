"""tradecache inside a NautilusTrader node (`pip install 'tradecache[nautilus]'`).

- `TradecacheBridge` / `TradecacheBridgeConfig`: an Actor that publishes the node's events,
  commands, instruments, currencies and saved strategy states to the sidecar over NATS.
- `ReadOnlyCacheDatabase` and `install_read_only_cache_database()`: the node loads its state from
  the sidecar's Redis at start and never writes to it.

See docs/NAUTILUS.md. Only this package imports NautilusTrader; `import tradecache` never does.
"""

from __future__ import annotations

try:
    import nautilus_trader  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tradecache.nautilus needs NautilusTrader (>= 1.221): pip install 'tradecache[nautilus]'"
    ) from exc

from tradecache.nautilus.bridge import TradecacheBridge
from tradecache.nautilus.config import TradecacheBridgeConfig
from tradecache.nautilus.database import (
    ReadOnlyCacheDatabase,
    install_read_only_cache_database,
    uninstall_read_only_cache_database,
)

__all__ = [
    "ReadOnlyCacheDatabase",
    "TradecacheBridge",
    "TradecacheBridgeConfig",
    "install_read_only_cache_database",
    "uninstall_read_only_cache_database",
]
