"""NATS: connecting (user/password, token, .creds, nkey, TLS), the streams, and what nats-py's
errors mean.

Only this module and the ingest/service modules touch nats-py. `ensure_streams` creates the
inbound stream, the dead-letter stream and the durable pull consumer when asked to; when they
are managed elsewhere it only checks they are there and says exactly what is missing.

`classify_nats` is the one reading of nats-py's errors (its many unrelated classes): UNAVAILABLE
(no answer, no responders, no stream, reconnecting, a full outbound buffer: retry later),
REFUSED (what the call carried: too large, a header NATS cannot carry, a JetStream 400 such as
a message over the stream's `max_msg_size` or a failed `Nats-Expected-*` check: the same call
fails again), BUG (a bad subject, a closed client we closed ourselves...).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from tradecache.backoff import Backoff
from tradecache.errors import BusUnavailable
from tradecache.redaction import mask_url
from tradecache.wire import Subjects

DUPLICATE_WINDOW_SECONDS = 120.0


class BusFault(StrEnum):
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"
    BUG = "bug"


_NATS_UNAVAILABLE = (
    nats.errors.TimeoutError,
    TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,  # no stream answers the subject (yet), or JetStream is down
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.SlowConsumerError,
    nats.js.errors.ServiceUnavailableError,  # 503: no leader, JetStream not ready
    nats.js.errors.ServerError,  # 500
    nats.js.errors.NotFoundError,  # 404: the stream or consumer is gone (an operator must act; retried)
    OSError,
)
_NATS_REFUSED = (nats.errors.MaxPayloadError, nats.errors.BadHeaderError, nats.js.errors.BadRequestError)


def classify_nats(exc: BaseException) -> BusFault:
    """What a failed NATS call means (see the module docstring)."""
    if isinstance(exc, _NATS_REFUSED):
        return BusFault.REFUSED
    if isinstance(exc, nats.js.errors.APIError) and exc.code == 400:
        return BusFault.REFUSED
    if isinstance(exc, _NATS_UNAVAILABLE):
        return BusFault.UNAVAILABLE
    return BusFault.BUG


def describe_nats(exc: BaseException) -> str:
    """One line for logs: the class, and the server's words when it gave any."""
    text = str(exc) or exc.__doc__ or ""
    if isinstance(exc, nats.js.errors.APIError):
        text = f"code {exc.code}, err_code {exc.err_code}: {exc.description}"
    return f"{type(exc).__name__}: {' '.join(text.split())}"


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

    def __repr__(self) -> str:  # never show secrets, the ones in server URLs included
        servers = [mask_url(server) for server in self.servers]
        return f"NatsOptions(servers={servers!r}, name={self.name!r}, user={self.user!r})"

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
    _check_key_files(options)
    try:
        context = options.tls_context()
    except (OSError, ssl.SSLError) as exc:
        raise BusUnavailable("connect", f"cannot load the TLS files: {type(exc).__name__}: {exc}") from exc
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
        raise BusUnavailable("connect", _explain(exc, options)) from exc
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise BusUnavailable("connect", _explain_os_error(exc, options)) from exc
    # From now on, reconnect forever.
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    return nc


def _explain(exc: Exception, options: NatsOptions) -> str:
    text = str(exc) or type(exc).__name__
    if "authorization" in text.lower():
        return "authorization violation: the server refused these credentials"
    if isinstance(exc, nats.errors.NoServersError):
        return f"nothing accepts connections at {_servers(options)}: is nats-server running, is the port right?"
    return f"{type(exc).__name__}: {text}"


def _servers(options: NatsOptions) -> str:
    return ", ".join(mask_url(server) for server in options.servers)


def _explain_os_error(exc: BaseException, options: NatsOptions) -> str:
    """The error, with a hint when it is a TLS refusal (a bare 'Broken pipe' says nothing)."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError) and not str(exc):  # a port that accepts TCP but never greets like NATS
        return (
            f"no NATS greeting from {_servers(options)} within {options.connect_timeout:g} s: "
            "is that a NATS client port (not Redis, HTTP or the monitoring port)?"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        trusted = "nats.tls_ca_file" if options.tls_ca_file else "a CA this system trusts (set nats.tls_ca_file)"
        return f"{text} (the server's certificate is not signed by {trusted}, or is not for this host)"
    if not (options.tls_ca_file or options.tls_cert_file):
        return text
    # With TLS 1.3 a server's refusal of the client certificate shows up as an alert, a reset or a broken pipe.
    refused = isinstance(exc, ssl.SSLError) and "certificate" in str(exc).lower()
    if refused or isinstance(exc, (BrokenPipeError, ConnectionResetError)):
        question = "did it refuse" if options.tls_cert_file else "does it require"
        return f"{text} (the server closed the TLS connection: {question} a client certificate, nats.tls_cert_file?)"
    return text


# Markers of a `.creds` file, as `nsc` writes it.
_CREDS_SECTIONS = ("BEGIN NATS USER JWT", "BEGIN USER NKEY SEED")


def _check_key_files(options: NatsOptions) -> None:
    """Refuse an unusable creds or nkey seed file before connecting, with a message that names it.

    nats-py reads them only while connecting, and fails on a bad one with a bare TypeError or an
    nkeys error (or needs the `nkeys` package, which is an optional extra of nats-py).
    Never puts the file's content in the message.
    """
    if options.creds_file is None and options.nkey_seed_file is None:
        return
    try:
        nkeys = importlib.import_module("nkeys")
    except ImportError:
        raise BusUnavailable(
            "connect",
            "nats.creds_file and nats.nkey_seed_file need the 'nkeys' package: pip install 'nats-py[nkeys]'",
        ) from None
    if options.creds_file is not None:
        text = _read_key_file("nats.creds_file", options.creds_file)
        if not all(marker in text for marker in _CREDS_SECTIONS):
            raise BusUnavailable(
                "connect",
                f"nats.creds_file {options.creds_file!r} is not a NATS credentials file "
                "(it needs a user JWT and a user nkey seed section)",
            )
    if options.nkey_seed_file is not None:
        seed = _read_key_file("nats.nkey_seed_file", options.nkey_seed_file).strip()
        try:
            nkeys.from_seed(bytearray(seed.encode()))
        except Exception:  # nkeys raises its own errors, and TypeError/ValueError on odd input
            raise BusUnavailable(
                "connect", f"nats.nkey_seed_file {options.nkey_seed_file!r} does not hold a valid nkey seed"
            ) from None


def _read_key_file(key: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise BusUnavailable("connect", f"cannot read {key} {path!r}: {reason}") from None


@dataclass(frozen=True)
class StreamPlan:
    stream: str
    dead_letter_stream: str
    consumer: str
    ack_wait: float
    max_deliver: int
    create: bool
    replicas: int = 1  # num_replicas of the streams tradecache creates (JetStream caps it at 5)


# JetStream answers these while it has no leader for the asset (an election in a cluster, or many
# R3 consumers being created at once): worth another try, unlike a refusal.
_JETSTREAM_BUSY = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)
SETUP_RETRY_SECONDS = 30.0


async def ensure_streams(
    js: Any, subjects: Subjects, plan: StreamPlan, log: logging.Logger, *, retry_for: float = SETUP_RETRY_SECONDS
) -> bool:
    """Make sure both streams and the durable consumer exist. Returns True if the consumer acks ALL.

    Every step is idempotent, so while JetStream does not answer (timeout, 503) the whole check is
    tried again with backoff for up to `retry_for` seconds; then BusUnavailable says so.
    """
    deadline = time.monotonic() + retry_for
    backoff = Backoff(0.25, 2.0)
    while True:
        try:
            return await _ensure_streams(js, subjects, plan, log)
        except _JETSTREAM_BUSY as exc:
            error = f"{type(exc).__name__}: {exc}"
            delay = backoff.next()
            if time.monotonic() + delay > deadline:
                raise BusUnavailable(
                    "bind consumer", f"JetStream did not answer for {retry_for:g} s ({error})"
                ) from exc
            log.warning("jetstream busy while binding, retrying", extra={"error": error, "retry_in": delay})
            await asyncio.sleep(delay)


async def _ensure_streams(js: Any, subjects: Subjects, plan: StreamPlan, log: logging.Logger) -> bool:
    await ensure_stream(js, plan.stream, [subjects.inbound_root], plan.create, log, replicas=plan.replicas)
    await ensure_stream(js, plan.dead_letter_stream, [subjects.dead_root], plan.create, log, replicas=plan.replicas)
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


async def reset_consumer(js: Any, stream: str, consumer: str, start_seq: int) -> None:
    """Re-create a durable consumer with the same configuration, delivering from `start_seq` on.

    The one way to drop acks a nats-server keeps pending below the ack floor after a crash
    (see `ingest/watch.py`). Only for a consumer tradecache manages: its name, filter, ack
    policy, ack wait and limits are kept; the messages before `start_seq` are committed already.
    """
    info = await js.consumer_info(stream, consumer)
    config = info.config
    await js.delete_consumer(stream, consumer)
    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
    config.opt_start_seq = max(1, start_seq)
    config.opt_start_time = None
    await js.add_consumer(stream, config)


async def ensure_stream(
    js: Any, name: str, subjects: list[str], create: bool, log: logging.Logger, *, replicas: int = 1
) -> None:
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        if not create:
            raise BusUnavailable("bind stream", f"stream {name!r} does not exist (create_streams is off)") from None
    else:
        if create and (info.config.num_replicas or 1) != replicas:  # an existing stream is used as it is
            log.warning(
                "stream replicas differ from nats.stream_replicas",
                extra={"stream": name, "replicas": info.config.num_replicas, "configured": replicas},
            )
        return
    config = StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
        log.info("stream created", extra={"stream": name, "subjects": subjects})
    except nats.js.errors.BadRequestError as exc:
        # Another sidecar created it first, or its subjects overlap an existing stream.
        log.warning("stream not created", extra={"stream": name, "error": str(exc)})


__all__ = [
    "BusFault",
    "NatsOptions",
    "StreamPlan",
    "classify_nats",
    "connect",
    "describe_nats",
    "ensure_stream",
    "ensure_streams",
    "reset_consumer",
]
