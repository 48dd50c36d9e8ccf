"""The documentation stands alone: every link in a Markdown file of the repository resolves to a file
inside it, and no file points at the folders beside the repository (a clone does not have them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
EXTERNAL = ("http://", "https://", "mailto:")


def tracked(suffix: str) -> list[Path]:
    """The repository's files (tracked, or new and not ignored) whose names end with `suffix`."""
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard", f"*{suffix}"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / line for line in out.stdout.splitlines()]


MARKDOWN = tracked(".md")


def test_the_readme_and_the_docs_are_tracked() -> None:
    names = {path.relative_to(REPO).as_posix() for path in MARKDOWN}
    assert {"README.md", "docs/PROTOCOL.md", "docs/ARCHITECTURE.md", "tests/data/vectors/README.md"} <= names


@pytest.mark.parametrize("path", MARKDOWN, ids=[p.relative_to(REPO).as_posix() for p in MARKDOWN])
def test_every_link_resolves_inside_the_repository(path: Path) -> None:
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{target} leaves the repository"
        assert resolved.exists(), f"{target} does not exist"


def test_nothing_refers_to_the_folders_beside_the_repository() -> None:
    beside = re.compile(r"\.\./shared|/work/shared|TRADECACHE_VECTORS=\.\./")
    text_files = [p for p in tracked("") if p.suffix in {".md", ".py", ".yaml", ".yml", ".toml", ".json", ""}]
    offenders = [
        str(p.relative_to(REPO)) for p in text_files
        if p.is_file() and p != Path(__file__) and beside.search(p.read_text(encoding="utf-8", errors="replace"))
    ]  # fmt: skip
    assert offenders == []
