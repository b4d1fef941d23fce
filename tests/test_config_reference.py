"""README.md's configuration reference equals the generated one, and covers exactly the keys config accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_config
from bot.config_reference import REFERENCE, readme_block, render
from bot.errors import ConfigError
from tests.conftest import REPO_ROOT

PROBE = "zz_not_a_key"


def minimal() -> dict[str, Any]:
    return {"services": {"web": {"repo": "/srv/web", "manager": {"type": "command", "restart": ["true"]}}}}


def known_keys(table: str) -> set[str]:
    """The keys the loader reads in `table`, as it names them when it rejects an unknown one."""
    raw = minimal()
    where: dict[str, Any] = raw
    for part in table.replace("NAME", "web").split("."):
        where = where.setdefault(part, {})
    where[PROBE] = 1
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("/etc/healbot.toml"), check_repos=False)
    found = re.search(r"known here: ([^)]*)\)", str(caught.value))
    assert found is not None, str(caught.value)
    return {key.strip() for key in found.group(1).split(",")}


@pytest.mark.parametrize("table", [t.name for t in REFERENCE if t.name != "services.NAME.manager"])
def test_reference_lists_exactly_the_keys_the_loader_reads(table: str) -> None:
    documented = {key.name for t in REFERENCE if t.name == table for key in t.keys}
    assert documented == known_keys(table)


def test_readme_block_equals_the_generated_reference() -> None:
    block = readme_block((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert block is not None, "README.md lacks the <!-- config-reference:start/end --> markers"
    assert block == render(), "README.md's reference is stale: paste `python -m bot.config_reference` into it"


def test_readme_block_absent_or_reversed_markers() -> None:
    assert readme_block("no markers here") is None
    assert readme_block("<!-- config-reference:end --> <!-- config-reference:start -->") is None


def test_every_table_renders_with_its_keys() -> None:
    text = render()
    for table in REFERENCE:
        assert f"**`[{table.name}]`**" in text
        for key in table.keys:
            assert f"| `{key.name}` |" in text


def test_grace_after_restart_s_was_documented_as_60_but_defaulted_to_0() -> None:
    """Issue 17.8: the reference (and so README.md) states the default the loader really uses."""
    [documented] = [
        key.default
        for t in REFERENCE
        if t.name == "policy"
        for key in t.keys
        if key.name == "grace_after_restart_s"
    ]
    loaded = parse_config(minimal(), Path("/etc/healbot.toml"), check_repos=False)
    assert float(documented) == loaded.policy.grace_after_restart_s == 60.0
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"| `grace_after_restart_s` | number ≥ 0, ≤ 86400 | `{documented}` |" in readme
