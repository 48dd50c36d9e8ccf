"""`tradecache load NAME [ID]`: one load request to the running sidecar, printed as pretty JSON.

Exit codes: 0 found, 1 not found (`null`, or an empty strategy state), 2 error (bad usage, NATS
unreachable, or an error reply, whose code and message are printed on stderr). Collections
are fetched page by page and printed as one JSON object, so they never hit the 413 limit.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

from tradecache.client import CacheClient, LoadError
from tradecache.config import Config
from tradecache.daemon.app import nats_options
from tradecache.daemon.bus import connect
from tradecache.errors import BusUnavailable
from tradecache.service.endpoints import ENDPOINTS_BY_NAME

PAGE_SIZE = 1000
FOUND, NOT_FOUND, FAILED = 0, 1, 2


def usage_problem(name: str, entity_id: str | None) -> str | None:
    endpoint = ENDPOINTS_BY_NAME.get(name)
    if endpoint is None:
        return f"unknown load {name!r}; one of: {', '.join(ENDPOINTS_BY_NAME)}"
    if endpoint.id_field is not None and entity_id is None:
        return f"'load {name}' needs an id ({endpoint.id_field})"
    if endpoint.id_field is None and entity_id is not None:
        return f"'load {name}' takes no id"
    return None


async def run_load(config: Config, name: str, entity_id: str | None, timeout: float, out: TextIO = sys.stdout) -> int:
    problem = usage_problem(name, entity_id)
    if problem is not None:
        print(f"tradecache: load: {problem}", file=sys.stderr)
        return FAILED
    endpoint = ENDPOINTS_BY_NAME[name]
    quiet = logging.getLogger("tradecache.load")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        nc = await connect(nats_options(config), log=quiet)
    except BusUnavailable as exc:
        print(f"tradecache: load: cannot connect to NATS: {exc}", file=sys.stderr)
        return FAILED
    client = CacheClient(nc, config.trader_id, config.nats.subject_prefix, timeout)
    subject = client.subjects.load(name)
    try:
        if endpoint.id_field is not None:
            value, _ = await client.request(name, {endpoint.id_field: entity_id}, as_msgpack=False)
        elif endpoint.collection is None:
            value, _ = await client.request(name, {}, as_msgpack=False)
        else:
            value = await client.collection(name, PAGE_SIZE, as_msgpack=False)
    except LoadError as exc:
        print(f"tradecache: load {name}: error {exc.code}: {exc.message}", file=sys.stderr)
        return FAILED
    except TimeoutError:
        print(f"tradecache: load {name}: no answer on {subject} within {timeout:g} s (is the sidecar running?)",
              file=sys.stderr)  # fmt: skip
        return FAILED
    except Exception as exc:  # NoRespondersError and the like: say what, never a traceback
        print(f"tradecache: load {name}: {type(exc).__name__}: {exc or 'no sidecar answers on ' + subject}",
              file=sys.stderr)  # fmt: skip
        return FAILED
    finally:
        await nc.close()
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out)
    return NOT_FOUND if value is None or (name == "strategy" and not value) else FOUND


__all__ = ["FAILED", "FOUND", "NOT_FOUND", "run_load", "usage_problem"]
