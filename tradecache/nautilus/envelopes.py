"""NautilusTrader objects as the messages the sidecar consumes (SPEC section 1).

Events, instruments and commands are serialized by NautilusTrader's own msgpack serializer with
timestamps as strings, exactly as the node's cache database would store them, so fields a newer
NautilusTrader adds travel (and are stored) verbatim. Currencies and strategy state have no
NautilusTrader message form; they are the project's own `Currency` and `StrategyState` maps.

`Nats-Msg-Id` is the event's or command's id. Reference data has none, so its id is a digest of
the subject and payload: the same instrument published twice by one trader is dropped by
JetStream, a changed one is not, and another trader's copy is not either.
A strategy state gets a fresh UUID per save.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final

import msgpack
import msgspec
from nautilus_trader.serialization.serializer import MsgSpecSerializer

from tradecache.nautilus.outbox import Envelope
from tradecache.wire import Subjects

_serializer: Final = MsgSpecSerializer(encoding=msgspec.msgpack, timestamps_as_str=True)


def _digest(subject: str, payload: bytes) -> str:
    # The subject (so the trader) is part of it: JetStream dedupes ids across the whole stream,
    # and two traders sharing it publish the same instrument.
    digest = hashlib.blake2b(payload, digest_size=16, person=b"tradecache")
    digest.update(subject.encode())
    return f"{subject.rpartition('.')[2]}-{digest.hexdigest()}"


class EnvelopeMaker:
    """Builds envelopes for one trader's subjects."""

    def __init__(self, prefix: str, trader_id: str) -> None:
        self.subjects = Subjects(prefix, trader_id)
        self.trader_id = trader_id

    def _make(self, kind: str, payload: bytes, msg_id: str) -> Envelope:
        return Envelope(self.subjects.inbound_for_name(kind), payload, msg_id, kind)

    def event(self, kind: str, event: Any) -> Envelope:
        """An order event, position event or account state (`kind`: order, position, account)."""
        return self._make(kind, _serializer.serialize(event), event.id.value)

    def command(self, command: Any) -> Envelope:
        """A SubmitOrder or SubmitOrderList."""
        return self._make("command", _serializer.serialize(command), command.id.value)

    def instrument(self, instrument: Any) -> Envelope:
        payload = _serializer.serialize(instrument)
        return self._make("instrument", payload, _digest(self.subjects.inbound_for_name("instrument"), payload))

    def currency(self, currency: Any) -> Envelope:
        payload: bytes = msgpack.packb(
            {
                "type": "Currency",
                "code": currency.code,
                "precision": currency.precision,
                "iso4217": currency.iso4217,
                "name": currency.name,
                "currency_type": currency.currency_type.name,
            },
            use_bin_type=True,
        )
        return self._make("currency", payload, _digest(self.subjects.inbound_for_name("currency"), payload))

    def strategy_state(self, strategy_id: str, state: dict[str, bytes], ts_event: int) -> Envelope:
        payload: bytes = msgpack.packb(
            {
                "type": "StrategyState",
                "trader_id": self.trader_id,
                "strategy_id": strategy_id,
                "state": state,
                "ts_event": str(ts_event),
            },
            use_bin_type=True,
        )
        return self._make("strategy", payload, f"strategy-state-{uuid.uuid4()}")


__all__ = ["EnvelopeMaker"]
