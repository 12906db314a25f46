"""The commands that wrap another tool's options: ``cioguard worker`` (Celery's worker) and
``cioguard sandbox`` (the stand-in's argparse flags).

Their options are parsed here first, with the wrapped tool's own parser, so that ``--help``
lists the real options (without loading any configuration) and a bad flag or value gives one
line and exit 2 instead of the tool's usage text or a traceback. The arguments are then handed
over unchanged.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import NoReturn

import click
import typer

from cioguard.cli._common import EXIT_OK, EXIT_USAGE, err, usage_message

WORKER_DEFAULTS = "--queues cioguard --loglevel INFO"
WORKER_HELP = f"""cioguard worker: a Celery worker of cioguard's tasks, started with
{WORKER_DEFAULTS} and task events on (CIOGUARD_TASK_EVENTS=0 turns them off). Settings
come from the environment and .env (README's configuration table). Celery's worker options,
below, pass through.
"""
_HELP = ("--help", "-h")


def _usage_error(command: str, problem: str) -> NoReturn:
    err.print(f"{command}: {problem} (see {command} --help)", highlight=False)
    raise typer.Exit(EXIT_USAGE)


def checked_worker_args(args: Sequence[str]) -> list[str]:
    """``args`` if Celery's worker command accepts them; ``--help`` prints its options, exit 0."""
    from celery import Celery
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker as worker_command

    name = "cioguard worker"
    obj = CLIContext(app=Celery("cioguard"), no_color=True, workdir=None)
    if any(arg in _HELP for arg in args):
        ctx = worker_command.make_context(name, [], obj=obj, resilient_parsing=True)
        typer.echo(WORKER_HELP)
        typer.echo(worker_command.get_help(ctx))
        raise typer.Exit(EXIT_OK)
    try:
        worker_command.make_context(name, list(args), obj=obj)
    except click.UsageError as exc:  # Celery's Click, not Typer's vendored one
        err.print(usage_message(exc), highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    return list(args)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line; a bad value is named by its option, not quoted (argparse quotes it)."""
        if message.startswith("argument "):
            message = re.sub(r": '[^']*'", "", message, count=1)
        _usage_error(self.prog, message)


def checked_sandbox_args(args: Sequence[str]) -> list[str]:
    """``args`` if the sandbox's parser accepts them; ``--help`` prints its options, exit 0."""
    from cioguard.sandbox.server import build_parser

    real = build_parser()
    parser = _OneLineParser(prog="cioguard sandbox", description=real.description,
                            parents=[real], add_help=False, conflict_handler="resolve")  # fmt: skip
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parsed = parser.parse_args(list(args))
    if parsed.help:
        typer.echo(parser.format_help())
        raise typer.Exit(EXIT_OK)
    return list(args)
