"""GDPR/CCPA erasure bookkeeping: deletion ``requests`` (state machine and trail),
legal ``deadlines``, ``tombstones`` (erased people whose jobs are dropped), ``alerts`` for
requests near their deadline and the privacy officer's ``export``.

May import ``broker``, ``privacy``, ``audit``, ``config`` and ``errors``; the worker carries the
requests out through ``delivery``.
"""
