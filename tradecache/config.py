"""The daemon's configuration: YAML, then `TRADECACHE_<SECTION>_<KEY>` environment overrides,
then `*_file` secrets, then the checks.

One frozen dataclass per section; defaults live in the fields and nowhere else.
`load_config(path, environ)` is the only code that reads files or the environment;
`parse_config(data, environ)` takes plain dicts so the checks are testable without files.
Every problem is a `ConfigError` naming the key path and the problem; unknown keys are refused.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit, urlunsplit

import yaml

from tradecache.cache.config import CacheDatabaseConfig
from tradecache.errors import ConfigError

ENV_PREFIX = "TRADECACHE_"
# Environment variables with the prefix that are not configuration (used by tests and tools).
ENV_IGNORED = re.compile(r"^TRADECACHE_(TEST_.*|VECTORS|REDIS_SERVER|NATS_SERVER)$")
_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class Secret:
    """A secret value: masked in repr/str, revealed only on purpose."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _existing_file(key: str, value: str | None) -> None:
    if value is not None and not Path(value).is_file():
        raise ConfigError(key, f"file {value!r} does not exist")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be greater than 0, got {value!r}")


@dataclass(frozen=True)
class RedisSection:
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: Secret | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    cluster: bool = False
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 5.0

    def check(self) -> None:
        self.cache_config()
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            _existing_file(f"redis.{name}", getattr(self, name))
        _positive("redis.socket_timeout", self.socket_timeout)
        _positive("redis.socket_connect_timeout", self.socket_connect_timeout)

    def cache_config(self) -> CacheDatabaseConfig:
        overrides: dict[str, Any] = {
            "cluster": self.cluster,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
        }
        if self.username is not None:
            overrides["username"] = self.username
        if self.password is not None:
            overrides["password"] = self.password.reveal()
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        try:
            return CacheDatabaseConfig.from_url(self.url, **overrides)
        except ConfigError as exc:
            raise ConfigError(exc.key, exc.problem.replace(self.url, mask_url(self.url))) from None


@dataclass(frozen=True)
class NatsSection:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    subject_prefix: str = "tradecache"
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    stream: str = "TRADECACHE"
    dead_letter_stream: str = "TRADECACHE_DEAD"
    consumer: str | None = None
    create_streams: bool = True
    connect_timeout: float = 5.0
    max_reconnect_wait: float = 5.0
    # Filled in by Config: the durable consumer's default name depends on the trader id.
    trader_id: str = field(default="", repr=False)

    @property
    def consumer_name(self) -> str:
        return self.consumer or f"tradecache-{self.trader_id}"

    def check(self) -> None:
        if not self.servers:
            raise ConfigError("nats.servers", "needs at least one server URL")
        for n, server in enumerate(self.servers):
            scheme = urlsplit(server).scheme
            if scheme not in ("nats", "tls", "ws", "wss"):
                raise ConfigError(f"nats.servers[{n}]", f"unsupported scheme {scheme!r} (use nats:// or tls://)")
        if not _SUBJECT_TOKEN.match(self.subject_prefix):
            raise ConfigError("nats.subject_prefix", f"{self.subject_prefix!r} is not a valid subject prefix")
        for name in ("stream", "dead_letter_stream"):
            value = getattr(self, name)
            if not re.match(r"^[A-Za-z0-9_\-]+$", value):
                raise ConfigError(f"nats.{name}", f"{value!r} is not a valid stream name")
        methods = [
            name
            for name, present in (
                ("user/password", self.user is not None or self.password is not None),
                ("token", self.token is not None),
                ("creds_file", self.creds_file is not None),
                ("nkey_seed_file", self.nkey_seed_file is not None),
            )
            if present
        ]
        if len(methods) > 1:
            raise ConfigError("nats", f"choose one authentication method, got {', '.join(methods)}")
        if (self.user is None) != (self.password is None):
            raise ConfigError("nats.user", "user and password go together")
        for name in ("creds_file", "nkey_seed_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
            _existing_file(f"nats.{name}", getattr(self, name))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("nats.tls_cert_file", "tls_cert_file and tls_key_file go together")
        _positive("nats.connect_timeout", self.connect_timeout)
        _positive("nats.max_reconnect_wait", self.max_reconnect_wait)


@dataclass(frozen=True)
class IngestSection:
    batch_size: int = 256
    fetch_expires: float = 0.5
    max_payload_bytes: int = 1024 * 1024
    open_orders_limit: int = 100_000
    ack_wait: float = 30.0
    max_deliver: int = -1

    def check(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ConfigError("ingest.batch_size", f"must be 1..10000, got {self.batch_size}")
        _positive("ingest.fetch_expires", self.fetch_expires)
        _positive("ingest.max_payload_bytes", self.max_payload_bytes)
        _positive("ingest.open_orders_limit", self.open_orders_limit)
        _positive("ingest.ack_wait", self.ack_wait)
        if self.max_deliver != -1 and self.max_deliver < 1:
            raise ConfigError("ingest.max_deliver", f"must be -1 (unlimited) or >= 1, got {self.max_deliver}")


@dataclass(frozen=True)
class HttpSection:
    listen: str = "0.0.0.0:9464"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def check(self) -> None:
        host, colon, port = self.listen.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError("http.listen", f"{self.listen!r} is not host:port (port 0..65535)")


@dataclass(frozen=True)
class MetricsSection:
    key_count_interval: float = 10.0

    def check(self) -> None:
        _positive("metrics.key_count_interval", self.key_count_interval)


@dataclass(frozen=True)
class LoggingSection:
    level: str = "INFO"
    format: str = "json"

    def check(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("logging.level", f"{self.level!r} is not DEBUG, INFO, WARNING or ERROR")
        if self.format not in ("json", "text"):
            raise ConfigError("logging.format", f"{self.format!r} is not json or text")


@dataclass(frozen=True)
class ShutdownSection:
    drain_timeout: float = 10.0

    def check(self) -> None:
        _positive("shutdown.drain_timeout", self.drain_timeout)


SECTIONS: dict[str, type[Any]] = {
    "redis": RedisSection,
    "nats": NatsSection,
    "ingest": IngestSection,
    "http": HttpSection,
    "metrics": MetricsSection,
    "logging": LoggingSection,
    "shutdown": ShutdownSection,
}


@dataclass(frozen=True)
class Config:
    trader_id: str
    redis: RedisSection = field(default_factory=RedisSection)
    nats: NatsSection = field(default_factory=NatsSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    http: HttpSection = field(default_factory=HttpSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    shutdown: ShutdownSection = field(default_factory=ShutdownSection)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, every secret shown as ***."""
        out: dict[str, Any] = {"trader_id": self.trader_id}
        for name in SECTIONS:
            section = getattr(self, name)
            values = {f.name: _plain(getattr(section, f.name)) for f in fields(section) if f.name != "trader_id"}
            if name == "redis":
                values["url"] = mask_url(values["url"])
            out[name] = values
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, tuple):
        return list(value)
    return value


# -- building ---------------------------------------------------------------------------------


def _convert(key: str, value: Any, annotation: Any, *, from_env: bool) -> Any:
    """Check and convert one value to the field's type."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(key, value, options[0], from_env=from_env)
    if annotation is Secret:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "must be a non-empty string")
        return Secret(value)
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(key, f"must be a list of strings, got {value!r}")
        return tuple(value)
    if annotation is bool:
        if from_env and isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if from_env and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(key, f"must be a number, got {value!r}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return str(value)
    raise ConfigError(key, f"unsupported setting type {annotation!r}")  # pragma: no cover - a bug


def _secret_fields(cls: type[Any]) -> set[str]:
    hints = get_type_hints(cls)
    return {name for name, hint in hints.items() if "Secret" in str(hint)}


def _section(name: str, cls: type[Any], raw: Any, env: dict[str, str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(name, f"must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name != "trader_id"}
    secrets = _secret_fields(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{name}.{key}"
        if key.endswith("_file") and key[: -len("_file")] in secrets:
            values.setdefault("__files__", {})[key[: -len("_file")]] = (path, value)
            continue
        if key not in known:
            raise ConfigError(path, "unknown key")
        values[key] = _convert(path, value, hints[key], from_env=False)
    for key, value in env.items():
        path = f"{name}.{key}"
        if key.endswith("_file") and key[: -len("_file")] in secrets:
            values.setdefault("__files__", {})[key[: -len("_file")]] = (path, value)
            continue
        if key not in known:
            raise ConfigError(path, f"unknown key (from {ENV_PREFIX}{name.upper()}_{key.upper()})")
        values[key] = _convert(path, value, hints[key], from_env=True)
    for secret, (path, file_name) in values.pop("__files__", {}).items():
        if secret in values:
            raise ConfigError(path, f"give either {name}.{secret} or {path}, not both")
        if not isinstance(file_name, str) or not Path(file_name).is_file():
            raise ConfigError(path, f"file {file_name!r} does not exist")
        values[secret] = Secret(Path(file_name).read_text().rstrip("\r\n"))
    return cls(**values)


def _split_environ(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """TRADECACHE_<SECTION>_<KEY> variables, by section; and top-level ones."""
    by_section: dict[str, dict[str, str]] = {}
    top: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or ENV_IGNORED.match(name):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is not None:
            by_section.setdefault(section, {})[rest[len(section) + 1 :]] = value
        elif rest == "trader_id":
            top[rest] = value
        else:
            raise ConfigError(name, "unknown environment variable (no such section or key)")
    return by_section, top


def parse_config(data: Mapping[str, Any] | None, environ: Mapping[str, str]) -> Config:
    """Build and check a Config from plain data and environment variables."""
    data = dict(data or {})
    env_sections, env_top = _split_environ(environ)
    unknown = set(data) - {"trader_id", *SECTIONS}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown key")
    trader_id = env_top.get("trader_id", data.get("trader_id"))
    if not isinstance(trader_id, str) or not trader_id:
        raise ConfigError("trader_id", "is required (e.g. TRADER-001)")
    if "-" not in trader_id or not re.fullmatch(r"[A-Za-z0-9_\-]+", trader_id):
        raise ConfigError("trader_id", f"{trader_id!r} must be NAME-TAG (letters, digits, '_' and '-')")
    sections = {name: _section(name, cls, data.get(name), env_sections.get(name, {})) for name, cls in SECTIONS.items()}
    sections["nats"] = dataclasses.replace(sections["nats"], trader_id=trader_id)
    config = Config(trader_id=trader_id, **sections)
    for name in SECTIONS:
        getattr(config, name).check()
    return config


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any) and the environment, and check everything."""
    environ = os.environ if environ is None else environ
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {str(path)!r}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError("--config", f"{str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("--config", f"{str(path)!r} must hold a mapping at the top level")
    return parse_config(data, environ)


__all__ = [
    "Config",
    "HttpSection",
    "IngestSection",
    "LoggingSection",
    "MetricsSection",
    "NatsSection",
    "RedisSection",
    "Secret",
    "ShutdownSection",
    "load_config",
    "mask_url",
    "parse_config",
]
