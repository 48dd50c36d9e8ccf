"""The daemon's pure core: subjects, ack-subject metadata, intake checks and batch application."""

from __future__ import annotations

import msgpack
import pytest

from tests.unit.factories import SERIALIZER, TRADER_ID, OrderEvents
from tradecache.cache.keys import Keys
from tradecache.ingest.batch import apply_batch
from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused, parse_ack_subject
from tradecache.model.enums import OrderStatus
from tradecache.model.events import OrderSubmitted
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection, Ledger, Outcome
from tradecache.model.messages import Kind, Message
from tradecache.wire import Subjects

SUBJECTS = Subjects("tradecache", TRADER_ID)
INTAKE = Intake(SUBJECTS, SERIALIZER, max_payload_bytes=2048)


def delivery(subject: str, data: bytes, seq: int = 1) -> Delivery:
    reply = f"$JS.ACK.TRADECACHE.c.1.{seq}.{seq}.1764112094914872368.0"
    return Delivery(subject, data, None, seq, seq, 1764112094914872368, 0, reply)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("$JS.ACK.TRADECACHE.tc-T-1.1.42.7.1764112094914872368.3", (42, 7, 1764112094914872368, 3)),
        ("$JS.ACK.hub.ACCHASH.TRADECACHE.tc-T-1.2.42.7.1764112094914872368.3.tok", (42, 7, 1764112094914872368, 3)),
    ],
)
def test_ack_subjects_of_both_forms_give_sequence_timestamp_and_pending(
    reply: str, expected: tuple[int, int, int, int]
) -> None:
    assert parse_ack_subject(reply) == expected


def test_a_reply_that_is_not_a_jetstream_ack_subject_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        parse_ack_subject("_INBOX.abc")


def test_subjects_keep_the_three_roots_apart_and_name_the_kind() -> None:
    assert SUBJECTS.inbound == f"tradecache.in.{TRADER_ID}.>"
    assert SUBJECTS.dead == f"tradecache.dead.{TRADER_ID}"
    assert SUBJECTS.load("order") == f"tradecache.load.{TRADER_ID}.order"
    assert SUBJECTS.kind_of(f"tradecache.in.{TRADER_ID}.order") == Kind.ORDER
    assert SUBJECTS.kind_of(f"tradecache.in.{TRADER_ID}.gossip") is None
    assert SUBJECTS.kind_of("tradecache.in.OTHER-1.order") is None


def test_a_valid_message_on_its_subject_is_accepted_and_canonical() -> None:
    init = OrderEvents("O-1").initialized()
    item = INTAKE.check(delivery(SUBJECTS.inbound_for(Kind.ORDER), SERIALIZER.serialize(init)))
    assert isinstance(item, Accepted)
    assert item.kind == Kind.ORDER and item.canonical and item.type_name == "OrderInitialized"


def test_integer_timestamps_are_accepted_but_not_canonical() -> None:
    init = OrderEvents("O-1").initialized()
    data = SERIALIZER.to_map(init)
    data["ts_event"] = int(data["ts_event"])
    item = INTAKE.check(delivery(SUBJECTS.inbound_for(Kind.ORDER), msgpack.packb(data)))
    assert isinstance(item, Accepted) and not item.canonical


@pytest.mark.parametrize(
    ("subject_kind", "payload", "reason", "type_name"),
    [
        ("order", b"\xc1", "malformed", "unknown"),
        ("order", msgpack.packb({"type": "Nope"}), "unknown_type", "Nope"),
        ("order", msgpack.packb({"type": "OrderDenied", "reason": "x"}), "malformed", "OrderDenied"),
        ("account", None, "wrong_subject", "OrderInitialized"),
        ("gossip", None, "wrong_subject", "unknown"),
        ("order", b"\x80" * 3000, "oversize", "unknown"),
    ],
)
def test_bad_deliveries_are_refused_with_the_spec_reason(
    subject_kind: str, payload: bytes | None, reason: str, type_name: str
) -> None:
    data = payload if payload is not None else SERIALIZER.serialize(OrderEvents("O-1").initialized())
    item = INTAKE.check(delivery(f"tradecache.in.{TRADER_ID}.{subject_kind}", data))
    assert isinstance(item, Refused)
    assert item.error.reason.value == reason
    assert item.type_name == type_name


@pytest.mark.parametrize(
    "subject",
    [
        *(SUBJECTS.inbound_for(kind) for kind in Kind),
        f"tradecache.in.{TRADER_ID}.gossip",
        f"tradecache.in.{TRADER_ID}.ORDER",
        f"tradecache.in.{TRADER_ID}.order.x",
        f"tradecache.in.{TRADER_ID}.",
        f"tradecache.in.{TRADER_ID}",
        f"tradecache.in.{TRADER_ID}x.order",
        f"xtradecache.in.{TRADER_ID}.order",
        "tradecache.in.OTHER-1.order",
        "order",
        "",
    ],
)
def test_intake_reads_a_subject_as_subjects_kind_of_does(subject: str) -> None:
    """Intake looks each subject up whole: the same kind as `Subjects.kind_of`, and the same token
    in a refusal (the kind's, else the subject's last token, else "unknown")."""
    kind = SUBJECTS.kind_of(subject)
    token = kind.value if kind is not None else subject.rpartition(".")[2] or "unknown"
    init = SERIALIZER.serialize(OrderEvents("O-1").initialized())
    item = INTAKE.check(delivery(subject, init))
    if kind == Kind.ORDER:
        assert isinstance(item, Accepted) and item.kind is Kind.ORDER
    else:
        assert isinstance(item, Refused) and item.error.reason.value == "wrong_subject" and item.kind == token
    oversize = INTAKE.check(delivery(subject, b"\x80" * 3000))
    assert isinstance(oversize, Refused) and oversize.error.reason.value == "oversize" and oversize.kind == token


def test_a_batch_skips_what_the_checkpoint_covers_and_checkpoints_its_last_sequence() -> None:
    events = OrderEvents("O-1")
    messages = [events.initialized(), events.submitted(), events.accepted()]
    items = [
        INTAKE.check(delivery(SUBJECTS.inbound_for(Kind.ORDER), SERIALIZER.serialize(m), seq))
        for seq, m in enumerate(messages, start=10)
    ]
    ledger, keys = Ledger(TraderId(TRADER_ID)), Keys(TRADER_ID)
    first = apply_batch(ledger, items[:2], checkpoint=0, keys=keys, encode=SERIALIZER.serialize)
    assert first.last_seq == 11 and first.skipped == 0 and len(first.applied) == 2
    # Redelivered after a crash: 10 and 11 are at or below the checkpoint, only 12 is applied.
    again = apply_batch(ledger, items, checkpoint=11, keys=keys, encode=SERIALIZER.serialize)
    assert again.skipped == 2 and [a.item.delivery.stream_seq for a in again.applied] == [12]
    assert again.call.args[-1] == 12  # the checkpoint operation closes the call
    assert again.call.keys[-1] == keys.checkpoint()


def test_a_batch_stores_canonical_bytes_as_received_and_refusals_go_aside() -> None:
    events = OrderEvents("O-1")
    init = SERIALIZER.serialize(events.initialized())
    orphan = SERIALIZER.serialize(OrderEvents("O-2").submitted())
    items = [
        INTAKE.check(delivery(SUBJECTS.inbound_for(Kind.ORDER), init, 1)),
        INTAKE.check(delivery(SUBJECTS.inbound_for(Kind.ORDER), orphan, 2)),
    ]
    result = apply_batch(Ledger(TraderId(TRADER_ID)), items, checkpoint=0, keys=Keys(TRADER_ID),
                         encode=SERIALIZER.serialize)  # fmt: skip
    assert [r.error.reason.value for r in result.refused] == ["unknown_order"]
    assert init in result.call.args
    assert result.call.operations[0] is not None and result.call.operations[0].collection == Collection.ORDERS


class BrokenOnSecondSubmit(Ledger):
    """A ledger with a bug: it raises (not a refusal) on the submit of O-2."""

    def apply(self, message: Message) -> Outcome:
        if isinstance(message, OrderSubmitted) and message.client_order_id.value == "O-2":
            self.orders["O-2"].status = OrderStatus.SUBMITTED  # half-changed, then fails
            raise ValueError("a bug")
        return super().apply(message)


def test_an_unexpected_error_dead_letters_that_message_and_leaves_the_rest_for_after_the_commit() -> None:
    one, two = OrderEvents("O-1"), OrderEvents("O-2")
    messages = [one.initialized(), two.initialized(), two.submitted(), one.submitted()]
    items = [
        INTAKE.check(delivery(SUBJECTS.inbound_for(Kind.ORDER), SERIALIZER.serialize(m), seq))
        for seq, m in enumerate(messages, start=1)
    ]
    ledger = BrokenOnSecondSubmit(TraderId(TRADER_ID))
    result = apply_batch(ledger, items, checkpoint=0, keys=Keys(TRADER_ID), encode=SERIALIZER.serialize)
    assert [a.item.delivery.stream_seq for a in result.applied] == [1, 2]
    (refused,) = result.refused
    assert refused.delivery.stream_seq == 3 and refused.error.reason.value == "invalid_field"
    assert "internal error while applying it: ValueError: a bug" in str(refused.error)
    assert result.last_seq == 3 and result.call.args[-1] == 3  # checkpointed up to the failed one
    assert [item.delivery.stream_seq for item in result.rest] == [4]
    assert "O-2" not in ledger.orders  # forgotten: read back from Redis before it is used again
    after = apply_batch(ledger, result.rest, checkpoint=3, keys=Keys(TRADER_ID), encode=SERIALIZER.serialize)
    assert [a.item.delivery.stream_seq for a in after.applied] == [4] and not after.rest
