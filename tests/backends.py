"""Which Redis and NATS a test session uses, and why.

Order (FIELD-NOTES, "Test fixtures"):
1. a URL from the environment, TRADECACHE_TEST_REDIS_URL / TRADECACHE_TEST_NATS_URL: used as it is,
   and it cannot be restarted, so fault tests error against it;
2. a Docker container (testcontainers) when a Docker engine answers `GET /_ping` on DOCKER_HOST or
   /var/run/docker.sock. A `docker` CLI proves nothing (it exists here with no engine behind it), and
   testcontainers without an engine fails in its constructor, so the engine is pinged first;
3. local processes from `tests/servers.py`.
Whatever is chosen is announced with the reason, so a run always says what it tested against.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final, Literal, Protocol
from urllib.parse import urlsplit

from tests.servers import HOST, NatsServer, RedisServer, ServerFailed, free_port, nats_healthy, redis_answers

Kind = Literal["redis", "nats"]
Announce = Callable[[str], None]

URL_ENV: Final[Mapping[Kind, str]] = {"redis": "TRADECACHE_TEST_REDIS_URL", "nats": "TRADECACHE_TEST_NATS_URL"}
DEFAULT_DOCKER_HOST: Final = "unix:///var/run/docker.sock"
REDIS_IMAGE: Final = "redis:7"
NATS_IMAGE: Final = "nats:2"


class Server(Protocol):
    """What the fixtures hand out: an address, and (unless external) a restartable process."""

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


class NotRestartable(RuntimeError):
    """A fault test tried to stop or start a server the environment named."""


class ExternalServer:
    """A server named by TRADECACHE_TEST_*_URL: usable as it is, never stopped or restarted."""

    def __init__(self, url: str, variable: str) -> None:
        self.url = url
        self.variable = variable
        self.port = urlsplit(url).port

    def _refuse(self) -> None:
        raise NotRestartable(f"{self.url} comes from {self.variable}; fault tests need a server the tests started")

    def start(self) -> None:
        self._refuse()

    def stop(self) -> None:
        self._refuse()

    def kill(self) -> None:
        self._refuse()

    def close(self) -> None:
        """Nothing to do: the server is not ours."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def docker_answers(docker_host: str | None = None, timeout: float = 2.0) -> bool:
    """True when a Docker engine at `docker_host` (unix:// or tcp://) answers `GET /_ping` with 200."""
    address = urlsplit(docker_host or docker_address())
    connection: http.client.HTTPConnection
    if address.scheme == "unix":
        connection = _UnixHTTPConnection(address.path, timeout)
    elif address.scheme in {"tcp", "http"} and address.hostname:
        connection = http.client.HTTPConnection(address.hostname, address.port or 2375, timeout=timeout)
    else:  # ssh://, npipe://, TLS: not worth the machinery here; local processes will do
        return False
    try:
        connection.request("GET", "/_ping")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@functools.cache
def docker_engine() -> bool:
    """`docker_answers()`, asked once per session."""
    return docker_answers()


class ContainerServer:
    """A server in a Docker container, its port bound to a fixed free host port.

    `stop()`/`kill()`/`start()` are docker stop/kill/start of the same container, so the address and
    the data (in the container's filesystem) survive them, as with a local process.
    """

    image: str

    def __init__(self, command: list[str], service_port: int, monitor_port: int | None = None) -> None:
        from testcontainers.core.container import DockerContainer  # only when an engine answers

        self.port = free_port()
        self.monitor_port = free_port() if monitor_port else None
        self.host = HOST
        self._container = DockerContainer(self.image).with_command(command).with_bind_ports(service_port, self.port)
        if monitor_port and self.monitor_port:
            self._container.with_bind_ports(monitor_port, self.monitor_port)
        self._created = False

    @property
    def url(self) -> str:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 120.0) -> None:
        if self._created:
            self._container.get_wrapped_container().start()
        else:
            self._container.start()  # pulls the image the first time
            self._created = True
            self.host = self._container.get_container_host_ip()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise ServerFailed(f"container {self.image} at {self.url} not ready after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._container.get_wrapped_container().stop(timeout=10)

    def kill(self) -> None:
        self._container.get_wrapped_container().kill()

    def close(self) -> None:
        if self._created:
            self._container.stop()  # removes the container and its volumes


class RedisContainer(ContainerServer):
    image = REDIS_IMAGE

    def __init__(self) -> None:
        command = ["redis-server", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        super().__init__(command, 6379)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def answers(self) -> bool:
        return redis_answers(self.host, self.port)


class NatsContainer(ContainerServer):
    image = NATS_IMAGE

    def __init__(self) -> None:
        super().__init__(["-js", "-sd", "/data", "-m", "8222"], 4222, monitor_port=8222)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def answers(self) -> bool:
        return self.monitor_port is not None and nats_healthy(self.host, self.monitor_port)


def open_server(kind: Kind, announce: Announce, environ: Mapping[str, str] | None = None) -> Server:
    """A started Redis or NATS chosen in the order of the module docstring; announces the choice."""
    environ = os.environ if environ is None else environ
    variable = URL_ENV[kind]
    url = environ.get(variable)
    if url:
        announce(f"using {kind} at {url} from {variable} (not restartable: fault tests will error)")
        return ExternalServer(url, variable)
    if docker_engine():
        container: ContainerServer = RedisContainer() if kind == "redis" else NatsContainer()
        try:
            container.start()
        except Exception as exc:  # a pull or start failure: local processes still give a full run
            with contextlib.suppress(Exception):
                container.close()
            reason = f"a Docker engine answers but {container.image} did not start ({exc!r})"
        else:
            announce(f"a Docker engine answers; using container {container.image} at {container.url}")
            return container
    else:
        reason = f"no Docker engine reachable (GET /_ping on {docker_address()} failed)"
    local = RedisServer() if kind == "redis" else NatsServer()
    local.start()
    announce(f"{reason}; using local {local.name} {local.binary} on {HOST}:{local.port}")
    return local


__all__ = ["ExternalServer", "NotRestartable", "Server", "docker_answers", "docker_engine", "open_server"]
