"""What every command module shares: the consoles, one-line failures and the error guard.

Command modules import from here, never from :mod:`cioguard.cli.main`, which only assembles them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from cioguard.errors import CioguardError, ConfigurationError

console = Console()
err = Console(stderr=True, soft_wrap=True)  # one line per message, whatever the width
T = TypeVar("T")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]cioguard:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; configuration and other cioguard errors become one line and exit 2."""
    try:
        return fn()
    except ConfigurationError as exc:
        raise fail(f"configuration error: {exc}") from None
    except CioguardError as exc:
        raise fail(str(exc)) from None
