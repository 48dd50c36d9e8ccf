"""What the ingest loop cannot see from inside: a stall, and acks stuck at the server (pure).

The loop feeds `StallWatch` its commits and whether it has deliveries in hand; a poller feeds
it the consumer's state (`ConsumerView`). Ingest is *stalled* when work is waiting (deliveries
in hand, messages not yet delivered, or delivered ones above the ack floor) and nothing was
committed for `threshold` seconds since that work appeared: readiness goes false, the
`tradecache_ingest_stalled` gauge says 1 and the log says what the loop is doing.

Stuck acks: after a nats-server crash, a durable consumer with AckPolicy.ALL can keep messages
pending *below* its ack floor (nats-server 2.9 ignores acks at or below the floor, so they are
redelivered every ack wait, for ever, and never counted as pending). `ConsumerView.stuck`
counts them: everything delivered is at or below the floor, yet acks are pending.
`StuckAcks` reports them once they are seen twice in a row, `confirm_after` seconds apart
(a state read in passing is not enough to act on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConsumerView:
    """The durable consumer as JetStream reports it (`consumer_info`)."""

    undelivered: int  # num_pending: in the stream, not yet delivered
    ack_pending: int  # num_ack_pending: delivered, not acknowledged
    redelivered: int  # num_redelivered: of those, delivered more than once
    delivered_seq: int  # the last stream sequence delivered
    ack_floor_seq: int  # every stream sequence at or below it is acknowledged

    @classmethod
    def of(cls, info: Any) -> ConsumerView:
        return cls(
            undelivered=int(info.num_pending or 0),
            ack_pending=int(info.num_ack_pending or 0),
            redelivered=int(info.num_redelivered or 0),
            delivered_seq=int(info.delivered.stream_seq or 0),
            ack_floor_seq=int(info.ack_floor.stream_seq or 0),
        )

    @property
    def waiting(self) -> bool:
        """Work for the daemon: undelivered messages, or delivered ones pending above the ack floor."""
        return self.undelivered > 0 or (self.ack_pending > 0 and self.delivered_seq > self.ack_floor_seq)

    @property
    def stuck(self) -> int:
        """Acks pending below the floor (everything delivered is acknowledged, yet some are pending)."""
        return self.ack_pending if self.delivered_seq <= self.ack_floor_seq else 0


class StallWatch:
    """Whether ingest has work waiting and has not committed for `threshold` seconds."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._last_commit: float | None = None
        self._in_hand_since: float | None = None
        self._waiting_since: float | None = None  # per the consumer's state
        self.view: ConsumerView | None = None

    def committed(self, now: float) -> None:
        self._last_commit = now

    def in_hand(self, busy: bool, now: float) -> None:
        """The loop holds deliveries not yet committed (`busy`), or holds none."""
        if not busy:
            self._in_hand_since = None
        elif self._in_hand_since is None:
            self._in_hand_since = now

    def observed(self, view: ConsumerView, now: float) -> None:
        self.view = view
        if not view.waiting:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now

    def idle_for(self, now: float) -> float:
        """Seconds that work has waited without a commit (0 when nothing waits)."""
        starts = [t for t in (self._in_hand_since, self._waiting_since) if t is not None]
        if not starts:
            return 0.0
        since = min(starts)
        if self._last_commit is not None:
            since = max(since, self._last_commit)
        return max(0.0, now - since)

    def stalled(self, now: float) -> bool:
        return self.idle_for(now) >= self.threshold


class StuckAcks:
    """Stuck acks seen twice in a row, at least `confirm_after` seconds apart."""

    def __init__(self, confirm_after: float) -> None:
        self.confirm_after = confirm_after
        self._first_seen: float | None = None

    def observed(self, view: ConsumerView, now: float) -> int:
        """How many acks are confirmed stuck now (0 until confirmed)."""
        if not view.stuck:
            self._first_seen = None
            return 0
        if self._first_seen is None:
            self._first_seen = now
            return 0
        return view.stuck if now - self._first_seen >= self.confirm_after else 0

    def cleared(self) -> None:
        self._first_seen = None


__all__ = ["ConsumerView", "StallWatch", "StuckAcks"]
