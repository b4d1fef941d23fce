"""`healbot scan FILE`: a dry run of record assembly and grouping on a real file, like fail2ban-regex.

Kept apart from bot/commands.py so that a scan imports only the grouping code, not the daemon.
"""

from __future__ import annotations

import json
from pathlib import Path

from bot.errors import HealbotError
from bot.grouping import format_scan, scan_errors, scan_file


def scan(path: Path, *, service: str, all_records: bool, groups_out: Path | None) -> int:
    if not path.is_file():
        raise HealbotError(f"{path} is not a readable file")
    if groups_out is None and not all_records:
        result = scan_errors(path, service=service)  # the fast path: search the buffer for errors only
    else:
        result = scan_file(path, service=service, errors_only=not all_records)
    print(format_scan(result))
    if groups_out is not None:
        with groups_out.open("w", encoding="utf-8") as out:
            for line_no, key in result.line_groups:
                out.write(json.dumps({"line": line_no, "group": key}) + "\n")
    return 0
