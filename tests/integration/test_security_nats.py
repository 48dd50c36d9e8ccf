"""NATS authentication and TLS: the daemon works with the right secret and refuses to start with a wrong one.

Every way SPEC section 5 promises (user/password, token, nkey seed, `.creds` JWT, mutual TLS) runs
against its own real nats-server (config file made here, JWTs signed here, certificates from
`tls.py`). With the right secret the daemon, in-process, stores a published vector scenario in Redis
exactly as expected; with a wrong one `tradecache run`, as a process, exits 1 within seconds and its
log names the problem. A restart of the server under a running daemon is a reconnection, not a stop.
A user allowed only the subjects docs/DEPLOYMENT.md lists runs the whole daemon.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import redis

from tests.backends import Server
from tests.integration.daemon_harness import daemon_config, running_daemon, wait_for
from tests.integration.secure_servers import (
    ConfiguredNatsServer,
    NKey,
    assert_stored_as_expected,
    client_tls,
    creds_text,
    flush_trader,
    operator_setup,
    publish_scenario_as,
    refused_start,
    tls_block,
    user_jwt,
    wait_for_checkpoint_of,
)
from tests.integration.tls import TlsFiles, make_tls_files
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

SCENARIO = "market_order_single_fill_fx"  # currencies, instrument, account, order, command, position
NATS_USER = "sidecar"
NATS_PASSWORD = "nats-password-for-tests"
NATS_TOKEN = "nats-token-for-tests"
AUTHORIZATION_REFUSED = "authorization violation: the server refused these credentials"


@dataclass
class AuthServer:
    """One nats-server with one way to log in: the daemon's `nats:` keys and the publisher's."""

    server: ConfiguredNatsServer
    daemon: dict[str, Any]  # keys of the daemon's `nats:` section
    client: dict[str, Any]  # nats.connect() keyword arguments for the test's publisher
    wrong: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)  # case -> (nats keys, logged)


def _write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def _auth_servers(folder: Path, tls: TlsFiles) -> dict[str, AuthServer]:
    user, stranger = NKey(NKey.USER), NKey(NKey.USER)
    trusted, untrusted = operator_setup(folder / "operator"), operator_setup(folder / "other-operator")
    creds = _write(folder, "sidecar.creds", trusted.creds)
    valid_jwt = user_jwt(trusted.account, user, "sidecar")
    seed_only = f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n"
    seed = _write(folder, "sidecar.nk", user.seed + "\n")
    tls_keys = {
        "tls_ca_file": str(tls.ca.cert),
        "tls_cert_file": str(tls.client.cert),
        "tls_key_file": str(tls.client.key),
    }
    return {
        "user_password": AuthServer(
            ConfiguredNatsServer(f'authorization {{ user: {NATS_USER}, password: "{NATS_PASSWORD}" }}\n'),
            daemon={"user": NATS_USER, "password": NATS_PASSWORD},
            client={"user": NATS_USER, "password": NATS_PASSWORD},
            wrong={
                "wrong_password": ({"user": NATS_USER, "password": "not-the-password"}, AUTHORIZATION_REFUSED),
                "no_credentials": ({}, AUTHORIZATION_REFUSED),
            },
        ),
        "token": AuthServer(
            ConfiguredNatsServer(f'authorization {{ token: "{NATS_TOKEN}" }}\n'),
            daemon={"token": NATS_TOKEN},
            client={"token": NATS_TOKEN},
            wrong={"wrong_token": ({"token": "not-the-token"}, AUTHORIZATION_REFUSED)},
        ),
        "nkey": AuthServer(
            ConfiguredNatsServer(f"authorization {{ users: [ {{ nkey: {user.public} }} ] }}\n"),
            daemon={"nkey_seed_file": seed},
            client={"nkeys_seed": seed},
            wrong={
                "unknown_nkey": (
                    {"nkey_seed_file": _write(folder, "stranger.nk", stranger.seed)},
                    AUTHORIZATION_REFUSED,
                ),
                "not_a_seed": (
                    {"nkey_seed_file": _write(folder, "garbage.nk", "SUNOTASEED\n")},
                    "does not hold a valid nkey seed",
                ),
            },
        ),
        "creds": AuthServer(
            ConfiguredNatsServer(trusted.server_config),
            daemon={"creds_file": creds},
            client={"user_credentials": creds},
            wrong={
                "untrusted_account": (
                    {"creds_file": _write(folder, "untrusted.creds", untrusted.creds)},
                    AUTHORIZATION_REFUSED,
                ),
                "jwt_with_another_users_seed": (
                    # A valid JWT of the trusted account, but the nonce signed with another user's seed.
                    {"creds_file": _write(folder, "mismatched.creds", creds_text(valid_jwt, stranger.seed))},
                    AUTHORIZATION_REFUSED,
                ),
                "not_a_creds_file": (
                    {"creds_file": _write(folder, "garbage.creds", "just some text\n")},
                    "is not a NATS credentials file",
                ),
                "creds_without_a_jwt": (
                    # nats-py reads such a file in an endless loop: the daemon must refuse it first.
                    {"creds_file": _write(folder, "seed-only.creds", seed_only)},
                    "is not a NATS credentials file",
                ),
            },
        ),
        "mutual_tls": AuthServer(
            ConfiguredNatsServer(tls_block(tls, verify=True)),
            daemon=tls_keys,
            client={"tls": client_tls(tls.ca.cert, tls.client.cert, tls.client.key)},
            wrong={
                "untrusted_server_certificate": (
                    {**tls_keys, "tls_ca_file": str(tls.other_ca.cert)},
                    "certificate verify failed",
                ),
                "no_client_certificate": ({"tls_ca_file": str(tls.ca.cert)}, "client certificate"),
                "client_certificate_of_another_ca": (
                    {**tls_keys, "tls_cert_file": str(tls.stranger.cert), "tls_key_file": str(tls.stranger.key)},
                    "client certificate",
                ),
            },
        ),
    }


@pytest.fixture(scope="module")
def auth_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AuthServer]]:
    folder = tmp_path_factory.mktemp("nats-auth")
    servers = _auth_servers(folder, make_tls_files(folder / "tls"))
    try:
        for auth in servers.values():
            auth.server.start()
        yield servers
    finally:
        for auth in servers.values():
            auth.server.close()


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario.load(next(p for p in scenario_paths() if p.stem == SCENARIO))


METHODS = ["user_password", "token", "nkey", "creds", "mutual_tls"]
WRONG = [
    ("user_password", "wrong_password"),
    ("user_password", "no_credentials"),
    ("token", "wrong_token"),
    ("nkey", "unknown_nkey"),
    ("nkey", "not_a_seed"),
    ("creds", "untrusted_account"),
    ("creds", "jwt_with_another_users_seed"),
    ("creds", "not_a_creds_file"),
    ("creds", "creds_without_a_jwt"),
    ("mutual_tls", "untrusted_server_certificate"),
    ("mutual_tls", "no_client_certificate"),
    ("mutual_tls", "client_certificate_of_another_ca"),
]


@pytest.mark.parametrize("method", METHODS)
async def test_the_right_secret_connects_and_a_published_scenario_is_stored(
    method: str, auth_servers: dict[str, AuthServer], scenario: Scenario, redis_server: Server
) -> None:
    auth = auth_servers[method]
    store = redis.Redis.from_url(redis_server.url)
    flush_trader(store, scenario.trader_id)
    config = daemon_config(
        redis_server.url, auth.server.url, scenario.trader_id, nats={**auth.daemon, "connect_timeout": 2.0}
    )
    try:
        async with running_daemon(config):
            last = await publish_scenario_as(scenario, servers=[auth.server.url], **auth.client)
            await wait_for_checkpoint_of(store, scenario.trader_id, last)
        assert_stored_as_expected(store, scenario)
    finally:
        flush_trader(store, scenario.trader_id)
        store.close()


@pytest.mark.parametrize(("method", "case"), WRONG, ids=[case for _, case in WRONG])
def test_a_wrong_secret_stops_the_start_with_exit_1_and_a_message_naming_the_problem(
    method: str, case: str, auth_servers: dict[str, AuthServer], redis_server: Server
) -> None:
    auth = auth_servers[method]
    nats_keys, expected = auth.wrong[case]
    config = {
        "trader_id": "SECURITY-001",
        "redis": {"url": redis_server.url},
        "nats": {"servers": [auth.server.url], "connect_timeout": 2.0, **nats_keys},
        "logging": {"level": "INFO", "format": "json"},
    }
    refused = refused_start(config)
    assert refused.exit_code == 1, refused.log
    assert refused.seconds < 10, f"took {refused.seconds:.1f} s to give up:\n{refused.log}"
    assert "cannot connect to NATS" in refused.log, refused.log
    assert expected in refused.log, refused.log
    assert "consumer created" not in refused.log
    assert "Traceback" not in refused.log, refused.log


async def test_after_a_server_restart_the_daemon_reconnects_with_its_credentials(
    auth_servers: dict[str, AuthServer], scenario: Scenario, redis_server: Server
) -> None:
    """The start is strict, a later disconnection is not: the daemon logs in again by itself (creds: a new nonce)."""
    auth = auth_servers["creds"]
    store = redis.Redis.from_url(redis_server.url)
    flush_trader(store, scenario.trader_id)
    config = daemon_config(redis_server.url, auth.server.url, scenario.trader_id, nats=auth.daemon)
    try:
        async with running_daemon(config) as daemon:
            auth.server.stop()
            await wait_for(lambda: not daemon.nc.is_connected, timeout=10)
            auth.server.start()
            await wait_for(daemon.is_ready, timeout=20)
            last = await publish_scenario_as(scenario, servers=[auth.server.url], **auth.client)
            await wait_for_checkpoint_of(store, scenario.trader_id, last)
        assert_stored_as_expected(store, scenario)
    finally:
        flush_trader(store, scenario.trader_id)
        store.close()


# -- least privilege: the subjects a sidecar user needs (docs/DEPLOYMENT.md) -------------------------

SIDECAR_PUBLISH = ("$JS.API.>", "$JS.ACK.>", "tradecache.dead.{trader}")
SIDECAR_SUBSCRIBE = ("_INBOX.>", "tradecache.load.{trader}.>", "$SRV.>")


def _permissions_server(trader: str) -> ConfiguredNatsServer:
    def quoted(subjects: tuple[str, ...]) -> str:
        return ", ".join(f'"{subject.format(trader=trader)}"' for subject in subjects)

    return ConfiguredNatsServer(
        "authorization { users: [\n"
        f'  {{ user: sidecar, password: "{NATS_PASSWORD}", permissions: {{\n'
        f"      publish: {{ allow: [{quoted(SIDECAR_PUBLISH)}] }},\n"
        f"      subscribe: {{ allow: [{quoted(SIDECAR_SUBSCRIBE)}] }},\n"
        "      allow_responses: true } },\n"
        f'  {{ user: node, password: "{NATS_PASSWORD}" }}\n'
        "] }\n"
    )


async def test_a_sidecar_user_allowed_only_its_subjects_ingests_answers_and_dead_letters(
    scenario: Scenario, redis_server: Server
) -> None:
    """The sidecar as a NATS user allowed only the subjects docs/DEPLOYMENT.md lists (replies to
    requests through `allow_responses`): it creates its streams and consumer, ingests, acks, answers
    load requests and `$SRV` discovery, publishes a dead letter (each of those fails, or stalls
    ingest, without its subject: found by taking them out one at a time)."""
    trader = scenario.trader_id
    store = redis.Redis.from_url(redis_server.url)
    flush_trader(store, trader)
    node = {"user": "node", "password": NATS_PASSWORD}
    with _permissions_server(trader) as server:
        config = daemon_config(redis_server.url, server.url, trader,
                               nats={"user": "sidecar", "password": NATS_PASSWORD, "connect_timeout": 2.0})  # fmt: skip
        try:
            async with running_daemon(config):
                await publish_scenario_as(scenario, servers=[server.url], **node)
                nc = await nats.connect(servers=[server.url], **node)
                try:
                    subjects = Subjects("tradecache", trader)
                    bad = await nc.jetstream().publish(subjects.inbound_for_name("order"), b"\xc1 not msgpack")
                    await wait_for_checkpoint_of(store, trader, bad.seq)
                    letter = await nc.jetstream().get_last_msg("TRADECACHE_DEAD", subjects.dead)
                    assert letter.seq >= 1
                    reply = await nc.request(subjects.load("orders"), b"{}", timeout=5)
                    assert not (reply.headers or {}).get("Nats-Service-Error") and json.loads(reply.data)
                    pong = await nc.request("$SRV.PING.tradecache", b"", timeout=5)
                    assert json.loads(pong.data)["name"] == "tradecache"
                finally:
                    await nc.close()
            assert_stored_as_expected(store, scenario)
        finally:
            flush_trader(store, trader)
            store.close()


def test_the_permissions_in_the_deployment_guide_are_the_ones_tested_here() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    block = text[text.index("permissions: {") : text.index("```", text.index("permissions: {"))]
    publish = block[block.index("publish:") : block.index("subscribe:")]
    subscribe = block[block.index("subscribe:") : block.index("allow_responses")]
    for allowed, part in ((SIDECAR_PUBLISH, publish), (SIDECAR_SUBSCRIBE, subscribe)):
        listed = [word.strip(' ",[]') for word in part.split("[", 1)[1].split("]", 1)[0].split(",")]
        assert listed == [subject.replace("{trader}", "<trader>") for subject in allowed]
    assert "allow_responses: true" in block
