"""The template clusters of plain-text errors (bot.grouping.ClusterStore), so their incident keys survive
a daemon restart."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Collection, Sequence

from bot.clusters import SavedCluster
from bot.errors import StoreError
from bot.store.connection import StoreBase

log = logging.getLogger(__name__)

CLUSTER_KEEP_DAYS = 30  # a template cluster no line matched for this long is deleted at daemon start


class ClusterQueries(StoreBase):
    def load_clusters(self, service: str, is_error: bool) -> list[SavedCluster]:
        """The saved clusters of one service and error class, oldest first; a malformed row is logged and
        skipped, never fatal. `updated_at` is when a line last matched the cluster (as last saved)."""
        try:
            rows = self._query(
                "SELECT id, key, template, learned, size, updated_at FROM template_clusters"
                " WHERE service = ? AND is_error = ? ORDER BY id",
                (service, int(is_error)),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the template clusters from {self.path}: {exc}") from exc
        found: list[SavedCluster] = []
        for r in rows:
            try:
                found.append(_saved_cluster_from_row(r))
            except (TypeError, ValueError) as exc:
                log.warning("skipped the malformed template cluster row %s of %s: %s", r["id"], service, exc)
        return found

    def save_clusters(
        self,
        service: str,
        is_error: bool,
        clusters: Sequence[SavedCluster],
        *,
        at: float,
        forget: Collection[str] = (),
    ) -> None:
        """Insert or update clusters by key and delete the keys in `forget`, in one transaction; a cluster
        keeps its place in the order. A cluster's `last_seen` is stored (`at` when it has none)."""
        rows = [
            (
                service,
                int(is_error),
                c.key,
                c.template,
                json.dumps(list(c.learned)),
                c.size,
                c.last_seen or at,
            )
            for c in clusters
        ]
        try:
            with self._tx() as conn:
                conn.executemany(
                    "DELETE FROM template_clusters WHERE service = ? AND is_error = ? AND key = ?",
                    [(service, int(is_error), key) for key in forget],
                )
                conn.executemany(
                    "INSERT INTO template_clusters (service, is_error, key, template, learned, size, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(service, is_error, key) DO UPDATE SET"
                    " template = excluded.template, learned = excluded.learned, size = excluded.size,"
                    " updated_at = excluded.updated_at",
                    rows,
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the template clusters to {self.path}: {exc}") from exc

    def prune_clusters(
        self, services: Collection[str], *, now: float, keep_days: float = CLUSTER_KEEP_DAYS
    ) -> int:
        """Delete the clusters no line matched for `keep_days` and those of services not in `services`;
        returns how many rows went."""
        try:
            with self._tx() as conn:
                deleted = conn.execute(
                    "DELETE FROM template_clusters WHERE updated_at < ?"
                    " OR service NOT IN (SELECT value FROM json_each(?))",
                    (now - keep_days * 86400.0, json.dumps(sorted(services))),
                ).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prune the template clusters in {self.path}: {exc}") from exc
        return int(deleted)


def _saved_cluster_from_row(row: sqlite3.Row) -> SavedCluster:
    key, template, size = row["key"], row["template"], row["size"]
    if not isinstance(key, str) or not isinstance(template, str) or not isinstance(size, int):
        raise TypeError(
            f"unexpected column types {type(key).__name__}, {type(template).__name__}, {type(size).__name__}"
        )
    learned = json.loads(row["learned"])
    if not isinstance(learned, list) or not all(type(i) is int for i in learned):
        raise ValueError(f"learned positions {str(row['learned'])[:40]!r} are not a list of integers")
    last_seen = row["updated_at"]
    if not isinstance(last_seen, int | float):
        raise TypeError(f"unexpected column type {type(last_seen).__name__} of updated_at")
    return SavedCluster(key, template, size, tuple(learned), float(last_seen))
