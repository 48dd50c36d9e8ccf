"""`tradecache load NAME [ID]`: one load request to the running sidecar, printed for a person or a script.

Output (`-o`): `json` (the default) is the reply as pretty JSON, exactly what the service answers;
`table` is a readable view of orders, positions and accounts (`tradecache.display`: ISO-8601 times,
prices and quantities at the instrument's precision, money with its currency). `--quiet` prints
nothing on stdout; the exit code tells.

Exit codes: 0 found, 1 not found (`null`, or an empty strategy state; said on stderr too), 2 error
(bad usage, NATS unreachable, no sidecar answering, or an error reply), always one line on stderr,
never a traceback. Collections are fetched page by page and printed as one object, so they never
hit the 413 limit; an empty collection is found (exit 0).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TextIO

import nats.errors

from tradecache.bus import connect
from tradecache.client import CacheClient, LoadError
from tradecache.config import Config
from tradecache.config.connections import nats_options
from tradecache.display import accounts_table, orders_table, positions_table
from tradecache.errors import BusUnavailable
from tradecache.model.instruments import Instrument
from tradecache.redaction import mask_urls
from tradecache.serialization.deep import json_bytes
from tradecache.wire import ENDPOINTS_BY_NAME

PAGE_SIZE = 1000
FOUND, NOT_FOUND, FAILED = 0, 1, 2
Output = Literal["json", "table"]
OUTPUTS: Final[tuple[Output, ...]] = ("json", "table")
# The loads `-o table` can show.
TABLE_LOADS: Final = ("order", "orders", "position", "positions", "account", "accounts")


class CannotShow(Exception):
    """What was loaded cannot be shown as asked; the message says why and what to use instead."""


@dataclass(frozen=True)
class LoadRequest:
    name: str
    entity_id: str | None = None
    timeout: float = 5.0
    output: Output = "json"
    quiet: bool = False


def usage_problem(name: str, entity_id: str | None, output: Output = "json") -> str | None:
    endpoint = ENDPOINTS_BY_NAME.get(name)
    if endpoint is None:
        return f"unknown load {name!r}; one of: {', '.join(ENDPOINTS_BY_NAME)}"
    if endpoint.id_field is not None and entity_id is None:
        return f"'load {name}' needs an id ({endpoint.id_field})"
    if endpoint.id_field is None and entity_id is not None:
        return f"'load {name}' takes no id"
    if output == "table" and name not in TABLE_LOADS:
        return f"'-o table' shows {', '.join(TABLE_LOADS)}; use '-o json' for {name}"
    return None


def no_sidecar(config: Config) -> str:
    trader = config.trader_id
    return (
        f"no sidecar answers for trader {trader} on {config.nats.subject_prefix}.load.{trader}.*: "
        "is it running, is the trader id right?"
    )


async def run_load(config: Config, request: LoadRequest, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    name = request.name
    problem = usage_problem(name, request.entity_id, request.output)
    if problem is not None:
        print(f"tradecache: load: {problem}", file=err)
        return FAILED
    quiet_log = logging.getLogger("tradecache.load")
    quiet_log.addHandler(logging.NullHandler())
    quiet_log.propagate = False
    try:
        nc = await connect(nats_options(config), log=quiet_log)
    except BusUnavailable as exc:
        print(f"tradecache: load: cannot connect to NATS: {mask_urls(str(exc))}", file=err)
        return FAILED
    client = CacheClient(nc, config.trader_id, config.nats.subject_prefix, request.timeout)
    subject = client.subjects.load(name)
    try:
        if request.output == "table":
            found, text = await _table(client, name, request.entity_id)
        else:
            found, text = await _json(client, name, request.entity_id)
    except LoadError as exc:
        print(f"tradecache: load {name}: error {exc.code}: {exc.message}", file=err)
        return FAILED
    except nats.errors.NoRespondersError:
        print(f"tradecache: load {name}: {no_sidecar(config)}", file=err)
        return FAILED
    except TimeoutError:
        print(f"tradecache: load {name}: no answer on {subject} within {request.timeout:g} s "
              "(is the sidecar running, or is it busy?)", file=err)  # fmt: skip
        return FAILED
    except CannotShow as exc:
        print(f"tradecache: load {name}: {exc}", file=err)
        return FAILED
    except Exception as exc:  # anything else: say what, never a traceback
        print(f"tradecache: load {name}: {type(exc).__name__}: {mask_urls(str(exc))}", file=err)
        return FAILED
    finally:
        await nc.close()
    if not request.quiet and text is not None:
        print(text, file=out)
    if not found:
        if not request.quiet:
            print(f"tradecache: load {name}: {_not_found(config, name, request.entity_id)}", file=err)
        return NOT_FOUND
    return FOUND


def _not_found(config: Config, name: str, entity_id: str | None) -> str:
    if name == "strategy":
        return f"no state stored for strategy {entity_id} of trader {config.trader_id}"
    return f"not found: trader {config.trader_id} has no {name.replace('_', ' ')} {entity_id} stored"


async def _json(client: CacheClient, name: str, entity_id: str | None) -> tuple[bool, str]:
    """(found, the reply as pretty JSON)."""
    endpoint = ENDPOINTS_BY_NAME[name]
    value: Any
    if endpoint.id_field is not None:
        value, _ = await client.request(name, {endpoint.id_field: entity_id}, as_msgpack=False)
    elif endpoint.collection is None:
        value, _ = await client.request(name, {}, as_msgpack=False)
    else:
        value = await client.collection(name, PAGE_SIZE, as_msgpack=False)
    found = not (value is None or (name == "strategy" and not value))
    return found, json_bytes(value, indent=2).decode()  # at any depth (a stored map may nest deep)


async def _table(client: CacheClient, name: str, entity_id: str | None) -> tuple[bool, str | None]:
    """(found, the readable table; None when not found)."""
    if name in ("order", "orders"):
        if entity_id is not None:
            order = await client.load_order(entity_id)
            if order is None:
                return False, None
            instrument = await client.load_instrument(order.instrument_id.value)
            instruments = {} if instrument is None else {instrument.id.value: instrument}
            return True, orders_table({entity_id: order}, instruments)
        orders = await client.load_orders()
        return True, orders_table(orders, await _instruments(client, bool(orders)))
    if name in ("position", "positions"):
        if entity_id is not None:
            return await _position_table(client, entity_id)
        return True, positions_table(await client.load_positions())
    if entity_id is not None:
        account = await client.load_account(entity_id)
        return (False, None) if account is None else (True, accounts_table({entity_id: account}))
    return True, accounts_table(await client.load_accounts())


async def _position_table(client: CacheClient, position_id: str) -> tuple[bool, str | None]:
    snapshot = await client.snapshot("position", position_id, "position_id")
    if snapshot is None:
        return False, None
    instrument = await client.load_instrument(snapshot["instrument_id"])
    if instrument is None:  # its fills are stored, the instrument that prices them is not
        raise CannotShow(f"position {position_id} is stored but not its instrument {snapshot['instrument_id']}, "
                          "so it cannot be shown as a table (use -o json)")  # fmt: skip
    position = client.position_of(snapshot, instrument)
    assert position is not None
    return True, positions_table({position_id: position})


async def _instruments(client: CacheClient, needed: bool) -> Mapping[str, Instrument]:
    return await client.load_instruments() if needed else {}


__all__ = ["FAILED", "FOUND", "NOT_FOUND", "OUTPUTS", "TABLE_LOADS", "LoadRequest", "no_sidecar", "run_load",
           "usage_problem"]  # fmt: skip
