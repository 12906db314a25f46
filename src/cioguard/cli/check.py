"""``cioguard check``: what is wrong with this installation, one finding per line.

Each check is a small function returning :class:`Finding` (or a few); :func:`run_checks` runs
them all, and a check that crashes becomes a failed finding instead of stopping the others.
Findings name variables and hosts, never values: no key, password or credential is printed (URLs
are shown as ``host:port``).

What is checked: the broker answers (and will not evict jobs); the audit store answers and has
every table and column; Customer.io accepts the credentials, the account's region matches
``CUSTOMERIO_REGION`` and the key is younger than the rotation policy (from
:func:`cioguard.cli.credentials.check_credentials`); the hash and payload keys are present, not
obviously weak, and distinct; the policy file is valid; the webhook signing secret is set; and,
where Flower is configured, it asks for a password and refuses control commands.

Note:
    The key-strength test is a guard against placeholders and typing, not a measure of
    entropy: a key that passes may still be guessable. Generate keys with ``cioguard keys new``.
"""

from __future__ import annotations

import base64
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis
from sqlalchemy import Connection, create_engine, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from cioguard.config import Settings
from cioguard.errors import ConfigurationError

TIMEOUT_S = 5.0
MIN_KEY_BITS = 96  # Shannon estimate over the characters; a 32-char hex key scores ~115
MIN_DISTINCT_CHARS = 10
MIN_WEBHOOK_SECRET_CHARS = 16
FLOWER_PROBE_WORKER = "cioguard-check-probe@nowhere"


@dataclass(frozen=True)
class Finding:
    """One fact about the installation. ``message`` never contains a secret."""

    name: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.message}"


def run_checks(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Finding]:
    """Every check, in the order a new operator should fix things."""
    env = os.environ if environ is None else environ
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("broker", lambda: [check_broker(settings)]),
        ("audit store", lambda: [check_audit(settings)]),
        ("customer.io", lambda: check_customerio(settings)),
        ("hash key", lambda: [check_hash_key(settings)]),
        ("payload key", lambda: [check_payload_key(settings)]),
        ("policy", lambda: [check_policy(settings)]),
        ("webhook secret", lambda: [check_webhook_secret(settings)]),
        ("flower", lambda: check_flower(settings, env)),
    ]
    findings: list[Finding] = []
    for name, check in checks:
        try:
            findings.extend(check())
        except Exception as exc:  # one broken check must not hide the others
            findings.append(Finding(name, False, f"could not be checked ({type(exc).__name__})"))
    return findings


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


# -- broker and audit store -----------------------------------------------------------------


def check_broker(settings: Settings) -> Finding:
    """Redis answers a PING and does not evict keys (an evicted key is a lost job)."""
    where = _where(settings.broker_url)
    client = redis.Redis.from_url(
        settings.broker_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
    )
    try:
        client.ping()
        config = _redis_config(client)
        version = str(client.info("server").get("redis_version", ""))
    except (redis.RedisError, OSError) as exc:
        return Finding(
            "broker", False, f"Redis at {where} does not answer ({type(exc).__name__}): "
            "check CIOGUARD_BROKER_URL and that Redis runs",
        )  # fmt: skip
    finally:
        client.close()
    if not redis_version_ok(version):
        return Finding(
            "broker", False, f"Redis at {where} is {version or 'of an unknown version'}: cioguard "
            f"needs {'.'.join(map(str, MIN_REDIS))} or newer (its consumers pop with BLMOVE)",
        )  # fmt: skip
    policy = config.get("maxmemory-policy")
    if policy not in (None, "noeviction"):
        return Finding(
            "broker", False, f"Redis at {where} has maxmemory-policy {policy}: it may evict "
            "queued jobs; set maxmemory-policy noeviction",
        )  # fmt: skip
    aof = config.get("appendonly")
    note = "; AOF is off: queued jobs are lost if Redis restarts" if aof == "no" else ""
    return Finding("broker", True, f"Redis at {where} answers (maxmemory-policy {policy}){note}")


MIN_REDIS = (6, 2)


def redis_version_ok(version: str) -> bool:
    """True for Redis 6.2 or newer (``BLMOVE``, see transport.py); "7.0.15" -> True."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= MIN_REDIS


def _redis_config(client: redis.Redis) -> dict[str, str]:
    """``maxmemory-policy`` and ``appendonly``; empty where ``CONFIG`` is off (managed Redis)."""
    try:
        found = client.config_get("maxmemory-policy")
        found.update(client.config_get("appendonly"))
    except redis.ResponseError:
        return {}
    return {str(k): str(v) for k, v in found.items()}


def check_audit(settings: Settings) -> Finding:
    """The audit store answers and has every table and column the code uses."""
    url = make_url(settings.audit_url)
    sqlite = url.get_backend_name() == "sqlite"
    where = f"sqlite file {url.database}" if sqlite else f"{url.get_backend_name()} at {url.host}"
    on_disk = sqlite and url.database not in (None, "", ":memory:")
    if on_disk and not Path(str(url.database)).is_file():
        return Finding(
            "audit store", False, f"{where} does not exist: start a worker once (it creates "
            "the tables) or fix CIOGUARD_AUDIT_URL",
        )  # fmt: skip
    timeout = {"timeout" if sqlite else "connect_timeout": int(TIMEOUT_S)}
    engine = create_engine(url, poolclass=NullPool, connect_args=timeout)
    try:
        with engine.connect() as conn:
            missing = _missing_schema(conn)
    except Exception as exc:
        return Finding(
            "audit store", False, f"{where} does not answer ({type(exc).__name__}): check "
            "CIOGUARD_AUDIT_URL and that the database runs",
        )  # fmt: skip
    finally:
        engine.dispose()
    if missing:
        return Finding(
            "audit store", False, f"{where} is not migrated (missing {', '.join(missing)}): "
            "start a worker once, it migrates the store at start",
        )  # fmt: skip
    shared = (
        "; a local SQLite file is not shared with processes on other hosts: the application "
        "needs the workers' store for deletion_status (erasure itself does not depend on it: "
        "each erase job carries its request)"
        if on_disk
        else ""
    )
    return Finding("audit store", True, f"{where} answers; every table and column is there{shared}")


def _missing_schema(conn: Connection) -> list[str]:
    """Tables and columns of :mod:`cioguard.audit.schema` the database lacks, and the head row."""
    from cioguard.audit.schema import chain_head, metadata

    found = inspect(conn)
    tables = set(found.get_table_names())
    missing = [name for name in metadata.tables if name not in tables]
    for name in tables & set(metadata.tables):
        have = {column["name"] for column in found.get_columns(name)}
        missing += [f"{name}.{c.name}" for c in metadata.tables[name].c if c.name not in have]
    if "chain_head" in tables and conn.execute(select(chain_head.c.id)).first() is None:
        missing.append("the chain head row")
    return missing


# -- Customer.io ------------------------------------------------------------------------------


def check_customerio(settings: Settings) -> list[Finding]:
    """Secret source readable, credentials accepted, region matching, key age within policy."""
    from cioguard.cli.credentials import check_credentials

    findings = []
    for check in check_credentials(settings):
        name = f"customer.io {check.name}"
        findings.append(Finding(name, check.ok is not False, check.detail))
    return findings


# -- keys -------------------------------------------------------------------------------------


def weakness(secret: str | bytes) -> str | None:
    """Why ``secret`` is obviously weak (a repeated pattern, few symbols, low variety), or None."""
    text = secret.decode("latin-1") if isinstance(secret, bytes) else secret
    n = len(text)
    if n == 0:
        return "it is empty"
    if (text + text).find(text, 1) < n:
        return "it repeats a shorter pattern"
    counts = Counter(text)
    if len(counts) < MIN_DISTINCT_CHARS:
        return f"it uses only {len(counts)} distinct symbols"
    bits = -sum(c * math.log2(c / n) for c in counts.values())
    if bits < MIN_KEY_BITS:
        return f"its symbols vary too little (about {bits:.0f} bits, want {MIN_KEY_BITS})"
    return None


def check_hash_key(settings: Settings) -> Finding:
    """``CIOGUARD_HASH_KEY`` set, and not a placeholder or a pattern."""
    try:
        key = settings.hash_key_bytes().decode()
    except ConfigurationError as exc:
        return Finding("hash key", False, str(exc))
    why = weakness(key)
    if why:
        return Finding(
            "hash key", False, f"CIOGUARD_HASH_KEY looks weak: {why}; generate one with "
            "`cioguard keys new` (changing it changes every hash in the audit store)",
        )  # fmt: skip
    return Finding("hash key", True, f"CIOGUARD_HASH_KEY set ({len(key)} characters)")


def check_payload_key(settings: Settings) -> Finding:
    """``CIOGUARD_PAYLOAD_KEY``: valid Fernet keys, none repeated, none weak, none the hash key."""
    try:
        keys = settings.payload_keys()
    except ConfigurationError as exc:
        return Finding("payload key", False, str(exc))
    if len(set(keys)) != len(keys):
        return Finding("payload key", False, "CIOGUARD_PAYLOAD_KEY lists the same key twice")
    hash_key = settings.hash_key.get_secret_value().encode() if settings.hash_key else None
    if hash_key in keys:
        return Finding(
            "payload key", False,
            "CIOGUARD_PAYLOAD_KEY and CIOGUARD_HASH_KEY share a key: use two separate keys",
        )  # fmt: skip
    for position, key in enumerate(keys, start=1):
        why = weakness(base64.urlsafe_b64decode(key))
        if why:
            return Finding(
                "payload key", False, f"CIOGUARD_PAYLOAD_KEY key {position} looks weak: {why}; "
                "generate one with `cioguard keys new`",
            )  # fmt: skip
    return Finding(
        "payload key", True, f"CIOGUARD_PAYLOAD_KEY holds {len(keys)} valid Fernet key(s)"
    )


# -- policy, webhooks, Flower -------------------------------------------------------------------


def check_policy(settings: Settings) -> Finding:
    """The policy file (``CIOGUARD_POLICY``) or the shipped default parses and validates."""
    from cioguard.privacy.policy import check_policy_file, default_policy

    if settings.policy_path is None:
        return Finding("policy", True, f"default policy {default_policy().version}")
    try:
        policy = check_policy_file(settings.policy_path)
    except ConfigurationError as exc:
        return Finding("policy", False, str(exc))
    return Finding("policy", True, f"CIOGUARD_POLICY {settings.policy_path}: {policy.version}")


def check_webhook_secret(settings: Settings) -> Finding:
    """``CUSTOMERIO_WEBHOOK_SECRET`` set (reporting webhooks are refused without it)."""
    try:
        secrets = settings.webhook_secrets()
    except ConfigurationError as exc:
        return Finding("webhook secret", False, str(exc))
    if any(len(s) < MIN_WEBHOOK_SECRET_CHARS for s in secrets):
        return Finding(
            "webhook secret", False, "CUSTOMERIO_WEBHOOK_SECRET is too short to be a Customer.io "
            "signing key: copy it from Customer.io's reporting-webhook settings",
        )  # fmt: skip
    return Finding("webhook secret", True, f"CUSTOMERIO_WEBHOOK_SECRET set ({len(secrets)} key(s))")


def check_flower(settings: Settings, environ: Mapping[str, str]) -> list[Finding]:
    """Where Flower is configured: auth settings valid, and Flower refuses strangers and orders.

    Flower counts as configured when ``FLOWER_BASIC_AUTH``/``FLOWER_AUTH`` or
    ``CIOGUARD_FLOWER_URL`` is set. With the URL, Flower itself is asked: ``/api/workers``
    without credentials must answer 401, and a control command with credentials must answer
    403 (``--read_only``). The probe names a worker that does not exist, so a Flower without
    ``--read_only`` answers 404 and nothing happens.
    """
    from cioguard.ops.flower import check_environment

    has_auth = any(environ.get(v, "").strip() for v in ("FLOWER_BASIC_AUTH", "FLOWER_AUTH"))
    if not has_auth and not settings.flower_url:
        return [Finding("flower", True, "not configured here (skipped)")]
    findings = []
    if has_auth:
        try:
            check_environment(environ)
            findings.append(Finding("flower auth", True, "FLOWER_BASIC_AUTH/FLOWER_AUTH valid"))
        except ConfigurationError as exc:
            findings.append(Finding("flower auth", False, str(exc)))
    if settings.flower_url:
        findings.append(_probe_flower(settings.flower_url, environ.get("FLOWER_BASIC_AUTH", "")))
    return findings


def _probe_flower(url: str, basic_auth: str) -> Finding:
    where, base = _where(url), url.rstrip("/")
    try:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            anonymous = client.get(f"{base}/api/workers")
            if anonymous.status_code != 401:
                return Finding(
                    "flower", False, f"Flower at {where} answers {anonymous.status_code} without "
                    "credentials: set FLOWER_BASIC_AUTH and unset FLOWER_UNAUTHENTICATED_API",
                )  # fmt: skip
            user, _, password = basic_auth.split(",")[0].partition(":")
            if not password:
                return Finding("flower", True, f"Flower at {where} asks for a password")
            control = client.post(
                f"{base}/api/worker/shutdown/{FLOWER_PROBE_WORKER}", auth=(user, password)
            )
    except httpx.HTTPError as exc:
        return Finding("flower", False, f"Flower at {where} does not answer ({type(exc).__name__})")
    if control.status_code == 403:
        return Finding("flower", True, f"Flower at {where} asks for a password and is read-only")
    if control.status_code == 401:
        return Finding("flower", False, f"Flower at {where} refuses FLOWER_BASIC_AUTH's password")
    return Finding(
        "flower", False, f"Flower at {where} accepts control commands "
        f"({control.status_code}): start it with --read_only=True (python -m cioguard.ops.flower)",
    )  # fmt: skip
