"""Where the node's strategy-state saves meet the bridge.

A node saves strategy state only through its cache database (`Cache.update_strategy` calls the
database's `update_strategy`); nothing about it appears on the message bus. The read-only cache
database (`database.py`) therefore hands each save to the bridges running in the same process
for the same trader, through this registry. The bridge stays registered from its start until it
is disposed, because a node saves its strategies after it has stopped its actors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

StrategyStateListener = Callable[[str, dict[str, bytes]], None]  # (strategy id, state)

_lock = threading.Lock()
_listeners: dict[str, list[StrategyStateListener]] = {}


def add_listener(trader_id: str, listener: StrategyStateListener) -> None:
    with _lock:
        _listeners.setdefault(trader_id, []).append(listener)


def remove_listener(trader_id: str, listener: StrategyStateListener) -> None:
    with _lock:
        found = _listeners.get(trader_id, [])
        if listener in found:
            found.remove(listener)
        if not found:
            _listeners.pop(trader_id, None)


def strategy_saved(trader_id: str, strategy_id: str, state: dict[str, bytes]) -> int:
    """Tell the trader's bridges about a saved state; returns how many heard it."""
    with _lock:
        listeners = list(_listeners.get(trader_id, ()))
    for listener in listeners:
        listener(strategy_id, state)
    return len(listeners)


__all__ = ["StrategyStateListener", "add_listener", "remove_listener", "strategy_saved"]
