"""The local Track API stand-in (``server``, ``state``) and ``devstack`` (a private
``redis-server``, the sandbox and worker subprocesses for the demo, tests and benchmarks).

Development tooling: imported only by the CLI, itself and tests (checked by import-linter).
"""
