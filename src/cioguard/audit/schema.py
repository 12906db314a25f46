"""The audit store's tables (SQLAlchemy Core). SQLite by default, PostgreSQL by URL.

* ``audit_log``: append-only, hash-chained record of every outcome and state change. One final
  row per job is guaranteed by the UNIQUE ``final_job_id`` column (set only on final rows; NULLs
  never collide). No raw identifiers: ``person_hash`` is the keyed hash.
* ``chain_head``: one row holding the last sequence number and hash; locking it serializes
  appends so the chain has no forks. ``anchor_*`` is where verification starts after a purge.
* ``deletion_requests``: the current state of each erasure request (the log keeps the history);
  ``extended_to``/``extension_reason`` when its due date was extended.
* ``tombstones``: people under erasure, by keyed hash; survives a Redis flush.
* ``dead_letters``: jobs that will not succeed as they are, with their sealed payload for replay.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("job_id", String(64), index=True),
    Column("final_job_id", String(64), unique=True),
    Column("request_id", String(64), index=True),
    Column("person_hash", String(64), index=True),
    Column("outcome", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error_class", String(64)),
    Column("http_status", Integer),
    Column("policy_version", String(100)),
    Column("detail", String(200)),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
)

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("anchor_seq", BigInteger, nullable=False),
    Column("anchor_hash", String(64), nullable=False),
)

deletion_requests = Table(
    "deletion_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("person_hash", String(64), nullable=False, index=True),
    Column("reason", String(32), nullable=False),
    Column("regime", String(16), nullable=False),
    Column("manner", String(32), nullable=False),
    Column("mode", String(32), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False, index=True),
    Column("extended_to", DateTime(timezone=True)),
    Column("extension_reason", String(200)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    Column("error_class", String(64)),
    Column("job_id", String(64)),
    # the outbox: the sealed erase job, kept until the request completes, and when it was last
    # handed to the broker (None: never, the publish failed) -- see cioguard.erasure.outbox
    Column("sealed_job", Text),
    Column("published_at", DateTime(timezone=True)),
)

tombstones = Table(
    "tombstones",
    metadata,
    Column("person_hash", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("person_hash", String(64), nullable=False),
    Column("sealed", Text, nullable=False),
    Column("error_class", String(64)),
    Column("http_status", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True)),
)
