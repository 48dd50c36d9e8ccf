"""The command line: `tradecache run | check-config | dev | load` and `--version`.

Each command parses its arguments, calls into the package and returns an exit code:
0 success, 1 runtime failure (or "not found" for load), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

import yaml

from tradecache import __version__
from tradecache.config import load_config
from tradecache.errors import ConfigError
from tradecache.logs import configure_logging

Handler = Callable[[argparse.Namespace], int]


def _run(args: argparse.Namespace) -> int:
    from tradecache.daemon.app import Daemon

    config = load_config(args.config, os.environ)
    configure_logging(config.logging.level, config.logging.format)
    return asyncio.run(Daemon(config).run())


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config, os.environ)
    print(yaml.safe_dump(config.masked(), sort_keys=False), end="")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from tradecache.daemon.devmode import run_dev

    code: int = run_dev(
        data_dir=args.data_dir,
        exit_after_feed=args.exit_after_feed,
        http_port=args.http_port,
        own_servers=args.own_servers,
    )
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradecache", description="State-persistence sidecar for trading nodes")
    parser.add_argument("--version", action="version", version=f"tradecache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", help="YAML file (environment variables TRADECACHE_* override it)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate and print the effective config, secrets masked")
    check.add_argument("--config", help="YAML file")
    check.set_defaults(handler=_check_config)

    dev = commands.add_parser("dev", help="local redis-server, nats-server, the daemon and a demo feed")
    dev.add_argument("--data-dir", default=".tradecache-dev", help="where the local servers keep their data")
    dev.add_argument("--http-port", type=int, default=9464, help="metrics/health port (0: any free port)")
    dev.add_argument("--exit-after-feed", action="store_true", help="stop once the demo feed is stored")
    dev.add_argument(
        "--own-servers", action="store_true", help="always start private servers on free ports (never reuse local ones)"
    )
    dev.set_defaults(handler=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"tradecache: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
