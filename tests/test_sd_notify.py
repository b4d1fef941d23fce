"""bot.sd_notify against a real unix datagram socket, as systemd's NOTIFY_SOCKET is one."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from bot import sd_notify


def test_ready_reaches_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert server.recv(64) == b"READY=1"


def test_an_abstract_notify_socket_is_reached_too() -> None:
    name = f"healbot-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": f"@{name}"})
        assert server.recv(64) == b"READY=1"


def test_without_systemd_nothing_is_sent() -> None:
    assert sd_notify.notify("READY=1", {}) is False


def test_a_socket_that_is_gone_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
