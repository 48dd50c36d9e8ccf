"""The daemon as a real process (`python -m tradecache run`), for signal and crash tests.

With `pause_after` it is `tests/integration/paused_daemon.py` instead: the same daemon, stopping
before the ack of its N-th commit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tradecache.dev.stack import free_port

REPOSITORY = Path(__file__).resolve().parents[2]


class DaemonProcess:
    def __init__(
        self, config: dict[str, Any], env: dict[str, str] | None = None, pause_after: int | None = None
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tc-daemon-"))
        self.http_port = free_port()
        config = {**config, "http": {"listen": f"127.0.0.1:{self.http_port}"}}
        self.config_path = self.folder / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self.folder / "daemon.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECACHE_")}
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.pause_after = pause_after  # read at each start

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        command = [sys.executable, "-m", "tradecache", "run", "--config", str(self.config_path)]
        env = self.env
        if self.pause_after is not None:
            command = [sys.executable, "-m", "tests.integration.paused_daemon", "--pause-after", str(self.pause_after),
                       "--config", str(self.config_path)]  # fmt: skip
            # The test package is found from the repository root, wherever the test runs from.
            env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged in {timeout} s:\n{self.log()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
