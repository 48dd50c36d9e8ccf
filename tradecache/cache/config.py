"""CacheDatabaseConfig: where Redis is and how to talk to it (TLS, ACL user, timeouts, Cluster)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tradecache.errors import ConfigError
from tradecache.redaction import mask_url


@dataclass(frozen=True)
class CacheDatabaseConfig:
    """Connection settings of `RedisCacheDatabase`.

    `host`, `port`, `username`, `password`, `ssl` are NautilusTrader's names; `db` selects the
    database; `ssl_ca_certs` / `ssl_certfile` / `ssl_keyfile` set up TLS (mutual TLS with the last
    two); `cluster=True` talks to a Redis Cluster and hash-tags the keys (see `cache.keys`).
    `layout` is how currencies and strategy state are written, `"seed"` (SPEC section 2) or
    `"nautilus"` (as NautilusTrader >= 1.221 writes them, see `cache.keys.Layout`); both are read.
    `CacheDatabaseConfig.from_url("rediss://user:pass@host:6380/2")` builds one from a URL.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ssl: bool = False
    db: int = 0
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    socket_timeout: float | None = 5.0
    socket_connect_timeout: float | None = 5.0
    cluster: bool = False
    layout: str = "seed"

    def __post_init__(self) -> None:
        if self.layout not in ("seed", "nautilus"):
            raise ConfigError("redis.layout", f"must be 'seed' or 'nautilus', got {self.layout!r}")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigError("redis.port", f"must be 1..65535, got {self.port!r}")
        if not isinstance(self.db, int) or self.db < 0:
            raise ConfigError("redis.db", f"must be a non-negative integer, got {self.db!r}")
        if self.cluster and self.db != 0:
            raise ConfigError("redis.db", "Redis Cluster has only database 0")
        for name in ("socket_timeout", "socket_connect_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"redis.{name}", f"must be a positive number of seconds, got {value!r}")

    def __repr__(self) -> str:
        masked = "None" if self.password is None else "'***'"
        return (
            f"CacheDatabaseConfig(host={self.host!r}, port={self.port}, username={self.username!r}, "
            f"password={masked}, ssl={self.ssl}, db={self.db}, cluster={self.cluster}, layout={self.layout!r})"
        )

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> CacheDatabaseConfig:
        """Parse `redis://[user[:password]@]host[:port][/db]` or `rediss://...` (TLS).

        Query parameters `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile` and `cluster=true` are read
        too; keyword `overrides` win over the URL.

        Raises:
            ConfigError: the URL is not a Redis URL tradecache can use (`.key` is `redis.url`).
        """
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"; the URL itself may hold a password
            raise ConfigError("redis.url", f"not a valid URL ({exc})") from None
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError("redis.url", f"unsupported scheme {parts.scheme!r} (use redis:// or rediss://)")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigError("redis.url", "the port is not a number in 1..65535") from None
        path = parts.path.lstrip("/")
        if path and not path.isdigit():
            raise ConfigError("redis.url", f"the database must be a number, got {mask_url(path)!r}")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "cluster"}
        if unknown:
            raise ConfigError("redis.url", f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        settings: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": port,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "ssl": parts.scheme == "rediss",
            "db": int(path) if path else 0,
            "ssl_ca_certs": query.get("ssl_ca_certs"),
            "ssl_certfile": query.get("ssl_certfile"),
            "ssl_keyfile": query.get("ssl_keyfile"),
            "cluster": query.get("cluster", "false").lower() in ("1", "true", "yes"),
        }
        settings.update(overrides)
        return cls(**settings)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for redis-py's `Redis` / `RedisCluster` (sync and asyncio alike).

        Raises:
            Nothing: the values were checked when the config was made.
        """
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
        }
        if not self.cluster:
            kwargs["db"] = self.db
        if self.ssl:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=self.ssl_ca_certs,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_check_hostname=self.ssl_check_hostname,
            )
        return kwargs


__all__ = ["CacheDatabaseConfig"]
