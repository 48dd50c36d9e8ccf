"""tradecache: a state-persistence sidecar for trading nodes.

It consumes a node's execution state from NATS JetStream, stores it in Redis with the layout and
semantics of NautilusTrader's RedisCacheDatabase, and serves it back over NATS request-reply.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tradecache")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
