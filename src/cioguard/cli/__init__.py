"""The ``cioguard`` command line: ``main`` assembles one module per command group
(``audit``, ``credentials``, ``erasure``, ``ops`` with ``check``, ``policy``, ``webhooks``,
``demo``); they share ``_common`` (consoles, ``fail``, ``guarded``).

The top layer: may import every package; nothing but the CLI (and tests) imports it.
"""
