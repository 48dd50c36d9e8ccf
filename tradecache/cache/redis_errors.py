"""The one place where redis-py's errors are read: what a failed Redis call means for us.

Every caller (the daemon's ingest loop and load service, `tradecache rebuild`, the Python API)
asks `classify(exc)` and gets one of four answers:

- `UNAVAILABLE`: Redis cannot do it now (connection lost, timeout, loading, read-only replica,
  NOREPLICAS, MISCONF, BUSY, OOM, an ACL that forbids a command). Retry later; the call's data is
  not at fault.
- `REFUSED`: Redis ran the call and refused what it carried: WRONGTYPE, a Lua runtime error,
  a limit. The same call will fail again; the daemon pins it to one message and dead-letters it.
- `FENCED`: our own scripts' answer when this process no longer holds the trader's lease
  (another daemon writes the trader now). Nothing was written.
- `BUG`: a mistake on our side that no message can cause (a script that does not compile, an
  unknown command, redis-py refusing an argument type). Retried with an error logged, never
  blamed on a message.

Redis reports an error inside a script differently by version, and redis-py rewrites some:
- 7.x: `NOREPLICAS Not enough good replicas to write. script: <sha>, on @user_script:1.`
  (redis-py maps READONLY/OOM to their classes and strips the code);
- 6.2: `Error running script (call to f_<sha>): @user_script:1: @user_script: 1: -NOREPLICAS ...`
  or `... @user_script:1: WRONGTYPE ...` (a plain ResponseError whatever the code);
- in a pipeline: `Command # 2 (...) of pipeline caused error: <error>`.
`reply_text` peels these wrappers so the code is always the first word. Errors our scripts raise
with `redis.error_reply` ('WRONGTYPE tradecache: ...', 'FENCED tradecache: ...') arrive as they
were written, on every version.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Final

import redis.exceptions

from tradecache.errors import LeaseLost, StoreRefused, StoreUnavailable


class RedisFault(StrEnum):
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"
    FENCED = "fenced"
    BUG = "bug"


# Classes redis-py raises for "not now" (connection, timeout, loading, read-only, cluster moving,
# OOM, ACL). An ACL refusal heals when the operator fixes the ACL, so it is retried like an outage.
UNAVAILABLE_ERRORS: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.NoPermissionError,
)
# Reply codes meaning the same, when they reach redis-py as a plain ResponseError (always so
# inside a script on 6.2): no replicas for min-replicas-to-write, cannot persist, a long script
# running, loading, a replica, out of memory, a replica cut from its master, cluster states, ACL.
UNAVAILABLE_CODES: Final = frozenset(
    {"NOREPLICAS", "MISCONF", "BUSY", "LOADING", "READONLY", "OOM", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOPERM"}
)
FENCED_CODE: Final = "FENCED"
# Answers to a call we got wrong, whatever it carried.
_BUG_PREFIXES: Final = (
    "Error compiling script",
    "unknown command",
    "ERR unknown command",
    "wrong number of arguments",
    "ERR wrong number of arguments",
    "ERR tradecache: unknown operation",
    "NOSCRIPT",
)
# An ACL refusal inside a script has no code on either version.
_ACL_IN_SCRIPT: Final = "can't run this command"

_PIPELINE_WRAPPER: Final = "of pipeline caused error: "
_SCRIPT_62: Final = re.compile(r"^Error running script \(call to f_[0-9a-f]+\): @user_script:\d+: ")
_SCRIPT_62_CALL: Final = re.compile(r"^@user_script: ?\d+: -?")
_SCRIPT_7_SUFFIX: Final = re.compile(r" script: [0-9a-f]{40}, on @user_script:\d+\.$")


def reply_text(exc: BaseException) -> str:
    """The error as Redis (or our script) worded it, without redis-py's and the scripts' wrappers."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if _PIPELINE_WRAPPER in text:
        text = text.rpartition(_PIPELINE_WRAPPER)[2].lstrip("('\"")
    text = _SCRIPT_62.sub("", text)
    text = _SCRIPT_62_CALL.sub("", text)
    return _SCRIPT_7_SUFFIX.sub("", text).strip()


def reply_code(exc: BaseException) -> str:
    """The first word of `reply_text` when it is an upper-case error code, else ""."""
    first = reply_text(exc).split(" ", 1)[0]
    return first if first.isupper() and first.isalpha() else ""


def classify(exc: BaseException) -> RedisFault | None:
    """What a failed Redis call means (see the module docstring); None for a non-Redis error."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return RedisFault.UNAVAILABLE
    if isinstance(exc, (redis.exceptions.NoScriptError, redis.exceptions.DataError)):
        return RedisFault.BUG  # redis-py reloads scripts itself; a DataError is an argument we built
    if not isinstance(exc, redis.exceptions.RedisError):
        return None
    if not isinstance(exc, redis.exceptions.ResponseError):
        return RedisFault.BUG  # InvalidResponse, PubSubError...: the client's business, not the data's
    code = reply_code(exc)
    text = reply_text(exc)
    if code in UNAVAILABLE_CODES or _ACL_IN_SCRIPT in text:
        return RedisFault.UNAVAILABLE
    if code == FENCED_CODE:
        return RedisFault.FENCED
    if text.startswith(_BUG_PREFIXES):
        return RedisFault.BUG
    return RedisFault.REFUSED


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means Redis cannot do it now (retry later), not a bug or bad data."""
    return classify(exc) == RedisFault.UNAVAILABLE


def describe(exc: BaseException) -> str:
    """One line for logs and dead letters: the class and Redis' own words."""
    return f"{type(exc).__name__}: {reply_text(exc)}"


def translate(operation: str, exc: redis.exceptions.RedisError) -> Exception:
    """Ours for a redis-py error: StoreUnavailable, StoreRefused, LeaseLost, or `exc` itself (a bug)."""
    fault = classify(exc)
    if fault == RedisFault.UNAVAILABLE:
        return StoreUnavailable(operation, describe(exc))
    if fault == RedisFault.REFUSED:
        return StoreRefused(operation, reply_text(exc))
    if fault == RedisFault.FENCED:
        return LeaseLost(operation, reply_text(exc))
    return exc


@contextlib.contextmanager
def translated(operation: str) -> Iterator[None]:
    """`translate` around a block. A bug (or a non-Redis error) goes through unchanged, with its
    traceback. Works around awaits too (`with translated("commit"): await ...`), so the sync and
    async executors share it."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        ours = translate(operation, exc)
        if ours is exc:
            raise
        raise ours from exc


__all__ = [
    "FENCED_CODE",
    "UNAVAILABLE_CODES",
    "UNAVAILABLE_ERRORS",
    "RedisFault",
    "classify",
    "describe",
    "is_unavailable",
    "reply_code",
    "reply_text",
    "translate",
    "translated",
]
