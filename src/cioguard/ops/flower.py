"""Flower, started so that it shows the work but not the people, and takes no orders.

What Flower (2.2) shows of cioguard's tasks: names, ids (ULIDs), states, runtimes, the redacted
``argsrepr`` ``('<sealed>',)`` and return values (outcome words). For reserved and countdown
tasks its worker page and ``/api/workers?refresh=1`` show the real arguments whatever
``argsrepr`` says (celery-pitfalls.md): for cioguard that is the Fernet token, ciphertext.

:func:`flower_command` builds a ``celery -A cioguard.worker flower`` command line that always
has:

* ``--read_only``: without it, anyone who can log in can run any registered task through
  ``/api/task/send-task/<name>`` (an erasure included), restart pools or shut workers down;
* ``--persistent=False``: Flower would otherwise pickle every task it saw to a file on disk;
* ``--max_tasks``: a bounded in-memory history;
* ``--enable_events``: Flower switches task events on in the workers, or it sees no tasks.

:func:`check_environment` refuses to start without authentication (``FLOWER_BASIC_AUTH`` as
``user:password``, or OAuth via ``FLOWER_AUTH``) and with ``FLOWER_UNAUTHENTICATED_API`` on.
The password stays in the environment (Flower reads ``FLOWER_*`` variables itself) rather than
in the command line, where ``ps`` shows it.

Flower runs with ``-A cioguard.ops.flower:app``, a Celery app built from the broker settings
alone, not with ``-A cioguard.worker``: importing the worker module demands the payload key, the
hash key and Customer.io credentials, none of which Flower needs, and a dashboard that holds the
payload key can read every queued job. Give Flower ``CIOGUARD_BROKER_URL`` and its own
``FLOWER_*`` variables only.

Run it as ``cioguard flower --address 127.0.0.1 --port 5555`` (or ``python -m
cioguard.ops.flower``, the same). Flower runs with :func:`flower_environment`: the broker URL,
``FLOWER_*`` and the system's variables, never a key or credential. See docs/flower.md.

Note:
    ``/healthcheck`` and ``/metrics`` answer without authentication (Flower's choice); the
    metrics carry task names, states and worker names only. Bind to a private address or put
    a reverse proxy in front; never publish the port.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Mapping, Sequence

from celery import Celery

from cioguard.broker.celeryconf import build_celery
from cioguard.config import load_settings
from cioguard.errors import ConfigurationError

DEFAULT_MAX_TASKS = 10_000
_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})


@functools.lru_cache(maxsize=1)
def monitor_app() -> Celery:
    """The app Flower runs with: broker and queue settings only, no keys or credentials."""
    try:
        return build_celery(load_settings(), "cioguard-flower")
    except ConfigurationError as exc:
        sys.exit(f"cioguard: configuration error: {exc}")


def __getattr__(name: str) -> Celery:
    """``cioguard.ops.flower:app`` for ``celery -A``, built on first use, not at import."""
    if name == "app":
        return monitor_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a Flower set-up that would show or accept anything without authentication."""
    basic = environ.get("FLOWER_BASIC_AUTH", "").strip()
    oauth = environ.get("FLOWER_AUTH", "").strip()
    if not basic and not oauth:
        raise ConfigurationError(
            "FLOWER_BASIC_AUTH is not set: expected user:password (or FLOWER_AUTH for OAuth)"
        )
    for pair in filter(None, (p.strip() for p in basic.split(","))):
        user, sep, password = pair.partition(":")
        if not sep or not user or len(password) < 12:
            raise ConfigurationError(
                "FLOWER_BASIC_AUTH is invalid: expected user:password with a password of at "
                "least 12 characters"
            )
    if environ.get("FLOWER_UNAUTHENTICATED_API", "").strip().lower() in _TRUE:
        raise ConfigurationError(
            "FLOWER_UNAUTHENTICATED_API is on: it opens Flower's API to anyone; unset it"
        )


def flower_command(
    *,
    address: str = "127.0.0.1",
    port: int = 5555,
    max_tasks: int = DEFAULT_MAX_TASKS,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``celery ... flower`` argv, with the guards above placed after ``extra``."""
    return [
        sys.executable, "-m", "celery", "-A", "cioguard.ops.flower:app", "flower",
        f"--address={address}", f"--port={port}", *extra,
        "--read_only=True", "--persistent=False", f"--max_tasks={max_tasks}",
        "--enable_events=True", "--debug=False",
    ]  # fmt: skip


KEPT_CIOGUARD = frozenset({"CIOGUARD_BROKER_URL", "CIOGUARD_LOG_FORMAT"})
_SECRET_PREFIXES = ("CIOGUARD_", "CUSTOMERIO_", "SENTRY_", "AWS_", "GOOGLE_", "POSTGRES_")


def flower_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment Flower gets: no payload key, hash key, credential or DSN.

    ``cioguard`` loads ``.env`` into its own environment, so without this filter a ``cioguard
    flower`` started next to a full ``.env`` would hand Flower the payload key.
    """
    return {
        k: v for k, v in environ.items() if k in KEPT_CIOGUARD or not k.startswith(_SECRET_PREFIXES)
    }


def exec_flower(
    *, address: str, port: int, max_tasks: int = DEFAULT_MAX_TASKS, extra: Sequence[str] = ()
) -> None:
    """Check the environment, then replace this process with Flower (filtered environment).

    Raises :class:`ConfigurationError` when authentication is missing or weak.
    """
    check_environment(os.environ)
    command = flower_command(address=address, port=port, max_tasks=max_tasks, extra=extra)
    os.execve(command[0], command, flower_environment(os.environ))


def main(argv: Sequence[str] | None = None) -> None:
    """Check the environment, then replace this process with Flower."""
    parser = argparse.ArgumentParser(prog="python -m cioguard.ops.flower", description=__doc__)
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (private)")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--max-tasks", type=int, default=DEFAULT_MAX_TASKS)
    args, extra = parser.parse_known_args(argv)
    try:
        exec_flower(address=args.address, port=args.port, max_tasks=args.max_tasks, extra=extra)
    except ConfigurationError as exc:
        print(f"cioguard: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
