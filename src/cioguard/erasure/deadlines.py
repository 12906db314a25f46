"""Legal deadlines for erasure requests (summary in ../shared/docs/privacy-law.md).

GDPR Art. 12(3): one month from receipt, extendable by two further months.
CCPA regulations §7021: 45 calendar days, extendable once by 45 more.
Pure functions of dates: :mod:`cioguard.erasure.requests` stores what they decide.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from typing import Literal

from cioguard.errors import InvalidInputError

Regime = Literal["gdpr", "ccpa"]
MAX_EXTENSION_REASON_CHARS = 160


def regime_for(reason: str, default: Regime = "gdpr") -> Regime:
    """CCPA when the reason says so (``ccpa``, ``ccpa_delete``...), else the default."""
    return "ccpa" if "ccpa" in reason.lower() else default


def add_months(when: datetime, months: int) -> datetime:
    """Same day ``months`` later, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    month_index = when.month - 1 + months
    year, month = when.year + month_index // 12, month_index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def due_date(regime: Regime, received_at: datetime) -> datetime:
    if regime == "ccpa":
        return received_at + timedelta(days=45)
    return add_months(received_at, 1)


def extended_due_date(regime: Regime, due_at: datetime) -> datetime:
    """The furthest date an extension allows (GDPR +2 months, CCPA +45 days)."""
    if regime == "ccpa":
        return due_at + timedelta(days=45)
    return add_months(due_at, 2)


def extend_due_date(
    regime: Regime, due_at: datetime, extended_to: datetime | None, *, days: int
) -> datetime:
    """The due date after adding ``days`` to the one in force, if the law allows it.

    GDPR: extensions may add up to two months in total, in one or more steps. CCPA: one
    extension only. Raises :class:`InvalidInputError` naming the limit otherwise.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidInputError("days must be a whole number >= 1")
    if regime == "ccpa" and extended_to is not None:
        raise InvalidInputError("a CCPA request can be extended only once (§7021)")
    limit = extended_due_date(regime, due_at)
    new_due = (extended_to or due_at) + timedelta(days=days)
    if new_due > limit:
        raise InvalidInputError(
            f"{regime.upper()} allows extending this request to {limit:%Y-%m-%d} at most"
        )
    return new_due


def extension_reason(reason: object) -> str:
    """The reason for an extension, whitespace-normalized; required and short."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInputError("an extension needs a reason")
    why = " ".join(reason.split())
    if len(why) > MAX_EXTENSION_REASON_CHARS:
        raise InvalidInputError(
            f"the extension reason is longer than {MAX_EXTENSION_REASON_CHARS} characters"
        )
    return why
