"""The Alertmanager webhook payload (version 4), validated into typed alerts. Pure: no I/O.

Anything that is not a well-formed v4 payload is a `PayloadError` naming the first problem; nothing of
it is acted on. Sizes are capped so a hostile sender cannot make healbot store or redact megabytes.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from bot.store.stats import ALERT_FINGERPRINT_PREFIX

MAX_ALERTS = 200
MAX_LABELS = 64
MAX_NAME_CHARS = 128
MAX_VALUE_CHARS = 2048


class PayloadError(ValueError):
    """The request body is not an Alertmanager v4 webhook payload."""


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    status: AlertStatus
    labels: tuple[tuple[str, str], ...]  # sorted by name
    annotations: tuple[tuple[str, str], ...]  # sorted by name
    starts_at: str
    ends_at: str

    @property
    def name(self) -> str:
        return dict(self.labels).get("alertname", "")

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    def fingerprint_key(self) -> str:
        """Stable over repeats and resolution (the labels identify an alert), never Alertmanager's own."""
        digest = hashlib.sha256(json.dumps(self.labels, separators=(",", ":")).encode()).hexdigest()
        return ALERT_FINGERPRINT_PREFIX + digest[:16]

    def title(self) -> str:
        notes = dict(self.annotations)
        summary = notes.get("summary") or notes.get("description") or ""
        return f"alert {self.name}" + (f": {summary}" if summary else "")

    def evidence(self) -> str:
        """Labels and annotations as text: untrusted, the caller redacts it like a log line."""
        lines = [f"Alertmanager alert {self.name} {self.status.value} since {self.starts_at}"]
        lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in self.labels))
        lines += [f"{k}: {v}" for k, v in self.annotations]
        return "\n".join(lines)


def parse_payload(body: bytes) -> tuple[Alert, ...]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError("the body must be a JSON object")
    if data.get("version") != "4":
        raise PayloadError(f'"version" must be "4" (Alertmanager webhook v4), not {data.get("version")!r}')
    for key in ("groupKey", "receiver"):
        if not isinstance(data.get(key), str):
            raise PayloadError(f'"{key}" must be a string')
    if data.get("status") not in (AlertStatus.FIRING, AlertStatus.RESOLVED):
        raise PayloadError('"status" must be "firing" or "resolved"')
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise PayloadError('"alerts" must be a non-empty list')
    if len(alerts) > MAX_ALERTS:
        raise PayloadError(f'"alerts" holds {len(alerts)} alerts; at most {MAX_ALERTS} are accepted')
    return tuple(_alert(item, index) for index, item in enumerate(alerts))


def _alert(item: object, index: int) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(item, dict):
        raise PayloadError(f"{where} must be an object")
    status = item.get("status")
    if status not in (AlertStatus.FIRING, AlertStatus.RESOLVED):
        raise PayloadError(f'{where}.status must be "firing" or "resolved", not {status!r}')
    labels = _pairs(item.get("labels"), f"{where}.labels")
    if not dict(labels).get("alertname"):
        raise PayloadError(f"{where}.labels must hold a non-empty alertname")
    annotations = _pairs(item.get("annotations", {}), f"{where}.annotations")
    times = []
    for key in ("startsAt", "endsAt"):
        value = item.get(key, "")
        if not isinstance(value, str) or len(value) > 64:
            raise PayloadError(f"{where}.{key} must be a timestamp string")
        times.append(value)
    return Alert(AlertStatus(status), labels, annotations, times[0], times[1])


def _pairs(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where} must be an object of strings")
    if len(value) > MAX_LABELS:
        raise PayloadError(f"{where} has {len(value)} entries; at most {MAX_LABELS}")
    pairs = []
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise PayloadError(f"{where}: {name!r} must map a string to a string")
        if len(name) > MAX_NAME_CHARS or len(text) > MAX_VALUE_CHARS:
            raise PayloadError(f"{where}: {name[:40]!r} is too long")
        pairs.append((name, text))
    return tuple(sorted(pairs))
