"""The ``cioguard`` command line (Typer + Rich).

Every command loads settings first; a configuration error prints one line naming the variable
and exits 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.table import Table

from cioguard.cli._common import PASSTHROUGH, console, err, fail, guarded
from cioguard.errors import ConfigurationError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Deliver to Customer.io safely.")
dead_letters_app = typer.Typer(no_args_is_help=True, help="Jobs that could not be delivered.")
keys_app = typer.Typer(no_args_is_help=True, help="Key material.")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(keys_app, name="keys")


@app.command(context_settings=PASSTHROUGH)
def worker(ctx: typer.Context) -> None:
    """Run a worker (Celery). Extra arguments pass through to `celery worker`."""
    from cioguard.worker import app as celery_app  # exits with one line on a config error

    argv = ["worker", "--queues", "cioguard", "--loglevel", "INFO", *ctx.args]
    celery_app.worker_main(argv)


@app.command(context_settings=PASSTHROUGH)
def sandbox(ctx: typer.Context) -> None:
    """Run the local TLS stand-in for the Track API (see `cioguard sandbox --help`)."""
    from cioguard.sandbox.server import main as sandbox_main

    sandbox_main(ctx.args)


@app.command()
def demo(
    identifies: int = typer.Option(1000, help="identify jobs to enqueue"),
    events: int = typer.Option(1000, help="track jobs to enqueue"),
    deletions: int = typer.Option(20, help="deletion requests to enqueue"),
    concurrency: int = typer.Option(2, help="worker processes"),
) -> None:
    """Start Redis (if needed), a sandbox and a worker; run a realistic mix; print a summary."""
    from cioguard.cli.demo import run_demo

    run_demo(identifies=identifies, events=events, deletions=deletions, concurrency=concurrency)


@dead_letters_app.command("list")
def dead_letters_list(all_: bool = typer.Option(False, "--all", help="include replayed")) -> None:
    """Dead-lettered jobs (sealed; shown by id, kind, error and status only)."""
    from cioguard.delivery import deadletters
    from cioguard.producer.api import get_producer

    rows = guarded(lambda: deadletters.list_all(get_producer().audit, include_replayed=all_))
    table = Table("kind", "error", "status", "at", "replayed")
    table.add_column("job", no_wrap=True, min_width=26)
    for dl in rows:
        table.add_row(
            dl.kind, dl.error_class or "-", str(dl.http_status or "-"),
            dl.created_at.isoformat(timespec="seconds"),
            dl.replayed_at.isoformat(timespec="seconds") if dl.replayed_at else "-", dl.job_id,
        )  # fmt: skip
    console.print(table)


@dead_letters_app.command("replay")
def dead_letters_replay(
    job_id: str | None = typer.Argument(None, help="one dead-lettered job id"),
    all_: bool = typer.Option(False, "--all", help="replay every unreplayed dead letter"),
) -> None:
    """Enqueue dead-lettered jobs again, under new job ids."""
    from cioguard.delivery.replay import replay

    if not job_id and not all_:
        raise fail("give a job id or --all")
    count = guarded(lambda: replay(job_id=job_id))
    console.print(f"replayed {count} job(s)")


@keys_app.command("new")
def keys_new() -> None:
    """Print a new payload key (Fernet) and a new hash key."""
    import secrets

    from cioguard.broker.envelope import new_key

    typer.echo(f"CIOGUARD_PAYLOAD_KEY={new_key()}")
    typer.echo(f"CIOGUARD_HASH_KEY={secrets.token_urlsafe(48)}")


def _register_subcommands() -> None:
    from cioguard.cli import audit as cli_audit
    from cioguard.cli import credentials as cli_credentials
    from cioguard.cli import erasure as cli_erasure
    from cioguard.cli import ops as cli_ops
    from cioguard.cli import policy as cli_policy
    from cioguard.cli import webhooks as cli_webhooks

    for module in (cli_audit, cli_credentials, cli_erasure, cli_ops, cli_policy, cli_webhooks):
        module.register(app)
    from cioguard.cli import importing as cli_importing  # `cioguard import FILE`

    cli_importing.register(app)


_register_subcommands()


def main(argv: list[str] | None = None) -> Any:
    import logging
    import os

    from cioguard.ops.logs import configure_logging

    # Warnings and errors of any command in cioguard's format; worker/webhooks raise it to INFO.
    configure_logging(os.environ.get("CIOGUARD_LOG_FORMAT") or "auto", level=logging.WARNING)
    try:
        return app(argv, standalone_mode=True)
    except ConfigurationError as exc:
        err.print(f"cioguard: configuration error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
