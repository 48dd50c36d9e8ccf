"""`tradecache dev` as a newcomer runs it (relative data folder): private servers, the daemon, the demo
feed, a clean exit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_dev_stores_the_demo_session_and_prints_where_to_look(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tradecache", "dev", "--own-servers", "--exit-after-feed", "--http-port", "0",
         "--data-dir", "dev"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Demo session stored: 21 messages" in out
    assert re.search(r"metrics: +curl -s http://127\.0\.0\.1:\d+/metrics", out)
    assert re.search(r"loaded: +order O-\w+-1 is FILLED after \d+ events \(over NATS request-reply", out)
    assert re.search(r"tradecache load order O-\w+-1 --nats nats://127\.0\.0\.1:\d+ --trader DEV-001", out)
    assert (tmp_path / "dev" / "redis").is_dir() and (tmp_path / "dev" / "nats").is_dir()
