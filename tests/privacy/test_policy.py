"""The policy as data: key normalization, matching, the default policy, file validation."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

import cioguard.privacy.policy as policy_module
from cioguard.errors import ConfigurationError
from cioguard.privacy.policy import (
    Policy,
    check_policy_file,
    default_policy,
    load_policy,
    normalize_key,
    parse_policy,
    policy_from_toml,
)

MINIMAL = """
name = "test"
[[rules]]
name = "secrets"
keys = ["password"]
match = "token"
action = "drop"
"""


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "policy.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


# -- normalization -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["creditCard", "CreditCard", "credit-card", "CREDIT_CARD", "credit card", "credit_card",
     "Credit.Card", "  credit__card  ", "CREDIT-CARD", "credit Card"],
)  # fmt: skip
def test_spellings_normalize_to_one_form(key: str) -> None:
    assert normalize_key(key) == "credit_card"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("SSN", "ssn"),
        ("userSSN", "user_ssn"),
        ("UserSSN", "user_ssn"),
        ("cardCVV", "card_cvv"),
        ("CVVCode", "cvv_code"),
        ("APIKey", "api_key"),
        ("apiKey", "api_key"),
        ("HTTPServerURL", "http_server_url"),
        ("emailAddress", "email_address"),
        ("EMAIL", "email"),
        ("E-Mail", "e_mail"),
        ("address1", "address_1"),
        ("addressLine2", "address_line_2"),
        ("cvv2", "cvv_2"),
        ("Straße", "strasse"),  # v2: keys are folded (ß -> ss, accents removed)
        ("", ""),
        ("__", ""),
    ],
)
def test_acronyms_digits_and_edge_cases(key: str, expected: str) -> None:
    assert normalize_key(key) == expected


# -- matching ------------------------------------------------------------------------------------


def make(rules: list[dict[str, object]], **fields: object) -> Policy:
    return parse_policy({"name": "t", "rules": rules, **fields})


def test_exact_matches_only_the_whole_normalized_key() -> None:
    policy = make([{"keys": ["mobile"], "match": "exact", "action": "hash"}])
    assert policy.match("Mobile") is not None
    assert policy.match("MOBILE") is not None
    assert policy.match("is_mobile") is None
    assert policy.match("mobileAppVersion") is None


def test_token_matches_whole_words_in_order_and_plurals() -> None:
    policy = make([{"keys": ["password", "api_key"], "match": "token", "action": "drop"}])
    for key in ["password", "userPassword", "passwordHash", "user_password_hash", "passwords",
                "stripeApiKey", "api_keys", "API-KEY"]:  # fmt: skip
        assert policy.match(key) is not None, key
    for key in ["passwordless", "pass_word", "key_api", "apikey", "api", "keys"]:
        assert policy.match(key) is None, key


def test_exact_beats_token_whatever_the_order() -> None:
    policy = make(
        [
            {"name": "addr", "keys": ["address"], "match": "token", "action": "redact"},
            {"name": "mail", "keys": ["email_address"], "match": "exact", "action": "keep"},
        ]
    )
    found = policy.match("emailAddress")
    assert found is not None
    assert (found.rule.name, found.kind, found.via) == ("mail", "exact", "email_address")
    found = policy.match("billingAddress")
    assert found is not None and found.rule.name == "addr"


def test_first_token_rule_wins() -> None:
    policy = make(
        [
            {"name": "first", "keys": ["card"], "match": "token", "action": "redact"},
            {"name": "second", "keys": ["card_number"], "match": "token", "action": "drop"},
        ]
    )
    found = policy.match("cardNumber")
    assert found is not None and found.rule.name == "first"


def test_rules_get_default_names_by_index() -> None:
    policy = make([{"keys": ["a"], "match": "exact", "action": "drop"}])
    assert policy.rules[0].name == "rules[0]"


def test_policy_is_frozen() -> None:
    policy = default_policy()
    with pytest.raises(ValidationError):
        policy.name = "changed"  # type: ignore[misc]


# -- the default policy --------------------------------------------------------------------------

DROP = ["password", "userPassword", "passwordHash", "PASSWORD", "secret", "clientSecret",
        "api_key", "apiKey", "API-KEY", "accessToken", "refresh_token", "privateKey",
        "session_id", "cookie", "card_number", "cardNumber", "creditCard", "CreditCard",
        "credit-card", "CREDIT_CARD", "credit card", "cc_number", "ccNumber", "pan", "PAN",
        "cvv", "CVV", "cardCVV", "cvc", "cvv2", "security_code", "ssn", "SSN", "userSSN",
        "social_security_number", "socialSecurityNumber", "tax_id", "taxId", "passport_number",
        "driversLicense", "bank_account", "bankAccountNumber", "account_number", "iban", "IBAN",
        "routing_number", "routingNumber", "sort_code", "date_of_birth", "dateOfBirth", "dob",
        "DOB", "birthdate", "birthday", "ethnicity", "religion"]  # fmt: skip
HASH = ["phone", "Phone", "PHONE", "phone_number", "phoneNumber", "PhoneNumber",
        "mobile", "mobile_number", "mobileNumber", "cell", "tel", "telephone", "fax",
        "workPhoneNumber", "phones", "phone_numbers"]  # fmt: skip
REDACT = ["address", "Address", "street", "street_address", "streetAddress", "address_line_1",
          "addressLine1", "address2", "billing_address", "addresses", "ip", "ip_address",
          "ipAddress"]  # fmt: skip
KEEP = ["email", "Email", "EMAIL", "emailAddress", "email_address", "EmailAddress", "e-mail"]
PASS = ["city", "country", "state", "zip", "zip_code", "zipCode", "postal_code", "postcode",
        "plan", "plan_name", "first_name", "firstName", "last_name", "name", "created_at",
        "order_id", "orderNumber", "is_mobile", "mobile_app_version", "cookie_consent",
        "auth_provider", "birthday_month", "birth_month", "company", "title", "locale",
        "timezone", "gender", "language", "uuid", "id", "note", "score"]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "action"),
    [(k, "drop") for k in DROP]
    + [(k, "hash") for k in HASH]
    + [(k, "redact") for k in REDACT]
    + [(k, "keep") for k in KEEP],
)
def test_default_policy_actions(key: str, action: str) -> None:
    found = default_policy().match(key)
    assert found is not None, key
    assert found.rule.action == action


@pytest.mark.parametrize("key", PASS)
def test_default_policy_lets_ordinary_keys_pass(key: str) -> None:
    assert default_policy().match(key) is None


def test_default_policy_email_is_exempt_from_detectors() -> None:
    found = default_policy().match("emailAddress")
    assert found is not None and found.rule.scan is False


def test_default_policy_shape_and_version() -> None:
    policy = default_policy()
    assert policy.name == "default"
    assert policy.mode == "denylist"
    assert set(policy.detectors) == {
        "card",
        "ssn",
        "iban",
        "phone",
        "national_id",
        "secret",
        "ip",
        "dob",
    }
    assert "Dropped" in policy.description and "Hashed" in policy.description
    assert re.fullmatch(r"default@[0-9a-f]{12}", policy.version)
    assert default_policy() is policy
    assert load_policy(None) is policy


# -- version -------------------------------------------------------------------------------------


def test_version_ignores_spelling_and_description_but_not_rules() -> None:
    base = policy_from_toml(MINIMAL)
    respelled = policy_from_toml(MINIMAL.replace('["password"]', '["Password"]'))
    described = policy_from_toml('description = "x"\n' + MINIMAL)
    changed = policy_from_toml(MINIMAL.replace('"drop"', '"redact"'))
    renamed = policy_from_toml(MINIMAL.replace('name = "test"', 'name = "other"'))
    assert base.version.startswith("test@")
    assert base.version == respelled.version == described.version
    assert changed.version != base.version
    assert renamed.version.startswith("other@")
    assert renamed.version.split("@")[1] != base.version.split("@")[1]


# -- files ---------------------------------------------------------------------------------------


def test_check_policy_file_loads_a_valid_file(write_policy: Callable[[str], Path]) -> None:
    path = write_policy(MINIMAL)
    policy = check_policy_file(path)
    assert policy.name == "test"
    assert policy.detectors == (
        "card",
        "ssn",
        "iban",
        "phone",
        "national_id",
        "secret",
        "ip",
        "dob",
    )
    assert load_policy(path) == policy
    assert check_policy_file(str(path)) == policy


def test_module_docstring_example_is_a_valid_policy() -> None:
    doc = policy_module.__doc__ or ""
    example = doc.split("Policy file format::", 1)[1].split("Key matching.", 1)[0]
    policy = policy_from_toml(textwrap.dedent(example))
    assert policy.rules[0].name == "secrets"


def test_allowlist_policy_loads(write_policy: Callable[[str], Path]) -> None:
    path = write_policy(
        """
        name = "minimal"
        mode = "allowlist"
        allow = ["email", "Plan", "firstName"]
        detectors = []
        """
    )
    policy = check_policy_file(path)
    assert policy.allow == ("email", "plan", "first_name")
    assert policy.detectors == ()


BAD_FILES = [
    ("rules[0] (secrets).action", MINIMAL.replace('"drop"', '"dorp"'), "dorp"),
    ("rules[0] (secrets).match", MINIMAL.replace('"token"', '"fuzzy"'), "fuzzy"),
    ("rules[0] (secrets).keys: must not be empty", MINIMAL.replace('["password"]', "[]"), ""),
    ("rules[0] (secrets).keys: must be a list", MINIMAL.replace('["password"]', '"pw"'), ""),
    ("rules[0] (secrets).keys: key '--'", MINIMAL.replace('["password"]', '["--"]'), ""),
    ("rules[0] (secrets).acton: unknown field", MINIMAL.replace("action", "acton"), ""),
    ("rules[0] (secrets).action: required field", MINIMAL.replace('action = "drop"', ""), ""),
    ("detectors: unknown detector 'card_number'", 'detectors = ["card_number"]\n' + MINIMAL, ""),
    ("detectors: a detector is listed twice", 'detectors = ["ssn", "ssn"]\n' + MINIMAL, ""),
    ("mode", 'mode = "blocklist"\n' + MINIMAL, "blocklist"),
    ("allow: allowlist mode needs", 'mode = "allowlist"\n' + MINIMAL, ""),
    ("allow: only used with mode", 'allow = ["email"]\n' + MINIMAL, ""),
    ("allow: 'password' is always dropped by rule secrets",
     'mode = "allowlist"\nallow = ["password"]\n' + MINIMAL, ""),
    ("name: must be 1-64", MINIMAL.replace('"test"', '"has space"'), "has space"),
    ("name: required field", MINIMAL.replace('name = "test"', ""), ""),
    ("colour: unknown field", 'colour = "red"\n' + MINIMAL, ""),
    ("rules[1]: scan = false applies only to action 'keep'",
     MINIMAL + '[[rules]]\nkeys = ["x"]\nmatch = "exact"\naction = "drop"\nscan = false\n', ""),
    ("rules[1]: descend applies only",
     MINIMAL + '[[rules]]\nkeys = ["x"]\nmatch = "exact"\naction = "keep"\ndescend = true\n', ""),
    ("rules[1] (secrets): rule name is used twice", MINIMAL + MINIMAL.split("\n", 2)[2], ""),
    ("rules[1]: token key 'password' is in two rules",
     MINIMAL + '[[rules]]\nkeys = ["PASSWORD"]\nmatch = "token"\naction = "hash"\n', ""),
    ("rules[2]: exact key 'phone' is also in rule rules[1]",
     MINIMAL + '[[rules]]\nkeys = ["phone"]\nmatch = "exact"\naction = "hash"\n'
     + '[[rules]]\nkeys = ["Phone"]\nmatch = "exact"\naction = "keep"\n', ""),
    ("rules[0] (secrets).scan: Input should be a valid boolean",
     MINIMAL + 'scan = "no"\n', ""),
    ("not valid TOML", MINIMAL + "[[rules]\n", ""),
]  # fmt: skip


@pytest.mark.parametrize(("expected", "text", "bad_value"), BAD_FILES)
def test_check_policy_file_names_the_file_and_the_bad_field(
    write_policy: Callable[[str], Path], expected: str, text: str, bad_value: str
) -> None:
    path = write_policy(text)
    with pytest.raises(ConfigurationError) as caught:
        check_policy_file(path)
    message = str(caught.value)
    assert message.startswith(f"policy {path}: ")
    assert expected in message
    assert bad_value in message


def test_check_policy_file_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigurationError, match=r"absent\.toml: cannot read"):
        check_policy_file(path)
    with pytest.raises(ConfigurationError, match=r"absent\.toml"):
        load_policy(path)


def test_parse_policy_from_a_mapping_names_the_source() -> None:
    with pytest.raises(ConfigurationError, match=r"^policy env: mode: "):
        parse_policy({"name": "x", "mode": 3}, source="env")
