"""What operators watch: Prometheus ``metrics``, JSON ``logs``, ``sentry`` (with argument
scrubbing), ``flower`` (read-only, authenticated) and ``observability`` (one call that sets them
up in a process).

May import ``producer``, ``erasure``, ``broker``, ``privacy``, ``audit``, ``config`` and
``errors``; ``delivery`` and the tasks import this package, never the other way round.
"""
