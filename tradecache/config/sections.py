"""The configuration's sections: one frozen dataclass per YAML section, `Config` on top, and the
checks each runs when built (so an invalid `Config` never exists)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import SplitResult, urlsplit

from tradecache.cache.config import CacheDatabaseConfig
from tradecache.cache.retention import RetentionPolicy
from tradecache.config.secrets import MASK, Secret, mask_url
from tradecache.errors import ConfigError

_NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS: Final = ("json", "text")
_URL: Final = {"url": True}  # field metadata: the value is a URL that may carry credentials
# A trader id: NAME-TAG of ASCII letters, digits, '-' and '_' (see `_check_trader_id`).
# NAME-TAG: letters, digits, `-`, `_`, `.` (SPEC section 7), a `-`, and `.` only between tokens.
_TRADER_ID: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

# -- the sections ----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Section:
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
            text = repr(value) if isinstance(value, Section) else repr(_masked_value(value, f))
            shown.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _masked_value(value: object, f: dataclasses.Field[Any]) -> Any:
    if isinstance(value, Section):
        return value.masked()
    if isinstance(value, dict):  # e.g. retention.traders: a section per trader
        return {name: _masked_value(item, f) for name, item in value.items()}
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, tuple):
        return [mask_url(item) if f.metadata.get("url") else item for item in value]
    if isinstance(value, str) and f.metadata.get("url"):
        return mask_url(value)
    return value


@dataclass(frozen=True, repr=False)
class RedisConfig(Section):
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
    layout: str = "seed"  # how currencies and strategy state are written: seed | nautilus (SPEC section 7)

    def __post_init__(self) -> None:
        scheme = _split_url("redis.url", self.url).scheme
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
            "layout": self.layout,
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
class NatsConfig(Section):
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
class IngestConfig(Section):
    """`ingest:` -- how messages are fetched from JetStream and applied."""

    section: ClassVar[str] = "ingest"

    batch_size: int = 256
    fetch_expires: float = 0.5
    max_payload_bytes: int = 1048576
    open_orders_limit: int = 100000
    ack_wait: float = 30.0
    max_deliver: int = -1
    # Robustness (docs/ARCHITECTURE.md, "The daemon's loop"): stall detection, the one-writer
    # lease, bytes per pull and per Redis call, the memory budget of the in-memory state, and
    # the caps on free-form fields.
    stall_seconds: float = 30.0
    lease_ttl: float = 10.0
    pull_max_bytes: int = 4194304
    commit_max_bytes: int = 2097152
    memory_budget_bytes: int = 67108864
    max_field_bytes: int = 65536
    max_state_fields: int = 100000
    max_state_value_bytes: int = 262144

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10000:
            raise ConfigError("ingest.batch_size", f"must be 1..10000, got {self.batch_size}")
        for name in (
            "fetch_expires", "max_payload_bytes", "open_orders_limit", "ack_wait", "stall_seconds", "lease_ttl",
            "pull_max_bytes", "commit_max_bytes", "memory_budget_bytes", "max_field_bytes", "max_state_fields",
            "max_state_value_bytes",
        ):  # fmt: skip
            _check_positive(self._path(name), getattr(self, name))
        if self.max_deliver != -1 and self.max_deliver < 1:
            raise ConfigError("ingest.max_deliver", f"must be -1 (no limit) or at least 1, got {self.max_deliver}")
        if self.lease_ttl < 1.0:
            raise ConfigError("ingest.lease_ttl", f"must be at least 1 second, got {self.lease_ttl}")


@dataclass(frozen=True, repr=False)
class LoadConfig(Section):
    """`load:` -- limits of the load service (SPEC section 3), so that no client can exhaust the
    sidecar: see docs/ARCHITECTURE.md, "Load requests"."""

    section: ClassVar[str] = "load"

    max_in_flight: int = 64
    max_page_builds: int = 1
    max_request_bytes: int = 16384
    reply_cache_bytes: int = 33554432
    build_worker: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_in_flight <= 10000:
            raise ConfigError("load.max_in_flight", f"must be 1..10000, got {self.max_in_flight}")
        if not 1 <= self.max_page_builds <= self.max_in_flight:
            raise ConfigError(
                "load.max_page_builds",
                f"must be 1..load.max_in_flight ({self.max_in_flight}), got {self.max_page_builds}",
            )
        if not 256 <= self.max_request_bytes <= 1048576:
            raise ConfigError("load.max_request_bytes", f"must be 256..1048576, got {self.max_request_bytes}")
        if self.reply_cache_bytes < 0:
            raise ConfigError("load.reply_cache_bytes", f"must be 0 (no cache) or more, got {self.reply_cache_bytes}")


@dataclass(frozen=True, repr=False)
class HttpConfig(Section):
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
class MetricsConfig(Section):
    """`metrics:` -- how often the `tradecache_keys` gauge is refreshed from Redis."""

    section: ClassVar[str] = "metrics"

    key_count_interval: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self._path("key_count_interval"), self.key_count_interval)


@dataclass(frozen=True, repr=False)
class LoggingConfig(Section):
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
class ShutdownConfig(Section):
    """`shutdown:` -- how long SIGTERM waits for in-flight work before closing."""

    section: ClassVar[str] = "shutdown"

    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self._path("drain_timeout"), self.drain_timeout)


@dataclass(frozen=True, repr=False)
class TraderRetention(Section):
    """`retention.traders.<trader_id>:` -- one trader's policy; a key left out takes the section's."""

    section: ClassVar[str] = "retention.traders"

    closed_orders_after: float | None = None
    closed_positions_after: float | None = None
    account_states: int | None = None


@dataclass(frozen=True, repr=False)
class RetentionConfig(Section):
    """`retention:` -- what is removed from Redis, and when (off by default: everything is kept).

    The top-level keys are the policy of the trader this sidecar serves; `traders` holds a policy
    per trader id, for a file shared by several sidecars (each one applies only its own entry,
    over the top-level keys).
    """

    section: ClassVar[str] = "retention"

    closed_orders_after: float = 0.0  # seconds after an order closed; 0 keeps closed orders
    closed_positions_after: float = 0.0  # seconds after a position closed; 0 keeps them
    account_states: int = 0  # the last N states of each account are kept; 0 keeps all
    sweep_interval: float = 60.0  # seconds between sweeps
    sweep_slice: int = 200  # entities per atomic purge call
    traders: dict[str, TraderRetention] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_policy("retention", self.closed_orders_after, self.closed_positions_after, self.account_states)
        for trader_id, policy in self.traders.items():
            _check_policy(
                f"retention.traders.{trader_id}",
                policy.closed_orders_after, policy.closed_positions_after, policy.account_states,
            )  # fmt: skip
        _check_positive(self._path("sweep_interval"), self.sweep_interval)
        if not 1 <= self.sweep_slice <= 10000:
            raise ConfigError("retention.sweep_slice", f"must be 1..10000, got {self.sweep_slice}")

    def policy(self, trader_id: str) -> RetentionPolicy:
        """The policy of `trader_id`: its `traders` entry over the section's own keys."""
        mine = self.traders.get(trader_id, TraderRetention())
        return RetentionPolicy(
            closed_orders_after=_first(mine.closed_orders_after, self.closed_orders_after),
            closed_positions_after=_first(mine.closed_positions_after, self.closed_positions_after),
            account_states=int(_first(mine.account_states, self.account_states)),
            slice_size=self.sweep_slice,
        )


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _check_policy(path: str, orders: float | None, positions: float | None, states: int | None) -> None:
    for name, value in (("closed_orders_after", orders), ("closed_positions_after", positions)):
        if value is not None and value != 0 and not value >= 1:
            raise ConfigError(f"{path}.{name}", f"must be 0 (keep) or at least 1 second, got {value!r}")
    if states is not None and states < 0:
        raise ConfigError(f"{path}.account_states", f"must be 0 (keep all) or more, got {states}")


@dataclass(frozen=True, repr=False)
class Config(Section):
    """The whole configuration. `trader_id` (NAME-TAG) is the only key without a default."""

    trader_id: str
    redis: RedisConfig = field(default_factory=RedisConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def __post_init__(self) -> None:
        _check_trader_id(self.trader_id)
        if self.nats.consumer is None:
            consumer = default_consumer_name(self.trader_id)
            object.__setattr__(self, "nats", dataclasses.replace(self.nats, consumer=consumer))


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


def _check_trader_id(value: str) -> None:
    """NautilusTrader's NAME-TAG with SPEC section 7's characters: letters, digits, `-`, `_`, `.`.

    The id is part of every Redis key (a `:` in it would let one trader's keys be another's) and of
    the subjects, where a `.` splits it into several tokens: fine, as long as no token is empty
    (`A-1.`, `.A-1`, `A-1..X` are refused). See `default_consumer_name` for the consumer's name.
    """
    if "-" not in value or _TRADER_ID.fullmatch(value) is None:
        raise ConfigError(
            "trader_id",
            "must be NAME-TAG (contain '-') made of letters, digits, '-', '_' and '.' only, with no empty "
            f"'.'-separated part (NautilusTrader's form, SPEC section 7), got {value!r}",
        )


def default_consumer_name(trader_id: str) -> str:
    """`tradecache-<trader_id>`; a trader id with `.` gets `_` instead and a digest of the id.

    JetStream names cannot hold `.`. Replacing it alone could give two traders one consumer
    (`A-1.X` and `A-1_X`), so the first 8 hex digits of the id's SHA-256 keep the names apart.
    """
    if "." not in trader_id:
        return f"tradecache-{trader_id}"
    digest = hashlib.sha256(trader_id.encode()).hexdigest()[:8]
    return f"tradecache-{trader_id.replace('.', '_')}-{digest}"


def _check_subject(key: str, value: str) -> None:
    if not value or any(char.isspace() or char in "*>" for char in value) or "" in value.split("."):
        raise ConfigError(key, f"must be subject tokens (no spaces, '*', '>' or empty token), got {value!r}")


def _split_url(key: str, url: str) -> SplitResult:
    """`urlsplit(url)`, or a ConfigError naming the key and the masked URL (e.g. a lone `[`)."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise ConfigError(key, f"not a valid URL ({exc}): {mask_url(url)!r}") from None


def _check_nats_server(key: str, server: str) -> None:
    parts = _split_url(key, server)
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


__all__ = [
    "Config",
    "HttpConfig",
    "IngestConfig",
    "LoadConfig",
    "LoggingConfig",
    "MetricsConfig",
    "NatsConfig",
    "RedisConfig",
    "RetentionConfig",
    "ShutdownConfig",
    "TraderRetention",
    "split_listen",
]
