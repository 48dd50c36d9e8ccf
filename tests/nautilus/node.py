"""A NautilusTrader node in its own process, driven by tests/nautilus/test_nautilus_node.py.

Runs with the Python of a venv that has NautilusTrader (1.221 in .venv, 1.231 in
.venv-nautilus-1.231) and writes what the node holds as JSON, in the vectors' `expected` formats
(see tests/data/vectors/README.md), so the test can compare it with what tradecache loads:

    python -m tests.nautilus.node trade  --trader T --redis HOST:PORT --nats URL --out FILE
        the scenario with TradecacheBridge and the read-only cache database (the sidecar's Redis)
    python -m tests.nautilus.node fresh  --trader T --redis HOST:PORT --out FILE
        a new node (read-only cache database) loading from that Redis; nothing traded
    python -m tests.nautilus.node own-db --trader T --redis HOST:PORT --out FILE
        the scenario with NautilusTrader's own cache database writing Redis, then a new node's load
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
from pathlib import Path
from typing import Any

import msgspec
import nautilus_trader
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.cache.database import CacheDatabaseAdapter
from nautilus_trader.common.config import DatabaseConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.currencies import AUD, USD
from nautilus_trader.model.enums import (
    account_type_to_str,
    order_side_to_str,
    order_status_to_str,
    order_type_to_str,
    position_side_to_str,
)
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.serialization.serializer import MsgSpecSerializer

from tests.nautilus.trading import ScenarioConfig, ScenarioStrategy, build_engine, run_scenario
from tradecache.nautilus import (
    TradecacheBridge,
    TradecacheBridgeConfig,
    install_read_only_cache_database,
    uninstall_read_only_cache_database,
)
from tradecache.nautilus.taps import EndpointTap

SERIALIZER = MsgSpecSerializer(encoding=msgspec.msgpack, timestamps_as_str=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def order_summary(order: Any) -> dict[str, Any]:
    summary = {
        "status": order_status_to_str(order.status),
        "order_type": order_type_to_str(order.order_type),
        "side": order_side_to_str(order.side),
        "quantity": str(order.quantity),
        "filled_qty": str(order.filled_qty),
        "leaves_qty": str(order.leaves_qty),
        "avg_px": repr(float(order.avg_px or 0.0)),
        "is_open": order.is_open,
        "is_closed": order.is_closed,
        "event_count": order.event_count,
        "last_event_type": type(order.last_event).__name__,
        "venue_order_id": _or_none(order.venue_order_id),
        "position_id": _or_none(order.position_id),
    }
    if getattr(order, "has_price", False):
        summary["price"] = _or_none(order.price)
    if getattr(order, "has_trigger_price", False):
        summary["trigger_price"] = _or_none(order.trigger_price)
    return summary


def position_summary(position: Any) -> dict[str, Any]:
    return {
        "instrument_id": position.instrument_id.value,
        "side": position_side_to_str(position.side),
        "signed_qty": repr(float(position.signed_qty)),
        "quantity": str(position.quantity),
        "peak_qty": str(position.peak_qty),
        "avg_px_open": repr(float(position.avg_px_open)),
        "avg_px_close": repr(float(position.avg_px_close or 0.0)),
        "realized_pnl": _or_none(position.realized_pnl),
        "commissions": [str(money) for money in position.commissions()],
        "is_open": position.is_open,
        "is_closed": position.is_closed,
        "opening_order_id": position.opening_order_id.value,
        "closing_order_id": _or_none(position.closing_order_id),
        "ts_opened": str(position.ts_opened),
        "ts_closed": str(position.ts_closed or 0),
    }


def account_summary(account: Any) -> dict[str, Any]:
    return {
        "account_type": account_type_to_str(account.type),
        "base_currency": None if account.base_currency is None else account.base_currency.code,
        "balances": {
            currency.code: {"total": str(b.total), "locked": str(b.locked), "free": str(b.free)}
            for currency, b in account.balances().items()
        },
    }


def currencies_of(cache: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for instrument in cache.instruments():
        for currency in (instrument.get_base_currency(), instrument.quote_currency):
            if currency is not None:
                found[currency.code] = currency
    for account in cache.accounts():
        for currency in account.currencies():
            found[currency.code] = currency
    return {code: currency_fields(c) for code, c in found.items()}


def currency_fields(currency: Any) -> dict[str, Any]:
    return {
        "precision": currency.precision,
        "iso4217": currency.iso4217,
        "name": currency.name,
        "currency_type": currency.currency_type.name,
    }


def dump(cache: Any, strategies: list[Any]) -> dict[str, Any]:
    """Everything the node's cache holds, in comparable forms."""
    return {
        "version": nautilus_trader.__version__,
        "orders": {
            order.client_order_id.value: {
                "summary": order_summary(order),
                "events": [_b64(SERIALIZER.serialize(event)) for event in order.events],
                "strategy_id": order.strategy_id.value,
            }
            for order in cache.orders()
        },
        "positions": {position.id.value: position_summary(position) for position in cache.positions()},
        "accounts": {
            account.id.value: {
                "summary": account_summary(account),
                "event_ids": [event.id.value for event in account.events],
            }
            for account in cache.accounts()
        },
        "instruments": {
            instrument.id.value: _b64(SERIALIZER.serialize(instrument)) for instrument in cache.instruments()
        },
        "currencies": currencies_of(cache),
        "strategies": {
            strategy.id.value: {key: _b64(value) for key, value in strategy.save().items()} for strategy in strategies
        },
        "order_lists": sorted(order_list.id.value for order_list in cache.order_lists()),
    }


def _redis(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def trade(args: argparse.Namespace) -> dict[str, Any]:
    install_read_only_cache_database()
    bridge = TradecacheBridge(TradecacheBridgeConfig(nats_url=args.nats, stop_timeout=60.0))
    engine = build_engine(args.trader, _redis(args.redis), [bridge])
    commands: dict[str, str] = {}  # every command the risk engine receives, as the node serializes it

    def record(command: Any) -> None:
        commands[command.id.value] = _b64(SERIALIZER.serialize(command))

    recorder = EndpointTap(engine.kernel.msgbus, "RiskEngine.execute", record, logging.getLogger("node"))
    assert recorder.install()
    strategy = run_scenario(engine)
    result = dump(engine.cache, [strategy])
    result["commands"] = commands
    engine.dispose()  # the bridge drains its queue and disconnects
    stats = bridge.final_stats
    result["bridge"] = None if stats is None else dict(vars(stats).items())
    return result


def fresh(args: argparse.Namespace) -> dict[str, Any]:
    install_read_only_cache_database()
    engine = build_engine(args.trader, _redis(args.redis), [])  # loads the cache from Redis
    strategy = ScenarioStrategy(ScenarioConfig())
    engine.add_strategy(strategy)
    engine.cache.load_strategy(strategy)
    result = dump(engine.cache, [strategy])
    result["integrity"] = engine.cache.check_integrity()
    engine.dispose()
    return result


def currencies_loaded(args: argparse.Namespace) -> dict[str, Any]:
    """The currencies NautilusTrader's own cache database loads from Redis."""
    host, port = _redis(args.redis)
    adapter = CacheDatabaseAdapter(
        trader_id=TraderId(args.trader),
        instance_id=UUID4(),
        serializer=SERIALIZER,
        config=CacheConfig(database=DatabaseConfig(host=host, port=port)),
    )
    try:
        return {code: currency_fields(currency) for code, currency in adapter.load_currencies().items()}
    finally:
        adapter.close()


def own_db(args: argparse.Namespace) -> dict[str, Any]:
    uninstall_read_only_cache_database()
    writer = build_engine(args.trader, _redis(args.redis), [])
    for currency in (AUD, USD):
        writer.cache.add_currency(currency)  # written by NautilusTrader's cache database
    strategy = run_scenario(writer)
    written = dump(writer.cache, [strategy])
    writer.dispose()  # closes NautilusTrader's cache database: its writes are flushed
    reader = build_engine(args.trader, _redis(args.redis), [])
    loaded_strategy = ScenarioStrategy(ScenarioConfig())
    reader.add_strategy(loaded_strategy)
    reader.cache.load_strategy(loaded_strategy)
    result = dump(reader.cache, [loaded_strategy])
    result["integrity"] = reader.cache.check_integrity()
    result["currencies"] = currencies_loaded(args)
    result["written"] = written
    reader.dispose()
    return result


COMMANDS = {"trade": trade, "fresh": fresh, "own-db": own_db}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tests.nautilus.node")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--trader", required=True)
    parser.add_argument("--redis", required=True, help="HOST:PORT")
    parser.add_argument("--nats", help="the sidecar's NATS URL (trade)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    result = COMMANDS[args.command](args)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
