"""Intake: one JetStream delivery -> a decoded message, or the reason it goes to dead letters.

Pure: given the subject, reply subject, payload and headers, it checks the size, the subject,
the msgpack (within the decode limits, `serialization/limits.py`) and every field, and that the
message is the kind its subject names. The ledger then applies what passes (`ingest/batch.py`).
The common messages (order events, SubmitOrder, AccountState) are first tried straight from their
bytes (`msgpack.decode_common`, msgspec Structs checked in C) when the payload is too small to
break a limit; whatever that refuses takes the map path, so every refusal is worded there.

A refusal keeps the delivery (its bytes go to the dead-letter subject) and the error, never
what was decoded: the error's traceback, which would hold the decoded objects alive until the
batch ends, is dropped (`released`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgpack

from tradecache.errors import EventRejected, PayloadError, RejectReason
from tradecache.ingest.compiled import frames
from tradecache.model.messages import Kind, Message, kind_of, type_name_of
from tradecache.serialization.limits import DEFAULT_LIMITS, DecodeLimits, check_fields
from tradecache.serialization.msgpack import (
    KNOWN_KEYS,
    MsgPackSerializer,
    decode_common,
    timestamps_are_strings,
    unpack,
)
from tradecache.serialization.structs import STRUCT_DEPTH
from tradecache.wire import Subjects

# Reads an ack subject of plain digits in C (None for anything else, which `_ack_metadata` decides).
_ack_numbers: Callable[[str], tuple[int, int, int, int, int] | None] | None = (
    None if frames is None else frames.ack_numbers
)


@dataclass(slots=True)
class Delivery:
    """What JetStream handed over, with the metadata its reply subject carries.

    Not changed once built, but not declared frozen: a frozen dataclass sets each field through
    `object.__setattr__`, which made building one (once per message) 5x dearer (860 -> 170 ns)."""

    subject: str
    data: bytes
    headers: Mapping[str, str] | None  # a LazyHeaders as the inbox gives them (`ingest/inbox.py`)
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int
    pending: int
    reply: str
    delivered: int = 1  # how many times JetStream has handed it over (more than 1: a redelivery)


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
    stream_seq, consumer_seq, timestamp, pending, _ = ack_metadata(reply)
    return stream_seq, consumer_seq, timestamp, pending


def ack_metadata(reply: str) -> tuple[int, int, int, int, int]:
    """`parse_ack_subject` plus how many times the message was delivered."""
    if _ack_numbers is not None:  # plain digits read in C; anything else decided below
        numbers = _ack_numbers(reply)
        if numbers is not None:
            return numbers
    return _ack_metadata(reply)


def _ack_metadata(reply: str) -> tuple[int, int, int, int, int]:
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[6]), int(tokens[7]), int(tokens[8]), int(tokens[4])
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]
    return int(tokens[7]), int(tokens[8]), int(tokens[9]), int(tokens[10]), int(tokens[6])


def released(error: EventRejected) -> EventRejected:
    """`error` without its traceback and chained errors, whose frames hold the decoded payload."""
    error.__traceback__ = None
    error.__context__ = None
    error.__cause__ = None
    return error


def _peek_type(data: bytes) -> str:
    """The payload's `type` if it can be read at all (for metrics and dead-letter records).

    Reads only the start of the map: the first key and its value, then stops (a `type` further
    in is not looked for), so a payload refused for its size is never unpacked here.
    """
    size = len(data) or 1  # `skip` walks containers without building them
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=size, max_str_len=256, max_bin_len=size,
                                max_array_len=size, max_map_len=size, max_ext_len=size)  # fmt: skip
    try:
        unpacker.feed(data)
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "type":
                found = unpacker.unpack()
                return found if isinstance(found, str) and found.isidentifier() else "unknown"
            unpacker.skip()
    except Exception:  # any undecodable payload simply has no readable type
        return "unknown"
    return "unknown"


class Intake:
    """Checks deliveries for one trader."""

    def __init__(
        self,
        subjects: Subjects,
        serializer: MsgPackSerializer,
        max_payload_bytes: int,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.subjects = subjects
        self.serializer = serializer
        self.max_payload_bytes = max_payload_bytes
        self.limits = limits
        # Payloads this small cannot break a decode limit or a field cap (`limits.py`: strings
        # and elements take a byte or more each, and the Structs' nesting is within max_depth),
        # so a message the Structs take is one the map path takes, unchanged.
        self.struct_size = min(limits.plain_size, limits.below_every_cap) if limits.max_depth >= STRUCT_DEPTH else -1
        # Each subject of ours and its kind: what `subjects.kind_of` says of every subject, looked
        # up whole (kinds have no dot, so a subject is one of these exactly when kind_of names it).
        self._kinds = {subjects.inbound_for(kind): kind for kind in Kind}

    def check(self, delivery: Delivery) -> Accepted | Refused:
        kind = self._kinds.get(delivery.subject)
        size = len(delivery.data)
        if size > self.max_payload_bytes:
            problem = f"payload of {size} bytes exceeds the limit of {self.max_payload_bytes}"
            return Refused(delivery, _token(kind, delivery), "unknown", EventRejected(RejectReason.OVERSIZE, problem))
        if kind is None:
            problem = f"subject {delivery.subject!r} is not {self.subjects.inbound} with a known kind"
            error = EventRejected(RejectReason.WRONG_SUBJECT, problem)
            return Refused(delivery, _token(kind, delivery), "unknown", error)
        if size <= self.struct_size:  # the common messages, straight from their bytes
            common = decode_common(delivery.data)
            if common is not None and _kind_of(common[0]) is kind:
                return Accepted(delivery, kind, common[0], common[1])
        kind_token = kind.value
        # Anything else, or refused above: the map path, which says what is wrong.
        try:
            data = unpack(delivery.data, self.limits)
            if len(delivery.data) > self.limits.below_every_cap:
                type_name = data.get("type")
                known = KNOWN_KEYS.get(type_name) if isinstance(type_name, str) else None
                check_fields(data, len(delivery.data), known, self.limits)
            message = self.serializer.from_map(data)
        except PayloadError as exc:
            return Refused(delivery, kind_token, self._type_of(delivery.data, exc), released(exc))
        found = kind_of(message)
        if found != kind:
            problem = f"a {type_name_of(message)} is a '{found.value}' message, published on '{delivery.subject}'"
            error = EventRejected(RejectReason.WRONG_SUBJECT, problem)
            return Refused(delivery, kind_token, type_name_of(message), error)
        return Accepted(delivery, kind, message, timestamps_are_strings(data))

    @staticmethod
    def _type_of(data: bytes, error: PayloadError) -> str:
        return "unknown" if error.reason == RejectReason.LIMIT_EXCEEDED else _peek_type(data)


def _token(kind: Kind | None, delivery: Delivery) -> str:
    """The subject's kind token, for a refusal."""
    return kind.value if kind is not None else delivery.subject.rpartition(".")[2] or "unknown"


# `kind_of` by the message's class, which alone decides it: the model's classes, a few dozen.
_KIND_BY_CLASS: dict[type, Kind] = {}


def _kind_of(message: Message) -> Kind:
    found = _KIND_BY_CLASS.get(message.__class__)
    if found is None:
        found = _KIND_BY_CLASS[message.__class__] = kind_of(message)
    return found


__all__ = ["Accepted", "Delivery", "Intake", "Refused", "ack_metadata", "parse_ack_subject", "released"]
