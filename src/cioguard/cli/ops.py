"""`cioguard` commands: ops (``cioguard check``). Registered by :mod:`cioguard.cli.main`."""

from __future__ import annotations

import typer


def check() -> None:
    """Check this installation: broker, audit store, Customer.io, keys, policy, webhooks, Flower.

    One line per finding; exit 1 if any fails (2 on a configuration error).
    """
    from cioguard.cli._common import guarded
    from cioguard.cli.check import run_checks
    from cioguard.config import get_settings

    findings = run_checks(guarded(get_settings))
    for finding in findings:
        typer.echo(finding.line())
    failed = sum(not f.ok for f in findings)
    typer.echo(f"{failed} problem(s) found" if failed else "everything checked is in order")
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("check")(check)
