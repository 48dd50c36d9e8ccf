"""Structured logs: one JSON object per line (or plain text), with the `extra` fields kept, and
every URL in a line masked (`tradecache.redaction`): a library's error message may quote one."""

from __future__ import annotations

import json
import logging
import sys
import time

from tradecache.redaction import mask_urls

# Attributes every LogRecord has; anything else came in through `extra=` and is printed.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask_urls(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        return mask_urls(f"{line} {extra}".rstrip())


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # nats-py and redis-py are chatty at DEBUG; their warnings still come through.
    for noisy in ("nats", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class LineBudget:
    """At most `lines` log lines of one kind per `window` seconds; the lines past that are
    counted by a key (a reason) and told in one summary once the window is over (`due`).

    A flood of refused messages logged one line each cost ~25 us of the event loop per message
    (a JSON line to stderr) and flooded the log pipeline; the metrics and the dead-letter stream
    still have every one."""

    def __init__(self, lines: int = 20, window: float = 10.0) -> None:
        self.lines = lines
        self.window = window
        self._ends = float("-inf")  # the current window's end
        self._used = 0
        self._held: dict[str, int] = {}

    def allow(self, now: float, key: str | None = None) -> bool:
        """Whether a line may be logged now; if not, it is counted under `key` (None: not counted,
        for lines whose summary would say nothing more)."""
        if now >= self._ends:
            self._ends = now + self.window
            self._used = 0
        if self._used < self.lines:
            self._used += 1
            return True
        if key is not None:
            self._held[key] = self._held.get(key, 0) + 1
        return False

    def due(self, now: float) -> dict[str, int]:
        """The lines held back in a window that is over, by key (empty: none), then forgotten."""
        if now < self._ends or not self._held:
            return {}
        held, self._held = self._held, {}
        return held


__all__ = ["JsonFormatter", "LineBudget", "TextFormatter", "configure_logging"]
