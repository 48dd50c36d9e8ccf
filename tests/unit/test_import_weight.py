"""What a trading pod loads with the client: neither Redis nor Prometheus nor the server side.

Checked in a fresh interpreter, since this one has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

LOADED = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(module: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", LOADED.format(module=module)], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def heavy(loaded: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(name for name in loaded if name in roots or name.startswith(tuple(root + "." for root in roots)))


@pytest.mark.parametrize("module", ["tradecache.client", "tradecache.wire"])
def test_the_client_loads_no_redis_prometheus_or_nats_micro(module: str) -> None:
    loaded = modules_after(module)
    assert module in loaded
    assert heavy(loaded, ("redis", "prometheus_client", "nats.micro", "hiredis")) == []
    server_side = ("tradecache.cache", "tradecache.service", "tradecache.ingest", "tradecache.daemon", "tradecache.dev")
    assert heavy(loaded, server_side) == []


def test_the_pure_write_plan_loads_no_redis() -> None:
    """`cache/__init__.py` resolves its names lazily: the pure planner does not drag redis in."""
    loaded = modules_after("tradecache.cache.plan")
    assert "tradecache.cache.plan" in loaded
    assert heavy(loaded, ("redis", "prometheus_client", "nats")) == []


def test_the_load_command_loads_no_daemon_or_redis() -> None:
    loaded = modules_after("tradecache.load_command")
    assert heavy(loaded, ("redis", "prometheus_client", "tradecache.daemon", "tradecache.ingest")) == []
