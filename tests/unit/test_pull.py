"""The pull state machine, driven by events with made-up times: no NATS, no clock, no event loop.

Each test feeds `PullMachine` what the driver would (messages on the inbox, polls at given
times, `processed`) and checks the actions it asks for.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tradecache.ingest.pull import (
    ARRIVED_PULLS,
    ARRIVED_STATUSES,
    PULL_RETRY_SECONDS,
    Action,
    DeliverBatch,
    Incoming,
    PullMachine,
    PullSettings,
    SendPull,
    Warn,
)

INBOX = "_INBOX.abc"
NEXT = "$JS.API.CONSUMER.MSG.NEXT.S.C"


LINGER = 0.001  # for the tests of a machine asked to linger (the default is not to)
MAX_WAIT = 0.002


def settings(
    batch: int = 4, expires: float = 0.5, max_bytes: int = 1 << 20, *, linger: float = 0.0, max_wait: float = 0.0
) -> PullSettings:
    return PullSettings("S", "C", batch, expires, max_bytes, linger, max_wait)


def machine(
    batch: int = 4, expires: float = 0.5, last_cseq: int | None = 0, *, linger: float = 0.0, max_wait: float = 0.0
) -> PullMachine:
    pull = PullMachine(settings(batch, expires, linger=linger, max_wait=max_wait), INBOX)
    pull.restart(last_cseq)
    return pull


def delivery(seq: int, cseq: int | None = None, *, delivered: int = 1, pending: int = 0) -> Incoming:
    cseq = seq if cseq is None else cseq
    reply = f"$JS.ACK.S.C.{delivered}.{seq}.{cseq}.{1_700_000_000_000_000_000 + seq}.{pending}"
    return Incoming("tradecache.in.T-1.order", reply, b"x" * 10, None)


def status(code: str, description: str = "", *, pull: int = 1) -> Incoming:
    return Incoming(f"{INBOX}.{pull}", "", b"", {"Status": code, "Description": description})


def pulls(actions: list[Action]) -> list[SendPull]:
    return [a for a in actions if isinstance(a, SendPull)]


def batches(actions: list[Action]) -> list[DeliverBatch]:
    return [a for a in actions if isinstance(a, DeliverBatch)]


def warnings(actions: list[Action]) -> list[Warn]:
    return [a for a in actions if isinstance(a, Warn)]


def seqs(batch: DeliverBatch) -> list[int]:
    return [d.stream_seq for d in batch.deliveries]


def request(pull: SendPull) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(pull.payload)
    return decoded


# -- asking for messages -------------------------------------------------------------------------


def test_the_first_poll_asks_for_a_pull_with_the_settings_limits() -> None:
    actions = machine(batch=64, expires=0.5).poll(0.0)
    assert len(actions) == 1
    [pull] = pulls(actions)
    assert pull.subject == NEXT
    assert pull.reply == f"{INBOX}.1"
    assert request(pull) == {"batch": 64, "expires": 500_000_000, "max_bytes": 1 << 20, "idle_heartbeat": 125_000_000}


def test_a_short_expiry_asks_for_no_heartbeat() -> None:
    [pull] = pulls(machine(expires=0.05).poll(0.0))
    assert "idle_heartbeat" not in request(pull)


def test_the_heartbeat_asked_for_is_at_most_half_the_expiry_as_jetstream_requires() -> None:
    for expires in (0.08, 0.1, 0.5, 5.0, 30.0):
        heartbeat = settings(expires=expires).heartbeat
        assert heartbeat == 0 or heartbeat * 2 <= expires


def test_no_second_pull_while_one_is_outstanding() -> None:
    pull = machine()
    assert pulls(pull.poll(0.0))
    assert pull.poll(0.1) == []
    assert pull.wake_at() is not None


def test_each_pull_replies_on_its_own_subject() -> None:
    pull = machine()
    pull.poll(0.0)
    pull.arrived(status("404", "No Messages", pull=1))
    [second] = pulls(pull.poll(0.01))
    assert second.reply == f"{INBOX}.2"


def test_a_failed_pull_request_is_asked_again_after_a_pause() -> None:
    pull = machine()
    pull.poll(0.0)
    pull.pull_failed(0.0)
    assert pull.poll(0.1) == []
    assert pull.wake_at() == pytest.approx(PULL_RETRY_SECONDS)
    assert pulls(pull.poll(PULL_RETRY_SECONDS))


# -- ends of a pull ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["404", "408", "409"])
def test_a_status_on_the_current_pull_ends_it_and_the_next_is_asked_for(code: str) -> None:
    pull = machine()
    pull.poll(0.0)
    pull.arrived(status(code, "whatever"))
    actions = pull.poll(0.01)
    assert len(pulls(actions)) == 1


def test_a_status_of_an_earlier_pull_is_ignored() -> None:
    pull = machine()
    pull.poll(0.0)
    pull.arrived(status("404", pull=1))
    pull.poll(0.01)  # pull 2 outstanding now
    pull.arrived(status("408", "Request Timeout", pull=1))
    assert pull.poll(0.02) == []
    assert pull.remaining == 4


def test_a_conflict_other_than_the_byte_limit_is_logged() -> None:
    pull = machine()
    pull.poll(0.0)
    pull.arrived(status("409", "Leadership Change"))
    [warning] = warnings(pull.poll(0.01))
    assert warning.message == "pull conflict"
    assert warning.fields == {"description": "Leadership Change"}


def test_a_pull_whose_end_never_came_is_lost_after_its_expiry_and_grace() -> None:
    pull = machine(expires=0.05)  # no heartbeat: only the expiry tells
    assert pull.settings.grace == pytest.approx(0.02)  # the floor
    pull.poll(0.0)
    assert pull.wake_at() == pytest.approx(0.07)
    assert pull.poll(0.069) == []
    [again] = pulls(pull.poll(0.07))
    assert again.reply == f"{INBOX}.2"


def test_a_pull_that_delivered_part_of_its_batch_is_over_at_its_expiry_without_its_408() -> None:
    """nats-server 2.9 may drop a part-filled pull at its expiry without a 408: the next pull
    goes a grace (a tenth of the expiry) after it, not three heartbeat periods after the last
    delivery."""
    pull = machine(batch=512, expires=0.5)  # heartbeat 0.125 s, grace 0.05 s
    assert pull.settings.grace == pytest.approx(0.05)
    pull.poll(0.0)
    for seq, now in enumerate((0.1, 0.2, 0.3, 0.4, 0.499), start=1):
        pull.arrived(delivery(seq))
        assert batches(pull.poll(now))
        pull.processed(now)
    assert pull.wake_at() == pytest.approx(0.55)  # not 0.499 + 0.375
    assert pull.poll(0.549) == []
    [again] = pulls(pull.poll(0.55))
    assert again.reply == f"{INBOX}.2"
    pull.arrived(status("408", "Request Timeout", pull=1))  # late after all: an earlier pull's end
    assert pull.poll(0.56) == [] and pull.remaining == 512


# -- heartbeats ----------------------------------------------------------------------------------


def test_a_heartbeat_does_not_end_the_pull() -> None:
    pull = machine()
    pull.poll(0.0)
    pull.arrived(status("100", "Idle Heartbeat"))
    assert pull.poll(0.1) == []
    assert pull.remaining == 4


def test_a_pull_without_heartbeats_for_three_periods_is_lost_long_before_its_expiry() -> None:
    pull = machine(expires=0.5)  # heartbeat 0.125 s
    pull.poll(0.0)
    assert pull.wake_at() == pytest.approx(0.375)
    assert pull.poll(0.37) == []
    assert pulls(pull.poll(0.375))


def test_heartbeats_keep_a_quiet_pull_alive_until_its_expiry() -> None:
    pull = machine(expires=0.5)
    pull.poll(0.0)
    for now in (0.125, 0.25, 0.375, 0.5):
        pull.arrived(status("100", "Idle Heartbeat"))
        assert pull.poll(now) == []
    pull.arrived(status("408", "Request Timeout"))
    assert pulls(pull.poll(0.51))


def test_a_heartbeat_of_an_earlier_pull_keeps_nothing_alive() -> None:
    pull = machine(expires=0.5)
    pull.poll(0.0)
    pull.arrived(status("404"))
    pull.poll(0.01)  # pull 2 from 0.01: lost at 0.385 without a sign of its own
    pull.arrived(status("100", "Idle Heartbeat", pull=1))
    pull.poll(0.3)
    assert pulls(pull.poll(0.385))


def test_a_long_batch_in_hand_does_not_make_the_pull_look_lost() -> None:
    pull = machine(batch=4, expires=5.0)  # heartbeat 1.25 s: lost after 3.75 s without a sign
    pull.poll(0.0)
    pull.arrived(delivery(1))
    assert batches(pull.poll(0.01))
    pull.processed(5.0)  # the commit took 5 s; the heartbeats wait behind it
    assert pull.poll(5.0) == []
    assert pull.wake_at() == pytest.approx(5.5)  # the pull's own expiry and grace (0.5 s) still count


# -- batching ------------------------------------------------------------------------------------


def test_a_full_batch_is_handed_over_at_once_with_the_next_pull_asked_for_first() -> None:
    pull = machine(batch=3)
    pull.poll(0.0)
    for seq in (1, 2, 3):
        pull.arrived(delivery(seq))
    actions = pull.poll(0.001)
    assert [type(a) for a in actions] == [SendPull, DeliverBatch]
    assert seqs(batches(actions)[0]) == [1, 2, 3]


def test_by_default_what_has_arrived_goes_at_once_and_what_arrives_meanwhile_makes_the_next_batch() -> None:
    pull = machine(batch=10)
    assert pull.settings.linger == 0.0 and pull.settings.max_wait == 0.0
    pull.poll(0.0)
    pull.arrived(delivery(1))
    [first] = batches(pull.poll(0.1))
    assert seqs(first) == [1]
    for seq in (2, 3, 4):  # while the first batch is in hand
        pull.arrived(delivery(seq))
    assert pull.poll(0.101) == []
    pull.processed(0.102)
    [second] = batches(pull.poll(0.102))
    assert seqs(second) == [2, 3, 4]


def test_a_trickle_waits_the_linger_then_goes() -> None:
    pull = machine(batch=10, linger=LINGER, max_wait=MAX_WAIT)
    pull.poll(0.0)
    pull.arrived(delivery(1))
    assert pull.poll(0.1) == []
    assert pull.wake_at() == pytest.approx(0.1 + LINGER)
    [batch] = batches(pull.poll(0.1 + LINGER))
    assert seqs(batch) == [1]


def test_a_steady_stream_is_held_no_longer_than_the_max_wait() -> None:
    pull = machine(batch=100, linger=LINGER, max_wait=MAX_WAIT)
    pull.poll(0.0)
    now, seq = 0.1, 1
    handed: list[DeliverBatch] = []
    while not handed:
        pull.arrived(delivery(seq))
        handed = batches(pull.poll(now))
        now += LINGER / 2
        seq += 1
    assert now - LINGER / 2 >= 0.1 + MAX_WAIT
    assert now - LINGER / 2 < 0.1 + MAX_WAIT + LINGER


def test_a_partial_batch_whose_pull_ended_goes_without_lingering_and_no_pull_is_asked_first() -> None:
    pull = machine(batch=10)
    pull.poll(0.0)
    pull.arrived(delivery(1))
    pull.arrived(status("408", "Request Timeout"))
    actions = pull.poll(0.01)
    assert [type(a) for a in actions] == [DeliverBatch]


def test_a_batch_cut_at_the_byte_limit_is_a_backlog_the_next_pull_goes_first() -> None:
    pull = machine(batch=10)
    pull.poll(0.0)
    pull.arrived(delivery(1))
    pull.arrived(status("409", "Message Size Exceeds MaxBytes"))
    actions = pull.poll(0.01)
    assert [type(a) for a in actions] == [SendPull, DeliverBatch]
    assert not warnings(actions)


def test_more_than_a_batch_waiting_is_handed_over_batch_by_batch() -> None:
    pull = machine(batch=2)
    pull.poll(0.0)
    for seq in range(1, 6):
        pull.arrived(delivery(seq))
    [first] = batches(pull.poll(0.01))
    assert pull.poll(0.02) == []  # one batch in hand at a time
    pull.processed(0.03)
    [second] = batches(pull.poll(0.03))
    assert (seqs(first), seqs(second)) == ([1, 2], [3, 4])
    assert pull.queued == 1


def test_a_delivery_without_jetstream_metadata_is_logged_and_skipped() -> None:
    pull = machine(batch=2)
    pull.poll(0.0)
    pull.arrived(Incoming("tradecache.in.T-1.order", "not-an-ack-subject", b"x", None))
    pull.arrived(delivery(1))
    pull.arrived(delivery(2))
    actions = pull.poll(0.01)
    assert [w.message for w in warnings(actions)] == ["delivery without JetStream metadata ignored"]
    assert seqs(batches(actions)[0]) == [1, 2]


def test_what_waits_on_the_inbox_is_bounded_in_count_and_drops_are_warned_once() -> None:
    pull = PullMachine(settings(batch=4), INBOX, min_arrived=0)  # 4 pulls of 4 plus 64 statuses: 80 messages
    pull.restart(0)
    pull.poll(0.0)
    for n in range(200):  # published to the inbox by someone else: no JetStream metadata
        pull.arrived(Incoming(f"{INBOX}.x", f"junk.{n}", b"junk", None))
    assert (pull.queued, pull.dropped) == (ARRIVED_PULLS * 4 + ARRIVED_STATUSES, 120)
    actions = pull.poll(0.01)
    warned = [w for w in warnings(actions) if w.message.startswith("pull inbox over its bound")]
    assert [w.fields["dropped"] for w in warned] == [120]
    # Those held are skipped with one warning for all of them, not one log line each.
    ignored = [w.fields for w in warnings(actions) if w.message == "delivery without JetStream metadata ignored"]
    assert ignored == [{"subject": f"{INBOX}.x", "count": 80}]
    assert not [w for w in warnings(pull.poll(0.02)) if w.message.startswith("pull inbox over its bound")]


def test_what_waits_on_the_inbox_is_bounded_in_bytes_and_room_comes_back_as_it_is_taken() -> None:
    pull = PullMachine(settings(batch=2, max_bytes=100), INBOX, min_arrived_bytes=0)  # 4 pulls' worth: 400 bytes
    pull.restart(0)
    pull.poll(0.0)

    def big(seq: int) -> Incoming:
        reply = f"$JS.ACK.S.C.1.{seq}.{seq}.{1_700_000_000_000_000_000 + seq}.0"
        return Incoming("tradecache.in.T-1.order", reply, b"x" * 150, None)

    for seq in (1, 2, 3):
        pull.arrived(big(seq))
    assert (pull.queued, pull.dropped) == (2, 1)  # 450 bytes would pass the bound
    [batch] = batches(pull.poll(0.01))
    assert seqs(batch) == [1, 2]
    pull.arrived(big(4))  # what was taken no longer counts
    pull.arrived(big(5))
    assert (pull.queued, pull.dropped) == (2, 1)
    pull.processed(0.02)
    later = pull.poll(0.03)
    assert [seqs(b) for b in batches(later)] == [[4, 5]]
    assert [w.message for w in warnings(later)] == ["consumer sequence gap"]  # 3 was dropped: read from the stream
    assert batches(later)[0].gap_before == 5


def test_a_delivery_dropped_between_two_that_arrived_makes_the_next_batch_read_the_stream_first() -> None:
    # Lingering, so that 4 joins the batch holding 1 and 2 (400 bytes waiting at most).
    pull = PullMachine(settings(batch=3, max_bytes=100, linger=LINGER, max_wait=MAX_WAIT), INBOX, min_arrived_bytes=0)

    def sized(seq: int, size: int) -> Incoming:
        reply = f"$JS.ACK.S.C.1.{seq}.{seq}.{1_700_000_000_000_000_000 + seq}.0"
        return Incoming("tradecache.in.T-1.order", reply, b"x" * size, None)

    pull.restart(0)
    pull.poll(0.0)
    pull.arrived(sized(1, 150))
    pull.arrived(sized(2, 200))
    pull.arrived(sized(3, 100))  # 450 bytes waiting would pass the bound: dropped
    assert pull.poll(0.001) == [Warn("pull inbox over its bound: messages dropped",
                                     {"dropped": 1, "waiting": 2, "waiting_bytes": 350})]  # fmt: skip
    pull.arrived(sized(4, 50))  # 1 and 2 were taken into the batch: room again
    [batch] = batches(pull.poll(0.0015))
    # Consumer sequences 1, 2, 4: no skip at the batch's start, yet 3 is missing inside it.
    assert seqs(batch) == [1, 2, 4]
    assert batch.gap_before == 4
    pull.processed(0.002)
    pull.arrived(sized(5, 10))
    pull.arrived(sized(6, 10))
    pull.arrived(sized(7, 10))
    [after] = batches(pull.poll(0.003))
    assert after.gap_before is None  # read once: the flag does not outlive the batch it marked


def test_a_batch_says_how_many_redeliveries_it_holds_and_what_is_pending() -> None:
    pull = machine(batch=3)
    pull.poll(0.0)
    pull.arrived(delivery(1, delivered=2))
    pull.arrived(delivery(2, delivered=3))
    pull.arrived(delivery(3, pending=42))
    [batch] = batches(pull.poll(0.01))
    assert (batch.redelivered, batch.pending) == (2, 42)
    assert [d.delivered for d in batch.deliveries] == [2, 3, 1]


# -- gaps ----------------------------------------------------------------------------------------


def test_consecutive_consumer_sequences_make_no_gap() -> None:
    pull = machine(batch=2, last_cseq=10)
    pull.poll(0.0)
    pull.arrived(delivery(100, 11))
    pull.arrived(delivery(105, 12))
    [batch] = batches(pull.poll(0.01))
    assert batch.gap_before is None
    assert pull.last_cseq == 12


def test_a_skipped_consumer_sequence_asks_for_the_stream_before_the_batch() -> None:
    pull = machine(batch=2, last_cseq=10)
    pull.poll(0.0)
    pull.arrived(delivery(107, 13))  # 11 and 12 were lost in flight
    pull.arrived(delivery(109, 14))
    actions = pull.poll(0.01)
    [batch] = batches(actions)
    assert batch.gap_before == 109  # the stream up to the newest is read; 107 is then skipped
    [warning] = warnings(actions)
    assert warning.message == "consumer sequence gap"
    assert warning.fields == {"after": 10, "next": 13}


def test_a_gap_beside_a_redelivery_is_read_up_to_the_newest_message_of_the_batch() -> None:
    # Lost in flight: stream 110 (consumer 11). The batch holds a redelivery of stream 95 and
    # stream 112: reading only up to 95 would leave 110 unread, and acking 112 would ack it.
    pull = machine(batch=2, last_cseq=10)
    pull.poll(0.0)
    pull.arrived(delivery(95, 12, delivered=2))
    pull.arrived(delivery(112, 13))
    [batch] = batches(pull.poll(0.01))
    assert batch.gap_before == 112


def test_after_a_restart_with_no_known_sequence_nothing_is_a_gap() -> None:
    pull = machine(batch=1, last_cseq=None)
    pull.poll(0.0)
    pull.arrived(delivery(50, 900))
    [batch] = batches(pull.poll(0.01))
    assert batch.gap_before is None


def test_a_re_created_consumer_counts_from_one_again() -> None:
    pull = machine(batch=1, last_cseq=500)
    pull.restart(0)
    pull.poll(0.0)
    pull.arrived(delivery(77, 1))
    [batch] = batches(pull.poll(0.01))
    assert batch.gap_before is None


def test_a_restart_forgets_what_arrived_and_what_was_outstanding() -> None:
    pull = machine(batch=4)
    pull.poll(0.0)
    pull.arrived(delivery(1))
    pull.restart(None)
    assert (pull.queued, pull.remaining) == (0, 0)
    [again] = pulls(pull.poll(0.01))
    assert again.reply == f"{INBOX}.2"


# -- stopping ------------------------------------------------------------------------------------


def test_stopping_asks_for_no_new_pull_and_drains_the_outstanding_one() -> None:
    pull = machine(batch=10)
    pull.poll(0.0)
    pull.stop()
    assert not pull.finished  # pull 1 is still outstanding
    pull.arrived(delivery(1))
    pull.arrived(status("408", "Request Timeout"))
    actions = pull.poll(0.01)
    assert [type(a) for a in actions] == [DeliverBatch]
    assert not pull.finished  # the batch is in hand
    pull.processed(0.02)
    assert pull.finished
    assert pull.poll(0.03) == []
    assert pull.wake_at() is None


def test_stopping_with_a_full_batch_asks_for_no_next_pull() -> None:
    pull = machine(batch=2)
    pull.poll(0.0)
    pull.arrived(delivery(1))
    pull.arrived(delivery(2))
    pull.stop()
    assert [type(a) for a in pull.poll(0.01)] == [DeliverBatch]


def test_stopping_before_any_pull_is_finished_at_once() -> None:
    pull = machine()
    pull.stop()
    assert pull.finished
    assert pull.poll(0.0) == []


# -- work ahead ----------------------------------------------------------------------------------


def test_peek_shows_the_waiting_deliveries_as_they_will_be_handed_over_and_takes_nothing() -> None:
    pull = machine(batch=2)
    pull.poll(0.0)
    pull.arrived(delivery(1))
    assert batches(pull.poll(0.01))
    for message in (delivery(2), status("100", "Idle Heartbeat"), delivery(3), delivery(4)):
        pull.arrived(message)
    peeked = pull.peek(2)
    assert [d.stream_seq for d in peeked] == [2, 3]
    assert pull.queued == 4
    pull.processed(0.02)
    [second] = batches(pull.poll(0.02))
    assert second.deliveries == peeked


def test_settled_shows_a_full_next_batch_exactly_as_it_will_be_handed_over() -> None:
    pull = machine(batch=3)
    pull.poll(0.0)
    for seq in (1, 2, 3):
        pull.arrived(delivery(seq))
    [first] = batches(pull.poll(0.01))  # full: handed over, and the next pull asked for
    assert seqs(first) == [1, 2, 3]
    pull.arrived(delivery(4))
    pull.arrived(status("100", "Idle Heartbeat", pull=2))
    pull.arrived(delivery(5))
    assert pull.settled() is None  # two of three, and the pull still running: not decided yet
    pull.arrived(delivery(6))
    pull.arrived(delivery(7))
    settled = pull.settled()
    assert settled is not None and [d.stream_seq for d in settled] == [4, 5, 6]
    assert pull.queued == 5  # nothing taken
    pull.processed(0.02)
    [second] = batches(pull.poll(0.02))
    assert second.deliveries == settled


def test_settled_shows_a_short_batch_once_its_pull_is_over_and_nothing_before() -> None:
    pull = machine(batch=4)
    pull.poll(0.0)
    for seq in (1, 2, 3, 4):
        pull.arrived(delivery(seq))
    batches(pull.poll(0.01))
    pull.arrived(status("408", "Request Timeout", pull=1))  # an earlier pull's end: not this one's
    pull.arrived(delivery(5))
    assert pull.settled() is None
    pull.arrived(status("404", "No Messages", pull=2))
    settled = pull.settled()
    assert settled is not None and [d.stream_seq for d in settled] == [5]
    pull.processed(0.02)
    [second] = batches(pull.poll(0.02))
    assert second.deliveries == settled


def test_settled_is_none_when_the_pull_ended_with_nothing() -> None:
    pull = machine(batch=2)
    pull.poll(0.0)
    pull.arrived(delivery(1))
    pull.arrived(delivery(2))
    batches(pull.poll(0.01))
    pull.arrived(status("404", "No Messages", pull=2))
    assert pull.settled() is None
