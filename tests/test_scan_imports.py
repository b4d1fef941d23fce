"""What `healbot scan FILE` imports, and when (issue 13): its grep starts before logging, redaction and the
grouping code are imported, and the scan never imports the daemon's modules. Import cost is what keeps the
CLI from grep's speed; this catches a regression of it without timing anything."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from bot.stable_hash import sha256_hex
from tests.bench.bench_scan import generate

# Run in a fresh interpreter: records the modules loaded when grep is started and when the scan is done.
_PROBE = """
import sys
import bot.grepfilter as grepfilter

seen = {}
start = grepfilter.GrepHits.start.__func__

def recording(cls, *args, **kwargs):
    seen.setdefault("at_grep", sorted(sys.modules))
    return start(cls, *args, **kwargs)

grepfilter.GrepHits.start = classmethod(recording)
from bot.cli import main

code = main(sys.argv[2:])
seen["after"] = sorted(sys.modules)
seen["code"] = code
import json
with open(sys.argv[1], "w") as out:
    json.dump(seen, out)
"""

# Imported only once grep runs (it reads the file meanwhile, on the other core).
AFTER_GREP = (
    "typing",
    "dataclasses",
    "logging",
    "bot.errors",
    "bot.logging_setup",
    "bot.redact",
    "bot.records",
    "bot.grouping",
    "bot.fastscan",
)
# Never needed by a scan.
NEVER = (
    "subprocess",
    "shutil",
    "hashlib",  # OpenSSL: bot.stable_hash uses the built-in SHA-256
    "json",  # imported where JSON is read or written (bot.structured, bot.logging_setup, bot.redact)
    "asyncio",
    "sqlite3",
    "bot.models",
    "bot.commands",
    "bot.config",
    "bot.store",
    "bot.daemon",
    "bot.sources.file",
    "telegram",
)


def _probe(tmp_path: Path, *argv: str) -> dict[str, object]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, object] = json.loads(out.read_text())
    return seen


def test_scan_starts_grep_before_the_heavy_imports_and_never_imports_the_daemon(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    generate(log, 2_000)
    seen = _probe(tmp_path, "scan", str(log))
    assert seen["code"] == 0
    at_grep, after = set(seen["at_grep"]), set(seen["after"])  # type: ignore[call-overload]
    assert [name for name in AFTER_GREP if name in at_grep] == []
    assert "argparse" not in after  # the plain `scan FILE` is read without it
    assert [name for name in AFTER_GREP if name not in after] == []  # the probe saw the whole scan
    assert sorted(name for name in after if name in NEVER or name.split(".")[0] in NEVER) == []


def test_a_scan_with_options_also_starts_grep_first(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    generate(log, 500)
    seen = _probe(tmp_path, "-v", "scan", "--service", "shop", str(log))
    at_grep = set(seen["at_grep"])  # type: ignore[call-overload]
    assert [name for name in AFTER_GREP if name in at_grep] == []


def test_the_built_in_sha256_gives_hashlibs_digests() -> None:
    """Group keys are stored: the hash under them must not change with the module that computes it."""
    for data in (
        b"",
        b"scan\x00trace\x00KeyError\x00shop.py:checkout_total",
        "ünï\x00".encode(),
        b"x" * 100_000,
    ):
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
