from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import SourceError
from bot.grouping import fingerprint, format_scan, scan_file, scan_lines
from bot.masking import mask, strip_header
from bot.models import Frame, LogLine, LogRecord
from bot.records import MAX_RECORD_BYTES, MAX_RECORD_LINES, RecordAssembler

DATA = Path(__file__).parent / "data" / "logs"

KEYERROR = """\
2026-11-23 07:21:41,042 ERROR svc[15407]: request /error failed for {who}
Traceback (most recent call last):
  File "/srv/svc/app.py", line {outer}, in do_GET
    self.handle_error()
  File "/srv/svc/app.py", line {inner}, in handle_error
    value = DATA["{key}"]
            ~~~~^^^^^^^^^^^^^^^
KeyError: '{key}'"""

ACCESS = '127.0.0.1 - - [23/Nov/2026 07:21:41] "GET /error HTTP/1.1" 500 -'


def assemble(text: str, service: str = "svc") -> list[LogRecord]:
    assembler = RecordAssembler(service, "file:/x.log")
    lines = [LogLine(t, "file:/x.log", n) for n, t in enumerate(text.split("\n"), start=1)]
    return assembler.feed(lines, 100.0) + assembler.flush()


def one(text: str, service: str = "svc") -> LogRecord:
    records = assemble(text, service)
    assert len(records) == 1, [r.text for r in records]
    return records[0]


def keyerror(who: str = "alice", key: str = "missing_key", outer: int = 41, inner: int = 77) -> str:
    return KEYERROR.format(who=who, key=key, outer=outer, inner=inner)


# --- record assembly --------------------------------------------------------------------------------


def test_traceback_with_header_and_caret_lines_is_one_record() -> None:
    record = one(keyerror())
    assert record.line_count == 8
    assert record.first_line_no == 1
    assert record.at == 100.0
    assert record.text == keyerror()


def test_single_lines_are_records_and_the_last_waits_for_flush() -> None:
    assembler = RecordAssembler("svc", "s")
    done = assembler.feed([LogLine("a", "s", 1), LogLine("b", "s", 2)], 1.0)
    assert [r.text for r in done] == ["a"]
    assert [r.text for r in assembler.flush()] == ["b"]
    assert assembler.flush() == []


def test_a_record_continues_across_feed_calls() -> None:
    assembler = RecordAssembler("svc", "s")
    lines = [LogLine(t, "s", n) for n, t in enumerate(keyerror().split("\n"), start=1)]
    assert assembler.feed(lines[:3], 1.0) == []
    assert assembler.feed(lines[3:], 2.0) == []
    (record,) = assembler.flush()
    assert record.line_count == 8
    assert record.at == 1.0


def test_interleaved_access_log_lines_end_records_and_are_not_headers() -> None:
    text = "\n".join([ACCESS, keyerror().split("\n", 1)[1], ACCESS, keyerror(), ACCESS])
    records = assemble(text)
    assert [(r.first_line_no, r.line_count) for r in records] == [(1, 1), (2, 7), (9, 1), (10, 8), (18, 1)]


@pytest.mark.parametrize(
    "link",
    [
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    ],
)
def test_chained_tracebacks_are_one_record_keyed_by_the_last_exception(link: str) -> None:
    text = f"""\
Traceback (most recent call last):
  File "/srv/svc/payments.py", line 12, in charge
    raise CardDeclined(card)
payments.CardDeclined: card 4242

{link}

Traceback (most recent call last):
  File "/srv/svc/app.py", line 90, in handle_pay
    payments.pay(order)
  File "/srv/svc/payments.py", line 20, in pay
    raise PaymentError(order.id)
payments.PaymentError: order 1001 not paid
after"""
    records = assemble(text)
    assert [r.line_count for r in records] == [13, 1]
    fp = fingerprint(records[0])
    assert fp.exception_type == "payments.PaymentError"
    assert fp.frames[-1] == Frame("/srv/svc/payments.py", 20, "pay")
    assert fp.is_error


def test_a_blank_line_after_a_traceback_without_a_chain_is_its_own_record() -> None:
    text = 'Traceback (most recent call last):\n  File "a.py", line 1, in f\nValueError: x\n\nnext line'
    assert [(r.first_line_no, r.line_count) for r in assemble(text)] == [(1, 3), (4, 1), (5, 1)]


JAVA = [
    "2015-10-18 18:06:27,001 ERROR [exec-1] org.example.Handler: request 5521 failed",
    "java.lang.IllegalStateException: could not load order 5521",
    "\tat org.example.Handler.handle(Handler.java:42)",
    "\tat org.example.Server.dispatch(Server.java:17)",
    "Caused by: java.lang.NullPointerException: customer was null",
    "\tat org.example.Repo.find(Repo.java:88)",
    "\tat org.example.Handler.handle(Handler.java:40)",
    "\t... 1 more",
]


def test_java_trace_with_caused_by_is_one_record() -> None:
    record = one("\n".join(JAVA))
    assert record.line_count == len(JAVA)
    fp = fingerprint(record)
    assert fp.exception_type == "java.lang.NullPointerException"
    assert fp.frames[-1] == Frame("Repo.java", 88, "org.example.Repo.find")
    assert fp.frames[-2] == Frame("Handler.java", 40, "org.example.Handler.handle")
    assert fp.is_error


def test_pm2_prefixed_traceback_lines_are_joined() -> None:
    body = keyerror().split("\n")
    for prefix in ("0|svc      | ", "2026-11-23T07:23:24: ", "2026-11-23 07:23:40.247 +00:00: "):
        record = one("\n".join(prefix + line for line in body))
        assert record.line_count == 8
        assert fingerprint(record).key == fingerprint(one(keyerror())).key


def test_huge_record_is_capped_keeping_its_head_and_its_exception_line() -> None:
    frames = [f'  File "/srv/r.py", line {n}, in recurse\n    return recurse(n - 1)' for n in range(400)]
    text = (
        "Traceback (most recent call last):\n"
        + "\n".join(frames)
        + "\nRecursionError: maximum recursion depth"
    )
    record = one(text)
    assert record.line_count == 802
    assert len(record.text.encode()) <= MAX_RECORD_BYTES
    assert len(record.text.split("\n")) <= MAX_RECORD_LINES
    assert record.text.startswith("Traceback (most recent call last):")
    assert record.text.endswith("RecursionError: maximum recursion depth")
    assert "lines omitted" in record.text
    assert fingerprint(record).exception_type == "RecursionError"


# --- header stripping and masks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "level", "message"),
    [
        ("2026-11-23 07:21:41,042 ERROR svc[15407]: request /error failed", "ERROR", "request /error failed"),
        ("ERROR:root:boom", "ERROR", "boom"),
        ("2026-11-23T07:23:24: 2026-11-23 07:23:24,100 INFO svc[1]: up", "INFO", "up"),
        ("0|svc      | WARNING something odd", "WARNING", "something odd"),
        ("081109 203615 148 INFO dfs.DataNode$PacketResponder: Responder 1 done", "INFO", "Responder 1 done"),
        ("2015-10-18 18:01:47,978 INFO [main] org.apache.App: Created app", "INFO", "Created app"),
        (
            "2015-07-29 17:41:44,747 - WARN  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:Leader@774] - Timed out",
            "WARN",
            "Timed out",
        ),
        (
            "- 1117838570 2005.06.03 R02-M1-N0 2005-06-03-15.42.50.675872 R02 RAS KERNEL FATAL data TLB error",
            "FATAL",
            "data TLB error",
        ),
        (
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown",
            None,
            "check pass; user unknown",
        ),
        ("plain message without header", None, "plain message without header"),
        ("an ERROR in the middle of prose", None, "an ERROR in the middle of prose"),
    ],
)
def test_header_stripping_without_per_file_config(line: str, level: str | None, message: str) -> None:
    header = strip_header(line)
    assert (header.level, header.message) == (level, message)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("took 35 ms and 2.5s", "took <duration> and <duration>"),
        ("wrote 12 MB, 512KiB and 0 bytes", "wrote <size>, <size> and <size>"),
        ("retry 3 of 10, id -42, v1.2.3", "retry <num> of <num>, id <num>, v<num>"),
        ("block blk_-6952295868487656571 gone", "block blk_<num> gone"),
        ("at 0x7ffe12ab and deadbeef0123", "at <hex> and <hex>"),
        ("req 550e8400-e29b-41d4-a716-446655440000", "req <uuid>"),
        ("from 10.1.2.3:8080 and 10.1.2.4.", "from <ip> and <ip>."),
        ("at fe80::1ff:fe23:4567:890a and ::1 and 2001:db8:0:0:0:0:2:1", "at <ip> and <ip> and <ip>"),
        ("open /var/lib/app/data.db failed", "open <path> failed"),
        ("open C:\\Users\\bob\\app.ini failed", "open <path> failed"),
        ("see https://example.com/a?b=1 now", "see <url> now"),
        ("mail bob.smith+x@example.co.uk now", "mail <email> now"),
        ("via proxy.cse.cuhk.edu.hk:5070 and db-1.internal", "via <host> and <host>"),
        ("at Sat Jun 18 02:23:10 2005 and Jul  1 09:00:55", "at <datetime> and <datetime>"),
        ("key 'abc' and \"d e f\" but don't", "key '<str>' and \"<str>\" but don't"),
        ('{"user": "bob", "n": 3}', '{"user": "<str>", "n": <num>}'),
        ('"GET /users/123/orders?page=2 HTTP/1.1" 200', '"GET /users/<id>/orders?<query> HTTP" <num>'),
        ("Foo::bar and 12:30:45", "Foo::bar and <num>:<num>:<num>"),
    ],
)
def test_masks_each_token_kind(text: str, masked: str) -> None:
    assert mask(text) == masked


# --- fingerprints -----------------------------------------------------------------------------------


def test_same_fault_with_other_ids_messages_and_line_numbers_has_one_key() -> None:
    a = fingerprint(one(keyerror()))
    b = fingerprint(one(keyerror(who="bob 8812", key="other_key", outer=52, inner=90)))
    assert a.key == b.key
    assert len(a.key) == 16
    int(a.key, 16)
    assert a.exception_type == "KeyError"
    assert a.template == "KeyError: '<str>' at app.py in handle_error"
    assert a.frames == (Frame("/srv/svc/app.py", 41, "do_GET"), Frame("/srv/svc/app.py", 77, "handle_error"))
    assert a.is_error
    assert a.service == "svc"


def test_different_fault_sites_services_or_types_have_different_keys() -> None:
    base = fingerprint(one(keyerror())).key
    other_function = keyerror().replace("in handle_error", "in handle_other")
    other_file = keyerror().replace('app.py", line 77', 'views.py", line 77')
    other_type = keyerror().replace("KeyError: 'missing_key'", "IndexError: list index out of range")
    assert fingerprint(one(other_function)).key != base
    assert fingerprint(one(other_file)).key != base
    assert fingerprint(one(other_type)).key != base
    assert fingerprint(one(keyerror(), service="api")).key != base


def test_keyboard_interrupt_from_a_pm2_restart_is_not_an_error() -> None:
    text = """\
Traceback (most recent call last):
  File "/srv/svc/app.py", line 120, in <module>
    server.serve_forever()
  File "/usr/lib/python3.11/selectors.py", line 415, in select
    fd_event_list = self._selector.poll(timeout, max_ev)
                    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
KeyboardInterrupt"""
    fp = fingerprint(one(text))
    assert fp.exception_type == "KeyboardInterrupt"
    assert not fp.is_error
    raised = fingerprint(
        one(text.replace("KeyboardInterrupt", "KeyboardInterrupt: raised by the app on purpose"))
    )
    assert raised.is_error


@pytest.mark.parametrize(
    ("line", "is_error"),
    [
        ("2026-11-23 07:21:41,042 ERROR svc[1]: boom", True),
        ("2026-11-23 07:21:41,042 CRITICAL svc[1]: boom", True),
        ("2015-10-18 18:06:26,029 FATAL [IPC] org.App: gone", True),
        ("2015-10-18 18:06:26,029 INFO [IPC] org.App: Error: java.net.NoRouteToHostException", False),
        ("2026-11-23 07:21:41,042 WARNING svc[1]: DataStreamer Exception", False),
        ("- 1117838570 2005.06.03 R02 RAS KERNEL INFO instruction cache parity error corrected", False),
        (ACCESS, True),
        (ACCESS.replace("500", "404"), False),
        ("panic: runtime error: invalid memory address", True),
        ("error: could not connect to db", True),
        ("ValueError: bad input", True),
        ("all good here", False),
    ],
)
def test_error_classification(line: str, is_error: bool) -> None:
    assert fingerprint(one(line)).is_error is is_error


def test_access_log_template_names_status_method_and_route() -> None:
    fp = fingerprint(one('10.0.0.9 - - [x] "POST /orders/981/pay?x=1 HTTP/1.1" 502 12'))
    assert fp.template == "HTTP 502 POST /orders/<id>/pay"
    other = fingerprint(one('10.0.0.7 - - [y] "POST /orders/12/pay HTTP/1.0" 502 99'))
    assert other.key == fp.key


def test_plain_lines_group_by_masked_template() -> None:
    a = fingerprint(one("2026-11-23 07:21:41,042 ERROR svc[1]: timeout after 30s talking to 10.0.0.5:5432"))
    b = fingerprint(one("2026-11-24 08:00:00,000 ERROR svc[2]: timeout after 45s talking to 10.0.0.6:5432"))
    c = fingerprint(one("2026-11-24 08:00:00,000 ERROR svc[2]: refused by 10.0.0.6:5432"))
    assert a.key == b.key != c.key
    assert a.template == "timeout after <duration> talking to <ip>"
    assert a.exception_type is None
    assert a.frames == ()


# --- scan ---------------------------------------------------------------------------------------------


def _ranges(numbers: list[int]) -> str:
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


SAMPLES = sorted(DATA.glob("*.log"))


def test_there_are_annotated_samples() -> None:
    assert len(SAMPLES) >= 5
    for log in SAMPLES:
        assert log.with_suffix(".expected.json").is_file(), f"{log.name} has no .expected.json"


@pytest.mark.parametrize("log", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_annotated_sample_logs_group_as_expected(log: Path) -> None:
    expected = json.loads(log.with_suffix(".expected.json").read_text())
    result = scan_file(log, errors_only=False)
    lines: dict[str, list[int]] = {}
    for n, key in result.line_groups:
        lines.setdefault(key, []).append(n)
    actual = [
        {
            "template": g.template,
            "is_error": g.is_error,
            "exception_type": g.exception_type,
            "count": g.count,
            "lines": _ranges(lines[g.key]),
        }
        for g in sorted(result.groups, key=lambda g: g.first_line)
    ]
    assert actual == expected["groups"]
    assert (result.lines, result.records, result.error_records) == (
        expected["lines"],
        expected["records"],
        expected["error_records"],
    )
    assert [n for n, _ in result.line_groups] == list(range(1, result.lines + 1))


def test_scan_lines_matches_scan_file_and_errors_only_filters_groups() -> None:
    log = DATA / "python_service.log"
    from_file = scan_file(log)
    from_lines = scan_lines(log.read_text().splitlines(keepends=True))
    assert from_file.groups == from_lines.groups
    assert from_file.line_groups == from_lines.line_groups
    assert all(g.is_error for g in from_file.groups)
    assert len(scan_file(log, errors_only=False).groups) > len(from_file.groups)
    counts = [g.count for g in from_file.groups]
    assert counts == sorted(counts, reverse=True)


def test_format_scan_is_a_readable_table() -> None:
    result = scan_file(DATA / "python_service.log")
    text = format_scan(result)
    lines = text.splitlines()
    assert lines[0] == "Lines: 36, records: 9 (5 errors), groups shown: 3 (3 errors)"
    assert lines[2].split() == ["count", "line", "error", "key", "template"]
    top = lines[4]
    assert top.split()[:3] == ["2", "2", "yes"]
    assert "KeyError: '<str>' at app.py in handle_error" in top
    assert '|   File "/srv/svc/app.py", line 41, in do_GET' in text
    assert all(len(line) <= 110 for line in lines)
    assert "No matching groups." in format_scan(scan_lines(["just info"]))


def test_scan_of_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file not found"):
        scan_file(tmp_path / "absent.log")


def test_scan_streams_big_files(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    with log.open("w") as fh:
        for n in range(20_000):
            fh.write(f"2026-11-23 07:21:41,{n % 1000:03d} INFO svc[1]: handled request {n} in {n % 97}ms\n")
            if n % 1000 == 0:
                fh.write(keyerror(who=str(n)) + "\n")
    result = scan_file(log)
    assert [(g.count, g.exception_type) for g in result.groups] == [(20, "KeyError")]
    assert result.lines == 20_000 + 20 * 8
