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

from tradecache.config.loading import ENV_PREFIX, load_config, parse_config
from tradecache.config.secrets import MASK, Secret, mask_url
from tradecache.config.sections import (
    Config,
    HttpConfig,
    IngestConfig,
    LoadConfig,
    LoggingConfig,
    MetricsConfig,
    NatsConfig,
    RedisConfig,
    ShutdownConfig,
    split_listen,
)

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "Config",
    "HttpConfig",
    "IngestConfig",
    "LoadConfig",
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
