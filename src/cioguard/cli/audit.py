"""`cioguard audit verify|export|purge|find`: the audit trail for operators and regulators.

Registered by :mod:`cioguard.cli.main`. These commands need only ``CIOGUARD_AUDIT_URL`` (and
``CIOGUARD_HASH_KEY`` for ``find``), not the broker or payload keys, so they run on an
auditor's machine. Exit codes: 0 fine, 1 the answer is "no" (broken chain), 2 could not run.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich import box
from rich.table import Table

from cioguard.cli._common import console, err

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cioguard.audit.store import AuditStore
    from cioguard.erasure.requests import DeletionStatus

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit trail.")
_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]


def register(app: typer.Typer) -> None:
    """Add the ``audit`` group to the root app."""
    app.add_typer(audit_app, name="audit")


def open_store(*, migrate: bool = False) -> AuditStore:
    """The audit store named by ``CIOGUARD_AUDIT_URL``; config/store errors exit 2 with a line."""
    from cioguard.audit.store import AuditStore
    from cioguard.cli._common import guarded
    from cioguard.config import get_settings

    store = guarded(lambda: AuditStore.from_url(get_settings().audit_url))
    if migrate:
        guarded(store.migrate)
    return store


@audit_app.command("verify")
def verify(
    published: Annotated[
        list[str] | None,
        typer.Option(help="a head published earlier, as SEQ:HASH (repeatable): must still match"),
    ] = None,
) -> None:
    """Check the hash chain; name the first bad row (exit 1), or print the head to publish."""
    from cioguard.audit.chain import verify as verify_chain
    from cioguard.cli._common import guarded

    expected = [_published(p) for p in published or []]
    store = open_store()
    result = guarded(lambda: verify_chain(store))
    if not result.ok:
        err.print(f"[bold red]FAILED[/] first bad row: seq {result.bad_seq}: {result.problem}")
        err.print(f"recorded head: seq {result.head_seq} hash {result.head_hash}", highlight=False)
        raise typer.Exit(1)
    _check_published(store, expected)
    console.print(
        f"OK: {result.rows_checked} rows verified (from seq {result.anchor_seq + 1}).",
        highlight=False,
    )
    console.print(f"head seq {result.head_seq} hash {result.head_hash}", highlight=False)
    console.print("Publish this line where the worker cannot write it (see docs/erasure.md).")


def _published(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise typer.BadParameter(
            "expected SEQ:HASH, e.g. 48210:3f1c0a...", param_hint="--published"
        )
    return int(seq), digest.lower()


def _check_published(store: AuditStore, expected: list[tuple[int, str]]) -> None:
    from cioguard.audit.chain import check_published
    from cioguard.cli._common import guarded

    for seq, digest in expected:
        problem = guarded(partial(check_published, store, seq, digest))
        if problem is not None:
            err.print(f"[bold red]FAILED[/] published head seq {seq}: {problem}")
            raise typer.Exit(1)
        console.print(f"published head seq {seq} still matches", highlight=False)


@audit_app.command("export")
def export(
    format_: str = typer.Option("jsonl", "--format", help="jsonl or csv"),
    since: Annotated[
        datetime | None,
        typer.Option(formats=_DATE_FORMATS, help="only requests received on/after this date (UTC)"),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="default: stdout")] = None,
) -> None:
    """Erasure request records (CCPA §7101 fields), keyed hash only, for a compliance request."""
    from cioguard.cli._common import fail, guarded
    from cioguard.erasure import export as audit_export

    writers = {"jsonl": audit_export.write_jsonl, "csv": audit_export.write_csv}
    if format_ not in writers:
        raise fail("--format must be jsonl or csv")
    when = since.replace(tzinfo=UTC) if since else None
    store = open_store()
    with _output(output) as out:
        count = guarded(lambda: writers[format_](audit_export.records(store, since=when), out))
    err.print(f"exported {count} request record(s)")


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        yield handle


@audit_app.command("purge")
def purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="only say what would be deleted"),
) -> None:
    """Delete rows, closed requests and dead letters older than CIOGUARD_RETENTION_DAYS.

    The chain stays valid."""
    from cioguard.audit.chain import purge as purge_chain
    from cioguard.cli._common import guarded
    from cioguard.config import get_settings
    from cioguard.delivery import deadletters

    days = guarded(lambda: get_settings().retention_days)
    store = open_store()
    result = guarded(lambda: purge_chain(store, retention_days=days, dry_run=dry_run))
    letters = guarded(lambda: deadletters.purge(store, before=result.cutoff, dry_run=dry_run))
    verb = "would delete" if dry_run else "deleted"
    span = f" (seq {result.first_seq}-{result.last_seq})" if result.rows else ""
    console.print(f"cutoff {result.cutoff:%Y-%m-%d} ({days} days)", highlight=False)
    console.print(f"{verb} {result.rows} audit row(s){span}", highlight=False)
    console.print(f"{verb} {result.requests} closed erasure request(s)", highlight=False)
    console.print(f"{verb} {letters} dead letter(s)", highlight=False)
    if result.purge_seq is not None:
        console.print(f"recorded as audit row {result.purge_seq}", highlight=False)


@audit_app.command("find")
def find(
    person_id: str | None = typer.Option(
        None, "--person-id", help="the id to look for (prompted, hidden, when omitted)"
    ),
) -> None:
    """List the records of one person by the keyed hash of their id (the id is never printed)."""
    from cioguard.cli._common import guarded
    from cioguard.config import get_settings
    from cioguard.erasure import export as audit_export
    from cioguard.privacy.hashing import person_hash

    pid = person_id if person_id is not None else typer.prompt("person id", hide_input=True)
    key = guarded(lambda: get_settings().hash_key_bytes())
    hashed = person_hash(key, pid)
    store = open_store()
    requests = guarded(lambda: audit_export.requests_for_person(store, hashed))
    rows = guarded(lambda: audit_export.rows_for_person(store, hashed))
    console.print(f"person hash {hashed}", highlight=False)
    if not requests and not rows:
        console.print("No record for this id.")
        return
    console.print(_requests_table(requests))
    console.print(_rows_table(rows))


def _requests_table(requests: list[DeletionStatus]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="erasure requests")
    table.add_column("request", no_wrap=True)
    for name in ("state", "received", "due", "completed"):
        table.add_column(name, no_wrap=True)
    for st in requests:
        table.add_row(
            st.request_id, st.state, _day(st.received_at), _day(st.effective_due_at),
            _day(st.completed_at),
        )  # fmt: skip
    return table


def _rows_table(rows: list[dict[str, object]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="audit rows")
    table.add_column("seq", no_wrap=True)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("kind")
    table.add_column("outcome")
    table.add_column("request", no_wrap=True)
    table.add_column("detail")
    for row in rows:
        at = row["at"]
        table.add_row(
            str(row["seq"]), at.strftime("%Y-%m-%d %H:%M") if isinstance(at, datetime) else "",
            str(row["kind"]), str(row["outcome"]), str(row["request_id"] or "-"),
            str(row["detail"] or ""),
        )  # fmt: skip
    return table


def _day(value: object) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else "-"
