"""A cache database for the node that loads from the sidecar's Redis and never writes to it.

With tradecache, the sidecar is the one writer of the trader's keys: a node writing the same
keys as well appends every event a second time (the node then refuses to start: "duplicate
event"), and the sidecar sees the node's copies as duplicates and indexes nothing. NautilusTrader
has no read-only switch, so `ReadOnlyCacheDatabase` is its `CacheDatabaseAdapter` with every
write method turned into a no-op: loads are the adapter's own, untouched, so the node reads the
sidecar's Redis (written with `redis.layout: nautilus`) as if it had written it itself.

One write is not simply dropped: `update_strategy`, the node saving a strategy's state, is
handed to the `TradecacheBridge` of the same trader (see `registry.py`), which publishes it to
the sidecar like any other message.

NautilusTrader builds its cache database inside the kernel, from `CacheConfig.database`;
`install_read_only_cache_database()` makes the kernel build this class instead. Call it once,
before the node (or BacktestEngine) is built.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import nautilus_trader.system.kernel as kernel_module
from nautilus_trader.cache.database import CacheDatabaseAdapter

from tradecache.nautilus.registry import strategy_saved

log = logging.getLogger("tradecache.nautilus")

# Every method of NautilusTrader's cache database facade that writes (1.221 to 1.231).
WRITE_METHODS: Final = (
    "add",
    "add_currency",
    "add_instrument",
    "add_synthetic",
    "add_account",
    "add_order",
    "add_position",
    "index_venue_order_id",
    "index_order_position",
    "update_account",
    "update_order",
    "update_position",
    "update_actor",
    "snapshot_order_state",
    "snapshot_position_state",
    "delete_order",
    "delete_position",
    "delete_account_event",
    "delete_actor",
    "delete_strategy",
    "heartbeat",
)


def _ignore_write(name: str) -> Any:
    def ignored(self: Any, *args: Any, **kwargs: Any) -> None:
        self.ignored_writes += 1

    ignored.__name__ = name
    ignored.__doc__ = f"Does nothing: the sidecar writes this trader's keys ({name} is one of the node's writes)."
    return ignored


class ReadOnlyCacheDatabase(CacheDatabaseAdapter):  # type: ignore[misc]  # NautilusTrader has no type stubs
    """NautilusTrader's Redis cache database with its writes turned off (see the module docstring)."""

    def __init__(self, trader_id: Any, instance_id: Any, serializer: Any, config: Any = None) -> None:
        super().__init__(trader_id=trader_id, instance_id=instance_id, serializer=serializer, config=config)
        self.trader_id_value: str = trader_id.value
        self.ignored_writes = 0
        self.strategy_saves = 0

    def flush(self) -> None:
        """Does nothing: flushing would delete the sidecar's data (`CacheConfig.flush_on_start`)."""
        log.warning("tradecache: the node asked to flush its cache database; ignored (the sidecar owns it)")

    def update_strategy(self, strategy: Any) -> None:
        """Hands the strategy's saved state to this trader's TradecacheBridge (nothing is written here)."""
        state = {str(key): bytes(value) for key, value in strategy.save().items()}
        self.strategy_saves += 1
        if not strategy_saved(self.trader_id_value, strategy.id.value, state):
            log.warning(
                f"tradecache: state of strategy {strategy.id.value} saved while no TradecacheBridge of trader "
                f"{self.trader_id_value} runs; it is not stored"
            )


for _name in WRITE_METHODS:
    setattr(ReadOnlyCacheDatabase, _name, _ignore_write(_name))

_original_adapter: Any = None


def install_read_only_cache_database() -> None:
    """Make NautilusTrader's kernel build `ReadOnlyCacheDatabase` for `CacheConfig.database`.

    Call once before building the node; calling it again does nothing.
    """
    global _original_adapter
    if kernel_module.CacheDatabaseAdapter is ReadOnlyCacheDatabase:
        return
    _original_adapter = kernel_module.CacheDatabaseAdapter
    kernel_module.CacheDatabaseAdapter = ReadOnlyCacheDatabase


def uninstall_read_only_cache_database() -> None:
    """Give the kernel NautilusTrader's own cache database back."""
    global _original_adapter
    if _original_adapter is not None:
        kernel_module.CacheDatabaseAdapter = _original_adapter
        _original_adapter = None


__all__ = [
    "WRITE_METHODS",
    "ReadOnlyCacheDatabase",
    "install_read_only_cache_database",
    "uninstall_read_only_cache_database",
]
