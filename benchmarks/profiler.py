"""Where the daemon spends its time: py-spy samples of its process, split into the ingest stages.

`py-spy record --format raw` writes one line per distinct stack, `frame;frame;...;frame count`,
root first, each frame `function (path:line)`. A sample counts for the first stage marker found
from the root down, so that what a stage calls (msgpack, redis-py's packing) counts for the stage.
Idle samples (a thread waiting in epoll) are not recorded by py-spy, so the shares are of the time
the process was busy.
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
LOOP = "NATS client and event loop (no tradecache frame below the loop: socket writes, parsing, select)"
OTHER = "other tradecache code (pulling, acking, pipeline glue, logging)"
STAGES = (*dict.fromkeys(stage for stage, _, _ in MARKERS), LOOP, OTHER)
_ENTRY = ("tradecache/cli.py", "tradecache/__main__.py")  # below these every sample sits
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^:()]*)(?::\d+)?\)$")


@dataclass
class Profile:
    samples: int
    shares: dict[str, float]  # stage -> fraction of the samples

    def table(self) -> str:
        lines = [f"profile of the daemon: {self.samples:,} samples", "| where | share |", "|---|---|"]
        lines += [f"| {stage} | {self.shares[stage]:.0%} |" for stage in STAGES]
        return "\n".join(lines)


def stage_of(stack: list[str]) -> str:
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


def parse(raw: str) -> Profile:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[stage_of(stack.split(";"))] += int(count)
    total = sum(counts.values())
    return Profile(total, {stage: counts[stage] / total if total else 0.0 for stage in STAGES})


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy not found: it comes with the dev extra (scripts/setup)")
    return found


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


__all__ = ["LOOP", "OTHER", "STAGES", "Profile", "parse", "stage_of", "start", "stop"]
