"""DockerManager against a real dockerd (tests/fakes/docker_env.py): status, restart and its settle check,
docker's own restart loop, a stopped and a missing container."""

from __future__ import annotations

import io
import os
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.config import load_config
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.errors import RestartFailed, ServiceError
from bot.models import Decision, DecisionAction, IncidentState, Proposal, ServiceState, ServiceStatus
from bot.policy import manager_storm_reason
from healers.services.docker import DockerManager
from tests.conftest import claude_binary
from tests.fakes.daemon_proc import HEALBOT
from tests.fakes.docker_env import DockerEnv
from tests.fakes.world import (
    APP,
    DEFAULT_ANSWER,
    ShiftedClock,
    console_daemon,
    fake_api_runner,
    in_process_claude,
    toml_table,
)
from tests.helpers import make_repo, until, wait_until

SECRET = "hunter2-in-the-environment"
SLEEPER = "print('up', flush=True)\nimport time\ntime.sleep(100000)"
DIES_SOON = "import time\nprint('up', flush=True)\ntime.sleep(0.4)\nraise RuntimeError('died after start')"
DIES_ONCE_FLAGGED = (
    "import os, time\nprint('up', flush=True)\n"
    "if os.path.exists('/shared/die'):\n    time.sleep(0.4)\n    raise RuntimeError('died after start')\n"
    "time.sleep(100000)"
)


def wait_for(
    web: DockerManager, want: Callable[[ServiceStatus], bool], what: str, timeout: float = 10.0
) -> ServiceStatus:
    def ready() -> ServiceStatus | None:
        status = web.status()
        return status if want(status) else None

    status = wait_until(ready, timeout=timeout, what=what)
    assert status is not None
    return status


def running(status: ServiceStatus) -> bool:
    return status.state is ServiceState.RUNNING


def manager(env: DockerEnv, container: str) -> DockerManager:
    return DockerManager(container, container=container, binary=env.docker_bin, timeout_s=20)


@pytest.fixture
def container(docker: DockerEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"hb-{request.node.name.split('[')[0][-40:].replace('_', '-')}"
    yield name
    docker.remove(name)


def test_running_container_status_pid_and_log_file(docker: DockerEnv, container: str) -> None:
    docker.run_container(container, SLEEPER)
    web = manager(docker, container)

    status = wait_for(web, running, "running")

    assert status.pid == docker.state(container)["Pid"]
    assert status.restarts == 0
    assert status.detail == "running"
    (log_path,) = web.log_paths()
    assert Path(log_path).is_relative_to(docker.data_root) and Path(log_path).is_file()
    assert web.check() is None


def test_restart_gives_a_new_pid_that_stayed_up_for_the_settle_time(
    docker: DockerEnv, container: str
) -> None:
    docker.run_container(container, SLEEPER)
    web = manager(docker, container)
    before = wait_for(web, running, "running")

    started = time.monotonic()
    after = web.restart(settle_s=1.0)
    took = time.monotonic() - started

    assert after.state is ServiceState.RUNNING
    assert after.pid is not None and after.pid != before.pid
    assert after.pid == docker.state(container)["Pid"]
    assert 1.0 <= took < 6.0, f"docker restart with --init is quick; took {took:.1f}s"


def test_restart_of_a_container_that_dies_after_start_fails_with_its_exit(
    docker: DockerEnv, container: str, tmp_path: Path
) -> None:
    docker.run_container(container, DIES_ONCE_FLAGGED, binds=[f"{tmp_path}:/shared"])
    web = manager(docker, container)
    wait_for(web, running, "running")
    (tmp_path / "die").touch()  # the next start dies 0.4 s in: `docker restart` succeeds, settling does not

    with pytest.raises(RestartFailed) as failure:
        web.restart(settle_s=1.0)

    assert f"docker: {container} came up" in str(failure.value)
    assert "entered exited, last exit code 1" in str(failure.value)
    assert web.status().state is ServiceState.FATAL  # no restart policy: docker leaves it down


def test_a_container_docker_keeps_restarting_reads_as_a_crash_loop(docker: DockerEnv, container: str) -> None:
    docker.run_container(container, DIES_SOON, restart="always", env=[f"API_TOKEN={SECRET}"])
    web = manager(docker, container)
    assert f"API_TOKEN={SECRET}" in docker.docker("inspect", container).stdout.decode()  # Config.Env

    with pytest.raises(RestartFailed, match=r"crash-looping|entered restarting") as failure:
        web.restart(settle_s=1.0)
    looping = wait_for(web, lambda s: s.state is ServiceState.CRASH_LOOP, "restarting", timeout=15)

    assert looping.restarts is not None and looping.restarts >= 1
    assert looping.detail.startswith("restarting, last exit code 1")
    assert f"restarted {looping.restarts} times by docker" in looping.detail
    assert manager_storm_reason(looping.state, looping.detail) is not None  # healbot adds no restarts
    assert SECRET not in str(failure.value) + repr(looping) + str(web.check())


def test_missing_container(docker: DockerEnv) -> None:
    web = manager(docker, "hb-not-there")

    with pytest.raises(ServiceError, match=r"No such (object|container): hb-not-there"):
        web.status()
    problem = web.check()
    assert problem is not None and problem.endswith("check the name with `docker ps -a`")
    with pytest.raises(RestartFailed, match="cannot restart: docker: hb-not-there: `docker inspect` failed"):
        web.restart(settle_s=0.5)


def test_check_explains_a_daemon_that_is_not_there(docker: DockerEnv, tmp_path: Path) -> None:
    wrapper = tmp_path / "docker"
    wrapper.write_text(
        Path(docker.docker_bin).read_text().replace(str(docker.socket), str(tmp_path / "no.sock"))
    )
    wrapper.chmod(0o755)

    problem = DockerManager("web", container="web", binary=str(wrapper)).check()

    assert problem is not None and "Cannot connect to the Docker daemon" in problem
    assert problem.endswith("start dockerd, or check that healbot's user may use its socket")


def test_docker_stop_reads_as_stopped_not_as_fatal(docker: DockerEnv, container: str) -> None:
    """Regression: `docker stop` leaves exit code 143 (SIGTERM), which read as FATAL ("gave up"), so
    healbot refused to restart a container an operator had only stopped."""
    docker.run_container(container, SLEEPER)
    web = manager(docker, container)
    wait_for(web, running, "running")
    docker.docker("stop", container)

    status = web.status()

    assert docker.state(container)["ExitCode"] == 143
    assert status.state is ServiceState.STOPPED
    assert status.detail == "exited, stopped by SIGTERM (exit code 143)"
    assert manager_storm_reason(status.state, status.detail) is None
    assert web.restart(settle_s=0.5).state is ServiceState.RUNNING


def test_a_container_killed_for_memory_reads_as_fatal(docker: DockerEnv, container: str) -> None:
    docker.run_container(container, "x = bytearray(64 * 1024 * 1024)\nx[:] = b'1' * len(x)", memory="32m")
    web = manager(docker, container)

    status = wait_for(web, lambda s: not running(s), "oom kill")

    assert docker.state(container)["OOMKilled"] is True
    assert status.state is ServiceState.FATAL
    assert status.detail == "exited, last exit code 137, killed: out of memory"


def test_a_paused_container_reads_as_stopped_and_restarts(docker: DockerEnv, container: str) -> None:
    """Regression: `docker pause` keeps State.Running true, so a frozen container read as RUNNING."""
    docker.run_container(container, SLEEPER)
    web = manager(docker, container)
    before = wait_for(web, running, "running")
    docker.docker("pause", container)

    paused = web.status()

    assert (paused.state, paused.pid, paused.detail) == (ServiceState.STOPPED, None, "paused")
    after = web.restart(settle_s=0.5)
    assert after.state is ServiceState.RUNNING and after.pid != before.pid


def test_restart_waits_for_dockers_health_check_to_pass(
    docker: DockerEnv, container: str, tmp_path: Path
) -> None:
    docker.run_container(
        container,
        "import os, time\nwhile not os.path.exists('/shared/ready'):\n    time.sleep(0.02)\ntime.sleep(100000)",
        binds=[f"{tmp_path}:/shared"],
        health_cmd="/usr/bin/test -e /shared/ready",
    )
    web = manager(docker, container)
    assert wait_for(web, lambda s: s.detail == "running, health starting", "health starting").state is (
        ServiceState.STARTING
    )
    (tmp_path / "ready").touch()

    up = wait_for(web, running, "healthy")

    assert up.detail == "running, health healthy"


def healbot(env: DockerEnv, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, finding this daemon's `docker` wrapper first on PATH."""
    path = f"{Path(env.docker_bin).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        [HEALBOT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path},
        cwd=cwd,
        check=False,
    )


def test_init_finds_the_running_containers_with_debians_docker_client(
    docker: DockerEnv, container: str, tmp_path: Path
) -> None:
    """Regression: `docker ps --format json` is docker 23+; Debian 12's 20.10 client printed the word
    `json` for each container, so `healbot init` found none."""
    docker.run_container(container, SLEEPER)

    result = healbot(docker, "init", "--yes", "-o", str(tmp_path / "healbot.toml"), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"found {container}" in result.stdout, result.stdout
    written = tomllib.loads((tmp_path / "healbot.toml").read_text())
    assert written["services"][container]["manager"] == {"type": "docker", "container": container}


def test_doctor_reports_a_missing_and_a_failed_container_and_passes_a_running_one(
    docker: DockerEnv, tmp_path: Path
) -> None:
    names = {"up": "hb-doc-up", "gone": "hb-doc-gone", "down": "hb-doc-down"}
    text = toml_table("claude", {"binary": tmp_path / "no-such-claude"})
    for service, name in names.items():
        text += toml_table(
            f"services.{service}", {"repo": make_repo(tmp_path / service, {"app.py": "x = 1\n"})}
        )
        text += toml_table(f"services.{service}.manager", {"type": "docker", "container": name})
    (tmp_path / "healbot.toml").write_text(text)
    docker.run_container("hb-doc-up", SLEEPER)
    docker.run_container("hb-doc-down", "raise SystemExit(3)")
    try:
        wait_until(lambda: docker.state("hb-doc-down")["Status"] == "exited", what="exited")
        result = healbot(docker, "doctor", "-c", str(tmp_path / "healbot.toml"), cwd=tmp_path)
    finally:
        docker.remove("hb-doc-up")
        docker.remove("hb-doc-down")

    assert result.returncode == 1
    assert "✓ up: docker reachable" in result.stdout, result.stdout
    assert "✗ gone: docker: docker: hb-doc-gone: `docker inspect` failed (exit 1)" in result.stdout
    assert "check the name with `docker ps -a`" in result.stdout
    assert (
        "✗ down: docker: docker: hb-doc-down: container has failed: exited, last exit code 3; "
        "see `docker logs hb-doc-down`, fix the cause, then `docker start hb-doc-down`"
    ) in result.stdout, result.stdout


SHOP = """
import logging, sys, time
sys.path.insert(0, {repo!r})
import app
logging.basicConfig(format="%(asctime)s ERROR svc[%(process)d]: %(message)s")
print("serving", flush=True)
while True:
    try:
        app.total("pear")
    except KeyError:
        logging.getLogger("svc").exception("request /total failed")
    time.sleep(0.2)
"""


async def test_a_traceback_in_docker_logs_is_fixed_restarted_and_kept(
    docker: DockerEnv, tmp_path: Path
) -> None:
    """The whole loop on a container: its traceback read by `docker logs`, the fix proposed (the real
    claude binary against the fake Messages API), approved, committed, the container restarted through
    DockerManager, and kept because the errors stopped."""
    if claude_binary() is None:
        pytest.fail("claude binary missing: run `make tools`")
    repo = make_repo(tmp_path / "shop", {"app.py": APP})
    name = "hb-shop-e2e"
    text = toml_table("healbot", {"state_dir": tmp_path / "state", "poll_interval_s": 0.1})
    text += toml_table("claude", in_process_claude(idle_timeout_s=20))
    text += toml_table("services.svc", {"repo": repo})
    text += toml_table(
        "services.svc.manager", {"type": "docker", "container": name, "binary": docker.docker_bin}
    )
    text += toml_table("services.svc.health", {"window_s": 2.5, "settle_s": 0.5})
    (tmp_path / "healbot.toml").write_text(text)
    config = load_config(tmp_path / "healbot.toml")
    docker.run_container(name, SHOP.format(repo=str(repo)), binds=[f"{repo}:{repo}:ro"])
    fake = FakeMessagesApi(structured=DEFAULT_ANSWER).start()
    out = io.StringIO()
    daemon = await console_daemon(
        config, fake_api_runner(config, fake.url, tmp_path / "claude"), out, ShiftedClock()
    )
    try:
        await until(lambda: "KeyError: 'pear'" in docker.logs(name), what="the first traceback")
        pipeline, store = daemon.pipeline, daemon.store
        await pipeline.poll_once()  # the first read: the cursor at the end of the container's log

        async def proposed() -> Proposal | None:
            await pipeline.poll_once()
            await pipeline.wait_idle()
            incidents = store.incidents()
            return store.latest_proposal(incidents[0].id) if incidents else None

        proposal = None
        deadline = time.monotonic() + 60
        while proposal is None and time.monotonic() < deadline:
            proposal = await proposed()
        assert proposal is not None, out.getvalue()
        [incident] = store.incidents()
        assert incident.exception_type == "KeyError"
        old_pid = docker.state(name)["Pid"]

        await pipeline.decide(
            Decision(proposal.token, "alice", DecisionAction.APPROVE, 1, proposal.candidates[0].digest)
        )
        await pipeline.wait_idle()

        [result] = pipeline.results
        assert result.action == "kept", out.getvalue()
        assert "PRICES.get(name, 0)" in (repo / "app.py").read_text()
        assert docker.state(name)["Pid"] != old_pid  # restarted through docker
        assert store.incident(incident.id).state is IncidentState.RESOLVED
    finally:
        fake.stop()
        daemon.store.close()
        docker.remove(name)
