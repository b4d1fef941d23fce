"""SHA-256 hex digests for group keys, from CPython's built-in SHA-256 when there is one.

`hashlib` loads OpenSSL's libcrypto first (a few milliseconds of every `healbot scan`); the built-in module
gives the same digests (tests/test_scan_imports.py compares them), so the stored keys do not change.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _sha256() -> Callable[[bytes], Any]:
    for name in ("_sha256", "_sha2"):  # CPython 3.11; 3.12 and later
        try:
            constructor: Callable[[bytes], Any] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        return constructor
    import hashlib

    return hashlib.sha256


_SHA256 = _sha256()


def sha256_hex(data: bytes) -> str:
    return str(_SHA256(data).hexdigest())
