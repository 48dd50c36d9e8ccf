"""Asking the load service from tests: raw requests that keep the reply's headers and error code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack

from tradecache.service.protocol import CURSOR_HEADER, MSGPACK

ERROR_CODE = "Nats-Service-Error-Code"


@dataclass
class Reply:
    value: Any
    headers: dict[str, str]

    @property
    def error_code(self) -> int | None:
        code = self.headers.get(ERROR_CODE)
        return None if code is None else int(code)

    @property
    def cursor(self) -> str | None:
        return self.headers.get(CURSOR_HEADER)


async def ask(nc: Any, subject: str, body: Any = None, *, as_msgpack: bool = False, raw: bytes | None = None) -> Reply:
    """One request: `body` sent as JSON (None: empty), or `raw` bytes as they are."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    headers = {"Accept": MSGPACK} if as_msgpack else None
    reply = await nc.request(subject, data, timeout=10, headers=headers)
    value = msgpack.unpackb(reply.data, raw=False) if as_msgpack else json.loads(reply.data)
    return Reply(value, dict(reply.headers or {}))


def without_events(items: dict[str, Any]) -> dict[str, Any]:
    return {key: {k: v for k, v in item.items() if k != "events"} for key, item in items.items()}
