"""The command line: `tradecache run | check-config | load | rebuild | reindex | dev` and `--version` (SPEC 5).

Each command parses its arguments, calls into the package and returns an exit code:
0 success, 1 runtime failure (or "not found" for load), 2 usage or configuration error.
A `ConfigError` from any command is printed as `tradecache: config error: <key>: <problem>`.

To add a command: write `_add_<name>(commands)` that builds its subparser and sets `handler=`,
and list it in `_COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tradecache import __version__
from tradecache.config import Config, load_config
from tradecache.errors import ConfigError
from tradecache.logs import configure_logging
from tradecache.redaction import mask_urls

Handler = Callable[[argparse.Namespace], int]
# The type argparse's add_subparsers() returns; its generic parameter is private to argparse.
Commands = Any


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file; TRADECACHE_* environment variables override it (none: defaults and environment)",
    )


def _config(args: argparse.Namespace) -> Config:
    """The checked configuration named by `--config`, with the process environment applied."""
    return load_config(args.config, os.environ)


# -- run: the daemon ------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from tradecache.daemon.app import Daemon  # imported here so check-config stays light

    config = _config(args)
    configure_logging(config.logging.level, config.logging.format)
    return asyncio.run(Daemon(config).run())


def _add_run(commands: Commands) -> None:
    run = commands.add_parser("run", help="run the daemon (SIGTERM drains in-flight work and exits 0)")
    _add_config_option(run)
    run.set_defaults(handler=_run)


# -- check-config ---------------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(yaml.safe_dump(config.masked(), sort_keys=False, default_flow_style=False), end="")
    return 0


def _add_check_config(commands: Commands) -> None:
    check = commands.add_parser("check-config", help="validate; print the effective config with secrets masked")
    _add_config_option(check)
    check.set_defaults(handler=_check_config)


# -- load: request-reply client -------------------------------------------------------------


def _load(args: argparse.Namespace) -> int:
    from tradecache.load_command import LoadRequest, run_load  # imported here: it pulls in nats-py

    environ = dict(os.environ)
    if args.nats is not None:
        environ["TRADECACHE_NATS_SERVERS"] = args.nats
    if args.trader is not None:
        environ["TRADECACHE_TRADER_ID"] = args.trader
    config = load_config(args.config, environ)
    request = LoadRequest(args.name, args.id, args.timeout, "table" if args.table else args.output, args.quiet)
    code: int = asyncio.run(run_load(config, request))
    return code


def _add_load(commands: Commands) -> None:
    load = commands.add_parser(
        "load",
        help="ask the running sidecar for stored state; prints JSON or a table (exit 0 found, 1 not found, 2 error)",
    )
    load.add_argument("name", help="what to load: order, orders, position, account, stats, ... (SPEC section 3)")
    load.add_argument("id", nargs="?", help="the id, for single-object loads")
    _add_config_option(load)
    load.add_argument("--nats", metavar="URL", help="NATS server(s), comma-separated (overrides the config)")
    load.add_argument("--trader", metavar="ID", help="the trader id (overrides the config)")
    load.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply (default 5)")
    load.add_argument(
        "-o", "--output", choices=("json", "table"), default="json",
        help="json: the reply as the service sends it (default); table: readable orders, positions, accounts",
    )  # fmt: skip
    load.add_argument("--table", action="store_true", help="the same as -o table")
    load.add_argument("-q", "--quiet", action="store_true", help="print nothing on stdout; the exit code tells")
    load.set_defaults(handler=_load)


# -- rebuild: Redis state from the stream ---------------------------------------------------


def _rebuild(args: argparse.Namespace) -> int:
    from tradecache.daemon.rebuild import RebuildRefused, rebuild  # imported here: the whole daemon
    from tradecache.errors import BusUnavailable

    config = _config(args)
    configure_logging(config.logging.level, config.logging.format)
    log = logging.getLogger("tradecache")
    try:
        report = asyncio.run(rebuild(config, flush=args.flush, allow_partial=args.allow_partial, log=log))
    except (RebuildRefused, BusUnavailable) as exc:
        print(f"tradecache: rebuild refused: {mask_urls(str(exc))}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _add_rebuild(commands: Commands) -> None:
    rebuild = commands.add_parser(
        "rebuild", help="re-create the trader's Redis state from the JetStream stream (stop the sidecar first)"
    )
    _add_config_option(rebuild)
    rebuild.add_argument("--flush", action="store_true", help="delete the trader's existing Redis state first")
    rebuild.add_argument(
        "--allow-partial", action="store_true", help="rebuild even if the stream no longer starts at sequence 1"
    )
    rebuild.set_defaults(handler=_rebuild)


# -- reindex: our indexes rebuilt from the stored keys ----------------------------------------


def _reindex(args: argparse.Namespace) -> int:
    from tradecache.cache.database import RedisCacheDatabase  # imported here: redis-py
    from tradecache.errors import StoreUnavailable
    from tradecache.model.identifiers import TraderId
    from tradecache.serialization.msgpack import MsgPackSerializer

    config = _config(args)
    configure_logging(config.logging.level, config.logging.format)
    serializer = MsgPackSerializer(timestamps_as_str=True)
    database = RedisCacheDatabase(
        TraderId(config.trader_id), logging.getLogger("tradecache"), serializer, config.redis.cache_config()
    )
    try:
        report = database.build_indexes(force=True)
    except StoreUnavailable as exc:
        print(f"tradecache: reindex failed: {exc}", file=sys.stderr)
        return 1
    finally:
        database.close()
    print(f"trader {config.trader_id}: {report.summary()}")
    return 1 if report.refused is not None else 0


def _add_reindex(commands: Commands) -> None:
    reindex = commands.add_parser(
        "reindex",
        help="index every stored entity of the trader by a SCAN (a Redis NautilusTrader wrote; safe while running)",
    )
    _add_config_option(reindex)
    reindex.set_defaults(handler=_reindex)


# -- dev: local servers, the daemon and a demo feed ------------------------------------------


def _dev(args: argparse.Namespace) -> int:
    from tradecache.dev.command import DevOptions, run_dev  # imported here: it pulls in the whole daemon

    options = DevOptions(
        data_dir=Path(args.data_dir),
        exit_after_feed=args.exit_after_feed,
        http_port=args.http_port,
        use_running=args.use_running,
        keep_data=args.keep_data,
        redis_url=args.redis_url,
        nats_url=args.nats_url,
    )
    code: int = run_dev(options)
    return code


def _add_dev(commands: Commands) -> None:
    dev = commands.add_parser(
        "dev", help="its own redis-server and nats-server on free ports, the daemon and a demo feed"
    )
    dev.add_argument("--data-dir", default=".tradecache-dev", help="where its servers keep their data")
    dev.add_argument(
        "--http-port", type=int, default=None,
        help="metrics/health port (default 9464, or a free one when that is busy; 0: any free port)",
    )  # fmt: skip
    dev.add_argument(
        "--exit-after-feed", action="store_true", help="stop (servers too) once the demo feed is stored and shown"
    )
    dev.add_argument(
        "--use-running", action="store_true",
        help="use a Redis and a NATS already running (--redis-url, --nats-url) instead of starting its own",
    )  # fmt: skip
    dev.add_argument("--redis-url", help="with --use-running: the Redis to use (default redis://127.0.0.1:6379/0)")
    dev.add_argument("--nats-url", help="with --use-running: the NATS to use (default nats://127.0.0.1:4222)")
    dev.add_argument(
        "--keep-data", action="store_true",
        help="at exit keep the data (own servers: their folders; --use-running: the demo trader's keys and messages)",
    )  # fmt: skip
    dev.set_defaults(handler=_dev)


_COMMANDS: list[Callable[[Commands], None]] = [
    _add_run,
    _add_check_config,
    _add_load,
    _add_rebuild,
    _add_reindex,
    _add_dev,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradecache", description="State-persistence sidecar for trading nodes")
    parser.add_argument("--version", action="version", version=f"tradecache {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (argparse's own exits, e.g. --version, too)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"tradecache: config error: {exc.key}: {mask_urls(exc.problem)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
