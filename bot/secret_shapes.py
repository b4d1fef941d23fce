"""Secrets recognisable by their shape alone: vendor prefixes, fixed layouts, card numbers.

The families follow gitleaks' default rule set (config/gitleaks.toml) and detect-secrets' plugins; a
vendor whose tokens have no fixed shape is caught by the key-name and high-entropy rules in bot.redact.
"""

from __future__ import annotations

import re

# prefix → kind. A token is the prefix followed by at least 16 token characters.
PREFIXES: dict[str, str] = {
    "sk-ant-": "anthropic_key",
    "sk-proj-": "openai_key",
    "sk-svcacct-": "openai_key",
    "sk-admin-": "openai_key",
    "ghp_": "github_token",
    "gho_": "github_token",
    "ghu_": "github_token",
    "ghs_": "github_token",
    "ghr_": "github_token",
    "github_pat_": "github_token",
    "glpat-": "gitlab_token",
    "gldt-": "gitlab_token",
    "glrt-": "gitlab_token",
    "glptt-": "gitlab_token",
    "glcbt-": "gitlab_token",
    "glsoat-": "gitlab_token",
    "glft-": "gitlab_token",
    "glimt-": "gitlab_token",
    "glagent-": "gitlab_token",
    "gloas-": "gitlab_token",
    "xoxb-": "slack_token",
    "xoxa-": "slack_token",
    "xoxp-": "slack_token",
    "xoxo-": "slack_token",
    "xoxs-": "slack_token",
    "xoxr-": "slack_token",
    "xoxe-": "slack_token",
    "xapp-": "slack_token",
    "sk_live_": "stripe_key",
    "sk_test_": "stripe_key",
    "rk_live_": "stripe_key",
    "rk_test_": "stripe_key",
    "whsec_": "stripe_key",
    "pypi-AgEIcHlwaS5vcmc": "pypi_token",
    "SG.": "sendgrid_key",
    "GOCSPX-": "gcp_client_secret",
    "shpat_": "shopify_token",
    "shpca_": "shopify_token",
    "shppa_": "shopify_token",
    "shpss_": "shopify_token",
    "sq0atp-": "square_token",
    "sq0csp-": "square_token",
    "EAAA": "square_token",
    "dop_v1_": "digitalocean_token",
    "doo_v1_": "digitalocean_token",
    "dor_v1_": "digitalocean_token",
    "hvs.": "vault_token",
    "hvb.": "vault_token",
    "dp.pt.": "doppler_token",
    "HRKU-": "heroku_key",
    "AGE-SECRET-KEY-1": "age_secret_key",
    "ATATT3": "atlassian_token",
    "lin_api_": "linear_key",
    "PMAK-": "postman_key",
    "pul-": "pulumi_token",
    "glc_": "grafana_token",
    "glsa_": "grafana_token",
    "sntrys_": "sentry_token",
    "sntryu_": "sentry_token",
    "pscale_tkn_": "planetscale_token",
    "pscale_pw_": "planetscale_token",
    "fo1_": "flyio_token",
    "NRAK-": "newrelic_key",
    "dt0c01.": "dynatrace_token",
    "rubygems_": "rubygems_key",
    "CLOJARS_": "clojars_token",
    "AKCp": "artifactory_key",
    "EAAC": "facebook_token",
    "EAAB": "facebook_token",
    "ya29.": "google_oauth_token",
    "AIza": "google_api_key",
    "sk-": "api_key",
}

_BY_LENGTH = sorted(PREFIXES, key=len, reverse=True)
PREFIXED = re.compile(
    r"(?<![\w.-])(?:" + "|".join(re.escape(p) for p in _BY_LENGTH) + r")[A-Za-z0-9_.=+/-]{16,}"
)


def prefixed_kind(token: str) -> str:
    return next(PREFIXES[p] for p in _BY_LENGTH if token.startswith(p))


# Fixed layouts without a telling prefix, or a prefix too short to stand alone.
LAYOUTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aws_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[0-9A-Z]{16}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
    ("telegram_token", re.compile(r"(?:(?<=bot)|(?<![\w:]))\d{8,10}:[A-Za-z0-9_-]{35}(?![\w-])")),
    ("twilio_key", re.compile(r"\b(?:AC|SK)[0-9a-fA-F]{32}\b")),
    ("mailchimp_key", re.compile(r"\b[0-9a-f]{32}-us\d{1,2}\b")),
    ("mailgun_key", re.compile(r"\b[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8}\b|\bkey-[0-9a-zA-Z]{32}\b")),
    ("databricks_token", re.compile(r"\bdapi[a-f0-9]{32}(?:-\d)?\b")),
    ("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{34}\b")),
    ("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("discord_token", re.compile(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}")),
    (
        "webhook_url",
        re.compile(
            r"\bhttps://(?:hooks\.slack\.com/(?:services|workflows|triggers)|(?:discord|discordapp)\.com/api/webhooks"
            r"|[\w-]+\.webhook\.office\.com/webhookb2)/[A-Za-z0-9/@_-]+"
        ),
    ),
)

# 13 to 19 digits, grouped by single spaces or dashes in any way or not at all, starting like a card
# issuer's number (Visa, Mastercard, Amex, Discover, JCB).
CARD = re.compile(r"(?<![\w.-])(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5)|35)(?:[ -]?\d){11,17}(?![\w.-])")


def luhn_valid(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0
