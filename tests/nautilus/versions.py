"""Which NautilusTrader versions the tests run a node with, and with which Python.

- 1.221.0 in the project's own venv (Python 3.11): scripts/setup installs it there.
- 1.231.0 in `.venv-nautilus-1.231` (Python 3.12; NautilusTrader >= 1.222 needs it): scripts/setup
  makes that venv wherever a Python 3.12 runs. Where none does, that version is not tested and the
  run says so; where one does but the venv is missing or broken, the tests fail (never a skip).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
MAIN_VERSION: Final = "1.221.0"
SECOND_VERSION: Final = "1.231.0"
SECOND_VENV: Final = REPO / ".venv-nautilus-1.231"


@dataclass(frozen=True)
class NodeVersion:
    version: str
    python: Path

    @property
    def label(self) -> str:
        return f"nautilus-{self.version}"


def _runs(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 12))"], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_python312() -> str | None:
    """A Python 3.12 that runs, found as scripts/setup finds it (the same order)."""
    candidates = [os.environ.get("TRADECACHE_PYTHON312", ""), shutil.which("python3.12") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True)
    candidates += ["/usr/bin/python3.12", "/usr/local/bin/python3.12"]
    for candidate in candidates:
        if candidate and Path(candidate).exists() and _runs(candidate):
            return candidate
    return None


def node_versions() -> list[NodeVersion]:
    """The versions to test; the second one whenever a Python 3.12 exists (its venv may be broken:
    the tests then fail saying so)."""
    versions = [NodeVersion(MAIN_VERSION, Path(sys.executable))]
    if (SECOND_VENV / "bin" / "python").exists() or find_python312() is not None:
        versions.append(NodeVersion(SECOND_VERSION, SECOND_VENV / "bin" / "python"))
    return versions


def installed_version(python: Path) -> str | None:
    """The NautilusTrader version importable by `python` (None: none or broken)."""
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import nautilus_trader, tradecache.nautilus; print(nautilus_trader.__version__)"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    return done.stdout.strip() if done.returncode == 0 else None


__all__ = ["MAIN_VERSION", "SECOND_VENV", "SECOND_VERSION", "NodeVersion", "find_python312", "node_versions"]
