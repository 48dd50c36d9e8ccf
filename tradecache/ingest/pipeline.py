"""Deliveries -> checks -> the ledger -> one Redis call -> the ack, in stream order; what Redis
refuses is pinned to one message. The one batch pipeline of the daemon's ingest loop and of
`tradecache rebuild`.

`run_deliveries` takes a batch as it came (redeliveries and all): one copy per stream sequence,
in stream order, in chunks of at most `chunk_bytes` of payload, each chunk checked by the intake
and `run`, then the acknowledgement (the caller's: `ack`) once every chunk is committed.

For a run of items (`Accepted` / `Refused`, stream order) the pipeline:
1. reads the stored state the items need and memory lacks (one READ_SCRIPT call), except the
   orders first seen by their OrderInitialized: those are taken for new, and the call fails
   (ASSUMED, nothing written) if one is stored after all; the run is then applied again with every
   order read (`assume_new`). A backlog's runs are mostly new orders, and their read, queued
   behind the commit in flight, kept the next run from being applied ahead of it;
2. applies them on the ledger (`apply_batch`, pure) and hands each refusal to `dead_letter`;
3. commits all writes plus the checkpoint in one APPLY_SCRIPT call, fenced by the lease token.

When Redis refuses the call for what it carried (`StoreRefused`: WRONGTYPE, a script error), or a
stored entity the items need cannot be read back, the run is split in two and each half tried
again, until a half carries one message's writes: that message is dead-lettered with reason
`store_refused` and Redis' words, the rest is written. The ledger is reset before each retry,
since memory may hold what Redis did not take. A refusal that names tradecache's own keys
(`...:tradecache:...`: the checkpoint, an index, a dedupe hash) or that remains with no message
left to blame is not a message's doing: it is raised as `NotPinned` for the caller to retry.
How Redis is called (with retries while it is unavailable, or not) is the caller's: `call`.

Work ahead: while a commit is in flight, Redis runs the script and the pipeline would wait. So
the next batch is checked then (`while_committing`), and once it is settled (`upcoming`: the
deliveries exactly as they will be handed over) it is also applied on the ledger, its stored
state read first when memory lacks some: its commit can go out as soon as this one is answered.
Reading ahead is safe because it only reads keys the call in flight does not write; applying
ahead because the ledger is reset whenever that call fails (and with it what was applied
ahead, `Ledger.generation`), and what was prepared is used only for the very same items, after
the call it was prepared behind committed. Otherwise it is dropped with the ledger's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import Encoder, assumption_failed, conflict_operation
from tradecache.errors import EventRejected, LeaseLost, RejectReason, StoreRefused
from tradecache.ingest.batch import BatchResult, apply_batch, owner_of
from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused
from tradecache.model.ledger import Ledger

T = TypeVar("T")
# After a call refused because an order taken for new was stored (a restart, a producer publishing
# orders again), this many more stream sequences read every order as before: a run of such orders
# costs one refused call, not one per batch. Refused again soon after such a window, the next one
# is twice as long, up to MAX_READ_AFTER_REFUSED: a producer publishing its whole history again
# cost a refused call (and a reset of the ledger's memory) every thousand messages.
READ_AFTER_REFUSED = 1000
MAX_READ_AFTER_REFUSED = 64_000
# Dead letters published together, their acks awaited together (`Pipeline._dead_letters`): the
# letters of a chunk are bounded by its bytes, and this bounds the requests in flight.
DEAD_LETTERS_AT_ONCE = 64
Item = Accepted | Refused
OWN_KEYS_MARK = ":tradecache:"


class Caller(Protocol):
    """Runs one Redis operation: `await call("commit batch", lambda: store.commit(...))`."""

    def __call__(self, what: str, attempt: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


class NotPinned(Exception):
    """Redis refused something no single message explains (our own keys, or nothing left to blame)."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(f"Redis refused a write no single message explains: {cause}")


class _Pinnable(Exception):
    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)


class _Assumed(Exception):
    """An order taken for new without a read is stored after all: nothing was written."""


class _Conflict(Exception):
    """The store holds another payload under the id of one message of the piece."""

    def __init__(self, stream_seq: int, refusal: EventRejected) -> None:
        self.stream_seq = stream_seq
        self.refusal = refusal
        super().__init__(str(refusal))


@dataclass(frozen=True, slots=True)
class _Prepared:
    """The next items applied ahead on the ledger of `generation`, behind the commit up to `behind`."""

    items: list[Item]
    result: BatchResult
    generation: int
    behind: int


class _Holding:
    """The pipeline held by someone else between two runs (a retention purge): what was applied
    ahead read the store before that one changes it, so it is dropped first."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def __aenter__(self) -> None:
        await self._pipeline._lock.acquire()
        self._pipeline.discard_prepared()

    async def __aexit__(self, *exc_info: object) -> None:
        self._pipeline._lock.release()


@dataclass(frozen=True, slots=True)
class Committed:
    """One committed call: what the ledger made of its items, the script's answers, its duration."""

    result: BatchResult
    results: list[int]
    seconds: float


def chunks_by_size(deliveries: Sequence[Delivery], max_bytes: int) -> Iterator[list[Delivery]]:
    """Consecutive runs of deliveries whose payloads add up to at most `max_bytes` (at least one each)."""
    chunk: list[Delivery] = []
    size = 0
    for delivery in deliveries:
        if chunk and size + len(delivery.data) > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(delivery)
        size += len(delivery.data)
    if chunk:
        yield chunk


def in_stream_order(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """One delivery per stream sequence (a message redelivered while its first copy was still in
    hand counts once: the first copy is kept), sorted by sequence."""
    unique = {d.stream_seq: d for d in reversed(deliveries)}
    return sorted(unique.values(), key=lambda d: d.stream_seq)


async def _call_directly(what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
    return await attempt()


class Pipeline:
    """One trader's items through the ledger into Redis (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        store: Store,
        keys: Keys,
        encode: Encoder,
        *,
        call: Caller = _call_directly,
        dead_letter: Callable[[Refused], Awaitable[None]] | None = None,
        committed: Callable[[Committed], None] | None = None,
        fence: Callable[[], str | None] = lambda: None,
        log: logging.Logger | None = None,
        intake: Intake | None = None,
        chunk_bytes: int = 2 * 1024 * 1024,
        after_commit: Callable[[], Awaitable[None]] | None = None,
        assume_new: bool = True,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.keys = keys
        self.encode = encode
        self.call = call
        self.dead_letter = dead_letter
        self.committed = committed
        self.fence = fence
        self.log = log or logging.getLogger("tradecache")
        self.intake = intake
        self.chunk_bytes = chunk_bytes
        self.after_commit = after_commit
        # Orders first seen by their OrderInitialized are taken for new, not read (the script
        # checks it: `ScriptCall.expect_new`); up to this stream sequence, after a call refused for
        # that, everything is read as before.
        self.assume_new = assume_new
        self._read_all_through = 0
        self._read_after = READ_AFTER_REFUSED  # the window after the last refusal (see READ_AFTER_REFUSED)
        self.assumptions_failed = 0  # calls refused because an order taken for new was stored
        # Work to do while a commit is in flight (the daemon: check the next batch ahead, `check_ahead`).
        self.while_committing: Callable[[], None] | None = None
        # The next batch once it is settled (None: not yet), and a signal that more has arrived:
        # with both, the next batch is also applied ahead while a commit is in flight.
        self.upcoming: Callable[[], Sequence[Delivery] | None] | None = None
        self.arrivals: asyncio.Event | None = None
        self._prepared: _Prepared | None = None
        self.prepared_used = 0  # batches committed as applied ahead (tests and benchmarks read it)
        self._checked_ahead: dict[int, Item] = {}  # stream sequence -> its delivery checked ahead
        self._last_chunk = False  # the chunk being run is its batch's last (see `_commit`)
        self.checkpoint = 0
        self.pinned = 0  # messages dead-lettered as store_refused
        # A commit that may have been carried out although its answer never came (see `_send`).
        self.unconfirmed: Committed | None = None
        # Held from reading a run's stored state to its commit: a retention purge
        # (`daemon/retention.py`) waits for it, so it never removes what a run has just read;
        # taken through `lock`, it also drops what was applied ahead.
        self._lock = asyncio.Lock()
        self.lock = _Holding(self)

    async def run_deliveries(
        self, deliveries: Sequence[Delivery], *, ack: Callable[[list[Delivery]], Awaitable[None]] | None = None
    ) -> None:
        """Check, apply and commit `deliveries` chunk by chunk, then `ack` them all (see the module
        docstring). Decoded one chunk at a time: what a chunk decoded is freed before the next.
        Raises what `run` raises; nothing is acked then."""
        intake = self.intake
        if intake is None:
            raise TypeError("run_deliveries needs the pipeline's intake")
        chunks = list(chunks_by_size(in_stream_order(deliveries), self.chunk_bytes))
        for index, chunk in enumerate(chunks):
            self._last_chunk = index == len(chunks) - 1
            await self.run([self._checked(intake, delivery) for delivery in chunk])
            if self.after_commit is not None:
                await self.after_commit()
        if ack is not None:
            await ack(list(deliveries))

    def check_ahead(self, deliveries: Sequence[Delivery], limit: int) -> None:
        """Check deliveries that will come in a later batch, now (while a commit is in flight: the
        checks need no state, so their result is the same whenever they run). At most `limit`
        are kept, of at most `chunk_bytes` of payload (what is decoded stays within one more
        chunk); `run_deliveries` uses them for the very same deliveries."""
        intake = self.intake
        if intake is None:
            return
        ahead = self._checked_ahead
        if ahead:  # what was never handed over (a pull lost, a restart) makes room
            for seq in [seq for seq in ahead if seq <= self.checkpoint]:
                del ahead[seq]
        size = sum(len(item.delivery.data) for item in ahead.values())
        for delivery in deliveries:
            if len(ahead) >= limit or size + len(delivery.data) > self.chunk_bytes:
                return
            if delivery.stream_seq > self.checkpoint and delivery.stream_seq not in ahead:
                ahead[delivery.stream_seq] = intake.check(delivery)
                size += len(delivery.data)

    def forget_ahead(self) -> None:
        self._checked_ahead.clear()
        self.discard_prepared()

    def discard_prepared(self) -> None:
        """Drop what was applied ahead, and with it the ledger's memory (which holds its effects)."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared.generation == self.ledger.generation:
            self.ledger.reset()

    def _checked(self, intake: Intake, delivery: Delivery) -> Item:
        item = self._checked_ahead.pop(delivery.stream_seq, None) if self._checked_ahead else None
        # The same delivery (the same message object from NATS), not another copy of the sequence.
        if item is not None and item.delivery.data is delivery.data and item.delivery.reply == delivery.reply:
            return item
        return intake.check(delivery)

    async def run(self, items: Sequence[Item]) -> None:
        """Apply and commit `items` (stream order). Raises NotPinned, LeaseLost, StoreUnavailable
        (from `call`), or a bug; nothing is half-committed in any case."""
        async with self._lock:
            await self._run(items)

    async def _run(self, items: Sequence[Item]) -> None:
        published: set[int] = set()  # stream sequences dead-lettered in this run (splits retry)
        pieces: deque[list[Item]] = deque([list(items)])
        while pieces:
            piece = pieces.popleft()
            size = len(self._prepared.items) if self._prepared is not None else 0
            if 0 < size < len(piece) and self._is_prepared(piece[:size]):
                # The batch grew after it was settled ahead (more arrived): the rest goes next.
                pieces.appendleft(piece[size:])
                piece = piece[:size]
            try:
                rest = await self._commit(piece, published, last=self._last_chunk and not pieces)
            except _Pinnable as failure:
                self.ledger.reset()
                pieces.extendleft(reversed(self._split(piece, failure.cause)))
                continue
            except _Assumed:
                # Nothing was written; memory holds the order as new. Read everything this time.
                self.ledger.reset()
                self.assumptions_failed += 1
                again = self._read_all_through > 0 and (
                    piece[0].delivery.stream_seq <= self._read_all_through + self._read_after
                )
                self._read_after = min(2 * self._read_after, MAX_READ_AFTER_REFUSED) if again else READ_AFTER_REFUSED
                self._read_all_through = max(self._read_all_through, piece[-1].delivery.stream_seq + self._read_after)
                self.log.info("an order taken for new is stored: reading every order again for a while",
                              extra={"through": self._read_all_through})  # fmt: skip
                pieces.appendleft(piece)
                continue
            except _Conflict as conflict:
                # Nothing was written; memory may hold what the refused message did.
                self.ledger.reset()
                pieces.appendleft(self._refuse(piece, conflict.stream_seq, conflict.refusal))
                continue
            if rest:
                pieces.appendleft(rest)

    async def _commit(self, piece: list[Item], published: set[int], *, last: bool = False) -> list[Item]:
        result = self._take_prepared(piece)
        if result is None:
            fresh = [item.message for item in piece if isinstance(item, Accepted) and self._ahead(item)]
            request = self.ledger.missing(fresh, assume_new=self._assumes(piece))
            if request:
                try:
                    stored = await self.call("read state", lambda: self.store.read_state(request))
                    self.ledger.hydrate(stored)
                except StoreRefused as exc:
                    raise _Pinnable(f"Redis refused to read the state it needs: {exc.cause}") from exc
                except (ValueError, TypeError, KeyError, ArithmeticError, EventRejected) as exc:
                    raise _Pinnable(f"its stored state cannot be read back: {type(exc).__name__}: {exc}") from exc
            result = self._applied(piece, self.checkpoint, request.assumed_orders)
        if self.dead_letter is not None:
            await self._dead_letters([r for r in result.refused if r.delivery.stream_seq not in published], published)
        call = result.call
        token = self.fence()
        if call.count and token is not None:
            call.fence(self.keys, token)
        started = time.perf_counter()
        try:
            # Work ahead only once every message of the batch has been applied: checking a later
            # one may depend on what they did (a Currency message registers its currency).
            results = await self._send(result, overlap=last and not result.rest)
        except StoreRefused as exc:
            if assumption_failed(exc.cause):
                raise _Assumed(exc.cause) from exc
            raise self._conflict(result, exc.cause) or _Pinnable(exc.cause) from exc
        seconds = time.perf_counter() - started
        self.checkpoint = max(self.checkpoint, result.last_seq)
        if self.committed is not None:
            self.committed(Committed(result, results, seconds))
        if result.failure is not None:
            self.log.error("a message failed unexpectedly and was dead-lettered", exc_info=result.failure)
        # After a message that failed unexpectedly, the ones after it are applied now that the
        # ones before it are committed.
        return result.rest

    async def _dead_letters(self, refused: list[Refused], published: set[int]) -> None:
        """Publish the letters of `refused`, DEAD_LETTERS_AT_ONCE at a time: their publishes sent
        together and their acks awaited together (one after the other, each cost a round trip and
        ~300 us of the loop's CPU: a stream half malformed was ingested at 4,700 messages/s). Each
        published letter is recorded in `published` (not sent again when the batch is retried),
        even when another fails; then the first failure is raised."""
        assert self.dead_letter is not None
        for start in range(0, len(refused), DEAD_LETTERS_AT_ONCE):
            group = refused[start : start + DEAD_LETTERS_AT_ONCE]
            outcomes = await asyncio.gather(*(self.dead_letter(r) for r in group), return_exceptions=True)
            failure: BaseException | None = None
            for item, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failure = failure or outcome
                else:
                    published.add(item.delivery.stream_seq)
            if failure is not None:
                raise failure

    async def _send(self, result: BatchResult, *, overlap: bool = False) -> list[int]:
        """The commit call, through `call`. An attempt that failed as unavailable (a timeout) may
        still have been carried out: Redis ran it and its answer came too late (a stall, DEBUG
        SLEEP). Retried, it finds its writes made; but when the retry is refused because the lease
        was lost meanwhile (the stall outlasted it), nobody knows. The call is then kept as
        `unconfirmed`, for the loop to settle once it holds the lease again and has read the
        checkpoint (`take_unconfirmed`)."""
        attempts = 0

        async def attempt() -> list[int]:
            nonlocal attempts
            attempts += 1
            return await self.store.commit(result.call)

        try:
            if self.while_committing is None or not overlap:
                return await self.call("commit batch", attempt)
            return await self._overlapped(self.call("commit batch", attempt), self.while_committing, result)
        except LeaseLost:
            if attempts > 1:  # an earlier attempt failed without an answer: it may have been made
                self.unconfirmed = Committed(result, [1] * result.call.count, 0.0)
            raise

    async def _overlapped(
        self, commit: Awaitable[list[int]], work: Callable[[], None], behind: BatchResult
    ) -> list[int]:
        """`commit`, with `work` done while Redis runs it: the request is sent first (the task runs
        up to its wait for the answer), then `work`, then the next batch is applied ahead when
        it settles in time (`_prepare_ahead`), then the answer is awaited. `work` is only ahead
        of time (what it does is done again if needed), so its failure is logged, not raised."""
        task = asyncio.ensure_future(commit)
        await asyncio.sleep(0)
        if not task.done():
            try:
                work()
            except Exception:  # the same work is done later on the main path, where it is handled
                self.log.debug("work ahead of a commit failed", exc_info=True)
            if self.upcoming is not None and self._prepared is None:
                try:
                    await self._prepare_ahead(task, behind)
                except Exception:  # only ahead of time: the main path does it again, and handles it
                    self.log.debug("applying ahead of a commit failed", exc_info=True)
                    self._prepared = None
                    self.ledger.reset()  # it may hold part of what was applied
        return await task

    async def _settled(self, task: asyncio.Future[list[int]]) -> Sequence[Delivery] | None:
        """The next batch once it is settled, waiting for arrivals while `task` runs (None: not in time)."""
        upcoming, arrivals = self.upcoming, self.arrivals
        assert upcoming is not None
        while True:
            deliveries = upcoming()
            if deliveries is not None or task.done() or arrivals is None:
                return deliveries
            arrivals.clear()
            waiter = asyncio.ensure_future(arrivals.wait())
            try:
                await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    async def _prepare_ahead(self, task: asyncio.Future[list[int]], behind: BatchResult) -> None:
        """Apply the next batch on the ledger while `task` commits `behind` (see the module
        docstring). Only when it is one chunk of deliveries all after `behind`, all checked, and
        what it must read is not written by `behind`."""
        intake = self.intake
        deliveries = await self._settled(task)
        if not deliveries or intake is None:
            return
        ordered = in_stream_order(deliveries)
        if ordered[0].stream_seq <= behind.last_seq or sum(len(d.data) for d in ordered) > self.chunk_bytes:
            return
        self.check_ahead(ordered, len(ordered) + len(self._checked_ahead))
        items: list[Item] = []
        for delivery in ordered:
            item = self._checked_ahead.get(delivery.stream_seq)
            if item is None or item.delivery.data is not delivery.data:
                return
            items.append(item)
        ledger = self.ledger
        generation = ledger.generation
        request = ledger.missing([item.message for item in items if isinstance(item, Accepted)],
                                 assume_new=self._assumes(items))  # fmt: skip
        if request:
            if not self.store.keys_read(request).isdisjoint(behind.call.keys):
                return  # it would read what the call in flight writes: after its answer, then
            stored = await self.store.read_state(request)
            if ledger.generation != generation:
                return
            ledger.hydrate(stored)
        result = self._applied(items, behind.last_seq, request.assumed_orders)
        self._prepared = _Prepared(items, result, generation, behind.last_seq)
        if result.rest:  # a message failed unexpectedly: the main path handles that
            self.discard_prepared()

    def _assumes(self, items: Sequence[Item]) -> bool:
        """Whether orders first seen by their OrderInitialized may be taken for new in `items`."""
        return self.assume_new and bool(items) and items[0].delivery.stream_seq > self._read_all_through

    def _applied(self, items: Sequence[Item], checkpoint: int, assumed_orders: set[str]) -> BatchResult:
        """`items` applied on the ledger and planned, the call conditional on the orders taken for
        new (`assumed_orders`) not being stored."""
        result = apply_batch(self.ledger, items, checkpoint=checkpoint, keys=self.keys, encode=self.encode)
        if assumed_orders and result.call.count:
            for order_id in sorted(assumed_orders):
                result.call.expect_new(self.keys, order_id)
        return result

    def _is_prepared(self, piece: Sequence[Item]) -> bool:
        prepared = self._prepared
        return (
            prepared is not None
            and len(piece) == len(prepared.items)
            and all(mine is theirs for mine, theirs in zip(piece, prepared.items, strict=True))
        )

    def _take_prepared(self, piece: Sequence[Item]) -> BatchResult | None:
        """What was applied ahead for exactly `piece`, if still valid; anything else prepared is
        dropped (with the ledger's memory, which holds its effects)."""
        prepared = self._prepared
        if prepared is None:
            return None
        if (
            prepared.generation == self.ledger.generation
            and self.checkpoint >= prepared.behind
            and self._is_prepared(piece)
        ):
            self._prepared = None
            self.prepared_used += 1
            return prepared.result
        self.discard_prepared()
        return None

    def take_unconfirmed(self, stored_checkpoint: int) -> Committed | None:
        """The unconfirmed commit (see `_send`) if the stored checkpoint shows it was carried out
        (it reached the call's last sequence), else None; forgotten either way. Its script
        answers are unknown: each write is taken as made."""
        unconfirmed, self.unconfirmed = self.unconfirmed, None
        if unconfirmed is None or stored_checkpoint < unconfirmed.result.last_seq:
            return None
        return unconfirmed

    def _conflict(self, result: BatchResult, cause: str) -> _Conflict | None:
        """A CONFLICT refusal, as the one message it names (None: another refusal)."""
        named = conflict_operation(cause)
        owner = None if named is None else owner_of(result, named[0])
        if named is None or owner is None:
            return None
        write = result.call.operations[named[0]]
        assert write is not None
        detail = f"{owner.item.type_name} for {write.collection.value} '{write.key}': {named[1]}"
        return _Conflict(owner.item.delivery.stream_seq, EventRejected(RejectReason.CONFLICTING_DUPLICATE, detail))

    def _refuse(self, piece: list[Item], stream_seq: int, refusal: EventRejected) -> list[Item]:
        """`piece` with the message at `stream_seq` refused."""
        refused: list[Item] = []
        for item in piece:
            if isinstance(item, Accepted) and item.delivery.stream_seq == stream_seq:
                item = Refused(item.delivery, item.kind.value, item.type_name, refusal)
            refused.append(item)
        return refused

    def _ahead(self, item: Item) -> bool:
        return item.delivery.stream_seq > self.checkpoint

    def _split(self, piece: list[Item], cause: str) -> list[list[Item]]:
        """Halves of `piece` to try again, or the piece with its one message refused."""
        writers = [index for index, item in enumerate(piece) if isinstance(item, Accepted) and self._ahead(item)]
        if not writers or OWN_KEYS_MARK in cause:
            raise NotPinned(cause)
        if len(writers) > 1:
            middle = writers[len(writers) // 2]
            return [piece[:middle], piece[middle:]]
        index = writers[0]
        item = piece[index]
        assert isinstance(item, Accepted)
        refusal = EventRejected(RejectReason.STORE_REFUSED, f"Redis refused its writes: {cause}")
        self.pinned += 1
        self.log.error(
            "Redis refused one message's writes; it is dead-lettered, the rest is written",
            extra={"stream_seq": item.delivery.stream_seq, "type": item.type_name, "error": cause},
        )
        return [[*piece[:index], Refused(item.delivery, item.kind.value, item.type_name, refusal), *piece[index + 1 :]]]


__all__ = ["Caller", "Committed", "NotPinned", "Pipeline", "chunks_by_size", "in_stream_order"]
