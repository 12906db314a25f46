"""`cioguard policy check` and `cioguard policy explain`: exit codes, messages, and no values shown.

Most tests drive the Typer app in-process (CliRunner); a few run ``python -m cioguard`` in a
subprocess to see exactly what an operator sees from the real entry point (no traceback).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cioguard.cli.main import app
from cioguard.config import get_settings
from cioguard.privacy.policy import check_policy_file, default_policy
from cioguard.producer.api import get_producer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("policy-*.toml"))
WIDE = {"COLUMNS": "200"}  # Rich wraps at 80 columns otherwise

VALID = """
name = "test-policy"
[[rules]]
name = "secrets"
keys = ["password"]
match = "token"
action = "drop"
"""

# Every value is distinctive and contains "canary"; no key does. A value in the output is a leak.
SAMPLE: dict[str, Any] = {
    "email": "canary-jane@example.com",
    "userPassword": "canary-hunter2",
    "phone": "+1 415 555 0100 canary",
    "firstName": "CanaryJane",
    "profile": {
        "cards": [{"number": "4111 1111 1111 1111 canary", "cvv": "canary-123"}],
        "address": {"street": "1 Canary Wharf", "city": "canary-city"},
    },
    "note": "canary ssn 219-09-9999",
    "seats": 1234567,
}
SAMPLE_LEAVES = ["4111 1111", "219-09-9999", "hunter2", "415 555", "Wharf"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CIOGUARD_* from the machine leaks in; cached settings are rebuilt per test."""
    for name in list(os.environ):
        if name.startswith(("CIOGUARD_", "CUSTOMERIO_")):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    get_producer.cache_clear()
    yield
    get_settings.cache_clear()
    get_producer.cache_clear()


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone, for substring checks."""
    return " ".join(text.split())


def invoke(runner: CliRunner, args: list[str], **kwargs: Any) -> Result:
    return runner.invoke(app, args, env=WIDE, **kwargs)


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CIOGUARD_", "CUSTOMERIO_"))}
    return subprocess.run(
        [sys.executable, "-m", "cioguard", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **WIDE, **(env or {})},
        timeout=60,
    )


# -- check ---------------------------------------------------------------------------------------


def test_check_valid_file_exits_0_and_prints_the_version(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = invoke(runner, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    version = check_policy_file(path).version
    assert re.fullmatch(r"test-policy@[0-9a-f]{12}", version)
    out = flat(result.stdout)
    assert f"OK {path}" in out
    assert "test-policy (denylist, 1 rules)" in out
    assert f"version {version}" in out


def test_check_the_shipped_default_policy(runner: CliRunner) -> None:
    path = REPO / "src" / "cioguard" / "privacy" / "default_policy.toml"
    result = invoke(runner, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert default_policy().version in flat(result.stdout)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policies_pass_check(runner: CliRunner, path: Path) -> None:
    result = invoke(runner, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert check_policy_file(path).version in flat(result.stdout)


def test_both_examples_are_present() -> None:
    assert [p.name for p in EXAMPLES] == ["policy-allowlist.toml", "policy-strict.toml"]
    assert check_policy_file(EXAMPLES[0]).mode == "allowlist"
    assert check_policy_file(EXAMPLES[1]).mode == "denylist"


RULE = '[[rules]]\nname = "{name}"\nkeys = ["{key}"]\nmatch = "exact"\naction = "{action}"\n'

INVALID = [
    # (id, file text, what the message must name)
    ("not-toml", VALID + "[[rules]\n", ["not valid TOML"]),
    ("bad-action", VALID.replace('"drop"', '"dorp"'), ["rules[0] (secrets).action", "'dorp'"]),
    ("bad-match", VALID.replace('"token"', '"fuzzy"'), ["rules[0] (secrets).match", "'fuzzy'"]),
    ("missing-action", VALID.replace('action = "drop"', ""),
     ["rules[0] (secrets).action: required field is missing"]),
    ("missing-name", VALID.replace('name = "test-policy"', ""), ["name: required field"]),
    ("bad-name", VALID.replace('"test-policy"', '"has space"'),
     ["name: must be 1-64", "has space"]),
    ("unknown-top-field", 'colour = "red"\n' + VALID, ["colour: unknown field"]),
    ("unknown-rule-field", VALID.replace("action", "acton"),
     ["rules[0] (secrets).acton: unknown field"]),
    ("empty-keys", VALID.replace('["password"]', "[]"),
     ["rules[0] (secrets).keys: must not be empty"]),
    ("keys-not-a-list", VALID.replace('["password"]', '"password"'),
     ["rules[0] (secrets).keys: must be a list"]),
    ("key-without-letters", VALID.replace('["password"]', '["--"]'),
     ["rules[0] (secrets).keys", "no letters or digits"]),
    ("bad-mode", 'mode = "blocklist"\n' + VALID, ["mode", "'blocklist'"]),
    ("unknown-detector", 'detectors = ["creditcard"]\n' + VALID,
     ["detectors: unknown detector 'creditcard'"]),
    ("detector-twice", 'detectors = ["ssn", "ssn"]\n' + VALID,
     ["detectors: a detector is listed twice"]),
    ("allowlist-without-allow", 'mode = "allowlist"\n' + VALID, ["allow: allowlist mode needs"]),
    ("allow-in-denylist", 'allow = ["email"]\n' + VALID, ["allow: only used with mode"]),
    ("allow-contradicts-drop", 'mode = "allowlist"\nallow = ["userPassword"]\n' + VALID,
     ["allow: 'user_password' is always dropped by rule secrets"]),
    ("scan-on-drop", VALID + RULE.format(name="x", key="x", action="drop") + "scan = false\n",
     ["rules[1] (x)", "scan = false applies only to action 'keep'"]),
    ("descend-on-keep", VALID + RULE.format(name="x", key="x", action="keep") + "descend = true\n",
     ["rules[1] (x)", "descend applies only"]),
    ("bool-as-string", VALID + 'descend = "yes"\n', ["rules[0] (secrets).descend", "boolean"]),
    ("duplicate-rule-name", VALID + RULE.format(name="secrets", key="x", action="drop"),
     ["rules[1] (secrets): rule name is used twice"]),
    ("duplicate-exact-key",
     VALID + RULE.format(name="a", key="phone", action="hash")
     + RULE.format(name="b", key="Phone", action="keep"),
     ["rules[2] (b): exact key 'phone' is also in rule a"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_check_invalid_file_names_the_field_without_a_traceback(
    runner: CliRunner, tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    result = invoke(runner, ["policy", "check", str(path)])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    err = flat(result.stderr)
    assert err.startswith(f"cioguard: policy {path}: "), err
    for part in expected:
        assert part in err, (part, err)
    assert "OK" not in result.stdout


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8"])
def test_check_unreadable_file_exits_1_without_a_traceback(
    runner: CliRunner, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "policy.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b'name = "caf\xe9"\n')
    result = invoke(runner, ["policy", "check", str(path)])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    assert f"policy {path}: cannot read" in flat(result.stderr)


def test_check_from_the_real_entry_point(tmp_path: Path) -> None:
    good = run_cli("policy", "check", str(write(tmp_path, VALID)))
    assert good.returncode == 0, good.stderr
    assert "test-policy@" in good.stdout
    bad = run_cli(
        "policy", "check", str(write(tmp_path, VALID.replace('"drop"', '"dorp"'), "b.toml"))
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr + bad.stdout
    assert "rules[0] (secrets).action" in flat(bad.stderr)


# -- explain -------------------------------------------------------------------------------------


def decisions(output: str) -> list[tuple[str, str, str]]:
    """(path, action, rule) of each table row that starts a decision (Rich box drawing)."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 5 and cells[0] and cells[1] and cells[0] != "path":
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def assert_no_values(output: str) -> None:
    assert "canary" not in output.lower(), output
    for leaf in SAMPLE_LEAVES:
        assert leaf not in output, (leaf, output)


EXPECTED_DEFAULT = [
    ("email", "keep", "email"),
    ("userPassword", "drop", "credentials"),
    ("phone", "hash", "phones"),
    ("firstName", "keep", ""),
    ("profile", "keep", ""),
    ("profile.cards", "keep", ""),
    ("profile.cards[0].number", "keep", ""),
    ("profile.cards[0].number", "detector-redact", "detector:card"),
    ("profile.cards[0].cvv", "drop", "payment-cards"),
    ("profile.address", "keep", "street-address"),
    ("profile.address.street", "redact", "street-address"),
    ("profile.address.city", "keep", "street-address"),  # in the rule's keep_inside
    ("note", "keep", ""),
    ("note", "detector-redact", "detector:ssn"),
    ("seats", "keep", ""),
]


def test_explain_sample_file_shows_actions_and_no_values(runner: CliRunner, tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(SAMPLE), encoding="utf-8")
    result = invoke(runner, ["policy", "explain", str(sample)])
    assert result.exit_code == 0, result.output
    assert f"policy {default_policy().version}" in result.stdout
    assert decisions(result.stdout) == EXPECTED_DEFAULT
    assert "'user_password' matches stem key 'password'" in flat(result.stdout)
    out = flat(result.stdout)
    assert "Luhn" in out and "policy (stem)" in out  # which detector/rule, built on what
    assert_no_values(result.output)


@pytest.mark.parametrize("args", [["policy", "explain", "-"], ["policy", "explain"]])
def test_explain_sample_from_stdin(runner: CliRunner, args: list[str]) -> None:
    result = invoke(runner, args, input=json.dumps(SAMPLE))
    assert result.exit_code == 0, result.output
    assert decisions(result.stdout) == EXPECTED_DEFAULT
    assert_no_values(result.output)


def test_explain_from_the_real_entry_point_with_stdin() -> None:
    result = run_cli("policy", "explain", "-", stdin=json.dumps(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert decisions(result.stdout) == EXPECTED_DEFAULT
    assert_no_values(result.stdout + result.stderr)


def test_explain_with_an_allowlist_policy_option(runner: CliRunner) -> None:
    path = REPO / "examples" / "policy-allowlist.toml"
    result = invoke(runner, ["policy", "explain", "--policy", str(path)], input=json.dumps(SAMPLE))
    assert result.exit_code == 0, result.output
    assert f"policy {check_policy_file(path).version}" in result.stdout
    rows = decisions(result.stdout)
    assert ("email", "keep", "email") in rows
    assert ("firstName", "keep", "") in rows  # allow = ["first_name"]: spelling does not matter
    assert ("userPassword", "allowlist-drop", "allow") in rows
    assert ("profile", "allowlist-drop", "allow") in rows
    assert not any(path.startswith("profile.") for path, _, _ in rows)  # not walked into
    assert_no_values(result.output)


def test_explain_uses_cioguard_policy_when_no_option_is_given(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = REPO / "examples" / "policy-strict.toml"
    monkeypatch.setenv("CIOGUARD_POLICY", str(path))
    result = invoke(runner, ["policy", "explain"], input=json.dumps(SAMPLE))
    assert result.exit_code == 0, result.output
    assert f"policy {check_policy_file(path).version}" in result.stdout
    rows = decisions(result.stdout)
    assert ("phone", "drop", "phones") in rows  # strict drops what the default hashes
    assert ("profile.address", "drop", "address") in rows  # and the whole address
    assert ("note", "drop", "free-text") in rows
    assert_no_values(result.output)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [("not json", "sample is not JSON (line 1)"), ("[1, 2]", "sample must be a JSON object")],
)
def test_explain_refuses_a_sample_that_is_not_a_json_object(
    runner: CliRunner, stdin: str, message: str
) -> None:
    result = invoke(runner, ["policy", "explain"], input=stdin)
    assert result.exit_code == 2
    no_traceback(result)
    assert message in flat(result.output)


def test_explain_with_an_invalid_policy_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = write(tmp_path, VALID.replace('"drop"', '"dorp"'))
    result = run_cli("policy", "explain", "-", "--policy", str(bad), stdin='{"a": 1}')
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "rules[0] (secrets).action" in flat(result.stderr)


def test_explain_missing_sample_file_gives_a_clean_error(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, ["policy", "explain", str(tmp_path / "absent.json")])
    assert result.exit_code != 0
    no_traceback(result)


def test_explain_sample_nested_too_deep_gives_a_clean_error(runner: CliRunner) -> None:
    data: dict[str, Any] = {"leaf": "canary"}
    for _ in range(40):
        data = {"d": data}
    result = invoke(runner, ["policy", "explain"], input=json.dumps(data))
    assert result.exit_code != 0
    no_traceback(result)
