"""One writer per trader: a lease in Redis (`T:tradecache:lease`) with a fencing token.

A daemon writes a trader's keys only while it holds the lease: a string whose value is a token
drawn at random when the lease is taken, followed by who holds it (host, pid). It is taken with
`SET NX PX` (only when nobody holds it), renewed every third of its time to live while the
value is still ours, and deleted on a graceful stop (only if still ours), so a waiting daemon
takes over at once after a stop and within `ttl` after a crash.

The token is the fence: every APPLY_SCRIPT call of the holder starts with an `F` operation that
compares the stored value with its own, in the same atomic call as the writes (see
`cache/plan.py`). A holder that lost the lease without noticing (paused past its ttl, cut off
from Redis) is refused with FENCED and writes nothing; a fresh token per acquisition means an
old holder can never match a newer lease.

`Lease` does the Redis side; the ingest loop decides what to do (wait as a standby, read the
state afresh after taking over, stop writing when the lease is lost).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from tradecache.cache.keys import Keys
from tradecache.cache.redis_errors import translated

# Renew (PEXPIRE) or release (DEL) only while the value is still this holder's.
RENEW_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def holder_name() -> str:
    """Who holds a lease, as operators read it in logs: host, pid, start time."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{socket.gethostname()} pid {os.getpid()} since {started}"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds the lease now (as stored) and for how much longer."""

    name: str
    expires_in: float  # seconds


class Lease:
    """The trader's lease, as seen by one daemon."""

    def __init__(self, client: Any, keys: Keys, ttl: float, name: str | None = None) -> None:
        self.client = client
        self.key = keys.lease()
        self.ttl = ttl
        self.name = name or holder_name()
        self.token: str | None = None  # set while held
        self._renew = client.register_script(RENEW_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

    @property
    def held(self) -> bool:
        return self.token is not None

    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it. Raises StoreUnavailable."""
        token = f"{uuid.uuid4().hex} {self.name}"
        with translated("take the lease"):
            taken = await self.client.set(self.key, token, nx=True, px=self._ttl_ms())
        if taken:
            self.token = token
        return bool(taken)

    async def holder(self) -> Holder | None:
        """Who holds it now (None: nobody). Raises StoreUnavailable."""
        with translated("read the lease"):
            value = await self.client.get(self.key)
            remaining = await self.client.pttl(self.key)
        if value is None:
            return None
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return Holder(text.partition(" ")[2] or text, max(0.0, int(remaining) / 1000))

    async def renew(self) -> bool:
        """Extend the lease if still ours; False when it is not (lost). Raises StoreUnavailable."""
        if self.token is None:
            return False
        with translated("renew the lease"):
            renewed = await self._renew(keys=[self.key], args=[self.token, self._ttl_ms()])
        if not renewed:
            self.token = None
        return bool(renewed)

    async def release(self) -> None:
        """Give the lease up (if still ours), so a waiting daemon takes over at once."""
        token, self.token = self.token, None
        if token is not None:
            with translated("release the lease"):
                await self._release(keys=[self.key], args=[token])


__all__ = ["Holder", "Lease", "holder_name"]
