"""The Alertmanager webhook receiver (issue 16): a firing alert naming a configured service opens one
incident of kind "alert" (its labels and annotations the evidence, redacted), the same alert again counts
into it, a resolved one closes it when healbot did nothing yet and is verdict evidence when it did; a
malformed or unauthenticated request gets a 4xx and opens nothing. The end-to-end test runs the real
Alertmanager delivering to healbot's webhook, and a card follows in the fake Bot API."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.config import ALERTS_TOKEN_ENV, load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.errors import ConfigError, HealbotError
from bot.models import IncidentState, Verdict
from bot.observability.alerts import MAX_ALERTS, AlertStatus, PayloadError, parse_payload
from bot.store import Store
from tests.conftest import claude_binary
from tests.fakes.fake_bot_api import TOKEN, FakeBotApi, StoredMessage
from tests.fakes.prometheus import Alertmanager, running
from tests.fakes.telegram_world import ANSWER, APPROVER, CHAT, start_telegram_daemon, telegram_approval
from tests.fakes.world import RESTART, fake_api_runner, in_process_claude, scratch_service
from tests.helpers import free_port, until

WEBHOOK_TOKEN = "s3cret-webhook-token-0123456789"
SECRET = "hunter2-db-password-XYZ"


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "service": "svc", "severity": "page", **labels},
        "annotations": {
            "summary": "5xx above 5% for 5 minutes",
            "description": f"see postgres://app:{SECRET}@db.internal/app",
        },
        "startsAt": "2026-12-03T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "abc",
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "healbot",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": list(alerts),
    }


def post(
    url: str,
    body: bytes,
    *,
    token: str | None = WEBHOOK_TOKEN,
    content_type: str = "application/json",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method)
    request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# --- the payload --------------------------------------------------------------------------------------


def test_payload_v4_is_parsed_and_the_fingerprint_ignores_alertmanagers() -> None:
    [first] = parse_payload(json.dumps(payload(alert())).encode())
    assert first.status is AlertStatus.FIRING and first.name == "HighErrorRate"
    other = dict(alert(), fingerprint="something else", status="resolved")
    [again] = parse_payload(json.dumps(payload(other, status="resolved")).encode())
    assert again.fingerprint_key() == first.fingerprint_key()  # same labels: the same incident
    [different] = parse_payload(json.dumps(payload(alert(instance="b"))).encode())
    assert different.fingerprint_key() != first.fingerprint_key()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (json.dumps(dict(payload(alert()), version="3")).encode(), '"version" must be "4"'),
        (json.dumps(payload()).encode(), "non-empty list"),
        (json.dumps(payload({**alert(), "labels": {"service": "svc"}})).encode(), "alertname"),
        (json.dumps(payload({**alert(), "labels": {"alertname": 1}})).encode(), "string to a string"),
        (json.dumps(payload({**alert(), "status": "pending"})).encode(), "status"),
        (json.dumps(payload(*[alert()] * (MAX_ALERTS + 1))).encode(), "at most"),
        (json.dumps({**payload(alert()), "receiver": None}).encode(), "receiver"),
    ],
)
def test_malformed_payloads_are_refused(body: bytes, problem: str) -> None:
    with pytest.raises(PayloadError, match=problem):
        parse_payload(body)


# --- the receiver in a running daemon --------------------------------------------------------------------


class Receiver:
    def __init__(self, daemon: Daemon, out: io.StringIO) -> None:
        self.daemon = daemon
        self.out = out
        assert daemon.observability.alerts is not None
        self.url = f"http://127.0.0.1:{daemon.observability.alerts.port}/alerts"

    async def post(self, body: bytes, **options: Any) -> tuple[int, dict[str, Any]]:
        return await asyncio.to_thread(post, self.url, body, **options)

    @property
    def store(self) -> Store:
        return self.daemon.store


@pytest.fixture
async def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    monkeypatch.setenv(ALERTS_TOKEN_ENV, WEBHOOK_TOKEN)
    service = scratch_service(tmp_path)
    config = load_config(
        service.write_config(
            healbot={"poll_interval_s": 0.1},
            tables={"alerts": {"enabled": True, "port": free_port(), "max_body_kb": 4}},
        )
    )
    out = io.StringIO()
    daemon = Daemon(config, ConsoleChannel(out=out, interactive=False))
    daemon.pipeline.auto_diagnose = False  # these tests are about intake; the e2e test diagnoses
    await daemon.start()
    try:
        yield Receiver(daemon, out)
    finally:
        await daemon.stop()
        daemon.store.close()


async def test_bad_requests_get_4xx_and_open_nothing(receiver: Receiver) -> None:
    good = json.dumps(payload(alert())).encode()
    cases = [
        (await receiver.post(good, token=None), 401),
        (await receiver.post(good, token="wrong-token-of-the-same-length!"), 401),
        (await receiver.post(good, token=WEBHOOK_TOKEN[:-1]), 401),
        (await receiver.post(good, token=None, headers={"Authorization": f"Basic {WEBHOOK_TOKEN}"}), 401),
        (await receiver.post(good, method="GET"), 405),
        (await receiver.post(b"x" * 5000), 413),  # over max_body_kb = 4
        (await receiver.post(good, content_type="text/plain"), 415),
        (await receiver.post(b"{not json"), 400),
        (await receiver.post(json.dumps(dict(payload(alert()), version="2")).encode()), 400),
        (await receiver.post(json.dumps(payload({**alert(), "labels": "x"})).encode()), 400),
    ]
    assert [status for (status, _), _ in cases] == [want for _, want in cases]
    status, _ = await _post_to(receiver, "/other", good)
    assert status == 404
    assert receiver.store.incidents() == []


async def _post_to(receiver: Receiver, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(post, receiver.url.replace("/alerts", path), body)


async def test_a_firing_alert_opens_one_incident_twice_and_its_resolution_closes_it(
    receiver: Receiver,
) -> None:
    body = json.dumps(payload(alert(), alert(service="not-configured"))).encode()
    status, first = await receiver.post(body)
    assert status == 200, first
    assert len(first["opened"]) == 1 and first["ignored"] == 1
    status, second = await receiver.post(body)  # Alertmanager repeats a firing alert
    assert status == 200 and second["opened"] == [] and second["counted"] == first["opened"]
    [incident] = receiver.store.incidents()
    assert incident.fingerprint.startswith("alert-") and incident.count == 2
    assert incident.title == "alert HighErrorRate: 5xx above 5% for 5 minutes"
    evidence = "\n".join(incident.samples)
    assert "severity=page" in evidence and "5xx above 5%" in evidence
    assert SECRET not in evidence  # redacted like log text
    assert receiver.daemon.observability.intake.firing() == 1

    resolved = json.dumps(payload(alert(status="resolved"), status="resolved")).encode()
    status, third = await receiver.post(resolved)
    assert status == 200 and third["closed"] == [incident.id]
    assert receiver.store.incident(incident.id).state is IncidentState.RESOLVED
    assert "resolved before healbot acted" in receiver.out.getvalue()
    assert receiver.daemon.observability.intake.firing() == 0

    status, fourth = await receiver.post(body)  # firing again later: a new incident
    assert status == 200 and len(fourth["opened"]) == 1 and fourth["opened"] != first["opened"]


async def test_a_resolved_alert_after_a_change_is_evidence_not_a_close(receiver: Receiver) -> None:
    status, first = await receiver.post(json.dumps(payload(alert())).encode())
    [incident_id] = first["opened"]
    incident = receiver.store.incident(incident_id)
    # while it fires, every poll counts it as one error of its fingerprint: the verdict's evidence
    ledger = receiver.daemon.pipeline.ledger
    start = time.time() - 1
    await receiver.daemon.poll()
    assert ledger.counts("svc", start, time.time() + 1).get(incident.fingerprint, 0) >= 2
    conn = sqlite3.connect(receiver.store.path)  # a change healbot made for it (as an apply records it)
    conn.execute(
        "INSERT INTO proposals (id, incident_id, token, base_commit, candidates, summary, created_at,"
        " expires_at, status) VALUES (1, ?, 't', 'abc', '[]', 's', 0, 0, 'approved')",
        (incident_id,),
    )
    conn.execute(
        "INSERT INTO changes (incident_id, proposal_id, rank, service, kind, digest, status, approved_by,"
        " created_at, updated_at) VALUES (?, 1, 1, 'svc', 'restart', 'd', 'restarted', 'alice', 0, 0)",
        (incident_id,),
    )
    conn.execute("UPDATE incidents SET state = 'verifying' WHERE id = ?", (incident_id,))
    conn.commit()
    conn.close()
    status, second = await receiver.post(json.dumps(payload(alert(status="resolved"))).encode())
    assert status == 200 and second["noted"] == [incident_id] and second["closed"] == []
    assert receiver.store.incident(incident_id).state is IncidentState.VERIFYING  # the verdict decides
    after = time.time()
    await receiver.daemon.poll()
    assert ledger.counts("svc", after, time.time() + 1).get(incident.fingerprint, 0) == 0  # gone after


async def test_an_alert_resolved_during_its_diagnosis_closes_the_incident_when_that_ends(
    receiver: Receiver,
) -> None:
    status, first = await receiver.post(json.dumps(payload(alert())).encode())
    [incident_id] = first["opened"]
    store = receiver.store
    store.set_state(incident_id, IncidentState.DIAGNOSING, at=time.time())  # as a running diagnosis does
    status, second = await receiver.post(json.dumps(payload(alert(status="resolved"))).encode())
    assert status == 200 and second["noted"] == [incident_id]
    await receiver.daemon.poll()
    assert store.incident(incident_id).state is IncidentState.DIAGNOSING  # not while it runs
    store.set_state(incident_id, IncidentState.DIAGNOSIS_FAILED, at=time.time())  # it ended, nothing applied
    await receiver.daemon.poll()
    assert store.incident(incident_id).state is IncidentState.RESOLVED
    assert "resolved before healbot acted" in receiver.out.getvalue()


async def test_alerts_enabled_without_a_token_refuse_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALERTS_TOKEN_ENV, raising=False)
    service = scratch_service(tmp_path)
    config = load_config(service.write_config(tables={"alerts": {"enabled": True, "port": free_port()}}))
    daemon = Daemon(config, ConsoleChannel(out=io.StringIO(), interactive=False))
    with pytest.raises(HealbotError, match=ALERTS_TOKEN_ENV):
        await daemon.observability.start()
    monkeypatch.setenv(ALERTS_TOKEN_ENV, "short")
    with pytest.raises(HealbotError, match="at least 16"):
        await daemon.observability.start()
    daemon.store.close()


def test_alert_config_refuses_a_token_in_the_file(tmp_path: Path) -> None:
    service = scratch_service(tmp_path)
    with pytest.raises(ConfigError, match=ALERTS_TOKEN_ENV):
        load_config(service.write_config(tables={"alerts": {"token": "x" * 20}}))
    with pytest.raises(ConfigError, match="label name"):
        load_config(service.write_config(tables={"alerts": {"service_label": "a-b"}}))


# --- the real Alertmanager, the real Telegram stack ------------------------------------------------------

RULE_ALERT = {
    "labels": {"alertname": "HighErrorRate", "service": "svc", "severity": "page"},
    "annotations": {"summary": "5xx above 5% for 5 minutes"},
    "generatorURL": "http://prometheus/graph",
}
RESOLVED = {**RULE_ALERT, "endsAt": "2020-01-01T00:00:00Z"}
RESTART_ONLY = {"summary": "the worker pool is wedged", "candidates": [RESTART]}


@dataclass
class AlertWorld:
    daemon: Daemon
    bot_api: FakeBotApi
    manager: Alertmanager

    async def card(self) -> StoredMessage:
        """The incident card for the alert, with its buttons (a copy retired after a resend has none)."""

        def found() -> StoredMessage | None:
            for m in self.bot_api.bot_messages(CHAT):
                if "fingerprint" in m.text and "HighErrorRate" in m.text and m.reply_markup:
                    return m
            return None

        return await until(found, 60, "a card for the alert, with its buttons")

    async def state(self, incident_id: int, state: IncidentState, what: str) -> None:
        await until(lambda: self.daemon.store.incident(incident_id).state is state, 30, what)


@asynccontextmanager
async def alert_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: object, window_s: float
) -> AsyncIterator[AlertWorld]:
    """healbot with Telegram and the webhook on, the real Alertmanager delivering to it."""
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    monkeypatch.setenv(ALERTS_TOKEN_ENV, WEBHOOK_TOKEN)
    service = scratch_service(tmp_path)
    port = free_port()
    bot_api = FakeBotApi().start()
    messages_api = FakeMessagesApi(structured=answer).start()
    daemon = None
    try:
        config = load_config(
            service.write_config(
                healbot={"poll_interval_s": 0.1},
                claude=in_process_claude(idle_timeout_s=20),
                tables={
                    "approval": telegram_approval(bot_api.base_url, [APPROVER]),
                    "alerts": {"enabled": True, "port": port},
                },
                health={"process": False, "window_s": window_s, "settle_s": 0.1},
            )
        )
        runner = fake_api_runner(config, messages_api.url, tmp_path / "claude")
        daemon, _channel = await start_telegram_daemon(config, runner, token=TOKEN)
        webhook = f"http://127.0.0.1:{port}/alerts"
        manager = await asyncio.to_thread(Alertmanager, tmp_path / "alertmanager", webhook, WEBHOOK_TOKEN)
        with running(manager):
            yield AlertWorld(daemon, bot_api, manager)
    finally:
        if daemon is not None:
            await daemon.stop()
            daemon.store.close()
        bot_api.stop()
        messages_api.stop()


@pytest.mark.slow
@pytest.mark.real_cli
async def test_alertmanager_delivers_an_alert_and_a_card_follows_then_its_resolution_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with alert_world(tmp_path, monkeypatch, ANSWER, window_s=1.0) as world:
        world.manager.push([RULE_ALERT])
        shown = await world.card()
        [incident] = world.daemon.store.incidents()
        assert incident.fingerprint.startswith("alert-")
        assert incident.state is IncidentState.AWAITING_APPROVAL
        world.manager.push([RESOLVED])
        await world.state(incident.id, IncidentState.RESOLVED, "the resolved alert to close the incident")

        def card_closed() -> bool:
            now = world.bot_api.message(CHAT, shown.message_id) or shown
            return "resolved before healbot acted" in now.text and not now.reply_markup

        await until(card_closed, 30, "the card to say the alert resolved, without its buttons")
        assert len(world.daemon.store.incidents()) == 1


@pytest.mark.slow
@pytest.mark.real_cli
async def test_an_alert_resolved_after_the_approved_fix_is_the_verdicts_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resolution must land inside the window: Alertmanager sends it on its next group tick (1 s), so
    # it is pushed once verification has begun, and the window leaves room for a loaded machine.
    async with alert_world(tmp_path, monkeypatch, RESTART_ONLY, window_s=8.0) as world:
        world.manager.push([RULE_ALERT])
        shown = await world.card()
        [incident] = world.daemon.store.incidents()
        world.bot_api.press(APPROVER, CHAT, shown.message_id, text="Approve #1")
        await world.state(incident.id, IncidentState.VERIFYING, "the approved restart to be verified")
        world.manager.push([RESOLVED])  # the restart helped: the alert resolves while it is verified
        await world.state(incident.id, IncidentState.RESOLVED, "the verdict to keep the fix")
        [change] = world.daemon.store.changes()
        [outcome] = world.daemon.store.outcomes(change.id)
        assert outcome.verdict is Verdict.BETTER, outcome.reasons
        assert any(incident.fingerprint in reason and "went down" in reason for reason in outcome.reasons)
