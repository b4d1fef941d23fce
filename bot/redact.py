"""Secret scrubbing for everything that leaves the process (prompts, Telegram, stored samples).

Each rule is one compiled regex applied once, in order: private key blocks, Authorization headers and
bearer tokens, passwords in URLs, tokens recognisable by shape (AWS, JWT, Telegram, Anthropic/OpenAI,
GitHub, GitLab, Slack, Stripe, Google, npm), values of secret-looking keys (`password=…`, `"token": "…"`, `api_key: …`), and long
high-entropy values in any key-value position. A secret becomes `[REDACTED:<kind>]`; the placeholder is
never matched again, so `redact` is idempotent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

MARK = "[REDACTED:"
MIN_ENV_SECRET_LEN = 8


@dataclass(frozen=True, slots=True)
class Redaction:
    text: str
    count: int  # secrets replaced


def _placeholder(kind: str) -> str:
    return f"{MARK}{kind}]"


_SENSITIVE_NAME_PATTERN = (
    r"[\w.-]{0,64}?(?:passwd|password|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|credentials?|auth|session[_-]?id|cookie)(?:[_-]?(?:key|value|id))?"
)
_VALUE = r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|(?!\[REDACTED:)[^\s,;&\"'<>{}()\[\]]+)"
_SAFE_KEYS = re.compile(r"(?i)commit|sha\d*$|hash|digest|checksum|etag|uuid|trace_?id|span_?id|request_?id")


def _kind_of_key(key: str) -> str:
    lowered = key.lower()
    for kind, words in (
        ("password", ("passw", "pwd", "passphrase")),
        ("api_key", ("api_key", "api-key", "apikey")),
        ("private_key", ("private",)),
        ("secret", ("secret",)),
        ("token", ("token",)),
        ("cookie", ("cookie", "session")),
    ):
        if any(word in lowered for word in words):
            return kind
    return "credential"


def _key_value(match: re.Match[str]) -> str | None:
    value = match.group("value")
    inner = value[1:-1] if value[:1] in "\"'" and len(value) >= 2 else value
    if not inner or inner.startswith(MARK):
        return None
    quote_char = value[0] if value[:1] in "\"'" else ""
    kind = _kind_of_key(match.group("key"))
    return f"{match.group('prefix')}{quote_char}{_placeholder(kind)}{quote_char}"


def _entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _high_entropy(match: re.Match[str]) -> str | None:
    key = match.group("key")
    value = match.group("value")
    inner = value[1:-1] if value[:1] in "\"'" else value
    if _SAFE_KEYS.search(key) or inner.startswith(MARK):
        return None
    is_hex = re.fullmatch(r"[0-9a-fA-F]{32,}", inner) is not None
    mixed = (
        len(inner) >= 24
        and re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", inner) is not None
        and any(c.isdigit() for c in inner)
        and any(c.isupper() for c in inner)
        and any(c.islower() for c in inner)
        and _entropy(inner) >= 3.5
    )
    if not (is_hex or mixed):
        return None
    quote_char = value[0] if value[:1] in "\"'" else ""
    return f"{match.group('prefix')}{quote_char}{_placeholder('high_entropy')}{quote_char}"


def _fixed(kind: str, keep: str = "") -> Callable[[re.Match[str]], str | None]:
    """Replace the whole match (or all but the named group `keep`) by a placeholder."""

    def replace(match: re.Match[str]) -> str | None:
        prefix = match.group(keep) if keep else ""
        return f"{prefix}{_placeholder(kind)}"

    return replace


_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]], ...] = (
    (
        re.compile(
            r"-----BEGIN (?P<label>[A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END (?P=label)PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        _fixed("private_key"),
    ),
    (
        re.compile(
            r"(?i)(?P<prefix>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?+)"
            r"(?!\[REDACTED:)[^\s\"',;]+"
        ),
        _fixed("authorization", keep="prefix"),
    ),
    (
        re.compile(r"(?P<prefix>\b[Bb]earer\s+)(?!\[REDACTED:)[A-Za-z0-9._~+/=-]{8,}"),
        _fixed("bearer", "prefix"),
    ),
    (
        re.compile(
            r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@\"'<>]*:)(?!\[REDACTED:)[^\s/@\"'<>]+(?=@)"
        ),
        _fixed("url_password", keep="prefix"),
    ),
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"), _fixed("aws_key")),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), _fixed("jwt")),
    (re.compile(r"(?:(?<=bot)|(?<![\w:]))\d{8,10}:[A-Za-z0-9_-]{35}(?![\w-])"), _fixed("telegram_token")),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_-]{10,}"), _fixed("anthropic_key")),
    (re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{16,}"), _fixed("api_key")),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), _fixed("github_token")),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), _fixed("slack_token")),
    (re.compile(r"\bhttps://hooks\.slack\.com/services/[A-Za-z0-9/]+"), _fixed("slack_webhook")),
    (re.compile(r"\bgl(?:pat|dt|rt|ptt|cbt)-[A-Za-z0-9_-]{20,}"), _fixed("gitlab_token")),
    (re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"), _fixed("stripe_key")),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), _fixed("google_api_key")),
    (re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), _fixed("npm_token")),
    (
        re.compile(
            r"(?i)(?P<prefix>(?P<q>[\"']?)(?<![\w.-])(?P<key>"
            + _SENSITIVE_NAME_PATTERN
            + r")(?P=q)\s*[:=]\s*)"
            + _VALUE
        ),
        _key_value,
    ),
    (
        re.compile(r"(?P<prefix>(?P<q>[\"']?)(?<![\w.-])(?P<key>[\w.-]{1,128})(?P=q)\s*[:=]\s*)" + _VALUE),
        _high_entropy,
    ),
)


def redact(text: str) -> Redaction:
    """Replace every secret found in `text` by a `[REDACTED:<kind>]` placeholder."""
    count = 0
    for pattern, replacement in _RULES:

        def apply(
            match: re.Match[str], replacement: Callable[[re.Match[str]], str | None] = replacement
        ) -> str:
            nonlocal count
            new = replacement(match)
            if new is None or new == match.group(0):
                return match.group(0)
            count += 1
            return new

        text = pattern.sub(apply, text)
    return Redaction(text=text, count=count)


_SECRET_ENV_NAME = re.compile(r"(?i)(?:TOKEN|KEY|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?|AUTH)(?:_|$)")


def secret_env_names(environ: Mapping[str, str]) -> list[str]:
    """Names of variables whose values must never leave the process (…TOKEN, …KEY, …SECRET, …PASSWORD)."""
    return sorted(
        name
        for name, value in environ.items()
        if _SECRET_ENV_NAME.search(name) and len(value) >= MIN_ENV_SECRET_LEN
    )


def redact_env_values(text: str, environ: Mapping[str, str]) -> Redaction:
    """`redact`, after removing the values of secret-named environment variables (also URL/JSON-escaped)."""
    variants: list[tuple[str, str]] = []
    for name in secret_env_names(environ):
        value = environ[name]
        for form in {value, quote(value, safe=""), json.dumps(value)[1:-1]}:
            variants.append((form, name))
    variants.sort(key=lambda item: len(item[0]), reverse=True)  # a value containing another goes first
    count = 0
    for form, name in variants:
        occurrences = text.count(form)
        if occurrences:
            text = text.replace(form, _placeholder(f"env:{name}"))
            count += occurrences
    rest = redact(text)
    return Redaction(text=rest.text, count=count + rest.count)
