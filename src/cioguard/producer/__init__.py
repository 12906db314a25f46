"""What application code calls: validate, sanitize, seal and enqueue (``api``, ``validate``,
``bulk``).

Runs in the application process; needs the broker, the keys and the policy. May import
``erasure`` (a deletion is recorded before it is enqueued), ``broker``, ``privacy``, ``audit``,
``config`` and ``errors``; never the worker's packages (``delivery``, ``webhooks``, ``ops``).
"""
