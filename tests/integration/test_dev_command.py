"""`tradecache dev` as a newcomer runs it (relative data folder): its own servers, the daemon, the demo
feed shown as tables, commands that work when pasted, and nothing left behind unless asked.
`--use-running` is run against the tests' own servers (never the shared 6379/4222)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import redis

from tests.unit.test_display import columns
from tradecache.dev.stack import HOST, redis_answers

pytestmark = pytest.mark.integration

DEV = [sys.executable, "-m", "tradecache", "dev"]
TRADER = "DEV-001"


def dev_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRADECACHE_")}


def run_dev(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEV, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=dev_env())


def server_ports(out: str) -> dict[str, int]:
    """The ports dev says it started its redis-server and nats-server on."""
    return {name: int(port) for name, port in re.findall(r"^  (redis|nats): +started \S+ on 127\.0\.0\.1:(\d+)", out,
                                                          re.MULTILINE)}  # fmt: skip


def table_after(out: str, header: str) -> list[dict[str, str]]:
    """The rows of the table whose header line starts with `header`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return columns("\n".join(lines[start:end]))


def assert_demo_state_shown(out: str) -> None:
    stored = re.compile(
        r"Demo session stored: 40 messages \(5 orders, 5 fills, 6 account states; position "
        r"EUR/USD\.SIM-Demo-001 opened, changed, flipped and closed; order O-\w+-5 rejected\)"
    )
    assert stored.search(out)
    orders = table_after(out, "ORDER ")
    assert [row["STATUS"] for row in orders] == ["FILLED"] * 4 + ["REJECTED"]
    assert [row["AVG PX"] for row in orders] == ["1.10013", "1.10060", "1.10041", "1.09987", "-"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", row["UPDATED"]) for row in orders)
    (position,) = table_after(out, "POSITION ")
    assert (position["SIDE"], position["QTY"], position["REALIZED PNL"]) == ("FLAT", "0", "50.00 USD")
    (account,) = table_after(out, "ACCOUNT ")
    assert (account["TYPE"], account["LOCKED"], account["EVENTS"]) == ("MARGIN", "0.00 USD", "6")


def test_dev_runs_its_own_servers_shows_the_state_and_removes_everything_at_exit(tmp_path: Path) -> None:
    result = run_dev("--exit-after-feed", "--http-port", "0", "--data-dir", "dev", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    ports = server_ports(out)
    assert set(ports) == {"redis", "nats"}
    assert_demo_state_shown(out)
    assert "Try" not in out  # the servers stop with it: no command would work
    assert "Stopping (--exit-after-feed): the servers stop with the daemon" in out
    assert out.rstrip().endswith(
        f"Stopped redis-server and nats-server and removed their data ({tmp_path}/dev/redis, {tmp_path}/dev/nats)."
    )
    assert not (tmp_path / "dev").exists()
    assert not redis_answers(HOST, ports["redis"])


def test_dev_keeps_its_data_when_asked_and_starts_from_it_next_time(tmp_path: Path) -> None:
    first = run_dev("--exit-after-feed", "--http-port", "0", "--keep-data", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    data = tmp_path / ".tradecache-dev"
    assert f"kept their data in {data}/redis, {data}/nats" in first.stdout
    assert (data / "redis").is_dir() and (data / "nats" / "jetstream").is_dir()
    again = run_dev("--exit-after-feed", "--http-port", "0", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("(reusing the data a --keep-data run left)") == 2
    assert len(table_after(again.stdout, "ORDER ")) == 10  # both sessions
    assert not data.exists()


def test_the_commands_dev_prints_work_when_pasted_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    # A session of its own, as a terminal gives: Ctrl-C signals the whole process group.
    process = subprocess.Popen([*DEV, "--http-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=tmp_path, env=dev_env(), start_new_session=True)  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith("Running; Ctrl-C") for line in lines):
            line = process.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        out = "".join(lines)
        assert_demo_state_shown(out)
        start = lines.index("Try (while this runs):\n")
        commands = [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]
        assert len(commands) >= 5
        tradecache = commands[2].split(" load ")[0]
        on_path = shutil.which("tradecache")
        assert tradecache == "tradecache" if on_path else Path(tradecache).is_absolute()
        for command in commands:
            if command.startswith("curl") and shutil.which("curl") is None:
                continue  # nothing to paste it into on this machine; the tradecache lines are the point
            pasted = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30, env=dev_env())
            assert pasted.returncode == 0, (command, pasted.stderr)
            assert pasted.stdout.strip(), command
        orders = subprocess.run(["bash", "-c", commands[2]], capture_output=True, text=True, timeout=30)
        assert [row["STATUS"] for row in columns(orders.stdout)] == ["FILLED"] * 4 + ["REJECTED"]
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + rest
    assert "Stopped redis-server and nats-server and removed their data" in rest
    # Ctrl-C reached every process of the group: none of them (the build worker included) complains.
    assert "Traceback" not in rest and "WARNING" not in rest and "ERROR" not in rest, rest
    assert not (tmp_path / ".tradecache-dev").exists()
    assert not redis_answers(HOST, server_ports(out)["redis"])


async def dev_messages_and_consumer(nats_url: str) -> tuple[int, bool]:
    """(messages on the demo trader's subjects, whether its consumer exists) in the stream TRADECACHE."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info("TRADECACHE", subjects_filter=f"tradecache.in.{TRADER}.>")
        except nats.js.errors.NotFoundError:
            return 0, False
        messages = sum((info.state.subjects or {}).values())
        try:
            await js.consumer_info("TRADECACHE", f"tradecache-{TRADER}")
        except nats.js.errors.NotFoundError:
            return messages, False
        return messages, True
    finally:
        await nc.close()


def dev_keys(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return sum(1 for _ in client.scan_iter(match=f"trader-{TRADER}:*"))


async def test_use_running_writes_into_the_given_servers_and_removes_what_it_wrote(
    tmp_path: Path, redis_server: Any, nats_server: Any
) -> None:
    urls = ("--use-running", "--redis-url", redis_server.url, "--nats-url", nats_server.url, "--http-port", "0")
    kept = await asyncio.to_thread(run_dev, *urls, "--exit-after-feed", "--keep-data", cwd=tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert_demo_state_shown(kept.stdout)
    keys = dev_keys(redis_server.url)
    assert keys > 0 and await dev_messages_and_consumer(nats_server.url) == (40, True)
    assert re.search(rf"Left \(--use-running\): {keys} keys trader-DEV-001:\* in {re.escape(redis_server.url)}; "
                     r"stream TRADECACHE \(\d+ messages\); stream TRADECACHE_DEAD \(\d+ messages\); consumer "
                     r"tradecache-DEV-001 of TRADECACHE\.", kept.stdout)  # fmt: skip
    assert not (tmp_path / ".tradecache-dev").exists()  # it started no server

    removed = await asyncio.to_thread(run_dev, *urls, "--exit-after-feed", cwd=tmp_path)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert len(table_after(removed.stdout, "ORDER ")) == 10  # the kept session, and this one
    assert re.search(r"Removed \(--use-running\): \d+ keys trader-DEV-001:\* in .*; consumer tradecache-DEV-001",
                     removed.stdout)  # fmt: skip
    assert dev_keys(redis_server.url) == 0
    assert await dev_messages_and_consumer(nats_server.url) == (0, False)
