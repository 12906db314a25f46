"""The ``cioguard`` command line (Typer + Rich).

Every command loads settings first; a configuration error prints one line naming the variable
and exits 2, never a traceback. So does a usage error (unknown flag, bad value): :func:`main`
runs Click outside its standalone mode and prints one line instead of Click's usage box.
Exit codes are the same everywhere (:mod:`cioguard.cli._common`).
"""

from __future__ import annotations

import sys

import typer

try:
    from typer._click import exceptions as click_errors  # Typer >= 0.20 vendors Click
except ImportError:  # pragma: no cover - older Typer on the real Click
    from click import exceptions as click_errors  # type: ignore[no-redef]

from cioguard.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    FORMAT_OPTION,
    PASSTHROUGH,
    Format,
    console,
    emit,
    err,
    fail,
    guarded,
    usage_message,
)
from cioguard.errors import ConfigurationError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Deliver to Customer.io safely.")
dead_letters_app = typer.Typer(no_args_is_help=True, help="Jobs that could not be delivered.")
keys_app = typer.Typer(no_args_is_help=True, help="Key material.")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(keys_app, name="keys")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", is_eager=True, help="print cioguard's version and exit"
    ),
) -> None:
    """Deliver to Customer.io safely. Exit codes: 0 ok, 1 findings or failed work, 2 usage or
    configuration error."""
    if version:
        from cioguard.ops.sentry import release

        typer.echo(release().replace("@", " "))
        raise typer.Exit(EXIT_OK)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_USAGE)


@app.command(context_settings=PASSTHROUGH, add_help_option=False)
def worker(ctx: typer.Context) -> None:
    """Run a worker (Celery) on cioguard's queue, task events on; Celery's worker options pass
    through (`cioguard worker --help` lists them)."""
    from cioguard.cli import passthrough

    args = passthrough.checked_worker_args(ctx.args)  # --help, bad flags: before any config
    from cioguard.worker import app as celery_app  # exits with one line on a config error

    celery_app.worker_main(["worker", "--queues", "cioguard", "--loglevel", "INFO", *args])


@app.command(context_settings=PASSTHROUGH, add_help_option=False)
def sandbox(ctx: typer.Context) -> None:
    """Run the local TLS stand-in for the Track API (`cioguard sandbox --help` lists its
    options and fault switches)."""
    from cioguard.cli import passthrough
    from cioguard.sandbox.server import main as sandbox_main

    sandbox_main(passthrough.checked_sandbox_args(ctx.args))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    address: str = typer.Option("127.0.0.1", help="address to bind (keep it private)"),
    port: int = typer.Option(5555, min=1, max=65535, help="port to listen on"),
    max_tasks: int = typer.Option(10_000, min=1, help="tasks Flower keeps in memory"),
) -> None:
    """Run Flower read-only, with basic auth (FLOWER_BASIC_AUTH), never persistent; it gets
    the broker URL only, no key or credential (docs/flower.md). Other Flower options
    (--url_prefix=...) pass through."""
    from cioguard.cli._common import guarded
    from cioguard.ops.flower import exec_flower

    guarded(lambda: exec_flower(address=address, port=port, max_tasks=max_tasks, extra=ctx.args))


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
def dead_letters_list(
    all_: bool = typer.Option(False, "--all", help="include replayed"),
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Dead-lettered jobs (sealed; shown by id, kind, error and status only)."""
    from cioguard.delivery import deadletters
    from cioguard.producer.api import get_producer

    found = guarded(lambda: deadletters.list_all(get_producer().audit, include_replayed=all_))
    rows = [
        {
            "job": dl.job_id, "kind": dl.kind, "error": dl.error_class, "status": dl.http_status,
            "at": dl.created_at.isoformat(timespec="seconds"),
            "replayed": dl.replayed_at.isoformat(timespec="seconds") if dl.replayed_at else None,
        }
        for dl in found
    ]  # fmt: skip
    columns = ["job", "kind", "error", "status", "at", "replayed"]
    emit(rows, columns, fmt, empty="No dead letter.")


@dead_letters_app.command("replay")
def dead_letters_replay(
    job_id: str | None = typer.Argument(None, help="one dead-lettered job id"),
    all_: bool = typer.Option(False, "--all", help="replay every unreplayed dead letter"),
) -> None:
    """Enqueue dead-lettered jobs again, under new job ids."""
    from cioguard.delivery.replay import replay

    if not job_id and not all_:
        raise fail("give a job id or --all")
    report = guarded(lambda: replay(job_id=job_id))
    console.print(f"replayed {len(report.replayed)} job(s)")
    for old, reason in report.skipped:
        err.print(f"skipped {old}: {reason}", highlight=False)
    if report.skipped:
        raise typer.Exit(1)


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


def main(argv: list[str] | None = None) -> None:
    """The ``cioguard`` entry point: ``.env``, logging, then the command; exits 0, 1 or 2."""
    import logging
    import os

    from dotenv import load_dotenv

    from cioguard.config import ENV_FILE
    from cioguard.ops.logs import configure_logging

    # .env of the working directory into the environment, which wins: the credential source,
    # Celery and Flower read the environment themselves (config.py reads the file as well).
    load_dotenv(ENV_FILE, override=False)
    # Warnings and errors of any command in cioguard's format; worker/webhooks raise it to INFO.
    configure_logging(os.environ.get("CIOGUARD_LOG_FORMAT") or "auto", level=logging.WARNING)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="cioguard", standalone_mode=False)
    except click_errors.UsageError as exc:  # unknown flag, bad value, missing argument
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            typer.echo(exc.ctx.get_help())  # `cioguard` or `cioguard keys` alone: the help
            sys.exit(EXIT_USAGE)
        err.print(usage_message(exc), highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        sys.exit(130)
    except click_errors.ClickException as exc:
        err.print(f"cioguard: {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except ConfigurationError as exc:
        err.print(f"cioguard: configuration error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
