"""A container's output, read by time: `docker logs --timestamps --since T CONTAINER`.

`--since` is inclusive, so the cursor keeps the last timestamp and how many lines carried it; those are
skipped on the next read. stdout and stderr of the container both count (docker writes them to its own
stdout and stderr). The first poll only records the last timestamp (`--tail 1`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from bot.errors import SourceError
from bot.models import LogLine, SourceBatch
from bot.sources.command import Runner, default_runner
from bot.sources.file import clean_line

DEFAULT_TIMEOUT_S = 30.0
MAX_LINE_BYTES = 8192
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
        self._run = runner or default_runner

    def argv(self, since: str | None, *, first: bool = False) -> list[str]:
        if first:
            return [self.binary, "logs", "--timestamps", "--tail", "1", self.container]
        if since is None:  # the container had printed nothing when we started
            return [self.binary, "logs", "--timestamps", self.container]
        return [self.binary, "logs", "--timestamps", "--since", since, self.container]

    def read(self, cursor: str | None, max_bytes: int = 4 * 1024 * 1024) -> SourceBatch:
        since, seen = _load(cursor) if cursor is not None else (None, 0)
        out = self._run(self.argv(since, first=cursor is None), self.timeout_s)
        if out.returncode != 0:
            problem = (out.stderr or out.stdout).decode("utf-8", errors="replace").strip()[:300]
            raise SourceError(f"{self.source_id}: docker logs failed (exit {out.returncode}): {problem}")
        entries = sorted(parse_timestamped(out.stdout) + parse_timestamped(out.stderr), key=lambda e: e[0])
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
        return SourceBatch(lines=tuple(lines), cursor=_dump(last, count), resume=_AtStamp(tuple(starts)))


@dataclass(frozen=True, slots=True)
class _AtStamp:
    """`SourceBatch.resume` of a docker batch: `--since` the line's stamp, skipping the lines of that stamp
    that came before it."""

    starts: tuple[tuple[str, int], ...]

    def __call__(self, index: int) -> str:
        return _dump(*self.starts[index])


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
