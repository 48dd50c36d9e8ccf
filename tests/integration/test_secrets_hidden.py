"""Secrets never show: not in `check-config`, not in config errors, not in the daemon's logs (at DEBUG, both
formats, running or failing to start), not in exceptions or reprs.

Every secret here is distinctive (`SECRETS`), given in every form the configuration takes (URL user
info, explicit keys, environment variables, `*_file` keys) and really used: the daemon logs in with
them against real servers and stores a scenario, or is refused with the wrong ones. Then all output is
searched for each secret, whole and for its random core.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nats
import pytest
import redis.asyncio
import yaml
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from tests.integration.daemon_process import DaemonProcess
from tests.integration.secure_servers import (
    ConfiguredNatsServer,
    NKey,
    SecureRedisServer,
    assert_stored_as_expected,
    flush_trader,
    publish_scenario_as,
    wait_for_checkpoint_of,
)
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.bus import connect
from tradecache.cache import RedisCacheDatabase
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.config import Config, load_config, parse_config
from tradecache.daemon.app import nats_options
from tradecache.dev.stack import free_port
from tradecache.errors import BusUnavailable, ConfigError, StoreUnavailable
from tradecache.model.identifiers import TraderId
from tradecache.serialization import MsgPackSerializer

pytestmark = pytest.mark.integration


def _secret(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:16]}"


REDIS_USER = "sidecar"
NATS_USER = "sidecar"
REDIS_PASSWORD = _secret("redis-password")
ODD_REDIS_USER = "oddly"
ODD_REDIS_PASSWORD = _secret("p@ss/w:rd?x=1#")  # only usable URL-encoded
NATS_PASSWORD = _secret("nats-password")
NATS_TOKEN = _secret("nats-token")
WRONG_REDIS_PASSWORD = _secret("wrong-redis-password")
WRONG_NATS_PASSWORD = _secret("wrong-nats-password")
WRONG_NATS_TOKEN = _secret("wrong-nats-token")
NKEY_USER, NKEY_STRANGER = NKey(NKey.USER), NKey(NKey.USER)
SECRETS = [
    REDIS_PASSWORD,
    ODD_REDIS_PASSWORD,
    NATS_PASSWORD,
    NATS_TOKEN,
    WRONG_REDIS_PASSWORD,
    WRONG_NATS_PASSWORD,
    WRONG_NATS_TOKEN,
    NKEY_USER.seed,
    NKEY_STRANGER.seed,
]
SCENARIO = "market_order_single_fill_fx"


def assert_no_secret(text: str, where: str) -> None:
    """Neither a whole secret nor its random part (a truncated or re-encoded secret) is in `text`."""
    found = [secret for secret in SECRETS if secret in text or secret[-16:] in text]
    assert not found, f"{where} shows the secret(s) {found}:\n{text}"


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_acl() -> Iterator[SecureRedisServer]:
    with SecureRedisServer() as server:
        server.add_acl_user(REDIS_USER, REDIS_PASSWORD, ["~*", "+@all"])
        server.add_acl_user(ODD_REDIS_USER, ODD_REDIS_PASSWORD, ["~*", "+@all"])
        yield server


@pytest.fixture(scope="module")
def nats_users() -> Iterator[ConfiguredNatsServer]:
    """A user with a password and a user with an nkey."""
    users = f'{{ user: {NATS_USER}, password: "{NATS_PASSWORD}" }}, {{ nkey: {NKEY_USER.public} }}'
    with ConfiguredNatsServer(f"authorization {{ users: [ {users} ] }}\n") as server:
        yield server


@pytest.fixture(scope="module")
def nats_token() -> Iterator[ConfiguredNatsServer]:
    with ConfiguredNatsServer(f'authorization {{ token: "{NATS_TOKEN}" }}\n') as server:
        yield server


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario.load(next(p for p in scenario_paths() if p.stem == SCENARIO))


def _url_with(url: str, userinfo: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo}@{rest}"


def _write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text + "\n")
    return str(path)


# -- check-config ----------------------------------------------------------------------------


def _check_config(
    folder: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRADECACHE_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "tradecache", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=30,
        check=False,
    )


def _valid_configs(folder: Path) -> dict[str, tuple[dict[str, Any], dict[str, str], int]]:
    """name -> (YAML, environment, how many masked values check-config must print)."""
    redis_url = f"redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:6390/0"
    return {
        "passwords_in_urls": (
            {"redis": {"url": redis_url}, "nats": {"servers": [f"nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:4333"]}},
            {},
            2,
        ),
        "password_keys": (
            {
                "redis": {"url": "redis://127.0.0.1:6390/0", "username": REDIS_USER, "password": REDIS_PASSWORD},
                "nats": {"servers": ["nats://127.0.0.1:4333"], "user": NATS_USER, "password": NATS_PASSWORD},
            },
            {},
            2,
        ),
        "token_key_and_token_url": (
            {"nats": {"servers": [f"nats://{NATS_TOKEN}@127.0.0.1:4333"], "token": NATS_TOKEN}},
            {},
            2,
        ),
        "environment": (
            {},
            {
                "TRADECACHE_TRADER_ID": "SECRETS-001",
                "TRADECACHE_REDIS_URL": redis_url,
                "TRADECACHE_REDIS_PASSWORD": WRONG_REDIS_PASSWORD,
                "TRADECACHE_NATS_TOKEN": NATS_TOKEN,
            },
            3,
        ),
        "secret_files": (
            {
                "redis": {"password_file": _write(folder, "redis-password", REDIS_PASSWORD)},
                "nats": {"token_file": _write(folder, "nats-token", NATS_TOKEN)},
            },
            {},
            2,
        ),
        "nkey_seed_file": (
            {"nats": {"nkey_seed_file": _write(folder, "sidecar.nk", NKEY_USER.seed)}},
            {},
            0,
        ),
    }


VALID = [
    "passwords_in_urls",
    "password_keys",
    "token_key_and_token_url",
    "environment",
    "secret_files",
    "nkey_seed_file",
]


@pytest.mark.parametrize("name", VALID)
def test_check_config_prints_every_secret_masked(name: str, tmp_path: Path) -> None:
    config, env, masked = _valid_configs(tmp_path)[name]
    result = _check_config(tmp_path, {"trader_id": "SECRETS-001", **config}, env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert_no_secret(output, f"check-config ({name})")
    assert output.count("***") >= masked, output
    printed = yaml.safe_load(result.stdout)
    assert printed["trader_id"] == "SECRETS-001"  # it printed the effective config, not an error


INVALID: dict[str, dict[str, Any]] = {
    "redis_url_bad_port": {"redis": {"url": f"redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:notaport/0"}},
    "redis_url_bad_scheme": {"redis": {"url": f"http://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:6379/0"}},
    "redis_url_as_a_list": {"redis": {"url": [f"redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:6379/0"]}},
    "nats_url_bad_scheme": {"nats": {"servers": [f"http://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:4222"]}},
    "nats_token_url_bad_port": {"nats": {"servers": [f"nats://{NATS_TOKEN}@127.0.0.1:99999"]}},
    "nats_servers_not_a_list": {"nats": {"servers": f"nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:4222"}},
    "nats_password_without_user": {"nats": {"password": NATS_PASSWORD}},
    "nats_two_auth_methods": {"nats": {"user": NATS_USER, "password": NATS_PASSWORD, "token": NATS_TOKEN}},
    "nats_token_not_a_string": {"nats": {"token": [NATS_TOKEN]}},
    # Secrets outside the user info, URLs that do not parse, several servers in one string:
    "redis_url_password_in_query": {"redis": {"url": f"redis://127.0.0.1:6379/0?password={REDIS_PASSWORD}"}},
    "redis_url_password_in_query_bad_db": {"redis": {"url": f"rediss://cache:6379/x?password={REDIS_PASSWORD}&db=1"}},
    "redis_url_encoded_password_bad_db": {
        "redis": {"url": f"redis://{REDIS_USER}:{quote('p@ss/' + REDIS_PASSWORD, safe='')}@127.0.0.1:6379/x"}
    },
    "redis_url_password_with_at_and_slash": {"redis": {"url": f"redis://u:p@ss/{REDIS_PASSWORD}@cache:6379/x"}},
    "redis_url_without_its_colon": {"redis": {"url": f"redis//{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:6379"}},
    "redis_url_that_does_not_parse": {"redis": {"url": f"rediss://{REDIS_USER}:{REDIS_PASSWORD}@[::1:6379"}},
    "nats_url_that_does_not_parse": {"nats": {"servers": [f"nats://{NATS_TOKEN}@[::1:4222"]}},
    "nats_servers_in_one_string": {
        "nats": {"servers": [f"nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:4222,nats://{NATS_TOKEN}@127.0.0.1:x"]}
    },
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_config_errors_name_the_key_but_never_the_secret(name: str, tmp_path: Path) -> None:
    result = _check_config(tmp_path, {"trader_id": "SECRETS-001", **INVALID[name]})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "config error" in result.stderr
    assert_no_secret(result.stdout + result.stderr, f"check-config ({name})")
    # The same through the API: the exception's text and its whole traceback.
    with pytest.raises(ConfigError) as caught:
        parse_config({"trader_id": "SECRETS-001", **INVALID[name]}, {})
    assert_no_secret("".join(traceback.format_exception(caught.value)), f"ConfigError ({name})")


def test_a_yaml_error_on_a_line_holding_a_secret_does_not_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(f"trader_id: SECRETS-001\nredis:\n  password: {REDIS_PASSWORD}\n    url: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert "not valid YAML" in str(caught.value)
    assert_no_secret("".join(traceback.format_exception(caught.value)), "ConfigError (YAML)")


# -- the daemon ------------------------------------------------------------------------------


def _readyz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(daemon: DaemonProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not _readyz(daemon.http_port):
        assert daemon.process is not None
        if daemon.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the daemon did not become ready:\n{daemon.log()}")
        time.sleep(0.05)


def _http_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


async def _service_info(**connect: Any) -> str:
    """What the NATS micro service tells anyone who asks (`$SRV.INFO`), as text."""
    nc = await nats.connect(allow_reconnect=False, **connect)
    try:
        reply = await nc.request("$SRV.INFO.tradecache", b"", timeout=5)
        assert b'"tradecache"' in reply.data
        return reply.data.decode()
    finally:
        await nc.close()


@pytest.mark.parametrize(
    "style", ["passwords_in_urls_json", "password_keys_text", "token_json", "encoded_password_and_server_list_text"]
)
async def test_a_running_daemon_logs_no_secret_even_at_debug(
    style: str,
    redis_acl: SecureRedisServer,
    nats_users: ConfiguredNatsServer,
    nats_token: ConfiguredNatsServer,
    scenario: Scenario,
) -> None:
    if style == "passwords_in_urls_json":
        redis_section: dict[str, Any] = {"url": redis_acl.url_for(REDIS_USER, REDIS_PASSWORD)}
        nats_section: dict[str, Any] = {"servers": [_url_with(nats_users.url, f"{NATS_USER}:{NATS_PASSWORD}")]}
        publisher: dict[str, Any] = {"servers": [nats_users.url], "user": NATS_USER, "password": NATS_PASSWORD}
    elif style == "password_keys_text":
        redis_section = {"url": redis_acl.url, "username": REDIS_USER, "password": REDIS_PASSWORD}
        nats_section = {"servers": [nats_users.url], "user": NATS_USER, "password": NATS_PASSWORD}
        publisher = {"servers": [nats_users.url], "user": NATS_USER, "password": NATS_PASSWORD}
    elif style == "token_json":
        redis_section = {"url": redis_acl.url_for(REDIS_USER, REDIS_PASSWORD)}
        nats_section = {"servers": [nats_token.url], "token": NATS_TOKEN}
        publisher = {"servers": [nats_token.url], "token": NATS_TOKEN}
    else:  # a password that needs URL encoding; the token in each of two URLs, one of a server that is down
        redis_section = {"url": redis_acl.url_for(ODD_REDIS_USER, quote(ODD_REDIS_PASSWORD, safe=""))}
        down = f"nats://{NATS_TOKEN}@127.0.0.1:{free_port()}"
        nats_section = {"servers": [down, _url_with(nats_token.url, NATS_TOKEN)]}
        publisher = {"servers": [nats_token.url], "token": NATS_TOKEN}
    admin = redis_acl.admin()
    flush_trader(admin, scenario.trader_id)
    log_format = "text" if style.endswith("text") else "json"
    daemon = DaemonProcess(
        {
            "trader_id": scenario.trader_id,
            "redis": redis_section,
            "nats": {**nats_section, "consumer": f"secrets-{style}"},
            "ingest": {"fetch_expires": 0.1},
            "logging": {"level": "DEBUG", "format": log_format},
        }
    )
    daemon.start()
    try:
        await asyncio.to_thread(_wait_ready, daemon)
        last = await publish_scenario_as(scenario, **publisher)
        await wait_for_checkpoint_of(admin, scenario.trader_id, last)
        served = await asyncio.to_thread(_http_text, daemon.http_port, "/metrics")
        served += await _service_info(**publisher)
        assert_no_secret(served, f"/metrics and $SRV.INFO ({style})")
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 20) == 0, daemon.log()
    finally:
        daemon.kill()
    assert_stored_as_expected(admin, scenario)  # the secrets were used, not just configured
    flush_trader(admin, scenario.trader_id)
    admin.close()
    log = daemon.log()
    assert "stopped" in log
    assert_no_secret(log, f"the daemon's log ({style})")


def _failing_configs(
    folder: Path, redis_acl: SecureRedisServer, nats_users: ConfiguredNatsServer, nats_token: ConfiguredNatsServer
) -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    """name -> (redis section, nats section, what the log says once the failure is reported)."""
    redis_ok = {"url": redis_acl.url_for(REDIS_USER, REDIS_PASSWORD)}
    return {
        "wrong_nats_password_in_url": (
            redis_ok,
            {"servers": [_url_with(nats_users.url, f"{NATS_USER}:{WRONG_NATS_PASSWORD}")]},
            "authorization violation",
        ),
        "wrong_nats_password_key": (
            redis_ok,
            {"servers": [nats_users.url], "user": NATS_USER, "password": WRONG_NATS_PASSWORD},
            "authorization violation",
        ),
        "wrong_nats_token_in_url": (
            redis_ok,
            {"servers": [_url_with(nats_token.url, WRONG_NATS_TOKEN)]},
            "authorization violation",
        ),
        "unknown_nkey_seed": (
            redis_ok,
            {"servers": [nats_users.url], "nkey_seed_file": _write(folder, "stranger.nk", NKEY_STRANGER.seed)},
            "authorization violation",
        ),
        "wrong_redis_password_in_url": (
            {"url": redis_acl.url_for(REDIS_USER, WRONG_REDIS_PASSWORD), "socket_connect_timeout": 2.0},
            {"servers": [nats_users.url], "user": NATS_USER, "password": NATS_PASSWORD},
            "invalid username-password pair",  # Redis' WRONGPASS text, in whatever the daemon logs about it
        ),
    }


FAILING = [
    "wrong_nats_password_in_url",
    "wrong_nats_password_key",
    "wrong_nats_token_in_url",
    "unknown_nkey_seed",
    "wrong_redis_password_in_url",
]


@pytest.mark.parametrize("name", FAILING)
def test_a_refused_login_logs_no_secret_even_at_debug(
    name: str,
    tmp_path: Path,
    redis_acl: SecureRedisServer,
    nats_users: ConfiguredNatsServer,
    nats_token: ConfiguredNatsServer,
) -> None:
    redis_section, nats_section, reported = _failing_configs(tmp_path, redis_acl, nats_users, nats_token)[name]
    daemon = DaemonProcess(
        {
            "trader_id": "SECRETS-002",
            "redis": redis_section,
            "nats": {**nats_section, "connect_timeout": 2.0},
            "logging": {"level": "DEBUG", "format": "json"},
        }
    )
    daemon.start()
    try:
        deadline = time.monotonic() + 20
        assert daemon.process is not None
        while daemon.process.poll() is None and reported not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.kill()
    log = daemon.log()
    assert reported in log, log  # the failure was reported: the code that could leak did run
    assert_no_secret(log, f"the daemon's log ({name})")


# -- exceptions and reprs --------------------------------------------------------------------


def _config(redis_url: str, nats: dict[str, Any], **redis_keys: Any) -> Config:
    return parse_config(
        {
            "trader_id": "SECRETS-003",
            "redis": {"url": redis_url, **redis_keys},
            "nats": {**nats, "connect_timeout": 2.0},
        },
        {},
    )


def test_reprs_and_masked_views_of_the_configuration_hold_no_secret(tmp_path: Path) -> None:
    configs = [
        _config(
            f"redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:6390/0",
            {"servers": [f"nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:4222"]},
        ),
        _config(
            "redis://127.0.0.1:6390/0",
            {"servers": [f"nats://{NATS_TOKEN}@127.0.0.1:4222"], "token": NATS_TOKEN},
            password=REDIS_PASSWORD,
        ),
        _config("redis://127.0.0.1:6390/0", {"nkey_seed_file": _write(tmp_path, "seed.nk", NKEY_USER.seed)}),
    ]
    for config in configs:
        cache_config = config.redis.cache_config()
        shown = [
            repr(config),
            str(config),
            json.dumps(config.masked()),
            repr(config.redis),
            repr(config.nats),
            repr(cache_config),
            str(cache_config),
            repr(nats_options(config)),
        ]
        assert_no_secret("\n".join(shown), "a repr")
    # And the secrets are really in there: the checks above looked at configurations that hold them.
    assert configs[0].redis.cache_config().password == REDIS_PASSWORD
    assert nats_options(configs[1]).token == NATS_TOKEN


async def test_connection_errors_and_their_tracebacks_hold_no_secret(
    redis_acl: SecureRedisServer, nats_users: ConfiguredNatsServer, nats_token: ConfiguredNatsServer
) -> None:
    log = logging.getLogger("tests.secrets")
    nats_refusals: list[dict[str, Any]] = [
        {"servers": [_url_with(nats_users.url, f"{NATS_USER}:{WRONG_NATS_PASSWORD}")]},
        {"servers": [nats_users.url], "user": NATS_USER, "password": WRONG_NATS_PASSWORD},
        {"servers": [_url_with(nats_token.url, WRONG_NATS_TOKEN)]},
        {"servers": [nats_token.url], "token": WRONG_NATS_TOKEN},
    ]
    for nats_keys in nats_refusals:
        config = _config(redis_acl.url, nats_keys)
        with pytest.raises(BusUnavailable) as bus_error:
            await connect(nats_options(config), log=log)
        assert "authorization violation" in str(bus_error.value)
        assert_no_secret("".join(traceback.format_exception(bus_error.value)), "BusUnavailable")

    wrong_redis = _config(redis_acl.url_for(REDIS_USER, WRONG_REDIS_PASSWORD), {"servers": [nats_users.url]})
    # The daemon's client, without redis-py's retries (seconds of backoff, the same error in the end).
    client = redis.asyncio.Redis(**wrong_redis.redis.cache_config().client_kwargs(), retry=AsyncRetry(NoBackoff(), 0))
    database = RedisCacheDatabase(TraderId("SECRETS-003"), log, MsgPackSerializer(), wrong_redis.redis.cache_config())
    try:
        store = Store(client, Keys("SECRETS-003"), MsgPackSerializer(timestamps_as_str=True))
        api_call = asyncio.create_task(asyncio.to_thread(database.load_currencies))  # Python API, sync, retries
        with pytest.raises(StoreUnavailable) as store_error:
            await store.read_checkpoint()
        with pytest.raises(Exception) as api_error:  # whichever error, as long as it is silent about the secret
            await api_call
    finally:
        await client.aclose()
    assert "invalid username-password pair" in str(store_error.value)
    assert_no_secret("".join(traceback.format_exception(store_error.value)), "StoreUnavailable")
    assert_no_secret("".join(traceback.format_exception(api_error.value)), "RedisCacheDatabase error")
    assert_no_secret(repr(database), "RedisCacheDatabase repr")
