"""Runs the README's "Install on a server" block, line by line, as a new operator would, in a scratch world.

Run as root inside a private mount namespace (`unshare -m --propagation private`, see
tests/test_readme_install.py): /etc, /opt, /var/lib, /var/log, /srv, /run and /root get overlays whose
upper layers live in the scratch directory, so `useradd`, `/opt/healbot`, `/etc/healbot` and the unit file
are real paths for every command and vanish with the namespace. What stands in for what cannot run here:
- `sudo` runs the command as is (we are root already); `pipx` is the one pinned in the dev extras;
- `systemctl` / `journalctl` are tests/walkthrough/fake_systemd.py, which starts the unit as its `User=`;
- Telegram is the fake Bot API from bot/demo, and the one line not from the README adds its URL
  (`telegram_base_url`) to the written config;
- pip installs from a local wheelhouse (`make tools` fills it) instead of PyPI.
The "server" already runs a service `shop` under supervisord, its repo in /srv/shop; its control socket
gets the access the README asks for (`chown=root:healbot`, `chmod=0770`) once the healbot user exists.

Writes a JSON report (each README line with its exit status and output, then the checks after start-up)
and exits 1 at the first failed step, saying which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.demo.fake_bot_api import FakeBotApi
from tests.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAID = ("/etc", "/opt", "/var/lib", "/var/log", "/srv", "/run", "/root")
MARKER = "<!-- install-walkthrough -->"
TOKEN = "4242:walkthrough-token"
CHAT_ID = -1001234567890
SERVICE_CODE = """\
import pathlib, sys, time, traceback

TRIGGER = pathlib.Path(__file__).with_name("trigger")


def checkout(cart):
    return cart["total"] / cart["items"]


print("shop started", flush=True)
while True:
    if TRIGGER.exists():
        TRIGGER.unlink()
        try:
            checkout({"total": 10, "items": 0})
        except ZeroDivisionError:
            traceback.print_exc()
            sys.stderr.flush()
    time.sleep(0.1)
"""


class WalkthroughFailed(Exception):
    pass


@dataclass
class Step:
    line: str
    returncode: int
    output: str


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None


def readme_chunks(readme: str) -> list[list[str]]:
    """The command lines of the marked block, grouped by its `# N.` comments."""
    after = readme.split(MARKER, 1)[1]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    if block is None:
        raise WalkthroughFailed(f"no ```sh block after {MARKER} in README.md")
    chunks: list[list[str]] = []
    for raw in block.group(1).splitlines():
        line = raw.strip()
        if re.match(r"# \d+\.", line):
            chunks.append([])
        elif line and not line.startswith("#"):
            if not chunks:
                raise WalkthroughFailed(f"command before the first '# 1.' step: {line!r}")
            chunks[-1].append(line)
    return chunks


class Walkthrough:
    def __init__(self, scratch: Path, wheelhouse: Path) -> None:
        self.scratch = scratch
        self.wheelhouse = wheelhouse
        self.report = Report()
        self.checkout = scratch / "healbot"
        self.admin_home = scratch / "admin-home"
        self.systemd_dir = scratch / "fake-systemd"
        self.shims = scratch / "shims"
        self.bot_api = FakeBotApi()
        self.supervisord: subprocess.Popen[bytes] | None = None

    # -- the scratch world ------------------------------------------------------------------------------
    def mount_overlays(self) -> None:
        for target in OVERLAID:
            layer = self.scratch / "overlay" / target.strip("/").replace("/", "_")
            (layer / "upper").mkdir(parents=True)
            (layer / "work").mkdir()
            options = f"lowerdir={target},upperdir={layer / 'upper'},workdir={layer / 'work'}"
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", options, target], check=True, timeout=30
            )
        Path("/root").chmod(
            0o711
        )  # the interpreter under /root/.pyenv must be reachable for the healbot user

    def write_shims(self) -> None:
        self.shims.mkdir()
        fake = f"PYTHONPATH={REPO_ROOT} exec {sys.executable} -m tests.walkthrough.fake_systemd"
        scripts = {
            "sudo": 'exec "$@"',
            "pipx": f'exec {Path(sys.executable).parent / "pipx"} "$@"',  # the operator's pipx (pinned in dev)
            "systemctl": f'{fake} systemctl "$@"',
            "journalctl": f'{fake} journalctl "$@"',
        }
        for name, body in scripts.items():
            shim = self.shims / name
            shim.write_text(f"#!/bin/sh\n{body}\n")
            shim.chmod(0o755)

    def copy_checkout(self) -> None:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
        for name in ("bot", "healers", "prompts", "deploy"):
            shutil.copytree(REPO_ROOT / name, self.checkout / name, ignore=ignore)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO_ROOT / name, self.checkout / name)

    def make_service_repo(self) -> None:
        repo = Path("/srv/shop")
        repo.mkdir()
        (repo / "app.py").write_text(SERVICE_CODE)
        git = ["git", "-C", str(repo), "-c", "user.name=ops", "-c", "user.email=ops@example.com"]
        subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
        subprocess.run([*git, "add", "app.py"], check=True, timeout=30)
        subprocess.run([*git, "commit", "-q", "-m", "shop"], check=True, timeout=30)

    def start_supervisord(self) -> None:
        """The server's supervisord, its socket open to the healbot group as the README says."""
        Path("/var/log/supervisor").mkdir(mode=0o755)
        conf = Path("/etc/supervisor/supervisord.conf")
        conf.parent.mkdir(exist_ok=True)
        conf.write_text(
            "[unix_http_server]\nfile=/run/supervisor.sock\nchmod=0770\nchown=root:healbot\n\n"
            "[supervisord]\nnodaemon=true\nlogfile=/var/log/supervisor/supervisord.log\n"
            "pidfile=/run/supervisord.pid\nchildlogdir=/var/log/supervisor\numask=022\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            "[supervisorctl]\nserverurl=unix:///run/supervisor.sock\n\n"
            f"[program:shop]\ncommand={sys.executable} /srv/shop/app.py\ndirectory=/srv/shop\n"
            "autorestart=true\nstdout_logfile=/var/log/supervisor/shop.out.log\n"
            "stderr_logfile=/var/log/supervisor/shop.err.log\n"
        )
        supervisord = Path(sys.executable).parent / "supervisord"
        self.supervisord = subprocess.Popen(
            [str(supervisord), "-c", str(conf)], stdin=subprocess.DEVNULL, start_new_session=True
        )
        wait_until(
            lambda: "shop started" in _read("/var/log/supervisor/shop.out.log"), 30, what="the shop service"
        )

    def environment(self) -> dict[str, str]:
        base_python = Path(getattr(sys, "_base_executable", sys.executable)).parent
        path = [str(self.shims), str(self.admin_home / ".local" / "bin"), str(base_python)]
        path += ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return {
            "PATH": ":".join(path),
            "HOME": str(self.admin_home),
            "LANG": "C.UTF-8",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(self.wheelhouse),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "FAKE_SYSTEMD_DIR": str(self.systemd_dir),
            "HEALBOT_TELEGRAM_TOKEN": TOKEN,
        }

    # -- the README ---------------------------------------------------------------------------------------
    def run_line(self, line: str, *, expect: int = 0) -> Step:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            cwd=self.checkout,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        step = Step(line, done.returncode, (done.stdout + done.stderr)[-6000:])
        self.report.steps.append(step)
        if done.returncode != expect:
            raise WalkthroughFailed(f"README line exited {done.returncode} (expected {expect}): {line}")
        return step

    def follow_readme(self) -> None:
        chunks = readme_chunks((self.checkout / "README.md").read_text())
        if len(chunks) != 4:
            raise WalkthroughFailed(f"expected the README's 4 install steps, found {len(chunks)}")
        install, user, configure, run = chunks
        for line in install:
            self.run_line(line)
        for line in user:
            self.run_line(line)
        self.start_supervisord()  # the README's supervisord access paragraph, now that the group exists
        for line in configure:
            # doctor cannot find claude here (it is not installed for this walkthrough): exit 1, checked below
            self.run_line(line, expect=1 if line.startswith("healbot doctor") else 0)
        self.point_telegram_at_the_fake()
        for line in run:
            self.run_line(line)

    def point_telegram_at_the_fake(self) -> None:
        config = self.checkout / "healbot.toml"
        text = config.read_text()
        if "\n[approval]\n" not in text:
            raise WalkthroughFailed("healbot init wrote no [approval] table")
        config.write_text(
            text.replace(
                "\n[approval]\n", f'\n[approval]\ntelegram_base_url = "{self.bot_api.base_url}"\n', 1
            )
        )

    # -- after start-up -------------------------------------------------------------------------------------
    def check_running_service(self) -> None:
        checks = self.report.checks
        doctor = next(s for s in self.report.steps if s.line.startswith("healbot doctor"))
        checks["doctor"] = doctor.output
        pid = int((self.systemd_dir / "healbot.pid").read_text())
        status = _read(f"/proc/{pid}/status")
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
        checks["daemon_user"] = pwd.getpwuid(uid).pw_name
        checks["daemon_cmdline"] = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
        checks["daemon_mounts"] = mounts_seen_by(
            pid, ("/", "/etc", "/opt", "/srv", "/var/lib/healbot", "/tmp")
        )
        wait_until(lambda: self.bot_api.calls("getUpdates"), 60, what="the daemon to poll the fake Telegram")
        Path("/srv/shop/trigger").touch()
        wait_until(self._card_arrived, 60, what="an incident card about the shop's ZeroDivisionError")
        checks["card"] = self._card_arrived()
        self.run_line("systemctl reload healbot")
        wait_until(lambda: "config reloaded" in self.journal(), 30, what="the reload in the journal")
        checks["status"] = self.run_line("healbot status -c /etc/healbot/healbot.toml").output
        self.run_line("systemctl stop healbot")
        checks["exit_status"] = int((self.systemd_dir / "healbot.stopped").read_text())
        db = Path("/var/lib/healbot/healbot.db")
        checks["state_owner"] = pwd.getpwuid(db.stat().st_uid).pw_name
        checks["state_dir_mode"] = oct(db.parent.stat().st_mode & 0o777)
        checks["journal"] = self.journal()[-4000:]

    def _card_arrived(self) -> str | None:
        for call in self.bot_api.calls("sendMessage", chat_id=CHAT_ID, ok=True):
            text = str(call.params.get("text", ""))
            if "ZeroDivisionError" in text:
                return text
        return None

    def journal(self) -> str:
        return _read(self.systemd_dir / "healbot.journal")

    # -- the whole run --------------------------------------------------------------------------------------
    def run(self) -> Report:
        self.bot_api.add_bot(TOKEN, 4242, "healbot_walkthrough_bot")
        self.bot_api.start()
        try:
            self.systemd_dir.mkdir(parents=True)
            self.admin_home.mkdir()
            self.mount_overlays()
            self.write_shims()
            self.copy_checkout()
            self.make_service_repo()
            self.follow_readme()
            self.check_running_service()
        except (WalkthroughFailed, AssertionError, OSError, subprocess.SubprocessError) as exc:
            self.report.failure = f"{type(exc).__name__}: {exc}"
            self.report.checks.setdefault("journal", self.journal()[-4000:])
            self.report.checks["bot_api_calls"] = [
                f"{c.method} {c.params.get('chat_id', '')} {str(c.params.get('text', ''))[:300]}"
                for c in self.bot_api.calls()
                if c.method != "getUpdates"
            ]
        finally:
            self.tear_down()
        return self.report

    def tear_down(self) -> None:
        pid_file = self.systemd_dir / "healbot.pid"
        if pid_file.exists() and not (self.systemd_dir / "healbot.stopped").exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        if self.supervisord is not None and self.supervisord.poll() is None:
            self.supervisord.terminate()
            try:
                self.supervisord.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.supervisord.pid, signal.SIGKILL)
        self.bot_api.stop()


def mounts_seen_by(pid: int, points: tuple[str, ...]) -> dict[str, str]:
    """`<fstype> <rw|ro>` of the topmost mount at each point, as the process sees its file system."""
    seen: dict[str, str] = {}
    for line in _read(f"/proc/{pid}/mountinfo").splitlines():
        fields = line.split()
        point, options = fields[4], fields[5].split(",")
        fstype = fields[fields.index("-") + 1]
        if point in points:
            seen[point] = f"{fstype} {'ro' if 'ro' in options else 'rw'}"
    return seen


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--wheelhouse", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    report = Walkthrough(args.scratch, args.wheelhouse).run()
    args.report.write_text(json.dumps(asdict(report), indent=2))
    return 1 if report.failure else 0


if __name__ == "__main__":
    sys.exit(main())
