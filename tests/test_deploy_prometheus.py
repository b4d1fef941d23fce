"""deploy/'s Prometheus and Alertmanager pieces (issue 16), checked by the real tools: `promtool check config`,
`check rules` and `test rules` (each healbot rule fires on the series it is meant for), `amtool
check-config` and `amtool config routes test` (the team's alerts reach healbot, healbot's own reach people);
and every healbot metric a rule names is one healbot exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.heartbeat import SourceScan
from bot.observability.metrics import build_registry
from bot.store import Store
from tests.conftest import REPO_ROOT
from tests.fakes.prometheus import alertmanager_binary, need, promtool
from tests.test_metrics import Observed, fill

DEPLOY = REPO_ROOT / "deploy"


def test_prometheus_config_and_rules_pass_promtool() -> None:
    for args in (
        ("check", "config", str(DEPLOY / "prometheus.yml")),
        ("check", "rules", str(DEPLOY / "prometheus-rules.yml")),
        ("test", "rules", str(DEPLOY / "prometheus-rules.test.yml")),
    ):
        checked = promtool(*args)
        assert checked.returncode == 0, f"promtool {' '.join(args)}:\n{checked.stdout}{checked.stderr}"
        assert "SUCCESS" in checked.stdout


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = str(Path(need(alertmanager_binary())).with_name("amtool"))
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_alertmanager_example_is_valid_and_routes_service_alerts_to_healbot() -> None:
    config = str(DEPLOY / "alertmanager.yml")
    checked = amtool("check-config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    routes = {
        ("alertname=HighErrorRate", "service=web", "instance=web1:9100"): "healbot-web1",
        ("alertname=HealbotNoScan", "team=ops", "service=web", "instance=web1:9464"): "team",
        ("alertname=DiskFull", "instance=db1:9100"): "team",
    }
    for labels, receiver in routes.items():
        tested = amtool("config", "routes", "test", f"--config.file={config}", *labels)
        assert tested.returncode == 0 and tested.stdout.strip() == receiver, (
            labels,
            tested.stdout,
            tested.stderr,
        )


def test_every_metric_a_rule_names_is_exported(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "healbot.db")
    fill(tmp_path / "healbot.db")
    observed = Observed(store)
    observed.scanned = [SourceScan("file:/var/log/web.log", "web", 1.0, None)]
    text = generate_latest(build_registry(observed)).decode()
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    rules = (DEPLOY / "prometheus-rules.yml").read_text()
    named = set(re.findall(r"\bhealbot_[a-z_]+", rules))
    assert named and named <= exported, named - exported
    store.close()
