"""What the benchmarks and the soak script share: the daemon as a process of its own, its
readiness, its memory, and histogram quantiles from its metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def start_daemon(folder: Path, name: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """`python -m tradecache run` with `config` (written to <folder>/<name>.yaml, log beside it),
    without the caller's TRADECACHE_* variables (config overrides), but for TRADECACHE_PURE_PYTHON
    (the compiled frame reader off, to measure it)."""
    config_path = folder / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("TRADECACHE_") or key == "TRADECACHE_PURE_PYTHON"}  # fmt: skip
    with open(folder / f"{name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tradecache", "run", "--config", str(config_path)], stdout=log, stderr=log, env=env
        )


def server_versions(*binaries: Path) -> str:
    """What each server binary says of its version, with its path: figures depend on both."""
    said = []
    for binary in binaries:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout.strip()
        said.append(f"{binary} ({out.splitlines()[0] if out else '?'})")
    return ", ".join(said)


def wait_ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError("tradecache did not become ready")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_queue_seconds(pid: int) -> float:
    """Time the process's threads have spent runnable but waiting for a core so far (Linux
    `/proc/<pid>/task/*/schedstat`, its second field, in ns), in seconds; NaN where not kept."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    except OSError:
        return float("nan")
    return total / 1e9


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc), in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(q: float, buckets: dict[float, float]) -> float:
    """histogram_quantile: linear interpolation inside the bucket holding rank q."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


__all__ = ["quantile", "rss_mb", "server_versions", "start_daemon", "wait_ready"]
