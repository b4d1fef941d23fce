"""journald and docker sources against recorded output, through a real subprocess that replays it."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from bot.errors import SourceError
from bot.sources.command import run_log_command
from bot.sources.docker import DockerLogsSource, parse_timestamped
from bot.sources.journald import JournaldSource, parse_entries

RECORDED = Path(__file__).parent / "data" / "recorded"


def replayer(tmp_path: Path, stdout: Path | None, stderr: Path | None = None, rc: int = 0) -> Path:
    """An executable that logs its argv to argv.jsonl and prints the recorded files."""
    script = tmp_path / "fake-cli"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(tmp_path / 'argv.jsonl')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.stdout.buffer.write(open({str(stdout)!r}, 'rb').read()) if {stdout is not None} else None\n"
        f"sys.stderr.buffer.write(open({str(stderr)!r}, 'rb').read()) if {stderr is not None} else None\n"
        f"sys.exit({rc})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]


def test_journald_first_read_marks_the_end_then_reads_after_the_cursor(tmp_path: Path) -> None:
    source = JournaldSource(
        "web", "web.service", binary=str(replayer(tmp_path, RECORDED / "journalctl-json-web.jsonl"))
    )
    first = source.read(None)
    assert first.lines == ()
    batch = source.read(first.cursor)
    texts = [line.text for line in batch.lines]
    assert texts[0] == "request /error failed"
    assert texts[1] == "Traceback (most recent call last):" and texts[4] == "KeyError: 'item-1'"
    assert texts[-1] != "bad\ufffd ERROR"  # the entry at the cursor itself was read before: left out
    other = source.read(json.dumps({"journal": "s=elsewhere"}))  # the replayer prints all entries again
    assert other.lines[-1].text == "bad\ufffd ERROR"  # MESSAGE as a byte array with invalid UTF-8
    argv = calls(tmp_path)
    assert argv[0][-2:] == ["-n", "1"]
    assert argv[1][argv[1].index("--cursor") + 1] == json.loads(first.cursor)["journal"]
    assert json.loads(batch.cursor)["journal"].endswith("x=ab2")  # the cursor entry (ab3) was skipped
    assert json.loads(other.cursor)["journal"].endswith("x=ab3")


def test_journald_without_journal_is_a_clear_error(tmp_path: Path) -> None:
    source = JournaldSource(
        "web", "web.service", binary=str(replayer(tmp_path, RECORDED / "journalctl-no-journal.stdout"))
    )
    with pytest.raises(SourceError, match="no journal files"):
        source.read(None)


def test_journald_failure_and_bad_cursor_are_errors(tmp_path: Path) -> None:
    stderr = RECORDED / "systemctl-show-no-systemd.stderr"
    source = JournaldSource("web", "web.service", binary=str(replayer(tmp_path, None, stderr, rc=1)))
    with pytest.raises(SourceError, match="exit 1"):
        source.read(None)
    with pytest.raises(SourceError, match="invalid journald cursor"):
        source.read("{not json")
    with pytest.raises(SourceError, match="not JSON"):
        parse_entries(b"garbage\n", "journald:x")


def test_docker_reads_both_streams_in_time_order_and_skips_what_it_saw(tmp_path: Path) -> None:
    binary = replayer(
        tmp_path, RECORDED / "docker-logs-timestamps.stdout", RECORDED / "docker-logs-timestamps.stderr"
    )
    source = DockerLogsSource("web", "web", binary=str(binary))
    first = source.read(None)
    assert first.lines == () and json.loads(first.cursor) == {
        "since": "2026-11-23T07:28:58.045182992Z",
        "seen": 4,
    }
    again = source.read(first.cursor)  # the replay prints the same lines: all were seen
    assert again.lines == ()
    fresh = source.read(json.dumps({"since": None, "seen": 0}))
    assert next(line.text for line in fresh.lines) == "serving on 8080"
    assert "KeyError: 'missing_key'" in [line.text for line in fresh.lines]
    assert calls(tmp_path)[0][:4] == ["logs", "--timestamps", "--tail", "1"]
    assert "--since" in calls(tmp_path)[1]


def test_docker_errors(tmp_path: Path) -> None:
    stderr = RECORDED / "docker-inspect-no-daemon.stderr"
    source = DockerLogsSource("web", "web", binary=str(replayer(tmp_path, None, stderr, rc=1)))
    with pytest.raises(SourceError, match="Cannot connect to the Docker daemon"):
        source.read(None)
    with pytest.raises(SourceError, match="invalid docker cursor"):
        source.read('{"since": 5, "seen": -1}')
    assert parse_timestamped(b"no stamp\n") == []


def test_log_command_timeout_kills_the_group_and_missing_binary_is_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="did not answer"):
        run_log_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.3)
    with pytest.raises(SourceError, match="command not found"):
        run_log_command([str(tmp_path / "nope")], timeout_s=1)
    assert os.path.exists(RECORDED / "journalctl-json-web.jsonl")
