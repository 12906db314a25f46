"""The local Track API stand-in (``server``, ``routes``, ``state``; every request checked
against Customer.io's published spec by ``conformance``, ``openapi``, ``bodies``, ``rawjson``)
and ``devstack`` (a private ``redis-server``, the sandbox and worker subprocesses for the demo,
tests and benchmarks).

Development tooling: imported only by the CLI, itself and tests (checked by import-linter).
"""
