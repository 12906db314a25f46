"""The sanitization policy and what applies it: ``policy``, ``sanitizer``, ``detectors``,
``hashing`` and the shipped ``default_policy.toml``.

Pure functions over data, run in the application and again in the worker. Imports only
``config`` and ``errors`` (checked by import-linter).
"""
