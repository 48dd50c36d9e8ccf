"""The daemon's configuration: one frozen dataclass per YAML section, and `Config` on top.

Values are applied in this order (SPEC section 5):

1. the YAML file (optional) -- `load_config` reads it, `parse_config` takes the same data as dicts;
2. environment variables `TRADECACHE_<SECTION>_<KEY>` (`TRADECACHE_<KEY>` for top-level keys), parsed
   by the field's type: lists are comma-separated, bools are true/false/1/0/yes/no;
3. `*_file` secrets: `password_file: /path` reads the password from that file (trailing newline
   dropped); giving both `password` and `password_file` is an error;
4. the checks, run when each dataclass is built, so an invalid `Config` never exists.

Defaults live in the dataclass fields and nowhere else; the YAML keys are the field names (plus the
`*_file` form of each secret). Every `ConfigError` has the dotted key path (`nats.servers[1]`) as
its key, and a problem naming the bad value. Secrets (passwords, tokens, a password inside a URL)
are wrapped in `Secret` or masked, so they never reach a repr, a message or `Config.masked()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml

from tradecache.cache.config import CacheDatabaseConfig
from tradecache.errors import ConfigError

MASK: Final = "***"
ENV_PREFIX: Final = "TRADECACHE_"
# Variables the tests and tools use for their own purposes; never configuration keys.
_ENV_IGNORED: Final = frozenset({"TRADECACHE_VECTORS", "TRADECACHE_REDIS_SERVER", "TRADECACHE_NATS_SERVER"})
# Kubernetes "service links": a Service named `tradecache` puts TRADECACHE_PORT,
# TRADECACHE_PORT_9464_TCP_ADDR, TRADECACHE_SERVICE_HOST... into every pod of the namespace.
_ENV_IGNORED_PREFIXES: Final = ("TRADECACHE_TEST_", "TRADECACHE_PORT", "TRADECACHE_SERVICE_")
_ENV_TRUE: Final = frozenset({"true", "1", "yes"})
_ENV_FALSE: Final = frozenset({"false", "0", "no"})
_NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS: Final = ("json", "text")
_URL: Final = {"url": True}  # field metadata: the value is a URL that may carry credentials


class Secret:
    """A secret string: `repr()` and `str()` give '***'; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def mask_url(url: str) -> str:
    """`url` with the password in its user info replaced by '***'.

    `scheme://user:pw@host` becomes `scheme://user:***@host`. A lone user part is a token for NATS
    (`nats://token@host`) and is masked whole; for Redis it is a username and is kept.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{scheme}://{user}:{MASK}@{hostpart}"
    if scheme.lower().startswith("redis"):
        return url
    return f"{scheme}://{MASK}@{hostpart}"


# -- the sections ----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class _Section:
    """What every section shares: its YAML name, its secrets, a masked repr and `masked()`."""

    section: ClassVar[str] = ""
    secrets: ClassVar[frozenset[str]] = frozenset()

    def _path(self, key: str) -> str:
        return f"{self.section}.{key}" if self.section else key

    def masked(self) -> dict[str, Any]:
        """The values as plain data (dicts, lists, str, numbers), every secret replaced by '***'."""
        return {f.name: _masked_value(getattr(self, f.name), f) for f in fields(self)}

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            text = repr(value) if isinstance(value, _Section) else repr(_masked_value(value, f))
            shown.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _masked_value(value: object, f: dataclasses.Field[Any]) -> Any:
    if isinstance(value, _Section):
        return value.masked()
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, tuple):
        return [mask_url(item) if f.metadata.get("url") else item for item in value]
    if isinstance(value, str) and f.metadata.get("url"):
        return mask_url(value)
    return value


@dataclass(frozen=True, repr=False)
class RedisConfig(_Section):
    """`redis:` -- where the cache lives. `url` may carry `user:password`; explicit keys win over it."""

    section: ClassVar[str] = "redis"
    secrets: ClassVar[frozenset[str]] = frozenset({"password"})

    url: str = field(default="redis://127.0.0.1:6379/0", metadata=_URL)
    username: str | None = None
    password: Secret | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    cluster: bool = False
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("redis", "rediss"):
            raise ConfigError(
                "redis.url", f"unsupported scheme {scheme!r} in {mask_url(self.url)!r} (use redis:// or rediss://)"
            )
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            _check_file(self._path(name), value)
            if value is not None and scheme != "rediss":
                raise ConfigError(self._path(name), f"TLS files need a rediss:// url, got {mask_url(self.url)!r}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("redis.ssl_keyfile", "needs redis.ssl_certfile too")
        _check_positive(self._path("socket_timeout"), self.socket_timeout)
        _check_positive(self._path("socket_connect_timeout"), self.socket_connect_timeout)
        try:
            cache_config = self.cache_config()
        except ConfigError as exc:
            if exc.key != "redis.url":
                raise
            raise ConfigError("redis.url", f"{exc.problem}, in {mask_url(self.url)!r}") from None
        if cache_config.cluster:  # `?cluster=true` in the URL: make `redis.cluster` say so too
            object.__setattr__(self, "cluster", True)

    def cache_config(self) -> CacheDatabaseConfig:
        """The `CacheDatabaseConfig` for this section: the URL, with the explicit keys set here winning."""
        overrides: dict[str, Any] = {
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
        if self.cluster:
            overrides["cluster"] = True
        return CacheDatabaseConfig.from_url(self.url, **overrides)


@dataclass(frozen=True, repr=False)
class NatsConfig(_Section):
    """`nats:` -- the servers, the subjects' prefix, the streams and consumer, and one way to log in."""

    section: ClassVar[str] = "nats"
    secrets: ClassVar[frozenset[str]] = frozenset({"password", "token"})

    servers: tuple[str, ...] = field(default=("nats://127.0.0.1:4222",), metadata=_URL)
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
    stream_replicas: int = 1
    connect_timeout: float = 5.0
    max_reconnect_wait: float = 5.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigError("nats.servers", "at least one server is needed")
        for index, server in enumerate(self.servers):
            _check_nats_server(f"nats.servers[{index}]", server)
        _check_subject(self._path("subject_prefix"), self.subject_prefix)
        for name in ("stream", "dead_letter_stream", "consumer"):
            if getattr(self, name) is not None:
                _check_name(self._path(name), getattr(self, name))
        if self.stream == self.dead_letter_stream:
            raise ConfigError("nats.dead_letter_stream", f"must differ from nats.stream, both are {self.stream!r}")
        for name in ("creds_file", "nkey_seed_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
            _check_file(self._path(name), getattr(self, name))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("nats.tls_key_file", "nats.tls_cert_file and nats.tls_key_file go together")
        self._check_auth()
        if not 1 <= self.stream_replicas <= 5:
            raise ConfigError("nats.stream_replicas", f"must be 1..5, got {self.stream_replicas}")
        _check_positive(self._path("connect_timeout"), self.connect_timeout)
        _check_positive(self._path("max_reconnect_wait"), self.max_reconnect_wait)

    def _check_auth(self) -> None:
        if self.user is not None and self.password is None:
            raise ConfigError("nats.password", f"nats.user {self.user!r} needs a password (or password_file)")
        if self.password is not None and self.user is None:
            raise ConfigError("nats.user", "nats.password needs a user")
        methods = {
            "user/password": self.user is not None,
            "token": self.token is not None,
            "creds_file": self.creds_file is not None,
            "nkey_seed_file": self.nkey_seed_file is not None,
        }
        chosen = [name for name, given in methods.items() if given]
        if len(chosen) > 1:
            raise ConfigError("nats", f"use one way to authenticate, got {' and '.join(chosen)}")

    @property
    def consumer_name(self) -> str:
        """The durable consumer's name: `consumer`, which `Config` sets to `tradecache-<trader_id>` if unset."""
        if self.consumer is None:
            raise ConfigError("nats.consumer", "no name yet: a NatsConfig gets its default name from Config")
        return self.consumer


@dataclass(frozen=True, repr=False)
class IngestConfig(_Section):
    """`ingest:` -- how messages are fetched from JetStream and applied."""

    section: ClassVar[str] = "ingest"

    batch_size: int = 256
    fetch_expires: float = 0.5
    max_payload_bytes: int = 1048576
    open_orders_limit: int = 100000
    ack_wait: float = 30.0
    max_deliver: int = -1

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10000:
            raise ConfigError("ingest.batch_size", f"must be 1..10000, got {self.batch_size}")
        _check_positive(self._path("fetch_expires"), self.fetch_expires)
        _check_positive(self._path("max_payload_bytes"), self.max_payload_bytes)
        _check_positive(self._path("open_orders_limit"), self.open_orders_limit)
        _check_positive(self._path("ack_wait"), self.ack_wait)
        if self.max_deliver != -1 and self.max_deliver < 1:
            raise ConfigError("ingest.max_deliver", f"must be -1 (no limit) or at least 1, got {self.max_deliver}")


@dataclass(frozen=True, repr=False)
class HttpConfig(_Section):
    """`http:` -- where /metrics, /healthz and /readyz are served (`host:port`, IPv6 as `[::1]:9464`)."""

    section: ClassVar[str] = "http"

    listen: str = "0.0.0.0:9464"

    def __post_init__(self) -> None:
        split_listen(self.listen)

    @property
    def host(self) -> str:
        """The address to bind, without brackets (`::1` for `[::1]:9464`)."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """`"host:port"` or `"[v6]:port"` -> `(host, port)`; raises `ConfigError` on `http.listen`."""
    if listen.startswith("["):
        host, bracket, port_text = listen[1:].partition("]:")
        if not bracket:
            raise ConfigError("http.listen", f"expected [address]:port, got {listen!r}")
    else:
        host, _, port_text = listen.rpartition(":")
        if ":" in host:
            raise ConfigError("http.listen", f"put an IPv6 address in brackets, e.g. [::1]:9464, got {listen!r}")
    if not host:
        raise ConfigError("http.listen", f"expected host:port, got {listen!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError("http.listen", f"the port must be 0..65535, got {listen!r}")
    return host, int(port_text)


@dataclass(frozen=True, repr=False)
class MetricsConfig(_Section):
    """`metrics:` -- how often the `tradecache_keys` gauge is refreshed from Redis."""

    section: ClassVar[str] = "metrics"

    key_count_interval: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self._path("key_count_interval"), self.key_count_interval)


@dataclass(frozen=True, repr=False)
class LoggingConfig(_Section):
    """`logging:` -- the level (DEBUG/INFO/WARNING/ERROR) and the format (json or text)."""

    section: ClassVar[str] = "logging"

    level: str = "INFO"
    format: str = "json"

    def __post_init__(self) -> None:
        if self.level.upper() not in _LOG_LEVELS:
            raise ConfigError("logging.level", f"must be one of {', '.join(_LOG_LEVELS)}, got {self.level!r}")
        if self.format.lower() not in _LOG_FORMATS:
            raise ConfigError("logging.format", f"must be json or text, got {self.format!r}")
        object.__setattr__(self, "level", self.level.upper())
        object.__setattr__(self, "format", self.format.lower())


@dataclass(frozen=True, repr=False)
class ShutdownConfig(_Section):
    """`shutdown:` -- how long SIGTERM waits for in-flight work before closing."""

    section: ClassVar[str] = "shutdown"

    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self._path("drain_timeout"), self.drain_timeout)


@dataclass(frozen=True, repr=False)
class Config(_Section):
    """The whole configuration. `trader_id` (NAME-TAG) is the only key without a default."""

    trader_id: str
    redis: RedisConfig = field(default_factory=RedisConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)

    def __post_init__(self) -> None:
        if "-" not in self.trader_id:
            raise ConfigError("trader_id", f"must be NAME-TAG (contain '-'), got {self.trader_id!r}")
        _check_name("trader_id", self.trader_id)  # it is a subject token and part of the consumer name
        if self.nats.consumer is None:
            object.__setattr__(self, "nats", dataclasses.replace(self.nats, consumer=f"tradecache-{self.trader_id}"))


# -- value checks ----------------------------------------------------------------------------


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, f"must be greater than 0, got {value!r}")


def _check_file(key: str, value: str | None) -> None:
    if value is not None and not Path(value).is_file():
        raise ConfigError(key, f"file not found: {value!r}")


def _check_name(key: str, value: str) -> None:
    """A stream, consumer or trader name: one subject token, also valid as a JetStream name."""
    if not value or any(char.isspace() or char in ".*>/\\" for char in value):
        raise ConfigError(key, f"must be non-empty, without spaces or any of . * > / \\, got {value!r}")


def _check_subject(key: str, value: str) -> None:
    if not value or any(char.isspace() or char in "*>" for char in value) or "" in value.split("."):
        raise ConfigError(key, f"must be subject tokens (no spaces, '*', '>' or empty token), got {value!r}")


def _check_nats_server(key: str, server: str) -> None:
    parts = urlsplit(server)
    shown = mask_url(server)
    if parts.scheme not in _NATS_SCHEMES:
        raise ConfigError(
            key, f"unsupported scheme {parts.scheme!r} in {shown!r} (use nats://, tls://, ws:// or wss://)"
        )
    try:
        parts.port  # noqa: B018 -- reading the port is the check
    except ValueError:
        raise ConfigError(key, f"the port must be 1..65535, in {shown!r}") from None
    if not parts.hostname:
        raise ConfigError(key, f"no host in {shown!r}")


# -- building from plain data ----------------------------------------------------------------

_S = TypeVar("_S", bound=_Section)
_TYPE_WORDS: Final[dict[object, str]] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Secret: "a string",
    tuple: "a list of strings",
}


def _split_optional(hint: object) -> tuple[Any, bool]:
    """`X | None` -> (X, True); `X` -> (X, False); `tuple[str, ...]` -> (tuple, False)."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [arg for arg in get_args(hint) if arg is not type(None)]
        return _split_optional(rest[0])[0], True
    return get_origin(hint) or hint, False


def _shown(value: object, secret: bool) -> str:
    """A bad value as an error message shows it: a secret as '***', a URL's password masked, even in a list."""
    if secret and value is not None:
        return repr(MASK)
    if isinstance(value, str):
        return repr(mask_url(value))
    if isinstance(value, (list, tuple)):  # e.g. a single URL where a list was expected, or the reverse
        return "[" + ", ".join(_shown(item, False) for item in value) + "]"
    return repr(value)


def _convert(value: object, hint: object, key: str, secret: bool) -> object:
    """Check that a YAML (or already parsed environment) value has the field's type."""
    base, optional = _split_optional(hint)
    if value is None and optional:
        return None
    if base is bool and isinstance(value, bool):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if base is Secret and isinstance(value, (str, Secret)):
        secret_value = value if isinstance(value, Secret) else Secret(value)
        if not secret_value.reveal():
            raise ConfigError(key, "must not be empty")
        return secret_value
    if base is tuple and isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{key}[{index}]", f"must be a string, got {item!r}")
        return tuple(value)
    raise ConfigError(key, f"must be {_TYPE_WORDS[base]}, got {_shown(value, secret)}")


def _from_env(text: str, hint: object, key: str, variable: str, secret: bool) -> object:
    """Parse an environment variable's text by the field's type (`_convert` checks the result)."""
    base, optional = _split_optional(hint)
    if optional and text == "":
        return None
    if base is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if base is bool:
        word = text.strip().lower()
        if word in _ENV_TRUE | _ENV_FALSE:
            return word in _ENV_TRUE
        raise ConfigError(key, f"must be true/false/1/0/yes/no, got {_shown(text, secret)} (from {variable})")
    if base is int or base is float:
        try:
            return base(text)
        except ValueError:
            problem = f"must be {_TYPE_WORDS[base]}, got {_shown(text, secret)} (from {variable})"
            raise ConfigError(key, problem) from None
    return text


def _known_keys(cls: type[_Section]) -> list[str]:
    return [f.name for f in fields(cls)] + sorted(f"{name}_file" for name in cls.secrets)


def _hint_of(cls: type[_Section], key: str) -> object:
    if key.endswith("_file") and key.removesuffix("_file") in cls.secrets:
        return str
    return get_type_hints(cls)[key]


def _sections() -> dict[str, type[_Section]]:
    """The section classes of `Config`, by YAML name."""
    hints = get_type_hints(Config)
    return {
        f.name: hints[f.name]
        for f in fields(Config)
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], _Section)
    }


def _unknown_key(path: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return ConfigError(path, f"unknown key ({hint})")


def _as_dict(value: object, key: str) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping of keys to values, got {type(value).__name__}")
    return {str(name): item for name, item in value.items()}


def _apply_environ(data: dict[str, object], environ: Mapping[str, str]) -> None:
    """Step 2: each `TRADECACHE_*` variable sets one key of `data`; an unknown one is an error."""
    sections = _sections()
    top_level = [name for name in _known_keys(Config) if name not in sections]
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable.startswith(_ENV_IGNORED_PREFIXES):
            continue
        if variable in _ENV_IGNORED:
            continue
        name = variable.removeprefix(ENV_PREFIX).lower()
        section_name, _, key = name.partition("_")
        target: dict[str, object]
        cls: type[_Section]
        if name in top_level:
            target, cls, key, path = data, Config, name, name
        elif section_name in sections and key in _known_keys(sections[section_name]):
            cls = sections[section_name]
            target = _as_dict(data.get(section_name), section_name)
            data[section_name] = target
            path = f"{section_name}.{key}"
        else:
            raise ConfigError(variable, "unknown environment variable: it names no configuration key")
        target[key] = _from_env(environ[variable], _hint_of(cls, key), path, variable, key in cls.secrets)


def _read_secret_file(value: object, key: str) -> Secret:
    """Step 3: the secret held in the file `value` names, without its trailing newline."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a file path, got {value!r}")
    try:
        text = Path(value).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(key, f"cannot read {value!r}: {reason}") from None
    if not text:
        raise ConfigError(key, f"the file {value!r} is empty")
    return Secret(text)


def _build(cls: type[_S], raw: Mapping[str, object], prefix: str) -> _S:
    """Steps 3 and 4 for one section: refuse unknown keys, check types, read `*_file` secrets, build."""
    known = _known_keys(cls)
    for key in raw:
        if key not in known:
            raise _unknown_key(f"{prefix}.{key}" if prefix else key, key, known)
    hints = get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for f in fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            hint = hints[f.name]
            if isinstance(hint, type) and issubclass(hint, _Section):
                kwargs[f.name] = _build(hint, _as_dict(raw[f.name], path), path)
            else:
                kwargs[f.name] = _convert(raw[f.name], hint, path, f.name in cls.secrets)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(path, "is required")
    for name in sorted(cls.secrets):
        file_key = f"{name}_file"
        file_value = raw.get(file_key)
        if file_value is None:
            continue
        if kwargs.get(name) is not None:
            raise ConfigError(f"{prefix}.{name}", f"set either {name} or {file_key}, not both")
        kwargs[name] = _read_secret_file(file_value, f"{prefix}.{file_key}")
    return cls(**kwargs)


def parse_config(data: Mapping[str, object], environ: Mapping[str, str]) -> Config:
    """Build a `Config` from plain data (the parsed YAML) and the environment variables.

    Applies the `TRADECACHE_*` overrides, reads `*_file` secrets and runs every check.
    Raises `ConfigError` naming the key path and the problem.
    """
    merged = _as_dict(data, "config")
    _apply_environ(merged, environ)
    return _build(Config, merged, "")


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> Config:
    """Read the YAML file at `path` (None: defaults and environment only) and build the `Config`.

    Raises `ConfigError`: with the file's path as key when it cannot be read or is not a YAML
    mapping, else as `parse_config` does.
    """
    data: Mapping[str, object] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(str(path), f"cannot read the file: {reason}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:  # its str() quotes lines of the file, which may hold secrets
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(str(path), f"not valid YAML: {exc.problem}{where}") from None
        except yaml.YAMLError:
            raise ConfigError(str(path), "not valid YAML") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(str(path), f"must hold a mapping at the top, got {type(loaded).__name__}")
        data = loaded or {}
    return parse_config(data, environ)


__all__ = [
    "ENV_PREFIX",
    "MASK",
    "Config",
    "HttpConfig",
    "IngestConfig",
    "LoggingConfig",
    "MetricsConfig",
    "NatsConfig",
    "RedisConfig",
    "Secret",
    "ShutdownConfig",
    "load_config",
    "mask_url",
    "parse_config",
    "split_listen",
]
