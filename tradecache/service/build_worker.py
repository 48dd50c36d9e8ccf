"""A helper process that rebuilds reply items beside the event loop, on a second core.

Rebuilding orders, positions and accounts for a page is CPU-bound Python (decode, replay,
snapshot, pack: ~25 us an order of 4 events), and the event loop is one thread: a first
`load.orders` kept one core busy while the other idled. `Loader.build` hands a share of each
chunk's cache misses to this worker (`BuildWorker.share`, following the balance between the two)
and rebuilds the rest itself meanwhile; the worker runs the very function the loop runs
(`items.rebuilt_entry`), so its items are the loop's byte for byte.

The worker is `python -m tradecache.service.build_worker`, the daemon's own package first on its
path, speaking length-prefixed msgpack frames on its stdin and stdout (its stray prints go to
stderr). A job is `[id, collection, msgpack?, currencies or nil, [[stored list, instrument or
nil], ...]]`; its answer `[id, [item bytes, nil (absent) or false (could not build), ...]]`.
Currencies are sent again whenever a `Currency` message changed the registry since the worker last
heard: rebuilding money needs them. Jobs are `submit`ted without waiting and `collect`ed later, so
the loop can hand over the next chunk's share before it waits for this one's.

Nothing the worker does can fail a request: an item it could not build is rebuilt on the loop
(which raises what it always raised, and only if the page gets that far), and a worker that died,
answered out of shape or later than `TIMEOUT_FACTOR` times the time since its job was sent (at
least `MIN_TIMEOUT`) or left any job, even one given up, unanswered for `STALE_SECONDS` is killed,
its share rebuilt on the loop, and another started `RESTART_SECONDS` later (at most `MAX_STARTS` in
all; then the loop builds alone, logged once).
Bounds: at most `MAX_OUTSTANDING` (2) jobs sent and not answered, all requests together (a chunk
meanwhile is built on the loop alone), one chunk per job (`READ_CHUNK` entities), an answer of at
most `MAX_ANSWER_FACTOR` (8) times the job's bytes plus a megabyte; a job given up (its request
cancelled) is still read when answered, and skipped by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import msgpack

import tradecache
from tradecache.model.enums import CurrencyType
from tradecache.model.ledger import Collection
from tradecache.model.values import Currency, currency_registry, on_currency_change, register_currency
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.service.futures import retrieved
from tradecache.service.items import rebuilt_entry

READY: Final = "ready"
COULD_NOT_BUILD: Final = False
START_TIMEOUT: Final = 30.0
MIN_TIMEOUT: Final = 1.0
TIMEOUT_FACTOR: Final = 10.0
RESTART_SECONDS: Final = 10.0
MAX_STARTS: Final = 5
# Jobs sent and not yet answered, all requests together: one being built, the next in hand.
MAX_OUTSTANDING: Final = 2
# A job unanswered this long means a hung worker, even one its request gave up (`usable`).
STALE_SECONDS: Final = 30.0
# The worker's share of a chunk's cache misses (`BuildWorker.share`): where it starts, its bounds,
# and how far one collected job moves it.
FIRST_SHARE: Final = 0.5
MIN_SHARE: Final = 0.2
MAX_SHARE: Final = 0.9
SHARE_STEP: Final = 0.05
AHEAD_WAIT: Final = 0.0003  # seconds
MAX_ANSWER_FACTOR: Final = 8  # JSON writes a control character of a stored string as six
PIPE_BYTES: Final = 1 << 20
MIN_CPUS: Final = 1.5
Job = tuple[Sequence[bytes], bytes | None]  # a stored list, and the instrument a position needs

log = logging.getLogger("tradecache.service.build_worker")

# Bumped whenever the registry changes: a worker that heard an older generation hears it again.
_generation = 0


def _registry_changed() -> None:
    global _generation
    _generation += 1


on_currency_change(_registry_changed)


def _frame(value: Any) -> bytes:
    body: bytes = msgpack.packb(value, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def _widen(fd: int) -> None:
    """Let a pipe hold a whole job or answer (Linux, up to fs.pipe-max-size): with the default 64
    KB, a job went out only as the loop turned, so the worker started late and the loop waited."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


def usable_cpus() -> float:
    """The CPUs this process may use: its affinity, capped by its cgroup's CPU quota (a
    container's CPU limit; cgroup v2, else v1). With fewer than `MIN_CPUS` a worker only shares
    the loop's CPU: the daemon starts none."""
    cpus = float(len(os.sched_getaffinity(0)))
    quota = _cgroup_quota()
    return cpus if quota is None else min(cpus, quota)


def _cgroup_quota() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        return quota / int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text()) if quota > 0 else None
    return None


def _is_item(value: Any) -> bool:
    return value is None or value is COULD_NOT_BUILD or type(value) is bytes


def _currencies() -> list[list[Any]]:
    return [[c.code, c.precision, c.iso4217, c.name, c.currency_type.value] for c in currency_registry().values()]


class WorkerGone(Exception):
    """The worker's pipe ended or carried something out of shape: its answers will not come."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """A job sent to the worker: the process it went to, its answer to come, how many items it
    asked for, and when it was sent (`time.perf_counter`)."""

    process: asyncio.subprocess.Process
    answer: asyncio.Future[Any]
    count: int
    at: float


class BuildWorker:
    """The daemon's side of the worker process (see the module docstring).

    One task reads every frame the process writes and hands each answer to the job waiting for
    it (a job given up, its request cancelled or timed out, leaves its answer to be dropped): a
    cancelled request never leaves the pipe half-read."""

    def __init__(
        self,
        *,
        restart_seconds: float = RESTART_SECONDS,
        max_starts: int = MAX_STARTS,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.restart_seconds = restart_seconds
        self.on_failure = on_failure  # the daemon counts them (tradecache_load_build_worker_failures_total)
        self.max_starts = max_starts
        self.starts = 0
        self.failures = 0
        self.jobs = 0  # jobs answered in full (tests and benchmarks read it)
        self._process: asyncio.subprocess.Process | None = None
        self._ready = False
        self._stopped = False
        self._job = 0
        # The loop has the rest of the page to do besides its share (reads, cache, framing), so an
        # even split left the worker idle; where the balance lies depends on the machine and the
        # load, so the share follows it: up when the answer was in before the loop asked for it,
        # down when the loop had to wait.
        self.share = FIRST_SHARE
        self._heard = -1  # the registry generation the worker last heard
        # job -> (its answer, its size bound, when it was sent)
        self._waiting: dict[int, tuple[asyncio.Future[Any], int, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def available(self) -> bool:
        """Started, and fewer than `MAX_OUTSTANDING` jobs sent and not yet answered."""
        return self._ready and len(self._waiting) < MAX_OUTSTANDING

    def usable(self) -> bool:
        """`available`, once a worker that left a job unanswered for STALE_SECONDS is given up
        (killed, another started later): a job dropped by its request is awaited by no one, so no
        timeout would catch a worker hung on it, and two such jobs would keep it unavailable."""
        process = self._process
        if self._ready and process is not None and self._waiting:
            oldest = min(sent for _, _, sent in self._waiting.values())
            if time.perf_counter() - oldest > STALE_SECONDS:
                self._ready = False  # at once: nothing more is sent to it
                self._spawn(self._fail(process, f"left a job unanswered for over {STALE_SECONDS:.0f} s"))
                return False
        return self.available

    @property
    def ready(self) -> bool:
        """Started and answering (busy or not)."""
        return self._ready

    async def start(self) -> None:
        """Start the process; it becomes `available` once it says it is ready."""
        if self._stopped or self._process is not None or self.starts >= self.max_starts:
            return
        self.starts += 1
        env = dict(os.environ)
        root = str(Path(tradecache.__file__).resolve().parents[1])  # this very package, whatever the cwd
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tradecache.service.build_worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
        except OSError as exc:
            await self._fail(None, f"could not be started: {exc}")
            return
        self._process = process
        ready = asyncio.get_running_loop().create_future()
        self._waiting[0] = (ready, 1 << 10, time.perf_counter())
        self._spawn(self._read(process))
        self._spawn(self._await_ready(process, ready))

    async def stop(self) -> None:
        """Stop the process (closing its stdin ends it) and start no other."""
        self._stopped = True
        self._ready = False
        process, self._process = self._process, None
        await self._end(process)
        for task in list(self._tasks):
            task.cancel()

    def submit(self, collection: Collection, as_msgpack: bool, jobs: Sequence[Job]) -> Submitted | None:
        """Send `jobs` to the worker at once, to be `collect`ed (or `drop`ped) later: the loop builds
        its own share meanwhile, and may submit the next chunk's before collecting this one, so the
        worker always has the next job in hand. None when it is not ready, already has
        `MAX_OUTSTANDING` jobs, or cannot be written to: the caller builds them all."""
        process = self._process
        if not self.available or process is None or process.stdin is None:
            return None
        self._job += 1
        job = self._job
        currencies = None
        if self._heard != _generation:
            currencies, self._heard = _currencies(), _generation
        frame = _frame([job, collection.value, as_msgpack, currencies, [[list(raw), iid] for raw, iid in jobs]])
        try:
            process.stdin.write(frame)
        except (OSError, RuntimeError) as exc:  # its pipe closed: it died
            self._heard = -1
            self._spawn(self._fail(process, f"could not be written to: {exc}"))
            return None
        # Kept until its answer is read, even when dropped: its bound stays known to the reader,
        # and it counts as outstanding while the worker is busy with it.
        answer = asyncio.get_running_loop().create_future()
        sent = time.perf_counter()
        self._waiting[job] = (answer, MAX_ANSWER_FACTOR * len(frame) + (1 << 20), sent)
        return Submitted(process, answer, len(jobs), sent)

    async def collect(self, submitted: Submitted) -> list[Any] | None:
        """A submitted job's items in order: bytes, None (absent) or COULD_NOT_BUILD. None when the
        worker failed, or gave no answer within `TIMEOUT_FACTOR` times the time since the job was
        sent (the loop's own work meanwhile; at least `MIN_TIMEOUT`): it is then killed. Cancelled
        (its request was): the job is dropped."""
        timeout = max(MIN_TIMEOUT, TIMEOUT_FACTOR * (time.perf_counter() - submitted.at))
        asked = time.perf_counter()
        try:  # cancelled or timed out, `wait_for` cancels the answer: the reader drops it when it comes
            if submitted.answer.done():
                items = submitted.answer.result()
            else:
                items = await asyncio.wait_for(submitted.answer, timeout)
        except TimeoutError:
            await self._fail(submitted.process, f"gave no answer within {timeout:.1f} s")
            return None
        except WorkerGone:
            return None  # the reader failed it
        if not isinstance(items, list) or len(items) != submitted.count or not all(map(_is_item, items)):
            await self._fail(submitted.process, "answered out of shape")
            return None
        self.jobs += 1
        # An answer already in the pipe is read only once the loop turns: a wait that short means
        # the worker was ahead too.
        step = SHARE_STEP if time.perf_counter() - asked <= AHEAD_WAIT else -SHARE_STEP
        self.share = min(MAX_SHARE, max(MIN_SHARE, self.share + step))
        return items

    @staticmethod
    def drop(submitted: Submitted) -> None:
        """Give a submitted job up: its answer, when it comes, is read and thrown away."""
        if not submitted.answer.done():
            submitted.answer.cancel()
        else:
            retrieved(submitted.answer)

    # -- inside -----------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_ready(self, process: asyncio.subprocess.Process, ready: asyncio.Future[Any]) -> None:
        try:
            said = await asyncio.wait_for(ready, START_TIMEOUT)
        except (TimeoutError, WorkerGone) as exc:
            await self._fail(process, f"did not start ({type(exc).__name__}: {exc})")
            return
        if said != READY:
            await self._fail(process, f"did not start: it said {said!r}")
            return
        if process is self._process:
            self._ready = True
            self._heard = -1
            log.info("build worker ready", extra={"pid": process.pid})

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """Every frame the process writes, each to the job waiting for it (see the class docstring)."""
        stdout = process.stdout
        assert stdout is not None
        try:
            while True:
                size = int.from_bytes(await stdout.readexactly(4), "big")
                # Answers come in the order of the jobs: the oldest outstanding sets the bound.
                limit = max((bound for _, bound, _ in self._waiting.values()), default=1 << 20)
                if size > limit:
                    raise WorkerGone(f"an answer of {size} bytes, over its bound of {limit}")
                answer = msgpack.unpackb(await stdout.readexactly(size), raw=False)
                if not isinstance(answer, list) or len(answer) != 2 or not isinstance(answer[0], int):
                    raise WorkerGone("an answer that is not [job, items]")
                waiting = self._waiting.pop(answer[0], None)
                if waiting is not None and not waiting[0].done():
                    waiting[0].set_result(answer[1])
        except (asyncio.IncompleteReadError, OSError, ValueError, WorkerGone) as exc:
            reason = "its output ended" if isinstance(exc, asyncio.IncompleteReadError) else str(exc)
            for future, _, _ in self._waiting.values():
                if not future.done():
                    future.set_exception(WorkerGone(reason))
            self._waiting.clear()
            await self._fail(process, reason)

    async def _fail(self, process: asyncio.subprocess.Process | None, reason: str) -> None:
        """Kill `process` if it is still the worker; another starts later, unless stopped or out of starts."""
        if process is not None and process is not self._process:
            return  # an earlier worker, already replaced or stopped
        self.failures += 1
        self.on_failure()
        self._ready = False
        self._process = None
        last = self.starts >= self.max_starts
        if not self._stopped:
            log.warning(
                "build worker failed: the event loop rebuilds alone" + ("" if last else " until another starts"),
                extra={"reason": reason, "starts": self.starts},
            )
        await self._end(process, kill=True)
        if not self._stopped and not last:
            self._spawn(self._restart_later())

    async def _restart_later(self) -> None:
        await asyncio.sleep(self.restart_seconds)
        await self.start()

    @staticmethod
    async def _end(process: asyncio.subprocess.Process | None, *, kill: bool = False) -> None:
        if process is None or process.returncode is not None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        elif process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


# -- the worker process --------------------------------------------------------------------


def serve(reader: BinaryIO, writer: BinaryIO) -> int:
    """Answer jobs until the daemon closes the pipe (see the module docstring)."""
    serializer = MsgPackSerializer()
    writer.write(_frame([0, READY]))
    writer.flush()
    while True:
        header = reader.read(4)
        if len(header) < 4:
            return 0
        job, collection, as_msgpack, currencies, jobs = msgpack.unpackb(
            reader.read(int.from_bytes(header, "big")), raw=False
        )
        for code, precision, iso, name, kind in currencies or ():
            register_currency(Currency(code, precision, iso, name, CurrencyType(kind)))
        items = [_item(serializer, Collection(collection), raw, iid, as_msgpack) for raw, iid in jobs]
        writer.write(_frame([job, items]))
        writer.flush()


def _item(serializer: MsgPackSerializer, collection: Collection, raw: Any, iid: bytes | None, as_msgpack: bool) -> Any:
    try:
        return rebuilt_entry(serializer, collection, raw, iid, as_msgpack)
    except Exception:  # the loop rebuilds it, and says why if the page gets that far
        return COULD_NOT_BUILD


def main() -> int:
    # A terminal's Ctrl-C reaches the whole process group: the daemon stops the worker itself
    # (closing its stdin) once it has stopped asking, and a daemon gone leaves it at end of input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # a job's objects are freed by reference counting; none are in cycles
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the frames
    for fd in (0, protocol_out.fileno()):  # the pipes to the daemon (one size for both ends)
        _widen(fd)
    return serve(sys.stdin.buffer, protocol_out)


__all__ = [
    "COULD_NOT_BUILD",
    "FIRST_SHARE",
    "MAX_OUTSTANDING",
    "MAX_SHARE",
    "MIN_CPUS",
    "MIN_SHARE",
    "BuildWorker",
    "Submitted",
    "serve",
    "usable_cpus",
]

if __name__ == "__main__":
    sys.exit(main())
