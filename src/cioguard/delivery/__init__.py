"""The worker's pipeline and its parts: ``pipeline`` (the steps for a list of jobs),
``ratelimit`` (+ Lua), ``retrying``, ``customerio`` (the Track API boundary), ``credentials``,
``deadletters``, ``replay`` and ``runtime`` (clients built once per process).

Celery-free: ``tasks`` wires these to Celery. May import ``ops``, ``producer``, ``erasure``,
``broker``, ``privacy``, ``audit``, ``config`` and ``errors``; never ``webhooks`` or the CLI.
"""
