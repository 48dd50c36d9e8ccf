# The compiled frame reader (_frames.c): see tradecache/ingest/inbox.py and intake.py.
from collections.abc import Callable, Mapping
from typing import Any

def scan(
    data: bytes,
    pos: int,
    handlers: dict[int, Callable[[str, str, bytes, Mapping[str, str] | None], object]],
    headers_of: Callable[[bytes], Mapping[str, str]] | None,
) -> tuple[int, int, Any, int, int]: ...
def ack_numbers(reply: str) -> tuple[int, int, int, int, int] | None: ...
