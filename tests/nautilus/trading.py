"""A NautilusTrader backtest that exercises what the sidecar stores (runs inside NautilusTrader's venv).

One synthetic AUD/USD market on venue SIM (NETTING, a USD margin account), quotes of 100,000 a
side rising 0.00010 a tick, and a strategy that in turn:
- buys 120,000 at market (two fills: the top of the book holds 100,000) -> a position opens;
- places a limit buy far below the market and cancels it;
- sells 300,000 with a limit just above the bid: filled across ticks (partial fills), flipping
  the position from long to short (20,000 closed and 80,000 opened by one fill: unequal halves,
  since NautilusTrader 1.221 cannot load a position whose flip had equal halves), and saves its
  state (`cache.update_strategy`);
- places a stop buy of 180,000 above the market: triggered as prices rise, it closes the short;
- submits an order list (an entry and its take-profit), moves the entry's price (OrderUpdated; its
  ModifyOrder command is not stored) and cancels both.
Every fill updates the account. The node's cache database is whatever the kernel is told to
build (`CacheConfig.database`): NautilusTrader's own, or tradecache's read-only one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.common.config import DatabaseConfig, LoggingConfig
from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
from nautilus_trader.model.identifiers import InstrumentId, TraderId, Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

VENUE = Venue("SIM")
START = pd.Timestamp("2024-01-02T00:00:00", tz="UTC").value
STEP_NS = 1_000_000_000
TICKS = 60


class ScenarioConfig(StrategyConfig, frozen=True):  # type: ignore[misc,call-arg]
    instrument_id: str = "AUD/USD.SIM"


class ScenarioStrategy(Strategy):  # type: ignore[misc]
    """Trades the scenario of the module docstring, one step per quote tick."""

    def __init__(self, config: ScenarioConfig) -> None:
        super().__init__(config)
        self.instrument_id = InstrumentId.from_str(config.instrument_id)
        self.ticks = 0
        self.phase = "start"
        self.saves = 0

    def on_start(self) -> None:
        self.subscribe_quote_ticks(self.instrument_id)

    def on_save(self) -> dict[str, bytes]:
        return {"ticks": str(self.ticks).encode(), "phase": self.phase.encode(), "saves": str(self.saves).encode()}

    def on_load(self, state: dict[str, bytes]) -> None:
        self.ticks = int(state["ticks"].decode())
        self.phase = state["phase"].decode()
        self.saves = int(state["saves"].decode())

    def _qty(self, amount: int) -> Quantity:
        return Quantity.from_int(amount)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        self.ticks += 1
        factory = self.order_factory
        if self.ticks == 2:
            self.phase = "long"
            self.submit_order(factory.market(self.instrument_id, OrderSide.BUY, self._qty(120_000)))
        elif self.ticks == 4:
            order = factory.limit(self.instrument_id, OrderSide.BUY, self._qty(10_000), Price(tick.bid_price - 0.01, 5))
            self.submit_order(order)
            self._to_cancel = order
        elif self.ticks == 6:
            self.cancel_order(self._to_cancel)
        elif self.ticks == 8:
            self.phase = "flipping"
            price = Price(tick.bid_price.as_double() + 0.0001, 5)  # rests until the market reaches it
            sell = factory.limit(self.instrument_id, OrderSide.SELL, self._qty(300_000), price, TimeInForce.GTC)
            self.submit_order(sell)
        elif self.ticks == 20:
            self.phase = "short"
            self.saves += 1
            self.cache.update_strategy(self)  # the strategy saves its state while trading
            trigger = Price(tick.ask_price.as_double() + 0.0002, 5)
            self.submit_order(factory.stop_market(self.instrument_id, OrderSide.BUY, self._qty(180_000), trigger))
        elif self.ticks == 40:
            self.phase = "flat"
            entry = factory.limit(self.instrument_id, OrderSide.BUY, self._qty(20_000), Price(tick.bid_price - 0.02, 5))
            take_profit = factory.limit(
                self.instrument_id, OrderSide.SELL, self._qty(20_000), Price(tick.ask_price + 0.02, 5)
            )
            self._order_list = factory.create_list([entry, take_profit])
            self.submit_order_list(self._order_list)
        elif self.ticks == 42:
            entry = self._order_list.orders[0]
            self.modify_order(entry, price=Price(entry.price.as_double() - 0.001, 5))  # an OrderUpdated
        elif self.ticks == 44:
            for order in self._order_list.orders:
                if order.is_open:
                    self.cancel_order(order)


def quotes(instrument: Any) -> list[QuoteTick]:
    """Bid 0.70000 + 0.0001 per tick, ask 0.2 pips above, 100,000 a side: the resting sell limit
    is reached a tick after it is placed and the stop a few ticks after it is placed."""
    ticks = []
    for index in range(TICKS):
        bid = round(0.70000 + 0.0001 * index, 5)
        ts = START + index * STEP_NS
        ticks.append(
            QuoteTick(
                instrument_id=instrument.id,
                bid_price=Price(bid, 5),
                ask_price=Price(round(bid + 0.00002, 5), 5),
                bid_size=Quantity.from_int(100_000),
                ask_size=Quantity.from_int(100_000),
                ts_event=ts,
                ts_init=ts,
            )
        )
    return ticks


def build_engine(trader_id: str, redis: tuple[str, int] | None, actors: list[Any]) -> BacktestEngine:
    """The backtest node; with `redis`, its cache database is built for that Redis."""
    cache = CacheConfig(database=DatabaseConfig(host=redis[0], port=redis[1])) if redis else CacheConfig()
    engine = BacktestEngine(
        config=BacktestEngineConfig(
            trader_id=TraderId(trader_id),
            logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
            cache=cache,
        )
    )
    engine.add_venue(
        venue=VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(1_000_000, USD)],
        default_leverage=Decimal(10),
    )
    for actor in actors:
        engine.add_actor(actor)
    return engine


def run_scenario(engine: BacktestEngine) -> ScenarioStrategy:
    instrument = TestInstrumentProvider.default_fx_ccy("AUD/USD", VENUE)
    engine.add_instrument(instrument)
    engine.add_data(quotes(instrument))
    strategy = ScenarioStrategy(ScenarioConfig())
    engine.add_strategy(strategy)
    engine.run()
    engine.trader.save()  # what a node does on stop with save_state: every strategy's state
    return strategy


__all__ = ["ScenarioStrategy", "build_engine", "quotes", "run_scenario"]
