"""``cioguard import FILE``: a backfill of people (JSON lines or CSV) through bulk enqueue.

Every record becomes an identify (and, with ``--track NAME``, an event ``NAME`` for the same
person), validated, sanitized and sealed in this process and published a batch per Redis round
trip (:mod:`cioguard.producer.many`). The workers deliver them at the fleet-wide rate limit as
they deliver everything else: this command only fills the queue, so the limit holds downstream.

Records: JSON lines (one object per line; ``--id-field``, default ``id``, is the person id, every
other key an attribute) or CSV with a header (the id column likewise; empty cells are left out,
every other cell is a string attribute). ``FILE`` ``-`` reads stdin (``--format`` then says which,
JSON lines by default). A refused record is named by its line number and the problem, never its
content, and the rest go on. ``--skip N`` skips the first N records: the summary (and a broker
failure) says which N resumes the import exactly after the last published batch.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cioguard.cli._common import console, err, fail, guarded

if TYPE_CHECKING:
    from cioguard.producer.api import Producer
    from cioguard.producer.many import BatchPublisher, Prepared

MAX_REFUSED_SHOWN = 50
FORMATS = ("jsonl", "csv")


def register(app: typer.Typer) -> None:
    """Add ``import`` to the root app."""
    app.command("import")(import_file)


@dataclass(frozen=True)
class Record:
    """One record of the file: its line number and either the person or why it is refused."""

    line_no: int
    person_id: Any = None
    attributes: Any = None
    problem: str | None = None


@dataclass
class Outcome:
    """What an import did: counts, refused lines and where to resume."""

    skipped: int = 0
    published: int = 0
    events: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    resume_at: int = 0  # records (counting skipped ones) confirmed or refused: --skip this
    elapsed_s: float = 0.0


def import_file(
    file: str = typer.Argument(..., help="JSON lines or CSV with a header; - for stdin"),
    fmt: str | None = typer.Option(None, "--format", help="jsonl or csv (default: by extension)"),
    id_field: str = typer.Option("id", "--id-field", help="the field or column of the person id"),
    track: str | None = typer.Option(None, "--track", help="also send this event per person"),
    skip: int = typer.Option(0, "--skip", min=0, help="skip the first N records (to resume)"),
    batch: int = typer.Option(500, "--batch", min=1, max=5000, help="records per round trip"),
) -> None:
    """Identify every person of a file through bulk enqueue (exit 1 if a record was refused)."""
    from cioguard.producer.api import get_producer
    from cioguard.producer.many import BatchPublisher

    kind = _format(file, fmt)
    producer = guarded(get_producer)
    if track is not None:
        from cioguard.producer import validate

        guarded(lambda: validate.event_name(track))
    total = _count_records(file, kind)
    with _opened(file) as handle, _progress() as progress:
        task = progress.add_task("publishing", total=max(0, total - skip) if total else None)
        with BatchPublisher(producer) as publisher:
            outcome = _run(
                producer, publisher, _records(handle, kind, id_field), skip=skip, batch=batch,
                track=track, advance=lambda n: progress.advance(task, n),
            )  # fmt: skip
    _report(outcome, track)
    raise typer.Exit(1 if outcome.refused else 0)


def _format(file: str, fmt: str | None) -> str:
    kind = fmt or ("csv" if file.lower().endswith(".csv") else "jsonl")
    if kind not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}")
    return kind


@contextmanager
def _opened(file: str) -> Iterator[IO[str]]:
    if file == "-":
        yield io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="")
        return
    try:
        with Path(file).open(encoding="utf-8", errors="replace", newline="") as handle:
            yield handle
    except OSError as exc:
        raise fail(f"cannot read {file} ({exc.strerror})") from None


def _count_records(file: str, kind: str) -> int:
    """Lines of a file (minus a CSV header), for the progress bar; 0 for stdin (unknown)."""
    if file == "-":
        return 0
    try:
        with Path(file).open("rb") as handle:
            lines = sum(1 for line in handle if line.strip())
    except OSError as exc:
        raise fail(f"cannot read {file} ({exc.strerror})") from None
    return max(0, lines - 1) if kind == "csv" else lines


def _records(handle: IO[str], kind: str, id_field: str) -> Iterator[Record]:
    return _csv_records(handle, id_field) if kind == "csv" else _jsonl_records(handle, id_field)


def _jsonl_records(handle: IO[str], id_field: str) -> Iterator[Record]:
    for line_no, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            yield Record(line_no, problem="not valid JSON")
            continue
        if not isinstance(value, dict):
            yield Record(line_no, problem="not a JSON object")
        elif id_field not in value:
            yield Record(line_no, problem=f"no {id_field!r} field")
        else:
            person_id = value.pop(id_field)
            yield Record(line_no, person_id, value)


def _csv_records(handle: IO[str], id_field: str) -> Iterator[Record]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        return
    if id_field not in header:
        raise fail(f"the CSV header has no {id_field!r} column (see --id-field)")
    if len(set(header)) != len(header):
        raise fail("the CSV header names a column twice")
    at = header.index(id_field)
    try:
        for row in reader:
            line_no = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield Record(line_no, problem=f"{len(row)} cells, the header has {len(header)}")
                continue
            attrs = {name: cell for name, cell in zip(header, row, strict=True) if cell != ""}
            attrs.pop(id_field, None)
            yield Record(line_no, row[at], attrs)
    except csv.Error:
        raise fail(f"line {reader.line_num}: the CSV cannot be read past this line") from None


def _run(
    producer: Producer,
    publisher: BatchPublisher,
    records: Iterator[Record],
    *,
    skip: int,
    batch: int,
    track: str | None,
    advance: Any,
) -> Outcome:
    """Prepare, publish a batch at a time; a broker failure says where to resume and exits 2."""
    from cioguard.producer.many import prepare_identify, prepare_track

    outcome, started = Outcome(resume_at=skip), time.monotonic()
    ready: list[Prepared] = []
    seen = pending = refused_pending = 0
    for record in records:
        seen += 1
        if seen <= skip:
            outcome.skipped += 1
            continue
        problem = record.problem
        if problem is None:
            try:
                ready.append(prepare_identify(producer, record.person_id, record.attributes))
                if track is not None:
                    ready.append(prepare_track(producer, record.person_id, track))
                pending += 1
            except (ValueError, TypeError) as exc:
                problem = str(exc)
        if problem is not None:
            outcome.refused.append((record.line_no, problem))
            refused_pending += 1
        if pending >= batch:
            _flush(publisher, ready, outcome, seen, pending, track)
            advance(pending + refused_pending)
            pending = refused_pending = 0
    _flush(publisher, ready, outcome, seen, pending, track)
    advance(pending + refused_pending)
    outcome.resume_at = max(seen, skip)
    outcome.elapsed_s = time.monotonic() - started
    return outcome


def _flush(
    publisher: BatchPublisher,
    ready: list[Prepared],
    outcome: Outcome,
    seen: int,
    people: int,
    track: str | None,
) -> None:
    from cioguard.producer.many import PublishFailedError

    try:
        publisher.publish(ready)
    except PublishFailedError as exc:
        _report(outcome, track)
        raise fail(
            f"the broker (CIOGUARD_BROKER_URL) failed while a batch was sent ({exc.cause}); "
            f"{outcome.published} people are enqueued. Resume with --skip {outcome.resume_at} "
            "(the failed batch may be enqueued already: identifies are safe to send twice)"
        ) from None
    ready.clear()
    outcome.published += people
    outcome.events += people if track else 0
    outcome.resume_at = seen


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err,
    )  # fmt: skip


def _report(outcome: Outcome, track: str | None) -> None:
    for line_no, problem in outcome.refused[:MAX_REFUSED_SHOWN]:
        err.print(f"line {line_no}: {problem}", highlight=False, markup=False)
    if len(outcome.refused) > MAX_REFUSED_SHOWN:
        err.print(f"... and {len(outcome.refused) - MAX_REFUSED_SHOWN} more refused records")
    table = Table(title="cioguard import", box=box.SIMPLE, show_header=False)
    table.add_row("published (people)", str(outcome.published))
    if track:
        table.add_row("published (events)", str(outcome.events))
    table.add_row("refused", str(len(outcome.refused)))
    table.add_row("skipped (--skip)", str(outcome.skipped))
    elapsed = outcome.elapsed_s or (1e-9)
    table.add_row("elapsed", f"{outcome.elapsed_s:.1f} s")
    table.add_row("people/s", f"{outcome.published / elapsed:.0f}")
    table.add_row("to resume after this run", f"--skip {outcome.resume_at}")
    console.print(table)
