"""Python clients for trading pods: `Publisher` sends state to the sidecar, `CacheClient` loads it back.

    nc = await nats.connect("nats://127.0.0.1:4222")
    publisher = Publisher(nc.jetstream(), "TRADER-001")
    await publisher.publish(order_filled)          # on tradecache.in.TRADER-001.order
    cache = CacheClient(nc, "TRADER-001")
    order = await cache.load_order("O-1")          # an Order rebuilt from its stored events

`CacheClient` asks for msgpack replies and rebuilds model objects from the snapshots' `events`
with the same model the sidecar uses, so an order loaded here equals the node's own replay.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable
from typing import Any, Final

import msgpack

from tradecache.errors import LoadError
from tradecache.model.accounts import Account, replay_account
from tradecache.model.events import (
    AccountState,
    OrderEvent,
    OrderFilled,
    PositionEvent,
    SubmitOrder,
    SubmitOrderList,
)
from tradecache.model.instruments import Instrument
from tradecache.model.messages import Message, kind_of
from tradecache.model.orders import Order, replay_order
from tradecache.model.positions import Position, replay_position
from tradecache.model.values import Currency
from tradecache.serialization.deep import json_value
from tradecache.serialization.msgpack import MsgPackSerializer, decode_instrument
from tradecache.wire import (
    ACCEPT_HEADER,
    BUSY,
    CURSOR_HEADER,
    ENDPOINTS_BY_NAME,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    MSG_ID_HEADER,
    MSGPACK,
    Subjects,
)

DEFAULT_PAGE: Final = 1000
# A busy sidecar (error 429) is asked again after 10 ms, 20 ms, ... up to 0.5 s between tries.
BUSY_FIRST_PAUSE: Final = 0.01
BUSY_MAX_PAUSE: Final = 0.5


def message_id(message: Message) -> str | None:
    """The `Nats-Msg-Id` a producer sets: the event or command id (None for reference data)."""
    if isinstance(message, OrderEvent | PositionEvent | AccountState):
        return str(message.event_id)
    if isinstance(message, SubmitOrder | SubmitOrderList):
        return str(message.command_id)
    return None


def producer_headers(message: Message) -> dict[str, str] | None:
    """The headers a producer publishes `message` with (SPEC section 1): its `Nats-Msg-Id`, if it has one."""
    msg_id = message_id(message)
    return {MSG_ID_HEADER: msg_id} if msg_id else None


class Publisher:
    """Publishes a trading node's messages on the subjects the sidecar consumes (SPEC section 1)."""

    def __init__(self, js: Any, trader_id: str, prefix: str = "tradecache") -> None:
        self.js = js
        self.subjects = Subjects(prefix, trader_id)
        self.serializer = MsgPackSerializer(timestamps_as_str=True)

    def subject_of(self, message: Message) -> str:
        """The subject the sidecar consumes `message` from.

        Raises:
            Nothing: every message of the model has a kind.
        """
        return self.subjects.inbound_for(kind_of(message))

    async def publish(self, message: Message) -> Any:
        """Publish one message and wait for JetStream's ack (a PubAck; `.duplicate` if already had).

        Raises:
            nats.errors.TimeoutError: JetStream did not acknowledge in time.
            nats.js.errors.NoStreamResponseError: no stream captures the subject (the sidecar's streams are missing).
            nats.js.errors.APIError: JetStream refused the message (too large for the stream, ...).
            TypeError: `message` is not a message of the model.
        """
        headers = producer_headers(message)
        return await self.js.publish(self.subject_of(message), self.serializer.serialize(message), headers=headers)

    async def publish_many(self, messages: Iterable[Message]) -> int:
        """Publish in order without waiting for each ack, then wait for all; returns the count.

        Raises:
            nats.errors.TimeoutError: JetStream did not acknowledge in time.
            nats.js.errors.NoStreamResponseError: no stream captures the subject (the sidecar's streams are missing).
            nats.js.errors.APIError: JetStream refused the message (too large for the stream, ...).
            TypeError: `message` is not a message of the model.
        """
        futures = []
        for message in messages:
            payload = self.serializer.serialize(message)
            futures.append(
                await self.js.publish_async(self.subject_of(message), payload, headers=producer_headers(message))
            )
        await asyncio.gather(*futures)
        return len(futures)


class CacheClient:
    """Loads one trader's state from its sidecar over NATS request-reply (SPEC section 3)."""

    def __init__(self, nc: Any, trader_id: str, prefix: str = "tradecache", timeout: float = 5.0) -> None:
        self.nc = nc
        self.subjects = Subjects(prefix, trader_id)
        self.timeout = timeout
        self.serializer = MsgPackSerializer(timestamps_as_str=True)

    # -- raw replies ---------------------------------------------------------------------

    async def request(
        self, endpoint: str, body: dict[str, Any] | None = None, *, as_msgpack: bool = True
    ) -> tuple[Any, str | None]:
        """The decoded reply of one request, and the next page's cursor if any.

        msgpack (the default) keeps bytes as bytes; JSON gives them as base64 strings.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
        """
        data, cursor = await self._raw(endpoint, body, as_msgpack)
        return _decode(data, as_msgpack), cursor

    async def _raw(self, endpoint: str, body: dict[str, Any] | None, as_msgpack: bool) -> tuple[bytes, str | None]:
        """One request's reply bytes and cursor. A "busy" reply (429) is asked again after a short,
        growing, jittered pause, as long as `timeout` allows; any other error raises LoadError."""
        data = b"" if body is None else json.dumps(body).encode()
        headers = {ACCEPT_HEADER: MSGPACK} if as_msgpack else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        pause = BUSY_FIRST_PAUSE
        while True:
            reply = await self.nc.request(self.subjects.load(endpoint), data, timeout=self.timeout, headers=headers)
            reply_headers = reply.headers or {}
            code = reply_headers.get(ERROR_CODE_HEADER)
            if code is None:
                return reply.data, reply_headers.get(CURSOR_HEADER)
            wait = pause * random.uniform(0.5, 1.5)
            if code != BUSY or loop.time() + wait >= deadline:
                raise LoadError(endpoint, int(code), reply_headers.get(ERROR_HEADER, ""))
            await asyncio.sleep(wait)
            pause = min(pause * 2, BUSY_MAX_PAUSE)

    async def snapshot(self, endpoint: str, entity_id: str, id_field: str) -> Any:
        """The decoded answer of a one-entity endpoint for `entity_id` (None: not stored).

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
        """
        value, _ = await self.request(endpoint, {id_field: entity_id})
        return value

    async def _one(self, endpoint: str, entity_id: str) -> Any:
        """One entity, asked by the request key the endpoint table names (`wire.ENDPOINTS`)."""
        id_field = ENDPOINTS_BY_NAME[endpoint].id_field
        assert id_field is not None, endpoint
        return await self.snapshot(endpoint, entity_id, id_field)

    async def collection(
        self, endpoint: str, page_size: int = DEFAULT_PAGE, *, as_msgpack: bool = True
    ) -> dict[str, Any]:
        """Every item of a collection endpoint, fetched page by page.

        The next page is asked for as soon as a page arrives, before that page is decoded, so
        the sidecar builds one while this process decodes the other.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
        """
        items: dict[str, Any] = {}
        data, cursor = await self._raw(endpoint, {"limit": page_size}, as_msgpack)
        while True:
            following = None
            if cursor is not None:
                body = {"limit": page_size, "cursor": cursor}
                following = asyncio.ensure_future(self._raw(endpoint, body, as_msgpack))
            try:
                items.update(_decode(data, as_msgpack))
            except BaseException:
                if following is not None:
                    following.cancel()
                raise
            if following is None:
                return items
            data, cursor = await following

    async def stats(self) -> dict[str, Any]:
        """The sidecar's `stats` answer.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
        """
        value, _ = await self.request("stats")
        stats: dict[str, Any] = value
        return stats

    # -- model objects -------------------------------------------------------------------

    def _events(self, snapshot: dict[str, Any]) -> list[Any]:
        return [self.serializer.from_map(event) for event in snapshot["events"]]

    def _order(self, snapshot: dict[str, Any] | None) -> Order | None:
        return None if snapshot is None else replay_order(self._events(snapshot))

    def _account(self, snapshot: dict[str, Any] | None) -> Account | None:
        return None if snapshot is None else replay_account(self._events(snapshot))

    def position_of(self, snapshot: dict[str, Any] | None, instrument: Instrument | None) -> Position | None:
        """A position snapshot (with its `events`) replayed on `instrument`; None without either.

        Raises:
            PayloadError: an event of the snapshot is not a valid fill.
        """
        return self._position(snapshot, instrument)

    def _position(self, snapshot: dict[str, Any] | None, instrument: Instrument | None) -> Position | None:
        if snapshot is None or instrument is None:
            return None
        fills: list[OrderFilled] = self._events(snapshot)
        return replay_position(instrument, fills)

    async def load_order(self, client_order_id: str) -> Order | None:
        """The order rebuilt from the events the sidecar holds, or None.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        return self._order(await self._one("order", client_order_id))

    async def load_orders(self) -> dict[str, Order]:
        """Every order the sidecar holds, by client order id.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        orders = {key: self._order(snapshot) for key, snapshot in (await self.collection("orders")).items()}
        return {key: order for key, order in orders.items() if order is not None}

    async def load_account(self, account_id: str) -> Account | None:
        """The account rebuilt from the states the sidecar holds, or None.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        return self._account(await self._one("account", account_id))

    async def load_accounts(self) -> dict[str, Account]:
        """Every account the sidecar holds, by account id.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        accounts = {key: self._account(snapshot) for key, snapshot in (await self.collection("accounts")).items()}
        return {key: account for key, account in accounts.items() if account is not None}

    async def load_instrument(self, instrument_id: str) -> Instrument | None:
        """The instrument the sidecar holds under `instrument_id`, or None.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        data = await self._one("instrument", instrument_id)
        return None if data is None else decode_instrument(data)

    async def load_instruments(self) -> dict[str, Instrument]:
        """Every instrument the sidecar holds, by id.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        return {key: decode_instrument(data) for key, data in (await self.collection("instruments")).items()}

    async def load_position(self, position_id: str) -> Position | None:
        """The position rebuilt from its fills on its instrument, or None (also without the instrument).

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        snapshot = await self._one("position", position_id)
        if snapshot is None:
            return None
        return self._position(snapshot, await self.load_instrument(snapshot["instrument_id"]))

    async def load_positions(self) -> dict[str, Position]:
        """Every position the sidecar holds whose instrument it holds too, by position id.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        snapshots = await self.collection("positions")
        instruments = await self.load_instruments() if snapshots else {}
        positions = {key: self._position(s, instruments.get(s["instrument_id"])) for key, s in snapshots.items()}
        return {key: position for key, position in positions.items() if position is not None}

    async def load_currency(self, code: str) -> Currency | None:
        """The currency the sidecar holds under `code`, or None.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        data = await self._one("currency", code)
        return None if data is None else self._currency(data)

    async def load_currencies(self) -> dict[str, Currency]:
        """Every currency the sidecar holds, by code.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
        """
        return {code: self._currency(data) for code, data in (await self.collection("currencies")).items()}

    def _currency(self, data: dict[str, Any]) -> Currency:
        currency = self.serializer.from_map(data)
        assert isinstance(currency, Currency)
        return currency

    async def load_strategy(self, strategy_id: str) -> dict[str, bytes]:
        """A strategy's stored state (field -> bytes); `{}` when none is stored.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
        """
        state: dict[str, bytes] = await self._one("strategy", strategy_id)
        return state

    async def load_submit_order_command(self, client_order_id: str) -> SubmitOrder | None:
        """The SubmitOrder the sidecar holds for `client_order_id`, or None.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
            TypeError: the sidecar answered another kind of command.
        """
        data = await self._one("submit_order_command", client_order_id)
        return None if data is None else self._command(data, SubmitOrder)

    async def load_submit_order_commands(self) -> dict[str, SubmitOrder]:
        """Every SubmitOrder the sidecar holds, by client order id.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
            TypeError: the sidecar answered another kind of command.
        """
        items = await self.collection("submit_order_commands")
        return {key: self._command(data, SubmitOrder) for key, data in items.items()}

    async def load_submit_order_list_command(self, order_list_id: str) -> SubmitOrderList | None:
        """The SubmitOrderList the sidecar holds under `order_list_id`, or None.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
            TypeError: the sidecar answered another kind of command.
        """
        data = await self._one("submit_order_list_command", order_list_id)
        return None if data is None else self._command(data, SubmitOrderList)

    async def load_submit_order_list_commands(self) -> dict[str, SubmitOrderList]:
        """Every SubmitOrderList the sidecar holds, by order list id.

        Raises:
            LoadError: the sidecar answered with an error (400, 413, 500, 503; 429 once `timeout` ran out).
            nats.errors.TimeoutError: no answer within `timeout`.
            nats.errors.NoRespondersError: no sidecar serves this trader now.
            PayloadError: a stored event in the answer is not a valid message.
            TypeError: the sidecar answered another kind of command.
        """
        items = await self.collection("submit_order_list_commands")
        return {key: self._command(data, SubmitOrderList) for key, data in items.items()}

    def _command(self, data: dict[str, Any], kind: type[Any]) -> Any:
        command = self.serializer.from_map(data)
        if not isinstance(command, kind):
            raise TypeError(f"expected a {kind.__name__}, the sidecar answered a {type(command).__name__}")
        return command


def _decode(data: bytes, as_msgpack: bool) -> Any:
    return msgpack.unpackb(data, raw=False) if as_msgpack else json_value(data)  # JSON at any depth


__all__ = ["CacheClient", "LoadError", "Publisher", "message_id", "producer_headers"]
