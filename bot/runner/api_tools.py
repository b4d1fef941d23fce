"""healbot's MCP tools for the Messages-API runner: the same `healbot mcp` server the CLI runner gives
claude, started through the MCP SDK's stdio client, its tools offered to the model under the same names
(`mcp__healbot__…`) and their answers (already redacted and fenced by the server) returned as tool results."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bot import die_with_parent as lifeline
from bot.errors import RunnerError
from bot.mcp_server import launch as mcp_launch
from bot.mcp_server.looked_at import TOOL_PREFIX
from bot.mcp_server.scope import ToolScope
from bot.redact import redacted
from bot.runner.env import DEFAULT_LANG, INHERITED

if TYPE_CHECKING:
    from mcp import Client

START_TIMEOUT_S = 60.0


class ApiTools:
    """`async with ApiTools(scope, ...) as tools:` one server for one run; `tools.offered` for the API."""

    def __init__(
        self, scope: ToolScope, *, max_calls: int, max_bytes: int, environ: Mapping[str, str] | None = None
    ) -> None:
        self._scope = replace(scope, max_calls=max_calls, max_bytes=max_bytes)
        self._environ = environ
        self._launch: mcp_launch.Launch | None = None
        self._client: Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self.offered: list[dict[str, Any]] = []

    async def __aenter__(self) -> ApiTools:
        await asyncio.to_thread(importlib.import_module, "mcp")  # about 1 s of CPU: not on the event loop
        from mcp import Client, StdioServerParameters, stdio_client

        self._launch = mcp_launch.prepare(self._scope, self._environ)
        # the server's stderr goes to a file of its own: healbot's may be no real file (a test's capture)
        errlog = self._stack.enter_context(
            (self._launch.directory / "server.log").open("w", encoding="utf-8")
        )
        command = lifeline.command(mcp_launch.server_command(self._launch.directory / "scope.json"), env=None)
        env = {name: os.environ[name] for name in INHERITED if os.environ.get(name)}
        env.setdefault("LANG", DEFAULT_LANG)
        params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=self._scope.repo)
        try:
            self._client = await self._stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
            listed = await self._client.list_tools()
        except Exception as exc:
            await self.__aexit__(None, None, None)
            raise RunnerError(f"healbot's MCP tools could not be started: {exc}") from None
        self.offered = [
            {
                "name": TOOL_PREFIX + tool.name,
                "description": tool.description or "",
                "input_schema": tool.input_schema,
            }
            for tool in listed.tools
        ]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()
        if self._launch is not None:
            self._launch.cleanup()

    def owns(self, name: str) -> bool:
        return name.startswith(TOOL_PREFIX)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        """The answer's text and whether it is an error (a refusal, a bad argument)."""
        assert self._client is not None
        try:
            result = await self._client.call_tool(name.removeprefix(TOOL_PREFIX), dict(arguments))
        except Exception as exc:
            return redacted(f"the tool call failed: {exc}"), True
        text = "".join(str(getattr(block, "text", "")) for block in result.content)
        return text, bool(result.is_error)
