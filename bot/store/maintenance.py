"""Keeping the database safe: the integrity check and online backups (the daily one keeps BACKUP_KEEP)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from bot.errors import StoreError
from bot.store.backups import BACKUP_DIR, BACKUP_KEEP, backups, file_integrity_problem
from bot.store.connection import StoreBase


class MaintenanceQueries(StoreBase):
    def backup_if_due(self, now: float) -> Path | None:
        """The daily online backup: `backups/healbot-YYYY-MM-DD.db` next to the database, checked after
        it is written, the newest BACKUP_KEEP kept. Returns the new backup, or None when today's exists."""
        if self.path == ":memory:":
            return None
        directory = Path(self.path).parent / BACKUP_DIR
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        target = directory / f"healbot-{day}.db"
        if target.exists():
            return None
        directory.mkdir(parents=True, exist_ok=True)
        self.backup(target)
        problem = file_integrity_problem(target)
        if problem is not None:
            target.unlink(missing_ok=True)
            raise StoreError(f"the backup {target} failed its integrity check ({problem}); it was removed")
        for old in backups(self.path)[BACKUP_KEEP:]:
            old.unlink(missing_ok=True)
        return target

    def integrity_problem(self) -> str | None:
        """`PRAGMA integrity_check`: None when the database is sound, else what SQLite found."""
        try:
            rows = self._query("PRAGMA integrity_check")
        except sqlite3.Error as exc:
            return str(exc)
        found = [str(r[0]) for r in rows]
        return None if found == ["ok"] else "; ".join(found[:5])

    def backup(self, target: str | Path) -> Path:
        """An online copy through sqlite3's backup API (consistent while the daemon writes), then renamed
        into place so a crash mid-backup never leaves a half-written backup under the final name."""
        final = Path(target)
        partial = final.with_name(final.name + ".partial")
        try:
            partial.unlink(missing_ok=True)
            with self._lock:
                copy = sqlite3.connect(str(partial))
                try:
                    self._conn.backup(copy)
                finally:
                    copy.close()
            partial.replace(final)
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise StoreError(f"cannot back up the state database to {final}: {exc}") from exc
        return final
