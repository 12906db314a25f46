"""The durable audit store: an append-only, hash-chained log of every outcome.

Every row carries the SHA-256 of the previous row's hash and its own canonical encoding, so a
modified, deleted, inserted or reordered row breaks the chain (:mod:`cioguard.audit.chain`
verifies it). Appends are serialized by locking the single ``chain_head`` row (``SELECT ... FOR
UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so concurrent workers never fork the
chain. Reads go through :meth:`AuditStore.reading`, which takes no write lock (a deferred
transaction on SQLite) and turns database errors into :class:`AuditUnavailableError`, so a
worker retries a job rather than losing it when the store is briefly away.

Note: the chain is tamper-evident, not tamper-proof: whoever can write the database can rebuild
it end to end. ``cioguard audit verify`` prints the head hash so operators can publish it where
the worker cannot rewrite it; a rebuilt chain then no longer matches the published head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.schema import CreateColumn

from cioguard.audit.schema import audit_log, chain_head, metadata
from cioguard.errors import AuditUnavailableError

GENESIS_HASH = "0" * 64
_HASHED_FIELDS = (
    "seq", "at", "kind", "job_id", "final_job_id", "request_id", "person_hash", "outcome",
    "attempts", "error_class", "http_status", "policy_version", "detail", "prev_hash",
)  # fmt: skip


@dataclass(frozen=True)
class AuditEntry:
    """One audit row as the caller gives it. ``final`` marks the single closing row of a job."""

    kind: str
    outcome: str
    person_hash: str | None = None
    job_id: str | None = None
    request_id: str | None = None
    final: bool = False
    attempts: int = 0
    error_class: str | None = None
    http_status: int | None = None
    policy_version: str | None = None
    detail: str | None = None


_ENTRY_FIELDS = tuple(f.name for f in fields(AuditEntry))


def utcnow() -> datetime:
    return datetime.now(UTC)


def canonical_time(value: datetime) -> str:
    """One spelling of a timestamp for hashing, whatever the database hands back."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def row_digest(row: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON encoding of a row's hashed fields."""
    values = [canonical_time(row[f]) if f == "at" else row[f] for f in _HASHED_FIELDS]
    encoded = json.dumps(values, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


def make_engine(url: str) -> Engine:
    """An engine with the settings the chain needs (SQLite: WAL, immediate write locks)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=30000")


def _sqlite_on_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(_READ_OPTION, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_READ_OPTION = "cioguard_read_only"


class AuditStore:
    """Appends to and reads the audit log. One instance per process (it owns the engine pool)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> AuditStore:
        return cls(make_engine(url))

    def migrate(self) -> None:
        """Create missing tables and columns, and the chain head (idempotent)."""
        with self.transaction() as conn:
            metadata.create_all(conn)
            _add_missing_columns(conn)
            if conn.execute(select(chain_head.c.id)).first() is None:
                conn.execute(
                    insert(chain_head).values(
                        id=1, seq=0, hash=GENESIS_HASH, anchor_seq=0, anchor_hash=GENESIS_HASH
                    )
                )

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction; database errors become :class:`AuditUnavailableError`."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except (OperationalError, SQLAlchemyError) as exc:
            raise AuditUnavailableError(f"audit store unavailable ({type(exc).__name__})") from None

    @contextmanager
    def reading(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read-only connection; database errors become :class:`AuditUnavailableError`.

        ``snapshot=True`` makes every statement see the same state (what chain verification
        needs to compare rows with the head): REPEATABLE READ on PostgreSQL; on SQLite in WAL
        mode one deferred transaction already is a snapshot.
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{_READ_OPTION: True})
                if snapshot and conn.dialect.name == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                yield conn
                conn.rollback()
        except (OperationalError, SQLAlchemyError) as exc:
            raise AuditUnavailableError(f"audit store unavailable ({type(exc).__name__})") from None

    def append(self, conn: Connection, entry: AuditEntry, *, at: datetime | None = None) -> int:
        """Append one chained row inside the caller's transaction; returns its sequence number."""
        return self.append_many(conn, [entry], at=at)[0]

    def append_many(
        self, conn: Connection, entries: Sequence[AuditEntry], *, at: datetime | None = None
    ) -> list[int]:
        """Append chained rows in order inside the caller's transaction; returns their seqs.

        One head lock, one multi-row insert and one head update for the lot: what makes opening
        thousands of erasure requests take seconds rather than minutes.
        """
        if not entries:
            return []
        head = conn.execute(select(chain_head).where(chain_head.c.id == 1).with_for_update()).one()
        when = at or utcnow()
        seq, prev = int(head.seq), str(head.hash)
        first = seq + 1
        rows, stamp = [], canonical_time(when)
        for entry in entries:
            seq += 1
            row = _row(entry, seq=seq, at=when, prev_hash=prev, stamp=stamp)
            prev = row["row_hash"]
            rows.append(row)
        _insert_plan(conn.dialect).execute(conn, rows)
        conn.execute(update(chain_head).where(chain_head.c.id == 1).values(seq=seq, hash=prev))
        return list(range(first, seq + 1))

    def record(self, entry: AuditEntry) -> bool:
        """Append one row in its own transaction. False if the job already has its final row."""
        try:
            with self.transaction() as conn:
                self.append(conn, entry)
        except IntegrityError:
            return False
        return True

    def has_final(self, job_id: str) -> bool:
        """True once the job's final row exists: the job is done, whatever runs it again."""
        with self.reading() as conn:
            found = conn.execute(
                select(audit_log.c.seq).where(audit_log.c.final_job_id == job_id)
            ).first()
        return found is not None

    def final_row(self, job_id: str) -> dict[str, Any] | None:
        with self.reading() as conn:
            row = conn.execute(select(audit_log).where(audit_log.c.final_job_id == job_id)).first()
        return dict(row._mapping) if row else None

    def rows(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every row in chain order (optionally from a time on)."""
        query = select(audit_log).order_by(audit_log.c.seq)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        with self.reading() as conn:
            for row in conn.execute(query):
                yield dict(row._mapping)

    def head(self) -> dict[str, Any]:
        with self.reading() as conn:
            return dict(conn.execute(select(chain_head)).one()._mapping)

    def dispose(self) -> None:
        self.engine.dispose()


def _row(
    entry: AuditEntry, *, seq: int, at: datetime, prev_hash: str, stamp: str | None = None
) -> dict[str, Any]:
    """The row to insert, hash included. ``stamp`` is ``canonical_time(at)``, once per batch."""
    row = {name: getattr(entry, name) for name in _ENTRY_FIELDS}  # scalars: no deep copy
    final = row.pop("final")
    row["seq"], row["at"], row["prev_hash"] = seq, at, prev_hash
    row["final_job_id"] = entry.job_id if final else None
    values = [row[f] for f in _HASHED_FIELDS]
    values[1] = stamp if stamp is not None else canonical_time(at)  # "at" is the 2nd field
    row["row_hash"] = hashlib.sha256(_ENCODE(values).encode()).hexdigest()
    return row


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
"""What :func:`row_digest`'s ``json.dumps`` call does, without building an encoder per row."""


@dataclass(frozen=True)
class _InsertPlan:
    """``INSERT INTO audit_log`` compiled once per dialect, run as one DBAPI ``executemany``.

    Note: hand-rolled rather than ``conn.execute(insert(audit_log), rows)`` because SQLAlchemy
    rebuilds and type-processes every parameter set of an executemany in Python (half of the
    append's CPU in the micro-benchmark, ``bench/audit_append.py``); here the statement and each
    column's bind processor are looked up once, and the driver gets plain tuples or dicts. The
    values are the ones SQLAlchemy would send (the same processors), so rows read back alike.
    """

    sql: str
    keys: tuple[str, ...]
    positional: bool
    processors: tuple[tuple[int, Any], ...]

    def execute(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        params: list[Any] = []
        for row in rows:
            values = [row[k] for k in self.keys]
            for index, process in self.processors:
                values[index] = process(values[index])
            params.append(
                tuple(values) if self.positional else dict(zip(self.keys, values, strict=True))
            )
        conn.exec_driver_sql(self.sql, params)


_PLANS: dict[str, _InsertPlan] = {}


def _insert_plan(dialect: Any) -> _InsertPlan:
    key = f"{dialect.name}+{dialect.driver}"
    plan = _PLANS.get(key)
    if plan is None:
        names = [c.name for c in audit_log.columns]
        compiled = insert(audit_log).compile(dialect=dialect, column_keys=names)
        keys = tuple(compiled.positiontup or names) if compiled.positional else tuple(names)
        processors = []
        for index, name in enumerate(keys):
            process = audit_log.c[name].type._cached_bind_processor(dialect)
            if process is not None:
                processors.append((index, process))
        plan = _InsertPlan(str(compiled), keys, bool(compiled.positional), tuple(processors))
        _PLANS[key] = plan
    return plan


def _add_missing_columns(conn: Connection) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for nullable columns added to a table after it was created.

    Note: a deliberately small migration step (new nullable columns only), not Alembic: every
    schema change so far is additive.
    """
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
