"""Seeing the commands a node sends, which never appear on a message-bus topic.

A strategy's SubmitOrder / SubmitOrderList goes point to point: `MessageBus.send` to the
`RiskEngine.execute` endpoint (or `OrderEmulator.execute` for emulated orders, or an execution
algorithm's `<id>.execute`), and a subscriber on any topic never sees it. An endpoint holds one
handler, and the bus offers no way to read it, only `deregister(endpoint, handler)`, which checks
`handler == registered` first. `EndpointTap` passes a probe that compares equal to anything and
remembers what it was compared with: that is the registered handler. The tap then registers a
wrapper that shows each message to the bridge before handing it to that handler, unchanged, and
puts the original handler back when removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], None]


class _HandlerProbe:
    """Equal to any handler; keeps the last one it was compared with."""

    def __init__(self) -> None:
        self.seen: Any = None

    def __eq__(self, other: object) -> bool:
        self.seen = other
        return True

    def __ne__(self, other: object) -> bool:
        self.seen = other
        return False

    __hash__ = object.__hash__

    def __call__(self, message: Any) -> None:  # the bus checks handlers are callable
        raise AssertionError("a probe never receives messages")


class EndpointTap:
    """Shows every message sent to one endpoint to `observer` first (see the module docstring)."""

    def __init__(self, msgbus: Any, endpoint: str, observer: Handler, log: logging.Logger) -> None:
        self.msgbus = msgbus
        self.endpoint = endpoint
        self.observer = observer
        self.log = log
        self.original: Handler | None = None

    def _wrapper(self, message: Any) -> None:
        try:
            self.observer(message)
        except Exception:  # the node's command must go through whatever happens to our copy
            self.log.exception(f"tradecache bridge: could not forward a message sent to {self.endpoint}")
        assert self.original is not None
        self.original(message)

    def install(self) -> bool:
        """Wrap the endpoint's handler; False (and a warning) when it cannot be done."""
        if self.original is not None:
            return True
        if self.endpoint not in self.msgbus.endpoints():
            return False
        probe = _HandlerProbe()
        try:
            self.msgbus.deregister(self.endpoint, probe)
        except Exception as exc:
            self.log.warning(f"tradecache bridge: cannot watch {self.endpoint} ({exc}); its commands are not forwarded")
            return False
        if probe.seen is None or not callable(probe.seen):  # the bus dropped a handler we cannot see
            raise RuntimeError(f"tradecache bridge: lost the handler of {self.endpoint}")
        self.original = probe.seen
        self.msgbus.register(self.endpoint, self._wrapper)
        return True

    def remove(self) -> None:
        """Put the original handler back."""
        if self.original is None:
            return
        if self.endpoint in self.msgbus.endpoints():
            self.msgbus.deregister(self.endpoint, self._wrapper)
        self.msgbus.register(self.endpoint, self.original)
        self.original = None


__all__ = ["EndpointTap"]
