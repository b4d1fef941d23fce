"""JournaldSource against the real journal of a systemd 252 booted in namespaces (tests/fakes/systemd_env.py).

A unit's stdout reaches journald one entry per line; the source reads them by cursor through the
`journalctl` wrapper, and the daemon's RecordAssembler joins them into records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from bot.models import LogLine
from bot.records import RecordAssembler
from bot.sources import journald
from bot.sources.journald import JournaldSource
from tests.fakes.systemd_env import SystemdEnv
from tests.helpers import wait_until

TICKER = "[Service]\nExecStart=/bin/sh -c 'i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.05; done'\n"
TICK = re.compile(r"^tick-(\d+)$")


def source(env: SystemdEnv, unit: str) -> JournaldSource:
    return JournaldSource(unit.removesuffix(".service"), unit, binary=env.journalctl_bin)


def ticks(lines: tuple[LogLine, ...] | list[LogLine]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := TICK.match(line.text))]


class Reader:
    """Reads like the daemon: keeps only the cursor string between reads (as the store persists it)."""

    def __init__(self, env: SystemdEnv, unit: str) -> None:
        self.env, self.unit = env, unit
        self.cursor = source(env, unit).read(None).cursor
        self.seen: list[int] = []

    def read(self) -> list[int]:
        batch = source(self.env, self.unit).read(self.cursor)  # a new JournaldSource each time
        self.cursor = batch.cursor
        got = ticks(batch.lines)
        self.seen += got
        return got

    def read_until_more_than(self, count: int) -> None:
        wait_until(lambda: self.read() and len(self.seen) > count, timeout=20, what=f"{count} ticks")

    def assert_each_tick_once_in_order(self) -> None:
        assert self.seen, "no ticks read"
        assert self.seen == list(range(self.seen[0], self.seen[0] + len(self.seen))), self.seen


@pytest.fixture
def ticker(systemd: SystemdEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"hb-tick-{request.node.name.split('[')[0][-20:]}.service"
    with systemd.unit(name, TICKER):
        wait_until(lambda: "tick-3" in systemd.journalctl("-u", name, "-o", "cat"), what="first ticks")
        yield name


def test_first_read_marks_the_end_then_lines_come_in_order_once(systemd: SystemdEnv, ticker: str) -> None:
    reader = Reader(systemd, ticker)
    reader.read_until_more_than(10)
    reader.read_until_more_than(20)
    reader.assert_each_tick_once_in_order()


def test_cursor_resumes_in_a_new_reader_without_loss_or_repeat(systemd: SystemdEnv, ticker: str) -> None:
    reader = Reader(systemd, ticker)
    reader.read_until_more_than(5)
    persisted = reader.cursor
    wait_until(lambda: "tick-" in systemd.journalctl("-u", ticker, "-o", "cat", "-n", "1"), what="more")

    restarted = Reader.__new__(Reader)
    restarted.env, restarted.unit, restarted.cursor, restarted.seen = systemd, ticker, persisted, []
    restarted.read_until_more_than(5)

    assert restarted.seen[0] == reader.seen[-1] + 1
    reader.seen += restarted.seen
    reader.assert_each_tick_once_in_order()


def test_a_read_capped_at_max_entries_continues_where_it_stopped(
    systemd: SystemdEnv, ticker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = Reader(systemd, ticker)
    wait_until(
        lambda: systemd.journalctl("-u", ticker, "-o", "cat", "-n", "30").count("tick-") >= 30, what="ticks"
    )
    monkeypatch.setattr(journald, "MAX_ENTRIES", 4)
    for _ in range(5):
        assert len(reader.read()) <= 4
    monkeypatch.undo()
    reader.read_until_more_than(30)
    reader.assert_each_tick_once_in_order()


def test_only_the_units_own_lines_are_read(systemd: SystemdEnv, ticker: str) -> None:
    other = "hb-other.service"
    with systemd.unit(
        other, "[Service]\nExecStart=/bin/sh -c 'while :; do echo other-line; sleep 0.05; done'\n"
    ):
        reader = Reader(systemd, ticker)
        texts: list[str] = []

        def read_some() -> bool:
            batch = source(systemd, ticker).read(reader.cursor)
            reader.cursor = batch.cursor
            texts.extend(line.text for line in batch.lines)
            return len(ticks([LogLine(t, "", 0) for t in texts])) > 10

        wait_until(read_some, timeout=20, what="ticks")
        assert "other-line" in systemd.journalctl("-u", other, "-o", "cat")
        assert not [t for t in texts if "other" in t]


def test_unit_without_entries_at_start_is_read_from_its_first_line_not_the_journal_header(
    systemd: SystemdEnv,
) -> None:
    name = "hb-late.service"
    first = source(systemd, name).read(None)
    with systemd.unit(name, TICKER):
        reader = Reader.__new__(Reader)
        reader.env, reader.unit, reader.cursor, reader.seen = systemd, name, first.cursor, []
        reader.read_until_more_than(5)
        assert reader.seen[0] == 1
        reader.assert_each_tick_once_in_order()


TRACEBACK_UNIT = (
    "[Service]\nType=oneshot\n"
    "ExecStart=/usr/bin/python3 -c \"import json; print('loading', flush=True); json.loads('{bad')\"\n"
)


def test_a_traceback_on_a_units_stdout_is_one_record(systemd: SystemdEnv) -> None:
    name = "hb-traceback.service"
    reader_cursor = source(systemd, name).read(None).cursor
    with systemd.unit(name, TRACEBACK_UNIT, start=False):
        systemd.systemctl("start", name, check=False)  # the oneshot fails: that is the point
        wait_until(lambda: "JSONDecodeError" in systemd.journalctl("-u", name, "-o", "cat"), what="traceback")
        lines = source(systemd, name).read(reader_cursor).lines

    assembler = RecordAssembler("web", "journald:" + name)
    records = assembler.feed(lines, at=0.0) + assembler.flush()
    tracebacks = [r for r in records if "Traceback (most recent call last):" in r.text]
    assert len(tracebacks) == 1, [r.text for r in records]
    text = tracebacks[0].text
    assert text.splitlines()[:2] == ["loading", "Traceback (most recent call last):"]  # as logging.exception
    assert 'File "<string>", line 1, in <module>' in text and "json/__init__.py" in text
    assert text.splitlines()[-1].startswith("json.decoder.JSONDecodeError: ")


def test_vacuumed_cursor_entry_does_not_lose_the_next_line(systemd: SystemdEnv, ticker: str) -> None:
    """`--after-cursor` skipped one entry blindly: when the cursor's own entry was vacuumed, a line still
    in the journal was never read. (Lines written after the last read and vacuumed with the archive are
    gone from the journal itself; only those still there can be asked for.)"""
    reader = Reader(systemd, ticker)
    reader.read_until_more_than(5)
    for _ in range(2):
        last_read = reader.seen[-1]
        systemd.journalctl("--rotate")
        systemd.journalctl("--vacuum-files=1")
        after = len(reader.seen)
        reader.read_until_more_than(after + 5)
        still_there = ticks(
            [LogLine(t, "", 0) for t in systemd.journalctl("-u", ticker, "-o", "cat").splitlines()]
        )
        assert last_read not in still_there, "the vacuum should have removed the cursor's own entry"
        assert reader.seen[after:] == [t for t in still_there if last_read < t <= reader.seen[-1]]
    assert reader.seen == sorted(set(reader.seen))


def test_journald_restarted_under_the_reader(systemd: SystemdEnv, ticker: str) -> None:
    reader = Reader(systemd, ticker)
    reader.read_until_more_than(5)
    old_pid = systemd.show("systemd-journald.service", "MainPID")["MainPID"]

    systemd.systemctl("restart", "systemd-journald.service")

    assert systemd.show("systemd-journald.service", "MainPID")["MainPID"] != old_pid
    reader.read_until_more_than(len(reader.seen) + 10)
    reader.assert_each_tick_once_in_order()
