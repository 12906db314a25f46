"""Customer.io's reporting webhooks: ``verify`` (HMAC, raw bytes, replay window),
``app`` (the Starlette receiver), ``intake`` (dedupe, seal, enqueue) and ``handlers`` (the worker
task that records each event and calls the application's handlers).

May import ``delivery`` and everything below it; never the CLI or the sandbox.
"""
