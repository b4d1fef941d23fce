"""`healbot run` as a real process: it scans, proposes, survives a restart without losing anything, and stops
cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.demo.fake_messages_api import FakeMessagesApi
from bot.models import IncidentState
from bot.store import Store
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV, StartDaemon, healbot_run_fixture
from tests.fakes.world import FIX_ONLY, claude_via_fake_api, scratch_service, traceback_lines
from tests.helpers import wait_until

pytestmark = pytest.mark.real_cli

__all__ = ["healbot_run_fixture"]  # the fixture


def test_run_proposes_then_a_restart_loses_nothing_and_sigterm_stops_it(
    tmp_path: Path, healbot_run: StartDaemon
) -> None:
    service = scratch_service(
        tmp_path, log_text="old error before the first start, never reported: ERROR boom\n"
    )
    with FakeMessagesApi(structured=FIX_ONLY) as fake:
        config = service.write_config(healbot={"poll_interval_s": 0.1}, claude=claude_via_fake_api(fake.url))
        daemon = healbot_run(config, env=FAKE_CLAUDE_ENV)
        try:
            wait_until(service.db_path.exists, 20, what="the store")
            store = Store.open(service.db_path)
            wait_until(lambda: store.get_cursor(f"file:{service.log}"), 20, what="the first cursor")
            # issue 17.7: a good start was silent
            daemon.wait_for("healbot running: 1 service(s), 1 log source(s), approvals via console", 20)
            service.append(traceback_lines(service.repo))
            daemon.wait_for("+    return PRICES.get(name, 0)", 60, what="the proposal")
            assert "billed per token" in daemon.output()  # ANTHROPIC_API_KEY passed on purpose: warned loudly
        finally:
            assert daemon.stop() == 0, daemon.output()
        [incident] = store.incidents()
        assert incident.state is IncidentState.AWAITING_APPROVAL
        assert "old error" not in daemon.output()
        # regression: at INFO, APScheduler said two lines per poll (costing the idle daemon 0.4 % CPU)
        assert "Running job" not in daemon.output() and "HTTP Request" not in daemon.output()

        again = healbot_run(config, env=FAKE_CLAUDE_ENV)
        try:
            again.wait_for("+    return PRICES.get(name, 0)", 30, what="the proposal again")
        finally:
            assert again.stop() == 0, again.output()
        assert len(store.incidents()) == 1
        assert len(store.diagnoses(incident.id)) == 1  # presented again, not diagnosed again
        assert len(fake.message_requests()) == 1
        store.close()


def test_sigterm_during_start_up_still_stops_cleanly(tmp_path: Path, healbot_run: StartDaemon) -> None:
    """Regression: the handlers were installed only after the daemon was built, so a SIGTERM that came
    while the store was opening killed the process with the default action (exit -15)."""
    service = scratch_service(tmp_path, log_text=None)
    daemon = healbot_run(service.write_config())
    wait_until(service.db_path.exists, 20, what="the store being opened")
    assert daemon.stop() == 0, daemon.output()


def test_a_missing_log_file_did_not_say_when_it_appeared(tmp_path: Path, healbot_run: StartDaemon) -> None:
    """Issue 12.2: the start warns that the file is missing; its appearance is said too, and it is read."""
    service = scratch_service(tmp_path, log_text=None)
    daemon = healbot_run(service.write_config(healbot={"poll_interval_s": 0.1}))
    try:
        daemon.wait_for(f"{service.log}: file not found", 20)
        service.append("starting\n")
        daemon.wait_for(
            f"source file:{service.log}: readable again (it was: {service.log}: file not found)", 20
        )
    finally:
        assert daemon.stop() == 0, daemon.output()
    assert daemon.output().count("file not found") == 2  # said once when missing, once in the recovery line
