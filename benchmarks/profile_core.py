"""Per-message cost of the pure core (no NATS, no Redis), before and after, in one run.

Ingest (the default): the message mix of `benchmarks/ingest_bench.py` (orders with their
lifecycle, fills with positions, account states, commands), cost per message of
- decode + validate: `Intake.check` (unpack within the decode limits, every field checked);
- ledger + plan: `apply_batch` in batches of 256 (the ledger, then the script call's KEYS/ARGV);
- pack: redis-py turning the script call into the bytes of one EVALSHA (its hiredis packer);
and as the floor, measured in the same run, `msgpack.unpackb` alone (the baseline: a sink that
only unpacks). With `--redis`, also the Redis side: the script calls of the mix sent to a private
redis-server (no AOF; `--redis-server PATH` picks the binary, else as the tests find it), its CPU
per message (INFO cpu, user + sys, best of `--repeat` runs from an empty database) and the commands
the script runs per message and per event appended (INFO commandstats, EVALSHA itself not counted).
The inputs (20,000 deliveries and their checked messages) are built before the measures and
moved out of the garbage collector's sight (`gc.freeze()`): the daemon never holds thousands of
messages at once, and collections walking them were ~2 us of the ledger + plan figure. The
collector still runs on everything the measured code allocates. `--no-freeze` measures with the
inputs in sight. The ledger + plan measure drops each batch's script call as the daemon does once
it is committed (it used to keep them all for the pack measure: ~1 us more of collections); the
calls the pack measure packs come from one more run, not measured.

Loads (`--loads`): 10,000 orders x 4 events (as `cache_bench.py` stores them), cost of
- decode + replay: `order_from_events` per order (what `load_orders()` does after reading);
- load.orders entries: `order_item` and the reply entry, JSON and msgpack (the service's build
  without its reply cache);
- with `--redis`: `load_orders()` from a private redis-server (wall clock), beside a loop of one
  LRANGE per order (bytes only).

Large entities (`--large`): one order filled in N parts, N = 1,000, 10,000 and 40,000 (the
ingest mix's order lifecycle with its quantity raised), cost per fill of
- ledger + plan, as for ingest (the same order and position growing with each fill);
- decode + replay: `order_from_events` on the stored order (what a load of it does).
A cost that grows with N is a per-event cost proportional to what the entity holds already.

`--before REV` runs the same measures on the package at git revision REV (exported to a
temporary folder, run in a child process) and prints both columns and their ratio.

Usage: python benchmarks/profile_core.py [--messages 20000] [--redis [--redis-server PATH]] [--loads] [--large]
       [--orders 10000] [--repeat 3] [--before main] [--no-freeze]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("PROFILE_CORE_SRC"):  # the child of `--before`: the package of another revision first
    sys.path.insert(0, os.environ["PROFILE_CORE_SRC"])
sys.path.insert(1, str(ROOT))

import msgpack  # noqa: E402

import tradecache  # noqa: E402  # first: the benchmarks imported below put this checkout first on the path
from benchmarks.feed import WORKLOADS  # noqa: E402

BATCH = 256


FREEZE = True  # `--no-freeze` sets it False


def best_of(repeat: int, func: Callable[[], Any]) -> float:
    """The fastest of `repeat` runs, in CPU seconds of this process: on a shared 2-core machine the
    wall clock counts the other processes' turns too. With `FREEZE`, what exists before a run (the
    inputs) is frozen out of the collector's sight during it (see the module docstring)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        if FREEZE:
            gc.freeze()
        start = time.process_time()
        func()
        times.append(time.process_time() - start)
        gc.unfreeze()
    return min(times)


def ingest_measures(
    count: int, repeat: int, with_redis: bool = False, binary: str | None = None, workload: str = "mix"
) -> dict[str, float]:
    from benchmarks.ingest_bench import PREFIX, TRADER
    from tradecache.cache.keys import Keys
    from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused
    from tradecache.serialization.msgpack import MsgPackSerializer
    from tradecache.wire import Subjects

    messages = WORKLOADS[workload]("profile").messages(count)
    deliveries = [
        Delivery(f"{PREFIX}.{kind}", payload, None, seq, seq, 0, 0, "")
        for seq, (kind, payload) in enumerate(messages, start=1)
    ]
    serializer = MsgPackSerializer()
    intake = Intake(Subjects("tradecache", TRADER), serializer, 1 << 20)
    keys = Keys(TRADER)
    results: dict[str, float] = {}

    def unpack_all() -> None:
        for delivery in deliveries:
            msgpack.unpackb(delivery.data, raw=False)

    checked: list[Accepted | Refused] = []

    def check_all() -> None:
        checked[:] = [intake.check(delivery) for delivery in deliveries]

    results["unpack (baseline)"] = best_of(repeat, unpack_all)
    results["decode + validate"] = best_of(repeat, check_all)
    refused = [item for item in checked if isinstance(item, Refused)]
    if refused:
        raise SystemExit(f"{len(refused)} messages refused: {refused[0].error}")

    calls: list[Any] = []

    def apply_all(keep: bool = False) -> None:
        # Each batch's result is dropped once the next one is planned, as the daemon drops it once
        # committed (`keep`: the calls are kept, for the pack measure, when not measuring this).
        apply_in_batches(checked, keys, serializer.serialize, calls if keep else None)

    results["ledger + plan"] = best_of(repeat, apply_all)
    apply_all(keep=True)
    results["pack EVALSHA"] = best_of(repeat, lambda: pack_calls(calls))
    results["all-in core"] = results["decode + validate"] + results["ledger + plan"] + results["pack EVALSHA"]
    per_message = {name: seconds / len(deliveries) * 1e6 for name, seconds in results.items()}
    if with_redis:
        per_message.update(redis_ingest(calls, len(deliveries), repeat, binary))
    return per_message


def apply_in_batches(
    checked: list[Any], keys: Any, encode: Callable[[Any], bytes], calls: list[Any] | None = None
) -> Any:
    """A ledger that applied `checked` in batches of BATCH, as the daemon does (a refusal ends the
    benchmark); each batch's script call appended to `calls` if given, else dropped at once."""
    from benchmarks.ingest_bench import TRADER
    from tradecache.ingest.batch import apply_batch
    from tradecache.model.identifiers import TraderId
    from tradecache.model.ledger import Ledger

    ledger = Ledger(TraderId(TRADER))
    for start in range(0, len(checked), BATCH):
        result = apply_batch(ledger, checked[start : start + BATCH], checkpoint=0, keys=keys, encode=encode)
        if result.refused:
            raise SystemExit(f"refused by the ledger: {result.refused[0].error}")
        if calls is not None:
            calls.append(result.call)
    return ledger


def redis_ingest(calls: list[Any], messages: int, repeat: int, binary: str | None) -> dict[str, float]:
    """The script calls sent to a private redis-server: its CPU (INFO cpu, user + sys: the main
    thread's work, the script's and the commands' it runs) per message, best of `repeat` runs from
    an empty database, and the commands the script runs (INFO commandstats) per message and per
    event appended (an `A` operation)."""
    import redis

    from tradecache.cache.plan import APPLY_SCRIPT
    from tradecache.dev.stack import RedisServer

    sent = [call.packed() if hasattr(call, "packed") else (call.keys, call.args) for call in calls]
    appended = sum(_appends(call) for call in calls)
    server = RedisServer(binary=Path(binary) if binary else None, appendonly=False)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        script = client.register_script(APPLY_SCRIPT)
        client.script_load(APPLY_SCRIPT)

        def cpu() -> float:
            info = client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        best, inner = float("inf"), 0
        for _ in range(repeat):
            client.flushall()
            client.config_resetstat()
            start = cpu()
            for keys, args in sent:
                script(keys=keys, args=args)
            best = min(best, cpu() - start)
            stats = client.info("commandstats")
            outer = {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_info", "cmdstat_config", "cmdstat_script"}
            inner = sum(int(stat["calls"]) for name, stat in stats.items() if name not in outer)
        client.close()
    finally:
        server.close()
    return {
        "redis-server CPU": best / messages * 1e6,
        "redis commands / message": inner / messages,
        "redis commands / event": inner / max(appended, 1),
    }


def _appends(call: Any) -> int:
    """The `A` operations of a script call (its args: the count, then each letter and its values)."""
    from tradecache.cache.plan import OPERATIONS

    args, a, count = call.args, 1, 0
    for _ in range(int(args[0])):
        op = args[a]
        count += op == "A"
        nargs = OPERATIONS[op].nargs
        a += 1 + (nargs if nargs is not None else 2 + 2 * int(args[a + 2]))
    return count


def pack_calls(calls: list[Any]) -> None:
    """The bytes redis-py would send for each script call (what `Script.__call__` packs): the
    values one by one, or packed where `ScriptCall.packed` exists."""
    import redis

    connection = redis.Connection()
    sha = "0" * 40
    for call in calls:
        keys, args = call.packed() if hasattr(call, "packed") else (call.keys, call.args)
        connection.pack_command("EVALSHA", sha, len(keys), *keys, *args)


def load_measures(count: int, repeat: int, with_redis: bool = False) -> dict[str, float]:
    from benchmarks.cache_bench import make_orders
    from tradecache.cache.replay import gc_paused, order_from_events
    from tradecache.serialization.msgpack import MsgPackSerializer
    from tradecache.service.items import order_item
    from tradecache.service.protocol import encode_entry, encode_reply, pack_with_raw_list

    serializer = MsgPackSerializer()
    stored = [[serializer.serialize(event) for event in order.events] for order in make_orders(count)]
    results: dict[str, float] = {}

    def unpack_all() -> None:
        for raw in stored:
            for payload in raw:
                msgpack.unpackb(payload, raw=False)

    def replay_all() -> None:
        with gc_paused():
            orders = [order_from_events(serializer, raw) for raw in stored]
        assert len(orders) == count

    # As the service builds them: for msgpack without the events as maps, where the revision
    # measured can (`with_events`), since they are spliced in as stored.
    spliced = {"with_events": False} if "with_events" in inspect.signature(order_item).parameters else {}

    def entries(as_msgpack: bool) -> Callable[[], None]:
        def build() -> None:
            with gc_paused():
                for n, raw in enumerate(stored):
                    item = order_item(serializer, raw, **(spliced if as_msgpack else {}))
                    assert item is not None
                    if as_msgpack:
                        item.pop("events", None)
                        encoded = pack_with_raw_list(item, "events", list(raw))
                    else:
                        encoded = encode_reply(item, False)
                    encode_entry(str(n), encoded, as_msgpack)

        return build

    results["unpack (baseline)"] = best_of(repeat, unpack_all)
    results["decode + replay"] = best_of(repeat, replay_all)
    results["load.orders entries, json"] = best_of(repeat, entries(False))
    results["load.orders entries, msgpack"] = best_of(repeat, entries(True))
    if with_redis:
        results.update(redis_loads(stored, repeat))
    # Whole seconds for the 10k-order goal figures, per order event for the rest.
    return {name: seconds * 1e3 for name, seconds in results.items()}


def redis_loads(stored: list[list[bytes]], repeat: int) -> dict[str, float]:
    """`load_orders()` from a private redis-server holding the orders (wall clock, which counts
    Redis' time too), beside one LRANGE per order of the same bytes (read only, no decoding)."""
    import logging

    import redis

    from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
    from tradecache.cache.keys import Keys
    from tradecache.dev.stack import RedisServer
    from tradecache.model.identifiers import TraderId
    from tradecache.model.ledger import Collection
    from tradecache.serialization.msgpack import MsgPackSerializer

    server = RedisServer()
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        keys = Keys("PROFILE-001")
        names = [keys.entity(Collection.ORDERS, f"O-{n}") for n in range(len(stored))]
        pipe = client.pipeline(transaction=False)
        for n, (name, raw) in enumerate(zip(names, stored, strict=True)):
            pipe.rpush(name, *raw)
            pipe.zadd(keys.index(Collection.ORDERS), {f"O-{n}": 0})
        pipe.execute()
        config = CacheDatabaseConfig.from_url(server.url)
        db = RedisCacheDatabase(TraderId("PROFILE-001"), logging.getLogger("profile"), MsgPackSerializer(), config)

        def wall(func: Callable[[], Any]) -> float:
            times = []
            for _ in range(repeat):
                gc.collect()
                start = time.perf_counter()
                func()
                times.append(time.perf_counter() - start)
            return min(times)

        def naive() -> None:
            for name in names:
                client.lrange(name, 0, -1)

        loaded: dict[Any, Any] = {}
        results = {
            "LRANGE per order, bytes (wall)": wall(naive),
            "load_orders() (wall)": wall(lambda: loaded.update(db.load_orders())),
        }
        assert len(loaded) == len(stored)
        db.close()
        client.close()
        return results
    finally:
        server.close()


LARGE_SIZES = (1_000, 10_000, 40_000)


def large_measures(repeat: int) -> dict[str, float]:
    from benchmarks.feed import instruments, one_order_in_parts
    from benchmarks.ingest_bench import PREFIX, TRADER
    from tradecache.cache.keys import Keys
    from tradecache.cache.replay import gc_paused, order_from_events
    from tradecache.ingest.intake import Accepted, Delivery, Intake
    from tradecache.serialization.msgpack import MsgPackSerializer
    from tradecache.wire import Subjects

    serializer = MsgPackSerializer()
    intake = Intake(Subjects("tradecache", TRADER), serializer, 1 << 20)
    keys = Keys(TRADER)
    results: dict[str, float] = {}
    for fills in LARGE_SIZES:
        messages = instruments() + one_order_in_parts("large", fills)
        checked = [intake.check(Delivery(f"{PREFIX}.{kind}", payload, None, seq, seq, 0, 0, ""))
                   for seq, (kind, payload) in enumerate(messages, start=1)]  # fmt: skip
        if not all(isinstance(item, Accepted) for item in checked):
            raise SystemExit("a message of the large order was refused")
        kept: list[Any] = []

        def apply_all(checked: list[Any] = checked, kept: list[Any] = kept) -> None:
            kept[:] = list(apply_in_batches(checked, keys, serializer.serialize).orders.values())

        results[f"{fills:,} fills: ledger + plan"] = best_of(repeat, apply_all) / fills * 1e6
        stored = [serializer.serialize(event) for event in kept[0].events]

        def replay(stored: list[bytes] = stored) -> None:
            with gc_paused():
                order = order_from_events(serializer, stored)
            assert order is not None and len(order.events) == len(stored)

        results[f"{fills:,} fills: decode + replay"] = best_of(repeat, replay) / fills * 1e6
    return results


def measure(args: argparse.Namespace) -> dict[str, float]:
    if args.large:
        return large_measures(args.repeat)
    if args.loads:
        return load_measures(args.orders, args.repeat, args.redis)
    return ingest_measures(args.messages, args.repeat, args.redis, args.redis_server, args.workload)


def run_before(rev: str, argv: list[str]) -> dict[str, float]:
    """The same measures on the package at `rev`, in a child process."""
    with tempfile.TemporaryDirectory(prefix="profile-core-") as folder:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "tradecache"], check=True,
                                 capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        env = {**os.environ, "PROFILE_CORE_SRC": folder}
        out = subprocess.run([sys.executable, __file__, *argv, "--json"], env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    measured: dict[str, float] = json.loads(out.splitlines()[-1])
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--loads", action="store_true")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mix",
                        help="the ingest mix, as `ingest_bench.py --workload`")  # fmt: skip
    parser.add_argument("--large", action="store_true", help="cost per fill of one order filled in many parts")
    parser.add_argument("--redis", action="store_true", help="also measure a private redis-server (see above)")
    parser.add_argument("--redis-server", metavar="PATH", help="with --redis: this redis-server binary")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also measure the package at this git revision")
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave the inputs in the garbage collector's sight while measuring")  # fmt: skip
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global FREEZE
    FREEZE = not args.no_freeze
    if args.redis_server:  # the child of --before runs elsewhere
        args.redis_server = str(Path(args.redis_server).absolute())
    argv = [f"--messages={args.messages}", f"--orders={args.orders}", f"--repeat={args.repeat}"]
    argv += [f"--workload={args.workload}"]
    argv += ["--no-freeze"] if args.no_freeze else []
    argv += ["--loads"] if args.loads else []
    argv += ["--large"] if args.large else []
    argv += ["--redis"] if args.redis else []
    argv += [f"--redis-server={args.redis_server}"] if args.redis_server else []
    before = run_before(args.before, argv) if args.before else None
    now = measure(args)
    if args.json:
        if os.environ.get("PROFILE_CORE_SRC") and not tradecache.__file__.startswith(os.environ["PROFILE_CORE_SRC"]):
            raise SystemExit(f"measured {tradecache.__file__}, not the revision asked for")
        print(json.dumps(now))
        return
    unit = (
        "us per fill" if args.large
        else f"ms for {args.orders:,} orders x 4 events" if args.loads
        else f"us per message ({args.messages:,})"
    )  # fmt: skip
    print(f"profile_core: {unit}")
    if before is None:
        for name, value in now.items():
            print(f"  {name:32} {value:9.2f}")
        return
    print(f"  {'':32} {args.before:>9} {'now':>9} {'ratio':>7}")
    for name, value in now.items():
        old = before.get(name)
        shown = f"{old:9.2f}" if old is not None else f"{'-':>9}"
        ratio = f"{old / value:6.2f}x" if old else ""
        print(f"  {name:32} {shown} {value:9.2f} {ratio:>7}")


if __name__ == "__main__":
    main()
