"""Heartbeat: the last scan per source in /status and `healbot status`, and a dead-man's switch URL
pinged while scanning works — against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot import commands
from bot.config import load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon
from bot.errors import ConfigError
from bot.heartbeat import Heartbeat, SourceState, load_scans, ping, scan_lines
from bot.runner.claude_cli import ClaudeCliRunner
from tests.helpers import free_port, make_repo, until


class Switch:
    """A dead-man's switch service: counts GETs per path, answers `status`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[str] = []
        self.status = 200
        switch = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                switch.hits.append(self.path)
                self.send_response(switch.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(name="switch")
def switch_fixture() -> Iterator[Switch]:
    switch = Switch()
    switch.thread.start()
    yield switch
    switch.server.shutdown()
    switch.server.server_close()
    switch.thread.join(timeout=5)


def write_config(tmp_path: Path, general: str = "") -> Path:
    repo = tmp_path / "svc"
    if not repo.exists():
        make_repo(repo, {"app.py": "x = 1\n"})
    log = tmp_path / "svc.log"
    log.write_text("start\n")
    path = tmp_path / "healbot.toml"
    path.write_text(
        f"""
[healbot]
state_dir = "{tmp_path}/state"
poll_interval_s = 0.05
{general}

[services.svc]
repo = "{repo}"
logs = ["{log}", "{tmp_path}/missing/never.log"]

[services.svc.manager]
type = "command"
restart = ["true"]
"""
    )
    return path


def make_daemon(config_path: Path) -> Daemon:
    config = load_config(config_path)
    out = io.StringIO()
    return Daemon(config, ConsoleChannel(out=out, interactive=False), runner=ClaudeCliRunner(config.claude))


async def test_the_switch_is_pinged_while_scanning_and_status_shows_each_source(
    tmp_path: Path, switch: Switch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_path = "/ping/5f0c1b2a-secret-uuid"
    config_path = write_config(
        tmp_path, f'heartbeat_url = "{switch.url(secret_path)}"\nheartbeat_interval_s = 0.1'
    )
    daemon = make_daemon(config_path)
    await daemon.start()
    try:
        await until(lambda: len(switch.hits) >= 3, what="three pings", timeout=15.0)
        assert set(switch.hits) == {secret_path}
        scans = await until(
            lambda: load_scans(daemon.config.state_dir), what="the heartbeat file", timeout=15.0
        )
    finally:
        await daemon.stop()
        daemon.store.close()
    by_source = {s.source_id.split(":", 1)[1]: s for s in scans}
    live = by_source[str(tmp_path / "svc.log")]
    assert live.problem is None and live.last_ok is not None and time.time() - live.last_ok < 10
    assert set(by_source) == {str(tmp_path / "svc.log"), str(tmp_path / "missing/never.log")}

    capsys.readouterr()
    assert commands.status(config_path) == 0
    printed = capsys.readouterr().out
    assert "heartbeat:" in printed
    assert f"svc file:{tmp_path}/svc.log: last scan" in printed and "s ago" in printed


async def test_a_failing_switch_is_logged_and_scanning_carries_on(
    tmp_path: Path, switch: Switch, caplog: pytest.LogCaptureFixture
) -> None:
    switch.status = 500
    config_path = write_config(
        tmp_path, f'heartbeat_url = "{switch.url("/p/secret")}"\nheartbeat_interval_s = 0.1'
    )
    daemon = make_daemon(config_path)
    await daemon.start()
    try:
        await until(lambda: len(switch.hits) >= 2, what="two pings", timeout=15.0)
        polls = daemon.heartbeat.polls
        await until(lambda: daemon.heartbeat.polls > polls + 2, what="polls after failed pings", timeout=15.0)
    finally:
        await daemon.stop()
        daemon.store.close()
    failures = [r.getMessage() for r in caplog.records if "heartbeat ping failed" in r.getMessage()]
    assert failures and f"http://127.0.0.1:{switch.port} answered HTTP 500" in failures[0]
    assert all("secret" not in message for message in failures)  # the URL's secret path is not logged


def test_ping_reports_unreachable_and_http_errors_without_the_path(switch: Switch) -> None:
    assert ping(switch.url("/ok")) is None
    switch.status = 404
    assert ping(switch.url("/k/abc")) == f"http://127.0.0.1:{switch.port} answered HTTP 404"
    dead = free_port()
    problem = ping(f"http://127.0.0.1:{dead}/k/abc", timeout_s=2)
    assert problem is not None and "unreachable" in problem and "/k/abc" not in problem


async def test_no_ping_when_no_scan_completed_since_the_last_one(tmp_path: Path, switch: Switch) -> None:
    config_path = write_config(tmp_path, f'heartbeat_url = "{switch.url("/p")}"\nheartbeat_interval_s = 3600')
    daemon = make_daemon(config_path)  # not started: nothing scans
    try:
        assert await daemon.ping_heartbeat() is False
        await daemon.poll()
        assert await daemon.ping_heartbeat() is True
        assert await daemon.ping_heartbeat() is False  # a stuck loop goes silent
    finally:
        daemon.store.close()
    assert switch.hits == ["/p"]


def test_heartbeat_keeps_the_last_good_scan_of_a_failing_source(tmp_path: Path) -> None:
    beat = Heartbeat(tmp_path / "hb.json", save_every_s=3600)
    beat.scanned([SourceState("file:/a", "svc", None)], now=100.0)
    beat.scanned([SourceState("file:/a", "svc", "permission denied")], now=160.0)
    [scan] = beat.snapshot()
    assert scan.last_ok == 100.0 and scan.problem == "permission denied"
    assert scan_lines(beat.snapshot(), now=220.0) == ["svc file:/a: last scan 2 min ago · permission denied"]
    assert load_scans(tmp_path) is None  # another name: no heartbeat file there
    beat.scanned([], now=170.0)  # a reload removed the source
    assert beat.snapshot() == ()


def test_heartbeat_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, 'heartbeat_url = "ftp://x/secret"'))
    assert "healbot.heartbeat_url" in str(info.value) and "secret" not in str(info.value)
    with pytest.raises(ConfigError, match="heartbeat_interval_s"):
        load_config(write_config(tmp_path, "heartbeat_interval_s = 0"))
