"""`cioguard` commands: ops (``cioguard check``). Registered by :mod:`cioguard.cli.main`."""

from __future__ import annotations

import json
from datetime import timedelta
from enum import StrEnum

import typer


class CheckFormat(StrEnum):
    text = "text"
    json = "json"


def check(
    fmt: CheckFormat = typer.Option(
        CheckFormat.text, "--format", help="text (one line per finding) or json (one object)"
    ),
    max_queue_age_s: float = typer.Option(
        300.0, min=1, help="an oldest queued job older than this is a finding"
    ),
    due_within_days: int = typer.Option(
        3, min=0, help="erasure requests due within this many days are findings"
    ),
    stuck_after_h: float = typer.Option(
        6.0, min=0.1, help="erasure requests unchanged this long, not completed, are findings"
    ),
) -> None:
    """Check this installation and its health: broker, audit store, Customer.io, keys, policy,
    webhooks, Flower; live workers, backlog, dead letters, erasure deadlines.

    Exit 0 when everything is in order, 1 on any finding, 2 on a configuration error.
    """
    from cioguard.cli._common import guarded
    from cioguard.cli.check import run_checks
    from cioguard.cli.health import Limits, run_health
    from cioguard.config import get_settings

    settings = guarded(get_settings)
    limits = Limits(
        max_queue_age_s=max_queue_age_s, due_within=timedelta(days=due_within_days),
        stuck_after=timedelta(hours=stuck_after_h),
    )  # fmt: skip
    findings = run_checks(settings)
    findings += run_health(settings, findings, limits)
    failed = sum(not f.ok for f in findings)
    if fmt is CheckFormat.json:
        typer.echo(json.dumps({
            "ok": not failed, "problems": failed,
            "findings": [{"name": f.name, "ok": f.ok, "message": f.message} for f in findings],
        }))  # fmt: skip
    else:
        for finding in findings:
            typer.echo(finding.line())
        typer.echo(f"{failed} problem(s) found" if failed else "everything checked is in order")
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("check")(check)
