"""The configuration: defaults, environment overrides, `*_file` secrets, refusals and masking (SPEC section 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tradecache.cache.config import CacheDatabaseConfig
from tradecache.config import (
    Config,
    NatsConfig,
    RedisConfig,
    Secret,
    load_config,
    mask_url,
    parse_config,
)
from tradecache.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SECRET = "s3cr3t-Value-42"


def config_of(environ: dict[str, str] | None = None, **sections: Any) -> Config:
    data: dict[str, Any] = {"trader_id": "TRADER-001", **sections}
    return parse_config(data, environ or {})


def attribute(config: Config, dotted: str) -> Any:
    value: Any = config
    for name in dotted.split("."):
        value = getattr(value, name)
    return value


def refusal(data: dict[str, Any], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config({"trader_id": "TRADER-001", **data}, environ or {})
    return caught.value


@pytest.fixture
def a_file(tmp_path: Path) -> str:
    path = tmp_path / "some.pem"
    path.write_text("-----BEGIN-----\n")
    return str(path)


# -- defaults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("redis.url", "redis://127.0.0.1:6379/0"),
        ("redis.username", None),
        ("redis.password", None),
        ("redis.ssl_ca_certs", None),
        ("redis.ssl_certfile", None),
        ("redis.ssl_keyfile", None),
        ("redis.cluster", False),
        ("redis.socket_timeout", 5.0),
        ("redis.socket_connect_timeout", 5.0),
        ("nats.servers", ("nats://127.0.0.1:4222",)),
        ("nats.subject_prefix", "tradecache"),
        ("nats.user", None),
        ("nats.password", None),
        ("nats.token", None),
        ("nats.creds_file", None),
        ("nats.nkey_seed_file", None),
        ("nats.tls_ca_file", None),
        ("nats.tls_cert_file", None),
        ("nats.tls_key_file", None),
        ("nats.stream", "TRADECACHE"),
        ("nats.dead_letter_stream", "TRADECACHE_DEAD"),
        ("nats.consumer_name", "tradecache-TRADER-001"),
        ("nats.create_streams", True),
        ("nats.connect_timeout", 5.0),
        ("nats.max_reconnect_wait", 5.0),
        ("ingest.batch_size", 256),
        ("ingest.fetch_expires", 0.5),
        ("ingest.max_payload_bytes", 1048576),
        ("ingest.open_orders_limit", 100000),
        ("ingest.ack_wait", 30.0),
        ("ingest.max_deliver", -1),
        ("load.max_in_flight", 64),
        ("load.max_page_builds", 1),
        ("load.max_request_bytes", 16384),
        ("load.reply_cache_bytes", 33554432),
        ("load.build_worker", True),
        ("http.listen", "0.0.0.0:9464"),
        ("http.host", "0.0.0.0"),
        ("http.port", 9464),
        ("metrics.key_count_interval", 10.0),
        ("logging.level", "INFO"),
        ("logging.format", "json"),
        ("shutdown.drain_timeout", 10.0),
    ],
)
def test_every_key_but_trader_id_has_a_default(key: str, default: Any) -> None:
    assert attribute(config_of(), key) == default


def test_empty_sections_mean_defaults() -> None:
    assert parse_config({"trader_id": "TRADER-001", "redis": None, "nats": {}}, {}) == config_of()


def test_the_consumer_name_given_wins_over_the_default() -> None:
    assert config_of(nats={"consumer": "mine"}).nats.consumer_name == "mine"


def test_the_whole_config_can_come_from_the_environment() -> None:
    config = load_config(None, {"TRADECACHE_TRADER_ID": "ENV-007"})
    assert config == Config(trader_id="ENV-007")


# -- environment overrides ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "key", "expected"),
    [
        ("TRADECACHE_TRADER_ID", "OTHER-002", "trader_id", "OTHER-002"),
        ("TRADECACHE_REDIS_URL", "rediss://cache:6380/3", "redis.url", "rediss://cache:6380/3"),
        ("TRADECACHE_REDIS_USERNAME", "app", "redis.username", "app"),
        ("TRADECACHE_NATS_SUBJECT_PREFIX", "acme.tc", "nats.subject_prefix", "acme.tc"),
        ("TRADECACHE_NATS_CONSUMER", "", "nats.consumer_name", "tradecache-TRADER-001"),
        ("TRADECACHE_LOGGING_FORMAT", "text", "logging.format", "text"),
        ("TRADECACHE_HTTP_LISTEN", "[::1]:9000", "http.port", 9000),
        ("TRADECACHE_INGEST_BATCH_SIZE", "1000", "ingest.batch_size", 1000),
        ("TRADECACHE_INGEST_MAX_DELIVER", "-1", "ingest.max_deliver", -1),
        ("TRADECACHE_LOAD_MAX_IN_FLIGHT", "8", "load.max_in_flight", 8),
        ("TRADECACHE_INGEST_MAX_PAYLOAD_BYTES", " 2048 ", "ingest.max_payload_bytes", 2048),
        ("TRADECACHE_NATS_CONNECT_TIMEOUT", "2.5", "nats.connect_timeout", 2.5),
        ("TRADECACHE_REDIS_SOCKET_TIMEOUT", "7", "redis.socket_timeout", 7.0),
        ("TRADECACHE_SHUTDOWN_DRAIN_TIMEOUT", "1e1", "shutdown.drain_timeout", 10.0),
        ("TRADECACHE_NATS_CREATE_STREAMS", "false", "nats.create_streams", False),
        ("TRADECACHE_NATS_CREATE_STREAMS", "0", "nats.create_streams", False),
        ("TRADECACHE_NATS_CREATE_STREAMS", "No", "nats.create_streams", False),
        ("TRADECACHE_REDIS_CLUSTER", "true", "redis.cluster", True),
        ("TRADECACHE_REDIS_CLUSTER", "1", "redis.cluster", True),
        ("TRADECACHE_REDIS_CLUSTER", "YES", "redis.cluster", True),
        ("TRADECACHE_NATS_SERVERS", "nats://a:4222,nats://b:4222", "nats.servers", ("nats://a:4222", "nats://b:4222")),
        ("TRADECACHE_NATS_SERVERS", " tls://a:4222 , ", "nats.servers", ("tls://a:4222",)),
    ],
)
def test_an_environment_variable_overrides_its_key(variable: str, text: str, key: str, expected: Any) -> None:
    assert attribute(config_of({variable: text}), key) == expected


def test_the_environment_wins_over_the_file() -> None:
    config = config_of({"TRADECACHE_INGEST_BATCH_SIZE": "7"}, ingest={"batch_size": 9, "ack_wait": 3})
    assert (config.ingest.batch_size, config.ingest.ack_wait) == (7, 3.0)


@pytest.mark.parametrize(
    "variable",
    [
        "TRADECACHE_TEST_ANYTHING",
        "TRADECACHE_VECTORS",
        "TRADECACHE_REDIS_SERVER",
        "TRADECACHE_NATS_SERVER",
        "TRADECACHE_PURE_PYTHON",
        "OTHER_PROGRAM_SETTING",
    ],
)
def test_variables_of_tests_tools_and_other_programs_are_ignored(variable: str) -> None:
    assert config_of({variable: "whatever"}) == config_of()


@pytest.mark.parametrize(
    "variable",
    [
        "TRADECACHE_NOPE",
        "TRADECACHE_REDIS",
        "TRADECACHE_REDIS_HOST",
        "TRADECACHE_NATS_SERVERZ",
        "TRADECACHE_CACHE_URL",
        "TRADECACHE_INGEST_BATCH",
    ],
)
def test_an_unknown_tradecache_variable_is_refused(variable: str) -> None:
    error = refusal({}, {variable: "1"})
    assert error.key == variable
    assert "unknown environment variable" in error.problem


def test_kubernetes_service_link_variables_of_a_service_named_tradecache_are_ignored() -> None:
    links = {
        "TRADECACHE_PORT": "tcp://10.0.0.7:9464",
        "TRADECACHE_PORT_9464_TCP_ADDR": "10.0.0.7",
        "TRADECACHE_SERVICE_HOST": "10.0.0.7",
        "TRADECACHE_SERVICE_PORT_METRICS": "9464",
    }
    config = parse_config({"trader_id": "TRADER-001"}, links)
    assert config.http.listen == "0.0.0.0:9464"


@pytest.mark.parametrize(
    ("variable", "text", "key", "fragment"),
    [
        ("TRADECACHE_INGEST_BATCH_SIZE", "lots", "ingest.batch_size", "must be an integer, got 'lots'"),
        ("TRADECACHE_INGEST_BATCH_SIZE", "2.5", "ingest.batch_size", "must be an integer"),
        ("TRADECACHE_NATS_CONNECT_TIMEOUT", "soon", "nats.connect_timeout", "must be a number, got 'soon'"),
        ("TRADECACHE_NATS_CONNECT_TIMEOUT", "nan", "nats.connect_timeout", "finite"),
        ("TRADECACHE_REDIS_CLUSTER", "maybe", "redis.cluster", "true/false/1/0/yes/no, got 'maybe'"),
        ("TRADECACHE_NATS_SERVERS", "", "nats.servers", "at least one server"),
        ("TRADECACHE_NATS_SERVERS", "nats://a:4222,http://b:80", "nats.servers[1]", "unsupported scheme 'http'"),
        ("TRADECACHE_TRADER_ID", "NODASH", "trader_id", "'NODASH'"),
    ],
)
def test_a_bad_environment_value_is_refused_naming_the_key(variable: str, text: str, key: str, fragment: str) -> None:
    error = refusal({}, {variable: text})
    assert error.key == key
    assert fragment in error.problem


def test_an_environment_error_names_the_variable() -> None:
    assert "(from TRADECACHE_INGEST_ACK_WAIT)" in refusal({}, {"TRADECACHE_INGEST_ACK_WAIT": "x"}).problem


# -- *_file secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "extra", "file_key", "attribute_path"),
    [
        ("redis", {}, "password_file", "redis.password"),
        ("nats", {"user": "app"}, "password_file", "nats.password"),
        ("nats", {}, "token_file", "nats.token"),
    ],
)
@pytest.mark.parametrize("content", [SECRET, SECRET + "\n", SECRET + "\r\n"])
def test_a_secret_is_read_from_its_file_without_the_trailing_newline(
    tmp_path: Path, section: str, extra: dict[str, str], file_key: str, attribute_path: str, content: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(content)
    config = config_of(**{section: {**extra, file_key: str(secret_file)}})
    secret = attribute(config, attribute_path)
    assert isinstance(secret, Secret)
    assert secret.reveal() == SECRET


def test_a_secret_file_can_be_named_by_the_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET + "\n")
    config = config_of({"TRADECACHE_NATS_TOKEN_FILE": str(secret_file)})
    assert config.nats.token == Secret(SECRET)


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET)
    error = refusal({"redis": {"password": "other", "password_file": str(secret_file)}})
    assert error.key == "redis.password"
    assert "not both" in error.problem


@pytest.mark.parametrize(("content", "fragment"), [(None, "cannot read"), ("\n", "is empty")])
def test_an_unreadable_or_empty_secret_file_is_refused(tmp_path: Path, content: str | None, fragment: str) -> None:
    secret_file = tmp_path / "token"
    if content is not None:
        secret_file.write_text(content)
    error = refusal({"nats": {"token_file": str(secret_file)}})
    assert error.key == "nats.token_file"
    assert fragment in error.problem


# -- unknown keys and bad values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"trader": "X-1"}, "trader"),
        ({"cache": {}}, "cache"),
        ({"redis": {"host": "h"}}, "redis.host"),
        ({"redis": {"pasword": "x"}}, "redis.pasword"),
        ({"nats": {"server": ["nats://a:4222"]}}, "nats.server"),
        ({"nats": {"user_file": "/x"}}, "nats.user_file"),
        ({"ingest": {"batchsize": 1}}, "ingest.batchsize"),
        ({"http": {"port": 80}}, "http.port"),
        ({"logging": {"levle": "INFO"}}, "logging.levle"),
        ({"shutdown": {"drain": 1}}, "shutdown.drain"),
    ],
)
def test_an_unknown_key_is_refused_with_its_dotted_path(data: dict[str, Any], key: str) -> None:
    error = refusal(data)
    assert error.key == key
    assert "unknown key" in error.problem


def test_an_unknown_key_suggests_the_closest_known_one() -> None:
    assert "did you mean 'password'?" in refusal({"redis": {"pasword": "x"}}).problem


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"trader_id": "TRADER001"}, "trader_id", "contain '-'"),
        ({"trader_id": "A-1."}, "trader_id", "no empty '.'-separated part"),
        ({"trader_id": "A-1..2"}, "trader_id", "'A-1..2'"),
        ({"trader_id": "A-1:2"}, "trader_id", "'A-1:2'"),
        ({"trader_id": 7}, "trader_id", "must be a string, got 7"),
        ({"redis": "redis://x"}, "redis", "must be a mapping"),
        ({"redis": {"url": "http://cache:6379"}}, "redis.url", "unsupported scheme 'http'"),
        ({"redis": {"url": "redis://cache:6379/zero"}}, "redis.url", "database must be a number"),
        ({"redis": {"ssl_ca_certs": "/nonexistent/ca.pem"}}, "redis.ssl_ca_certs", "'/nonexistent/ca.pem'"),
        ({"redis": {"cluster": "yes"}}, "redis.cluster", "must be true or false, got 'yes'"),
        ({"redis": {"socket_timeout": 0}}, "redis.socket_timeout", "greater than 0, got 0.0"),
        ({"redis": {"url": "redis://h/2", "cluster": True}}, "redis.db", "only database 0"),
        ({"nats": {"servers": "nats://a:4222"}}, "nats.servers", "a list of strings"),
        ({"nats": {"servers": []}}, "nats.servers", "at least one server"),
        ({"nats": {"servers": ["nats://a:4222", "http://b:4222"]}}, "nats.servers[1]", "unsupported scheme 'http'"),
        ({"nats": {"servers": ["nats://a:4222", 4222]}}, "nats.servers[1]", "must be a string, got 4222"),
        ({"nats": {"servers": ["nats://a:99999"]}}, "nats.servers[0]", "port"),
        ({"nats": {"servers": ["nats://:4222"]}}, "nats.servers[0]", "no host"),
        ({"nats": {"subject_prefix": "trade cache"}}, "nats.subject_prefix", "'trade cache'"),
        ({"nats": {"subject_prefix": "tc.*"}}, "nats.subject_prefix", "'tc.*'"),
        ({"nats": {"subject_prefix": "tc.>"}}, "nats.subject_prefix", "'tc.>'"),
        ({"nats": {"subject_prefix": ""}}, "nats.subject_prefix", "''"),
        ({"nats": {"subject_prefix": "tc..x"}}, "nats.subject_prefix", "'tc..x'"),
        ({"nats": {"stream": "A.B"}}, "nats.stream", "'A.B'"),
        ({"nats": {"dead_letter_stream": "TRADECACHE"}}, "nats.dead_letter_stream", "must differ"),
        ({"nats": {"consumer": "my consumer"}}, "nats.consumer", "'my consumer'"),
        ({"nats": {"creds_file": "/nonexistent/x.creds"}}, "nats.creds_file", "'/nonexistent/x.creds'"),
        ({"nats": {"user": "app"}}, "nats.password", "needs a password"),
        ({"nats": {"password": "pw"}}, "nats.user", "needs a user"),
        ({"nats": {"user": "app", "password": "pw", "token": "t"}}, "nats", "user/password and token"),
        ({"nats": {"connect_timeout": -1}}, "nats.connect_timeout", "greater than 0, got -1.0"),
        ({"nats": {"create_streams": 1}}, "nats.create_streams", "must be true or false, got 1"),
        ({"ingest": {"batch_size": 0}}, "ingest.batch_size", "1..10000, got 0"),
        ({"ingest": {"batch_size": 10001}}, "ingest.batch_size", "1..10000, got 10001"),
        ({"ingest": {"batch_size": 2.5}}, "ingest.batch_size", "must be an integer, got 2.5"),
        ({"ingest": {"batch_size": True}}, "ingest.batch_size", "must be an integer, got True"),
        ({"ingest": {"batch_size": None}}, "ingest.batch_size", "must be an integer, got None"),
        ({"ingest": {"fetch_expires": 0}}, "ingest.fetch_expires", "greater than 0"),
        ({"ingest": {"fetch_expires": "1s"}}, "ingest.fetch_expires", "must be a number, got '1s'"),
        ({"ingest": {"max_payload_bytes": 0}}, "ingest.max_payload_bytes", "greater than 0, got 0"),
        ({"ingest": {"open_orders_limit": -5}}, "ingest.open_orders_limit", "greater than 0, got -5"),
        ({"ingest": {"ack_wait": float("inf")}}, "ingest.ack_wait", "finite"),
        ({"ingest": {"max_deliver": 0}}, "ingest.max_deliver", "-1 (no limit) or at least 1, got 0"),
        ({"load": {"max_in_flight": 0}}, "load.max_in_flight", "1..10000, got 0"),
        ({"load": {"max_page_builds": 0}}, "load.max_page_builds", "1..load.max_in_flight (64), got 0"),
        ({"load": {"max_in_flight": 4, "max_page_builds": 5}}, "load.max_page_builds", "(4), got 5"),
        ({"load": {"max_request_bytes": 100}}, "load.max_request_bytes", "256..1048576, got 100"),
        ({"load": {"reply_cache_bytes": -1}}, "load.reply_cache_bytes", "0 (no cache) or more, got -1"),
        ({"http": {"listen": "9464"}}, "http.listen", "'9464'"),
        ({"http": {"listen": "0.0.0.0:70000"}}, "http.listen", "0..65535, got '0.0.0.0:70000'"),
        ({"http": {"listen": "::1:9464"}}, "http.listen", "brackets"),
        ({"http": {"listen": "[::1]9464"}}, "http.listen", "'[::1]9464'"),
        ({"metrics": {"key_count_interval": 0}}, "metrics.key_count_interval", "greater than 0"),
        ({"logging": {"level": "TRACE"}}, "logging.level", "'TRACE'"),
        ({"logging": {"format": "xml"}}, "logging.format", "'xml'"),
        ({"shutdown": {"drain_timeout": -0.5}}, "shutdown.drain_timeout", "greater than 0, got -0.5"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key_and_the_value(data: dict[str, Any], key: str, fragment: str) -> None:
    error = refusal(data)
    assert error.key == key
    assert fragment in error.problem
    assert str(error) == f"{key}: {error.problem}"


@pytest.mark.parametrize(
    ("given", "accepted"), [(None, 1), (1, 1), (3, 3), (5, 5), (0, None), (6, None), (-1, None), (2.0, None)]
)
def test_nats_stream_replicas_defaults_to_1_and_must_be_1_to_5(given: int | float | None, accepted: int | None) -> None:
    data: dict[str, Any] = {} if given is None else {"nats": {"stream_replicas": given}}
    if accepted is not None:
        assert config_of(**data).nats.stream_replicas == accepted
        return
    error = refusal(data)
    assert error.key == "nats.stream_replicas"
    assert f"got {given}" in error.problem
    assert ("1..5" in error.problem) is isinstance(given, int)
    assert config_of(environ={"TRADECACHE_NATS_STREAM_REPLICAS": "3"}).nats.stream_replicas == 3


def test_a_missing_trader_id_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"redis": {}}, {})
    assert caught.value.key == "trader_id"
    assert "required" in caught.value.problem


@pytest.mark.parametrize(
    ("nats", "chosen"),
    [
        ({"token": "t", "creds_file": "{file}"}, "token and creds_file"),
        ({"creds_file": "{file}", "nkey_seed_file": "{file}"}, "creds_file and nkey_seed_file"),
        ({"user": "u", "password": "p", "nkey_seed_file": "{file}"}, "user/password and nkey_seed_file"),
    ],
)
def test_only_one_nats_authentication_method_is_accepted(a_file: str, nats: dict[str, str], chosen: str) -> None:
    error = refusal({"nats": {key: value.format(file=a_file) for key, value in nats.items()}})
    assert (error.key, chosen in error.problem) == ("nats", True)


@pytest.mark.parametrize("given", ["tls_cert_file", "tls_key_file"])
def test_a_nats_tls_certificate_and_key_go_together(a_file: str, given: str) -> None:
    assert "go together" in refusal({"nats": {given: a_file}}).problem


def test_redis_tls_files_need_a_rediss_url(a_file: str) -> None:
    error = refusal({"redis": {"url": "redis://cache:6379/0", "ssl_ca_certs": a_file}})
    assert (error.key, "rediss://" in error.problem) == ("redis.ssl_ca_certs", True)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("0.0.0.0:9464", "0.0.0.0", 9464), ("localhost:0", "localhost", 0), ("[::1]:9464", "::1", 9464)],
)
def test_http_listen_gives_host_and_port(listen: str, host: str, port: int) -> None:
    http = config_of(http={"listen": listen}).http
    assert (http.host, http.port) == (host, port)


@pytest.mark.parametrize(("level", "fmt"), [("debug", "TEXT"), ("Warning", "Json")])
def test_logging_names_are_taken_in_any_case(level: str, fmt: str) -> None:
    logging_config = config_of(logging={"level": level, "format": fmt}).logging
    assert (logging_config.level, logging_config.format) == (level.upper(), fmt.lower())


# -- secrets never shown ---------------------------------------------------------------------------


def test_secret_shows_masked_and_reveals_on_purpose() -> None:
    secret = Secret(SECRET)
    assert (repr(secret), str(secret), f"{secret}", secret.reveal()) == ("***", "***", "***", SECRET)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:pw@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("rediss://:pw@cache:6380", "rediss://:***@cache:6380"),
        ("redis://user@cache:6379", "redis://user@cache:6379"),
        ("nats://token@bus:4222", "nats://***@bus:4222"),
        ("tls://u:p@ss@bus:4222", "tls://u:***@bus:4222"),
        ("nats://bus:4222", "nats://bus:4222"),
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_secrets_never_reach_repr_str_or_masked(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "-token\n")
    config = config_of(
        redis={"url": f"redis://app:{SECRET}-url@cache:6379/0", "password": SECRET},
        nats={"servers": [f"nats://u:{SECRET}-nurl@bus:4222"], "token_file": str(token_file)},
    )
    masked = config.masked()
    for shown in (
        repr(config),
        str(config),
        repr(config.redis),
        str(config.nats),
        repr(masked),
        yaml.safe_dump(masked),
    ):
        assert SECRET not in shown
    assert masked["redis"]["url"] == "redis://app:***@cache:6379/0"
    assert masked["redis"]["password"] == "***"
    assert masked["nats"]["token"] == "***"
    assert masked["nats"]["servers"] == ["nats://u:***@bus:4222"]
    assert SECRET not in repr(config.redis.cache_config())


@pytest.mark.parametrize(
    ("data", "environ"),
    [
        ({"redis": {"url": f"http://app:{SECRET}@cache:6379"}}, {}),
        ({"redis": {"url": f"redis://app:{SECRET}@cache:6379/x"}}, {}),
        ({"redis": {"url": f"redis://app:{SECRET}@cache:6379", "ssl_ca_certs": "/nonexistent"}}, {}),
        ({"nats": {"servers": [f"http://u:{SECRET}@bus:4222"]}}, {}),
        ({"nats": {"servers": [f"nats://{SECRET}@:4222"]}}, {}),
        ({"nats": {"password": SECRET}}, {}),
        ({"nats": {"token": SECRET, "user": "u", "password": SECRET}}, {}),
        ({"redis": {"password": 12345}}, {}),
        ({}, {"TRADECACHE_REDIS_URL": f"ftp://u:{SECRET}@h"}),
        ({}, {"TRADECACHE_NATS_TOKEN": SECRET, "TRADECACHE_NATS_CREDS_FILE": "/nonexistent"}),
        ({"redis": {"pasword": SECRET}}, {}),
    ],
)
def test_secrets_never_reach_error_messages(data: dict[str, Any], environ: dict[str, str]) -> None:
    error = refusal(data, environ)
    assert SECRET not in str(error)
    assert "12345" not in str(error)


def test_a_yaml_syntax_error_does_not_quote_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"trader_id: TRADER-001\nredis:\n  password: {SECRET}\n   url: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.key == str(path)
    assert "not valid YAML" in caught.value.problem
    assert SECRET not in str(caught.value)


# -- cache_config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redis", "expected"),
    [
        ({}, {"host": "127.0.0.1", "port": 6379, "db": 0, "ssl": False, "username": None, "password": None}),
        (
            {"url": "redis://app:pw@cache:6380/2"},
            {"host": "cache", "port": 6380, "db": 2, "username": "app", "password": "pw"},
        ),
        (
            {"url": "redis://app:pw@cache/1", "username": "other", "password": "better"},
            {"host": "cache", "port": 6379, "db": 1, "username": "other", "password": "better"},
        ),
        ({"url": "rediss://cache:6380"}, {"ssl": True, "port": 6380}),
        ({"cluster": True}, {"cluster": True, "db": 0}),
        ({"url": "redis://cache?cluster=true"}, {"cluster": True}),
        ({"socket_timeout": 1.5, "socket_connect_timeout": 2}, {"socket_timeout": 1.5, "socket_connect_timeout": 2.0}),
    ],
)
def test_cache_config_combines_the_url_and_the_keys(redis: dict[str, Any], expected: dict[str, Any]) -> None:
    cache_config = config_of(redis=redis).redis.cache_config()
    assert isinstance(cache_config, CacheDatabaseConfig)
    assert {name: getattr(cache_config, name) for name in expected} == expected


def test_the_url_cluster_flag_shows_in_the_redis_section() -> None:
    assert config_of(redis={"url": "redis://cache?cluster=true"}).redis.cluster is True


def test_cache_config_carries_the_tls_files(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")}
    for path in files.values():
        path.write_text("pem\n")
    redis = {"url": "rediss://cache:6380/0", **{name: str(path) for name, path in files.items()}}
    cache_config = config_of(redis=redis).redis.cache_config()
    assert cache_config.ssl is True
    assert (cache_config.ssl_ca_certs, cache_config.ssl_certfile, cache_config.ssl_keyfile) == tuple(
        str(path) for path in files.values()
    )
    assert cache_config.client_kwargs()["ssl_ca_certs"] == str(files["ssl_ca_certs"])


def test_a_password_file_reaches_cache_config(tmp_path: Path) -> None:
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(SECRET + "\n")
    cache_config = config_of(redis={"url": "redis://app@cache", "password_file": str(secret_file)}).redis.cache_config()
    assert (cache_config.username, cache_config.password) == ("app", SECRET)


# -- files -----------------------------------------------------------------------------------------


def test_the_example_file_parses_and_states_the_defaults() -> None:
    config = load_config(CONFIG_DIR / "tradecache.example.yaml", {})
    assert config == Config(trader_id=config.trader_id)
    assert config.trader_id == "TRADER-001"


def test_the_example_file_names_every_key() -> None:
    data = yaml.safe_load((CONFIG_DIR / "tradecache.example.yaml").read_text())
    assert set(data["redis"]) == set(RedisConfig().masked())
    assert set(data["nats"]) == set(NatsConfig().masked())
    assert set(data) == set(Config(trader_id="A-1").masked())


def test_the_dev_file_parses() -> None:
    config = load_config(str(CONFIG_DIR / "dev.yaml"), {})
    assert config.trader_id == "DEV-001"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot read"), ("- a\n- b\n", "mapping"), ("trader_id: [\n", "not valid YAML")],
)
def test_a_file_that_is_not_a_yaml_mapping_is_refused(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "tradecache.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.key == str(path)
    assert fragment in caught.value.problem


def test_an_empty_file_means_defaults_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path, {"TRADECACHE_TRADER_ID": "E-1"}) == Config(trader_id="E-1")


@pytest.mark.parametrize(
    ("trader_id", "consumer"),
    [
        ("TRADER-001", "tradecache-TRADER-001"),
        ("A-1.X-2", "tradecache-A-1_X-2-9d65643a"),
        ("A-1_X-2", "tradecache-A-1_X-2"),
    ],
)
def test_a_trader_id_may_hold_dots_and_its_default_consumer_name_is_valid_and_distinct(
    trader_id: str, consumer: str
) -> None:
    config = parse_config({"trader_id": trader_id}, {})
    assert config.trader_id == trader_id
    assert config.nats.consumer_name == consumer
    assert "." not in config.nats.consumer_name
