"""The ``secret`` detector: credentials with a distinctive shape, anywhere in a text.

Token formats follow gitleaks' maintained rule set, ``config/gitleaks.toml`` at v8.30.0-27
(commit b58d3f10, July 2026): AWS, GitHub, GitLab, Slack (tokens and webhooks), Stripe,
OpenAI (``sk-proj-``/``sk-svcacct-``/``sk-admin-`` and the legacy form), Anthropic, npm,
SendGrid, Twilio, Shopify, Mailgun (widened to base-36: Mailgun's own documented example key is
not hex), Stripe webhook secrets (``whsec_``, not in gitleaks), Google API keys, Hugging Face,
DigitalOcean, Postman and PyPI tokens, plus JWTs, bcrypt hashes and PEM private keys. Three
context rules catch what has no fixed shape: credentials in a URL (``scheme://user:pass@host``),
an ``Authorization:`` header value (``Bearer ...``, ``Basic ...``) and ``password=...``-style
pairs in a log line or an env file, whose name ends in a credential word
(``AWS_SECRET_ACCESS_KEY=``, ``token=``).

Why not gitleaks itself: it is a Go program, not a library a Python worker can call per value;
its rules are data, so they are transcribed here (only the token part of each, not gitleaks'
surrounding context, and every pattern anchored as below).

Linear time: each pattern starts with a literal or a lookbehind that only a run boundary passes
(``(?<![A-Za-z0-9_-])eyJ``), and every variable part is a possessive or bounded quantifier, so
no start position rescans a long run (the old JWT pattern spent 26 s on 256 KB of ``eyJ-``).
"""

from __future__ import annotations

import re
from typing import Final

# A token boundary: not inside a longer word-like run.
_B = r"(?<![A-Za-z0-9_-])"
_E = r"(?![A-Za-z0-9_-])"


def _lit(prefix: str) -> str:
    """``prefix`` at a token boundary, written literal-first so the regex engine can skip to
    each occurrence instead of testing a lookbehind at every position."""
    literal = re.escape(prefix)
    return f"{literal}(?<![A-Za-z0-9_-]{literal})"


TOKEN_RULES: Final[dict[str, str]] = {
    "private-key": r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----"
    r"(?:[^-]++|-(?!----END))*+(?:-----END [A-Z ]{0,40}PRIVATE KEY-----|\Z)",
    "aws-access-token": _B + r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}" + _E,
    "github-token": _B + r"gh[pousr]_[A-Za-z0-9]{36,255}+" + _E,
    "github-fine-grained-pat": _lit("github_pat_") + r"[A-Za-z0-9_]{22,255}+" + _E,
    "gitlab-pat": _lit("glpat-") + r"[A-Za-z0-9_-]{20,}+",
    "stripe-access-token": _B + r"(?:sk|rk|pk)_(?:live|test|prod)_[0-9A-Za-z]{10,99}+" + _E,
    "slack-token": _B + r"xox[abposre]-[0-9A-Za-z-]{10,}+",
    "slack-webhook-url": r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{20,}+",
    "openai-api-key": _B + r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}+"
    r"|" + _B + r"sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}" + _E,
    "anthropic-api-key": _B + r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{20,}+",
    "npm-access-token": _lit("npm_") + r"[A-Za-z0-9]{36}" + _E,
    "sendgrid-api-token": _B + r"SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}" + _E,
    "twilio-api-key": _lit("SK") + r"[0-9a-fA-F]{32}" + _E,
    "shopify-token": _B + r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}" + _E,
    "mailgun-api-key": _lit("key-") + r"[a-z0-9]{32}" + _E,
    "stripe-webhook-secret": _lit("whsec_") + r"[A-Za-z0-9+/=]{24,}+",
    "gcp-api-key": _lit("AIza") + r"[A-Za-z0-9_-]{35}" + _E,
    "huggingface-token": _lit("hf_") + r"[A-Za-z]{34}" + _E,
    "digitalocean-token": _B + r"do[por]_v1_[a-f0-9]{64}" + _E,
    "postman-api-token": _lit("PMAK-") + r"[a-fA-F0-9]{24}-[a-fA-F0-9]{34}" + _E,
    "pypi-upload-token": _lit("pypi-AgEIcHlwaS5vcmc") + r"[A-Za-z0-9_-]{50,1000}+",
    "jwt": _lit("eyJ") + r"[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+",
    "bcrypt-hash": r"(?<![$\w])\$2[aby]?\$\d{2}\$[./A-Za-z0-9]{53}",
    # -- context rules: the secret is what follows a marker --------------------------------------
    # The userinfo after "://"; the scheme before it is read by _url_credentials.
    "url-credentials": r"://[^\s:/?#@\[\]]{1,256}+:[^\s/?#@]{1,256}+@",
    "authorization-header": r"(?i:\bauthorization\b[\"']?\s{0,4}[:=]\s{0,4}[\"']?"
    r"(?:(?:bearer|basic|token|digest|negotiate)\s{1,4})?)[^\s\"',;]{8,}+",
    "bearer-token": r"(?i:\bbearer\s{1,4})[A-Za-z0-9._~+/=-]{16,}+",
    # The name may carry a prefix (AWS_SECRET_ACCESS_KEY=, auth_token=, db_password:): what
    # counts is that it *ends* in a credential word, so tokens_used=5 and passwordless=1 pass.
    "password-assignment": r"(?i:(?:password|passwd|pwd|passphrase|secret|api[_-]?key"
    r"|access[_-]?key|secret[_-]?key|private[_-]?key|account[_-]?key|token|client[_-]?secret)"
    r"[\"']?\s{0,4}(?:=|:)\s{0,4}[\"']?)(?=[^\s\"',;&]{4,})[^\s\"',;&]{4,}+",
}
# As gitleaks does, each rule runs only when one of its keywords is in the text (a substring
# test, far cheaper than a regex pass); keywords in lower case are tested on the lower-cased text.
KEYWORDS: Final[dict[str, tuple[str, ...]]] = {
    "private-key": ("PRIVATE KEY",),
    "aws-access-token": ("A3T", "AKIA", "ASIA", "ABIA", "ACCA"),
    "github-token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    "github-fine-grained-pat": ("github_pat_",),
    "gitlab-pat": ("glpat-",),
    "stripe-access-token": ("_live_", "_test_", "_prod_"),
    "slack-token": ("xox",),
    "slack-webhook-url": ("hooks.slack.com",),
    "openai-api-key": ("sk-",),
    "anthropic-api-key": ("sk-ant-",),
    "npm-access-token": ("npm_",),
    "sendgrid-api-token": ("SG.",),
    "twilio-api-key": ("SK",),
    "shopify-token": ("shp",),
    "mailgun-api-key": ("key-",),
    "stripe-webhook-secret": ("whsec_",),
    "gcp-api-key": ("AIza",),
    "huggingface-token": ("hf_",),
    "digitalocean-token": ("_v1_",),
    "postman-api-token": ("PMAK-",),
    "pypi-upload-token": ("pypi-",),
    "jwt": ("eyJ",),
    "bcrypt-hash": ("$2",),
    "url-credentials": ("://",),
    "authorization-header": ("authorization",),
    "bearer-token": ("bearer",),
    "password-assignment": ("password", "passwd", "pwd", "passphrase", "secret", "api", "token",
                            "private", "access_key", "access-key", "accesskey", "accountkey",
                            "account_key"),
}  # fmt: skip
_RULES: Final = tuple(
    (re.compile(TOKEN_RULES[name]), keywords, any(k.islower() for k in keywords))
    for name, keywords in KEYWORDS.items()
)


_URL_CREDENTIALS: Final = _RULES[list(KEYWORDS).index("url-credentials")][0]


def find_secret_spans(text: str) -> list[tuple[int, int]]:
    """Where credentials are in ``text``: (start, end) of each match (may overlap)."""
    lowered: str | None = None
    spans: list[tuple[int, int]] = []
    for pattern, keywords, folded in _RULES:
        if folded:
            lowered = text.lower() if lowered is None else lowered
            haystack = lowered
        else:
            haystack = text
        for keyword in keywords:
            if keyword in haystack:
                if pattern is _URL_CREDENTIALS:
                    spans += _url_credentials(text)
                else:
                    spans += [m.span() for m in pattern.finditer(text)]
                break
    return spans


_SCHEME_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-"
)


def _url_credentials(text: str) -> list[tuple[int, int]]:
    """``scheme://user:pass@`` spans: the userinfo by regex from each ``://``, the scheme read
    backwards (at most 20 characters), so no position is scanned twice."""
    spans: list[tuple[int, int]] = []
    for match in _URL_CREDENTIALS.finditer(text):
        start = match.start()
        while start > 0 and match.start() - start < 20 and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        if start < match.start() and text[start].isalpha():
            spans.append((start, match.end()))
    return spans
