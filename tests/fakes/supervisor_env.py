"""A scratch supervisord for tests: its own config, unix socket and logs; stops only what it started.

env = SupervisorEnv.start(workdir, [Program("web", tiny_service_argv(), {"PORT": "1234"})])
...
env.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xmlrpc.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from supervisor.xmlrpc import SupervisorTransport

from tests.helpers import wait_until

TINY_SERVICE = Path(__file__).resolve().parent / "tiny_service.py"


def tiny_service_argv() -> list[str]:
    return [sys.executable, str(TINY_SERVICE)]


def supervisord_binary() -> str:
    candidate = Path(sys.executable).parent / "supervisord"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("supervisord")
    if found is None:
        pytest.fail("supervisord missing: run `make install` (PyPI supervisor 4.3.0 in .venv)")
    return found


@dataclass(frozen=True)
class Program:
    name: str
    argv: Sequence[str]
    environment: Mapping[str, str] = field(default_factory=dict)
    startsecs: int = 1
    startretries: int = 0  # 0: the first too-quick exit goes BACKOFF → FATAL at once (fast tests)


@dataclass
class SupervisorEnv:
    workdir: Path
    socket_dir: Path
    config_path: Path
    process: subprocess.Popen[bytes]
    programs: tuple[Program, ...]

    @property
    def socket_path(self) -> str:
        return str(self.socket_dir / "supervisor.sock")

    @classmethod
    def start(cls, workdir: Path, programs: Sequence[Program]) -> SupervisorEnv:
        workdir.mkdir(parents=True, exist_ok=True)
        # unix socket paths are limited to ~108 bytes; pytest's tmp paths can be longer.
        socket_dir = Path(tempfile.mkdtemp(prefix="hb-sv-"))
        config_path = workdir / "supervisord.conf"
        config_path.write_text(_config(workdir, socket_dir / "supervisor.sock", programs))
        with open(workdir / "supervisord.out", "wb") as out:
            process = subprocess.Popen(
                [supervisord_binary(), "-n", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        env = cls(workdir, socket_dir, config_path, process, tuple(programs))
        try:
            wait_until(env._answers, timeout=15, what="supervisord to answer on its socket")
        except BaseException:
            env.stop()
            raise
        return env

    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def info(self, program: str) -> dict[str, Any]:
        info: dict[str, Any] = self.rpc().getProcessInfo(program)
        return info

    def wait_state(self, program: str, statename: str, timeout: float = 15) -> dict[str, Any]:
        return wait_until(
            lambda: (info := self.info(program))["statename"] == statename and info,
            timeout=timeout,
            what=f"{program} to be {statename}",
        )

    def log_file(self, program: str, stream: str) -> Path:
        return self.workdir / f"{program}-{stream}.log"

    def stop(self) -> None:
        """SIGTERM supervisord (it stops its children), then kill any child it left, by pid."""
        children: list[psutil.Process] = []  # psutil refuses to kill a pid that was reused since
        with contextlib.suppress(Exception):
            children = [psutil.Process(int(i["pid"])) for i in self.rpc().getAllProcessInfo() if i["pid"]]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            output = (self.workdir / "supervisord.out").read_text(errors="replace")
            raise AssertionError(f"supervisord exited with {self.process.returncode}: {output}")
        try:
            return bool(self.rpc().getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return False


def _config(workdir: Path, socket_path: Path, programs: Sequence[Program]) -> str:
    lines = [
        "[unix_http_server]",
        f"file={socket_path}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={workdir / 'supervisord.log'}",
        f"pidfile={workdir / 'supervisord.pid'}",
        f"childlogdir={workdir}",
        "nodaemon=true",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{socket_path}",
    ]
    for program in programs:
        environment = ",".join(f'{key}="{value}"' for key, value in program.environment.items())
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={' '.join(program.argv)}",
            f"directory={workdir}",
            "autostart=true",
            "autorestart=true",
            f"startsecs={program.startsecs}",
            f"startretries={program.startretries}",
            "stopsignal=TERM",
            "stopwaitsecs=5",
            f"stdout_logfile={workdir / f'{program.name}-out.log'}",
            f"stderr_logfile={workdir / f'{program.name}-err.log'}",
        ]
        if environment:
            lines.append(f"environment={environment}")
    return "\n".join(lines) + "\n"
