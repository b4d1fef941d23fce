"""What a diagnosis looked at, in a few words for the card: "looked at: 3 log windows, 2 files, health"."""

from __future__ import annotations

from collections.abc import Iterable

SERVER_NAME = "healbot"
TOOL_PREFIX = f"mcp__{SERVER_NAME}__"

# tool → (singular, plural); a kind without a plural is named without a count
TOOL_KINDS: dict[str, tuple[str, str | None]] = {
    "incident": ("the incident", None),
    "log_window": ("log window", "log windows"),
    "health": ("health", None),
    "history": ("history", None),
    "list_files": ("listing", "listings"),
    "read_file": ("file", "files"),
    "search_repo": ("search", "searches"),
    "git_log": ("git log", "git logs"),
    "git_show": ("commit", "commits"),
    "git_blame": ("blame", "blames"),
}


def tool_name(full: str) -> str:
    """`mcp__healbot__read_file` → `read_file`; built-in tools keep their name (`Read`)."""
    return full.removeprefix(TOOL_PREFIX)


def summary(calls: Iterable[tuple[str, int]]) -> str:
    """("log_window", 3), ("read_file", 2), ("health", 1) → "3 log windows, 2 files, health"."""
    parts: list[str] = []
    for tool, count in calls:
        singular, plural = TOOL_KINDS.get(tool, (tool, tool))
        if plural is None:
            parts.append(singular)
        else:
            parts.append(f"{count} {singular if count == 1 else plural}")
    return ", ".join(parts)
