"""What every command module shares: the consoles, one-line failures, the error guard, and the
``--format table|json|csv`` output of listing commands.

Command modules import from here, never from :mod:`cioguard.cli.main`, which only assembles them.

Exit codes, the same for every command (README's "Exit codes"):

* ``0``: done, nothing to report;
* ``1``: findings (``check``, ``deletions overdue``, ``audit verify``) or work that failed
  (the broker or the audit store did not answer, a request was not found or refused);
* ``2``: the command line or the configuration is wrong (unknown flag, bad value, missing or
  malformed setting).
"""

from __future__ import annotations

import csv
import enum
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cioguard.errors import CioguardError, ConfigurationError, InvalidInputError, InvalidTypeError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
# Off a terminal, lines are as wide as their content: a piped table is never cut at 80 columns.
WIDE = 100_000
console = Console() if sys.stdout.isatty() else Console(width=WIDE)
err = Console(stderr=True, soft_wrap=True)  # one line per message, whatever the width
T = TypeVar("T")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


class Format(enum.StrEnum):
    """The output of a listing command."""

    table = "table"
    json = "json"
    csv = "csv"


FORMAT_OPTION = typer.Option(Format.table, "--format", help="table, json (one array) or csv")


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[bold red]cioguard:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``: configuration and input errors exit 2, other cioguard errors 1 (one line)."""
    try:
        return fn()
    except ConfigurationError as exc:
        raise fail(f"configuration error: {exc}") from None
    except (InvalidInputError, InvalidTypeError) as exc:
        raise fail(str(exc)) from None
    except CioguardError as exc:
        raise fail(str(exc), EXIT_FINDINGS) from None


def emit(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    fmt: Format,
    *,
    empty: str,
    footnotes: Mapping[str, bool] | None = None,
    title: str | None = None,
) -> None:
    """Print ``rows`` (dicts keyed by ``columns``) as a Rich table, a JSON array or CSV.

    JSON and CSV carry the values unchanged (``None`` as null / an empty cell) and nothing else;
    the table shows ``-`` for ``None``, ``empty`` when there is no row, and each footnote whose
    flag is true (a footnote that applies to no row is not printed).
    """
    if fmt is Format.json:
        typer.echo(json.dumps([{c: row.get(c) for c in columns} for row in rows], default=str))
        return
    if fmt is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else str(row.get(c)) for c in columns])
        return
    if not rows:
        console.print(empty, highlight=False)
        return
    notes = [text for text, applies in (footnotes or {}).items() if applies]
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, title=title,
                  caption="\n".join(notes) or None)  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="fold")
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table, highlight=False)


class _UsageError(Protocol):
    ctx: Any

    def format_message(self) -> str: ...


def usage_message(exc: _UsageError) -> str:
    """One line: the command, the problem, where help is; a bad value is named, not quoted.

    Duck-typed: Typer's vendored Click and Celery's Click raise different classes.
    """
    where = exc.ctx.command_path if exc.ctx is not None else "cioguard"
    problem = exc.format_message().rstrip(".")
    param = getattr(exc, "param", None)
    if param is not None and type(exc).__name__ == "BadParameter":
        hint = getattr(exc, "param_hint", None) or " / ".join(param.opts) or param.name
        detail = problem.split(": ", 1)[-1]
        quoted = "'" in detail or '"' in detail
        problem = f"invalid value for {hint}: " + (
            f"expected {_expected(param)}" if quoted else detail
        )
    return f"{where}: {problem} (see {where} --help)"


def _expected(param: Any) -> str:
    """What a parameter accepts, from Typer's annotation or Click's type."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    choices = getattr(getattr(param, "type", None), "choices", None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        choices = [member.value for member in annotation]
    if choices:
        return "one of " + ", ".join(str(c) for c in choices)
    name = annotation.__name__ if isinstance(annotation, type) else getattr(param.type, "name", "")
    words = {"int": "a whole number", "integer": "a whole number", "float": "a number",
             "bool": "true or false", "boolean": "true or false"}  # fmt: skip
    return words.get(str(name), "a valid value")
