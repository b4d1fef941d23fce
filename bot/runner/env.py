"""The environment `claude` runs in, built from scratch so the bot's own secrets never reach it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from bot.config import ClaudeConfig
from bot.models import RunRequest
from bot.redact import redact_env_values

# Copied from the bot's environment when present: what a process needs to find binaries, its home and
# a temp dir, and to decode text.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
DEFAULT_LANG = "C.UTF-8"

# Always set: no updater, no telemetry, no error reports, no traffic besides the model requests.
QUIET = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    # Without it, claude adds `gitStatus` (branch, recent commit subjects, the git user) to every request's
    # system prompt, unredacted. Measured on 2.1.330: set to 1, no request carries it.
    "CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS": "1",
}

# Variables that make `claude` bill per token instead of using the operator's subscription login.
PER_TOKEN_BILLING = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


def build_env(
    cfg: ClaudeConfig,
    *,
    base_env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    config_dir: Path | None = None,
) -> dict[str, str]:
    """Only the inherited basics, the quiet flags, the base URL, `cfg.pass_env` names and `extra_env`."""
    base = os.environ if base_env is None else base_env
    env = {name: base[name] for name in INHERITED if base.get(name)}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", DEFAULT_LANG)
    env.setdefault("LC_ALL", env["LANG"])
    if config_dir is not None:
        env["CLAUDE_CONFIG_DIR"] = str(config_dir)
    env.update(QUIET)
    if cfg.base_url:
        env["ANTHROPIC_BASE_URL"] = cfg.base_url
    for name in cfg.pass_env:
        if name in base:
            env[name] = base[name]
    env.update(extra_env or {})
    return env


def scrubbed_request(request: RunRequest, environ: Mapping[str, str] | None = None) -> RunRequest:
    """The request as it may leave the process: prompt and system prompt through the one redaction step
    (bot.redact), the values of the bot's secret-named variables out. Both runners send only this."""

    def scrub(text: str) -> str:
        return redact_env_values(text, os.environ if environ is None else environ).text

    system = scrub(request.system_prompt) if request.system_prompt else request.system_prompt
    return replace(request, prompt=scrub(request.prompt), system_prompt=system)
