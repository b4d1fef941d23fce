"""The values of healbot's own secret-named variables, which the server (running in claude's scrubbed
environment) cannot know, passed to it only as salted SHA-256 digests: an answer's text is searched for
any piece whose digest matches, and that piece becomes `[REDACTED:env:NAME]`, as bot.redact does for
the bot itself. The values never reach the scope file in the clear."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from bot.redact import MARK, secret_env_names

Digest = tuple[int, str, str]  # (length, hex digest, variable name)


def digests(environ: Mapping[str, str], salt: str) -> tuple[Digest, ...]:
    found: set[Digest] = set()
    for name in secret_env_names(environ):
        value = environ[name]
        for form in {value, quote(value, safe=""), json.dumps(value)[1:-1]}:
            found.add((len(form), _digest(salt, form), name))
    return tuple(sorted(found, reverse=True))  # longest first: a value containing another goes first


def new_salt() -> str:
    return secrets.token_hex(16)


def _digest(salt: str, text: str) -> str:
    return hashlib.sha256((salt + text).encode("utf-8")).hexdigest()


def scrub(text: str, salt: str, known: Sequence[Digest]) -> str:
    """`text` with every piece whose salted digest is known replaced by its placeholder."""
    by_length: dict[int, dict[str, str]] = {}
    for length, digest, name in known:
        by_length.setdefault(length, {})[digest] = name
    for length in sorted(by_length, reverse=True):
        table = by_length[length]
        out: list[str] = []
        i = 0
        while i <= len(text) - length:
            found = table.get(_digest(salt, text[i : i + length]))
            if found is None:
                out.append(text[i])
                i += 1
            else:
                out.append(f"{MARK}env:{found}]")
                i += length
        out.append(text[i:])
        text = "".join(out)
    return text
