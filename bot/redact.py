"""Secret scrubbing: the one step every text that leaves the process passes (prompts, Telegram, console,
logs, the audit export).

Rules, applied in order, each one compiled regex: private key blocks (and a key body whose BEGIN line was
cut off: its END line alone, its long base64 lines), Authorization headers and bearer tokens, passwords in
URLs, tokens recognisable by shape (bot.secret_shapes: vendor prefixes after gitleaks' and detect-secrets'
rule sets, AWS ids, JWTs, Telegram, Twilio, Mailgun, Discord, webhooks, card numbers with a valid Luhn
digit), values of secret-looking keys (`password=…`, `"token": "…"`, `pw: …`, `AccountKey=…`, also inside a
quoted value such as a connection string), `password <value>` in prose, high-entropy values in any
key-value position and long bare ones (hex of 32+ digits unless a commit/sha/hash/digest/id word names
it). A secret becomes `[REDACTED:<kind>]`; the placeholder is never matched again, so `redact` is
idempotent.

A text with none of the rules' trigger words or shapes (`may_hold_secret`) is returned untouched after a
few cheap checks, which keeps ordinary log text cheap (bench: `python -m tests.bench --only scan`).

Why not detect-secrets (PyPI): measured on 10 k ordinary log lines it took 2.2 ms per line (these rules:
0.14 ms before the trigger pre-check), it reports findings rather than spans to replace, and it flagged
ordinary lines (public IPs, keyword heuristics). Its plugin list and gitleaks' rule ids were used as the
checklist for the rules and the test corpus (tests/secret_corpus.py) instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

from bot.secret_shapes import CARD, LAYOUTS, PREFIXED, luhn_valid, prefixed_kind

MARK = "[REDACTED:"
MIN_ENV_SECRET_LEN = 8


@dataclass(frozen=True, slots=True)
class Redaction:
    text: str
    count: int  # secrets replaced


def _placeholder(kind: str) -> str:
    return f"{MARK}{kind}]"


Replacer = Callable[[re.Match[str]], "str | None"]

# Names that hold a secret wherever they occur in a key (`db_password`, `X-Api-Key`), and short names
# that do only as the whole key or its last part (`pw`, `smtp.pass`, `AccountKey`, `api-tok`).
_LONG_NAMES = (
    r"passwd|password|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|credentials?|auth|session[_-]?id|cookie|signature"
)
_SHORT_NAMES = r"pwd|pw|pass|key|tok|sig|pin"
_SENSITIVE_NAME_PATTERN = (
    r"(?:[\w.-]{0,64}?(?:" + _LONG_NAMES + r")(?:[_-]?(?:key|value|id))?"
    r"|(?:[\w.-]{0,64}?(?:[_.-]|(?-i:(?<=[a-z])(?=[A-Z]))))?(?:" + _SHORT_NAMES + r"))"
)
_VALUE = r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|(?!\[REDACTED:)[^\s,;&\"'<>{}()\[\]]+)"
_SAFE_KEYS = re.compile(
    r"(?i)commit|sha\d*$|hash|digest|checksum|etag|uuid|trace_?id|span_?id|request_?id|fingerprint|revision"
)
_SAFE_WORD_BEFORE = re.compile(
    r"(?i)(?:commit|sha\d*|hash|digest|checksum|etag|revision|rev|head|tree|object|trace|span|request|fingerprint)"
    r"(?:[ _-]?id)?[\s:=#\"'(]{1,4}$"
)


def _kind_of_key(key: str) -> str:
    lowered = key.lower()
    for kind, words in (
        ("password", ("passw", "pwd", "passphrase", "pass", "pw")),
        ("api_key", ("api_key", "api-key", "apikey")),
        ("private_key", ("private",)),
        ("secret", ("secret",)),
        ("token", ("token", "tok")),
        ("cookie", ("cookie", "session")),
    ):
        if any(word in lowered for word in words):
            return kind
    return "credential"


def _quote_of(value: str) -> str:
    return value[0] if value[:1] in "\"'" and len(value) >= 2 and value[-1] == value[0] else ""


def _key_value(match: re.Match[str]) -> str | None:
    value = match.group("value")
    quote_char = _quote_of(value)
    inner = value[1:-1] if quote_char else value
    if not inner or inner.startswith(MARK):
        return None
    kind = _kind_of_key(match.group("key"))
    return f"{match.group('prefix')}{quote_char}{_placeholder(kind)}{quote_char}"


def _entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _mixed_token(text: str, min_len: int, min_entropy: float) -> bool:
    return (
        len(text) >= min_len
        and any(c.isdigit() for c in text)
        and any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and _entropy(text) >= min_entropy
    )


_TOKEN_CHARS = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")


def _high_entropy(match: re.Match[str]) -> str | None:
    key = match.group("key")
    value = match.group("value")
    quote_char = _quote_of(value)
    inner = value[1:-1] if quote_char else value
    if inner.startswith(MARK):
        return None
    secret = not _SAFE_KEYS.search(key) and (
        _HEX.fullmatch(inner) is not None
        or (_TOKEN_CHARS.fullmatch(inner) is not None and _mixed_token(inner, 24, 3.5))
    )
    if secret:
        return f"{match.group('prefix')}{quote_char}{_placeholder('high_entropy')}{quote_char}"
    if quote_char and len(inner) > 8:
        # a quoted value is not one token: a connection string holds `AccountKey=…` or `Password=…`
        return f"{match.group('prefix')}{quote_char}{_apply(inner)[0]}{quote_char}"
    return None


def _fixed(kind: str, keep: str = "") -> Replacer:
    """Replace the whole match (or all but the named group `keep`) by a placeholder."""

    def replace(match: re.Match[str]) -> str | None:
        prefix = match.group(keep) if keep else ""
        return f"{prefix}{_placeholder(kind)}"

    return replace


def _per_line(kind: str) -> Replacer:
    """A multi-line secret becomes one placeholder per line, so line numbers around it stay right."""

    def replace(match: re.Match[str]) -> str:
        return "\n".join(_placeholder(kind) for _ in match.group(0).split("\n"))

    return replace


def _prefixed(match: re.Match[str]) -> str:
    return _placeholder(prefixed_kind(match.group(0)))


def _card(match: re.Match[str]) -> str | None:
    return _placeholder("card_number") if luhn_valid(match.group(0)) else None


def _bare_blob(match: re.Match[str]) -> str | None:
    """A long run of base64 or hex standing alone: a key body line, an AWS secret key, a raw token."""
    token = match.group(0)
    if token.startswith(MARK):
        return None
    before = match.string[max(0, match.start() - 24) : match.start()]
    if _HEX.fullmatch(token):
        return None if _SAFE_WORD_BEFORE.search(before) else _placeholder("hex_token")
    if _mixed_token(token.rstrip("="), 32, 4.2) and "/" not in token[:1]:
        return _placeholder("high_entropy")
    return None


_PASSWORD_WORD = re.compile(
    r"(?i)(?P<prefix>\b(?:passw(?:or)?d|passphrase|pwd)(?:\s+(?:is|was|of|for\s+\S+\s+is))?\s+)"
    r"(?!\[REDACTED:)(?P<value>[^\s\"'<>]{6,})"
)


def _password_word(match: re.Match[str]) -> str | None:
    value = match.group("value").rstrip(".,;:!?)")
    if not any(not c.isalpha() for c in value):
        return None  # "password for user bob", "password expired": prose, not a value
    rest = match.group("value")[len(value) :]
    return f"{match.group('prefix')}{_placeholder('password')}{rest}"


_RULES: tuple[tuple[re.Pattern[str], Replacer], ...] = (
    (
        re.compile(
            r"-----BEGIN (?P<label>[A-Z0-9 ]*)PRIVATE KEY(?P<block>(?: BLOCK)?)-----.*?"
            r"(?:-----END (?P=label)PRIVATE KEY(?P=block)-----|\Z)",
            re.DOTALL,
        ),
        _per_line("private_key"),
    ),
    (  # the body lines right above a lone END line (a window that cut the BEGIN line off)
        re.compile(
            r"(?m)(?:^[ \t]*[A-Za-z0-9+/=]{4,}[ \t]*\n)*[ \t]*-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        ),
        _per_line("private_key"),
    ),
    (
        re.compile(
            r"(?i)(?P<prefix>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?+)"
            r"(?!\[REDACTED:)[^\s\"',;]+"
        ),
        _fixed("authorization", keep="prefix"),
    ),
    (
        re.compile(
            r"(?P<prefix>\b(?i:bearer|token)\s+)(?!\[REDACTED:)(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{12,}"
        ),
        _fixed("bearer", "prefix"),
    ),
    (
        re.compile(
            r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@\"'<>]*:)(?!\[REDACTED:)[^\s/@\"'<>]+(?=@)"
        ),
        _fixed("url_password", keep="prefix"),
    ),
    (PREFIXED, _prefixed),
    *((pattern, _fixed(kind)) for kind, pattern in LAYOUTS),
    (CARD, _card),
    (
        re.compile(
            r"(?i)(?P<prefix>(?P<q>[\"']?)(?<![\w.-])(?P<key>"
            + _SENSITIVE_NAME_PATTERN
            + r")(?P=q)\s*[:=]\s*)"
            + _VALUE
        ),
        _key_value,
    ),
    (_PASSWORD_WORD, _password_word),
    (
        re.compile(r"(?P<prefix>(?P<q>[\"']?)(?<![\w.-])(?P<key>[\w.-]{1,128})(?P=q)\s*[:=]\s*)" + _VALUE),
        _high_entropy,
    ),
    (re.compile(r"(?<![A-Za-z0-9+/=_.])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_.-])"), _bare_blob),
)

# Every rule above needs one of these to match; a text without any is left as it is after a few cheap
# checks (substring tests on the lower-cased text, then two anchored searches).
_TRIGGER_WORDS = (
    "-----", "pass", "pw", "key", "tok", "secret", "auth", "bearer", "cookie", "sess", "cred", "sig", "pin",
    "://",
)  # fmt: skip
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9_.=+/-])[A-Za-z0-9_.=+/-]{16}")
_CARD_LIKE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12}")


def may_hold_secret(text: str) -> bool:
    lowered = text.lower()
    return (
        any(word in lowered for word in _TRIGGER_WORDS)
        or _LONG_RUN.search(text) is not None
        or _CARD_LIKE.search(text) is not None
    )


def _apply(text: str) -> tuple[str, int]:
    if not may_hold_secret(text):
        return text, 0
    count = 0
    for pattern, replacement in _RULES:

        def apply(match: re.Match[str], replacement: Replacer = replacement) -> str:
            nonlocal count
            new = replacement(match)
            if new is None or new == match.group(0):
                return match.group(0)
            count += 1
            return new

        text = pattern.sub(apply, text)
    return text, count


def redact(text: str) -> Redaction:
    """Replace every secret found in `text` by a `[REDACTED:<kind>]` placeholder."""
    redacted, count = _apply(text)
    return Redaction(text=redacted, count=count)


def redacted(text: str) -> str:
    """`redact(text).text`: for callers that need only the safe text."""
    return _apply(text)[0]


_SECRET_ENV_NAME = re.compile(r"(?i)(?:TOKEN|KEY|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?|AUTH)(?:_|$)")


def secret_env_names(environ: Mapping[str, str]) -> list[str]:
    """Names of variables whose values must never leave the process (…TOKEN, …KEY, …SECRET, …PASSWORD)."""
    return sorted(
        name
        for name, value in environ.items()
        if _SECRET_ENV_NAME.search(name) and len(value) >= MIN_ENV_SECRET_LEN
    )


def env_secret_forms(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(form, name) for the value of every secret-named variable as written plain, URL- and JSON-escaped,
    the longest first (a value containing another goes first): computed once for a fixed environment."""
    import json  # here: `healbot scan` redacts without it

    variants: list[tuple[str, str]] = []
    for name in secret_env_names(environ):
        value = environ[name]
        for form in {value, quote(value, safe=""), json.dumps(value)[1:-1]}:
            variants.append((form, name))
    variants.sort(key=lambda item: len(item[0]), reverse=True)
    return tuple(variants)


def redact_env_forms(text: str, forms: Iterable[tuple[str, str]]) -> Redaction:
    """`redact`, after removing the values `env_secret_forms` gave."""
    count = 0
    for form, name in forms:
        occurrences = text.count(form)
        if occurrences:
            text = text.replace(form, _placeholder(f"env:{name}"))
            count += occurrences
    rest = redact(text)
    return Redaction(text=rest.text, count=count + rest.count)


def redact_env_values(text: str, environ: Mapping[str, str]) -> Redaction:
    """`redact`, after removing the values of secret-named environment variables (also URL/JSON-escaped)."""
    return redact_env_forms(text, env_secret_forms(environ))


def scrubber(environ: Mapping[str, str]) -> Callable[[str], str]:
    """The values of `environ`'s secret-named variables out, then `redact`, in one pass of the rules: what
    leaves the process through the chat, the journal and the CLI. A known value is replaced first, so its
    placeholder names the variable. The variables are read once, at the first text (not at start-up: a
    `healbot scan` that logs nothing never needs them)."""
    env = dict(environ)
    forms: tuple[tuple[str, str], ...] | None = None

    def scrub(text: str) -> str:
        nonlocal forms
        if forms is None:
            forms = env_secret_forms(env)
        return redact_env_forms(text, forms).text

    return scrub


class RedactingWriter:
    """A text stream that redacts what it is given, then writes it to `stream` (the CLI's stdout, stderr)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redacted(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
