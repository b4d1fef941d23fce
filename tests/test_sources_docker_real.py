"""DockerLogsSource against a real dockerd (tests/fakes/docker_env.py).

The source runs `docker logs --timestamps --since T`; these tests check what that really gives: both
streams, the RFC 3339 nanosecond stamps stripped, each line once across polls, across a restart of dockerd
and of healbot (only the cursor string survives), and no other container's lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import SourceError
from bot.models import LogLine
from bot.records import RecordAssembler
from bot.sources import docker as docker_source
from bot.sources.docker import DockerLogsSource
from tests.fakes.docker_env import DockerEnv
from tests.helpers import wait_until

# tick-BOOT-N on stdout every 20 ms; BOOT is new for each start of the process
TICKER = (
    "import os, time\nboot = os.urandom(3).hex()\ni = 0\n"
    "while True:\n    i += 1\n    print(f'tick-{boot}-{i}', flush=True)\n    time.sleep(0.02)\n"
)
TICK = re.compile(r"^tick-([0-9a-f]{6})-(\d+)$")
# runs /shared/step-*.py in name order, each once: the test decides what the app writes, and when
SPEAKER = (
    "import glob, os, sys, time\nprint('ready', flush=True)\n"
    "while True:\n"
    "    steps = sorted(glob.glob('/shared/step-*.py'))\n"
    "    for path in steps:\n"
    "        exec(open(path).read())\n"
    "        os.rename(path, path + '.done')\n"
    "    time.sleep(0.01)\n"
)
SLEEPER_LINE = "print('up', flush=True)\nimport time\ntime.sleep(100000)"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


class Reader:
    """Reads like the daemon: a new source for each poll, only the cursor string kept between polls."""

    def __init__(self, env: DockerEnv, container: str) -> None:
        self.env, self.container = env, container
        self.cursor = self.source().read(None).cursor
        self.lines: list[LogLine] = []

    def source(self) -> DockerLogsSource:
        return DockerLogsSource(self.container, self.container, binary=self.env.docker_bin)

    def read(self) -> list[LogLine]:
        batch = self.source().read(self.cursor)
        self.cursor = batch.cursor
        self.lines += batch.lines
        return list(batch.lines)

    def texts(self) -> list[str]:
        return [line.text for line in self.lines]

    def read_until(self, text: str, timeout: float = 20.0) -> None:
        wait_until(lambda: self.read() is not None and text in self.texts(), timeout=timeout, what=text)


def boots(tick_texts: list[str]) -> set[str]:
    return {match.group(1) for text in tick_texts if (match := TICK.match(text))}


def ticks(texts: list[str]) -> list[str]:
    return [text for text in texts if TICK.match(text)]


def all_ticks(env: DockerEnv, container: str) -> list[str]:
    """Every tick the container ever wrote, read without the source (the ground truth)."""
    return ticks(env.docker("logs", container).stdout.decode().splitlines())


class Step:
    def __init__(self, shared: Path) -> None:
        self.shared = shared
        self.count = 0

    def __call__(self, code: str) -> None:
        """Make the SPEAKER container run `code` (sys, os and time are imported)."""
        self.count += 1
        draft = self.shared / f"draft-{self.count:04d}"
        draft.write_text(code)
        draft.rename(self.shared / f"step-{self.count:04d}.py")


@pytest.fixture
def container(docker: DockerEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"hb-{request.node.name.split('[')[0][-40:].replace('_', '-')}"
    yield name
    docker.remove(name)


@pytest.fixture
def speaker(docker: DockerEnv, container: str, tmp_path: Path) -> Step:
    docker.run_container(container, SPEAKER, binds=[f"{tmp_path}:/shared"])
    wait_until(lambda: "ready" in docker.logs(container), what="speaker ready")
    return Step(tmp_path)


def test_first_read_marks_the_end_then_each_line_once_in_order(docker: DockerEnv, container: str) -> None:
    docker.run_container(container, TICKER)
    wait_until(lambda: len(all_ticks(docker, container)) >= 5, what="first ticks")
    reader = Reader(docker, container)
    wait_until(lambda: reader.read() is not None and len(ticks(reader.texts())) > 20, what="20 ticks")

    truth = all_ticks(docker, container)
    read = ticks(reader.texts())
    start = truth.index(read[0])
    assert start >= 5, "the first read must skip what was there before"
    assert read == truth[start : start + len(read)]


def test_a_traceback_on_stderr_is_one_record_without_the_docker_timestamps(
    docker: DockerEnv, container: str, speaker: Step
) -> None:
    reader = Reader(docker, container)
    speaker(
        "import logging\nlogging.basicConfig(format='%(levelname)s %(name)s: %(message)s')\n"
        "try:\n    {}['missing_key']\n"
        "except KeyError:\n    logging.getLogger('svc').exception('request /error failed')\n"
        "print('after the error', file=sys.stderr, flush=True)\n"  # one stream: docker keeps its order
    )
    reader.read_until("after the error")

    assert not [text for text in reader.texts() if STAMP.match(text)]
    assembler = RecordAssembler(container, reader.source().source_id)
    records = assembler.feed(reader.lines, at=0.0) + assembler.flush()
    (traceback,) = [r.text.splitlines() for r in records if "Traceback" in r.text]
    assert traceback[:2] == ["ERROR svc: request /error failed", "Traceback (most recent call last):"]
    assert traceback[-1] == "KeyError: 'missing_key'"
    assert any(line.startswith('  File "<string>", line ') for line in traceback)


def test_a_tty_containers_lines_lose_their_carriage_returns(
    docker: DockerEnv, container: str, tmp_path: Path
) -> None:
    docker.run_container(container, SPEAKER, tty=True, binds=[f"{tmp_path}:/shared"])
    wait_until(lambda: "ready" in docker.logs(container), what="speaker ready")
    reader = Reader(docker, container)

    Step(tmp_path)("print('on a tty', flush=True)\nprint('stderr too', file=sys.stderr, flush=True)")
    reader.read_until("stderr too")

    assert b"Z on a tty\r\n" in docker.docker("logs", "--timestamps", container).stdout
    assert reader.texts() == ["on a tty", "stderr too"]


def test_resumed_across_a_dockerd_restart_from_the_persisted_cursor(
    docker: DockerEnv, container: str
) -> None:
    docker.run_container(container, TICKER, restart="always")
    wait_until(lambda: all_ticks(docker, container), what="first ticks")
    reader = Reader(docker, container)
    wait_until(lambda: reader.read() is not None and len(ticks(reader.texts())) > 10, what="ticks")
    persisted = reader.cursor
    try:
        docker.stop_daemon()
        with pytest.raises(SourceError, match="Cannot connect to the Docker daemon"):
            reader.read()
        assert reader.cursor == persisted  # a failed poll moves nothing
    finally:
        docker.start_daemon()

    wait_until(
        lambda: len(boots(all_ticks(docker, container))) == 2,
        timeout=30,
        what="the container restarted with dockerd",
    )
    wait_until(lambda: reader.read() is not None and len(ticks(reader.texts())) > 25, what="ticks after")

    truth = all_ticks(docker, container)
    read = ticks(reader.texts())
    start = truth.index(read[0])
    assert read == truth[start : start + len(read)]
    assert len(boots(read)) == 2  # lines of both runs of the container


def test_json_log_rotated_under_the_reader(docker: DockerEnv, container: str) -> None:
    docker.run_container(container, TICKER, log_opts=["max-size=2k", "max-file=3"])
    log_dir = Path(str(docker.inspect(container)["LogPath"])).parent
    wait_until(lambda: all_ticks(docker, container), what="first ticks")
    reader = Reader(docker, container)

    wait_until(
        lambda: reader.read() is not None and len(ticks(reader.texts())) > 80, timeout=30, what="80 ticks"
    )

    assert len(list(log_dir.glob("*-json.log.*"))) == 2, "docker should have rotated its json log"
    numbers = [int(text.rsplit("-", 1)[1]) for text in ticks(reader.texts())]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_only_the_containers_own_lines_are_read(docker: DockerEnv, container: str, speaker: Step) -> None:
    other = f"{container}-other"
    docker.run_container(
        other, "import time\nwhile True:\n    print('other-line', flush=True)\n    time.sleep(0.02)"
    )
    try:
        reader = Reader(docker, container)
        for n in range(5):
            speaker(f"print('own-line-{n}', flush=True)\ntime.sleep(0.05)")
        reader.read_until("own-line-4")
        assert "other-line" in docker.logs(other)
    finally:
        docker.remove(other)
    assert reader.texts() == [f"own-line-{n}" for n in range(5)]


def test_a_log_driver_docker_logs_cannot_read_is_named_with_what_to_do(
    docker: DockerEnv, container: str
) -> None:
    docker.run_container(container, SLEEPER_LINE, log_driver="none")

    with pytest.raises(SourceError) as failure:
        DockerLogsSource(container, container, binary=docker.docker_bin).read(None)

    assert "configured logging driver does not support reading" in str(failure.value)
    assert str(failure.value).endswith(
        "run the container with --log-driver=local, or name its log files in `logs`"
    )


def test_missing_container_is_a_source_error(docker: DockerEnv) -> None:
    source = DockerLogsSource("web", "hb-not-there", binary=docker.docker_bin)

    with pytest.raises(
        SourceError, match=r"docker logs failed \(exit 1\): .*No such container: hb-not-there"
    ):
        source.read(None)


def test_a_container_recreated_under_its_name_is_read_from_its_first_line(
    docker: DockerEnv, container: str
) -> None:
    docker.run_container(container, "print('old container', flush=True)")
    wait_until(lambda: "old container" in docker.logs(container), what="old output")
    reader = Reader(docker, container)
    docker.run_container(container, "print('new container', flush=True)\nprint('second line', flush=True)")

    reader.read_until("second line")

    assert reader.texts() == ["new container", "second line"]


def test_stderr_flood_between_two_polls_loses_no_line(
    docker: DockerEnv, container: str, speaker: Step
) -> None:
    """Regression: stderr of `docker logs` was cut at 64 KiB, so a burst of errors between two polls lost
    every line after the cut that was older than the last stdout line."""
    reader = Reader(docker, container)
    speaker(
        "for i in range(3000):\n    print(f'err-{i:05d} ' + 'x' * 80, file=sys.stderr)\n"
        "sys.stderr.flush()\nprint('flood done', flush=True)\n"
    )
    wait_until(lambda: "flood done" in (logs := docker.logs(container)) and "err-02999" in logs, what="flood")

    reader.read_until("flood done")

    errors = [text for text in reader.texts() if text.startswith("err-")]
    assert errors == [f"err-{i:05d} " + "x" * 80 for i in range(3000)]


def test_a_read_cut_at_the_output_cap_goes_on_from_the_last_whole_line(
    docker: DockerEnv, container: str, speaker: Step, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a read cut at the cap took its partial last line as whole (and skipped the rest of it
    next time), and took the other stream's later lines, passing lines of the cut stream not yet read."""
    reader = Reader(docker, container)
    speaker(
        "for i in range(400):\n"
        "    print(f'out-{i:04d} ' + 'o' * 60, flush=True)\n"
        "    print(f'err-{i:04d} ' + 'e' * 60, file=sys.stderr)\n"
        "print('flood done', flush=True)\n"
    )
    wait_until(lambda: "flood done" in (logs := docker.logs(container)) and "err-0399" in logs, what="flood")
    monkeypatch.setattr(docker_source, "MAX_OUTPUT_BYTES", 16 * 1024)
    last_err = "err-0399 " + "e" * 60

    reads = 0
    while not {"flood done", last_err} <= set(reader.texts()):
        reads += 1
        assert reader.read(), "a cut read must still make progress"
        assert reads < 50

    assert reads >= 3  # 2 × 400 lines of 100 bytes with stamps: the cap really cut
    for stream, fill in (("out", "o"), ("err", "e")):
        got = [text for text in reader.texts() if text.startswith(f"{stream}-")]
        assert got == [f"{stream}-{i:04d} " + fill * 60 for i in range(400)]


def test_a_line_longer_than_the_cap_is_taken_truncated_and_the_read_goes_on(
    docker: DockerEnv, container: str, speaker: Step, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: each read began with the same line longer than the cap, skipped it as read and found
    nothing after it within the cap: the source was stuck there for good."""
    reader = Reader(docker, container)
    speaker("print('A' * 40000, flush=True)\nprint('after the long line', flush=True)")
    wait_until(lambda: "after the long line" in docker.logs(container), what="the long line")
    monkeypatch.setattr(docker_source, "MAX_OUTPUT_BYTES", 16 * 1024)

    reader.read_until("after the long line")

    assert reader.texts() == ["A" * docker_source.MAX_LINE_BYTES, "after the long line"]
    assert [line.truncated for line in reader.lines] == [True, False]


def test_the_stamp_after_a_stamp_carries_into_the_next_second() -> None:
    assert docker_source._next_stamp("2026-12-31T23:59:59.999999999Z") == "2027-01-01T00:00:00.000000000Z"
    assert docker_source._next_stamp("2026-12-03T14:58:59.562403257Z") == "2026-12-03T14:58:59.562403258Z"
    assert docker_source._next_stamp("2026-12-03T14:58:59Z") is None  # not docker's fixed format
