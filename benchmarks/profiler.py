"""Where the daemon spends its time: py-spy samples of its process, split into the ingest stages.

`py-spy record --format raw` writes one line per distinct stack, `frame;frame;...;frame count`,
root first, each frame `function (path:line)`. A sample counts for the first stage marker found
from the root down, so that what a stage calls (msgpack, redis-py's packing) counts for the stage.
Idle samples (a thread waiting in epoll) are not recorded by py-spy, so the shares are of the time
the process was busy. A helper thread blocked in a system call py-spy does not take for idle is
recorded, though: asyncio's child watcher waits in `waitpid` for the build worker for the whole
run, and counted as "event loop" it was 8% of a daemon's samples (2026-12-07). Only the event
loop's thread counts: stacks that start in `threading.py` (another thread) are left out, and the
table says how many.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# (stage, path suffix, function names; empty: any function of that file)
MARKERS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("Intake.check (unpack, decode, validate)", "ingest/intake.py", frozenset()),
    ("apply_batch / Ledger.apply", "ingest/batch.py", frozenset({"apply_batch"})),
    ("apply_batch / Ledger.apply", "model/ledger.py", frozenset()),
    ("metrics", "ingest/consumer.py", frozenset({"_record"})),
    ("metrics", "daemon/metrics.py", frozenset()),
    ("metrics", "prometheus_client/metrics.py", frozenset()),
    ("Store.commit (the apply script call)", "cache/aio.py", frozenset({"commit"})),
    ("Store.read_state (the stored state a batch needs)", "cache/aio.py", frozenset({"read_state"})),
)
# Rebuild only: what its process does before it replays (imports, the guards, the flush).
START = "rebuild start: imports, guards, flush (before `_replay`)"
_START_FUNCTIONS = frozenset({"rebuild", "_guarded", "_sidecar_running"})
LOOP = "NATS client and event loop (no tradecache frame below the loop: socket writes, parsing, select)"
OTHER = "other tradecache code (pulling, acking, pipeline glue, logging)"
STAGES = (*dict.fromkeys(stage for stage, _, _ in MARKERS), LOOP, OTHER)
REBUILD_STAGES = (*STAGES, START)
_ENTRY = ("tradecache/cli.py", "tradecache/__main__.py")  # below these every sample sits
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^:()]*)(?::\d+)?\)$")


@dataclass
class Profile:
    samples: int
    shares: dict[str, float]  # stage -> fraction of the samples
    other_threads: int = 0  # samples of threads other than the event loop's, left out

    def table(self, of: str = "the daemon") -> str:
        left_out = f" ({self.other_threads:,} of other threads left out)" if self.other_threads else ""
        lines = [f"profile of {of}: {self.samples:,} samples{left_out}", "| where | share |", "|---|---|"]
        lines += [f"| {stage} | {share:.0%} |" for stage, share in self.shares.items()]
        return "\n".join(lines)


def _starting(stack: list[str]) -> bool:
    """A rebuild's sample before its replay: importing (no event loop yet), or in its guards and
    flush (a frame of `rebuild` / `_guarded` / `_sidecar_running`, none of `_replay`)."""
    functions = [(match["function"].rsplit(".", 1)[-1], match["path"]) for frame in stack
                 if (match := _FRAME.match(frame.strip())) is not None]  # fmt: skip
    if not any(path.endswith("asyncio/runners.py") for _, path in functions):
        return any("importlib" in path for _, path in functions)
    in_rebuild = {function for function, path in functions if path.endswith("daemon/rebuild.py")}
    return bool(in_rebuild & _START_FUNCTIONS) and "_replay" not in in_rebuild


def stage_of(stack: list[str], *, rebuild: bool = False) -> str:
    """The stage a sample counts for (with `rebuild`: of a `tradecache rebuild` process)."""
    if rebuild and _starting(stack):
        return START
    ours = False
    for frame in stack:
        match = _FRAME.match(frame.strip())
        if match is None:
            continue
        function = match["function"].rsplit(".", 1)[-1]  # Python 3.11 frames may carry the class
        path = match["path"].replace("\\", "/")
        for stage, suffix, functions in MARKERS:
            if path.endswith(suffix) and (not functions or function in functions):
                return stage
        ours = ours or ("tradecache/" in path and not path.endswith(_ENTRY))
    return OTHER if ours else LOOP


def _other_thread(stack: list[str]) -> bool:
    """A stack of a thread started by `threading` (not the event loop's: that one is the main thread)."""
    match = _FRAME.match(stack[0].strip())
    return match is not None and match["path"].replace("\\", "/").endswith("threading.py")


def parse(raw: str, *, rebuild: bool = False) -> Profile:
    counts: Counter[str] = Counter()
    other_threads = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if _other_thread(frames):
            other_threads += int(count)
            continue
        counts[stage_of(frames, rebuild=rebuild)] += int(count)
    total = sum(counts.values())
    stages = REBUILD_STAGES if rebuild else STAGES
    return Profile(total, {stage: counts[stage] / total if total else 0.0 for stage in stages}, other_threads)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy not found: it comes with the dev extra (scripts/setup)")
    return found


def command(output: Path, rate: int = 100) -> list[str]:
    """py-spy recording what follows it (`[*command(...), "--", program, ...]`), raw stacks to `output`."""
    return [py_spy(), "record", "--format", "raw", "--rate", str(rate), "--output", str(output)]


def start(pid: int, output: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Sample `pid` until stopped (SIGINT), then write the raw stacks to `output`."""
    command = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate), "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(recorder: subprocess.Popen[bytes], output: Path) -> Profile:
    import signal

    recorder.send_signal(signal.SIGINT)
    _, errors = recorder.communicate(timeout=60)
    if not output.exists():
        raise RuntimeError(f"py-spy wrote no profile: {errors.decode(errors='replace')[-500:]}")
    return parse(output.read_text())


__all__ = [
    "LOOP",
    "OTHER",
    "REBUILD_STAGES",
    "STAGES",
    "START",
    "Profile",
    "command",
    "parse",
    "stage_of",
    "start",
    "stop",
]
