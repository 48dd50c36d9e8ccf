"""Errors a user can act on: one line naming the problem and what to check, never a traceback.

Each case runs the real command (`python -m tradecache ...`) against real servers the tests start,
or against a port where something else (or nothing) listens.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tradecache.daemon.health import HealthServer
from tradecache.daemon.metrics import Metrics
from tradecache.dev.stack import HOST, free_port, port_is_free

pytestmark = pytest.mark.integration

TRADER = "ERRORS-001"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECACHE_")}
    env.update(extra)
    return env


def tradecache(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradecache", *args], capture_output=True, text=True, timeout=timeout,
        env=env or clean_env(),
    )  # fmt: skip


def run_daemon(tmp_path: Path, redis_url: str, nats_url: str, listen: str) -> subprocess.CompletedProcess[str]:
    """`tradecache run` with text logs; it must exit by itself (these configurations cannot work)."""
    config = {
        "trader_id": TRADER,
        "redis": {"url": redis_url},
        "nats": {"servers": [nats_url], "connect_timeout": 1.0},
        "http": {"listen": listen},
        "logging": {"level": "INFO", "format": "text"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return tradecache("run", "--config", str(path), timeout=30)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ERROR line of a run's log (no traceback anywhere)."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port some other program listens on (never accepting: only the port matters)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_run_on_a_busy_metrics_port_says_which_setting_to_change(
    tmp_path: Path, listening: int, redis_server: Any, nats_server: Any
) -> None:
    result = run_daemon(tmp_path, redis_server.url, nats_server.url, f"127.0.0.1:{listening}")
    assert result.returncode == 1
    assert one_error_line(result).endswith(
        f"cannot serve /metrics and /healthz error=cannot listen on 127.0.0.1:{listening}: the port is already in use "
        "(another tradecache, or another program); choose another with http.listen (TRADECACHE_HTTP_LISTEN)"
    )


def test_run_with_a_redis_url_that_is_not_redis_says_so(tmp_path: Path, nats_server: Any) -> None:
    nats_port = nats_server.port
    result = run_daemon(tmp_path, f"redis://127.0.0.1:{nats_port}/0", nats_server.url, "127.0.0.1:0")
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"cannot use Redis error=redis://127.0.0.1:{nats_port}/0 did not answer as a Redis server" in line
    assert line.endswith("is redis.url's port a Redis port?")


def test_run_with_nats_at_a_port_that_is_not_nats_says_so(tmp_path: Path, redis_server: Any) -> None:
    redis_port = redis_server.port
    result = run_daemon(tmp_path, redis_server.url, f"nats://127.0.0.1:{redis_port}", "127.0.0.1:0")
    assert result.returncode == 1
    assert one_error_line(result).endswith(
        f"cannot connect to NATS error=NATS unavailable during connect: no NATS greeting from "
        f"nats://127.0.0.1:{redis_port} within 1 s: is that a NATS client port (not Redis, HTTP or the monitoring "
        "port)?"
    )


def test_run_with_nats_stopped_says_nothing_accepts_connections(tmp_path: Path, redis_server: Any) -> None:
    port = free_port()
    result = run_daemon(tmp_path, redis_server.url, f"nats://127.0.0.1:{port}", "127.0.0.1:0")
    assert result.returncode == 1
    assert one_error_line(result).endswith(
        f"cannot connect to NATS error=NATS unavailable during connect: nothing accepts connections at "
        f"nats://127.0.0.1:{port}: is nats-server running, is the port right?"
    )


def test_load_without_a_sidecar_names_the_subject_and_what_to_check(nats_server: Any) -> None:
    result = tradecache("load", "orders", "--nats", nats_server.url, "--trader", "NOBODY-001")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "tradecache: load orders: no sidecar answers for trader NOBODY-001 on tradecache.load.NOBODY-001.*: "
        "is it running, is the trader id right?\n"
    )


def test_load_at_a_port_that_is_not_nats_or_where_nothing_listens_says_so(redis_server: Any) -> None:
    env = clean_env(TRADECACHE_NATS_CONNECT_TIMEOUT="1")
    not_nats = tradecache("load", "stats", "--nats", f"nats://127.0.0.1:{redis_server.port}", "--trader", TRADER,
                          env=env)  # fmt: skip
    assert not_nats.returncode == 2
    assert not_nats.stderr == (
        f"tradecache: load: cannot connect to NATS: NATS unavailable during connect: no NATS greeting from "
        f"nats://127.0.0.1:{redis_server.port} within 1 s: is that a NATS client port (not Redis, HTTP or the "
        "monitoring port)?\n"
    )
    port = free_port()
    stopped = tradecache("load", "stats", "--nats", f"nats://127.0.0.1:{port}", "--trader", TRADER, env=env)
    assert stopped.returncode == 2
    assert stopped.stderr == (
        f"tradecache: load: cannot connect to NATS: NATS unavailable during connect: nothing accepts connections at "
        f"nats://127.0.0.1:{port}: is nats-server running, is the port right?\n"
    )


def test_dev_on_a_busy_http_port_given_explicitly_stops_with_one_line(tmp_path: Path, listening: int) -> None:
    result = tradecache("dev", "--http-port", str(listening), "--exit-after-feed", "--data-dir", str(tmp_path / "d"))
    assert (result.returncode, result.stdout) == (2, "tradecache dev\n")
    assert result.stderr == (
        f"tradecache dev: port {listening} (--http-port) is in use by another program: choose another, or "
        "--http-port 0 for any free one\n"
    )
    assert not (tmp_path / "d").exists()  # stopped before starting anything


def test_dev_use_running_with_nothing_there_says_what_to_do(tmp_path: Path) -> None:
    port = free_port()
    result = tradecache("dev", "--use-running", "--redis-url", f"redis://127.0.0.1:{port}/0", "--http-port", "0",
                        "--exit-after-feed")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"tradecache dev: --use-running: no Redis answers PING at redis://127.0.0.1:{port}/0; drop --use-running to "
        "start private servers\n"
    )


async def test_the_metrics_port_is_the_same_after_a_quick_restart() -> None:
    """Closed connections leave the server side in TIME_WAIT: the port must still count as free and bind."""
    port = free_port()
    for _ in range(2):
        assert port_is_free(port)
        server = HealthServer(Metrics(), lambda: True, HOST, port)
        await server.start()
        assert server.port == port
        for _ in range(3):  # the server closes each connection first, so TIME_WAIT is on its side
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
            await writer.drain()
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
            writer.close()
        assert not port_is_free(port)  # listening: busy
        await server.stop()
        assert in_time_wait(port)  # what made the old check (a bind without SO_REUSEADDR) move the port


def in_time_wait(port: int) -> bool:
    """True when a bind without SO_REUSEADDR is refused although nobody listens (TIME_WAIT connections)."""
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def test_dev_with_server_urls_but_without_use_running_says_what_is_missing(tmp_path: Path) -> None:
    result = tradecache("dev", "--redis-url", "redis://127.0.0.1:1/0", "--exit-after-feed", "--http-port", "0",
                        "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "tradecache dev\n")
    assert result.stderr == (
        "tradecache dev: --redis-url and --nats-url name the servers --use-running uses; add --use-running\n"
    )
