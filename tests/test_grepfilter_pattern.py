"""The candidate pattern of the scan's pre-filter (bot.grepfilter.CANDIDATE_PATTERN): it finds every line the
former, longer pattern found, through `re` and through grep, and GNU grep's search over it leaves its start
state on fewer bytes of log text, which is what grep's speed on it depends on (issue 13)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bot.fastscan import CANDIDATE
from bot.grepfilter import CANDIDATE_PATTERN, CANDIDATE_TEXT, GrepHits
from tests.bench.bench_scan import generate

SAMPLES = sorted((Path(__file__).parent / "data" / "logs").glob("*.log"))
FORMER_PATTERN = (
    "ERR|CRIT|FATAL|SEVERE|ALERT|EMERG|PANIC|Error|Exception|Throwable|Traceback|Caused by"
    '|panic|error|fatal|HTTP/[0-9.]+" 5'
)
# A line for each former alternative, in the spellings logs use.
FORMER_SHAPES = (
    b"2026-11-26 06:00:00 [ERR] disk gone",
    b"<CRIT> kernel: oops",
    b"FATAL: cannot start",
    b"SEVERE: pool exhausted",
    b"ALERT raid degraded",
    b"EMERG power lost",
    b"PANIC at the disco",
    b"ValueError: bad input",
    b"java.lang.IllegalStateException: closed",
    b"java.lang.Throwable",
    b"Traceback (most recent call last):",
    b"Caused by: java.io.IOException",
    b"panic: runtime error: index out of range",
    b"error: could not lock config file",
    b'{"level":"error","msg":"boom"}',
    b"fatal: not a git repository",
    b'1.2.3.4 - - [26/Nov/2026 06:00:00] "GET /items/7 HTTP/1.1" 503 12',
    b'1.2.3.4 - - [26/Nov/2026 06:00:00] "POST /pay HTTP/2" 500 -',
    b'1.2.3.4 - - [26/Nov/2026 06:00:00] "GET / HTTP/1.0" 599 0',
)


def _log_text(tmp_path: Path) -> bytes:
    bench = tmp_path / "bench.log"
    generate(bench, 3_000)
    return b"\n".join(FORMER_SHAPES) + b"\n" + b"".join(p.read_bytes() for p in SAMPLES) + bench.read_bytes()


def test_every_line_the_former_pattern_found_is_still_a_candidate(tmp_path: Path) -> None:
    former = re.compile(FORMER_PATTERN.encode("ascii"))
    lines = _log_text(tmp_path).split(b"\n")
    assert all(former.search(line) for line in FORMER_SHAPES)
    assert [line for line in lines if former.search(line) and not CANDIDATE.search(line)] == []
    assert [line for line in lines if former.search(line) and not CANDIDATE_TEXT.search(line.decode())] == []


@pytest.mark.skipif(shutil.which("grep") is None, reason="no grep binary on PATH")
def test_grep_reports_every_line_the_former_pattern_found(tmp_path: Path) -> None:
    log = tmp_path / "all.log"
    log.write_bytes(_log_text(tmp_path))
    former = re.compile(FORMER_PATTERN.encode("ascii"))
    wanted = {number for number, line in enumerate(log.read_bytes().split(b"\n"), 1) if former.search(line)}
    with GrepHits.start(log, timeout_s=30) as hits:
        reported = {line_no for _, line_no in hits}
        assert hits.failure is None
    assert wanted - reported == set()
    assert len(wanted) > len(FORMER_SHAPES)


def _busy_bytes(alternatives: list[bytes], data: bytes) -> int:
    """Bytes after which a search for any of `alternatives` is outside its start state: some alternative's
    proper prefix ends there. GNU grep's DFA skips bytes in its start state in a tight loop and takes its
    slow path on the others."""
    busy: set[int] = set()
    for alternative in alternatives:
        for length in range(1, len(alternative)):
            prefix = re.escape(alternative[:length])
            busy.update(hit.start() + length - 1 for hit in re.finditer(b"(?=" + prefix + b")", data))
    return len(busy)


def test_the_search_leaves_its_start_state_on_fewer_bytes_of_log_text(tmp_path: Path) -> None:
    bench = tmp_path / "bench.log"
    generate(bench, 5_000)
    # the former access-line alternative as the text spells it: its prefixes run through `HTTP/1.1" `
    former = [word.encode() for word in FORMER_PATTERN.split("|")[:-1]] + [b'HTTP/1.1" 5']
    current = [word.encode() for word in CANDIDATE_PATTERN.split("|")]
    for data in (b"".join(p.read_bytes() for p in SAMPLES), bench.read_bytes()):
        assert _busy_bytes(current, data) <= 0.9 * _busy_bytes(former, data)
