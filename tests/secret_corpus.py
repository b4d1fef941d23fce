"""Synthetic, format-valid secrets of every kind gitleaks' and detect-secrets' rule sets know, built at test
time from a prefix and random characters (so no scanner or push protection trips on the repository), and
the contexts they are seeded in.

`SecretSample.secret` is the part that must never leave; `SecretSample.text` is how it is written
(with its key name for the kinds that need one to be recognised).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

_RNG = random.Random(20261203)
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"


def _rand(alphabet: str, n: int) -> str:
    """Random text of `alphabet` holding at least one digit, one upper and one lower letter when it can."""
    while True:
        text = "".join(_RNG.choice(alphabet) for _ in range(n))
        wanted = [str.isdigit, str.isupper, str.islower]
        if all(any(test(c) for c in text) for test in wanted if any(test(c) for c in alphabet)):
            return text


def _luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(_RNG.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        digits = [int(c) for c in body + check]
        total = sum(
            d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(reversed(digits))
        )
        if total % 10 == 0:
            return body + check
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class SecretSample:
    kind: str
    secret: str  # must never leave, nor any 8+ character piece of it
    text: str  # how it appears in a line (the secret with what makes it recognisable)
    prefix_free: bool = True  # False: it is recognised only with its key name, so it is not seeded bare


def _samples() -> list[SecretSample]:
    s: list[SecretSample] = []

    def add(kind: str, secret: str, text: str | None = None, *, bare: bool = True) -> None:
        s.append(SecretSample(kind, secret, text if text is not None else secret, bare))

    pypi_body = "AgEIcHlwaS5vcmc" + _rand(ALNUM + "-_", 60)
    add("aws_access_key", "AKIA" + _rand(string.ascii_uppercase + string.digits, 16))
    add("aws_secret_key", _rand(B64, 40))
    add("github_pat", "ghp_" + _rand(ALNUM, 36))
    add("github_oauth", "gho_" + _rand(ALNUM, 36))
    add("github_fine_grained", "github_pat_" + _rand(ALNUM + "_", 82))
    add("gitlab_pat", "glpat-" + _rand(ALNUM + "-_", 20))
    add("gitlab_runner", "glrt-" + _rand(ALNUM + "-_", 20))
    add("slack_bot", "xoxb-" + _rand(string.digits, 12) + "-" + _rand(ALNUM, 24))
    add("slack_app", "xapp-1-" + _rand(ALNUM, 30))
    path = "T" + _rand(ALNUM, 10) + "/B" + _rand(ALNUM, 10) + "/" + _rand(ALNUM, 24)
    add("slack_webhook", path, "https://hooks.slack.com/services/" + path, bare=False)
    path = _rand(string.digits, 18) + "/" + _rand(ALNUM + "_-", 60)
    add("discord_webhook", path, "https://discord.com/api/webhooks/" + path, bare=False)
    add("discord_bot", "M" + _rand(ALNUM, 25) + "." + _rand(ALNUM, 6) + "." + _rand(ALNUM + "_-", 38))
    add("stripe_live", "sk_live_" + _rand(ALNUM, 24))
    add("stripe_restricted", "rk_test_" + _rand(ALNUM, 24))
    add("stripe_webhook", "whsec_" + _rand(ALNUM, 32))
    add("google_api_key", "AIza" + _rand(ALNUM + "_-", 35))
    add("gcp_client_secret", "GOCSPX-" + _rand(ALNUM + "_-", 28))
    add("google_oauth", "ya29." + _rand(ALNUM + "_-", 60))
    add("npm", "npm_" + _rand(ALNUM, 36))
    add("pypi", "pypi-" + pypi_body)
    add("sendgrid", "SG." + _rand(ALNUM + "_-", 22) + "." + _rand(ALNUM + "_-", 43))
    add("twilio_account", "AC" + _rand(HEX, 32))
    add("twilio_api_key", "SK" + _rand(HEX, 32))
    add("mailgun_private", "key-" + _rand(HEX, 32))
    add("mailgun_signing", _rand(HEX, 32) + "-" + _rand(HEX, 8) + "-" + _rand(HEX, 8))
    add("mailchimp", _rand(HEX, 32) + "-us" + str(_RNG.randint(1, 20)))
    add("telegram_bot", str(_RNG.randint(10**8, 10**9)) + ":AA" + _rand(ALNUM + "_-", 33))
    add("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOi" + _rand(ALNUM, 20) + "." + _rand(ALNUM + "_-", 43))
    add("anthropic", "sk-ant-api03-" + _rand(ALNUM + "_-", 40))
    add("openai_project", "sk-proj-" + _rand(ALNUM + "_-", 48))
    add("openai_legacy", "sk-" + _rand(ALNUM, 48))
    add("shopify", "shpat_" + _rand(HEX, 32))
    add("square", "sq0atp-" + _rand(ALNUM + "_-", 22))
    add("digitalocean", "dop_v1_" + _rand(HEX, 64))
    add("vault", "hvs." + _rand(ALNUM + "_-", 90))
    add("doppler", "dp.pt." + _rand(ALNUM, 43))
    add("databricks", "dapi" + _rand(HEX, 32))
    add("huggingface", "hf_" + _rand(ALNUM, 34))
    add("age", "AGE-SECRET-KEY-1" + _rand("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58))
    add("atlassian", "ATATT3" + _rand(ALNUM + "_-=", 186))
    add("postman", "PMAK-" + _rand(HEX, 24) + "-" + _rand(HEX, 34))
    add("grafana", "glsa_" + _rand(ALNUM, 32) + "_" + _rand(HEX, 8))
    add("newrelic", "NRAK-" + _rand(string.ascii_uppercase + string.digits, 27))
    add("artifactory", "AKCp" + _rand(ALNUM, 69))
    add("facebook", "EAAC" + _rand(ALNUM, 100))
    add("heroku", "HRKU-" + _rand(ALNUM + "_-", 60))
    add("card_visa", _luhn_complete("4", 16))
    add("card_mastercard", _luhn_complete("5" + str(_RNG.randint(1, 5)), 16))
    add("card_amex", _luhn_complete("37", 15))
    add("hex_token", _rand(HEX, 40))
    add("base64_token", _rand(B64, 44) + "=")
    azure = _rand(B64, 86) + "=="
    add("azure_account_key", azure, f"AccountKey={azure}", bare=False)
    value = _rand(ALNUM + "_-", 44)
    add("ibm_cloud_iam", value, f"ibm_cloud_iam_key: {value}", bare=False)
    value = _rand(HEX, 64)
    add("cloudant_password", value, f"cloudant_password={value}", bare=False)
    for name in ("password", "pw", "pwd", "pass", "key", "tok", "secret", "token", "api_key", "auth"):
        value = _rand(ALNUM + "!%*", 14)
        add(f"named_{name}", value, f"{name}={value}", bare=False)
    value = _rand(ALNUM, 12) + "!9"
    add("password_prose", value, f"password {value}", bare=False)
    value = _rand(ALNUM, 12) + "7"
    add("password_colon", value, f"password: {value}", bare=False)
    value = _rand(ALNUM, 14)
    add("url_userinfo", value, f"https://deploy:{value}@git.example.com/repo.git", bare=False)
    value = _rand(ALNUM, 16)
    add("basic_auth_header", value, f"Authorization: Basic {value}", bare=False)
    value = _rand(ALNUM, 30)
    add("bearer", value, f"Bearer {value}", bare=False)
    return s


SAMPLES: tuple[SecretSample, ...] = tuple(_samples())


# context name → how a sample is written in it
CONTEXTS: dict[str, Callable[[SecretSample], str]] = {
    "log_line": lambda x: (
        f"2026-12-03 11:00:00,123 ERROR app[42]: upstream call failed with {x.text} (retrying)"
    ),
    "quoted": lambda x: f"config value '{x.text}' rejected",
    "key_value": lambda x: (
        f"connect failed: credential_value={x.secret} host=db"
        if x.prefix_free
        else f"connect failed: {x.text} host=db"
    ),
    "json": lambda x: '{"level": "error", "secret_value": "' + x.secret + '", "msg": "denied"}',
    "url_userinfo": lambda x: f"GET https://user:{x.secret}@api.example.com/v1 failed",
    "env_file": lambda x: f"SERVICE_TOKEN={x.secret}",
    "yaml": lambda x: f"  client_secret: {x.secret}",
    "code_string": lambda x: f'    API_CREDENTIAL = "{x.secret}"',
    "commit_subject": lambda x: f"Fix login; use {x.text} for now",
}


def bare_contexts() -> dict[str, Callable[[SecretSample], str]]:
    """Contexts where the value stands on its own, without a key name: only for prefix-free kinds."""
    return {
        "log_line": CONTEXTS["log_line"],
        "quoted": CONTEXTS["quoted"],
        "commit_subject": CONTEXTS["commit_subject"],
    }


def pieces(secret: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of a secret: none may appear in an output (a partial leak)."""
    return [secret[i : i + size] for i in range(max(1, len(secret) - size + 1))]


def leaks(text: str, samples: tuple[SecretSample, ...] = SAMPLES) -> dict[str, str]:
    """kind → the first piece of its secret found in `text`."""
    found = {}
    for sample in samples:
        for piece in pieces(sample.secret):
            if piece in text:
                found[sample.kind] = piece
                break
    return found
