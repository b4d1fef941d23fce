"""PM2 log sources against a real PM2 daemon: the three log shapes PM2 writes (raw, `--time` stamps,
`--log-type json` chunks) give the same error record and the same fingerprint; files found via jlist."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import HealthConfig, ServiceConfig
from bot.grouping import Grouper
from bot.models import LogLine, LogRecord
from bot.records import RecordAssembler
from bot.sources import build_sources
from bot.sources.managed import ManagerLogSources
from bot.sources.pm2 import Pm2LogSource, unwrap_pm2_json
from healers.services.pm2 import Pm2Manager
from tests.fakes.pm2_env import Pm2Env
from tests.fakes.supervisor_env import TINY_SERVICE
from tests.helpers import free_port, wait_until

SHAPES = {"raw": (), "stamped": ("--time",), "jsonlog": ("--log-type", "json")}


@pytest.fixture(scope="module")
def pm2() -> Iterator[Pm2Env]:
    env = Pm2Env.start()
    try:
        for name, flags in SHAPES.items():
            env.run(
                "start", str(TINY_SERVICE), "--name", name, "--interpreter", sys.executable, *flags,
                extra_env={"PORT": str(free_port())},
            )  # fmt: skip
        yield env
    finally:
        env.stop()


def sources_of(env: Pm2Env, app: str, tmp_path: Path) -> list[Pm2LogSource]:
    manager = Pm2Manager(app, pm2_home=str(env.home), binary=env.binary, timeout_s=30)
    cfg = ServiceConfig(app, tmp_path, (), "pm2", {"pm2_home": str(env.home)}, HealthConfig())
    sources = build_sources(cfg, manager)
    assert [type(s) for s in sources] == [Pm2LogSource, Pm2LogSource, ManagerLogSources]
    return [s for s in sources if isinstance(s, Pm2LogSource)]


def hit_error(env: Pm2Env, app: str) -> None:
    port = env.app(app)["pm2_env"]["env"]["PORT"]

    def answered() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/error", timeout=5).close()
        except urllib.error.HTTPError as exc:
            return exc.code == 500
        except OSError:
            return False
        return False

    wait_until(answered, what=f"{app} to answer /error")


def error_records(source: Pm2LogSource, cursor: str) -> list[LogRecord]:
    lines: list[LogLine] = []

    def complete() -> bool:
        nonlocal cursor
        batch = source.read(cursor)
        lines.extend(batch.lines)
        cursor = batch.cursor
        return any(line.text.endswith("KeyError: 'missing_key'") for line in lines)

    wait_until(complete, what=f"the KeyError traceback in {source.path}")
    assembler = RecordAssembler("svc", source.source_id)
    return [r for r in assembler.feed(lines, 1.0) + assembler.flush() if "KeyError" in r.text]


@pytest.mark.pm2
def test_each_pm2_log_shape_gives_one_traceback_record_with_the_same_fingerprint(
    pm2: Pm2Env, tmp_path: Path
) -> None:
    grouper = Grouper()
    fingerprints = {}
    for app in SHAPES:
        sources = sources_of(pm2, app, tmp_path)
        assert [s.path for s in sources] == [
            pm2.home / f"logs/{app}-out.log",
            pm2.home / f"logs/{app}-error.log",
        ]
        err = sources[1]
        cursor = err.read(None).cursor
        hit_error(pm2, app)

        [record] = error_records(err, cursor)

        body = [line.split(": ", 1)[-1] if app == "stamped" else line for line in record.text.split("\n")]
        assert "request /error failed" in body[0]
        assert body[1] == "Traceback (most recent call last):"
        assert body[-1] == "KeyError: 'missing_key'"
        assert '{"message"' not in record.text
        fp = grouper.fingerprint(record)
        assert fp.is_error and fp.exception_type == "KeyError"
        fingerprints[app] = fp.key
    assert len(set(fingerprints.values())) == 1, fingerprints


@pytest.mark.pm2
def test_json_entries_are_really_what_pm2_wrote(pm2: Pm2Env, tmp_path: Path) -> None:
    """The premise of the unwrapping: the raw file holds JSON objects with PM2's keys."""
    hit_error(pm2, "jsonlog")
    path = pm2.home / "logs/jsonlog-error.log"
    wait_until(lambda: "missing_key" in path.read_text(), what="the traceback in the json log")
    entries = [json.loads(line) for line in path.read_text().splitlines() if line]
    assert all({"message", "timestamp", "type", "app_name"} <= entry.keys() for entry in entries)
    assert any("Traceback" in entry["message"] for entry in entries)


def line(text: str, *, truncated: bool = False) -> LogLine:
    return LogLine(text, "file:/x", 7, truncated)


def entry(message: object, **extra: object) -> str:
    data = {"message": message, "timestamp": "2026-11-23T07:23:27.922Z", "type": "err", "app_name": "svc"}
    data.update(extra)
    return json.dumps(data)


def test_unwrap_splits_a_chunk_into_clean_capped_lines() -> None:
    chunk = entry(
        "Traceback (most recent call last):\n\x1b[31m  File \"a.py\", line 1\x00\r\nKeyError: 'k'\n"
    )
    lines = unwrap_pm2_json(line(chunk), 8192)
    assert lines is not None
    assert [x.text for x in lines] == [
        "Traceback (most recent call last):",
        '  File "a.py", line 1',
        "KeyError: 'k'",
    ]
    assert {x.line_no for x in lines} == {7}
    [long] = unwrap_pm2_json(line(entry("x" * 50)), 10) or ()
    assert long.text == "x" * 10 and long.truncated


@pytest.mark.parametrize(
    "text",
    [
        '{"message": "no pm2 keys", "level": "error"}',  # an app's own structured log line
        entry(["not", "a", "string"]),
        '{"message": "cut',  # not JSON
        "[1, 2]",
        "plain line mentioning app_name",
    ],
)
def test_lines_that_are_not_pm2_entries_are_left_alone(text: str) -> None:
    assert unwrap_pm2_json(line(text), 8192) is None


def test_a_truncated_entry_is_kept_as_a_capped_plain_line(tmp_path: Path) -> None:
    log = tmp_path / "svc-error.log"
    source = Pm2LogSource("svc", log, max_line_bytes=100)
    log.write_text("")
    cursor = source.read(None).cursor
    huge = entry("E" * 200_000)
    with log.open("a") as out:
        out.write(huge + "\n" + entry("after\n") + "\n")

    batch = source.read(cursor)

    assert [(x.text[:12], len(x.text), x.truncated) for x in batch.lines] == [
        ('{"message": ', 100, True),
        ("after", 5, False),
    ]


def test_an_entry_with_very_many_lines_is_bounded() -> None:
    lines = unwrap_pm2_json(line(entry("a\n" * 5000)), 8192)
    assert lines is not None and len(lines) == 1001
    assert lines[-1].text == "… (4000 more lines in this PM2 entry)"
