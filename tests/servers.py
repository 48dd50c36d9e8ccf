"""Real redis-server and nats-server processes for the tests: the package's own dev stack.

`tradecache dev`, the tests and the benchmarks start servers the same way; see
`tradecache.dev.stack` for the model (restartable on the same port with the same data).
"""

from tradecache.dev.stack import (
    BINARY_ENV,
    BINARY_PACKAGE,
    HOST,
    BinaryNotFound,
    LocalServer,
    NatsServer,
    RedisServer,
    ServerFailed,
    ServerName,
    find_binary,
    free_port,
    nats_healthy,
    packaged_binary,
    port_is_free,
    reachable,
    redis_answers,
)

__all__ = [
    "BINARY_ENV",
    "BINARY_PACKAGE",
    "HOST",
    "BinaryNotFound",
    "LocalServer",
    "NatsServer",
    "RedisServer",
    "ServerFailed",
    "ServerName",
    "find_binary",
    "free_port",
    "nats_healthy",
    "packaged_binary",
    "port_is_free",
    "reachable",
    "redis_answers",
]
