"""The chat outbox: messages queued once per (chat, key), so cards survive a chat outage and a restart."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.store.connection import StoreBase


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message for a chat: `key` makes it idempotent (one card per proposal per chat)."""

    id: int
    chat_id: str
    key: str
    kind: str
    payload: str  # JSON, built by the channel
    incident_id: int | None
    created_at: float
    attempts: int
    sent_at: float | None
    message_id: int | None
    sending_since: float | None = None  # a send went out and its answer was never recorded
    after_message_id: int | None = None  # the chat's last recorded message id before that send


class OutboxQueries(StoreBase):
    def outbox_put(
        self, chat_id: str, key: str, kind: str, payload: str, *, incident_id: int | None, at: float
    ) -> OutboxItem:
        """Queue a message once per (chat, key); a second put with the same key returns the first."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO outbox (chat_id, key, kind, payload, incident_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (chat_id, key, kind, payload, incident_id, at),
            )
            row = conn.execute(
                "SELECT * FROM outbox WHERE chat_id = ? AND key = ?", (chat_id, key)
            ).fetchone()
            return _outbox_from_row(row)

    def outbox_pending(self, limit: int = 100) -> list[OutboxItem]:
        rows = self._query("SELECT * FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,))
        return [_outbox_from_row(r) for r in rows]

    def outbox_mark_sending(self, item: OutboxItem, *, at: float) -> OutboxItem:
        """Before the send: from now on a copy may exist in the chat. The watermark of the first attempt
        is kept, so every copy an unrecorded attempt may have left lies above it."""
        with self._tx() as conn:
            last = conn.execute(
                "SELECT MAX(message_id) FROM outbox WHERE chat_id = ?", (item.chat_id,)
            ).fetchone()[0]
            conn.execute(
                "UPDATE outbox SET sending_since = COALESCE(sending_since, ?),"
                " after_message_id = COALESCE(after_message_id, ?) WHERE id = ?",
                (at, last if last is not None else 0, item.id),
            )
            row = conn.execute("SELECT * FROM outbox WHERE id = ?", (item.id,)).fetchone()
            return _outbox_from_row(row)

    def outbox_mark_sent(self, item_id: int, message_id: int, *, at: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET sent_at = ?, message_id = ?, attempts = attempts + 1, last_error = NULL,"
                " sending_since = NULL WHERE id = ?",
                (at, message_id, item_id),
            )

    def outbox_mark_failed(self, item_id: int, error: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:500], item_id),
            )

    def outbox_item(self, chat_id: str, key: str) -> OutboxItem | None:
        row = self._query_one("SELECT * FROM outbox WHERE chat_id = ? AND key = ?", (chat_id, key))
        return _outbox_from_row(row) if row else None

    def outbox_by_message(self, chat_id: str, message_id: int) -> OutboxItem | None:
        row = self._query_one(
            "SELECT * FROM outbox WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
        )
        return _outbox_from_row(row) if row else None


def _outbox_from_row(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=int(row["id"]),
        chat_id=row["chat_id"],
        key=row["key"],
        kind=row["kind"],
        payload=row["payload"],
        incident_id=row["incident_id"],
        created_at=float(row["created_at"]),
        attempts=int(row["attempts"]),
        sent_at=row["sent_at"],
        message_id=row["message_id"],
        sending_since=row["sending_since"],
        after_message_id=row["after_message_id"],
    )
