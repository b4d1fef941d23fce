"""The grep pre-filter of `healbot scan` (bot.grepfilter) gives exactly what the `re` search gives.

Every input is scanned three ways: through grep, through `re` only, and by ORACLE, a frozen copy of the
buffer scan as it was before the pre-filter (it searched with `re` and counted newlines to every hit).
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bot import fastscan, scan_command
from bot.fingerprint_memo import memo_key
from bot.grepfilter import CANDIDATE_PATTERN, GrepHits, grep_timeout
from bot.grouping import Grouper, ScanResult, scan_errors
from bot.models import Fingerprint, LogLine, LogRecord
from bot.records import RecordAssembler
from bot.sources.file import clean_line
from tests.bench.bench_scan import generate
from tests.helpers import wait_until

SAMPLES = sorted((Path(__file__).parent / "data" / "logs").glob("*.log"))
REAL_GREP = shutil.which("grep")
needs_grep = pytest.mark.skipif(REAL_GREP is None, reason="no grep binary on PATH")

TRACE = (
    b"2026-11-26 06:00:01,000 ERROR shop[1]: request /checkout failed\n"
    b"Traceback (most recent call last):\n"
    b'  File "/srv/shop/shop.py", line 27, in checkout_total\n'
    b"    price = PRICES[name]\n"
    b"KeyError: 'item-1'\n"
)
INFO = b"2026-11-26 06:00:00,000 INFO shop[1]: served order 7 in 12 ms\n"
JAVA = (
    b"2026-11-26 06:00:02 WARN  worker: retrying\n"
    b"\tat com.shop.Retry.run(Retry.java:10)\n"
    b"com.shop.PaymentException: card declined\n"
    b"\tat com.shop.Pay.charge(Pay.java:42)\n"
    b"Caused by: java.io.IOException: reset\n"
    b"\t... 3 more\n"
)
HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "no_candidate": INFO * 50,
    "invalid_utf8": b"\xff\xfe ERROR bad \xc3\x28 bytes\n"
    + INFO
    + TRACE.replace(b"item-1", b"\xe9\xff")
    + INFO,
    "nul_bytes": b"x\x00ERROR nul inside\nER\x00ROR split by a NUL\n\x00\x00\x00\n" + TRACE + b"\x00",
    "nul_joins_traceback_in_back_lines": (
        INFO
        + b"Trace\x00back (most recent call last):\n"
        + b'  File "/srv/a.py", line 1, in f\n'
        + b"2026-11-26 06:00:03 ERROR shop: the exception line of the joined trace\n"
        + INFO
    ),
    "esc_joins_traceback_in_back_lines": (
        b"Trace\x1b[0mback (most recent call last):\n"
        + b'  File "/srv/a.py", line 1, in f\n'
        + b"ValueError: joined\n"
    ),
    "java_frames_before_the_hit": INFO + JAVA + INFO,
    "ten_mb_line_without_newline": INFO + TRACE + b"A" * 10_000_000 + b" ERROR at the very end",
    "ten_mb_line_then_more": b"B" * 5_000_000 + b" ERROR in the middle " + b"B" * 5_000_000 + b"\n" + TRACE,
    "crlf": (INFO + TRACE + JAVA + INFO).replace(b"\n", b"\r\n"),
    "no_trailing_newline": INFO + TRACE.rstrip(b"\n"),
    "candidate_on_first_line_only": b"FATAL: first\n" + INFO * 30,
    "only_candidates": b"ERROR one\nERROR two\nCRITICAL three\nerror: four\n",
    "blank_lines_and_chains": (
        TRACE
        + b"\nDuring handling of the above exception, another exception occurred:\n\n"
        + TRACE.split(b"\n", 1)[1]
        + b"\n\n"
        + INFO
    ),
    "http_5xx": (
        b'1.2.3.4 - - [26/Nov/2026 06:00:00] "GET /items/7 HTTP/1.1" 503 12\n'
        b'1.2.3.4 - - [26/Nov/2026 06:00:00] "POST /pay HTTP/2" 500 -\n'
        b'1.2.3.4 - - [26/Nov/2026 06:00:00] "GET /ok HTTP/1.1" 200 5\n'
    ),
    "pm2_prefixes": b"0|shop  | " + TRACE.replace(b"\n", b"\n0|shop  | ").rstrip(b"0|shop  | ") + b"\n",
}


def test_the_grep_pattern_is_the_re_pattern() -> None:
    assert fastscan.CANDIDATE.pattern == CANDIDATE_PATTERN.encode("ascii")
    assert re.fullmatch(r'[A-Za-z0-9 "]+(\|[A-Za-z0-9 "]+)*', CANDIDATE_PATTERN)  # the ERE/re common subset


@needs_grep
@pytest.mark.parametrize("log", SAMPLES, ids=lambda p: p.name)
def test_grep_path_equals_re_path_on_sample_logs(log: Path) -> None:
    _assert_all_paths_agree(log, max_line_bytes=8192)


@needs_grep
def test_grep_path_equals_re_path_on_the_bench_file(tmp_path: Path) -> None:
    log = tmp_path / "bench.log"
    generate(log, 30_000)
    result = _assert_all_paths_agree(log, max_line_bytes=8192)
    assert result.error_records > 0 and result.lines == 30_000


@needs_grep
@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("max_line_bytes", [8192, 40])
def test_grep_path_equals_re_path_on_hostile_input(tmp_path: Path, name: str, max_line_bytes: int) -> None:
    log = tmp_path / f"{name}.log"
    log.write_bytes(HOSTILE[name])
    _assert_all_paths_agree(log, max_line_bytes=max_line_bytes)


_ROTATE_DIGITS = bytes.maketrans(b"0123456789", b"3456789012")


def _repeated_hostile_input(log: Path) -> None:
    """Every hostile input, each repeated with other digits (the window memo replays the repeats)."""
    pieces = [
        sample
        for name, sample in sorted(HOSTILE.items())
        if sample.endswith(b"\n") and not name.startswith("ten_mb")
    ]
    bare_trace = TRACE.split(b"\n", 1)[1]
    # one shape, but only the 500 is a candidate: its window starts at the hit, the other's a line before it
    pieces.append(
        b"".join(
            access + bare_trace + INFO
            for access in (b'"GET /a HTTP/1.1" 200 1\n', b'"GET /a HTTP/1.1" 500 1\n')
        )
    )
    long_frames = b"".join(b'  File "/srv/%d.py", line 1, in %s\n' % (n, b"f" * 900) for n in range(12))
    pieces.append(
        TRACE.replace(
            b"Traceback (most recent call last):\n", b"Traceback (most recent call last):\n" + long_frames
        )
    )  # more than MAX_RECORD_BYTES: cut
    log.write_bytes(b"".join(p + p.translate(_ROTATE_DIGITS) + p for p in pieces))


@needs_grep
@pytest.mark.parametrize("max_line_bytes", [8192, 40])
def test_repeated_windows_are_cut_as_the_line_by_line_scan_cuts_them(
    tmp_path: Path, max_line_bytes: int
) -> None:
    """The window memo (windows of one digit shape assembled once) on every hostile input, each repeated
    with other digits: a replayed window must give the records the assembler gives."""
    log = tmp_path / "repeated.log"
    _repeated_hostile_input(log)
    _assert_all_paths_agree(log, max_line_bytes=max_line_bytes)


@pytest.mark.parametrize("max_line_bytes", [8192, 40])
def test_memo_keys_cut_by_a_remembered_layout_are_the_keys_found_anew(
    tmp_path: Path, max_line_bytes: int
) -> None:
    """A replayed window's records get their fingerprint memo key from the layout of the first window of
    their shape (bot.fingerprint_memo.key_layout): it must be the key memo_key finds in their text."""
    log = tmp_path / "repeated.log"
    _repeated_hostile_input(log)
    with log.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        finder = fastscan._Finder(data, "svc", max_line_bytes)
        finder.search()
    assert len(finder.candidates) > 20
    assert finder.memo_keys == [memo_key(record) for record in finder.candidates]


def test_a_flood_of_one_trace_is_assembled_once_per_window_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "bench.log"
    generate(log, 30_000)
    in_full: list[int] = []
    assemble = fastscan._Finder._assemble_in_full

    def counting(
        finder: fastscan._Finder, start: int, line_no: int, hit: int, hit_index: int
    ) -> tuple[int, int]:
        in_full.append(line_no)
        return assemble(finder, start, line_no, hit, hit_index)

    monkeypatch.setattr(fastscan._Finder, "_assemble_in_full", counting)
    result = fastscan.scan_errors(log, "svc", Grouper(), max_line_bytes=8192, use_grep=False)
    assert result.error_records > 50
    assert len(in_full) < result.error_records / 2
    assert _summary(result) == _oracle_summary(log, 8192)


def test_nul_joined_traceback_before_the_hit_stays_one_record(tmp_path: Path) -> None:
    """Regression: skipping the lines before a hit is only safe when cleaning cannot join a word in them."""
    log = tmp_path / "nul.log"
    log.write_bytes(HOSTILE["nul_joins_traceback_in_back_lines"])
    result = scan_errors(log)
    assert [(n, len(result.groups)) for n, _ in result.line_groups] == [(2, 1), (3, 1), (4, 1)]


@needs_grep
def test_a_scan_without_line_groups_finds_the_same_groups(tmp_path: Path) -> None:
    """`healbot scan` without --groups-out leaves out the line → group list (10 000 pairs per 1 M lines)."""
    log = tmp_path / "bench.log"
    generate(log, 5_000)
    full = fastscan.scan_errors(log, "svc", Grouper(), max_line_bytes=8192)
    lean = fastscan.scan_errors(log, "svc", Grouper(), max_line_bytes=8192, line_groups=False)
    assert lean.line_groups == [] and full.line_groups != []
    assert replace(lean, line_groups=full.line_groups) == full


def test_fallback_without_grep_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "bench.log"
    generate(log, 5_000)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with GrepHits.start(log, timeout_s=5) as hits:
        assert list(hits) == []
        assert hits.failure == "no grep on PATH"
    assert _summary(scan_errors(log, "svc")) == _oracle_summary(log, 8192)


@needs_grep
def test_cli_scan_prints_the_same_with_and_without_grep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "mixed.log"
    log.write_bytes(b"".join(HOSTILE[name] for name in sorted(HOSTILE) if not name.startswith("ten_mb")))
    assert scan_command.scan(log, service="svc", all_records=False, groups_out=None) == 0
    with_grep = capsys.readouterr().out
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert scan_command.scan(log, service="svc", all_records=False, groups_out=None) == 0
    assert capsys.readouterr().out == with_grep
    assert "groups shown: 0" not in with_grep


def _fake_grep(tmp_path: Path, script: str) -> Path:
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "grep"
    fake.write_text("#!/bin/sh\n" + script + "\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return tools


@needs_grep
@pytest.mark.parametrize(
    ("script", "failure"),
    [
        ('{grep} "$@" | {head} -n 4\nexit 2', "grep exited with status 2"),
        ('{grep} "$@" | {head} -n 4 | {head} -c 100', "grep output ended inside a line"),
        ("echo 'Binary file matches'", "unexpected grep output"),
        ('{grep} "$@" | {sed} "s/^\\([0-9]*\\):\\([0-9]*\\):/\\1:1\\2:/"', "holds no candidate"),
        ('{grep} "$@" | {awk} -F: \'BEGIN {{ OFS = ":" }} {{ $2 = $2 + 1; print }}\'', "holds no candidate"),
        ('{grep} "$@" | {sort} -r', "out of order"),
    ],
    ids=[
        "exits-2-half-way",
        "cut-mid-line",
        "not-a-report",
        "wrong-offsets",
        "mid-line-offsets",
        "out-of-order",
    ],
)
def test_a_failing_grep_is_caught_and_the_re_search_finishes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, failure: str
) -> None:
    log = tmp_path / "bench.log"
    generate(log, 5_000)
    tools = {name: shutil.which(name) for name in ("grep", "head", "sed", "sort", "awk")}
    monkeypatch.setenv("PATH", str(_fake_grep(tmp_path, script.format(**tools))))
    hits = GrepHits.start(log, timeout_s=10)
    result = fastscan.scan_errors(log, "svc", Grouper(), max_line_bytes=8192, hits=hits)
    assert hits.failure is not None and failure in hits.failure
    assert _summary(result) == _oracle_summary(log, 8192)


class _SignallingGrouper(Grouper):
    """A grouper that creates `signal` when it first fingerprints a record."""

    def __init__(self, signal: Path) -> None:
        super().__init__()
        self.signal = signal

    def fingerprint(self, record: LogRecord) -> Fingerprint:
        self.signal.touch()
        return super().fingerprint(record)


def _grep_waiting_half_way(tmp_path: Path, rest: str) -> Path:
    """A grep that reports 30 lines, waits for the file `go`, then prints `rest` (a shell command)."""
    tools = {name: shutil.which(name) for name in ("grep", "head", "tail", "sleep")}
    script = (
        f'{tools["grep"]} "$@" > {tmp_path}/report\n'
        f"{tools['head']} -n 30 {tmp_path}/report\n"
        f"while [ ! -e {tmp_path}/go ]; do {tools['sleep']} 0.01; done\n"
        + rest.format(report=tmp_path / "report", **tools)
    )
    return _fake_grep(tmp_path, script)


@needs_grep
def test_records_are_fingerprinted_while_grep_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "bench.log"
    generate(log, 5_000)
    monkeypatch.setenv("PATH", str(_grep_waiting_half_way(tmp_path, "{tail} -n +31 {report}")))
    hits = GrepHits.start(log, timeout_s=5)
    grouper = _SignallingGrouper(tmp_path / "go")  # grep goes on only once a record was fingerprinted
    result = fastscan.scan_errors(log, "svc", grouper, max_line_bytes=8192, hits=hits, regroup=Grouper)
    assert hits.failure is None
    assert _summary(result) == _oracle_summary(log, 8192)


@needs_grep
def test_a_grep_failing_after_records_were_fingerprinted_starts_over_with_a_new_grouper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "bench.log"
    generate(log, 5_000)
    monkeypatch.setenv("PATH", str(_grep_waiting_half_way(tmp_path, "echo 1:0:ERROR")))
    made: list[Grouper] = []

    def regroup() -> Grouper:
        made.append(Grouper())
        return made[-1]

    hits = GrepHits.start(log, timeout_s=5)
    grouper = _SignallingGrouper(tmp_path / "go")
    result = fastscan.scan_errors(log, "svc", grouper, max_line_bytes=8192, hits=hits, regroup=regroup)
    assert hits.failure is not None and "out of order" in hits.failure
    assert len(made) == 1  # the first grouper saw records the `re` search groups again
    assert _summary(result) == _oracle_summary(log, 8192)


def _resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="no /proc/self/smaps")
def test_the_pages_of_assembled_lines_are_given_back_while_grep_reads(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(INFO * 400_000)  # 26 MB
    with log.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        assert data.read().count(b"\n") == 400_000  # every page is mapped now
        finder = fastscan._Finder(data, "svc", 8192)
        finder.covered = 20_000_000
        mapped = _resident_kb(log)
        finder.release_assembled()
        assert _resident_kb(log) < mapped - 18_000
        assert data[: len(INFO) * 2] == INFO * 2  # a page given back reads the file again


@needs_grep
def test_a_hanging_grep_is_killed_with_its_group_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "small.log"
    log.write_bytes(INFO + TRACE + INFO)
    pid_file = tmp_path / "child.pid"
    sleep = shutil.which("sleep")
    monkeypatch.setenv("PATH", str(_fake_grep(tmp_path, f"{sleep} 60 &\necho $! > {pid_file}\nwait")))
    hits = GrepHits.start(log, timeout_s=0.5)
    result = fastscan.scan_errors(log, "svc", Grouper(), max_line_bytes=8192, hits=hits)
    assert hits.failure == "grep timed out"
    assert _summary(result) == _oracle_summary(log, 8192)
    child = int(wait_until(lambda: pid_file.read_text().strip() if pid_file.exists() else "", what="pid"))
    wait_until(lambda: not _alive(child), what="the grep's child to be killed")


def test_grep_timeout_grows_with_the_file() -> None:
    assert grep_timeout(0) == 10.0
    assert grep_timeout(2_000_000_000) == pytest.approx(110.0)


# --- helpers ---------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ", 1)[1].startswith("Z"))


Summary = tuple[int, int, list[tuple[int, str]], list[tuple[str, int, int, str]]]


def _summary(result: ScanResult) -> Summary:
    groups = sorted((g.key, g.count, g.first_line, g.sample) for g in result.groups)
    return result.lines, result.error_records, result.line_groups, groups


def _assert_all_paths_agree(log: Path, *, max_line_bytes: int) -> ScanResult:
    hits = GrepHits.start(log, timeout_s=30)
    by_grep = fastscan.scan_errors(log, "svc", Grouper(), max_line_bytes=max_line_bytes, hits=hits)
    assert hits.failure is None  # grep's report was used to the end
    by_re = fastscan.scan_errors(log, "svc", Grouper(), max_line_bytes=max_line_bytes, use_grep=False)
    oracle = _oracle_summary(log, max_line_bytes)
    assert _summary(by_grep) == oracle
    assert _summary(by_re) == oracle
    assert [(g.key, g.count, g.first_line) for g in by_grep.groups] == [
        (g.key, g.count, g.first_line) for g in by_re.groups
    ]
    return by_grep


def _oracle_summary(log: Path, max_line_bytes: int) -> Summary:
    found, lines = ORACLE(log, max_line_bytes)
    counts: dict[str, int] = {}
    firsts: dict[str, LogRecord] = {}
    line_groups: list[tuple[int, str]] = []
    for record, fp in found:
        counts[fp.key] = counts.get(fp.key, 0) + 1
        firsts.setdefault(fp.key, record)
        line_groups.extend((record.first_line_no + i, fp.key) for i in range(record.line_count))
    groups = sorted((key, counts[key], r.first_line_no, r.text) for key, r in firsts.items())
    return lines, len(found), line_groups, groups


# --- ORACLE: bot/fastscan.py before the grep pre-filter (commit 0343e49), unchanged but for names ----


def _oracle(path: Path, max_line_bytes: int) -> tuple[list[tuple[LogRecord, Fingerprint]], int]:
    grouper = Grouper()
    with path.open("rb") as fh:
        size = path.stat().st_size
        if size == 0:
            return [], 0
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = _OracleFinder(data, "svc", max_line_bytes).run(grouper.fingerprint)
            lines = _oracle_count(data, 0, size) + (0 if data[size - 1 : size] == b"\n" else 1)
    return found, lines


ORACLE = _oracle
_ORACLE_CANDIDATE = re.compile(
    rb"ERR|CRIT|FATAL|SEVERE|ALERT|EMERG|PANIC|Error|Exception|Throwable|Traceback|Caused by"
    rb"|panic|error|fatal|HTTP/[\d.]+\" 5"
)


def _oracle_count(data: mmap.mmap, start: int, end: int, chunk: int = 16 * 1024 * 1024) -> int:
    total = 0
    for at in range(start, end, chunk):
        total += data[at : min(end, at + chunk)].count(b"\n")
    return total


class _OracleFinder:
    def __init__(self, data: mmap.mmap, service: str, max_line_bytes: int) -> None:
        self.data = data
        self.service = service
        self.max_line_bytes = max_line_bytes
        self.counted_to = 0
        self.counted_lines = 0

    def line_no(self, offset: int) -> int:
        self.counted_lines += _oracle_count(self.data, self.counted_to, offset)
        self.counted_to = offset
        return self.counted_lines + 1

    def run(self, fingerprint: Callable[[LogRecord], Fingerprint]) -> list[tuple[LogRecord, Fingerprint]]:
        data = self.data
        found: list[tuple[LogRecord, Fingerprint]] = []
        covered = 0
        for hit in _ORACLE_CANDIDATE.finditer(data):
            at = hit.start()
            if at < covered:
                continue
            start = data.rfind(b"\n", covered, at) + 1 if at > covered else covered
            start = max(start, covered)
            for _ in range(2):
                if start <= covered:
                    break
                start = data.rfind(b"\n", covered, start - 1) + 1
                start = max(start, covered)
            covered = self._assemble(start, at, fingerprint, found)
        return found

    def _assemble(
        self,
        start: int,
        hit: int,
        fingerprint: Callable[[LogRecord], Fingerprint],
        found: list[tuple[LogRecord, Fingerprint]],
    ) -> int:
        data = self.data
        assembler = RecordAssembler(self.service, "scan")
        line_no = self.line_no(start)
        position = start
        hit_line = -1
        while True:
            if position >= len(data):
                records = assembler.flush()
                end = len(data)
                done = True
            else:
                newline = data.find(b"\n", position)
                end = len(data) if newline < 0 else newline + 1
                raw = data[position : min(end, position + self.max_line_bytes + 1)].rstrip(b"\n")
                truncated = len(raw) > self.max_line_bytes
                line = LogLine(clean_line(raw[: self.max_line_bytes]), "scan", line_no, truncated)
                if hit_line < 0 and end > hit:
                    hit_line = line_no
                records = assembler.feed((line,), 0.0)
                done = False
            for record in records:
                if record.first_line_no + record.line_count <= hit_line or hit_line < 0:
                    continue
                fp = fingerprint(record)
                if fp.is_error:
                    found.append((record, fp))
            if done:
                return end
            if hit_line >= 0 and records and records[-1].first_line_no + records[-1].line_count > hit_line:
                return position
            position = end
            line_no += 1
