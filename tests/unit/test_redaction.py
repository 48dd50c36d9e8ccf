"""`tradecache.redaction`: every URL form that can carry a secret, masked; log lines masked too."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from tradecache.config import mask_url as config_mask_url
from tradecache.logs import JsonFormatter, TextFormatter
from tradecache.redaction import mask_url, mask_urls

SECRET = "s3cr3t-7f2a9c41"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"redis://user:{SECRET}@cache:6379/0", "redis://user:***@cache:6379/0"),
        (f"rediss://:{SECRET}@cache:6380", "rediss://:***@cache:6380"),
        ("redis://user@cache:6379", "redis://user@cache:6379"),  # a Redis user name alone is no secret
        (f"nats://{SECRET}@bus:4222", "nats://***@bus:4222"),  # a NATS token alone is
        (f"tls://u:p@{SECRET}@bus:4222", "tls://u:***@bus:4222"),
        (f"redis://u:{quote('p@/' + SECRET, safe='')}@cache", "redis://u:***@cache"),
        (f"redis://u:pa/{SECRET}@cache/0", "redis://u:***@cache/0"),
        (f"redis://cache:6379/0?password={SECRET}", "redis://cache:6379/0?password=***"),
        (f"redis://cache/0?ssl_ca_certs=/ca.pem&pasword={SECRET}&cluster=true",
         "redis://cache/0?ssl_ca_certs=/ca.pem&pasword=***&cluster=true"),
        (f"redis://cache/0?password=a@{SECRET}", "redis://***@***"),  # which `@` is which: mask both sides
        (f"redis://u:pa?x={SECRET}@cache", "redis://***@***"),
        (f"redis://cache/0#{SECRET}", "redis://cache/0#***"),
        (f"nats://a:{SECRET}@h1:4222,nats://{SECRET}@h2:4222", "nats://a:***@h1:4222,nats://***@h2:4222"),
        (f"redis//u:{SECRET}@cache", "***@cache"),  # no scheme: everything before the `@`
        (f"redis://u:{SECRET}@[::1", "redis://u:***@[::1"),  # does not parse
        (f"u:{SECRET}@bus:4222", "u:***@bus:4222"),
        ("nats://bus:4222", "nats://bus:4222"),
    ],
)  # fmt: skip
def test_every_url_form_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert SECRET not in mask_url(url)
    assert config_mask_url is mask_url  # one function, wherever it is imported from


def test_urls_inside_a_text_are_masked_and_the_rest_is_kept() -> None:
    text = f"Error connecting to redis://u:{SECRET}@cache:6379 (tried 'nats://{SECRET}@bus:4222'); giving up"
    assert mask_urls(text) == "Error connecting to redis://u:***@cache:6379 (tried 'nats://***@bus:4222'); giving up"
    assert mask_urls("no secret here: 3 of 4 done") == "no secret here: 3 of 4 done"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_log_lines_never_show_a_url_secret(formatter: logging.Formatter) -> None:
    record = logging.LogRecord("tradecache", logging.ERROR, __file__, 1, f"cannot reach nats://{SECRET}@bus", (), None)
    record.error = f"ConnectionError('redis://:{SECRET}@cache:6379/0?password={SECRET}')"
    line = formatter.format(record)
    assert SECRET not in line
    assert "nats://***@bus" in line and "redis://:***@cache:6379/0?password=***" in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["msg"] == "cannot reach nats://***@bus"
