"""The flood memo of fingerprints (bot.fingerprint_memo): records that differ only in digit values share a
fingerprint, except where grouping or redaction looks at digit values; a changed grouping is caught."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from bot.fingerprint_memo import CHECK_EVERY, FingerprintMemo, shape
from bot.grepfilter import CANDIDATE_TEXT
from bot.grouping import Grouper, fingerprint
from bot.models import Fingerprint, LogLine, LogRecord
from bot.records import RecordAssembler

LOGS = Path(__file__).parent / "data" / "logs"
_OTHER_DIGITS = str.maketrans("123456789", "987654321")


def record(text: str) -> LogRecord:
    return LogRecord("shop", "file:x", text)


def sample_records() -> list[LogRecord]:
    records: list[LogRecord] = []
    for path in sorted(LOGS.glob("*.log")):
        assembler = RecordAssembler("shop", "file:x")
        lines = [LogLine(t, "file:x", n) for n, t in enumerate(path.read_text().splitlines(), 1)]
        records += assembler.feed(lines, 0.0) + assembler.flush()
    return records


def test_records_of_one_shape_group_alike_in_the_sample_logs() -> None:
    """The memo's premise, checked on the annotated logs: other digit values (0 kept) give the same key and
    error class for every record the memo would remember. Fails once grouping looks at digit values."""
    memo = FingerprintMemo(Grouper())
    checked = 0
    for original in sample_records():
        variant = record(original.text.translate(_OTHER_DIGITS))
        assert shape(variant.text) == shape(original.text)
        memo.clear()
        memo.fingerprint(original)
        if not memo.remembers(variant):
            continue
        mine, theirs = fingerprint(original), fingerprint(variant)
        assert (theirs.key, theirs.is_error) == (mine.key, mine.is_error), original.text[:200]
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # an access line's status is in its template, and 5xx makes it an error
        (
            '10.0.0.1 - - [26/Nov/2026 06:00:01] "GET /items HTTP/1.1" 200 512',
            '10.0.0.1 - - [26/Nov/2026 06:00:01] "GET /items HTTP/1.1" 500 512',
        ),
        # redaction reads a card number's Luhn digit
        (
            "ERROR charge refused for card 4111 1111 1111 1111",
            "ERROR charge refused for card 4111 1111 1111 1112",
        ),
    ],
)
def test_a_shape_whose_digit_values_matter_is_grouped_record_by_record(first: str, second: str) -> None:
    memo = FingerprintMemo(Grouper())
    assert shape(first) == shape(second)
    one, two = memo.fingerprint(record(first)), memo.fingerprint(record(second))
    assert (one.key, one.is_error) != (two.key, two.is_error)
    assert (two.key, two.is_error) == (fingerprint(record(second)).key, fingerprint(record(second)).is_error)


def test_a_flood_is_grouped_once_per_shape() -> None:
    calls: list[str] = []
    grouper = Grouper()

    class Counting:
        def fingerprint(self, rec: LogRecord) -> Fingerprint:
            calls.append(rec.text)
            return grouper.fingerprint(rec)

    memo = FingerprintMemo(Counting())
    keys = {
        memo.fingerprint(record(f"ERROR upstream timed out after {n % 9 + 1}{n % 7 + 1} ms")).key
        for n in range(500)
    }
    assert len(keys) == 1
    assert len(calls) == 1


def test_a_grouping_that_tells_a_shape_apart_is_noticed_and_trusted_no_more() -> None:
    """Every CHECK_EVERY-th hit is grouped in full: when that disagrees, the shape is grouped in full from
    then on, also after `clear`."""

    class DigitSensitive:
        calls = 0

        def fingerprint(self, rec: LogRecord) -> Fingerprint:
            self.calls += 1
            return Fingerprint(rec.text, rec.service, True, None, rec.text)  # the digits make the key

    grouper = DigitSensitive()
    memo = FingerprintMemo(grouper)
    texts = [f"ERROR job {n % 9 + 1} failed" for n in range(CHECK_EVERY + 5)]
    keys = [memo.fingerprint(record(t)).key for t in texts]
    assert keys[CHECK_EVERY] == texts[CHECK_EVERY]  # the check itself answers in full
    assert keys[CHECK_EVERY + 1 :] == texts[CHECK_EVERY + 1 :]
    memo.clear()
    before = grouper.calls
    assert [memo.fingerprint(record(t)).key for t in texts[:3]] == texts[:3]
    assert grouper.calls == before + 3


def test_every_error_record_of_the_sample_logs_holds_a_candidate() -> None:
    """The daemon groups only records the bulk scan's candidate search finds something in (issue 13): that
    search must find something in every record grouping calls an error."""
    records = sample_records()
    errors = [r for r in records if fingerprint(r).is_error]
    assert errors and len(errors) < len(records)
    assert [r.text for r in errors if CANDIDATE_TEXT.search(r.text) is None] == []


def _trace(
    header: str, message: str, *, path: str = "/srv/shop.py", line: int = 27, function: str = "f"
) -> str:
    return (
        f"{header}\nTraceback (most recent call last):\n"
        f'  File "{path}", line {line}, in {function}\n    price = PRICES[name]\n{message}'
    )


def _counting(grouper: Grouper) -> tuple[FingerprintMemo, list[str]]:
    calls: list[str] = []

    class Counting:
        def fingerprint(self, rec: LogRecord) -> Fingerprint:
            calls.append(rec.text)
            return grouper.fingerprint(rec)

    return FingerprintMemo(Counting()), calls


def test_a_trace_flood_with_other_timestamps_and_ids_is_grouped_once_per_message_shape() -> None:
    """Regression (issue 13): every trace of the scan bench was grouped in full. The memo keyed a record by
    the shape of its whole text, so the timestamp of the line logged before the trace (its zeros) made
    new shapes, and "KeyError" holds "key", which kept every such trace out of the memo as a possible
    secret although only the exception's message is redacted."""
    rng = random.Random(3)
    records = [
        record(
            _trace(
                f"2026-11-26 06:{rng.randrange(60):02d}:{rng.randrange(60):02d},{rng.randrange(1000):03d} ERROR "
                "shop[4242]: request /checkout failed",
                f"KeyError: 'item-{rng.randrange(10**6)}'",
            )
        )
        for _ in range(400)
    ]
    memo, calls = _counting(Grouper())
    got = [memo.fingerprint(r) for r in records]
    assert got == [fingerprint(r) for r in records]
    message_shapes = {shape(r.text.rsplit("\n", 1)[1]) for r in records}
    assert len(calls) == len(message_shapes) < len(records) / 4


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"path": "/app/worker1.py"}, {"path": "/app/worker2.py"}),
        ({"function": "handler1"}, {"function": "handler2"}),
        ({"line": 27}, {"line": 38}),  # the key ignores it, the frames (code context) do not
    ],
    ids=["file-name", "function-name", "line-number"],
)
def test_traces_that_differ_in_a_digit_of_a_frame_keep_their_own_fingerprint(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Regression: two traces whose texts had one shape shared the first one's fingerprint, although file
    and function names make the key and the frames carry their line numbers. (Paths are kept under 16
    characters: a longer run looks like a token to bot.redact's pre-check, which kept such texts out.)"""
    one = record(_trace("ERROR boom", "ValueError: bad input", **first))
    two = record(_trace("ERROR boom", "ValueError: bad input", **second))
    memo = FingerprintMemo(Grouper())
    assert memo.fingerprint(one) == fingerprint(one)
    assert memo.fingerprint(two) == fingerprint(two) != fingerprint(one)


def test_a_card_number_in_an_exception_message_keeps_its_trace_out_of_the_memo() -> None:
    valid, invalid = (
        record(_trace("ERROR boom", f"ValueError: charge refused for 4111 1111 1111 111{d}")) for d in (1, 2)
    )
    memo = FingerprintMemo(Grouper())
    assert memo.fingerprint(valid) == fingerprint(valid)
    assert memo.fingerprint(invalid) == fingerprint(invalid) != fingerprint(valid)  # redacted vs not


def test_the_line_logged_before_a_trace_does_not_change_its_fingerprint() -> None:
    """The memo's premise for traces (it remembers a trace by its last traceback): fails once grouping
    reads the line before a traceback, or what follows its exception line."""
    message = "KeyError: 'item-7'"
    texts = [
        _trace("2026-11-26 06:00:01,000 ERROR shop[1]: request /checkout failed", message),
        _trace("WARNING something else entirely, 12 times", message),
        _trace("", message).lstrip("\n"),
        _trace(
            "ERROR first",
            "ValueError: before\n\nDuring handling of the above exception, another exception occurred:\n\n",
        )
        + _trace("", message).lstrip("\n")
        + "\n    a note after the exception line",
    ]
    fingerprints = {Grouper().fingerprint(record(t)) for t in texts}
    assert len(fingerprints) == 1


def test_a_trace_key_cut_as_one_slice_is_the_key_cut_line_by_line(tmp_path: Path) -> None:
    """Traces without process manager prefixes have their memo key cut from the text as one slice."""
    from bot import fingerprint_memo
    from bot.fastscan import scan_errors
    from tests.bench.bench_scan import generate

    log = tmp_path / "mixed.log"
    generate(log, 2_000)
    texts = [
        "Traceback (most recent call last):\n  File \"a.py\", line 3, in f\nKeyError: 'x-17'",
        'boom 12\nTraceback (most recent call last):\n  File "a.py", line 3, in f\nSystemExit',
        'Traceback (most recent call last):\n  File "a.py", line 3, in f\nno type here: 42\nafter',
        '0|shop | Traceback (most recent call last):\n0|shop |   File "a.py", line 3, in f\n0|shop | E: 1',
        'Traceback (most recent call last):\n  File "a.py", line 3, in f\n',
    ]
    found = scan_errors(log, "svc", Grouper(), max_line_bytes=8192).groups
    texts.extend(group.sample for group in found)
    unprefixed = 0
    for text in texts:
        layout = fingerprint_memo.key_layout(text)
        assert layout is not None
        unprefixed += layout[2] >= 0 and not any(layout[1])
        by_lines = fingerprint_memo._trace_key_by_lines("svc", text, layout)
        assert fingerprint_memo.memo_key_by_layout("svc", text, layout) == by_lines
    assert unprefixed >= 4
