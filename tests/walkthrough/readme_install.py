"""Runs the README's "Install on a server" block, line by line, as a new operator would, on a real systemd.

Run as root inside the namespaces of the session's booted systemd (tests/fakes/systemd_env.py, started by
tests/test_readme_install.py): /etc, /var, /usr, /opt, /srv, /root and /home there are overlays only that
systemd sees, so `useradd`, `/opt/healbot`, `/etc/healbot` and the unit file are real paths for every
command, `sudo` is Debian's (the test installs it into that /usr), and `systemctl` / `journalctl` are the
real ones: `systemctl enable --now healbot` starts deploy/healbot.service with all its hardening. What
stands in for what cannot run here:
- Telegram is the fake Bot API from bot/demo and Claude the fake Messages API (with the real `claude`
  binary, its folder bound at /opt/claude), both on the namespace's loopback; the lines not from the README point the written config at
  them and put the API key the fake accepts into /etc/healbot/env (`not_from_readme` in the report);
- pip installs from a local wheelhouse (`make tools` fills it), named in /etc/pip.conf since sudo resets
  the environment; `pipx` is the one pinned in the dev extras.
The "server" already runs two services: `shop` under supervisord, its control socket with the access the
README asks for (`chown=root:healbot`, `chmod=0770`) once the healbot user exists, and `web` under systemd
(its own unit in /etc/systemd/system), their repos in /srv/shop and /srv/web.

After the README, the checks: the daemon runs as its `User=` with its hardening in force, posts the
shop's error with Claude's diagnosis, restarts web.service when web's card is approved (polkit, from the
hardened unit), comes back by `Restart=` after `kill -9`, reloads on `systemctl reload` at once, stops
cleanly with its store intact and the incident kept, and logs JSON to the journal.
Writes a JSON report (each line run with its exit status and output, then the checks) and exits 1 at the
first failed step, saying which.
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
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.demo.fake_bot_api import FakeBotApi
from bot.demo.fake_messages_api import DEFAULT_ANSWER, FakeMessagesApi
from tests.fakes.daemon_proc import FAKE_CLAUDE_ENV
from tests.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- install-walkthrough -->"
TOKEN = "4242:walkthrough-token"
CHAT_ID = -1001234567890
APPROVER = 123456789  # the README's --approver
DAEMON_STARTED = "Started healbot.service"
DIAGNOSIS_SUMMARY = str(DEFAULT_ANSWER["summary"])
HOME_SECRET = Path("/home/alice/notes.txt")
# Owned by healbot (or open to it) on the disk; only the second is under ReadWritePaths=.
WRITE_PROBES = ("/etc/healbot/probe", "/srv/shop/probe")
AS_HEALBOT = ("setpriv", "--reuid=healbot", "--regid=healbot", "--init-groups")
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

WEB_CODE = SERVICE_CODE.replace("shop started", "web started").replace(
    'checkout({"total": 10, "items": 0})', 'checkout({"total": 10})'
)  # a KeyError, on stderr: the journal
WEB_UNIT = """\
[Unit]
Description=web, the server's own service under systemd

[Service]
ExecStart=/usr/bin/python3 -u /srv/web/app.py
Restart=on-failure

[Install]
WantedBy=multi-user.target
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
    def __init__(self, scratch: Path, wheelhouse: Path, claude: str) -> None:
        self.scratch = scratch
        self.wheelhouse = wheelhouse
        self.claude = claude
        self.report = Report()
        self.checkout = scratch / "healbot"
        self.admin_home = scratch / "admin-home"
        self.shims = scratch / "shims"
        self.bot_api = FakeBotApi()
        self.messages_api = FakeMessagesApi()
        self.supervisord: subprocess.Popen[bytes] | None = None

    # -- the scratch world ------------------------------------------------------------------------------
    def prepare_server(self) -> None:
        """What the server has before the README: a local package mirror, a user's home, claude, pipx."""
        Path("/etc/pip.conf").write_text(
            f"[global]\nno-index = true\nfind-links = {self.wheelhouse}\ndisable-pip-version-check = true\n"
        )
        for user_config in ("/root/.config/pip/pip.conf", "/root/.pip/pip.conf"):  # the host's root's
            Path(user_config).unlink(missing_ok=True)
        HOME_SECRET.parent.mkdir(parents=True)
        HOME_SECRET.write_text("a user's file healbot must not see\n")
        self.install_claude()
        self.shims.mkdir()
        pipx = self.shims / "pipx"  # the operator's pipx (pinned in dev)
        pipx.write_text(f'#!/bin/sh\nexec {Path(sys.executable).parent / "pipx"} "$@"\n')
        pipx.chmod(0o755)

    def install_claude(self) -> None:
        """The claude binary where an operator would put it: its folder bound at /opt/claude (the checkout may
        be under /home or /root, which ProtectHome= hides from the unit)."""
        target = Path("/opt/claude")
        target.mkdir()
        subprocess.run(
            ["mount", "--bind", str(Path(self.claude).parent), str(target)], check=True, timeout=30
        )
        self.claude = str(target / Path(self.claude).name)

    def copy_checkout(self) -> None:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
        for name in ("bot", "healers", "prompts", "deploy"):
            shutil.copytree(REPO_ROOT / name, self.checkout / name, ignore=ignore)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO_ROOT / name, self.checkout / name)

    def make_service_repos(self) -> None:
        for name, code in (("shop", SERVICE_CODE), ("web", WEB_CODE)):
            repo = Path("/srv") / name
            repo.mkdir()
            (repo / "app.py").write_text(code)
            git = ["git", "-C", str(repo), "-c", "user.name=ops", "-c", "user.email=ops@example.com"]
            subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
            subprocess.run([*git, "add", "app.py"], check=True, timeout=30)
            subprocess.run([*git, "commit", "-q", "-m", name], check=True, timeout=30)

    def start_web_unit(self) -> None:
        """The server's own systemd unit, in /etc/systemd/system as an operator installs one."""
        Path("/etc/systemd/system/web.service").write_text(WEB_UNIT)
        subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=60)
        subprocess.run(
            ["systemctl", "enable", "--now", "web.service"], check=True, timeout=60, capture_output=True
        )
        wait_until(lambda: "web started" in self.journal("web.service"), 30, what="the web service")

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
            "PIP_CONFIG_FILE": os.devnull,  # pipx, run without sudo: the wheelhouse only, by these three
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(self.wheelhouse),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "HEALBOT_TELEGRAM_TOKEN": TOKEN,
        }

    # -- the README ---------------------------------------------------------------------------------------
    def run_line(self, line: str, *, expect: int = 0) -> Step:
        if line.endswith(" -f"):
            return self.run_following(line)
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
        return self.record(Step(line, done.returncode, (done.stdout + done.stderr)[-6000:]), expect)

    def run_following(self, line: str) -> Step:
        """`journalctl -f` never ends: it passes once it shows the daemon's start and still follows."""
        out = self.scratch / "following.out"
        with out.open("wb") as sink:
            follower = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=self.checkout,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: DAEMON_STARTED in _read(out), 30, what=f"{DAEMON_STARTED!r} from `{line}`")
            returncode = 0 if follower.poll() is None else (follower.returncode or 1)
        finally:
            follower.kill()
            follower.wait(timeout=10)
        return self.record(Step(line, returncode, _read(out)[-6000:]), 0)

    def record(self, step: Step, expect: int) -> Step:
        self.report.steps.append(step)
        if step.returncode != expect:
            raise WalkthroughFailed(f"README line exited {step.returncode} (expected {expect}): {step.line}")
        return step

    def not_from_readme(self, line: str) -> None:
        self.report.checks.setdefault("not_from_readme", []).append(line)
        self.run_line(line)

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
            # doctor runs before the config names the claude binary (not on PATH here): exit 1, checked below
            self.run_line(line, expect=1 if line.startswith("healbot doctor") else 0)
        self.point_at_the_fakes()
        for line in run:
            self.run_line(line)
            if line.endswith("/etc/healbot/env"):
                api_key = " ".join(f"{k}={v}" for k, v in FAKE_CLAUDE_ENV.items())
                self.not_from_readme(f"printf '%s\\n' {api_key} | sudo tee -a /etc/healbot/env >/dev/null")

    def point_at_the_fakes(self) -> None:
        config = self.checkout / "healbot.toml"
        text = config.read_text()
        pass_env = ", ".join(f'"{name}"' for name in sorted(FAKE_CLAUDE_ENV))
        edits = {
            "\n[approval]\n": f'\n[approval]\ntelegram_base_url = "{self.bot_api.base_url}"\n',
            '\nbinary = "claude"\n': f'\nbinary = "{self.claude}"\nbase_url = "{self.messages_api.url}"\n'
            f"pass_env = [{pass_env}]\n",
        }
        for old, new in edits.items():
            if old not in text:
                raise WalkthroughFailed(f"healbot init wrote no {old.strip()!r}")
            text = text.replace(old, new, 1)
        config.write_text(text)
        self.report.checks.setdefault("not_from_readme", []).append(
            "healbot.toml: telegram_base_url, and claude's binary, base_url and pass_env, point at the fakes"
        )

    # -- after start-up -------------------------------------------------------------------------------------
    def check_running_service(self) -> None:
        checks = self.report.checks
        doctor = next(s for s in self.report.steps if s.line.startswith("healbot doctor"))
        checks["doctor"] = doctor.output
        wait_until(lambda: self.bot_api.calls("getUpdates"), 60, what="the daemon to poll the fake Telegram")
        pid = self.main_pid()
        checks["daemon_user"] = process_user(pid)
        checks["daemon_cmdline"] = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
        checks["no_new_privs"] = _status_field(pid, "NoNewPrivs")
        checks["daemon_mounts"] = mounts_seen_by(
            pid, ("/", "/etc", "/opt", "/srv", "/var/lib/healbot", "/tmp")
        )
        checks["writes"] = {path: write_as_daemon(pid, path) for path in WRITE_PROBES}
        checks["home_seen_by_daemon"] = sorted(os.listdir(f"/proc/{pid}/root/home"))
        checks["home_seen_by_admin"] = sorted(os.listdir("/home"))

        Path("/srv/shop/trigger").touch()
        checks["card"] = wait_until(self.diagnosed_card, 120, what="a card with Claude's diagnosis")
        self.approve_the_restart_of_web()

        os.kill(pid, signal.SIGKILL)
        checks["after_kill"] = wait_until(
            lambda: (
                (state := self.show("MainPID", "NRestarts", "ActiveState"))["ActiveState"] == "active"
                and state["MainPID"] not in ("0", str(pid))
                and state
            ),
            60,
            what="Restart= to bring it back",
        )
        # At once: `active` as soon as systemd counts it started. (Type=simple: at fork, and the SIGHUP
        # then killed the Python still importing, for good.)
        reloaded_pid = self.main_pid()
        self.run_line("sudo systemctl reload healbot")
        wait_until(lambda: "config reloaded" in self.journal(), 30, what="the reload in the journal")
        checks["pid_after_reload"] = [reloaded_pid, self.main_pid()]
        checks["status"] = self.run_line("healbot status -c /etc/healbot/healbot.toml").output

        self.run_line("sudo systemctl stop healbot")
        checks["after_stop"] = self.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        checks["status_after_stop"] = self.run_line("healbot status -c /etc/healbot/healbot.toml").output
        db = Path("/var/lib/healbot/healbot.db")
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            checks["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
        checks["state_owner"] = pwd.getpwuid(db.stat().st_uid).pw_name
        checks["state_dir_mode"] = oct(db.parent.stat().st_mode & 0o777)
        checks["cards_posted"] = len(self.cards())
        checks["journal_json"] = self.journal_entries()
        checks["journal"] = self.journal()[-4000:]

    def approve_the_restart_of_web(self) -> None:
        """web's error, its card, Approve: healbot restarts web.service from its hardened unit (polkit)."""
        checks = self.report.checks
        before = self.show("MainPID", unit="web.service")["MainPID"]
        Path("/srv/web/trigger").touch()
        card = wait_until(
            lambda: next(
                (
                    m
                    for m in self.bot_api.bot_messages(CHAT_ID)
                    if "KeyError" in m.text and DIAGNOSIS_SUMMARY in m.text
                ),
                None,
            ),
            120,
            what="web's card with Claude's diagnosis",
        )
        checks["web_card"] = card.text
        self.bot_api.press(APPROVER, CHAT_ID, card.message_id, text="Approve #1")
        checks["web_pids"] = [
            before,
            wait_until(
                lambda: (
                    (pid := self.show("MainPID", unit="web.service")["MainPID"]) not in ("0", before) and pid
                ),
                60,
                what="healbot's restart of web.service",
            ),
        ]
        checks["web_card_after"] = wait_until(
            lambda: (m := self.bot_api.message(CHAT_ID, card.message_id)).reply_markup is None and m.text,
            60,
            what="web's card to show the outcome",
        )

    def cards(self) -> list[str]:
        texts = [str(c.params.get("text", "")) for c in self.bot_api.calls(chat_id=CHAT_ID, ok=True)]
        return [text for text in texts if "ZeroDivisionError" in text]

    def diagnosed_card(self) -> str | None:
        return next((text for text in self.cards() if DIAGNOSIS_SUMMARY in text), None)

    def main_pid(self, *, allow_none: bool = False) -> int | None:
        pid = int(self.show("MainPID")["MainPID"])
        if pid == 0 and not allow_none:
            raise WalkthroughFailed("healbot.service has no main process")
        return pid or None

    def show(self, *properties: str, unit: str = "healbot") -> dict[str, str]:
        done = subprocess.run(
            ["systemctl", "show", unit, f"--property={','.join(properties)}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def journal_entries(self) -> list[dict[str, Any]]:
        """The daemon's own journal entries (not systemd's about the unit): MESSAGE and the writer's name."""
        done = subprocess.run(
            ["journalctl", "-u", "healbot", "-o", "json", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        entries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        return [
            {"SYSLOG_IDENTIFIER": e.get("SYSLOG_IDENTIFIER"), "MESSAGE": e.get("MESSAGE")}
            for e in entries
            if e.get("_COMM") != "systemd"
        ]

    def journal(self, unit: str = "healbot") -> str:
        done = subprocess.run(
            ["journalctl", "-u", unit, "-o", "cat", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout

    # -- the whole run --------------------------------------------------------------------------------------
    def run(self) -> Report:
        self.bot_api.add_bot(TOKEN, 4242, "healbot_walkthrough_bot")
        self.bot_api.start()
        self.messages_api.start()
        try:
            self.admin_home.mkdir(parents=True)
            self.prepare_server()
            self.copy_checkout()
            self.make_service_repos()
            self.start_web_unit()
            self.follow_readme()
            self.check_running_service()
        except (WalkthroughFailed, AssertionError, OSError, subprocess.SubprocessError, ValueError) as exc:
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
        """The session's systemd serves other tests after this one: healbot and web stopped, web disabled."""
        subprocess.run(["systemctl", "stop", "healbot"], capture_output=True, timeout=120, check=False)
        subprocess.run(
            ["systemctl", "disable", "--now", "web"], capture_output=True, timeout=120, check=False
        )
        if self.supervisord is not None and self.supervisord.poll() is None:
            self.supervisord.terminate()
            try:
                self.supervisord.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.supervisord.pid, signal.SIGKILL)
        self.messages_api.stop()
        self.bot_api.stop()


def write_as_daemon(pid: int, path: str) -> str:
    """Create PATH as the healbot user in the daemon's own mount namespace: "ok" or the error."""
    done = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "--", *AS_HEALBOT, "sh", "-c", f'touch "{path}" && rm "{path}"'],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return "ok" if done.returncode == 0 else done.stderr.strip()


def process_user(pid: int) -> str:
    return pwd.getpwuid(int(_status_field(pid, "Uid").split()[0])).pw_name


def _status_field(pid: int, name: str) -> str:
    match = re.search(rf"^{name}:\s+(.*)$", _read(f"/proc/{pid}/status"), re.M)
    if match is None:
        raise WalkthroughFailed(f"/proc/{pid}/status has no {name}")
    return match.group(1).strip()


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
    parser.add_argument("--claude", required=True, help="the real claude binary")
    args = parser.parse_args()
    report = Walkthrough(args.scratch, args.wheelhouse, args.claude).run()
    args.report.write_text(json.dumps(asdict(report), indent=2))
    return 1 if report.failure else 0


if __name__ == "__main__":
    sys.exit(main())
