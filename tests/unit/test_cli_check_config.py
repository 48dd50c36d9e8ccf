"""`tradecache --version` and `tradecache check-config` (SPEC section 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tradecache import __version__
from tradecache.cli import main

SECRET = "cli-S3cret-99"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config reads os.environ: keep the developer's TRADECACHE_* variables out of these tests."""
    for name in list(os.environ):
        if name.startswith("TRADECACHE_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tradecache.yaml"
    path.write_text(text)
    return str(path)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tradecache {__version__}"


def test_check_config_prints_the_effective_config_masked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        tmp_path,
        f"trader_id: TRADER-001\nredis:\n  url: redis://app:{SECRET}@cache:6379/1\nnats:\n  token: {SECRET}\n",
    )
    assert main(["check-config", "--config", path]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    printed = yaml.safe_load(out)
    assert printed["trader_id"] == "TRADER-001"
    assert printed["redis"]["url"] == "redis://app:***@cache:6379/1"
    assert printed["nats"]["token"] == "***"
    assert printed["nats"]["consumer"] == "tradecache-TRADER-001"
    assert printed["ingest"]["batch_size"] == 256


def test_check_config_applies_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADECACHE_HTTP_LISTEN", "127.0.0.1:9999")
    assert main(["check-config", "--config", write_config(tmp_path, "trader_id: TRADER-001\n")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["http"]["listen"] == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trader_id: TRADER-001\nredis:\n  hots: x\n", "tradecache: config error: redis.hots: unknown key"),
        (
            "trader_id: TRADER-001\nnats:\n  servers: [nats://a:4222, http://b:80]\n",
            "tradecache: config error: nats.servers[1]: unsupported scheme 'http'",
        ),
        ("trader_id: TRADER001\n", "tradecache: config error: trader_id: must be NAME-TAG"),
        ("ingest:\n  batch_size: 0\n", "tradecache: config error: trader_id: is required"),
    ],
)
def test_a_config_error_is_printed_to_stderr_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    assert main(["check-config", "--config", write_config(tmp_path, text)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message)
    assert captured.out == ""


def test_a_missing_config_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "absent.yaml")
    assert main(["check-config", "--config", missing]) == 2
    assert capsys.readouterr().err.startswith(f"tradecache: config error: {missing}: cannot read")


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_runs_check_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"trader_id: SUB-001\nredis:\n  password: {SECRET}\n")
    environ = {name: value for name, value in os.environ.items() if not name.startswith("TRADECACHE_")}
    result = subprocess.run(
        [sys.executable, "-m", "tradecache", "check-config", "--config", path],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert (printed["trader_id"], printed["redis"]["password"]) == ("SUB-001", "***")
