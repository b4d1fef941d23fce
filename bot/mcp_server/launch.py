"""How a runner starts `healbot mcp` for one diagnosis: a private temp dir holding the scope, the
`--mcp-config` JSON and the calls log; the server command runs this same healbot with `python -I` (no
current directory on sys.path: the service's repo, claude's working directory, cannot shadow a module)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import bot
from bot.mcp_server import env_secrets
from bot.mcp_server.looked_at import SERVER_NAME, TOOL_PREFIX
from bot.mcp_server.scope import ToolScope

HEALBOT_ROOT = str(Path(bot.__file__).resolve().parent.parent)
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from bot.cli import main; sys.exit(main(sys.argv[2:]))"
ALLOWED_TOOLS = f"{TOOL_PREFIX}*"


def server_command(scope_path: Path) -> list[str]:
    return [sys.executable, "-I", "-c", _BOOT, HEALBOT_ROOT, "mcp", "--scope", str(scope_path)]


@dataclass(frozen=True, slots=True)
class Launch:
    """The files of one server: remove them with `cleanup()` once the diagnosis is over."""

    directory: Path
    mcp_config: Path
    calls_log: Path

    @property
    def pid_file(self) -> Path:
        return self.calls_log.with_suffix(".pid")

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def prepare(scope: ToolScope, environ: Mapping[str, str] | None = None) -> Launch:
    """The server's files; `environ` is healbot's own environment, whose secret values the server is
    told of as salted digests only (bot/mcp_server/env_secrets.py)."""
    directory = Path(tempfile.mkdtemp(prefix="healbot-mcp-"))  # mode 0700
    calls_log = directory / "calls.jsonl"
    scope_path = directory / "scope.json"
    salt = env_secrets.new_salt()
    known = env_secrets.digests(os.environ if environ is None else environ, salt)
    replace(scope, calls_log=str(calls_log), secret_salt=salt, secret_digests=known).dump(scope_path)
    command = server_command(scope_path)
    config = {"mcpServers": {SERVER_NAME: {"type": "stdio", "command": command[0], "args": command[1:]}}}
    mcp_config = directory / "mcp.json"
    mcp_config.write_text(json.dumps(config), encoding="utf-8")
    return Launch(directory, mcp_config, calls_log)
