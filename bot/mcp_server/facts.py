"""The incident, the service's health now, and what healbot did before for it (from its store, read-only)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bot.errors import HealbotError
from bot.mcp_server.refused import ToolRefused
from bot.mcp_server.scope import ToolScope
from bot.models import ChangeStatus
from bot.store import Store

HOUR_S = 3600.0


def when(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "unknown"


def open_store(db_path: str | None) -> Store:
    """The store, opened read-only: a tool can never write to it."""
    if not db_path or not Path(db_path).is_file():
        raise ToolRefused("healbot's store is not available to this diagnosis (no history recorded)")
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ToolRefused(f"healbot's store could not be opened read-only: {exc}") from None
    conn.row_factory = sqlite3.Row
    return Store(conn, db_path)


def incident_text(scope: ToolScope) -> str:
    facts = scope.incident
    span_h = max((facts.last_seen - facts.first_seen) / HOUR_S, 1 / 60)
    lines = [
        f"incident #{facts.id} of service {scope.service}",
        f"title: {facts.title}",
        f"exception type: {facts.exception_type or '-'}",
        f"fingerprint: {facts.fingerprint}",
        f"count: {facts.count}",
        f"first seen: {when(facts.first_seen)}",
        f"last seen: {when(facts.last_seen)}",
        f"rate while seen: {facts.count / span_h:.1f} per hour",
    ]
    lines += _before_after(scope)
    for n, sample in enumerate(facts.samples, start=1):
        lines += [f"--- sample {n} ---", sample]
    return "\n".join(lines)


def _before_after(scope: ToolScope) -> list[str]:
    """Error counts of this fingerprint before and after each change made for the incident."""
    if not scope.db_path or scope.incident.id <= 0:
        return ["before/after rates: no change was made for this incident"]
    try:
        store = open_store(scope.db_path)
    except ToolRefused:
        return ["before/after rates: healbot's store is not available"]
    rows: list[str] = []
    for change in store.changes_since(0.0, service=scope.service, fingerprint=scope.incident.fingerprint):
        for outcome in store.outcomes(change.id):
            before = dict(outcome.before.errors_by_fingerprint).get(scope.incident.fingerprint, 0)
            after = dict(outcome.after.errors_by_fingerprint).get(scope.incident.fingerprint, 0)
            rows.append(
                f"change #{change.id} ({change.kind.value}): {before} in {outcome.before.window_s:g}s before, "
                f"{after} in {outcome.after.window_s:g}s after → {outcome.verdict.value}"
            )
    return ["before/after rates:", *rows] if rows else ["before/after rates: no change was verified yet"]


def history_text(scope: ToolScope, limit: int) -> str:
    store = open_store(scope.db_path)
    lines = [f"past incidents of {scope.service} (newest first):"]
    for incident in store.incidents(service=scope.service, limit=limit):
        mark = " ← this fingerprint" if incident.fingerprint == scope.incident.fingerprint else ""
        lines.append(
            f"#{incident.id} {incident.state.value} ×{incident.count} last {when(incident.last_seen)}: "
            f"{incident.title}{mark}"
        )
    lines.append(f"changes healbot made to {scope.service} (newest first):")
    for change in store.changes(service=scope.service, limit=limit):
        verdicts = ", ".join(o.verdict.value for o in store.outcomes(change.id)) or "no verdict"
        reverted = " [REVERTED: this fix was undone]" if change.status is ChangeStatus.REVERTED else ""
        commit = (change.commit or "")[:10]
        lines.append(
            f"change #{change.id} for #{change.incident_id} {when(change.created_at)} {change.kind.value} "
            f"{commit} → {change.status.value} ({verdicts}){reverted}"
        )
    outcomes = store.past_outcomes(scope.service, scope.incident.fingerprint, limit=limit)
    lines.append("outcomes of fixes for this fingerprint:")
    lines += outcomes or ["(none)"]
    return "\n".join(lines)


def health_text(scope: ToolScope) -> str:
    if not scope.config_path:
        raise ToolRefused("the service's manager and probes are not known to this diagnosis (no config)")
    from bot import health, registry
    from bot.config import load_config

    try:
        config = load_config(scope.config_path, check_repos=False)
        cfg = config.services[scope.service]
        manager = registry.service_manager(cfg.manager_type, cfg.name, cfg.manager_options, scope.config_path)
    except (HealbotError, KeyError) as exc:
        raise ToolRefused(f"the service's manager could not be set up: {exc}") from None
    lines = [f"health of {scope.service} now ({when(time.time())}):"]
    try:
        status = manager.status()
        lines.append(f"manager {cfg.manager_type}: {status.state.value}, pid {status.pid or '-'}")
        lines.append(f"restarts: {status.restarts if status.restarts is not None else 'not counted'}")
        lines.append(f"uptime: {_uptime(status.pid)}")
        if status.detail:
            lines.append(f"detail: {status.detail}")
    except HealbotError as exc:
        lines.append(f"manager {cfg.manager_type}: could not tell ({exc})")
    probed = asyncio.run(health.probe(cfg.health, None))
    if cfg.health.http_url:
        lines.append(f"http {cfg.health.http_url}: status {probed.http_status}, {probed.http_latency_ms} ms")
    if cfg.health.tcp_port:
        lines.append(
            f"tcp {cfg.health.tcp_host}:{cfg.health.tcp_port}: {'open' if probed.tcp_ok else 'closed'}"
        )
    if probed.detail:
        lines.append(f"probe detail: {probed.detail}")
    if not cfg.health.http_url and not cfg.health.tcp_port:
        lines.append("no http or tcp probe is configured")
    return "\n".join(lines)


def _uptime(pid: int | None) -> str:
    if not pid:
        return "-"
    try:
        seconds = time.time() - psutil.Process(pid).create_time()
    except psutil.Error:
        return "unknown"
    return f"{seconds:.0f} s"
