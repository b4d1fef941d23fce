"""Every kind of the corpus (tests/secret_corpus.py) in every context is redacted, with no 8-character
piece of it left; ordinary log text stays as it was."""

from __future__ import annotations

import pytest

from bot.grouping import fingerprint
from bot.models import LogRecord
from bot.redact import redact, redacted
from tests.secret_corpus import CONTEXTS, SAMPLES, SecretSample, bare_contexts, leaks

CASES = [
    pytest.param(sample, name, write, id=f"{sample.kind}-{name}")
    for sample in SAMPLES
    for name, write in CONTEXTS.items()
] + [
    pytest.param(sample, f"bare_{name}", write, id=f"{sample.kind}-bare_{name}")
    for sample in SAMPLES
    if sample.prefix_free
    for name, write in bare_contexts().items()
]


def test_the_corpus_covers_the_kinds_of_both_rule_sets() -> None:
    kinds = {sample.kind for sample in SAMPLES}
    assert len(kinds) == len(SAMPLES) >= 60
    assert len({sample.secret for sample in SAMPLES}) == len(SAMPLES)


@pytest.mark.parametrize(("sample", "context", "write"), CASES)
def test_every_kind_in_every_context_is_redacted(sample: SecretSample, context: str, write: object) -> None:
    assert callable(write)
    text = write(sample)
    result = redact(text)
    assert leaks(result.text, (sample,)) == {}, result.text
    assert result.count >= 1
    assert redact(result.text).count == 0  # idempotent


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.prefix_free], ids=lambda s: s.kind)
def test_title_is_redacted_before_masking(sample: SecretSample) -> None:
    """A title is built from the raw line, redacted, then masked: masking (`<num>`) no longer breaks a
    secret into pieces that no rule recognises."""
    line = f"2026-12-03 11:00:00,123 ERROR app[42]: upstream call failed with {sample.text}"
    fp = fingerprint(LogRecord(service="svc", source="s", text=line))
    assert leaks(fp.template, (sample,)) == {}, fp.template
    assert leaks(redacted(fp.template), (sample,)) == {}


def test_pem_body_without_begin_line_is_redacted() -> None:
    body = next(s.secret for s in SAMPLES if s.kind == "base64_token").rstrip("=")
    more = next(s.secret for s in SAMPLES if s.kind == "aws_secret_key")
    lines = [(body + more)[:64], (more + body)[:64], body[:20] + "==", "-----END RSA PRIVATE KEY-----"]
    window = "\n".join(f"    {line}" for line in lines)
    out = redacted(window)
    assert "-----END" not in out
    for line in lines[:3]:
        assert leaks(out, (SecretSample("pem", line, line),)) == {}, out


def test_azure_account_key_inside_quoted_connection_string_is_redacted() -> None:
    sample = next(s for s in SAMPLES if s.kind == "azure_account_key")
    for write in (
        lambda k: (
            f'conn = "DefaultEndpointsProtocol=https;AccountName=shop;AccountKey={k};EndpointSuffix=core.windows.net"'
        ),
        lambda k: f"storage='DefaultEndpointsProtocol=https;AccountName=shop;AccountKey={k}'",
        lambda k: f'{{"connection": "AccountName=shop;AccountKey={k};"}}',
    ):
        out = redacted(write(sample.secret))
        assert leaks(out, (sample,)) == {}, out
        assert "AccountName=shop" in out


ORDINARY = [
    "2026-11-23 07:21:41,042 ERROR svc[15407]: request /error failed",
    "Traceback (most recent call last):\n  File \"/srv/app/handlers/orders.py\", line 42, in total\n    return PRICES[name]\nKeyError: 'pear'",
    "commit 0123456789abcdef0123456789abcdef01234567 deployed",
    "commit=0123456789abcdef0123456789abcdef01234567 deployed",
    "reverted to sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "request_id=3f2a9c1b7e6d4f5a8b9c0d1e2f3a4b5c",
    "request 550e8400-e29b-41d4-a716-446655440000 took 12ms",
    "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
    "Invalid password for user bob",
    "password expired for alice; please reset",
    "KeyError: 'missing_key'",
    "monkey: banana",
    "https://example.com/path?page=2",
    "opened /var/lib/healbot/state/healbot.sqlite3 (wal)",
    "at com.example.shop.OrderService.total(OrderService.java:42)",
    "2026-12-03T11:00:00.123456+00:00 worker-3 pid=4242 rss=123456789 took 1732345678901 ms",
    "GET /api/v1/items/12345?page=2 HTTP/1.1 200 512 bytes",
    "short=abc",
    "",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_log_text_is_left_readable(text: str) -> None:
    assert redacted(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "card 3714 496353 98431 declined",  # amex grouping
        "card 4111-1111-1111-1111 declined",
        "card 4111111111111111 declined",
    ],
)
def test_card_numbers_in_any_grouping_are_redacted(text: str) -> None:
    out = redacted(text)
    assert "[REDACTED:card_number]" in out, out
    assert "declined" in out
