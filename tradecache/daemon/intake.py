"""Intake: one JetStream delivery -> a decoded message, or the reason it goes to dead letters.

Pure: given the subject, reply subject, payload and headers, it checks the size, the subject,
the msgpack and every field, and that the message is the kind its subject names. The ledger
then applies what passes (`daemon/batch.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from tradecache.daemon.subjects import Subjects
from tradecache.errors import EventRejected, PayloadError, RejectReason
from tradecache.model.messages import Kind, Message, kind_of, type_name_of
from tradecache.serialization.msgpack import MsgPackSerializer, unpack


@dataclass(frozen=True, slots=True)
class Delivery:
    """What JetStream handed over, with the metadata its reply subject carries."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int
    pending: int
    reply: str


@dataclass(slots=True)
class Accepted:
    delivery: Delivery
    kind: Kind
    message: Message
    # True when the payload is already what would be stored (timestamps as strings), so the
    # received bytes are stored as they are.
    canonical: bool

    @property
    def type_name(self) -> str:
        return type_name_of(self.message)


@dataclass(slots=True)
class Refused:
    delivery: Delivery
    kind: str  # the subject's kind token, or "unknown"
    type_name: str  # the payload's type when readable, else "unknown"
    error: EventRejected


def parse_ack_subject(reply: str) -> tuple[int, int, int, int]:
    """(stream seq, consumer seq, timestamp ns, pending) from a JetStream ack subject (v1 or v2)."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[6]), int(tokens[7]), int(tokens[8])
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]
    return int(tokens[7]), int(tokens[8]), int(tokens[9]), int(tokens[10])


def _timestamps_are_strings(data: dict[str, object]) -> bool:
    return not any(key.startswith("ts_") and isinstance(value, int) for key, value in data.items())


def _peek_type(data: bytes) -> str:
    """The payload's `type` if it can be read at all (for metrics and dead-letter records)."""
    try:
        found = msgpack.unpackb(data, raw=False).get("type")
    except Exception:  # any undecodable payload simply has no readable type
        return "unknown"
    return found if isinstance(found, str) and found.isidentifier() else "unknown"


class Intake:
    """Checks deliveries for one trader."""

    def __init__(self, subjects: Subjects, serializer: MsgPackSerializer, max_payload_bytes: int) -> None:
        self.subjects = subjects
        self.serializer = serializer
        self.max_payload_bytes = max_payload_bytes

    def check(self, delivery: Delivery) -> Accepted | Refused:
        kind = self.subjects.kind_of(delivery.subject)
        kind_token = kind.value if kind is not None else delivery.subject.rpartition(".")[2] or "unknown"
        if len(delivery.data) > self.max_payload_bytes:
            problem = f"payload of {len(delivery.data)} bytes exceeds the limit of {self.max_payload_bytes}"
            return Refused(delivery, kind_token, "unknown", EventRejected(RejectReason.OVERSIZE, problem))
        if kind is None:
            problem = f"subject {delivery.subject!r} is not {self.subjects.inbound} with a known kind"
            return Refused(delivery, kind_token, "unknown", EventRejected(RejectReason.WRONG_SUBJECT, problem))
        try:
            data = unpack(delivery.data)
            message = self.serializer.from_map(data)
        except PayloadError as exc:
            return Refused(delivery, kind_token, _peek_type(delivery.data), exc)
        found = kind_of(message)
        if found != kind:
            problem = f"a {type_name_of(message)} is a '{found.value}' message, published on '{delivery.subject}'"
            error = EventRejected(RejectReason.WRONG_SUBJECT, problem)
            return Refused(delivery, kind_token, type_name_of(message), error)
        return Accepted(delivery, kind, message, _timestamps_are_strings(data))


__all__ = ["Accepted", "Delivery", "Intake", "Refused", "parse_ack_subject"]
