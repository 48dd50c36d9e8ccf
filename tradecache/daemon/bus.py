"""NATS: connecting (user/password, token, .creds, nkey, TLS) and making sure the streams exist.

Only this module and the ingest/service modules touch nats-py. `ensure_streams` creates the
inbound stream, the dead-letter stream and the durable pull consumer when asked to; when they
are managed elsewhere it only checks they are there and says exactly what is missing.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from tradecache.daemon.subjects import Subjects
from tradecache.errors import BusUnavailable

DUPLICATE_WINDOW_SECONDS = 120.0


@dataclass(frozen=True)
class NatsOptions:
    servers: list[str]
    name: str
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    connect_timeout: float = 5.0
    max_reconnect_wait: float = 5.0

    def __repr__(self) -> str:  # never show secrets
        return f"NatsOptions(servers={self.servers!r}, name={self.name!r}, user={self.user!r})"

    def tls_context(self) -> ssl.SSLContext | None:
        if not (self.tls_ca_file or self.tls_cert_file):
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if self.tls_cert_file:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context


Callback = Callable[[], Awaitable[None]]


async def connect(
    options: NatsOptions,
    *,
    on_disconnected: Callback | None = None,
    on_reconnected: Callback | None = None,
    log: logging.Logger,
) -> Any:
    """Connect (reconnecting forever afterwards). Raises BusUnavailable with a clear reason."""

    async def error_cb(exc: Exception) -> None:
        log.warning("nats error", extra={"error": repr(exc)})

    kwargs: dict[str, Any] = {
        "servers": options.servers,
        "name": options.name,
        "connect_timeout": options.connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": min(1.0, options.max_reconnect_wait),
        "error_cb": error_cb,
        "pending_size": 64 * 1024 * 1024,
    }
    if on_disconnected is not None:
        kwargs["disconnected_cb"] = on_disconnected
    if on_reconnected is not None:
        kwargs["reconnected_cb"] = on_reconnected
    if options.user is not None:
        kwargs.update(user=options.user, password=options.password)
    if options.token is not None:
        kwargs["token"] = options.token
    if options.creds_file is not None:
        kwargs["user_credentials"] = options.creds_file
    if options.nkey_seed_file is not None:
        kwargs["nkeys_seed"] = options.nkey_seed_file
    context = options.tls_context()
    if context is not None:
        kwargs["tls"] = context
    try:
        # The first connection must succeed (or fail clearly): no silent reconnect loop at start.
        # nats-py retries the first connection forever unless attempts are bounded (> 0 enables it):
        # each server is tried twice, then connect raises NoServersError.
        kwargs["allow_reconnect"] = False
        kwargs["max_reconnect_attempts"] = 1
        nc = await nats.connect(**kwargs)
    except nats.errors.Error as exc:
        raise BusUnavailable("connect", _explain(exc)) from exc
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise BusUnavailable("connect", f"{type(exc).__name__}: {exc}") from exc
    # From now on, reconnect forever.
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    return nc


def _explain(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "authorization" in text.lower():
        return "authorization violation: the server refused these credentials"
    return f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class StreamPlan:
    stream: str
    dead_letter_stream: str
    consumer: str
    ack_wait: float
    max_deliver: int
    create: bool


async def ensure_streams(js: Any, subjects: Subjects, plan: StreamPlan, log: logging.Logger) -> bool:
    """Make sure both streams and the durable consumer exist. Returns True if the consumer acks ALL."""
    await ensure_stream(js, plan.stream, [subjects.inbound_root], plan.create, log)
    await ensure_stream(js, plan.dead_letter_stream, [subjects.dead_root], plan.create, log)
    try:
        info = await js.consumer_info(plan.stream, plan.consumer)
    except nats.js.errors.NotFoundError:
        if not plan.create:
            raise BusUnavailable(
                "bind consumer", f"durable consumer {plan.consumer!r} on stream {plan.stream!r} does not exist"
            ) from None
        config = ConsumerConfig(
            durable_name=plan.consumer,
            filter_subject=subjects.inbound,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=plan.ack_wait,
            max_deliver=plan.max_deliver,
            max_ack_pending=-1,
        )
        info = await js.add_consumer(plan.stream, config)
        log.info("consumer created", extra={"stream": plan.stream, "consumer": plan.consumer})
    if info.config.filter_subject not in (None, "", subjects.inbound):
        log.warning(
            "consumer filter differs from this trader's subjects",
            extra={"filter": info.config.filter_subject, "expected": subjects.inbound},
        )
    return bool(info.config.ack_policy == AckPolicy.ALL)


async def ensure_stream(js: Any, name: str, subjects: list[str], create: bool, log: logging.Logger) -> None:
    try:
        await js.stream_info(name)
        return
    except nats.js.errors.NotFoundError:
        if not create:
            raise BusUnavailable("bind stream", f"stream {name!r} does not exist (create_streams is off)") from None
    config = StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        await js.add_stream(config)
        log.info("stream created", extra={"stream": name, "subjects": subjects})
    except nats.js.errors.BadRequestError as exc:
        # Another sidecar created it first, or its subjects overlap an existing stream.
        log.warning("stream not created", extra={"stream": name, "error": str(exc)})


__all__ = ["NatsOptions", "StreamPlan", "connect", "ensure_stream", "ensure_streams"]
