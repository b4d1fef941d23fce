"""How `healbot scan` ends (issue 13): the program ends right after flushing what it printed, skipping the
interpreter's teardown, and says everything it would have said; `main` called in a process returns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import scan_command
from bot.cli import main
from tests.bench.bench_scan import generate

HEALBOT = Path(sys.executable).parent / "healbot"
TEARDOWN_MARK = "interpreter teardown ran"


def _run(tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    """`healbot ARGV` as installed, its stdout a file (block-buffered), with an atexit hook that says when
    the interpreter's teardown runs."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import atexit, sys\natexit.register(lambda: sys.stderr.write({TEARDOWN_MARK!r}))\n"
    )
    out = tmp_path / "stdout.txt"
    env = dict(os.environ, PYTHONPATH=str(site))
    with out.open("w") as stdout:
        done = subprocess.run(
            [str(HEALBOT), *argv],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    return done.returncode, out.read_text(), done.stderr


def test_healbot_scan_ends_without_the_interpreter_teardown_and_prints_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "app.log"
    generate(log, 3_000)
    assert scan_command.scan(log, service="scan", all_records=False, groups_out=None) == 0
    expected = capsys.readouterr().out
    status, out, err = _run(tmp_path, "scan", str(log))
    assert (status, err) == (0, "")
    assert out == expected and "groups shown: 1" in out
    status, _, err = _run(tmp_path, "scan", str(tmp_path / "missing.log"))
    assert status == 1 and err == f"healbot: {tmp_path / 'missing.log'} is not a readable file\n"
    status, _, err = _run(tmp_path, "--help")  # other commands end as Python programs do
    assert status == 0 and err == TEARDOWN_MARK


def test_main_called_in_process_returns_the_scans_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "app.log"
    generate(log, 500)
    assert main(["scan", str(log)]) == 0
    assert "Lines: 500" in capsys.readouterr().out


def test_healbot_scan_into_a_pipe_closed_by_its_reader_ends_quietly(tmp_path: Path) -> None:
    """`healbot scan FILE | head -1`: the reader leaves before the report is written; no traceback."""
    log = tmp_path / "app.log"
    generate(log, 3_000)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before healbot writes a byte
    try:
        done = subprocess.run(
            [str(HEALBOT), "scan", str(log)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")
