"""`cioguard delete --file`, `cioguard status ID` and `cioguard deletions ...` (erasure requests).

Registered by :mod:`cioguard.cli.main`. Nothing here prints a person id: bad lines of a bulk
file are named by line number, requests by their request id.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from cioguard.audit.store import AuditStore
    from cioguard.erasure.requests import DeletionStatus
    from cioguard.producer.api import Producer
    from cioguard.producer.bulk import ParsedIds, Submitted

deletions_app = typer.Typer(no_args_is_help=True, help="Erasure requests.")
console = Console()
err = Console(stderr=True)
MAX_BAD_LINES_SHOWN = 50


def register(app: typer.Typer) -> None:
    """Add ``delete``, ``status`` and the ``deletions`` group to the root app."""
    app.command("delete")(delete)
    app.command("status")(status)
    app.add_typer(deletions_app, name="deletions")


def _store() -> AuditStore:
    from cioguard.cli.audit import open_store

    return open_store(migrate=True)


def _day(value: datetime | None) -> str:
    return value.date().isoformat() if value else "-"


# -- cioguard delete --file ----------------------------------------------------------------


def delete(
    file: str = typer.Option(..., "--file", "-f", help="one person id per line; - for stdin"),
    reason: str = typer.Option("erasure", help="'erasure' (GDPR) or e.g. 'ccpa' (45 days)"),
    wait: bool = typer.Option(False, "--wait", help="wait until every request is done"),
    timeout_s: float = typer.Option(3600.0, "--timeout-s", help="how long --wait waits"),
) -> None:
    """Open an erasure request per id in a file and enqueue them (exit 1 on bad lines/failures)."""
    from cioguard.cli._common import guarded
    from cioguard.producer import bulk
    from cioguard.producer.api import get_producer

    with _lines(file) as lines:
        parsed = bulk.parse_ids(lines)
    _report_bad_lines(parsed)
    producer = guarded(get_producer)
    ids = [pid for _, pid in parsed.ids]
    submitted = guarded(lambda: _submit(producer, ids, reason))
    states = _wait(producer, submitted, timeout_s) if wait else None
    console.print(_summary(parsed, submitted, states))
    if states and states["failed"]:
        err.print("failed requests: `cioguard deletions list --state failed`, then dead letters")
    failed = bool(states and (states["failed"] or _open(states)))
    raise typer.Exit(1 if parsed.bad or failed else 0)


@contextmanager
def _lines(file: str) -> Iterator[Iterable[bytes]]:
    if file == "-":
        yield sys.stdin.buffer
        return
    try:
        with Path(file).open("rb") as handle:
            yield handle
    except OSError as exc:
        err.print(f"cioguard: cannot read {file} ({exc.strerror})", highlight=False)
        raise typer.Exit(2) from None


def _submit(producer: Producer, ids: list[str], reason: str) -> Submitted:
    from cioguard.errors import BrokerUnavailableError
    from cioguard.producer import bulk

    try:
        with _progress() as progress:
            task = progress.add_task("recording and enqueueing", total=len(ids))
            return bulk.submit(
                producer, ids, reason=reason, on_progress=lambda n: progress.advance(task, n)
            )
    except BrokerUnavailableError as exc:
        err.print(f"cioguard: {exc}. Run the same command again to enqueue the rest.")
        raise typer.Exit(2) from None


def _report_bad_lines(parsed: ParsedIds) -> None:
    for bad in parsed.bad[:MAX_BAD_LINES_SHOWN]:
        err.print(f"line {bad.line_no}: {bad.problem}", highlight=False, markup=False)
    if len(parsed.bad) > MAX_BAD_LINES_SHOWN:
        err.print(f"... and {len(parsed.bad) - MAX_BAD_LINES_SHOWN} more bad lines")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err,
    )  # fmt: skip


def _open(states: Counter[str]) -> int:
    return states["received"] + states["in_progress"]


def _wait(producer: Producer, submitted: Submitted, timeout_s: float) -> Counter[str]:
    from cioguard.cli._common import guarded
    from cioguard.producer import bulk

    with _progress() as progress:
        task = progress.add_task("waiting for erasure", total=len(submitted.request_ids))

        def show(counts: Counter[str]) -> None:
            progress.update(task, completed=counts["completed"] + counts["failed"])

        return guarded(
            lambda: bulk.wait(
                producer, submitted.request_ids, timeout_s=timeout_s, on_progress=show
            )
        )


def _summary(parsed: ParsedIds, submitted: Submitted, states: Counter[str] | None) -> Table:
    table = Table("", "count", title="erasure requests", show_header=False)
    table.add_row("ids read", str(len(parsed.ids)))
    table.add_row("bad lines (not submitted)", str(len(parsed.bad)))
    table.add_row("duplicates: repeated in the file", str(submitted.repeated_in_file))
    table.add_row("duplicates: already requested", str(submitted.already))
    table.add_row("re-enqueued (still received)", str(submitted.resumed))
    table.add_row("new requests", str(submitted.new))
    if states is not None:
        table.add_row("completed", str(states["completed"]))
        table.add_row("failed", str(states["failed"]))
        table.add_row("still open", str(_open(states)))
    return table


# -- cioguard status ID ---------------------------------------------------------------------


def status(request_id: str) -> None:
    """Show the state of an erasure request."""
    from cioguard.cli._common import fail, guarded
    from cioguard.erasure import requests as deletions

    st = guarded(lambda: deletions.get_status(_store(), request_id))
    if st is None:
        raise fail(f"no deletion request with id {request_id}", 1)
    table = Table(show_header=False)
    for field in ("request_id", "state", "regime", "reason", "manner", "mode", "attempts"):
        table.add_row(field, str(getattr(st, field)))
    for field in ("received_at", "due_at", "extended_to", "updated_at", "completed_at"):
        value = getattr(st, field)
        table.add_row(field, value.isoformat(timespec="seconds") if value else "-")
    table.add_row("extension_reason", st.extension_reason or "-")
    table.add_row("error_class", st.error_class or "-")
    console.print(table)


# -- cioguard deletions ... -----------------------------------------------------------------


def _requests_table(rows: list[DeletionStatus]) -> Table:
    """Fits 80 columns with full request ids (``status ID`` shows the rest)."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False,
                  caption="* due date extended")  # fmt: skip
    table.add_column("request", no_wrap=True)
    for name in ("state", "regime", "received", "due", "done"):
        table.add_column(name, no_wrap=True)
    for st in rows:
        due = _day(st.effective_due_at) + ("*" if st.extended_to else "")
        table.add_row(
            st.request_id, st.state, st.regime, _day(st.received_at), due, _day(st.completed_at)
        )
    return table


@deletions_app.command("list")
def deletions_list(
    state: str | None = typer.Option(None, help="received, in_progress, completed or failed"),
    limit: int = typer.Option(200, help="at most this many, newest first"),
) -> None:
    """List erasure requests, newest first."""
    from cioguard.cli._common import guarded
    from cioguard.erasure import requests as deletions

    rows = guarded(lambda: deletions.list_requests(_store(), state=state, limit=limit))
    console.print(_requests_table(rows) if rows else "No erasure request.")


@deletions_app.command("overdue")
def deletions_overdue(
    within_days: int = typer.Option(3, help="also list requests due within this many days"),
    alert: bool = typer.Option(False, "--alert", help="send one Sentry event per request"),
    every_s: int = typer.Option(
        0, "--every-s", help="repeat every N seconds, forever (a watch for compose/cron-less hosts)"
    ),
) -> None:
    """List erasure requests past or near their legal due date (exit 1 if any)."""
    import time

    while True:
        found = _overdue_once(within_days, alert)
        if every_s <= 0:
            raise typer.Exit(1 if found else 0)
        time.sleep(every_s)


def _overdue_once(within_days: int, alert: bool) -> bool:
    from cioguard.cli._common import guarded
    from cioguard.erasure import requests as deletions

    rows = guarded(lambda: deletions.overdue(_store(), within=timedelta(days=within_days)))
    console.print(_requests_table(rows) if rows else "No erasure request is overdue or due soon.")
    if alert and rows:
        _alert(rows)
    waiting = guarded(_waiting_line)
    return bool(rows) or bool(waiting)


def _alert(rows: list[DeletionStatus]) -> None:
    import sentry_sdk

    from cioguard.config import get_settings
    from cioguard.erasure.alerts import alert_overdue
    from cioguard.ops.sentry import init_sentry

    if not init_sentry(get_settings(), role="cli"):
        err.print("cioguard: SENTRY_DSN is not set; no alert sent")
        return
    sent = alert_overdue(rows)
    sentry_sdk.flush(timeout=10)
    err.print(f"sent {sent} alert(s) to Sentry")


@deletions_app.command("extend")
def deletions_extend(
    request_id: str,
    days: int = typer.Option(..., min=1, help="days to add to the due date in force"),
    reason: str = typer.Option(..., help="why (kept in the audit trail; no personal data)"),
) -> None:
    """Extend a request's due date within the legal maximum (GDPR +2 months, CCPA once +45 d)."""
    from cioguard.cli._common import guarded

    st = guarded(lambda: _extend(request_id, days, reason))
    console.print(f"{st.request_id}: due {_day(st.effective_due_at)} ({st.regime})")


def _extend(request_id: str, days: int, reason: str) -> DeletionStatus:
    from cioguard.cli._common import fail
    from cioguard.erasure import requests as deletions
    from cioguard.errors import InvalidInputError

    try:
        return deletions.extend(_store(), request_id, days=days, reason=reason)
    except LookupError:
        raise fail(f"no deletion request with id {request_id}", 1) from None
    except InvalidInputError as exc:
        raise fail(str(exc), 1) from None


@deletions_app.command("requeue")
def deletions_requeue(
    request_id: str | None = typer.Argument(None, help="one request id (whatever its age)"),
    stale: bool = typer.Option(
        False, "--stale", help="every request waiting longer than CIOGUARD_REQUEUE_AFTER_S"
    ),
) -> None:
    """Publish again, from the outbox, requests whose job never reached the broker."""
    from cioguard.cli._common import fail, guarded

    if not request_id and not stale:
        raise fail("give a request id or --stale")
    sent = guarded(lambda: _requeue(request_id))
    console.print(f"re-published {sent} erasure request(s)")
    raise typer.Exit(0 if sent or stale else 1)


def _requeue(request_id: str | None) -> int:
    from cioguard.delivery.relay import publisher
    from cioguard.erasure import outbox
    from cioguard.producer.api import get_producer

    producer = get_producer()
    after = producer.settings.requeue_after_s
    return outbox.requeue(
        producer.audit, publisher(producer.celery), older_than_s=after, request_id=request_id
    )


def _waiting_line() -> int:
    """How many requests are recorded but not handed to the broker for too long (printed)."""
    from cioguard.config import get_settings
    from cioguard.erasure import outbox

    after = get_settings().requeue_after_s
    waiting = outbox.waiting(_store(), older_than_s=after)
    if waiting:
        console.print(
            f"{len(waiting)} request(s) recorded but not handed to the broker for more than "
            f"{after:g} s (CIOGUARD_REQUEUE_AFTER_S): workers re-publish them; "
            "`cioguard deletions requeue --stale` does it now"
        )
    return len(waiting)
