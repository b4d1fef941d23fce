"""The state database on start: integrity checked, a corrupt or locked database is a clear error naming the
last good backup, and a daily online backup (sqlite3's backup API) that is itself checked and pruned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.models import Fingerprint
from bot.store import BACKUP_KEEP, Observation, Store, backups

DAY = 86400.0
NOW = 1_800_000_000.0  # 2027-01-15


def fingerprint(key: str) -> Fingerprint:
    return Fingerprint(
        key=key, service="svc", is_error=True, exception_type="KeyError", template=f"boom {key}"
    )


def fill(store: Store, n: int = 50) -> None:
    observations = [Observation(fingerprint(f"fp{i}"), "x" * 500, NOW) for i in range(n)]
    store.ingest("file:/x.log", "cursor", observations, max_samples=3, at=NOW)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "healbot.db"
    store = Store.open(path)
    fill(store)
    store.close()
    return path


def test_a_sound_database_opens_and_says_so(db: Path) -> None:
    store = Store.open(db)
    assert store.integrity_problem() is None
    assert len(store.incidents()) == 50
    store.close()


def test_the_daily_backup_is_online_checked_once_a_day_and_pruned(db: Path) -> None:
    store = Store.open(db)
    first = store.backup_if_due(NOW)
    assert first is not None and first.name == "healbot-2027-01-15.db"
    assert store.backup_if_due(NOW + 60) is None  # once a day
    fill(store, 3)  # writes after the backup are not in it
    copy = Store.open(first)
    assert len(copy.incidents()) == 50 and copy.integrity_problem() is None
    copy.close()
    for day in range(1, 10):
        assert store.backup_if_due(NOW + day * DAY) is not None
    kept = backups(db)
    assert len(kept) == BACKUP_KEEP
    assert kept[0].name == "healbot-2027-01-24.db"
    assert not list(kept[0].parent.glob("*.partial"))
    store.close()


def test_a_database_that_is_not_one_names_the_last_good_backup(db: Path) -> None:
    store = Store.open(db)
    good = store.backup_if_due(NOW)
    store.close()
    db.write_bytes(b"this is not an SQLite file at all" * 200)
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    message = str(caught.value)
    assert f"the state database {db} cannot be used" in message
    assert f"the last good backup is {good}: copy it to {db} to restore" in message
    assert db.read_bytes().startswith(b"this is not")  # nothing was overwritten


def test_a_corrupt_page_fails_the_integrity_check_and_a_corrupt_backup_is_not_offered(db: Path) -> None:
    store = Store.open(db)
    older = store.backup_if_due(NOW)
    newer = store.backup_if_due(NOW + DAY)
    store.close()
    assert older and newer
    newer.write_bytes(b"garbage" * 100)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page : 4 * page] = b"\xa5" * (2 * page)
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    message = str(caught.value)
    assert "cannot be used" in message
    assert f"the last good backup is {older}" in message


def test_without_a_backup_the_error_says_so(db: Path) -> None:
    db.write_bytes(b"\x00" * 8192)
    (db.parent / "healbot.db-wal").unlink(missing_ok=True)
    with pytest.raises(StoreError, match="there is no backup yet in"):
        Store.open(db)


def test_a_locked_database_is_a_clear_error_and_opens_once_released(db: Path) -> None:
    store = Store.open(db)
    store.backup_if_due(NOW)
    store.close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError) as caught:
            Store.open(db, busy_timeout_s=0.1)
        message = str(caught.value)
        assert "is locked by another process" in message
        assert "the last good backup is" in message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    reopened = Store.open(db, busy_timeout_s=0.1)
    assert len(reopened.incidents()) == 50
    reopened.close()


def test_a_failed_backup_leaves_no_partial_file(db: Path, tmp_path: Path) -> None:
    store = Store.open(db)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the backup directory should be")
    with pytest.raises(StoreError, match="cannot back up"):
        store.backup(blocked / "x.db")
    assert not list(tmp_path.glob("**/*.partial"))
    store.close()
