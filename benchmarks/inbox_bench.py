"""Client CPU per delivery of the pull inbox: nats-py's callback path beside `ingest/inbox.py`.

A private nats-server holds a stream of N messages (the ingest benchmark's workload). Each round
reads all of them by hand-made pulls (256 per pull, AckPolicy.ALL) into a list, as the daemon's
`PullMachine.arrived_parts` does: through an ordinary nats-py subscription with an awaited
callback (each message a `Msg`, queued, taken by the subscription's task), through
`subscribe_inbox` with nats-py's parser reading the frames (each message handed over as parsed),
and through `subscribe_inbox` with the compiled frame reader (`ingest/_frames.c`). The rounds
alternate; the figure is this process's CPU time per message (user + sys), which the other
process on the machine disturbs far less than the wall clock; wall-clock rates are printed too.

Usage: python benchmarks/inbox_bench.py [--messages 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig  # noqa: E402

from benchmarks.feed import PREFIX, Feed, prefill  # noqa: E402
from tradecache.dev.stack import NatsServer  # noqa: E402
from tradecache.ingest import inbox as inbox_module  # noqa: E402
from tradecache.ingest.inbox import subscribe_inbox  # noqa: E402
from tradecache.ingest.pull import PullMachine, PullSettings  # noqa: E402

STREAM = "TRADECACHE"
PULL = 256


MODES = {"callback": "nats-py callback (Msg, queue, task)", "direct": "subscribe_inbox, nats-py's parser",
         "compiled": "subscribe_inbox, compiled frame reader"}  # fmt: skip


async def read_all(nats_url: str, count: int, mode: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to read `count` messages into a PullMachine."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"inbox-{uuid.uuid4().hex[:6]}"
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=name, ack_policy=AckPolicy.ALL, max_ack_pending=-1,
                                                 filter_subject=f"{PREFIX}.>"))  # fmt: skip
    inbox = nc.new_inbox()
    machine = PullMachine(PullSettings(STREAM, name, PULL, 5.0, 8 << 20), inbox)
    state = {"received": 0, "in_pull": 0}
    done = asyncio.Event()
    wanted = asyncio.Event()

    def on_parts(subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        machine.arrived_parts(subject, reply, data, headers)
        if not data and headers and headers.get("Status"):
            state["in_pull"] = 0
            wanted.set()
            return
        state["received"] += 1
        state["in_pull"] += 1
        if state["received"] >= count:
            done.set()
        elif state["in_pull"] >= PULL:
            state["in_pull"] = 0
            wanted.set()

    async def on_msg(msg: Any) -> None:
        on_parts(msg.subject, msg.reply, msg.data, msg.headers)

    async def puller() -> None:
        while not done.is_set():
            await wanted.wait()
            wanted.clear()
            machine.restart(None)  # what arrived is dropped: the list is only a sink here
            body = {"batch": min(PULL, count - state["received"]), "expires": 5_000_000_000}
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{name}", json.dumps(body).encode(), reply=inbox)

    if mode == "callback":
        await nc.subscribe(inbox, cb=on_msg)
    else:
        compiled = inbox_module._frames
        inbox_module._frames = compiled if mode == "compiled" else None
        try:
            subscription = await subscribe_inbox(nc, inbox, on_parts)
        finally:
            inbox_module._frames = compiled
        assert subscription.compiled == (mode == "compiled"), "scripts/setup builds the frame reader"
    cpu = time.process_time()
    started = time.perf_counter()
    wanted.set()
    task = asyncio.create_task(puller())
    await asyncio.wait_for(done.wait(), timeout=300)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    task.cancel()
    await nc.close()
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tc-inbox-bench-"))
    server = NatsServer(data_dir=folder / "nats")
    server.start()
    try:
        messages = Feed(uuid.uuid4().hex[:6]).messages(args.messages)
        asyncio.run(prefill(server.url, messages))
        count = len(messages)
        results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                results[mode].append(asyncio.run(read_all(server.url, count, mode)))
        for mode, label in MODES.items():
            cpus = [cpu / count * 1e6 for cpu, _wall in results[mode]]
            rates = [count / wall for _cpu, wall in results[mode]]
            print(f"{label}: CPU {min(cpus):.2f} us/msg (rounds {', '.join(f'{c:.2f}' for c in cpus)}), "
                  f"best {max(rates):,.0f} msgs/s")  # fmt: skip
        best = {mode: min(cpu for cpu, _ in results[mode]) / count * 1e6 for mode in MODES}
        print(f"client CPU per message, best rounds: callback {best['callback']:.2f} -> direct {best['direct']:.2f} "
              f"-> compiled {best['compiled']:.2f} us ({best['callback'] / best['compiled']:.2f}x less in all, "
              f"{best['direct'] / best['compiled']:.2f}x by the frame reader)")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
