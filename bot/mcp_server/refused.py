"""The one error a tool answers with when it will not do what was asked."""

from __future__ import annotations

from bot.errors import HealbotError


class ToolRefused(HealbotError):
    """A request a tool will not serve (outside the repo, a binary file, over a cap); the text says why."""
