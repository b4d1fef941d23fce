"""Fills a wheelhouse for the offline install tests: healbot's runtime dependencies, pinned to the versions
in this project's venv, plus the pip and setuptools that `pipx install .` needs without an index.

Usage: python tests/tools/fill_wheelhouse.py DIR  (run by `make tools`, which may reach the package index)
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

PIP = "pip==26.1"  # pipx 1.18.4 upgrades its shared venv to pip >= 26.1 before any install
BUILD = "setuptools==84.2.1"  # the build backend `pip install .` fetches for its isolated build


def main(target: Path) -> int:
    root = Path(__file__).resolve().parents[2]
    runtime = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    target.mkdir(parents=True, exist_ok=True)
    constraints = target / "constraints.txt"
    constraints.write_text(frozen)
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "-c", str(constraints), "-d", str(target), PIP, BUILD, *runtime]
    return subprocess.run(argv, check=False, timeout=600).returncode


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
