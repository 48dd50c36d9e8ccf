"""The benchmarks keep working: each runs in its tiny `--quick` mode (its own redis-server and
nats-server on free ports) and prints the lines the README's tables are read from, every goal of
issue 15 it measures among them with a verdict. The figures of a quick run mean nothing: only the
lines are checked. The profile split is checked on stacks made up here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.profiler import REBUILD_STAGES, STAGES, START, parse, stage_of

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[\d,]+(?:\.\d+)?"
VERDICT = r": (?:MET|NOT MET)$"


def run(script: str, *arguments: str) -> list[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRADECACHE_", "PYTEST_"))}
    done = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", *arguments], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.splitlines()


def one(lines: list[str], pattern: str) -> re.Match[str]:
    found = [match for line in lines if (match := re.search(pattern, line))]
    assert len(found) == 1, f"{pattern!r} matched {len(found)} lines:\n" + "\n".join(lines)
    return found[0]


def goals(lines: list[str]) -> list[str]:
    found = [line for line in lines if line.startswith("GOAL ")]
    assert all(re.search(VERDICT, line) for line in found), found
    return found


def test_ingest_bench_prints_the_baselines_the_profile_and_its_goals() -> None:
    lines = run("ingest_bench.py", "--profile", "--profile-rebuild")
    left_out = r"( \([\d,]+ of other threads left out\))?"  # the child watcher's thread, when sampled
    rebuild_profile = lines.index(one(lines, rf"^profile of the rebuild: [\d,]+ samples{left_out}$").string)
    lines, rebuild_lines = lines[:rebuild_profile], lines[rebuild_profile:]
    rebuild_shares = [int(one(rebuild_lines, rf"^\| {re.escape(stage)} \| (\d+)% \|$")[1]) for stage in REBUILD_STAGES]
    assert 96 <= sum(rebuild_shares) <= 104, rebuild_shares  # each rounded
    lines += [line for line in rebuild_lines if line.startswith("GOAL ")]
    for consumer in ("hand-made pull, AckPolicy.ALL", "hand-made pull, ack per message", "nats-py fetch(), ack per"):
        one(lines, rf"^bare consumer, {re.escape(consumer)}.*: {NUMBER} msgs/s$")
    # Both naive measures, neither with an AOF rewrite of the benchmark's redis-server in it, nor
    # tradecache's; the ratio against their mean.
    before = one(lines, rf"^naive sink \(.*\): ({NUMBER}) events/s \(AOF rewrites during it: 0\)$")
    again = one(lines, rf"^naive sink again, .*: ({NUMBER}) events/s; .* the baseline below: ({NUMBER}) events/s$")
    naive = [float(text.replace(",", "")) for text in (before[1], again[1], again[2])]
    assert abs((naive[0] + naive[1]) / 2 - naive[2]) <= 1, naive
    end_to_end = rf"^tradecache end to end \(under py-spy\): 3,000 events in .* = {NUMBER} events/s"
    one(lines, rf"{end_to_end} \({NUMBER}x the naive sink, .* AOF rewrites during it: 0\)$")
    budget = one(
        lines,
        rf"^CPU budget of the goal on \d+ cores: 8x the naive sink is {NUMBER} events/s, ({NUMBER}) us"
        rf" .* they used ({NUMBER}) us \((\d+)% of it\): .* at most {NUMBER} events/s = {NUMBER}x",
    )
    one(
        lines,
        r"^cores busy during the backlog: \d+% of \d+%; waiting for a core \(runnable, none free\): "
        rf"tradecache {NUMBER} ms \(\d+% of the backlog\), redis-server {NUMBER} ms .*, nats-server {NUMBER} ms",
    )
    allowed, used = (float(budget[n].replace(",", "")) for n in (1, 2))
    assert allowed > 0 and abs(used / allowed * 100 - int(budget[3])) <= 2, budget.string
    samples = int(one(lines, rf"^profile of the daemon: ([\d,]+) samples{left_out}$")[1].replace(",", ""))
    assert samples > 0
    shares = [int(one(lines, rf"^\| {re.escape(stage)} \| (\d+)% \|$")[1]) for stage in STAGES]
    assert 97 <= sum(shares) <= 103, shares  # each rounded
    one(lines, rf"daemon histogram: p50 {NUMBER} ms, p99 {NUMBER} ms$")
    one(lines, rf"^event lag, external .*: p50 {NUMBER} ms, p99 {NUMBER} ms$")
    one(lines, rf"^tradecache RSS: {NUMBER} MB at ready, {NUMBER} MB after the backlog, {NUMBER} MB at the end$")
    rebuild = rf"^tradecache rebuild into an emptied Redis \(under py-spy\): {NUMBER} messages .* events/s"
    rebuilt = one(lines, rf"{rebuild} .*checkpoint (\d+) \(ingest left (\d+)\)$")
    assert rebuilt[1] == rebuilt[2]  # the rebuild reached where ingest had
    assert [line.split(":")[0] for line in goals(lines)] == [
        "GOAL ingest >= 8x the naive sink of the same run",
        "GOAL lag p99 <= 10 ms at 1,000 events/s (daemon histogram)",
        "GOAL RSS flat (end within 10% + 2 MB of after the backlog)",
        "GOAL rebuild >= the ingest rate",
    ]


def test_load_bench_measures_nautilus_trader_beside_us_and_prints_its_goals() -> None:
    lines = run("load_bench.py")
    one(lines, rf"^  NautilusTrader 1\.\d+\.\d+ CacheDatabaseAdapter\.load_orders\(\): {NUMBER} s \(runs: .*\)$")
    one(lines, rf"^  tradecache RedisCacheDatabase\.load_orders\(\): +{NUMBER} s \({NUMBER}x faster\) \(runs: .*\)$")
    one(lines, r"^bare responder \(LRANGE, raw reply\) +p50 ")
    assert len([line for line in lines if "first (replies built)" in line]) == 2
    one(lines, rf"^  of 4 events, first build on 2 fresh daemons: best {NUMBER} s \(runs: .*\)$")
    assert [line.split(":")[0] for line in goals(lines)] == [
        "GOAL load.orders first build of 300 orders <= 0.5 s",
        "GOAL load.orders first build >= 10x NautilusTrader's load_orders()",
        "GOAL load_orders() of 300 orders <= 0.25 s",
        "GOAL load_orders() >= 10x NautilusTrader's load_orders()",
        "GOAL load.order p99 <= 1.25x a bare responder",
    ]


def test_scale_bench_prints_a_row_per_size() -> None:
    lines = run("scale_bench.py")
    rows = [line for line in lines if re.match(r"^\| [\d,]+ \| ", line)]
    assert [row.split(" | ")[0] for row in rows] == ["| 200", "| 400"]
    assert all(row.count("|") == 9 and " s |" in row for row in rows), rows
    assert len(goals(lines)) == 1


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("cache_bench.py", rf"^GOAL load_orders\(\) of 300 orders <= 0\.25 s .*: {NUMBER} s{VERDICT}"),
        ("flood_bench.py", r"^daemon exit code after SIGTERM: 0$"),
    ],
)
def test_the_other_benchmarks_still_run(script: str, expected: str) -> None:
    one(run(script), expected)


def test_the_profile_counts_a_sample_for_the_outermost_stage() -> None:
    loop = "run (asyncio/base_events.py:600);_run (asyncio/events.py:80)"
    process = f"{loop};_process (/x/tradecache/ingest/consumer.py:570)"
    raw = "\n".join([
        f"{process};check (/x/tradecache/ingest/intake.py:130);from_map (/x/tradecache/serialization/msgpack.py:9) 30",
        f"{process};apply_batch (/x/tradecache/ingest/batch.py:70);apply (/x/tradecache/model/ledger.py:200) 20",
        f"{process};_record (/x/tradecache/ingest/consumer.py:621);labels (prometheus_client/metrics.py:1) 15",
        f"{process};commit (/x/tradecache/cache/aio.py:97);pack (redis/_parsers/encoders.py:3) 20",
        f"{process};read_state (/x/tradecache/cache/aio.py:128);pack (redis/_parsers/encoders.py:3) 5",
        f"{loop};_read (nats/aio/client.py:10) 6",
        f"{process};_take (/x/tradecache/ingest/consumer.py:534) 4",
        "_bootstrap (threading.py:1002);run (threading.py:982);_do_waitpid (asyncio/unix_events.py:1404) 9",
        "not a stack line",
    ])  # fmt: skip
    profile = parse(raw)
    assert profile.samples == 100 and profile.other_threads == 9  # the child watcher's wait: not the loop's
    assert "(9 of other threads left out)" in profile.table()
    assert [round(profile.shares[stage] * 100) for stage in STAGES] == [30, 20, 15, 20, 5, 6, 4]
    assert stage_of(["Intake.check (/x/tradecache/ingest/intake.py:130)"]) == STAGES[0]


def test_a_rebuild_profile_counts_its_start_apart() -> None:
    runner = "run (asyncio/runners.py:190);run_forever (asyncio/base_events.py:600);_run (asyncio/events.py:80)"
    rebuild = f"{runner};rebuild (/x/tradecache/daemon/rebuild.py:100)"
    replay = f"{rebuild};_guarded (/x/tradecache/daemon/rebuild.py:150);_replay (/x/tradecache/daemon/rebuild.py:200)"
    raw = "\n".join([
        f"{replay};check (/x/tradecache/ingest/intake.py:130) 40",
        f"{runner};_call_directly (/x/tradecache/ingest/pipeline.py:90);commit (/x/tradecache/cache/aio.py:97) 10",
        f"{runner};_read_loop (nats/aio/client.py:10) 10",
        f"{rebuild};_sidecar_running (/x/tradecache/daemon/rebuild.py:80) 5",
        f"{rebuild};_guarded (/x/tradecache/daemon/rebuild.py:150);flush (/x/tradecache/cache/database.py:1) 15",
        "main (/x/tradecache/cli.py:1);_find_and_load (<frozen importlib._bootstrap>:1);"
        "<module> (/x/tradecache/daemon/rebuild.py:1) 20",
    ])  # fmt: skip
    profile = parse(raw, rebuild=True)
    assert profile.samples == 100 and list(profile.shares) == list(REBUILD_STAGES)
    # The commit task and the NATS reader run outside `_replay`'s frame and still count as replay.
    assert {stage: round(share * 100) for stage, share in profile.shares.items() if share} == {
        STAGES[0]: 40,
        STAGES[3]: 10,
        STAGES[5]: 10,
        START: 40,
    }
    assert START not in parse(raw).shares  # a daemon's profile has no start stage


def test_the_feed_is_published_as_producers_publish_it() -> None:
    """SPEC section 1: `Nats-Msg-Id` = the event's or command's id, none for reference data; so the
    benchmarks' deliveries carry the headers a real node's do, and the daemon parses them."""
    from benchmarks.feed import Feed, headers_of, instruments

    messages = Feed("ids").lifecycle()
    ids = [headers_of(payload) for _, payload in messages]
    assert all(found is not None and len(found["Nats-Msg-Id"]) == 36 for found in ids)
    assert len({found["Nats-Msg-Id"] for found in ids if found}) == len(messages)  # never dropped as duplicates
    assert headers_of(instruments()[0][1]) is None


def test_each_workload_is_what_it_says() -> None:
    """`ingest_bench.py --workload`: partial fills fill every order in 10 trades, one order grows
    with every fill; each fill's trade id is new, and an order is never filled beyond its quantity."""
    import msgpack

    from benchmarks.feed import WORKLOADS

    for name, fills_per_order in (("mix", 1), ("partial-fills", 10), ("one-order", None)):
        maps = [msgpack.unpackb(payload, raw=False) for _, payload in WORKLOADS[name]("w").messages(2000)]
        quantities = {m["client_order_id"]: int(m["quantity"]) for m in maps if m["type"] == "OrderInitialized"}
        filled: dict[str, list[int]] = {}
        for m in maps:
            if m["type"] == "OrderFilled":
                filled.setdefault(m["client_order_id"], []).append(int(m["last_qty"]))
        trade_ids = [m["trade_id"] for m in maps if m["type"] == "OrderFilled"]
        assert len(set(trade_ids)) == len(trade_ids) > 100, name
        assert all(sum(parts) <= quantities[coid] for coid, parts in filled.items()), name
        if fills_per_order is None:
            assert len(quantities) == 1 and len(trade_ids) > 1900
        else:  # every order filled whole, in that many trades (but the last, cut by the count)
            complete = [parts for coid, parts in filled.items() if sum(parts) == quantities[coid]]
            assert len(complete) >= len(filled) - 1 and all(len(parts) == fills_per_order for parts in complete)


def test_the_half_malformed_workload_is_half_not_msgpack_and_published_without_headers() -> None:
    import msgpack

    from benchmarks.feed import MALFORMED, WORKLOADS, headers_of

    messages = WORKLOADS["half-malformed"]("w").messages(2000)
    bad = [payload for _, payload in messages if payload.startswith(MALFORMED)]
    good = [payload for _, payload in messages if not payload.startswith(MALFORMED)]
    assert 950 <= len(bad) <= 1000  # every other message but the 20 instruments
    assert all(headers_of(payload) is None for payload in bad)
    for payload in bad:
        with pytest.raises(ValueError):  # msgpack's errors are ValueErrors
            msgpack.unpackb(payload, raw=False)
    assert all(isinstance(msgpack.unpackb(payload, raw=False), dict) for payload in good)
