"""The durable audit store: ``store`` (append-only rows, final-row uniqueness), ``schema``
(SQLAlchemy Core tables) and ``chain`` (the hash chain that makes the trail tamper-evident).

Imports only ``config`` and ``errors``: nothing of the worker (checked by import-linter).
"""
