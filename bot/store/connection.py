"""The connection: open (WAL, integrity, can we write, migrations), one transaction per change, plain reads.

Every query module builds on StoreBase: `_tx()` for a change (BEGIN IMMEDIATE … COMMIT, rolled back on
any exception), `_query()` / `_query_one()` for a read, all under one lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from bot.errors import StoreError
from bot.store.backups import BACKUP_DIR, backups, file_integrity_problem
from bot.store.migrations import MIGRATIONS, split_sql


class StoreBase:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, busy_timeout_s: float = 10.0) -> Self:
        """Open (creating) the database, check its integrity, migrate. A corrupt or locked database is a
        StoreError that says what to do and names the last good backup."""
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                target, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            found = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
            conn.execute("BEGIN IMMEDIATE")  # can we write at all? a held lock is reported now, not later
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(_open_problem(target, str(exc))) from exc
        if found != ["ok"]:
            conn.close()
            raise StoreError(_open_problem(target, "integrity check failed: " + "; ".join(found[:3])))
        store = cls(conn, target)
        try:
            store._migrate()
        except StoreError as exc:
            conn.close()
            if "locked" in str(exc):
                raise StoreError(_open_problem(target, "database is locked")) from exc
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the state database {self.path} is schema version {current}, newer than this healbot "
                f"({len(MIGRATIONS)}); upgrade healbot"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self._tx() as conn:
                if self.schema_version() >= version:
                    continue  # another process (the daemon, a CLI command) migrated it meanwhile
                for statement in split_sql(MIGRATIONS[version - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a transaction on {self.path}: {exc}") from exc
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise StoreError(_write_problem(self.path, exc)) from exc
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise StoreError(f"cannot commit to {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (a full disk, an I/O error)
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def _query_one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None


def _open_problem(target: str, problem: str) -> str:
    """What the operator reads when the state database cannot be used: why, and the way back."""
    if "locked" in problem:
        what = (
            f"the state database {target} is locked by another process (another healbot, or a sqlite3 shell "
            "holding a transaction); stop it and start healbot again"
        )
    else:
        what = (
            f"the state database {target} cannot be used ({problem}); stop healbot, move the damaged file "
            "(and its -wal and -shm files) aside"
        )
    good = next((b for b in backups(target) if file_integrity_problem(b) is None), None)
    if good is not None:
        return f"{what}; the last good backup is {good}: copy it to {target} to restore"
    return f"{what}; there is no backup yet in {Path(target).parent / BACKUP_DIR}"


def _write_problem(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text:
        return (
            f"cannot write the state database {path}: {text}; nothing was written; "
            "free disk space and healbot carries on where it stopped"
        )
    return f"cannot write the state database {path}: {text}; nothing was written"
