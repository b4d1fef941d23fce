"""The install path: a built wheel in a scratch venv gives a working `healbot`, with prompts and demo assets.

The scratch venv gets the wheel with --no-deps; its dependencies come from this project's .venv through a
.pth line (a directory named in a .pth file is put on sys.path, but its own .pth files, like the editable
install's finder, are not run), so no package index is needed to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from tests.conftest import REPO_ROOT
from tests.helpers import wait_until

SOURCES = ("bot", "healers", "prompts", "pyproject.toml", "README.md")


def run(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
        check=False,
    )


def test_explicit_package_list_matches_the_tree() -> None:
    """pyproject lists packages by hand (for the prompts/ mapping): a new sub-package must be added there."""
    setuptools_cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = set(find_packages(str(REPO_ROOT), include=["bot*", "healers*"]))
    assert set(setuptools_cfg["packages"]) == on_disk | {"bot.prompts"}
    assert setuptools_cfg["package-dir"] == {"bot.prompts": "prompts"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch venv with the freshly built wheel installed; returns its bin directory."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=ignore)
        else:
            shutil.copy2(origin, src / name)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    built = run(
        # The build backend comes from the project's own venv: no package index is asked during tests.
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(work / "dist"),
            str(src),
        ],
        cwd=work,
        env=env,
        timeout=180,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((work / "dist").glob("healbot-*.whl"))
    venv = work / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work, env=env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    done = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=work,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    site_packages = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=work, env=env
        ).stdout.strip()
    )
    (site_packages / "healbot-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin"


def outside_env(home: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return env


@pytest.mark.slow
def test_wheel_installs_a_working_healbot(installed: Path, tmp_path: Path) -> None:
    env = outside_env(tmp_path)
    where = run(
        [
            str(installed / "python"),
            "-c",
            "import bot, bot.diagnose as d; from importlib.resources import files; "
            "d.load_schema(); print(bot.__file__); print(d.prompts_dir()); "
            "print(files('bot') / 'demo' / 'assets' / 'shop.py')",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    module, prompts, shop = where.stdout.splitlines()
    venv = installed.parent
    assert Path(module).is_relative_to(venv), "bot was imported from the source tree, not the wheel"
    assert Path(prompts) == Path(module).parent / "prompts"
    assert (Path(prompts) / "diagnose.md").is_file()
    assert Path(shop).is_file()

    helped = run([str(installed / "healbot"), "--help"], cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "init" in helped.stdout

    config = tmp_path / "healbot.toml"
    state = tmp_path / "state"
    made = run(
        [
            str(installed / "healbot"),
            "init",
            "--yes",
            "--no-detect",
            "-o",
            str(config),
            "--state-dir",
            str(state),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert config.is_file()

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)  # the example's repo is "."
    doctor = run([str(installed / "healbot"), "doctor", "-c", str(config)], cwd=tmp_path, env=env)
    assert f"✓ config {config}: 1 service(s)" in doctor.stdout, doctor.stdout + doctor.stderr
    assert "claude binary 'claude' not found (fix: install Claude Code" in doctor.stdout
    assert (
        doctor.returncode == 1
    )  # no claude on this PATH, and the example's restart command is a placeholder

    sample = REPO_ROOT / "tests" / "data" / "logs" / "python_service.log"
    scanned = run([str(installed / "healbot"), "scan", str(sample)], cwd=tmp_path, env=env)
    assert scanned.returncode == 0, scanned.stderr
    assert "Error" in scanned.stdout

    # The daemon from the install runs with the written config (as the systemd unit would start it),
    # opens its state and stops cleanly on SIGTERM.
    daemon = subprocess.Popen(
        [str(installed / "healbot"), "run", "-c", str(config)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    started = True
    try:
        wait_until((state / "healbot.db").exists, 60, what="the installed daemon's state")
    except AssertionError:
        started = False
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=30)
        finally:
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGKILL)
    output = daemon.stdout.read() if daemon.stdout else ""
    assert started, f"no state after 60 s; the daemon said:\n{output}"
    assert code == 0, output
