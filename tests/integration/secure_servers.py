"""redis-server and nats-server with authentication and TLS, and NATS credentials made by the tests.

The servers are devstack's (`RedisServer`, `NatsServer`: real processes on free ports) with the extra
settings passed on their command line or in a config file:

- `SecureRedisServer`: `requirepass` for the default (admin) user, optionally TLS only (`--port 0`,
  `--tls-port`); ACL users are added with `add_acl_user`.
- `ConfiguredNatsServer`: nats-server with a config file (`-c`) holding `authorization`, `operator`
  / `resolver` or `tls` blocks; the command line still sets the ports and JetStream.

NATS identities: `NKey` makes nkeys (operator `O...`, account `A...`, user `U...`) and `issue_jwt`
signs NATS JWTs with them (header `{"typ":"JWT","alg":"ed25519-nkey"}`, claims `jti`, `iat`, `iss`,
`sub`, `name`, `nats`), so `operator_setup` builds what `nsc` would: an operator, an account with
JetStream enabled, preloaded in the server by the MEMORY resolver, and a user's `.creds` file.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import nats
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.integration.daemon_harness import wait_for
from tests.integration.daemon_process import DaemonProcess
from tests.integration.tls import TlsFiles
from tests.vectors.scenarios import SCENARIO_KINDS, Scenario, replay_into_store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import currency_fields
from tradecache.dev.stack import HOST, NatsServer, RedisServer
from tradecache.model import Collection
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

ADMIN_PASSWORD: Final = "admin-password-for-tests"
NO_RETRY: Final = Retry(NoBackoff(), 0)  # redis-py retries with backoff by default: seconds per refusal

# -- Redis ------------------------------------------------------------------------------------


class RedisWithoutTls(RuntimeError):
    """The redis-server binary under test was built without TLS."""


class SecureRedisServer(RedisServer):
    """redis-server whose default user needs `ADMIN_PASSWORD`; TLS-only when `tls` is given.

    With TLS the plain port is closed (`--port 0`) and `port` is the TLS port; `tls_auth_clients` is
    redis' `--tls-auth-clients` (`yes`: a client certificate signed by the CA is required).
    """

    def __init__(self, *, tls: TlsFiles | None = None, tls_auth_clients: str = "yes") -> None:
        super().__init__(appendonly=False)
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients

    def command(self) -> list[str]:
        command = [*super().command(), "--requirepass", ADMIN_PASSWORD]
        if self.tls is not None:
            command += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.server.cert), "--tls-key-file", str(self.tls.server.key),
                "--tls-ca-cert-file", str(self.tls.ca.cert), "--tls-auth-clients", self.tls_auth_clients,
            ]  # fmt: skip
        return command

    def start(self, timeout: float = 30.0) -> None:
        try:
            super().start(timeout)
        except RuntimeError as exc:
            if self.tls is not None and "tls" in str(exc).lower():
                raise RedisWithoutTls(
                    f"{self.binary} cannot serve TLS (a redis-server built without BUILD_TLS=yes?): {exc}"
                ) from exc
            raise

    def tls_kwargs(self, *, client_cert: bool = True) -> dict[str, Any]:
        """redis-py keyword arguments for TLS to this server (the CA, and the client certificate)."""
        if self.tls is None:
            return {}
        kwargs: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.tls.ca.cert)}
        if client_cert:
            kwargs.update(ssl_certfile=str(self.tls.client.cert), ssl_keyfile=str(self.tls.client.key))
        return kwargs

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=self.port, password=ADMIN_PASSWORD, socket_timeout=2.0, socket_connect_timeout=2.0,
            retry=NO_RETRY, **self.tls_kwargs(),
        )  # fmt: skip

    def answers(self) -> bool:
        client = self.admin()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def as_user(self, username: str | None, password: str | None, *, client_cert: bool = True) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=self.port, username=username, password=password, socket_timeout=2.0,
            socket_connect_timeout=2.0, retry=NO_RETRY, **self.tls_kwargs(client_cert=client_cert),
        )  # fmt: skip

    def plain_client(self) -> redis.Redis:
        """A client without TLS (to check that a TLS-only server refuses it)."""
        return redis.Redis(host=HOST, port=self.port, password=ADMIN_PASSWORD, socket_timeout=2.0, retry=NO_RETRY)

    @property
    def url(self) -> str:
        return self.url_for()

    def url_for(self, username: str | None = None, password: str | None = None) -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        userinfo = f"{username or ''}:{password}@" if password is not None else ""
        return f"{scheme}://{userinfo}{HOST}:{self.port}/0"

    def add_acl_user(self, username: str, password: str, rules: list[str]) -> None:
        """`ACL SETUSER username reset on >password <rules...>` (reset: no keys, no commands first)."""
        client = self.admin()
        try:
            command: Any = client.execute_command  # untyped in redis-py
            command("ACL", "SETUSER", username, "reset", "on", f">{password}", *rules)
        finally:
            client.close()


# -- NATS -------------------------------------------------------------------------------------


class ConfiguredNatsServer(NatsServer):
    """nats-server with `config` (nats-server config syntax) written to a file and passed with `-c`."""

    def __init__(self, config: str) -> None:
        super().__init__()
        self.config = config
        self.config_path = self.data_dir / "server.conf"

    def command(self) -> list[str]:
        self.config_path.write_text(self.config)
        binary, *rest = super().command()
        return [binary, "-c", str(self.config_path), *rest]


def _nkeys() -> Any:
    try:
        return importlib.import_module("nkeys")
    except ImportError as exc:
        raise ImportError(
            "the NATS nkey/.creds tests need the 'nkeys' package (nats-py's [nkeys] extra); tradecache needs it "
            "too for nats.nkey_seed_file and nats.creds_file: depend on 'nats-py[nkeys]'"
        ) from exc


class NKey:
    """A fresh nkey of one role: `public` is its `O…`/`A…`/`U…` id, `seed` its `S…` secret."""

    # The nkeys prefix bytes (the first base32 letter of the public key: O, A, U).
    OPERATOR: ClassVar[int] = 14 << 3
    ACCOUNT: ClassVar[int] = 0
    USER: ClassVar[int] = 20 << 3

    def __init__(self, role: int) -> None:
        nkeys = _nkeys()
        self.seed: str = nkeys.encode_seed(os.urandom(32), role).decode()
        self._pair = nkeys.from_seed(bytearray(self.seed.encode()))
        self.public: str = self._pair.public_key.decode()

    def sign(self, data: bytes) -> bytes:
        signature: bytes = self._pair.sign(data)
        return signature


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue_jwt(issuer: NKey, subject: str, name: str, nats_claims: dict[str, Any]) -> str:
    """A NATS (v2) JWT for `subject`, signed by `issuer` with ed25519."""
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    claims["nats"] = {**nats_claims, "version": 2}
    # The id is a digest of the claims without it, as the NATS tools do.
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64url(json.dumps(claims).encode())
    signature = _b64url(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


UNLIMITED_ACCOUNT: Final[dict[str, Any]] = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1,
    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,  # JetStream on, no limits
}  # fmt: skip


def creds_text(user_jwt: str, user_seed: str) -> str:
    """A `.creds` file as `nsc` writes it: the user's JWT, then the user's nkey seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def user_jwt(account: NKey, user: NKey, name: str) -> str:
    """A user JWT for `user`, issued by `account`, with no limits."""
    claims = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user"}
    return issue_jwt(account, user.public, name, claims)


def user_creds(account: NKey, name: str) -> str:
    """The `.creds` text of a new user of `account`."""
    user = NKey(NKey.USER)
    return creds_text(user_jwt(account, user, name), user.seed)


@dataclass(frozen=True)
class OperatorSetup:
    """Decentralized (JWT) auth: the server config, and the account (with JetStream) it trusts."""

    server_config: str
    account: NKey

    @property
    def creds(self) -> str:
        """A `.creds` of a new user of the trusted account."""
        return user_creds(self.account, "tradecache")


def operator_setup(folder: Path) -> OperatorSetup:
    operator, system, account = NKey(NKey.OPERATOR), NKey(NKey.ACCOUNT), NKey(NKey.ACCOUNT)
    operator_claims = {"type": "operator", "system_account": system.public}
    operator_jwt = issue_jwt(operator, operator.public, "tradecache-tests", operator_claims)
    # JetStream needs a system account for its internal subscriptions; the trading account gets JetStream.
    system_jwt = issue_jwt(operator, system.public, "SYS", {"type": "account"})
    account_claims = {"limits": UNLIMITED_ACCOUNT, "default_permissions": {"pub": {}, "sub": {}}, "type": "account"}
    account_jwt = issue_jwt(operator, account.public, "TRADING", account_claims)
    folder.mkdir(parents=True, exist_ok=True)
    operator_path = folder / "operator.jwt"
    operator_path.write_text(operator_jwt)
    config = (
        f"operator: {json.dumps(str(operator_path))}\n"
        f"system_account: {system.public}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {system.public}: {json.dumps(system_jwt)}\n"
        f"  {account.public}: {json.dumps(account_jwt)}\n"
        "}\n"
    )
    return OperatorSetup(server_config=config, account=account)


def tls_block(files: TlsFiles, verify: bool = True) -> str:
    """nats-server's `tls {}`: its certificate, the CA clients must be signed by, and `verify`."""
    return (
        "tls {\n"
        f"  cert_file: {json.dumps(str(files.server.cert))}\n"
        f"  key_file: {json.dumps(str(files.server.key))}\n"
        f"  ca_file: {json.dumps(str(files.ca.cert))}\n"
        f"  verify: {'true' if verify else 'false'}\n"
        "  timeout: 2\n"
        "}\n"
    )


def client_tls(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


# -- publishing and checking ------------------------------------------------------------------


async def publish_scenario_as(scenario: Scenario, **connect: Any) -> int:
    """Publish every message of `scenario` with a client connected with `connect` (auth, TLS, servers)."""
    subjects = Subjects("tradecache", scenario.trader_id)
    nc = await nats.connect(allow_reconnect=False, connect_timeout=5, **connect)
    try:
        js = nc.jetstream()
        last = 0
        for kind, _type, payload in scenario.messages:
            last = (await js.publish(subjects.inbound_for(SCENARIO_KINDS[kind]), payload)).seq
        return last
    finally:
        await nc.close()


def checkpoint(client: redis.Redis, trader_id: str) -> int:
    raw = client.get(Keys(trader_id).checkpoint())
    return int(raw) if raw else 0


def assert_stored_as_expected(client: redis.Redis, scenario: Scenario) -> None:
    """Every entity key of the scenario holds exactly what the pure core says it stores."""
    expected = replay_into_store(scenario).store
    keys = Keys(scenario.trader_id)
    assert expected.lists, "the scenario stores nothing: a useless check"
    for (collection, key), payloads in expected.lists.items():
        assert client.lrange(keys.entity(collection, key), 0, -1) == payloads, f"{collection}:{key}"
    for (collection, key), payload in expected.values.items():
        if collection == Collection.CURRENCIES:
            currency = MsgPackSerializer().deserialize(payload)
            assert isinstance(currency, Currency)
            raw: dict[bytes, bytes] = client.hgetall(keys.entity(collection, key))  # type: ignore[assignment]
            stored = {k.decode(): v.decode() for k, v in raw.items()}
            assert stored == currency_fields(currency), f"{collection}:{key}"
        else:
            assert client.get(keys.entity(collection, key)) == payload, f"{collection}:{key}"


async def wait_for_checkpoint_of(client: redis.Redis, trader_id: str, sequence: int, timeout: float = 15.0) -> None:
    """Wait until the daemon committed `sequence`, read with `client` (any auth, any TLS)."""
    try:
        await wait_for(lambda: checkpoint(client, trader_id) >= sequence, timeout=timeout)
    except TimeoutError:
        raise AssertionError(
            f"checkpoint {checkpoint(client, trader_id)} never reached {sequence} in {timeout} s"
        ) from None


@dataclass(frozen=True)
class RefusedStart:
    exit_code: int
    seconds: float
    log: str


def refused_start(config: dict[str, Any], timeout: float = 20.0) -> RefusedStart:
    """Run `tradecache run` with `config`; it must exit by itself within `timeout` seconds."""
    daemon = DaemonProcess(config)
    started = time.monotonic()
    daemon.start()
    try:
        exit_code = daemon.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the daemon still runs after {timeout} s instead of refusing to start:\n{daemon.log()}"
        ) from None
    finally:
        daemon.kill()
    return RefusedStart(exit_code, time.monotonic() - started, daemon.log())


def flush_trader(client: redis.Redis, trader_id: str) -> None:
    """Delete one trader's keys (SCAN + UNLINK, as `flush()` does)."""
    batch = list(client.scan_iter(match=f"trader-{trader_id}:*", count=1000))
    if batch:
        client.unlink(*batch)


__all__ = [
    "ADMIN_PASSWORD",
    "NO_RETRY",
    "ConfiguredNatsServer",
    "NKey",
    "OperatorSetup",
    "RedisWithoutTls",
    "RefusedStart",
    "SecureRedisServer",
    "assert_stored_as_expected",
    "checkpoint",
    "client_tls",
    "creds_text",
    "flush_trader",
    "issue_jwt",
    "operator_setup",
    "publish_scenario_as",
    "refused_start",
    "tls_block",
    "user_creds",
    "user_jwt",
    "wait_for_checkpoint_of",
]
