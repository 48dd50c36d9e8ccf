"""Connection options built from the config, for every program that connects as the sidecar does
(the daemon, `tradecache load`, `tradecache rebuild`), so none of them imports another for it."""

from __future__ import annotations

from tradecache.bus import NatsOptions
from tradecache.config.sections import Config


def nats_options(config: Config) -> NatsOptions:
    """How to reach NATS as `config` says, with the secrets revealed for the connection only."""
    nats_config = config.nats
    return NatsOptions(
        servers=list(nats_config.servers),
        name=f"tradecache-{config.trader_id}",
        user=nats_config.user,
        password=nats_config.password.reveal() if nats_config.password else None,
        token=nats_config.token.reveal() if nats_config.token else None,
        creds_file=nats_config.creds_file,
        nkey_seed_file=nats_config.nkey_seed_file,
        tls_ca_file=nats_config.tls_ca_file,
        tls_cert_file=nats_config.tls_cert_file,
        tls_key_file=nats_config.tls_key_file,
        connect_timeout=nats_config.connect_timeout,
        max_reconnect_wait=nats_config.max_reconnect_wait,
    )


__all__ = ["nats_options"]
