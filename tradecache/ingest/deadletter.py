"""Dead letters: a refused delivery is published, with its reason, to `<prefix>.dead.<trader_id>`.

The publish is acknowledged by the dead-letter stream before the delivery itself is acked, so
nothing refused is ever lost. `Nats-Msg-Id` is derived from the stream sequence, so publishing
the same dead letter again after a crash is dropped by JetStream's duplicate window.

A dead letter must never block ingest, whatever the refused message carried, so it is built to
be publishable (`build_letter`, pure):
- the producer's headers are kept, except names NATS cannot carry (not an RFC 7230 token, like
  `a/b`: dropped and listed, percent-encoded, in `Tradecache-Dropped-Headers`) and names
  JetStream acts on when publishing (`Nats-Expected-Stream`, `Nats-Rollup`, `Nats-TTL`,
  `Nats-Msg-Id`...: renamed `Tradecache-Original-<rest>`, so they cannot make the dead-letter
  stream refuse or purge anything);
- sizes are checked before publishing: a letter larger than the server's max_payload (the body
  plus the headers) would cost the connection, so it is sent reduced instead: the producer's
  headers dropped, the body cut to fit, and `Tradecache-Original-Size`, `Tradecache-Digest`
  (sha256 of the whole body) and `Tradecache-Stream` / `Tradecache-Stream-Seq` say where the
  original is still read in full (the inbound stream, at that sequence).
If the dead-letter stream refuses a letter for what it carries (its own `max_msg_size`, a
header), the next smaller form is tried: reduced, then headers only. If even that is refused,
the refusal is logged and counted and ingest goes on: the message is still in its stream.
Transient trouble (no answer, no stream, reconnecting) is raised as BusUnavailable: the ingest
loop retries it while /readyz says 503.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from tradecache.bus import BusFault, classify_nats, describe_nats
from tradecache.errors import BusUnavailable
from tradecache.ingest.acked_publish import AckedPublisher
from tradecache.ingest.intake import Refused
from tradecache.wire import Subjects

MAX_ERROR_HEADER: Final = 1024  # header values are single lines; long messages are cut
# What NATS clients accept as a header name (nats-py refuses anything else with BadHeaderError).
HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers JetStream reads on a publish; the producer's are renamed so they only inform.
JETSTREAM_PREFIX: Final = "nats-"
ORIGINAL_PREFIX: Final = "Tradecache-Original-"
# Room kept for the headers nats-py adds and rounding (bytes).
SLACK: Final = 64


class Form(IntEnum):
    """How much of the original a dead letter carries, from all of it to none of the body."""

    FULL = 0  # body and the producer's (sanitized) headers
    REDUCED = 1  # our headers only; the body cut to fit the server's max_payload
    HEADERS_ONLY = 2  # our headers only, no body


@dataclass(frozen=True, slots=True)
class Letter:
    headers: dict[str, str]
    body: bytes
    form: Form


def _one_line(text: str, limit: int = MAX_ERROR_HEADER) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def header_bytes(headers: dict[str, str]) -> int:
    """The size of the header block as NATS counts it (`NATS/1.0`, `name: value` lines, blank line)."""
    lines = sum(len(name.encode()) + len(value.encode()) + 4 for name, value in headers.items())  # ": ", CRLF
    return len(b"NATS/1.0\r\n\r\n") + lines


def sanitized(original: Mapping[str, str] | None) -> tuple[dict[str, str], list[str]]:
    """The producer's headers safe to publish again, and the names dropped (percent-encoded)."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for raw_name, raw_value in (original or {}).items():
        name = str(raw_name).strip()
        if not name:
            continue
        if not HEADER_NAME.fullmatch(name):
            dropped.append(urllib.parse.quote(name, safe=""))
            continue
        if name.lower().startswith(JETSTREAM_PREFIX):
            name = ORIGINAL_PREFIX + name[len(JETSTREAM_PREFIX) :]
        kept[name] = str(raw_value).replace("\r", " ").replace("\n", " ").strip()
    return kept, dropped


def build_letter(
    refused: Refused, stream: str, max_payload: int, form: Form = Form.FULL, dead_stream: str | None = None
) -> Letter:
    """The dead letter of `refused` in `form`, or a smaller form when it would not fit `max_payload`.

    `dead_stream`: the stream it is published to (JetStream checks it: `Nats-Expected-Stream`).
    """
    delivery = refused.delivery
    ours = {
        "Tradecache-Reason": refused.error.reason.value,
        "Tradecache-Error": _one_line(str(refused.error)),
        "Tradecache-Subject": _one_line(delivery.subject, 512),
        "Tradecache-Stream": stream,
        "Tradecache-Stream-Seq": str(delivery.stream_seq),
        "Nats-Msg-Id": f"tradecache-dead-{stream}-{delivery.stream_seq}",
    }
    if dead_stream is not None:
        ours["Nats-Expected-Stream"] = dead_stream
    return fitted_letter(ours, delivery.data, delivery.headers, max_payload, form)


def fitted_letter(
    ours: dict[str, str], body: bytes, original_headers: Mapping[str, str] | None, max_payload: int, form: Form
) -> Letter:
    """A letter with our headers `ours` carrying `body` (and the producer's `original_headers`) in
    `form`, or in a smaller form when it would not fit `max_payload`."""
    if form == Form.FULL:
        kept, dropped = sanitized(original_headers)
        headers = {**kept, **ours}
        if dropped:
            headers["Tradecache-Dropped-Headers"] = _one_line(",".join(dropped))
        if header_bytes(headers) + len(body) + SLACK <= max_payload:
            return Letter(headers, body, Form.FULL)
        form = Form.REDUCED
    headers = {
        **ours,
        "Tradecache-Original-Size": str(len(body)),
        "Tradecache-Digest": "sha256=" + hashlib.sha256(body).hexdigest(),
    }
    if original_headers:
        headers["Tradecache-Dropped-Headers"] = "all (the letter was reduced to fit)"
    size = len(body)
    headers["Tradecache-Truncated"] = f"the first {size} of {size} bytes"  # the widest it can be
    room = max(0, max_payload - header_bytes(headers) - SLACK)
    body_bytes = min(room, size) if form == Form.REDUCED else 0
    headers["Tradecache-Truncated"] = f"the first {body_bytes} of {size} bytes"
    if body_bytes == size:
        del headers["Tradecache-Truncated"]
    return Letter(headers, body[:body_bytes], Form.REDUCED if body_bytes else Form.HEADERS_ONLY)


async def send_letter(
    publisher: AckedPublisher,
    subject: str,
    build: Callable[[Form], Letter],
    log: logging.Logger,
    context: dict[str, object],
) -> Form | None:
    """Publish the letter `build` makes, in a smaller form each time the server refuses it for
    what it carries; the form sent, or None when every form was refused (logged, with `context`).

    Raises BusUnavailable for transient trouble (to be retried).
    """
    form = Form.FULL
    while True:
        letter = build(form)
        try:
            await publisher.publish(subject, letter.body, letter.headers)
        except Exception as exc:  # classified just below; nats-py raises many unrelated types
            fault = classify_nats(exc)
            if fault == BusFault.UNAVAILABLE:
                raise BusUnavailable("publish dead letter", describe_nats(exc)) from exc
            if fault != BusFault.REFUSED:
                raise
            log.warning(
                "dead letter refused; sending a smaller form",
                extra={**context, "form": letter.form.name, "error": describe_nats(exc)},
            )
            if letter.form == Form.HEADERS_ONLY:
                return None
            form = Form(letter.form + 1)
            continue
        return letter.form


class DeadLetters:
    """Publishes refused deliveries to the dead-letter subject and waits for the stream's ack
    (through `AckedPublisher`: what `js.publish` does, with less CPU per letter)."""

    def __init__(
        self,
        publisher: AckedPublisher,
        subjects: Subjects,
        source_stream: str,
        dead_stream: str,
        max_payload: Callable[[], int],
        log: logging.Logger | None = None,
    ) -> None:
        self.publisher = publisher
        self.max_payload = max_payload  # the server's (its INFO), read at each letter: a reconnect may change it
        self.subjects = subjects
        self.source_stream = source_stream
        self.dead_stream = dead_stream
        self.log = log or logging.getLogger("tradecache")
        self.reduced = 0  # letters sent in a smaller form than FULL
        self.failed = 0  # letters refused in every form (the message stays in its stream)

    async def publish(self, refused: Refused) -> Form | None:
        """Publish `refused`'s letter; the form sent, or None when every form was refused.

        Raises BusUnavailable for transient trouble (to be retried).
        """
        context: dict[str, object] = {"stream_seq": refused.delivery.stream_seq}
        form = await send_letter(
            self.publisher,
            self.subjects.dead,
            lambda form: build_letter(refused, self.source_stream, self.max_payload(), form, self.dead_stream),
            self.log,
            context,
        )
        if form is None:
            self.failed += 1
            self.log.error(
                "dead letter refused in every form; the message stays in its stream",
                extra={"stream": self.source_stream, "stream_seq": refused.delivery.stream_seq,
                       "reason": refused.error.reason.value},
            )  # fmt: skip
        elif form != Form.FULL:
            self.reduced += 1
        return form


__all__ = ["DeadLetters", "Form", "Letter", "build_letter", "fitted_letter", "header_bytes", "sanitized", "send_letter"]
