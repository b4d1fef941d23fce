"""The daily backups on disk, next to the database: where they are and whether one is sound."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

BACKUP_DIR = "backups"
BACKUP_KEEP = 7
_BACKUP_NAME = re.compile(r"^healbot-(\d{4}-\d{2}-\d{2})\.db$")


def backups(db_path: str | Path) -> list[Path]:
    """The daily backups of `db_path`, newest first."""
    directory = Path(db_path).parent / BACKUP_DIR
    if str(db_path) == ":memory:" or not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _BACKUP_NAME.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def file_integrity_problem(path: Path) -> str | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if found == ["ok"] else "; ".join(found[:3])
