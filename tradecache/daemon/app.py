"""The daemon: wiring, start, readiness, graceful stop.

`Daemon(config).run()` starts the health/metrics server first (so /healthz answers while it
connects), connects to Redis and NATS, makes sure the streams exist, then runs the ingest loop,
a key-count refresher and the retention timer (when a policy is set) until SIGTERM/SIGINT. On
a signal it stops fetching, finishes and acks the batch in hand, and closes; the exit code is 0.

`shutdown.drain_timeout` bounds the whole shutdown, from the signal to the return: the stop
request sets one deadline, and each step (finishing the batch in hand, stopping the load service,
flushing and closing both NATS connections, closing Redis and the health server) gets the time
left before it (`drain_left`), never a timeout of its own. So the pod's grace period needs only
`drain_timeout` plus a margin (the chart's test checks it), however many steps are slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import redis.asyncio
import redis.exceptions

from tradecache import __version__
from tradecache.bus import StreamPlan, connect, ensure_streams
from tradecache.cache.aio import Store
from tradecache.cache.database import is_unavailable
from tradecache.cache.keys import Keys
from tradecache.config import Config, mask_url
from tradecache.config.connections import nats_options
from tradecache.daemon.health import HealthServer
from tradecache.daemon.metrics import Metrics
from tradecache.daemon.retention import Retention, SweepExecutor
from tradecache.errors import BusUnavailable, StoreUnavailable
from tradecache.ingest.acked_publish import AckedPublisher
from tradecache.ingest.consumer import Ingestor, IngestSettings
from tradecache.ingest.deadletter import DeadLetters
from tradecache.ingest.hooks import IngestHooks
from tradecache.ingest.intake import Intake
from tradecache.ingest.lease import Lease
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.serialization.limits import DecodeLimits
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.service.build_worker import MIN_CPUS, BuildWorker, usable_cpus
from tradecache.service.endpoints import Loader
from tradecache.service.limits import ServiceLimits
from tradecache.service.reply_cache import ReplyCache
from tradecache.service.server import LoadService
from tradecache.wire import Subjects

log = logging.getLogger("tradecache")

# Redis' answers to a wrong password/user (WRONGPASS, NOAUTH) or to an ACL that forbids a command (NOPERM).
# The cyclic GC's youngest generation is collected after this many new objects instead of 700
# (the daemon from its start, `tradecache rebuild` while it replays): ingest makes objects fast,
# and at 700 their collections took ~8% of a replay (979 for 50k messages). The garbage it may
# hold meanwhile is bounded by this count, and one young collection of it takes well under a ms.
GC_YOUNG_THRESHOLD = 10_000

REFUSED_ERRORS = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthenticationWrongNumberOfArgsError,
    redis.exceptions.NoPermissionError,
)


def listen_problem(config: Config, exc: OSError) -> str:
    """One line on why `http.listen` cannot be bound, naming the setting to change."""
    address = f"{config.http.host or '0.0.0.0'}:{config.http.port}"
    if exc.errno == errno.EADDRINUSE:
        reason = "the port is already in use (another tradecache, or another program)"
    else:
        reason = exc.strerror or str(exc)
    return f"cannot listen on {address}: {reason}; choose another with http.listen (TRADECACHE_HTTP_LISTEN)"


def decode_limits(config: Config) -> DecodeLimits:
    ingest = config.ingest
    return DecodeLimits.derive(
        max_field_bytes=ingest.max_field_bytes,
        max_state_fields=ingest.max_state_fields,
        max_state_value_bytes=ingest.max_state_value_bytes,
    )


def redis_client(config: Config) -> Any:
    cache_config = config.redis.cache_config()
    kwargs = cache_config.client_kwargs()
    if cache_config.cluster:
        return redis.asyncio.RedisCluster(**kwargs)
    return redis.asyncio.Redis(**kwargs)


class Daemon:
    """One trader's sidecar."""

    def __init__(
        self, config: Config, metrics: Metrics | None = None, ingest_hooks: IngestHooks | None = None
    ) -> None:
        self.config = config
        self.ingest_hooks = ingest_hooks  # test hooks (tests/integration/paused_daemon.py); none in production
        self.metrics = metrics or Metrics(version=__version__)
        self.subjects = Subjects(config.nats.subject_prefix, config.trader_id)
        self.serializer = MsgPackSerializer(timestamps_as_str=True)
        self.keys = Keys(config.trader_id, hash_tag=config.redis.cluster, layout=config.redis.layout)
        self.stopping = asyncio.Event()
        self._deadline: float | None = None  # loop time by which shutdown ends; set by the stop request
        self.nc: Any = None
        self.service_nc: Any = None  # the load service's own connection (see _serve)
        self.store: Store | None = None
        self.ingestor: Ingestor | None = None
        self.service: LoadService | None = None
        self.build_worker: BuildWorker | None = None
        self.health = HealthServer(self.metrics, self.is_ready, config.http.host, config.http.port)
        self.metrics.follow_readiness(self.is_ready)
        self.metrics.follow_stall(self.is_stalled)

    # -- readiness -----------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Connected to NATS, holding the trader's lease with the consumer bound, Redis and NATS
        answering, and ingest not stalled (see `Ingestor.healthy`). A standby is never ready."""
        ingestor = self.ingestor
        return bool(self.nc is not None and self.nc.is_connected and ingestor is not None and ingestor.healthy())

    def is_stalled(self) -> bool:
        ingestor = self.ingestor
        return ingestor is not None and ingestor.stalled()

    # -- lifecycle -----------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stop requested: finishing the batch in hand")
            self._start_deadline()
            self.stopping.set()

    def _start_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self.config.shutdown.drain_timeout

    def drain_left(self) -> float:
        """Seconds left of `shutdown.drain_timeout` since the stop request (all of it before one)."""
        if self._deadline is None:
            return self.config.shutdown.drain_timeout
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.health.start()
        except OSError as exc:  # the port is taken (or the address is not this host's): say which key to change
            log.error("cannot serve /metrics and /healthz", extra={"error": listen_problem(self.config, exc)})
            return 1
        log.info("health server listening", extra={"port": self.health.port, "version": __version__})
        # What exists now (modules, classes, config) lives as long as the process: left out of the
        # cyclic GC's full collections, which then take a few ms instead of tens while the loop
        # (ingest and load requests alike) waits for them.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            return await self._serve()
        finally:
            await self._close()

    async def _serve(self) -> int:
        client = redis_client(self.config)
        self.store = Store(client, self.keys, self.serializer)
        try:
            self.metrics.set_redis_up(bool(await client.ping()))
        except REFUSED_ERRORS as exc:  # a wrong password or ACL never heals: stop now, say why
            log.error("cannot use Redis", extra={"error": f"Redis refused the credentials: {exc}"})
            return 1
        except redis.exceptions.InvalidResponse as exc:  # something else listens there (NATS, HTTP, ...)
            url = mask_url(self.config.redis.url)
            problem = f"{url} did not answer as a Redis server ({exc}): is redis.url's port a Redis port?"
            log.error("cannot use Redis", extra={"error": problem})
            return 1
        except (redis.exceptions.RedisError, OSError) as exc:
            if not (isinstance(exc, OSError) or is_unavailable(exc)):
                raise
            self.metrics.set_redis_up(False)  # down, busy or read-only: retried, /readyz 503 meanwhile
        try:
            self.nc = await connect(
                nats_options(self.config),
                on_disconnected=self._on_disconnected,
                on_reconnected=self._on_reconnected,
                log=log,
            )
        except BusUnavailable as exc:
            log.error("cannot connect to NATS", extra={"error": str(exc)})
            return 1
        self.metrics.set_nats_connected(True)
        # Loads are answered as soon as NATS is up, even while the consumer is being bound. They
        # have a connection of their own: on the ingest one, a flood of requests (or of big
        # replies) would queue ahead of the deliveries, pulls and acks in the same TCP stream.
        load_options = dataclasses.replace(nats_options(self.config), name=f"tradecache-{self.config.trader_id}-load")
        try:
            self.service_nc = await connect(load_options, log=log)
        except BusUnavailable as exc:
            log.error("cannot connect to NATS", extra={"error": str(exc)})
            return 1
        load = self.config.load
        cpus = usable_cpus()
        if load.build_worker and cpus >= MIN_CPUS:
            self.build_worker = BuildWorker(on_failure=self.metrics.build_worker_failed)
            worker = self.build_worker
            self.metrics.follow_build_worker(lambda: worker.ready, lambda: worker.share)
        log.info("load build worker " + ("on" if self.build_worker else "off"),
                 extra={"build_worker": load.build_worker, "usable_cpus": round(cpus, 2)})  # fmt: skip
        self.service = LoadService(
            self.service_nc,
            self.subjects,
            self.config.trader_id,
            Loader(self.store, self.serializer, ReplyCache(max_bytes=load.reply_cache_bytes), self.build_worker),
            self.load_stats,
            self.metrics,
            log,
            ServiceLimits(load.max_in_flight, load.max_page_builds, load.max_request_bytes),
        )
        await self.service.start()
        if self.build_worker is not None:
            await self.build_worker.start()  # ready a moment later; until then the loop builds alone
        js = self.nc.jetstream()
        plan = StreamPlan(
            stream=self.config.nats.stream,
            dead_letter_stream=self.config.nats.dead_letter_stream,
            consumer=self.config.nats.consumer_name,
            ack_wait=self.config.ingest.ack_wait,
            max_deliver=self.config.ingest.max_deliver,
            create=self.config.nats.create_streams,
            replicas=self.config.nats.stream_replicas,
        )
        try:
            ack_all = await ensure_streams(js, self.subjects, plan, log)
        except BusUnavailable as exc:
            log.error("cannot bind the JetStream consumer", extra={"error": str(exc)})
            return 1
        ingest = self.config.ingest
        nc = self.nc
        lease = Lease(client, self.keys, ingest.lease_ttl)
        policy = self.config.retention.policy(self.config.trader_id)
        self.store.purged_lookup = policy.closed_orders_after > 0  # late events for purged orders
        self.ingestor = Ingestor(
            nc,
            js,
            self.subjects.inbound,
            IngestSettings(
                stream=plan.stream,
                consumer=plan.consumer,
                batch_size=ingest.batch_size,
                fetch_expires=ingest.fetch_expires,
                open_orders_limit=ingest.open_orders_limit,
                ack_all=ack_all,
                pull_max_bytes=ingest.pull_max_bytes,
                commit_max_bytes=ingest.commit_max_bytes,
                stall_seconds=ingest.stall_seconds,
                consumer_poll_seconds=min(5.0, ingest.stall_seconds / 3),
                manage_consumer=plan.create,
            ),
            Intake(self.subjects, self.serializer, ingest.max_payload_bytes, decode_limits(self.config)),
            Ledger(TraderId(self.config.trader_id), memory_budget=ingest.memory_budget_bytes),
            self.store,
            DeadLetters(
                AckedPublisher(nc),
                self.subjects,
                plan.stream,
                plan.dead_letter_stream,
                lambda: int(nc.max_payload),
                log,
            ),
            self.metrics,
            self.serializer,
            log,
            lease=lease,
            trader_id=self.config.trader_id,
            hooks=self.ingest_hooks,
        )
        counter = asyncio.create_task(self._refresh_key_counts())
        indexer = asyncio.create_task(self._ensure_indexes())
        retention = Retention(
            SweepExecutor(client, self.keys, self.ingestor.pipeline.lock),
            policy,
            self.config.retention.sweep_interval,
            self.metrics,
            log,
            lease=lease,
        )
        sweeper = asyncio.create_task(retention.run(self.stopping))
        try:
            await self._until_drained(self.ingestor.run(self.stopping))
        except StoreUnavailable as exc:
            log.warning("stopped while Redis was unavailable; nothing in hand was acked", extra={"error": str(exc)})
        except BusUnavailable as exc:
            log.warning("stopped while NATS was unavailable; nothing in hand was acked", extra={"error": str(exc)})
        finally:
            for task in (counter, indexer, sweeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return 0

    async def _until_drained(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (the ingest loop) to its end; once a stop is requested, for at most the time
        left before the deadline. Cut short, the batch in hand stays unacked: JetStream delivers
        it again after ack_wait (whatever of it was committed is then a duplicate)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=self.drain_left())
            if not task.done():
                log.warning("shutdown.drain_timeout reached: the batch in hand is left unacked")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return
        finally:
            stop.cancel()
            if not task.done():  # this coroutine was itself cancelled
                task.cancel()
        await task  # its result, or what it raised

    async def _ensure_indexes(self) -> None:
        """Index a Redis another writer filled (cache/adoption.py), alongside ingest; retried
        while Redis is unavailable. Collection loads wait for it."""
        assert self.store is not None
        delay = 0.5
        while not self.stopping.is_set():
            try:
                report = await self.store.ensure_indexes()
            except StoreUnavailable as exc:
                log.warning("cannot check the indexes yet; retrying", extra={"error": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=delay)
                delay = min(delay * 2, 10.0)
                continue
            if report.refused is not None:
                log.warning("indexes not built", extra={"error": report.summary()})
            elif not report.skipped:
                log.info("indexes checked", extra={"scanned": report.scanned, "added": report.added})
            return

    async def load_stats(self) -> dict[str, Any]:
        """The `stats` endpoint: key counts, the last applied stream sequence, consumer lag."""
        assert self.store is not None
        ingestor = self.ingestor
        return {
            "trader_id": self.config.trader_id,
            "keys": await self.store.key_counts(),
            "last_applied_sequence": await self.store.read_checkpoint(),
            "consumer_pending": None if ingestor is None else ingestor.pending,
            "ready": self.is_ready(),
        }

    async def _refresh_key_counts(self) -> None:
        assert self.store is not None
        while not self.stopping.is_set():
            try:
                self.metrics.set_keys(await self.store.key_counts())
            except StoreUnavailable:
                self.metrics.set_redis_up(False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.config.metrics.key_count_interval)

    async def _on_disconnected(self) -> None:
        self.metrics.set_nats_connected(False)
        if not self.stopping.is_set():
            log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        self.metrics.set_nats_connected(True)
        log.info("nats reconnected")

    async def _close(self) -> None:
        """Close everything, each step within the time left of the one shutdown deadline."""
        self._start_deadline()  # also when stopping without a request (an error, a refused config)
        if self.service is not None:
            await self.service.stop(self.drain_left())
        if self.build_worker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.build_worker.stop(), timeout=self.drain_left())
        for nc in (self.service_nc, self.nc):
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.flush(), timeout=self.drain_left())
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), timeout=self.drain_left())
        if self.store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.client.aclose(), timeout=self.drain_left())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.health.stop(), timeout=self.drain_left())
        log.info("stopped")


__all__ = ["Daemon", "decode_limits", "nats_options", "redis_client"]
