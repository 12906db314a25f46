"""Legal deadlines for erasure requests (summary in ../shared/docs/privacy-law.md).

GDPR Art. 12(3): one month from receipt, extendable by two further months.
CCPA regulations §7021: 45 calendar days, extendable once by 45 more.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from typing import Literal

Regime = Literal["gdpr", "ccpa"]


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
