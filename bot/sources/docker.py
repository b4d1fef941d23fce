"""A container's output, read by time: `docker logs --timestamps --since T CONTAINER`.

`--since` is inclusive, so the cursor keeps the last timestamp and how many lines carried it; those are
skipped on the next read. stdout and stderr of the container both count (docker writes them to its own
stdout and stderr, so both are read in full: errors are mostly on stderr). The first poll only records the
last timestamp (`--tail 1`).

A read is capped (MAX_OUTPUT_BYTES per stream; docker logs has no line limit that counts from `--since`).
When a stream was cut, its last line may be partial, and lines of the other stream stamped later may
come after lines of the cut stream not read yet: only lines stamped up to the cut stream's last whole
line are taken, and the next poll reads on from there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot import proc
from bot.errors import SourceError
from bot.models import LogLine, SourceBatch
from bot.sources.command import Output, Runner
from bot.sources.file import clean_line

DEFAULT_TIMEOUT_S = 30.0
MAX_LINE_BYTES = 8192
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # per stream and read
UNREADABLE_DRIVER_HINT = (
    "`docker logs` reads only the json-file, local and journald log drivers (and others with dual logging): "
    "run the container with --log-driver=local, or name its log files in `logs`"
)
_FIXED_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})Z$")
_STAMPED = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ?(.*)$", re.DOTALL)


def parse_timestamped(output: bytes) -> list[tuple[str, bytes]]:
    """(timestamp, line) pairs from `docker logs --timestamps` output; unstamped lines join the last."""
    entries: list[tuple[str, bytes]] = []
    for raw in output.split(b"\n"):
        match = _STAMPED.match(raw)
        if match is not None:
            entries.append((match.group(1).decode(), match.group(2)))
        elif raw and entries:
            entries.append((entries[-1][0], raw))
    return entries


class DockerLogsSource:
    def __init__(
        self,
        service: str,
        container: str,
        *,
        binary: str = "docker",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        runner: Runner | None = None,
    ) -> None:
        if not container:
            raise ValueError("container must not be empty")
        self.service = service
        self.container = container
        self.binary = binary
        self.timeout_s = timeout_s
        self.source_id = f"docker:{container}"
        self._run = runner or run_docker_logs

    def argv(self, since: str | None, *, first: bool = False) -> list[str]:
        if first:
            return [self.binary, "logs", "--timestamps", "--tail", "1", self.container]
        if since is None:  # the container had printed nothing when we started
            return [self.binary, "logs", "--timestamps", self.container]
        return [self.binary, "logs", "--timestamps", "--since", since, self.container]

    def read(self, cursor: str | None, max_bytes: int = 4 * 1024 * 1024) -> SourceBatch:
        since, seen = _load(cursor) if cursor is not None else (None, 0)
        out = self._run(self.argv(since, first=cursor is None), self.timeout_s)
        cut = [len(stream) >= MAX_OUTPUT_BYTES for stream in (out.stdout, out.stderr)]
        if out.returncode != 0 and not any(cut):  # a cut read may end in a kill: it is still a read
            problem = (out.stderr or out.stdout).decode("utf-8", errors="replace").strip()[:300]
            if "does not support reading" in problem:
                problem += f"; {UNREADABLE_DRIVER_HINT}"
            raise SourceError(f"{self.source_id}: docker logs failed (exit {out.returncode}): {problem}")
        entries = _merge(parse_timestamped(out.stdout), parse_timestamped(out.stderr), cut)
        if cursor is None:
            last = entries[-1][0] if entries else None
            count = sum(1 for stamp, _ in entries if stamp == last)
            return SourceBatch(lines=(), cursor=_dump(last, count))
        skip = seen if since is not None else 0
        lines: list[LogLine] = []
        starts: list[
            tuple[str, int]
        ] = []  # where each line resumes: its stamp, lines of that stamp before it
        last, count = since, seen
        for stamp, raw in entries:
            if since is not None and stamp < since:
                continue  # docker's own --since already drops these; stamps have one fixed width (UTC, ns)
            if stamp == since and skip > 0:
                skip -= 1
                continue
            starts.append((stamp, count if stamp == last else 0))
            count = count + 1 if stamp == last else 1
            last = stamp
            lines.append(
                LogLine(
                    text=clean_line(raw[:MAX_LINE_BYTES]),
                    source=self.source_id,
                    line_no=len(lines) + 1,
                    truncated=len(raw) > MAX_LINE_BYTES,
                )
            )
        if not lines and any(cut) and last is not None and (after := _next_stamp(last)) is not None:
            # the cap was spent on lines already read, all of one stamp: the pieces of one line longer
            # than the cap (docker stamps each 16 KiB piece alike). Going on after that stamp skips its rest.
            return SourceBatch(lines=(), cursor=_dump(after, 0), resume=_AtStamp(()))
        return SourceBatch(lines=tuple(lines), cursor=_dump(last, count), resume=_AtStamp(tuple(starts)))


def run_docker_logs(argv: Sequence[str], timeout_s: float) -> Output:
    """The production Runner: both streams kept up to MAX_OUTPUT_BYTES (the shared log-command runner
    keeps 64 KiB of stderr, which is only diagnostics for journalctl)."""
    result = proc.run(argv, timeout_s=timeout_s, max_output_bytes=MAX_OUTPUT_BYTES, error=SourceError)
    if result.returncode is None:
        raise SourceError(f"{argv[0]} did not answer within {timeout_s:g} s")
    return Output(result.returncode, result.stdout, result.stderr)


def _merge(
    stdout: list[tuple[str, bytes]], stderr: list[tuple[str, bytes]], cut: Sequence[bool]
) -> list[tuple[str, bytes]]:
    """Both streams' entries in stamp order; from a cut stream, only what is sure to be whole and complete."""
    streams = [stdout, stderr]
    limit: str | None = None
    for entries, was_cut in zip(streams, cut, strict=True):
        if was_cut and entries:
            if len(entries) > 1:
                entries.pop()  # maybe partial; a lone line longer than the cap is kept (truncated)
            last = entries[-1][0]
            limit = last if limit is None else min(limit, last)
    merged = sorted(stdout + stderr, key=lambda e: e[0])
    return merged if limit is None else [entry for entry in merged if entry[0] <= limit]


@dataclass(frozen=True, slots=True)
class _AtStamp:
    """`SourceBatch.resume` of a docker batch: `--since` the line's stamp, skipping the lines of that stamp
    that came before it."""

    starts: tuple[tuple[str, int], ...]

    def __call__(self, index: int) -> str:
        return _dump(*self.starts[index])


def _next_stamp(stamp: str) -> str | None:
    """The stamp one nanosecond after `stamp` in docker's fixed format (None for any other format)."""
    match = _FIXED_STAMP.match(stamp)
    if match is None:
        return None
    seconds = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    nanos = int(match.group(2)) + 1
    if nanos == 10**9:
        seconds, nanos = seconds + timedelta(seconds=1), 0
    return f"{seconds:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def _dump(since: str | None, seen: int) -> str:
    return json.dumps({"since": since, "seen": seen})


def _load(cursor: str) -> tuple[str | None, int]:
    try:
        data = json.loads(cursor)
        since, seen = data["since"], data["seen"]
    except (ValueError, TypeError, KeyError):
        raise SourceError(f"invalid docker cursor {cursor[:200]!r}") from None
    if not (since is None or isinstance(since, str)) or not isinstance(seen, int) or seen < 0:
        raise SourceError(f"invalid docker cursor {cursor[:200]!r}")
    return since, seen
