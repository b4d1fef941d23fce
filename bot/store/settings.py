"""Operator settings (the pause, mutes, …): one value per key; each change is audited."""

from __future__ import annotations

from bot.store.audit import append_audit
from bot.store.connection import StoreBase


class SettingQueries(StoreBase):
    def get_setting(self, key: str) -> str | None:
        row = self._query_one("SELECT value FROM settings WHERE key = ?", (key,))
        return str(row["value"]) if row else None

    def set_setting(self, key: str, value: str | None, *, actor: str, at: float) -> None:
        with self._tx() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            append_audit(conn, at, actor, f"setting:{key}", None, value or "(cleared)")
