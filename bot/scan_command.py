"""`healbot scan FILE`: a dry run of record assembly and grouping on a real file, like fail2ban-regex.

Kept apart from bot/commands.py so that a scan imports only the grouping code, not the daemon. The errors-only
scan starts its grep pre-filter (bot.grepfilter) before importing the grouping code, so grep reads the file
while the interpreter imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import HealbotError
from bot.grepfilter import GrepHits, grep_timeout

if TYPE_CHECKING:
    from bot.grouping import ScanResult

MAX_LINE_BYTES = 8192  # the default of bot.grouping.scan_errors and scan_file


def scan(path: Path, *, service: str, all_records: bool, groups_out: Path | None, raw: bool = False) -> int:
    """Print the groups; sample lines are shown redacted, as they would be sent, unless `raw`."""
    if not path.is_file():
        raise HealbotError(f"{path} is not a readable file")
    if groups_out is None and not all_records:
        result = _scan_errors(path, service)  # the fast path: search the buffer for errors only
    else:
        from bot.grouping import scan_file

        result = scan_file(path, service=service, errors_only=not all_records)
    from bot.grouping import format_scan

    print(format_scan(result, raw=raw))
    if groups_out is not None:
        with groups_out.open("w", encoding="utf-8") as out:
            for line_no, key in result.line_groups:
                out.write(json.dumps({"line": line_no, "group": key}) + "\n")
    return 0


def _scan_errors(path: Path, service: str) -> ScanResult:
    """`bot.grouping.scan_errors(path, service)`, with grep started before the grouping code is imported."""
    hits = GrepHits.start(path, timeout_s=grep_timeout(path.stat().st_size))
    try:
        from bot import fastscan
        from bot.grouping import Grouper, merge_groups
    except BaseException:
        hits.close()
        raise
    grouper = Grouper.for_file(path)  # the file's header, learned from its head
    result = fastscan.scan_errors(path, service, grouper, max_line_bytes=MAX_LINE_BYTES, hits=hits)
    return merge_groups(result, grouper)
