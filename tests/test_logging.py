"""Operator logs: text or JSON lines, service and incident ids carried, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from bot.logging_setup import LogFormat, configure_logging

TELEGRAM_TOKEN = "7012345678:AAH9xQk2L0mZ8vB3nR5tY7uW1eC4dF6gH8j"


@pytest.fixture(name="capture")
def capture_fixture() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in before[0]:
        root.addHandler(handler)
    root.setLevel(before[1])


def test_json_lines_carry_service_and_incident_and_no_secrets(capture: io.StringIO) -> None:
    configure_logging(
        LogFormat.JSON, level=logging.INFO, stream=capture, environ={"HEALBOT_TELEGRAM_TOKEN": TELEGRAM_TOKEN}
    )
    log = logging.getLogger("healbot.test")
    log.warning("restarting %s with password=hunter2hunter2", "web", extra={"service": "web", "incident": 7})
    log.info("token %s leaked into a message", TELEGRAM_TOKEN)
    try:
        raise RuntimeError(f"failed with {TELEGRAM_TOKEN}")
    except RuntimeError:
        log.exception("apply failed", extra={"service": "web", "incident": 7, "change": 3})
    lines = capture.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(entries) == 3
    first = entries[0]
    assert first["level"] == "WARNING" and first["logger"] == "healbot.test"
    assert first["service"] == "web" and first["incident"] == 7
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert "hunter2hunter2" not in first["message"] and "[REDACTED:" in first["message"]
    assert "service" not in entries[1]  # no ids where none are known
    assert entries[2]["change"] == 3 and "RuntimeError" in entries[2]["exception"]
    assert TELEGRAM_TOKEN not in capture.getvalue()


def test_text_lines_show_the_ids_and_are_redacted_too(capture: io.StringIO) -> None:
    configure_logging(LogFormat.TEXT, level=logging.INFO, stream=capture, environ={})
    logging.getLogger("healbot.test").error(
        "bot token %s refused", TELEGRAM_TOKEN, extra={"service": "api", "incident": 12}
    )
    text = capture.getvalue()
    assert "ERROR healbot.test: bot token" in text
    assert "[service=api incident=12]" in text
    assert TELEGRAM_TOKEN not in text


def test_configuring_twice_replaces_the_handler_instead_of_doubling_lines(capture: io.StringIO) -> None:
    configure_logging(LogFormat.TEXT, level=logging.INFO, stream=capture, environ={})
    configure_logging(LogFormat.JSON, stream=capture, environ={})  # level kept
    logging.getLogger("healbot.test").info("once")
    [line] = capture.getvalue().splitlines()
    assert json.loads(line)["message"] == "once"


def _config(tmp_path: Path, general: str) -> Path:
    path = tmp_path / "healbot.toml"
    path.write_text(
        f"""
[healbot]
{general}

[services.svc]
repo = "{tmp_path}"

[services.svc.manager]
type = "command"
restart = ["true"]
"""
    )
    return path


def test_log_format_key_is_checked(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, 'log_format = "json"'), check_repos=False).log_format == "json"
    assert load_config(_config(tmp_path, ""), check_repos=False).log_format == "text"
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, 'log_format = "xml"'), check_repos=False)
    assert "healbot.log_format" in str(info.value) and "text, json" in str(info.value)
