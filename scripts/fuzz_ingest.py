#!/usr/bin/env python3
"""Mutation fuzzing of tradecache's ingest core, outside CI: find inputs that crash it.

Every input goes the way a delivery goes in the daemon, without servers: `Intake.check` (size,
subject, msgpack, every field, kind), then for an accepted message `Ledger.apply` on the state of
a real vector scenario, then `plan_writes` with the serializer (what the daemon hands to Redis).
A refusal must be an `EventRejected` whose reason is one of SPEC section 1's; anything else (a
`TypeError`, `RecursionError`, `OverflowError`, ...) is a finding: in the daemon it would stop
the ingest loop, and the same message would stop it again after every restart.

Inputs are the vector payloads of tests/data/vectors, mutated:
- with atheris installed (`.venv/bin/pip install atheris`; deliberately not a dependency of the
  package), libFuzzer drives it, coverage-guided: half of its inputs are payload bytes it
  mutates itself (its corpus starts from the vector payloads), the other half seed the
  structural `Mutator` of tests/unit/test_decoder_fuzz.py (fields deleted, wrong types,
  unknown enum values, huge numbers, bad timestamps, deep nesting, invalid UTF-8, ...);
- without atheris (or with `--engine random`), a seeded loop of the same structural and
  byte-level mutations.

    .venv/bin/python scripts/fuzz_ingest.py --seconds 300 2>/dev/null  # atheris if installed
    .venv/bin/python scripts/fuzz_ingest.py --engine random --seed 7 --seconds 60

(libFuzzer writes its progress lines to stderr; other arguments go to libFuzzer, e.g. -max_len=8192.)

It prints the number of inputs tried, how they ended (accepted, or refused by reason) and each
distinct finding (exception type and place, how often, one input in hex, which is also saved
under --save). The exit status is 1 when there is a finding. Reads the scenarios of
tests/data/vectors (or TRADECACHE_VECTORS).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

atheris: Any
try:  # atheris is optional (and untyped): without it the script runs its own mutation loop
    atheris = importlib.import_module("atheris")
except ImportError:
    atheris = None


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to fuzz (default 180)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random engine and the mutator")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument(
        "--save",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tradecache-fuzz",
        help="where failing inputs (and atheris' corpus) go; default: tradecache-fuzz in the temp folder",
    )
    args, rest = parser.parse_known_args()
    args.libfuzzer_args = rest
    return args


ARGS = _parse_args()
USE_ATHERIS = ARGS.engine == "atheris" or (ARGS.engine == "auto" and atheris is not None)
if ARGS.engine == "atheris" and atheris is None:
    sys.exit("atheris is not installed: .venv/bin/pip install atheris (or use --engine random)")

if USE_ATHERIS:
    with atheris.instrument_imports(include=["tradecache"]):
        import tradecache.ingest.intake
        import tradecache.model.ledger  # noqa: F401

from tests.unit.test_decoder_fuzz import SEEDS, SERIALIZER, Mutator, delivery  # noqa: E402
from tests.vectors.scenarios import SCENARIO_KINDS, Scenario, scenario_paths  # noqa: E402
from tradecache.cache.keys import Keys  # noqa: E402
from tradecache.cache.plan import ScriptCall, plan_writes  # noqa: E402
from tradecache.errors import EventRejected, RejectReason  # noqa: E402
from tradecache.ingest.deadletter import build_letter  # noqa: E402
from tradecache.ingest.intake import Accepted, Intake, Refused  # noqa: E402
from tradecache.model.identifiers import TraderId  # noqa: E402
from tradecache.model.ledger import Ledger  # noqa: E402
from tradecache.model.messages import Kind  # noqa: E402
from tradecache.model.values import Currency  # noqa: E402
from tradecache.wire import Subjects  # noqa: E402

MAX_PAYLOAD = 64 * 1024
RESET_EVERY = 400  # inputs after which a scenario's ledger starts again from nothing


class Track:
    """One scenario's ledger, advanced one valid message at a time between mutants."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.subjects = Subjects("tradecache", scenario.trader_id)
        self.intake = Intake(self.subjects, SERIALIZER, MAX_PAYLOAD)
        self.keys = Keys(scenario.trader_id)
        self.payloads = [payload for _kind, _type, payload in scenario.messages]
        self.kinds = [SCENARIO_KINDS[kind] for kind, _type, _payload in scenario.messages]
        self.reset()

    def reset(self) -> None:
        self.ledger = Ledger(TraderId(self.scenario.trader_id))
        self.next = 0
        self.inputs = 0
        self.accepted: list[tuple[str, bytes]] = []  # mutants the ledger took since the reset

    def advance(self) -> None:
        """Apply the scenario's next message (refusals are expected in some scenarios).

        A crash here is a finding too: mutants accepted earlier put the ledger in a state where
        a valid message breaks it. They are reported with it, as the prelude.
        """
        self.inputs += 1
        if self.next >= len(self.payloads) or self.inputs >= RESET_EVERY:
            self.reset()
        payload = self.payloads[self.next]
        message = SERIALIZER.deserialize(payload)
        self.next += 1
        if isinstance(message, Currency):
            return  # registering is process-wide and idempotent; the vectors' currencies are fine
        try:
            self.ledger.apply(message)
        except EventRejected:
            pass
        except Exception as error:
            hows = ", ".join(how for how, _data in self.accepted) or "none"
            REPORT.record(error, payload, f"{self.scenario.name}'s own message after mutants {hows}", self.accepted)
            self.reset()


@dataclass
class Finding:
    count: int
    example: bytes
    how: str
    trace: str
    prelude: list[tuple[str, bytes]]


@dataclass
class Report:
    inputs: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def record(self, error: BaseException, data: bytes, how: str, prelude: Sequence[tuple[str, bytes]] = ()) -> None:
        frames = traceback.extract_tb(error.__traceback__)
        ours = [frame for frame in frames if "tradecache" in frame.filename] or frames
        place = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        key = (type(error).__name__, place)
        if key in self.findings:
            self.findings[key].count += 1
            return
        self.findings[key] = Finding(1, data, how, "".join(traceback.format_exception(error)), list(prelude))
        ARGS.save.mkdir(parents=True, exist_ok=True)
        name = f"{key[0]}-{place.replace(':', '-')}"
        (ARGS.save / f"{name}.msgpack").write_bytes(data)
        for number, (_how, earlier) in enumerate(prelude, start=1):
            (ARGS.save / f"{name}.prelude-{number}.msgpack").write_bytes(earlier)

    def print(self) -> None:
        seconds = time.monotonic() - self.started
        engine = "atheris (libFuzzer)" if USE_ATHERIS else f"seeded random (seed {ARGS.seed})"
        print(f"\nfuzz_ingest: {self.inputs} inputs in {seconds:.0f} s ({self.inputs / max(seconds, 1e-9):.0f}/s), "
              f"engine {engine}")  # fmt: skip
        for outcome, count in sorted(self.outcomes.items(), key=lambda item: -item[1]):
            print(f"  {count:>9}  {outcome}")
        if not self.findings:
            print("findings: none (every input was accepted or refused with a SPEC reason)")
        for (name, place), finding in self.findings.items():
            print(f"\nFINDING {name} at {place}: {finding.count} inputs; first made by {finding.how}")
            for how, earlier in finding.prelude:
                print(f"  after accepted mutant {how} ({len(earlier)} bytes): {earlier[:400].hex()}")
            print(f"  input ({len(finding.example)} bytes): {finding.example[:400].hex()}")
            print("  " + finding.trace.replace("\n", "\n  "))
        sys.stdout.flush()


REASONS = frozenset(RejectReason)
TRACKS = [Track(Scenario.load(path)) for path in scenario_paths()]
REPORT = Report()
DEADLINE = time.monotonic() + ARGS.seconds


def run_one(track: Track, subject: str, data: bytes, how: str) -> None:
    """One delivery through intake, ledger and write planning; record anything unexpected."""
    REPORT.inputs += 1
    try:
        item = track.intake.check(delivery(subject, data, seq=REPORT.inputs))
        if not isinstance(item, Accepted):
            refused(item)
            return
        if isinstance(item.message, Currency):
            REPORT.outcomes["accepted Currency (not applied: process-wide)"] += 1
            return
        track.ledger.missing([item.message])  # the daemon asks this before applying a batch
        try:
            outcome = track.ledger.apply(item.message)
        except EventRejected as error:
            refused(Refused(item.delivery, item.kind.value, item.type_name, error))
            return
        plan_writes(outcome.writes, track.keys, SERIALIZER.serialize, ScriptCall())
        SERIALIZER.deserialize(SERIALIZER.serialize(item.message))
        REPORT.outcomes["duplicate" if outcome.duplicate else "accepted"] += 1
        if not outcome.duplicate:
            track.accepted.append((how, data))
    except Exception as error:  # the point of the exercise: anything here is a finding
        REPORT.record(error, data, how)


def refused(item: Refused) -> None:
    """A refusal: a SPEC reason, and dead-letter headers that NATS can carry."""
    assert item.error.reason in REASONS, f"reason {item.error.reason!r} is not a SPEC reason"
    for name, value in build_letter(item, "TRADECACHE", 1024 * 1024).headers.items():
        assert "\r" not in value and "\n" not in value, f"header {name} is not one line: {value!r}"
        value.encode()
    REPORT.outcomes[f"refused {item.error.reason.value}"] += 1


def finish_if_due() -> None:
    if time.monotonic() >= DEADLINE:
        REPORT.print()
        os._exit(1 if REPORT.findings else 0)


def subject_for(track: Track, index: int, rng: random.Random) -> str:
    if rng.random() < 0.05:
        return f"tradecache.in.{track.scenario.trader_id}.{rng.choice(['gossip', 'order.extra', *map(str, Kind)])}"
    return track.subjects.inbound_for(track.kinds[index])


def random_engine() -> None:
    rng = random.Random(ARGS.seed)
    mutator = Mutator(rng)
    while True:
        track = rng.choice(TRACKS)
        track.advance()
        index = rng.randrange(len(track.payloads))
        mutant = mutator.mutate(track.payloads[index], SEEDS)
        run_one(track, subject_for(track, index, rng), mutant.data, mutant.how)
        if REPORT.inputs % 256 == 0:
            finish_if_due()


def atheris_engine() -> None:
    corpus = ARGS.save / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for number, payload in enumerate(SEEDS):
        (corpus / f"vector-{number:03d}").write_bytes(bytes([number % len(TRACKS) * 2]) + payload)

    def one_input(data: bytes) -> None:
        if len(data) < 2:
            return
        track = TRACKS[(data[0] >> 1) % len(TRACKS)]
        track.advance()
        index = data[1] % len(track.payloads)
        rng = random.Random(data[1:])
        if data[0] & 1:  # structural: the bytes seed the Mutator
            mutant = Mutator(rng).mutate(track.payloads[index], SEEDS)
            run_one(track, subject_for(track, index, rng), mutant.data, f"atheris+{mutant.how}")
        else:  # libFuzzer's own byte-level mutations of the payload that follows the first byte
            run_one(track, track.subjects.inbound_for(track.kinds[index]), data[1:], "atheris bytes")
        finish_if_due()

    atheris.Setup([sys.argv[0], str(corpus), *ARGS.libfuzzer_args], one_input)
    atheris.Fuzz()


def main() -> None:
    try:
        atheris_engine() if USE_ATHERIS else random_engine()
    except KeyboardInterrupt:
        REPORT.print()
        os._exit(1 if REPORT.findings else 0)


if __name__ == "__main__":
    main()
