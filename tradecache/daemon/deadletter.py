"""Dead letters: a refused delivery is published, with its reason, to `<prefix>.dead.<trader_id>`.

The publish is acknowledged by the dead-letter stream before the delivery itself is acked, so
nothing refused is ever lost. `Nats-Msg-Id` is derived from the stream sequence, so publishing
the same dead letter again after a crash is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

from typing import Any

from tradecache.daemon.intake import Refused
from tradecache.daemon.subjects import Subjects

MAX_ERROR_HEADER = 1024  # header values are single lines; long messages are cut


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_ERROR_HEADER else flat[: MAX_ERROR_HEADER - 3] + "..."


def dead_letter_headers(refused: Refused, stream: str) -> dict[str, str]:
    """The original headers plus the reason, the readable error, the subject and the sequence."""
    headers = dict(refused.delivery.headers or {})
    original_id = headers.pop("Nats-Msg-Id", None)
    if original_id is not None:
        headers["Tradecache-Original-Msg-Id"] = original_id
    headers.update(
        {
            "Tradecache-Reason": refused.error.reason.value,
            "Tradecache-Error": _one_line(str(refused.error)),
            "Tradecache-Subject": refused.delivery.subject,
            "Tradecache-Stream-Seq": str(refused.delivery.stream_seq),
            "Nats-Msg-Id": f"tradecache-dead-{stream}-{refused.delivery.stream_seq}",
        }
    )
    return headers


class DeadLetters:
    """Publishes refused deliveries to the dead-letter subject and waits for the stream's ack."""

    def __init__(self, js: Any, subjects: Subjects, source_stream: str, dead_stream: str) -> None:
        self.js = js
        self.subjects = subjects
        self.source_stream = source_stream
        self.dead_stream = dead_stream

    async def publish(self, refused: Refused) -> None:
        await self.js.publish(
            self.subjects.dead,
            refused.delivery.data,
            headers=dead_letter_headers(refused, self.source_stream),
            stream=self.dead_stream,
        )


__all__ = ["DeadLetters", "dead_letter_headers"]
