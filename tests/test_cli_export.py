"""`healbot history` and `healbot audit --since`: the installed console script against a seeded store."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.audit_export import SinceError, parse_since
from bot.config import load_config
from bot.models import (
    Candidate,
    ChangeStatus,
    DiffStats,
    Edit,
    Fingerprint,
    Fix,
    FixKind,
    HealthSnapshot,
    IncidentState,
    Outcome,
    Risk,
    Verdict,
)
from bot.store import Observation, Store

HEALBOT = str(Path(sys.executable).parent / "healbot")
NOW = time.time()  # the CLI's --since counts back from the real clock
# parse_since's cases: fixed, so parametrized test ids are the same in every collection (pytest-xdist)
PARSE_NOW = 1_796_300_000.0


def healbot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEALBOT, *args], capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "healbot.toml"
    path.write_text(
        '[healbot]\nstate_dir = "state"\n\n'
        '[services.web]\nrepo = "."\nmanager = { type = "command", restart = ["true"] }\n'
    )
    store = Store.open(load_config(path, check_repos=False).db_path)
    try:
        fp = Fingerprint("fp1", "web", True, "KeyError", "KeyError: <str>")
        [ing] = store.ingest(
            "file:a", "c", [Observation(fp, "KeyError: 'x'", NOW - 7200)], max_samples=3, at=NOW - 7200
        )
        fix = Fix(1, "Use get", "because", Risk.LOW, FixKind.PATCH, (Edit("app.py", "a[k]", "a.get(k)"),))
        candidate = Candidate(fix, "--- a/app.py\n+++ b/app.py\n", "d" * 64, DiffStats(1, 1, 1), True, "")
        proposal = store.create_proposal(
            ing.incident.id,
            base_commit="b" * 40,
            candidates=[candidate],
            summary="",
            at=NOW - 60,
            expires_at=NOW,
        )
        change = store.create_change(proposal, candidate, service="web", approved_by="alice", at=NOW - 50)
        store.update_change(
            change.id,
            ChangeStatus.COMMITTED,
            at=NOW - 40,
            commit="c" * 40,
            incident_state=IncidentState.VERIFYING,
        )
        snapshot = HealthSnapshot(NOW, True)
        store.record_outcome(
            Outcome(change.id, snapshot, snapshot, Verdict.BETTER, ("errors gone",)), at=NOW - 30
        )
        store.audit(
            "telegram:42", "note", 'a "quoted", comma detail', at=NOW - 10, incident_id=ing.incident.id
        )
    finally:
        store.close()
    return path


def test_audit_jsonl_since_keeps_only_recent_events(config: Path) -> None:
    everything = healbot("audit", "-c", str(config))
    assert everything.returncode == 0, everything.stderr
    all_events = [json.loads(line) for line in everything.stdout.splitlines()]
    assert all_events[0]["event"] == "incident_opened"
    recent = healbot("audit", "-c", str(config), "--since", "1h")
    events = [json.loads(line) for line in recent.stdout.splitlines()]
    assert events
    assert len(events) < len(all_events)
    assert all(e["at"] >= NOW - 3600 - 5 for e in events)
    assert events[-1]["detail"] == 'a "quoted", comma detail'
    assert events[-1]["actor"] == "telegram:42"


def test_audit_csv_to_a_file_round_trips(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.csv"
    result = healbot("audit", "-c", str(config), "--format", "csv", "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["at", "time", "actor", "event", "incident_id", "detail"]
    assert rows[-1]["detail"] == 'a "quoted", comma detail'
    assert f"{len(rows)} audit event(s)" in result.stderr


def test_audit_since_bad_value_is_a_clear_error(config: Path) -> None:
    result = healbot("audit", "-c", str(config), "--since", "yesterday-ish")
    assert result.returncode == 1
    assert "neither a duration" in result.stderr
    assert result.stdout == ""


def test_history_lists_changes_with_verdicts(config: Path) -> None:
    result = healbot("history", "-c", str(config), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["service"] == "web"
    assert row["kind"] == "patch"
    assert row["status"] == "committed"
    assert row["commit"] == "c" * 40
    assert row["verdict"] == "better"
    assert row["reasons"] == "errors gone"
    text = healbot("history", "-c", str(config))
    assert "better" in text.stdout
    assert "alice" in text.stdout


def test_history_unknown_service_and_bad_limit_are_errors(config: Path) -> None:
    unknown = healbot("history", "-c", str(config), "--service", "nope")
    assert unknown.returncode == 1
    assert "unknown service 'nope'" in unknown.stderr
    bad = healbot("history", "-c", str(config), "--limit", "0")
    assert bad.returncode == 1
    assert "--limit" in bad.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", PARSE_NOW - 90),
        ("30m", PARSE_NOW - 1800),
        ("2h", PARSE_NOW - 7200),
        ("7d", PARSE_NOW - 7 * 86400),
        ("2026-11-20", 1795132800.0),
        ("2026-11-20T08:00+01:00", 1795158000.0),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, now=PARSE_NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "2x", "-5m", "tomorrow"])
def test_parse_since_rejects_nonsense(text: str) -> None:
    with pytest.raises(SinceError, match="neither a duration"):
        parse_since(text, now=PARSE_NOW)
