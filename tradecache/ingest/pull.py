"""The pull protocol of the ingest loop as a state machine without I/O (sans-IO).

`PullMachine` decides when to ask JetStream for messages, when what has arrived makes a batch,
and when a pull is over or lost; the driver (`ingest/consumer.py`) does the I/O it asks for. It
never reads a clock, sleeps, or touches a socket: time comes in with the events, so every
decision can be tested by feeding events and reading the actions (`tests/unit/test_pull.py`).

Events in (methods): `arrived` (a message on the pull inbox: a delivery or a status),
`poll(now)` (time passed, or the driver is ready for the next batch), `processed` (the batch
handed over was committed and acknowledged), `pull_failed` (the pull request could not be
sent), `stop`, `restart` (a new consumer, or the lease taken again).

Actions out (from `poll`): `SendPull` (publish this request), `DeliverBatch` (process these
deliveries; with `gap_before` when the consumer sequence skipped: deliveries were lost in
flight, so the stream must be read up to the batch's newest message first), `Warn` (log this). `wake_at` says by when
`poll` must be called again if nothing arrives.

The rules:
- One pull at a time is asked for (`batch`, `expires`, `max_bytes`, and an idle heartbeat
  when the expiry allows one: JetStream refuses a heartbeat over half the expiry). A status
  message on the current pull's reply subject ends it (404 no messages, 408 expired, 409
  conflict or byte limit), except a heartbeat (100), which says the pull is alive.
- A pull is over at its expiry, said or not: past its expiry plus a short grace (a tenth of the
  expiry, at least 20 ms) it is taken for over and another is asked for. nats-server 2.9 drops a
  part-filled pull without its 408 when a message arrives at the moment it expires (a steady
  flow slower than a batch per expiry); waiting for a sign then stalled ingest for three
  heartbeat periods (375 ms by default). A pull is also lost after three heartbeat periods
  without a sign (nor a delivery).
- A batch is handed over when it is full, when its pull is over, after `linger` without a new
  arrival, or `max_wait` after its first delivery, whichever comes first (both 0 by default:
  at once, whatever has arrived). A full batch, or one
  whose pull was cut at its byte limit, means a backlog: the next pull is asked for before the
  batch is handed over, so it arrives while the batch is processed.
- One batch is in hand at a time: nothing else is handed over until `processed`.
- Stopping: no new pull; the outstanding one is drained; `finished` once it is over.
- What waits on the inbox is bounded (`ARRIVED_PULLS` pulls' worth of messages and of bytes, at
  least `MIN_ARRIVED` messages and `MIN_ARRIVED_BYTES`, as nats-py's subscription queue was).
  Past that a message is dropped and counted (anyone allowed to publish to the inbox could
  otherwise fill memory); `poll` warns once per drop burst. After a drop the next batch handed
  over reads the stream first, up to its newest message (as after a consumer-sequence gap: a
  dropped delivery may sit between two that did arrive); a dropped end of pull makes it lost.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tradecache.ingest.intake import Delivery, ack_metadata

# A partial batch is handed over as soon as the loop can take it (no lingering): what arrives while
# a batch is in hand makes the next one, so batches grow with the load by themselves. A 1 ms linger
# and a 2 ms cap (before 2026-12-07) held a trickle's events with no need: lag p50 4.1-4.5 -> 1.6-2.1
# ms, p99 9.9-11.9 -> 5.0-9.5 ms at 1,000 events/s (`ingest_bench.py`, alternated), for ~15 more
# points of a core at that rate (smaller batches). `PullSettings` can still ask for a linger.
LINGER_SECONDS: Final = 0.0
# ... and never hold the first delivery of a batch longer than this (a steady stream has no gaps).
MAX_BATCH_WAIT: Final = 0.0
# A pull whose end never came is over this long after its expiry (this share of the expiry, and
# never less than the floor): JetStream ended it then, whether or not it said so. The grace covers
# the request's way to the server and the 408's way back; a pull taken for over too early only
# overlaps the next one for a moment (its late end is an earlier pull's, ignored).
PULL_GRACE_SHARE: Final = 0.1
MIN_PULL_GRACE_SECONDS: Final = 0.02
# After a failed pull request (disconnected), ask again after this long.
PULL_RETRY_SECONDS: Final = 0.2
# The heartbeat asked for is this share of the expiry (JetStream allows at most a half) ...
HEARTBEAT_SHARE: Final = 0.25
# ... and a pull with no sign for this many heartbeat periods is lost.
HEARTBEATS_MISSED: Final = 3
# No heartbeat below this period: too many status messages for what it would win.
MIN_HEARTBEAT_SECONDS: Final = 0.02
HEARTBEAT_STATUS: Final = "100"
# Messages waiting on the inbox are bounded at this many pulls' worth (count and bytes), plus a
# few statuses, and never below the floors: after a NATS restart, redeliveries and re-asked pulls
# came to 576 messages waiting (batch 128) in the chaos test, over a bound of 4 pulls alone.
ARRIVED_PULLS: Final = 4
ARRIVED_STATUSES: Final = 64
MIN_ARRIVED: Final = 65_536
MIN_ARRIVED_BYTES: Final = 64 << 20
MAX_BYTES_DESCRIPTION: Final = "Message Size Exceeds MaxBytes"


@dataclass(frozen=True, slots=True)
class PullSettings:
    stream: str
    consumer: str
    batch_size: int
    expires: float  # seconds
    max_bytes: int
    linger: float = LINGER_SECONDS
    max_wait: float = MAX_BATCH_WAIT

    @property
    def grace(self) -> float:
        """How long after its expiry a pull whose end did not come is taken for over."""
        return max(self.expires * PULL_GRACE_SHARE, MIN_PULL_GRACE_SECONDS)

    @property
    def heartbeat(self) -> float:
        """The idle heartbeat asked for (0: none, the expiry is too short for one)."""
        beat = self.expires * HEARTBEAT_SHARE
        return beat if beat >= MIN_HEARTBEAT_SECONDS else 0.0


@dataclass(slots=True)
class Incoming:
    """A message on the pull inbox, as NATS handed it over (not changed once built; not frozen,
    which would make building one per message several times dearer, as for `Delivery`)."""

    subject: str
    reply: str
    data: bytes
    headers: Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class SendPull:
    subject: str
    payload: bytes
    reply: str


@dataclass(frozen=True, slots=True)
class DeliverBatch:
    deliveries: list[Delivery]
    # The consumer sequence skipped before this batch: read the stream up to this stream sequence first.
    gap_before: int | None
    redelivered: int  # deliveries JetStream made more than once
    pending: int  # messages not yet delivered, as the last delivery says


@dataclass(frozen=True, slots=True)
class Warn:
    message: str
    fields: dict[str, object]


Action = SendPull | DeliverBatch | Warn


class PullMachine:
    """Pulls, batches and gaps of one consumer (see the module docstring)."""

    def __init__(
        self, settings: PullSettings, inbox: str, *, min_arrived: int = MIN_ARRIVED,
        min_arrived_bytes: int = MIN_ARRIVED_BYTES,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.inbox = inbox
        self.pulls = 0  # pull requests sent; the n-th replies on `<inbox>.<n>`
        self.remaining = 0  # deliveries still due on the current pull (0: none outstanding)
        self.cut = False  # the current pull ended at its byte limit: more is waiting
        self.last_cseq: int | None = None  # the highest consumer sequence handed over
        self.stopping = False
        self.in_hand = False
        # Deliveries are read (their JetStream metadata parsed) once, as they arrive; statuses and
        # messages without metadata stay as they came, for `_take` to read or warn about.
        self._arrived: deque[Delivery | Incoming] = deque()
        self._arrived_bytes = 0
        self._max_arrived = max(ARRIVED_PULLS * settings.batch_size + ARRIVED_STATUSES, min_arrived)
        self._max_arrived_bytes = max(ARRIVED_PULLS * settings.max_bytes, min_arrived_bytes)
        self.dropped = 0  # inbox messages dropped over the bound, since the start
        self._dropped_unread = False  # dropped since the last batch: the next one reads the stream first
        self._dropped_told = 0
        self._batch: list[Delivery] = []
        self._redelivered = 0
        self._first_at = 0.0
        self._linger_until = 0.0
        self._pull_deadline = 0.0  # the current pull is lost after this, whatever arrives
        self._alive_until = 0.0  # ... or after this without a sign (heartbeats asked for)
        self._retry_at = 0.0

    # -- events ------------------------------------------------------------------------------

    def arrived(self, message: Incoming) -> None:
        """A message on the pull inbox (taken in order at the next `poll`)."""
        self.arrived_parts(message.subject, message.reply, message.data, message.headers)

    def arrived_parts(self, subject: str, reply: str, data: bytes, headers: Mapping[str, str] | None) -> None:
        """`arrived`, given the message's parts (no `Incoming` built for a delivery)."""
        if len(self._arrived) >= self._max_arrived or self._arrived_bytes + len(data) > self._max_arrived_bytes:
            self.dropped += 1
            self._dropped_unread = True
            return
        self._arrived_bytes += len(data)
        if data or not headers or "Status" not in headers:  # a body first: a delivery's headers stay unread
            try:
                seq, consumer_seq, timestamp, pending, delivered = ack_metadata(reply)
            except ValueError:
                pass
            else:
                self._arrived.append(Delivery(subject, data, headers, seq, consumer_seq, timestamp,
                                              pending, reply, delivered))  # fmt: skip
                return
        self._arrived.append(Incoming(subject, reply, data, headers))

    def processed(self, now: float) -> None:
        """The batch handed over is committed and acknowledged: the next may come."""
        self.in_hand = False
        # Signs of life may have waited behind the batch: do not call the pull lost for that.
        if self.remaining > 0 and self.settings.heartbeat:
            self._alive_until = max(self._alive_until, now + self._silence_allowed())

    def pull_failed(self, now: float) -> None:
        """The pull request was not sent (disconnected): ask again shortly."""
        self.remaining = 0
        self._retry_at = now + PULL_RETRY_SECONDS

    def stop(self) -> None:
        """No new pull from now on; the outstanding one is drained."""
        self.stopping = True

    def restart(self, last_cseq: int | None) -> None:
        """A fresh start (the lease taken again, the consumer re-created): nothing is outstanding,
        and consumer sequences continue after `last_cseq` (None: not known, no gap check)."""
        self._arrived.clear()
        self._arrived_bytes = 0
        self._dropped_unread = False  # a restart reads from the checkpoint anyway
        self._batch = []
        self._redelivered = 0
        self._first_at = 0.0
        self.remaining = 0
        self.cut = False
        self.in_hand = False
        self.last_cseq = last_cseq

    @property
    def finished(self) -> bool:
        """Stopping, and nothing outstanding or in hand."""
        return self.stopping and self.remaining <= 0 and not self.in_hand and not self._batch

    @property
    def queued(self) -> int:
        """Messages arrived and not yet taken."""
        return len(self._arrived)

    def peek(self, limit: int) -> list[Delivery]:
        """Deliveries arrived and not yet taken (at most `limit`), as they will be handed over;
        nothing changes (for work ahead: checking them while a commit is in flight)."""
        found: list[Delivery] = []
        for message in self._arrived:
            if len(found) >= limit:
                break
            if isinstance(message, Delivery):
                found.append(message)
        return found

    def settled(self) -> list[Delivery] | None:
        """The next batch exactly as `poll` will hand it over, when that is already decided: the
        deliveries arrived fill it, or the end of its pull has arrived. None otherwise (for work
        ahead: applying it while the batch in hand is committed). Nothing changes."""
        arrived = self._arrived
        size = self.settings.batch_size
        if self._batch or not arrived:  # a batch being gathered: lingering decides it, not arrivals
            return None
        current = f"{self.inbox}.{self.pulls}"
        # Called on every arrival while a commit is in flight: cheap until it can be settled (a
        # pull's end is the last thing it sends).
        if len(arrived) < size and not self._ends_pull(arrived[-1], current):
            return None
        found: list[Delivery] = []
        for message in arrived:
            if len(found) >= size:
                return found
            if isinstance(message, Delivery):
                found.append(message)
            elif self._ends_pull(message, current):
                return found or None  # the pull is over: the batch is what came before its end
        return found if len(found) >= size else None

    @staticmethod
    def _ends_pull(message: Delivery | Incoming, current: str) -> bool:
        if isinstance(message, Delivery) or message.data or not message.headers:
            return False
        status = message.headers.get("Status")
        return status is not None and status != HEARTBEAT_STATUS and message.subject == current

    def wake_at(self) -> float | None:
        """When `poll` must be called if nothing arrives (None: only after an event)."""
        if self.in_hand:
            return None
        if self._batch:
            return self._linger_until
        if self.remaining > 0:
            return self._deadline()
        if self.stopping:
            return None
        return self._retry_at

    # -- actions -----------------------------------------------------------------------------

    def poll(self, now: float) -> list[Action]:
        """What to do now."""
        actions: list[Action] = []
        if self.dropped > self._dropped_told:
            actions.append(Warn("pull inbox over its bound: messages dropped",
                                {"dropped": self.dropped - self._dropped_told, "waiting": len(self._arrived),
                                 "waiting_bytes": self._arrived_bytes}))  # fmt: skip
            self._dropped_told = self.dropped
        if self.in_hand:
            return actions
        self._pull_if_due(now, actions)
        self._take(now, actions)
        if self._batch:
            full = len(self._batch) >= self.settings.batch_size
            if full or self.remaining <= 0 or now >= self._linger_until:
                self._hand_over(now, actions)
            return actions
        if self.remaining > 0 and now >= self._deadline():
            self.remaining = 0  # the pull's end was lost (a reconnect, a server that dropped it)
        if self.remaining <= 0:  # over, with nothing delivered: ask again at once
            self._pull_if_due(now, actions)
            self._take(now, actions)
        return actions

    # -- inside ------------------------------------------------------------------------------

    def _pull_if_due(self, now: float, actions: list[Action]) -> None:
        if self.remaining <= 0 and not self._batch and not self.stopping and now >= self._retry_at:
            actions.append(self._pull(now))

    def _silence_allowed(self) -> float:
        return self.settings.heartbeat * HEARTBEATS_MISSED

    def _deadline(self) -> float:
        if self.settings.heartbeat:
            return min(self._pull_deadline, self._alive_until)
        return self._pull_deadline

    def _pull(self, now: float) -> SendPull:
        settings = self.settings
        self.pulls += 1
        request: dict[str, int] = {
            "batch": settings.batch_size,
            "expires": int(settings.expires * 1e9),
            "max_bytes": settings.max_bytes,
        }
        if settings.heartbeat:
            request["idle_heartbeat"] = int(settings.heartbeat * 1e9)
            self._alive_until = now + self._silence_allowed()
        self.remaining = settings.batch_size
        self.cut = False
        self._pull_deadline = now + settings.expires + settings.grace
        return SendPull(
            f"$JS.API.CONSUMER.MSG.NEXT.{settings.stream}.{settings.consumer}",
            json.dumps(request).encode(),
            f"{self.inbox}.{self.pulls}",
        )

    def _take(self, now: float, actions: list[Action]) -> None:
        """Move arrived messages into the batch (up to its size), reading statuses on the way."""
        batch = self._batch
        took = False
        unparsed: list[str] = []  # subjects of messages without JetStream metadata
        current = f"{self.inbox}.{self.pulls}"
        while self._arrived and len(batch) < self.settings.batch_size:
            message = self._arrived.popleft()
            self._arrived_bytes -= len(message.data)
            if isinstance(message, Delivery):
                self.remaining -= 1
                self._alive_until = now + self._silence_allowed()
                if message.delivered > 1:
                    self._redelivered += 1
                batch.append(message)
                took = True
                continue
            headers = message.headers
            status = headers.get("Status") if headers else None
            if status is not None and not message.data:
                assert headers is not None
                if message.subject != current:
                    continue  # an earlier pull's end or heartbeat
                if status == HEARTBEAT_STATUS:
                    self._alive_until = now + self._silence_allowed()
                    continue
                # 404 no messages, 408 expired, 409 conflict or byte limit: that pull is over.
                self.remaining = 0
                description = headers.get("Description", "")
                if status == "409" and description == MAX_BYTES_DESCRIPTION:
                    self.cut = True
                elif status == "409":
                    actions.append(Warn("pull conflict", {"description": description}))
                continue
            # Neither a delivery nor a status: its JetStream metadata did not parse (`arrived`).
            unparsed.append(message.subject)
        if unparsed:  # one warning for all of them: a flood of them is not a flood of log lines
            actions.append(Warn("delivery without JetStream metadata ignored",
                                {"subject": unparsed[0], "count": len(unparsed)}))  # fmt: skip
        if took:
            if not self._first_at:
                self._first_at = now
            self._linger_until = min(now + self.settings.linger, self._first_at + self.settings.max_wait)

    def _hand_over(self, now: float, actions: list[Action]) -> None:
        batch, self._batch = self._batch, []
        redelivered, self._redelivered = self._redelivered, 0
        self._first_at = 0.0
        backlog = len(batch) >= self.settings.batch_size or self.cut
        if self.remaining <= 0 and backlog and not self.stopping:
            # A backlog: the next pull now, so that it arrives while this batch is processed.
            actions.append(self._pull(now))
        gap_before = None
        first_cseq = min(d.consumer_seq for d in batch)
        if self.last_cseq is not None and first_cseq > self.last_cseq + 1:
            # Deliveries were lost in flight: the stream up to this batch's newest message is read
            # first. Not only up to its oldest: a redelivery of an older message in the batch says
            # nothing of the lost ones, which may lie above it (acking the batch acks them too).
            # What the batch holds below that is then at or below the checkpoint and skipped.
            gap_before = max(d.stream_seq for d in batch)
            actions.append(Warn("consumer sequence gap", {"after": self.last_cseq, "next": first_cseq}))
        elif self._dropped_unread:
            # A delivery dropped at the bound may lie between two of this batch (no sequence skips
            # at its start then): the stream up to this batch's newest message is read first.
            gap_before = max(d.stream_seq for d in batch)
            actions.append(Warn("deliveries were dropped at the inbox bound: reading the stream first",
                                {"up_to": gap_before}))  # fmt: skip
        self._dropped_unread = False
        self.last_cseq = max(self.last_cseq or 0, max(d.consumer_seq for d in batch))
        self.in_hand = True
        actions.append(DeliverBatch(batch, gap_before, redelivered, batch[-1].pending))


__all__ = [
    "Action",
    "DeliverBatch",
    "Incoming",
    "PullMachine",
    "PullSettings",
    "SendPull",
    "Warn",
]
