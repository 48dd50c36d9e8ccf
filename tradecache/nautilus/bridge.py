"""`TradecacheBridge`: a NautilusTrader Actor that feeds the sidecar everything the node does.

What it forwards, each on its SPEC section 1 subject, in the order the node produced it:
- order, position and account events, from the message bus (`events.order.*`,
  `events.position.*`, `events.account.*`), subscribed at a high priority so the bridge sees
  each event before strategies react to it;
- SubmitOrder / SubmitOrderList commands, from the endpoints they are sent to (`taps.py`);
- instruments and currencies: those in the cache when the bridge starts, instruments the data
  engine publishes, and, before any event naming an instrument not sent yet, that instrument
  and its currencies (the sidecar needs them to rebuild positions);
- strategy states the node saves, through the read-only cache database (`registry.py`).

Pitfalls it handles (measured on NautilusTrader 1.221 and 1.231):
- a topic published before a wildcard subscription exists never reaches that subscription
  (1.221): the first AccountState is published before actors start, so the bridge also
  subscribes to the exact topic of every matching topic already known, and sends the accounts
  already in the cache when it starts;
- the portfolio publishes an account's latest state at some moments only, so some states are
  applied to the account and never published: on each one heard (and on stop) the bridge sends
  every state the account holds that it has not sent yet, in order;
- AccountStates are published more than once with the same id, and a handler subscribed twice
  (exact and wildcard) hears an event twice: events are sent once per id (the last 65,536 ids
  are remembered; JetStream's `Nats-Msg-Id` dedupe covers the rest);
- a node stops its actors before its strategies, and saves strategy state after that: orders
  a strategy cancels in its `on_stop` and the states saved then would be lost if the bridge
  stopped listening when stopped. So it listens, and keeps its connection, until it is disposed
  (or the process exits); `on_stop` drains the queue of what was produced so far.

Nothing here blocks the node's thread: handlers serialize and queue (`outbox.py`); a thread of
the bridge's own publishes. `on_stop` waits (at most `stop_timeout`) until the queue is empty and
every message acknowledged by JetStream.
"""

from __future__ import annotations

import atexit
import collections
import logging
from typing import Any, Final

from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import is_matching_py
from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList

from tradecache.bus import NatsOptions
from tradecache.nautilus.config import TradecacheBridgeConfig
from tradecache.nautilus.envelopes import EnvelopeMaker
from tradecache.nautilus.outbox import Envelope, Outbox, OutboxStats
from tradecache.nautilus.registry import add_listener, remove_listener
from tradecache.nautilus.taps import EndpointTap

# Above any strategy's default priority (0): the bridge queues an event before strategies react.
PRIORITY: Final = 1_000_000
# Message-bus topics and the kind they carry.
TOPICS: Final = {"events.order.*": "order", "events.position.*": "position", "events.account.*": "account"}
INSTRUMENT_TOPIC: Final = "data.instrument.*"
# Endpoints a SubmitOrder / SubmitOrderList may be sent to (plus every execution algorithm's).
COMMAND_ENDPOINTS: Final = ("RiskEngine.execute", "OrderEmulator.execute")
ENGINE_ENDPOINTS: Final = frozenset({"ExecEngine.execute", "DataEngine.execute"})
RECENT_IDS: Final = 65_536

log = logging.getLogger("tradecache.nautilus")


class RecentIds:
    """The last `size` ids seen, to send each event once."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self.size = size
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def first_time(self, key: str) -> bool:
        if key in self._ids:
            return False
        self._ids[key] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


def nats_options(config: TradecacheBridgeConfig, name: str) -> NatsOptions:
    return NatsOptions(
        servers=[server.strip() for server in config.nats_url.split(",") if server.strip()],
        name=name,
        user=config.user,
        password=config.password,
        token=config.token,
        creds_file=config.creds_file,
        nkey_seed_file=config.nkey_seed_file,
        tls_ca_file=config.tls_ca_file,
        tls_cert_file=config.tls_cert_file,
        tls_key_file=config.tls_key_file,
        connect_timeout=config.connect_timeout,
    )


class TradecacheBridge(Actor):  # type: ignore[misc]  # NautilusTrader has no type stubs
    """Forwards the node's execution state to the tradecache sidecar over NATS JetStream."""

    def __init__(self, config: TradecacheBridgeConfig) -> None:
        super().__init__(config)
        self.bridge_config = config
        self._maker: EnvelopeMaker | None = None
        self._outbox: Outbox | None = None
        self._seen = RecentIds()
        self._sent_instruments: set[str] = set()
        self._sent_currencies: set[str] = set()
        self._account_states_sent: dict[str, int] = {}
        self._subscriptions: list[tuple[str, Any]] = []
        self._taps: list[EndpointTap] = []
        self._listening = False
        self.final_stats: OutboxStats | None = None  # the queue's counts once disposed

    # -- lifecycle ----------------------------------------------------------------------------

    def on_start(self) -> None:
        trader_id = self.trader_id.value
        if self._outbox is None:
            config = self.bridge_config
            self._maker = EnvelopeMaker(config.subject_prefix, trader_id)
            self._outbox = Outbox(
                nats_options(config, f"tradecache-bridge-{trader_id}"),
                capacity=config.queue_capacity,
                publish_timeout=config.publish_timeout,
                dead_subject=self._maker.subjects.dead,
                log=log,
            )
            self._outbox.start()
            atexit.register(self._close_at_exit)
        if not self._listening:
            add_listener(trader_id, self._on_strategy_saved)
            self._listening = True
        if not self._subscriptions:  # a restart after a stop is already subscribed
            self._send_known_reference_data()
            self._send_known_accounts()
            self._subscribe()
            self._tap_commands()

    def on_stop(self) -> None:
        self._send_known_accounts()  # states applied since the last one published
        if self._outbox is not None:
            drained = self._outbox.flush(self.bridge_config.stop_timeout)
            self._log_stats("stopped" if drained else "stopped WITHOUT draining the queue", self._outbox.stats())

    def on_dispose(self) -> None:
        if self._maker is not None:
            self._send_known_accounts()
        for tap in self._taps:
            tap.remove()
        self._taps.clear()
        for topic, handler in self._subscriptions:
            self.msgbus.unsubscribe(topic=topic, handler=handler)
        self._subscriptions.clear()
        if self._listening:
            remove_listener(self.trader_id.value, self._on_strategy_saved)
            self._listening = False
        if self._outbox is not None:
            self._outbox.close(self.bridge_config.stop_timeout)
            atexit.unregister(self._close_at_exit)
            self.final_stats = self._outbox.stats()
            self._log_stats("closed", self.final_stats)
            self._outbox = None

    def _close_at_exit(self) -> None:
        if self._outbox is not None:
            self._outbox.close(self.bridge_config.stop_timeout)

    def stats(self) -> OutboxStats | None:
        """The queue's counts (None before the first start)."""
        return None if self._outbox is None else self._outbox.stats()

    def _log_stats(self, what: str, stats: OutboxStats) -> None:
        level = logging.ERROR if stats.dropped or stats.depth or stats.refused else logging.INFO
        refused = f", {stats.refused} refused by NATS {stats.refused_by_kind}" if stats.refused else ""
        log.log(
            level,
            f"tradecache bridge {what}: {stats.published} published ({stats.duplicates} already stored), "
            f"{stats.depth} waiting, {stats.dropped} dropped {stats.dropped_by_kind or ''}".rstrip()
            + refused,
        )

    # -- subscriptions ------------------------------------------------------------------------

    def _subscribe(self) -> None:
        handlers = {"order": self._on_order_event, "position": self._on_position_event, "account": self._on_account}
        # A topic published before this subscription never reaches a wildcard (1.221): name each
        # one that may have been as well, the topics others listen to and each known account's;
        # an event heard twice is sent once (by its id).
        known = {*self.msgbus.topics(), *(f"events.account.{account.id.value}" for account in self.cache.accounts())}
        for pattern, kind in TOPICS.items():
            for topic in [pattern, *sorted(topic for topic in known if is_matching_py(topic, pattern))]:
                self._add_subscription(topic, handlers[kind])
        self._add_subscription(INSTRUMENT_TOPIC, self._on_instrument)

    def _add_subscription(self, topic: str, handler: Any) -> None:
        self.msgbus.subscribe(topic=topic, handler=handler, priority=PRIORITY)
        self._subscriptions.append((topic, handler))

    def _tap_commands(self) -> None:
        endpoints = [*COMMAND_ENDPOINTS]
        for endpoint in self.msgbus.endpoints():  # execution algorithms: `<id>.execute`
            if endpoint.endswith(".execute") and endpoint not in ENGINE_ENDPOINTS and endpoint not in endpoints:
                endpoints.append(endpoint)
        for endpoint in endpoints:
            tap = EndpointTap(self.msgbus, endpoint, self._on_command, log)
            if tap.install():
                self._taps.append(tap)

    # -- handlers (the node's thread) ---------------------------------------------------------

    def _queue(self, envelope: Envelope) -> None:
        assert self._outbox is not None
        self._outbox.put(envelope)

    def _on_order_event(self, event: Any) -> None:
        self._send_event("order", event)

    def _on_position_event(self, event: Any) -> None:
        self._send_event("position", event)

    def _on_account(self, event: Any) -> None:
        account = self.cache.account(event.account_id)
        if account is None:
            self._send_account_state(event)
            return
        self._catch_up(account, published=event)

    def _catch_up(self, account: Any, published: Any = None) -> None:
        """Send the account's states not sent yet, in order. The portfolio publishes only the
        account's latest state at some moments, so states applied in between never appear on the
        bus; the account itself holds them all."""
        account_id = account.id.value
        sent = self._account_states_sent.get(account_id, 0)
        count = account.event_count
        if published is not None and count == sent + 1 and account.last_event.id == published.id:
            self._send_account_state(published)  # the usual case: no copy of the history
        elif count > sent:
            for state in account.events[sent:]:
                self._send_account_state(state)
        self._account_states_sent[account_id] = max(sent, count)
        if published is not None:
            self._send_account_state(published)  # a republication is dropped by its id

    def _send_account_state(self, state: Any) -> None:
        for balance in getattr(state, "balances", ()):
            self._send_currency(balance.currency)
        self._send_event("account", state)

    def _send_event(self, kind: str, event: Any) -> None:
        if self._maker is None or not self._seen.first_time(event.id.value):
            return
        instrument_id = getattr(event, "instrument_id", None)
        if instrument_id is not None and instrument_id.value not in self._sent_instruments:
            instrument = self.cache.instrument(instrument_id)
            if instrument is not None:
                self._send_instrument(instrument)
        self._queue(self._maker.event(kind, event))

    def _on_command(self, command: Any) -> None:
        if not isinstance(command, SubmitOrder | SubmitOrderList) or self._maker is None:
            return
        if self._seen.first_time(command.id.value):
            self._queue(self._maker.command(command))

    def _on_instrument(self, instrument: Any) -> None:
        if hasattr(instrument, "id") and hasattr(instrument, "quote_currency"):
            self._send_instrument(instrument, again=True)

    def _on_strategy_saved(self, strategy_id: str, state: dict[str, bytes]) -> None:
        if self._maker is not None:
            self._queue(self._maker.strategy_state(strategy_id, state, self.clock.timestamp_ns()))

    # -- reference data -----------------------------------------------------------------------

    def _send_known_reference_data(self) -> None:
        for instrument in self.cache.instruments():
            self._send_instrument(instrument)

    def _send_known_accounts(self) -> None:
        # Their first AccountState was published before any actor started.
        for account in self.cache.accounts():
            self._catch_up(account)

    def _send_instrument(self, instrument: Any, *, again: bool = False) -> None:
        assert self._maker is not None
        for currency in instrument_currencies(instrument):
            self._send_currency(currency)
        if again or instrument.id.value not in self._sent_instruments:
            self._sent_instruments.add(instrument.id.value)
            self._queue(self._maker.instrument(instrument))

    def _send_currency(self, currency: Any) -> None:
        if self._maker is not None and currency is not None and currency.code not in self._sent_currencies:
            self._sent_currencies.add(currency.code)
            self._queue(self._maker.currency(currency))


def instrument_currencies(instrument: Any) -> list[Any]:
    """The currencies an instrument names (base, quote, settlement; those it has)."""
    found = []
    for getter in ("get_base_currency", "get_settlement_currency"):
        method = getattr(instrument, getter, None)
        if method is not None:
            found.append(method())
    found.append(getattr(instrument, "quote_currency", None))
    return [currency for currency in found if currency is not None]


__all__ = ["PRIORITY", "TOPICS", "RecentIds", "TradecacheBridge", "instrument_currencies"]
