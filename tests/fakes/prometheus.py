"""The real Prometheus (with promtool) and Alertmanager, pinned Debian builds that `make tools` unpacks into
.cache (HEALBOT_PROMETHEUS_BIN, HEALBOT_ALERTMANAGER_BIN). Each runs as a process of its own on loopback
with a scratch config and data dir, in its own process group, killed by pid when the test ends.

Debian's Alertmanager reads its default templates from /usr/share/prometheus/alertmanager, a path compiled
in. Rather than install them on the host, it runs under the pinned bubblewrap with the unpacked package's
directory mounted there (over a private /usr/share: the host is never written)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import free_port, wait_until

MISSING = "the pinned Prometheus, Alertmanager or bubblewrap are not unpacked: run `make tools`"


def _binary(env: str, default: str) -> str | None:
    path = os.environ.get(env) or str(REPO_ROOT / default)
    return path if os.access(path, os.X_OK) else None


def prometheus_binary() -> str | None:
    return _binary("HEALBOT_PROMETHEUS_BIN", ".cache/prometheus-2.42.0/usr/bin/prometheus")


def promtool_binary() -> str | None:
    prometheus = prometheus_binary()
    if prometheus is None:
        return None
    path = str(Path(prometheus).with_name("promtool"))
    return path if os.access(path, os.X_OK) else None


def alertmanager_binary() -> str | None:
    return _binary("HEALBOT_ALERTMANAGER_BIN", ".cache/alertmanager-0.25.0/usr/bin/prometheus-alertmanager")


def bwrap_binary() -> str | None:
    return _binary("HEALBOT_BWRAP_BIN", ".cache/bwrap-0.8.0/usr/bin/bwrap")


def need(binary: str | None) -> str:
    if binary is None:
        pytest.skip(MISSING)
    return binary


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need(promtool_binary()), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def http_json(url: str, body: object | None = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


class Program:
    """One of the two, running; `close()` kills its process group (by its pid) and reaps it."""

    def __init__(self, argv: Sequence[str], ready_url: str, log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: self._ready(ready_url), 30, interval=0.1, what=f"{argv[0]} ready")
        except BaseException:
            self.close()
            raise

    def _ready(self, url: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.proc.args[0]} exited:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()


class Prometheus(Program):
    def __init__(self, root: Path, targets: Sequence[str], *, rules: Sequence[Path] = ()) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in rules],
            "scrape_configs": [{"job_name": "healbot", "static_configs": [{"targets": list(targets)}]}],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        argv = [
            need(prometheus_binary()),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        super().__init__(argv, f"{self.url}/-/ready", root / "prometheus.log")

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = http_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def targets_up(self) -> list[str]:
        answer = http_json(f"{self.url}/api/v1/targets")
        return [t["scrapeUrl"] for t in answer["data"]["activeTargets"] if t["health"] == "up"]


class Alertmanager(Program):
    def __init__(self, root: Path, webhook_url: str, token: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "route": {
                "receiver": "healbot",
                "group_by": ["..."],  # every alert its own group: one notification per alert
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "healbot",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                        }
                    ],
                }
            ],
        }
        (root / "alertmanager.yml").write_text(json.dumps(config))
        binary = need(alertmanager_binary())
        share = Path(binary).parents[1] / "share" / "prometheus"
        argv = [
            need(bwrap_binary()),
            *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/usr/share"),
            *("--ro-bind", str(share), "/usr/share/prometheus", "--bind", str(root), str(root)),
            "--die-with-parent",
            binary,
            f"--config.file={root / 'alertmanager.yml'}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ]
        super().__init__(argv, f"{self.url}/-/ready", root / "alertmanager.log")

    def push(self, alerts: Sequence[Mapping[str, object]]) -> None:
        """POST to its v2 API, as Prometheus does for a rule's alert."""
        http_json(f"{self.url}/api/v2/alerts", list(alerts))


@contextlib.contextmanager
def running(program: Program) -> Iterator[Program]:
    try:
        yield program
    finally:
        program.close()
