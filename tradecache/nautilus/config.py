"""`TradecacheBridgeConfig`: where the sidecar's NATS is and how the bridge talks to it."""

from __future__ import annotations

from nautilus_trader.common.config import ActorConfig


class TradecacheBridgeConfig(ActorConfig, frozen=True):  # type: ignore[misc,call-arg]  # no type stubs
    """Configuration of `TradecacheBridge`.

    `nats_url`: the NATS server(s) the sidecar consumes from, comma-separated (`nats://`,
    `tls://`). `subject_prefix`: the sidecar's `nats.subject_prefix`. Log in with `user` and
    `password`, a `token`, a `.creds` file or an nkey seed file, as the sidecar's config does;
    `tls_ca_file`, `tls_cert_file`, `tls_key_file` for TLS (mutual with the last two).
    `queue_capacity`: messages kept while NATS is unreachable (more are dropped, loudly).
    `publish_timeout`: seconds to wait for one JetStream ack before retrying it.
    `stop_timeout`: seconds `on_stop` / `on_dispose` wait for the queue to drain.
    """

    nats_url: str
    subject_prefix: str = "tradecache"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    connect_timeout: float = 5.0
    publish_timeout: float = 5.0
    stop_timeout: float = 30.0
    queue_capacity: int = 100_000

    def __post_init__(self) -> None:
        if not self.nats_url.strip():
            raise ValueError("nats_url: give the sidecar's NATS server, e.g. nats://127.0.0.1:4222")
        if self.queue_capacity < 1:
            raise ValueError(f"queue_capacity: must be at least 1, got {self.queue_capacity}")
        for name in ("connect_timeout", "publish_timeout", "stop_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be a positive number of seconds, got {getattr(self, name)}")

    def __repr__(self) -> str:  # never show a password or token
        return (
            f"TradecacheBridgeConfig(nats_url={self.nats_url!r}, subject_prefix={self.subject_prefix!r}, "
            f"user={self.user!r}, queue_capacity={self.queue_capacity})"
        )


__all__ = ["TradecacheBridgeConfig"]
