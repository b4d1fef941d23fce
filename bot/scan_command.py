"""`healbot scan FILE`: a dry run of record assembly and grouping on a real file, like fail2ban-regex.

Kept apart from bot/commands.py so that a scan imports only the grouping code, not the daemon. The errors-only
scan starts its grep pre-filter (bot.grepfilter) before anything else is imported (`start_search`, which
bot.cli calls right after parsing the arguments), so grep reads the file while the interpreter imports.
"""

from __future__ import annotations

from pathlib import Path

from bot.grepfilter import GrepHits, grep_timeout

TYPE_CHECKING = False  # not typing's: `healbot scan` imports typing only after its grep started

if TYPE_CHECKING:
    from bot.grouping import ScanResult

MAX_LINE_BYTES = 8192  # the default of bot.grouping.scan_errors and scan_file


def start_search(path: Path, *, all_records: bool, groups_out: Path | None) -> GrepHits | None:
    """The grep of the errors-only scan of `path`, started now; None when that scan will not run (the caller
    closes what it gets)."""
    if groups_out is not None or all_records:
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return None  # `scan` says what is wrong with the path
    return GrepHits.start(path, timeout_s=grep_timeout(size))


def scan(
    path: Path,
    *,
    service: str,
    all_records: bool,
    groups_out: Path | None,
    raw: bool = False,
    hits: GrepHits | None = None,
) -> int:
    """Print the groups; sample lines are shown redacted, as they would be sent, unless `raw`. `hits`: the
    grep `start_search` started on `path` (read and closed here)."""
    from bot.errors import HealbotError

    if not path.is_file():
        if hits is not None:
            hits.close()
        raise HealbotError(f"{path} is not a readable file")
    if groups_out is None and not all_records:
        result = _scan_errors(path, service, hits)  # the fast path: search the buffer for errors only
    else:
        from bot.grouping import scan_file

        result = scan_file(path, service=service, errors_only=not all_records)
    from bot.grouping import format_scan

    print(format_scan(result, raw=raw))
    if groups_out is not None:
        import json

        with groups_out.open("w", encoding="utf-8") as out:
            for line_no, key in result.line_groups:
                out.write(json.dumps({"line": line_no, "group": key}) + "\n")
    return 0


def _scan_errors(path: Path, service: str, hits: GrepHits | None) -> ScanResult:
    """`bot.grouping.scan_errors(path, service)`, with grep started before the grouping code is imported."""
    if hits is None:
        hits = GrepHits.start(path, timeout_s=grep_timeout(path.stat().st_size))
    try:
        from bot import fastscan
        from bot.grouping import Grouper, merge_groups
    except BaseException:
        hits.close()
        raise
    groupers = [Grouper.for_file(path)]  # the file's header, learned from its head

    def regroup() -> Grouper:  # grep's report turned out unusable after records were grouped
        groupers.append(Grouper.for_file(path))
        return groupers[-1]

    result = fastscan.scan_errors(
        path,
        service,
        groupers[0],
        max_line_bytes=MAX_LINE_BYTES,
        hits=hits,
        line_groups=False,
        regroup=regroup,
    )
    return merge_groups(result, groupers[-1])
