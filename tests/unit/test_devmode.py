"""`tradecache dev`'s choices that need no server: the metrics port and how commands name tradecache."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradecache.dev import command as devmode
from tradecache.dev.command import DevProblem, choose_http_port, tradecache_command
from tradecache.dev.stack import HOST, port_is_free


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_busy_default_port_is_reported_and_replaced_by_a_free_one(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(devmode, "DEFAULT_HTTP_PORT", busy_port)  # never 9464 itself: other runs may hold it
    chosen = choose_http_port(None)
    assert chosen != busy_port and port_is_free(chosen)
    assert capsys.readouterr().out == (
        f"  http:   port {busy_port} is in use by another program (another tradecache?); using free port {chosen} "
        "instead (choose one with --http-port)\n"
    )


def test_a_busy_port_given_explicitly_is_an_error_and_a_free_one_is_kept(busy_port: int) -> None:
    with pytest.raises(DevProblem, match=rf"port {busy_port} \(--http-port\) is in use by another program"):
        choose_http_port(busy_port)
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        free = sock.getsockname()[1]
    assert choose_http_port(free) == free
    assert choose_http_port(0) == 0


def test_commands_name_tradecache_by_its_path_unless_path_finds_this_very_one(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Path(sys.executable).parent / "tradecache"
    assert script.is_file(), "the test runs in the environment scripts/setup made"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert tradecache_command() == str(script.absolute())
    monkeypatch.setenv("PATH", str(script.parent))
    assert tradecache_command() == "tradecache"
