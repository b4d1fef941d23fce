"""A scratch PM2 for tests: its own PM2_HOME (so `pm2 kill` stops only this daemon) and apps.

env = Pm2Env.start()
env.start_app("web", {"PORT": "1234"})
...
env.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import pm2_binary
from tests.fakes.supervisor_env import TINY_SERVICE

PM2_CALL_TIMEOUT_S = 60


@dataclass
class Pm2Env:
    home: Path  # PM2_HOME; short, under /tmp: PM2 puts unix sockets in it
    binary: str

    @classmethod
    def start(cls) -> Pm2Env:
        binary = pm2_binary()
        if binary is None:
            pytest.fail("pm2 missing: run `make tools`")
        env = cls(Path(tempfile.mkdtemp(prefix="hb-pm2-")), binary)
        try:
            env.run("ping")
        except BaseException:
            env.stop()
            raise
        return env

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "PM2_HOME": str(self.home),
        }
        env.update(extra or {})
        return env

    def run(self, *args: str, extra_env: Mapping[str, str] | None = None) -> str:
        result = subprocess.run(
            [self.binary, *args],
            env=self.environment(extra_env),
            capture_output=True,
            text=True,
            timeout=PM2_CALL_TIMEOUT_S,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"pm2 {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def start_app(self, name: str, app_env: Mapping[str, str], *, max_restarts: int = 16) -> None:
        """Start tests/fakes/tiny_service.py as `name`; `app_env` becomes the app's environment."""
        self.run(
            "start", str(TINY_SERVICE), "--name", name, "--interpreter", sys.executable,
            "--max-restarts", str(max_restarts), "--kill-timeout", "3000",
            extra_env=app_env,
        )  # fmt: skip

    def jlist(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.run("jlist"))
        return data

    def app(self, name: str) -> dict[str, Any]:
        return next(entry for entry in self.jlist() if entry["name"] == name)

    def stop(self) -> None:
        """`pm2 kill` for this PM2_HOME only; then kill, by pid, anything of ours that survived."""
        ours: list[psutil.Process] = []  # psutil refuses to kill a pid that was reused since
        try:
            ours.append(psutil.Process(int((self.home / "pm2.pid").read_text().strip())))
        except (OSError, ValueError, psutil.Error):
            shutil.rmtree(self.home, ignore_errors=True)
            return  # no daemon: any pm2 call now would spawn one
        with contextlib.suppress(Exception):
            ours += [psutil.Process(int(entry["pid"])) for entry in self.jlist() if entry.get("pid")]
        with contextlib.suppress(Exception):
            self.run("kill")
        for process in ours:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
        shutil.rmtree(self.home, ignore_errors=True)
