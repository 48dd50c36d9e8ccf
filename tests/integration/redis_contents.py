"""What Redis holds for one trader, for tests that compare two runs key by key."""

from __future__ import annotations

from typing import Any


async def trader_contents(client: Any, trader: str) -> dict[bytes, Any]:
    """Every key of the trader with its value (lists, strings, hashes, sorted sets)."""
    found: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=f"trader-{trader}:*"):
        kind = await client.type(key)
        if kind == b"list":
            found[key] = await client.lrange(key, 0, -1)
        elif kind == b"string":
            found[key] = await client.get(key)
        elif kind == b"hash":
            found[key] = await client.hgetall(key)
        elif kind == b"zset":
            found[key] = await client.zrange(key, 0, -1)
    return found
