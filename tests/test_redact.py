from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from bot.redact import Redaction, redact, redact_env_values, scrubber

TELEGRAM = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4Kq\nZ2hvc3RzZWNyZXQ=\n-----END RSA PRIVATE KEY-----"
)

# (text, the secret that must disappear, the placeholder expected)
CASES = [
    ("login password=hunter2secret ok", "hunter2secret", "password=[REDACTED:password] ok"),
    ("db_password: 'p@ss w0rd!'", "p@ss w0rd!", "db_password: '[REDACTED:password]'"),
    (
        '{"password": "s3cr\\"et-value", "user": "bob"}',
        's3cr\\"et-value',
        '"password": "[REDACTED:password]"',
    ),
    ("token: abc123xyz789", "abc123xyz789", "token: [REDACTED:token]"),
    ("client_secret=Zx9LmQ2vR8", "Zx9LmQ2vR8", "client_secret=[REDACTED:secret]"),
    ("api_key=AIzaSyDdI0hCZtE6vySjMm", "AIzaSyDdI0hCZtE6vySjMm", "api_key=[REDACTED:"),
    ("X-Api-Key: 7fk2m9q1z", "7fk2m9q1z", "X-Api-Key: [REDACTED:api_key]"),
    (
        "Authorization: Bearer abcDEF123456.xyz",
        "abcDEF123456.xyz",
        "Authorization: Bearer [REDACTED:authorization]",
    ),
    ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "[REDACTED:authorization]"),
    ("curl -H 'bearer qwertyuiop12345'", "qwertyuiop12345", "bearer [REDACTED:bearer]"),
    ("postgres://app:Sup3rS3cret@db:5432/x", "Sup3rS3cret", "postgres://app:[REDACTED:url_password]@db"),
    ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "key [REDACTED:aws_key] used"),
    (f"cookie-less {JWT} seen", JWT, "[REDACTED:jwt]"),
    (f"GET https://api.telegram.org/bot{TELEGRAM}/getMe", TELEGRAM, "/bot[REDACTED:telegram_token]/getMe"),
    (f"token {TELEGRAM} leaked", TELEGRAM, "[REDACTED:telegram_token]"),
    (
        "using sk-ant-api03-AbCdEfGhIjKlMnOp_123 now",
        "sk-ant-api03-AbCdEfGhIjKlMnOp_123",
        "[REDACTED:anthropic_key]",
    ),
    ("using sk-proj-AbCdEfGhIjKlMnOp1234 now", "sk-proj-AbCdEfGhIjKlMnOp1234", "[REDACTED:openai_key]"),
    (
        "push with ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "[REDACTED:github_token]",
    ),
    (f"loaded\n{PRIVATE_KEY}\ndone", "MIIEowIBAAKCAQEAx4Kq", "loaded\n[REDACTED:private_key]\n"),
    (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B (log truncated",
        "MIIEvQIBADANBgkqhkiG9w0B",
        "[REDACTED:private_key]",
    ),
    (
        "blob=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg==",
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg==",
        "[REDACTED:high_entropy]",
    ),
    (
        "sig: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
        "sig: [REDACTED:",
    ),
]


@pytest.mark.parametrize(("text", "secret", "placeholder"), CASES, ids=[c[2][:40] for c in CASES])
def test_each_rule_removes_its_secret(text: str, secret: str, placeholder: str) -> None:
    result = redact(text)
    assert secret not in result.text
    # no sizeable piece of it either
    for start in range(max(1, len(secret) - 7)):
        piece = secret[start : start + 8]
        assert len(piece) < 8 or piece not in result.text, piece
    assert placeholder in result.text
    assert result.count >= 1


@pytest.mark.parametrize(("text", "secret", "placeholder"), CASES, ids=[c[2][:40] for c in CASES])
def test_redact_is_idempotent(text: str, secret: str, placeholder: str) -> None:
    once = redact(text)
    twice = redact(once.text)
    assert twice == Redaction(text=once.text, count=0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23 07:21:41,042 ERROR svc[15407]: request /error failed",
        "commit=0123456789abcdef0123456789abcdef01234567 deployed",
        "request_id=3f2a9c1b7e6d4f5a8b9c0d1e2f3a4b5c",
        "Invalid password for user bob",
        "KeyError: 'missing_key'",
        "https://example.com/path?page=2",
        "short=abc",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == Redaction(text=text, count=0)


def test_count_is_the_number_of_secrets() -> None:
    result = redact("password=a1 token=b2 https://u:p@h/ AKIAIOSFODNN7EXAMPLE")
    assert result.count == 4


def test_env_values_of_secret_names_are_removed_in_every_form() -> None:
    environ = {
        "HEALBOT_TELEGRAM_TOKEN": "plain-token-value-1",
        "DB_PASSWORD": 'p@ss/"word" 2',
        "SERVICE_API_KEY": "keykeykey",
        "STRIPE_SECRET": "whsec_abcdefgh",
        "SHORT_TOKEN": "1234567",  # too short to redact safely
        "HOME": "/home/healbot-user",  # not a secret name
        "PWD": "/srv/app/current",  # not a secret name either
    }
    text = "\n".join(
        [
            "env plain-token-value-1 leaked",
            f"url-encoded {quote(environ['DB_PASSWORD'], safe='')} and json {json.dumps(environ['DB_PASSWORD'])}",
            "x keykeykey y whsec_abcdefgh z",
            "short 1234567 home /home/healbot-user cwd /srv/app/current",
        ]
    )
    result = redact_env_values(text, environ)
    for name in ("HEALBOT_TELEGRAM_TOKEN", "DB_PASSWORD", "SERVICE_API_KEY", "STRIPE_SECRET"):
        value = environ[name]
        assert value not in result.text
        assert quote(value, safe="") not in result.text
        assert json.dumps(value)[1:-1] not in result.text
        assert f"[REDACTED:env:{name}]" in result.text
    assert "short 1234567 home /home/healbot-user cwd /srv/app/current" in result.text
    assert result.count == 5
    assert redact_env_values(result.text, environ).count == 0


def test_env_redaction_also_applies_the_patterns() -> None:
    result = redact_env_values("password=abc123", {})
    assert result == Redaction(text="password=[REDACTED:password]", count=1)


def test_scrubber_names_the_variable_of_a_known_value_and_still_applies_the_rules() -> None:
    """Regression: the scrubber ran the rules, then the variables, then the rules again. The first pass hid
    a known value under a rule's label, and every text paid for two passes."""
    scrub = scrubber({"DB_PASSWORD": "s3cr3t-Value-99", "HOME": "/home/u"})
    assert (
        scrub("login password=s3cr3t-Value-99 failed") == "login password=[REDACTED:env:DB_PASSWORD] failed"
    )
    assert (
        scrub("dsn postgres://app:s3cr3t-Value-99@db/app")
        == "dsn postgres://app:[REDACTED:env:DB_PASSWORD]@db/app"
    )
    assert scrub("other password=hunter2 at /home/u") == "other password=[REDACTED:password] at /home/u"
