from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from bot.errors import SourceError
from bot.models import SourceBatch
from bot.sources.file import FileSource


def texts(batch: SourceBatch) -> list[str]:
    return [line.text for line in batch.lines]


def append(path: Path, data: bytes | str) -> None:
    with path.open("ab") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def drain(source: FileSource, cursor: str) -> list[str]:
    seen: list[str] = []
    while True:
        batch = source.read(cursor)
        seen.extend(texts(batch))
        if batch.cursor == cursor:
            return seen
        cursor = batch.cursor


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("old 1\nold 2\n")
    return path


def test_source_id_and_service(log: Path) -> None:
    source = FileSource("web", log)
    assert source.source_id == f"file:{log}"
    assert source.service == "web"


def test_first_run_starts_at_the_end(log: Path) -> None:
    source = FileSource("web", log)
    first = source.read(None)
    assert first.lines == ()
    append(log, "new 1\nnew 2\n")
    batch = source.read(first.cursor)
    assert texts(batch) == ["new 1", "new 2"]
    assert [line.line_no for line in batch.lines] == [1, 2]
    assert all(line.source == f"file:{log}" for line in batch.lines)
    assert source.read(batch.cursor).lines == ()


def test_first_run_keeps_a_line_being_written_whole(log: Path) -> None:
    append(log, "half of a ")
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, "line\n")
    assert texts(source.read(cursor)) == ["half of a line"]


def test_cursor_survives_new_source_instances(log: Path) -> None:
    cursor = FileSource("web", log).read(None).cursor
    append(log, "a\n")
    batch = FileSource("web", log).read(cursor)
    assert texts(batch) == ["a"]
    append(log, "b\n")
    again = FileSource("web", log).read(json.loads(json.dumps(batch.cursor)))
    assert texts(again) == ["b"]
    assert again.lines[0].line_no == 2  # line numbers continue from the cursor's start


def test_start_cursor_reads_from_the_first_line_with_file_line_numbers(log: Path) -> None:
    source = FileSource("web", log)
    batch = source.read(source.start_cursor())
    assert [(line.line_no, line.text) for line in batch.lines] == [(1, "old 1"), (2, "old 2")]


def test_partial_line_waits_for_its_newline(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, "complete\npart")
    batch = source.read(cursor)
    assert texts(batch) == ["complete"]
    assert source.read(batch.cursor).lines == ()
    append(log, "ial\n")
    assert texts(source.read(batch.cursor)) == ["partial"]


def test_rotation_by_rename_and_create_finishes_the_old_file_then_reads_the_new(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, "before rotation\n")
    log.rename(log.with_name("app.log.1"))
    log.write_text("first of new\nsecond of new\n")
    batch = source.read(cursor)
    assert texts(batch) == ["before rotation", "first of new", "second of new"]
    append(log, "later\n")
    assert texts(source.read(batch.cursor)) == ["later"]


def test_rotation_with_the_old_file_gone_starts_the_new_file_at_zero(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    log.unlink()
    log.write_text("fresh 1\nfresh 2\n")
    batch = source.read(cursor)
    assert texts(batch) == ["fresh 1", "fresh 2"]
    assert [line.line_no for line in batch.lines] == [1, 2]


def test_copytruncate_restarts_from_zero(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    shutil.copy(log, log.with_name("app.log.1"))
    with log.open("r+b") as fh:
        fh.truncate(0)
    append(log, "after truncate\n")
    assert texts(source.read(cursor)) == ["after truncate"]


def test_truncation_to_a_shorter_file_restarts_from_zero(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    log.write_text("x\n")  # same inode, shorter than the offset
    assert texts(source.read(cursor)) == ["x"]


def test_rewritten_file_longer_than_the_offset_is_detected_by_its_first_line(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    inode = log.stat().st_ino
    log.write_text("another first line\nand much more text than before\n")
    assert log.stat().st_ino == inode
    assert texts(source.read(cursor)) == ["another first line", "and much more text than before"]


def test_first_line_still_being_written_is_not_mistaken_for_truncation(tmp_path: Path) -> None:
    path = tmp_path / "grow.log"
    path.write_text("")
    source = FileSource("web", path)
    cursor = source.read(None).cursor
    append(path, "hea")
    batch = source.read(cursor)
    assert batch.lines == ()
    append(path, "der\nnext\n")
    batch = source.read(batch.cursor)
    assert texts(batch) == ["header", "next"]
    append(path, "third\n")
    assert texts(source.read(batch.cursor)) == ["third"]


def test_invalid_utf8_is_replaced_not_fatal(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, b"bad \xff\xfe byte\nok\n")
    assert texts(source.read(cursor)) == ["bad \ufffd\ufffd byte", "ok"]


def test_nuls_ansi_escapes_and_crlf_are_stripped(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, b"\x1b[31mERROR\x1b[0m red\x00 text\r\n\x1b]0;title\x07plain\n")
    assert texts(source.read(cursor)) == ["ERROR red text", "plain"]


def test_long_line_is_capped_and_flagged_not_dropped(log: Path) -> None:
    source = FileSource("web", log, max_line_bytes=100)
    cursor = source.read(None).cursor
    append(log, "x" * 250 + "\nshort\n")
    batch = source.read(cursor)
    assert [(len(line.text), line.truncated) for line in batch.lines] == [(100, True), (5, False)]
    assert [line.line_no for line in batch.lines] == [1, 2]


def test_ten_megabyte_line_without_newline_is_capped_with_bounded_memory(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, b"y" * (10 * 1024 * 1024))
    tracemalloc.start()
    try:
        batch = source.read(cursor)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"peak {peak} bytes while reading a 10 MB line"
    assert [(len(line.text), line.truncated) for line in batch.lines] == [(8192, True)]
    # The rest of that physical line is skipped (4 MiB per read) until it ends, even in a later read.
    append(log, b"yyyy tail\nafter\n")
    assert drain(source, batch.cursor) == ["after"]


def test_max_bytes_bounds_a_batch_and_the_next_read_continues(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    expected = [f"line {n:04d}" for n in range(500)]
    append(log, "".join(f"{text}\n" for text in expected))
    seen: list[str] = []
    for _ in range(100):
        batch = source.read(cursor, max_bytes=1000)
        assert sum(len(t) + 1 for t in texts(batch)) <= 1000 + 10
        seen.extend(texts(batch))
        if batch.cursor == cursor:
            break
        cursor = batch.cursor
    assert seen == expected


def test_a_line_longer_than_max_bytes_still_makes_progress(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, "z" * 500 + "\n")
    assert texts(source.read(cursor, max_bytes=10)) == ["z" * 500]


def test_iter_lines_includes_an_unterminated_last_line(log: Path) -> None:
    append(log, "no newline at end")
    lines = list(FileSource("web", log).iter_lines())
    assert [(line.line_no, line.text) for line in lines] == [
        (1, "old 1"),
        (2, "old 2"),
        (3, "no newline at end"),
    ]


def test_missing_file_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.log"
    with pytest.raises(SourceError, match=r"nope\.log: file not found"):
        FileSource("web", path).read(None)
    assert not path.exists()


def test_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        FileSource("web", tmp_path).read(None)


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads any file whatever its mode (nobody cannot run /root's python)"
)
def test_unreadable_file_is_a_source_error(log: Path) -> None:
    log.chmod(0)
    with pytest.raises(SourceError, match="permission denied"):
        FileSource("web", log).read(None)


@pytest.mark.parametrize(
    "cursor",
    ["not json", "{}", '{"inode": "x", "head_len": 0, "head_sha256": "", "offset": 0}', "[1, 2]"],
)
def test_corrupt_cursor_is_a_clear_error_and_changes_nothing(log: Path, cursor: str) -> None:
    before = log.read_bytes()
    with pytest.raises(SourceError, match="invalid file cursor"):
        FileSource("web", log).read(cursor)
    assert log.read_bytes() == before


@pytest.mark.parametrize("kwargs", [{"max_line_bytes": 0}])
def test_bad_arguments_are_rejected(log: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FileSource("web", log, **kwargs)
    with pytest.raises(ValueError, match="at least 1"):
        FileSource("web", log).read(None, max_bytes=0)


def test_a_poll_reads_at_most_one_megabyte_by_default(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    append(log, ("y" * 99 + "\n") * 30_000)  # 3 MB

    first = source.read(cursor)

    assert 10_000 <= len(first.lines) <= 10_500
    assert len(drain(source, first.cursor)) == 30_000 - len(first.lines)


def test_same_size_rewrite_is_noticed_at_the_next_append(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    log.write_text("new 1\nnew 2\n")  # truncated and refilled to exactly the old size: nothing to read yet
    idle = source.read(cursor)
    assert idle.lines == () and idle.cursor == cursor
    append(log, "new 3\n")

    assert drain(source, cursor) == ["new 1", "new 2", "new 3"]


def test_nothing_new_is_a_stat_that_says_whether_a_read_would_find_lines(log: Path) -> None:
    source = FileSource("web", log)
    cursor = source.read(None).cursor
    assert source.nothing_new(cursor) is True
    assert source.nothing_new(None) is False
    assert source.nothing_new("not a cursor") is False
    append(log, "new\n")
    assert source.nothing_new(cursor) is False
    log.rename(log.with_name("app.log.1"))
    log.write_text("")
    assert source.nothing_new(cursor) is False  # another inode: rotated
    log.unlink()
    assert source.nothing_new(cursor) is False  # gone: the read will say why


def _every_read(source: FileSource, max_bytes: int) -> list[tuple[tuple[object, ...], str, list[str]]]:
    """Every batch from the start, by budget: its lines, cursor, and the resume cursor of each line."""
    batches = []
    cursor = source.start_cursor()
    while True:
        batch = source.read(cursor, max_bytes)
        assert batch.resume is not None
        resumes = [batch.resume(i) for i in range(len(batch.lines))]
        batches.append((batch.lines, batch.cursor, resumes))
        if batch.cursor == cursor:
            return batches
        cursor = batch.cursor


@pytest.mark.parametrize("max_bytes", [1, 7, 100, 4096, 1 << 20])
def test_whole_lines_read_at_buffer_speed_equal_the_line_by_line_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_bytes: int
) -> None:
    """Issue 13: a budget of whole lines is split at buffer speed; lines, cursors and resume points are
    those of the line-by-line read, also around over-long lines, CRs, NULs, bad UTF-8 and a line cut off."""
    import random

    from bot.sources import file as file_module

    rng = random.Random(13)
    parts = [b"ERROR short\n", b"x" * 150 + b"\n", b"\r\n", b"\x00nul\x1b[31mred\n", b"\xff\xfebad\n", b"\n"]
    log = tmp_path / "mixed.log"
    log.write_bytes(b"".join(rng.choice(parts) for _ in range(400)) + b"unterminated")
    source = FileSource("web", log, max_line_bytes=100)
    fast = _every_read(source, max_bytes)
    monkeypatch.setattr(file_module._LineReader, "_read_whole_lines", lambda *args: None)
    assert fast == _every_read(source, max_bytes)
