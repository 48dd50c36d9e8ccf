"""A reply sent to NATS as one frame joined once from its parts (a page's entries).

A `load.orders` page is up to 1 MB, made of hundreds of encoded entries. Joined into a body, then
framed by nats-py's `publish` (the HPUB line and headers, the body, CRLF: two concatenations), then
joined again by its flusher, each page was copied four times, in fresh megabyte buffers: ~9% of
the daemon's CPU in a first `load.orders` pass and more in a cached one (py-spy). Here the whole
frame is joined once from the parts and queued with the client's own `_send_command`, then flushed
as `publish` does; the flusher hands a lone pending frame to the transport without copying it.

Only replies this module can frame exactly take that path: a connected client with these methods
(nats-py is pinned below 3), a plain reply subject, and headers of printable ASCII (the cursor is
base64url). Anything else goes through `publish`, which validates, encodes or refuses as always; so
does everything nats-py checks before sending (closed, draining, over the max payload: the same
errors are raised here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from nats import errors

_CRLF: Final = b"\r\n"
_HEADER_LINE: Final = b"NATS/1.0\r\n"
_NEEDED: Final = ("_send_command", "_flush_pending", "_flush_queue", "stats")


def _plain(text: str) -> bool:
    """Printable ASCII with no surrounding space: written as it is, as nats-py would write it."""
    return text.isascii() and text.isprintable() and text == text.strip()


def can_frame(nc: Any, subject: str, headers: Mapping[str, str] | None) -> bool:
    """Whether `send` frames this reply itself (else it goes through `publish`)."""
    if not all(hasattr(nc, name) for name in _NEEDED) or not nc.is_connected:
        return False
    if not subject or not _plain(subject) or " " in subject:
        return False
    return headers is None or all(_plain(key) and key and ":" not in key and _plain(value)
                                  for key, value in headers.items())  # fmt: skip


def frame(subject: str, headers: Mapping[str, str] | None, parts: Sequence[bytes]) -> bytes:
    """The PUB or HPUB frame of a message to `subject` without a reply, its payload the parts joined."""
    size = sum(len(part) for part in parts)
    if headers is None:
        return b"".join([f"PUB {subject} {size}\r\n".encode(), *parts, _CRLF])
    block = _HEADER_LINE + b"".join(f"{key}: {value}\r\n".encode() for key, value in headers.items()) + _CRLF
    line = f"HPUB {subject} {len(block)} {len(block) + size}\r\n".encode()
    return b"".join([line, block, *parts, _CRLF])


async def send(nc: Any, subject: str, parts: Sequence[bytes], headers: Mapping[str, str] | None = None) -> None:
    """Publish the parts joined, as `nc.publish(subject, b"".join(parts), headers=headers)` would.

    Raises what `publish` raises: ConnectionClosedError, ConnectionDrainingError, MaxPayloadError,
    and any error of the send itself."""
    if not can_frame(nc, subject, headers):
        await nc.publish(subject, b"".join(parts), headers=None if headers is None else dict(headers))
        return
    if nc.is_closed:
        raise errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise errors.ConnectionDrainingError
    size = sum(len(part) for part in parts)
    if size > nc.max_payload:
        raise errors.MaxPayloadError
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += size
    await nc._send_command(frame(subject, headers, parts))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


__all__ = ["can_frame", "frame", "send"]
