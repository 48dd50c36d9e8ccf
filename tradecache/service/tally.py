"""Keeps `$SRV.STATS` true when requests are served by tasks; the service's one window on
nats.micro's private parts.

nats.micro counts an endpoint's errors and processing time around its handler. Our handler only
starts a task (so requests run concurrently), so micro would see every request succeed in a few
microseconds. This adapter records the outcome and duration of each task on micro's own
endpoint counters. nats.micro keeps them in private attributes (`_num_errors`, `_last_error`,
`_processing_time`, `_average_processing_time`, `_num_requests`); this is the one place that
touches them, and tests/integration/test_load_service.py checks `$SRV.STATS` against real
requests, so a nats-py change that moves them fails there. Two more facts micro keeps private
are read or set here too: a request's reply subject (`Request` does not expose it) and the
pending limit of an endpoint's subscription (micro leaves nats-py's 128 MB default).
"""

from __future__ import annotations

from typing import Any

from nats.micro.request import Request


def has_reply(request: Request) -> bool:
    """Whether the request can be answered (a plain publish has no reply subject)."""
    return bool(request._msg.reply)


class EndpointTally:
    def __init__(self) -> None:
        self._endpoints: dict[str, Any] = {}

    def track(self, name: str, service: Any, pending_bytes: int) -> None:
        """Remember the micro endpoint just added to `service` under `name`, and bound the bytes
        of requests its subscription holds before nats-py drops more (a slow consumer error)."""
        endpoint = service._endpoints[-1]
        if endpoint._name != name:
            raise RuntimeError(f"nats.micro endpoint bookkeeping changed: expected {name}, found {endpoint._name}")
        self._endpoints[name] = endpoint
        subscription = endpoint._subscription
        if not hasattr(subscription, "_pending_bytes_limit"):
            raise RuntimeError("nats-py subscription bookkeeping changed: no _pending_bytes_limit")
        subscription._pending_bytes_limit = pending_bytes

    def error(self, name: str, description: str) -> None:
        endpoint = self._endpoints.get(name)
        if endpoint is not None:
            endpoint._num_errors += 1
            endpoint._last_error = description

    def finished(self, name: str, seconds: float) -> None:
        endpoint = self._endpoints.get(name)
        if endpoint is not None:
            endpoint._processing_time += int(seconds * 1e9)
            endpoint._average_processing_time = endpoint._processing_time // max(endpoint._num_requests, 1)


__all__ = ["EndpointTally", "has_reply"]
