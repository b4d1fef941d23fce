"""Every answer a tool gives passes here: redacted (bot/redact.py), capped, fenced as untrusted data,
counted against the diagnosis' budget of calls and bytes, and logged with its arguments and size."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from bot.diagnose import neutralise
from bot.mcp_server import env_secrets
from bot.mcp_server.refused import ToolRefused
from bot.redact import redact

log = logging.getLogger("healbot.mcp")

FENCE_LABEL = "TOOL ANSWER"


def fenced(tool: str, text: str) -> str:
    return f"<<<BEGIN UNTRUSTED {FENCE_LABEL} {tool}>>>\n{neutralise(text)}\n<<<END UNTRUSTED {FENCE_LABEL} {tool}>>>"


def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")
    return kept + f"\n[… {len(data) - limit} more bytes cut; ask for a narrower range]"


class Budget:
    """Calls and bytes one diagnosis may spend; beyond either, every tool refuses."""

    def __init__(
        self,
        *,
        max_calls: int,
        max_bytes: int,
        answer_bytes: int,
        calls_log: str | None,
        secret_salt: str = "",
        secret_digests: tuple[env_secrets.Digest, ...] = (),
    ) -> None:
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self.answer_bytes = answer_bytes
        self.calls = 0
        self.bytes = 0
        self._calls_log = Path(calls_log) if calls_log else None
        self._salt = secret_salt
        self._digests = secret_digests
        self._lock = threading.Lock()

    def admit(self, tool: str) -> None:
        with self._lock:
            self.calls += 1
            if self.calls > self.max_calls:
                raise ToolRefused(
                    f"the cap of {self.max_calls} tool calls per diagnosis is reached: answer now with "
                    "what you have"
                )
            if self.bytes >= self.max_bytes:
                raise ToolRefused(
                    f"the cap of {self.max_bytes} bytes of tool answers per diagnosis is reached: answer "
                    "now with what you have"
                )

    def answer(self, tool: str, args: Mapping[str, object], text: str, *, refused: bool = False) -> str:
        """The text as it may reach the model; the call is logged and its size counted."""
        cut = _cut(text, self.answer_bytes)
        if self._digests:
            cut = env_secrets.scrub(cut, self._salt, self._digests)
        safe = fenced(tool, redact(cut).text)
        size = len(safe.encode("utf-8"))
        with self._lock:
            self.bytes += size
            total_calls, total_bytes = self.calls, self.bytes
        log.info("tool %s %s → %d bytes%s", tool, json.dumps(args), size, " (refused)" if refused else "")
        if self._calls_log is not None:
            entry = {"at": time.time(), "tool": tool, "args": args, "bytes": size, "refused": refused}
            entry |= {"calls": total_calls, "total_bytes": total_bytes}
            with self._calls_log.open("a", encoding="utf-8") as handle:
                handle.write(redact(json.dumps(entry)).text + "\n")
        return safe
