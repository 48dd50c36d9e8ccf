"""A fresh clone works alone: cloned into an empty folder (nothing beside it), its unit and vector
tests pass, reading everything (the vector scenarios included) from the clone itself.

The clone is of the committed HEAD, so this checks what a user gets, not the working tree. It reuses
this environment's interpreter with the clone first on the path instead of installing again (only
its compiled module is built, in place).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_clone_in_an_empty_folder_passes_its_unit_and_vector_tests(tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    clone = alone / "tradecache"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True, timeout=120)
    assert [p.name for p in alone.iterdir()] == ["tradecache"]  # nothing beside it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADECACHE_", "PYTEST_"))}
    env["PYTHONPATH"] = str(clone)

    # What scripts/setup's install does beside the Python files: the compiled frame reader, in place.
    subprocess.run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=clone, env=env,
                   capture_output=True, check=True, timeout=300)  # fmt: skip
    where = subprocess.run(
        [sys.executable, "-c", "import tests, tradecache; print(tradecache.__file__); print(tests.__file__)"],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert all(Path(line).is_relative_to(clone) for line in where.stdout.split()), where.stdout

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit", "tests/vectors"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 800, summary
    assert not re.search(r"failed|error|skipped", summary), summary
