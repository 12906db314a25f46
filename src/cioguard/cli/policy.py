"""`cioguard policy check FILE` and `cioguard policy explain [SAMPLE]`. Registered by cli.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cioguard.cli._common import console
from cioguard.errors import CioguardError, ConfigurationError

policy_app = typer.Typer(no_args_is_help=True, help="The sanitization policy.")


@policy_app.command("check")
def check(path: Path) -> None:
    """Validate a policy file; print its name, mode and version."""
    from cioguard.privacy.policy import check_policy_file

    try:
        policy = check_policy_file(path)
    except ConfigurationError as exc:
        Console(stderr=True).print(f"cioguard: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    rules = len(policy.rules)
    console.print(
        f"OK {path}: {policy.name} ({policy.mode}, {rules} rules) version {policy.version}"
    )


@policy_app.command("explain")
def explain(
    sample: str = typer.Argument("-", help="a JSON object file, or - for stdin"),
    policy_file: Path | None = typer.Option(None, "--policy", help="default: CIOGUARD_POLICY"),
) -> None:
    """Show, for a sample JSON object, what the policy does to each key and why (no values).

    Each row names the rule or detector that decided and what it is built on (``policy
    (stem)`` for a key rule, or the detector's library and version, e.g. ``phonenumbers 9.0``).
    """
    from cioguard.config import get_settings
    from cioguard.privacy.policy import check_policy_file, load_policy
    from cioguard.privacy.sanitizer import Sanitizer

    try:
        text = sys.stdin.read() if sample == "-" else Path(sample).read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the sample ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"sample is not JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise typer.BadParameter("sample must be a JSON object")
    settings = get_settings()
    policy = check_policy_file(policy_file) if policy_file else load_policy(settings.policy_path)
    key = settings.hash_key.get_secret_value().encode() if settings.hash_key else b"explain-only"
    table = Table("path", "action", "rule", "library", "why", title=f"policy {policy.version}")
    try:
        decisions = Sanitizer(policy, key).explain(data)
    except CioguardError as exc:
        raise typer.BadParameter(str(exc)) from None
    for decision in decisions:
        table.add_row(
            decision.path, decision.action, decision.rule or "", decision.library, decision.reason
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
