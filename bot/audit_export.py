"""`healbot audit` and `healbot history`: the audit log and the change history as JSONL or CSV rows."""

from __future__ import annotations

import csv
import enum
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from bot.errors import HealbotError
from bot.models import AuditEvent, Change, Outcome
from bot.redact import redacted
from bot.store import Store

ALL_ROWS = 10_000_000  # the store caps its queries; the audit log of one host stays far below this

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

AUDIT_FIELDS = ("at", "time", "actor", "event", "incident_id", "detail")
COMMIT_FIELDS = frozenset({"commit", "revert_commit"})  # git object ids: shown as they are
HISTORY_FIELDS = (
    "change_id",
    "time",
    "service",
    "incident_id",
    "kind",
    "status",
    "commit",
    "revert_commit",
    "approved_by",
    "verdict",
    "reasons",
)


class ExportFormat(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    TEXT = "text"


class SinceError(HealbotError):
    """`--since` is neither a duration (30m, 2h, 7d) nor an ISO date or time."""


def parse_since(value: str, *, now: float) -> float:
    """Unix time from `--since`: a duration back from now (`90s`, `30m`, `2h`, `7d`, `1w`) or an ISO
    date/time (`2026-11-20`, `2026-11-20T08:00`, with an offset or else UTC)."""
    text = value.strip()
    if match := _DURATION.match(text):
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SinceError(
            f"--since {value!r} is neither a duration (30m, 2h, 7d) nor an ISO date (2026-11-20T08:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def audit_rows(store: Store, *, since: float | None) -> list[dict[str, object]]:
    events: Iterable[AuditEvent] = store.audit_log(limit=ALL_ROWS)
    return [
        {
            "at": event.at,
            "time": iso(event.at),
            "actor": event.actor,
            "event": event.event,
            "incident_id": event.incident_id,
            "detail": event.detail,
        }
        for event in events
        if since is None or event.at >= since
    ]


def history_rows(store: Store, *, service: str | None, limit: int) -> list[dict[str, object]]:
    """Changes newest first, each with its last verdict and reasons."""
    rows = []
    for change in store.changes(service=service, limit=limit):
        outcomes = store.outcomes(change.id)
        rows.append(_history_row(change, outcomes[-1] if outcomes else None))
    return rows


def _history_row(change: Change, outcome: Outcome | None) -> dict[str, object]:
    return {
        "change_id": change.id,
        "time": iso(change.created_at),
        "service": change.service,
        "incident_id": change.incident_id,
        "kind": change.kind.value,
        "status": change.status.value,
        "commit": change.commit,
        "revert_commit": change.revert_commit,
        "approved_by": change.approved_by,
        "verdict": outcome.verdict.value if outcome else None,
        "reasons": "; ".join(outcome.reasons) if outcome else "",
    }


def render(rows: Sequence[Mapping[str, object]], fields: Sequence[str], fmt: ExportFormat) -> str:
    """The rows in `fmt`, every text value but commit ids through the one redaction step (bot.redact)."""
    rows = [
        {key: redacted(v) if isinstance(v, str) and key not in COMMIT_FIELDS else v for key, v in row.items()}
        for row in rows
    ]
    if fmt is ExportFormat.JSONL:
        return "".join(json.dumps({f: row.get(f) for f in fields}, ensure_ascii=False) + "\n" for row in rows)
    if fmt is ExportFormat.CSV:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({f: "" if row.get(f) is None else row.get(f) for f in fields})
        return out.getvalue()
    shown = [f for f in fields if f != "at"]
    return "".join(
        " ".join("-" if row.get(f) is None else str(row.get(f)) for f in shown) + "\n" for row in rows
    )
