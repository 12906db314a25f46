"""`cioguard rotate`: the zero-downtime order for a Track API key, and checks of where it stands.

The order matters because the worker only re-reads its secret source when Customer.io refuses
the key it has (a 401): store the new key first and every process switches on its next 401;
revoke first and every request fails until the new key is stored.

:func:`check_credentials` is the check itself (also usable by other commands): the source is
readable, Customer.io accepts the pair (``GET /api/v1/accounts/region``), the account's region
matches ``CUSTOMERIO_REGION``, and the key is younger than the rotation policy, where the source
knows its age. Registered by :mod:`cioguard.cli.main`.

With ``CIOGUARD_API=pipelines`` the key checked is ``CUSTOMERIO_PIPELINES_API_KEY``, verified by
``POST /v1/batch`` of an empty batch in strict mode: the Pipelines API has no read endpoint, and
an empty batch is the cheapest authenticated call that writes nothing (401 = refused). It has no
region lookup either, so the region check is skipped (a key of the other region is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import typer
from rich.table import Table

from cioguard.config import Settings
from cioguard.delivery.credentials import (
    API_KEY_VAR,
    PIPELINES_KEY_VAR,
    SITE_ID_VAR,
    Credentials,
    source_from_spec,
)
from cioguard.delivery.customerio import TrackClient
from cioguard.delivery.pipelines_client import PipelinesClient
from cioguard.errors import CioguardError, CredentialsError

ROTATION_POLICY_DAYS = 90

ROTATION_STEPS = (
    "Create a new Track API key in Customer.io (Workspace Settings > API Credentials) and "
    "store it in the secret source ({source}) first, while the old key still works. Workers "
    "keep the key they have until Customer.io refuses it, then re-read the source once (on a "
    "401) and retry: no restart, no failed job.",
    "Revoke (or regenerate) the old key in Customer.io.",
    "Verify: run `cioguard rotate` again; every check below must say OK.",
)


@dataclass(frozen=True)
class Check:
    """One verified fact: ``ok`` is True, False, or None when it cannot be known."""

    name: str
    ok: bool | None
    detail: str


def check_credentials(
    settings: Settings, *, max_age_days: float = ROTATION_POLICY_DAYS, now: datetime | None = None
) -> list[Check]:
    """Read the credentials from the configured source and verify them against Customer.io."""
    try:
        creds = source_from_spec(settings.secrets_source, api=settings.api).get()
    except CioguardError as exc:
        return [Check("secret source", False, str(exc))]
    names = PIPELINES_KEY_VAR if settings.api == "pipelines" else f"{SITE_ID_VAR} and {API_KEY_VAR}"
    checks = [Check("secret source", True, f"{settings.secrets_source}: {names} present")]
    accepted, region = _accepted(settings, creds)
    checks.append(accepted)
    if region is not None:
        checks.append(_region_check(settings, region))
    checks.append(_age_check(settings, creds, max_age_days, now))
    return checks


def _accepted(settings: Settings, creds: Credentials) -> tuple[Check, str | None]:
    """Ask Customer.io about the pair; returns the check and the account's region if accepted."""
    if settings.api == "pipelines":
        return _pipelines_accepted(settings, creds), None
    client = TrackClient.from_settings(settings, creds)
    try:
        region = client.check_region()
    except CredentialsError as exc:
        return Check("credentials", False, f"refused by Customer.io ({exc.status})"), None
    except CioguardError as exc:
        return Check("credentials", False, f"not verified: {exc}"), None
    finally:
        client.close()
    accepted = "accepted by Customer.io (GET /api/v1/accounts/region)"
    return Check("credentials", True, accepted), region


def _pipelines_accepted(settings: Settings, creds: Credentials) -> Check:
    client = PipelinesClient.from_settings(settings, creds)
    try:
        client.check()
    except CredentialsError as exc:
        return Check("credentials", False, f"Pipelines key refused by Customer.io ({exc.status})")
    except CioguardError as exc:
        return Check("credentials", False, f"not verified: {exc}")
    finally:
        client.close()
    return Check("credentials", True, "Pipelines key accepted (POST /v1/batch, empty, strict)")


def _region_check(settings: Settings, region: str) -> Check:
    if region == settings.region:
        return Check("region", True, f"the account is in {region!r}, as CUSTOMERIO_REGION says")
    return Check(
        "region",
        False,
        f"the account is in {region!r} but CUSTOMERIO_REGION={settings.region!r}: "
        "data would pass the wrong region's servers",
    )


def _age_check(
    settings: Settings, creds: Credentials, max_age_days: float, now: datetime | None
) -> Check:
    age = creds.age_days(now)
    policy = f"rotation policy: {max_age_days:g} days"
    if age is None:
        return Check(
            "key age", None, f"unknown: {settings.secrets_source!r} does not record it ({policy})"
        )
    if age < max_age_days:
        return Check("key age", True, f"{age:.0f} days ({policy})")
    return Check("key age", False, f"{age:.0f} days: rotation due ({policy})")


def _label(ok: bool | None) -> str:
    return {True: "[green]OK[/]", False: "[bold red]FAIL[/]", None: "[yellow]UNKNOWN[/]"}[ok]


def rotate(
    max_age_days: float = typer.Option(
        ROTATION_POLICY_DAYS, "--max-age-days", min=1, help="rotation policy: oldest key allowed"
    ),
) -> None:
    """Print the zero-downtime key rotation order and check the current credentials."""
    from cioguard.cli._common import console, guarded
    from cioguard.config import get_settings

    settings = guarded(get_settings)
    which = "Pipelines (HTTP source)" if settings.api == "pipelines" else "Track"
    console.print(f"[bold]Zero-downtime rotation of the Customer.io {which} API key[/]")
    for number, step in enumerate(ROTATION_STEPS, start=1):
        console.print(f"  {number}. {step.format(source=settings.secrets_source)}")
    checks = check_credentials(settings, max_age_days=max_age_days)
    table = Table("check", "result", "detail", title="\nChecks", title_justify="left")
    for check in checks:
        table.add_row(check.name, _label(check.ok), check.detail)
    console.print(table)
    raise typer.Exit(1 if any(check.ok is False for check in checks) else 0)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("rotate")(rotate)
