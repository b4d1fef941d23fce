"""`SourceBatch.resume(i)`: reading again from it gives line i first, for every built-in source kind (the
cursor healbot keeps while a record that began at line i is still being assembled; issue 11 item 4)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.flow.observe import _rest_of, _Shifted, chunk_end
from bot.models import SourceBatch
from bot.sources.command import Output
from bot.sources.docker import DockerLogsSource
from bot.sources.file import FileSource
from bot.sources.journald import JournaldSource
from bot.sources.pm2 import Pm2LogSource


def texts(batch: SourceBatch) -> list[str]:
    return [line.text for line in batch.lines]


def every_resume_reads_on_from_its_line(source: FileSource | Pm2LogSource, cursor: str) -> None:
    batch = source.read(cursor)
    assert batch.resume is not None and batch.lines
    for index in range(len(batch.lines)):
        again = source.read(batch.resume(index))
        assert texts(again) == texts(batch)[index:], index
        assert again.cursor == batch.cursor


@pytest.mark.parametrize(
    "data",
    [
        "one\ntwo\nthree\n",
        "short\n" + "x" * 50 + "\nafter a capped line\n",  # capped at 16 bytes: the rest is skipped
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nKeyError: 'k'\nnext\n",
    ],
)
def test_a_file_batch_resumes_at_each_of_its_lines(tmp_path: Path, data: str) -> None:
    log = tmp_path / "app.log"
    log.write_text("first line\n")
    source = FileSource("svc", log, max_line_bytes=16)
    cursor = source.read(None).cursor
    with log.open("a") as handle:
        handle.write(data)
    every_resume_reads_on_from_its_line(source, cursor)


def test_a_rotated_file_batch_resumes_in_the_old_file_or_the_new(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("first line\n")
    source = FileSource("svc", log)
    cursor = source.read(None).cursor
    with log.open("a") as handle:
        handle.write("old one\nold two\n")
    log.rename(tmp_path / "app.log.1")
    log.write_text("new one\nnew two\n")
    batch = source.read(cursor)
    assert texts(batch) == ["old one", "old two", "new one", "new two"]
    assert batch.resume is not None
    assert texts(source.read(batch.resume(1))) == ["old two", "new one", "new two"]
    assert texts(source.read(batch.resume(2))) == ["new one", "new two"]


def test_a_pm2_json_entry_resumes_at_the_whole_entry(tmp_path: Path) -> None:
    log = tmp_path / "svc-error.log"
    log.write_text("")
    source = Pm2LogSource("svc", log)
    cursor = source.start_cursor()
    entry = {"message": "a\nb\n", "timestamp": "t", "type": "err", "app_name": "svc"}
    log.write_text("plain\n" + json.dumps(entry) + "\nlast\n")
    batch = source.read(cursor)
    assert texts(batch) == ["plain", "a", "b", "last"]
    assert batch.resume is not None
    assert texts(source.read(batch.resume(2))) == ["a", "b", "last"]  # the entry's earlier line comes again
    assert texts(source.read(batch.resume(3))) == ["last"]


def _journal(*entries: tuple[str, str]) -> bytes:
    return b"\n".join(json.dumps({"__CURSOR": c, "MESSAGE": m}).encode() for c, m in entries)


def test_a_journal_batch_resumes_after_the_entry_before_the_line() -> None:
    calls: list[list[str]] = []

    def run(argv: Sequence[str], timeout_s: float) -> Output:
        calls.append(list(argv))
        return Output(0, _journal(("c1", "one"), ("c2", "two\nthree"), ("c3", "four")), b"")

    source = JournaldSource("svc", "svc.service", runner=run)
    batch = source.read(json.dumps({"journal": "c0"}))
    assert texts(batch) == ["one", "two", "three", "four"]
    assert batch.resume is not None
    assert [json.loads(batch.resume(i))["journal"] for i in range(4)] == ["c0", "c1", "c1", "c2"]


def test_a_docker_batch_resumes_at_the_line_stamp_skipping_the_lines_before_it() -> None:
    output = (
        b"2026-01-01T00:00:01.000000000Z a\n"
        b"2026-01-01T00:00:02.000000000Z b\n"
        b"2026-01-01T00:00:02.000000000Z c\n"
    )

    def run(argv: Sequence[str], timeout_s: float) -> Output:
        since = argv[argv.index("--since") + 1] if "--since" in argv else ""
        kept = [line for line in output.split(b"\n") if line and line[:30].decode() >= since]
        return Output(0, b"\n".join(kept) + b"\n", b"")

    source = DockerLogsSource("svc", "web", runner=run)
    batch = source.read(json.dumps({"since": "2026-01-01T00:00:00.000000000Z", "seen": 1}))
    assert texts(batch) == ["a", "b", "c"]
    assert batch.resume is not None
    for index in range(3):
        assert texts(source.read(batch.resume(index))) == texts(batch)[index:]


def test_a_poll_cut_short_never_splits_an_entry(tmp_path: Path) -> None:
    """A poll whose budget is spent resumes the rest at a chunk end: never inside a PM2 JSON entry, whose
    lines share one resume cursor (they would be read twice)."""
    log = tmp_path / "svc-error.log"
    log.write_text("")
    source = Pm2LogSource("svc", log)
    cursor = source.start_cursor()
    entry = {"message": "a\nb\nc\n", "timestamp": "t", "type": "err", "app_name": "svc"}
    log.write_text("one\n" + json.dumps(entry) + "\nlast\n")
    batch = source.read(cursor)
    assert texts(batch) == ["one", "a", "b", "c", "last"]
    assert [chunk_end(batch, wanted) for wanted in range(1, 6)] == [1, 4, 4, 4, 5]


def test_a_flood_cut_over_many_polls_resumes_in_one_step(tmp_path: Path) -> None:
    """Regression (issue 13): each poll that ran out of budget wrapped the rest's resume in one more shift,
    so after hundreds of cuts a line's cursor took hundreds of calls (8 of 104 s of a profiled flood)."""
    log = tmp_path / "svc.log"
    log.write_text("")
    source = FileSource("svc", log)
    cursor = source.start_cursor()
    log.write_text("".join(f"line {i}\n" for i in range(300)))
    batch = source.read(cursor)
    assert batch.resume is not None
    rest = batch
    for _ in range(200):
        rest = _rest_of(rest, 1)
    assert texts(rest) == texts(batch)[200:]
    assert isinstance(rest.resume, _Shifted) and rest.resume.resume is batch.resume
    assert [rest.resume(i) for i in range(100)] == [batch.resume(200 + i) for i in range(100)]
