"""Legal deadlines: GDPR one month (+2), CCPA 45 days (+45)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cioguard.deadlines import add_months, due_date, extended_due_date, regime_for


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reason", "default", "expected"),
    [("erasure", "gdpr", "gdpr"), ("CCPA_delete", "gdpr", "ccpa"), ("erasure", "ccpa", "ccpa")],
)
def test_regime_follows_the_reason_then_the_default(
    reason: str, default: str, expected: str
) -> None:
    assert regime_for(reason, default) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (at(2024, 1, 31), 1, at(2024, 2, 29)),  # leap year clamp
        (at(2023, 1, 31), 1, at(2023, 2, 28)),
        (at(2024, 3, 15), 1, at(2024, 4, 15)),
        (at(2024, 12, 10), 1, at(2025, 1, 10)),  # year rollover
        (at(2024, 11, 30), 3, at(2025, 2, 28)),
    ],
)
def test_add_months_keeps_the_day_or_clamps_to_the_month_end(
    start: datetime, months: int, expected: datetime
) -> None:
    assert add_months(start, months) == expected


def test_gdpr_is_one_month_and_extends_by_two_more() -> None:
    received = at(2024, 1, 31)
    due = due_date("gdpr", received)
    assert due == at(2024, 2, 29)
    assert extended_due_date("gdpr", due) == at(2024, 4, 29)


def test_ccpa_is_45_days_and_extends_by_45_more() -> None:
    received = at(2024, 1, 1)
    due = due_date("ccpa", received)
    assert due == received + timedelta(days=45)
    assert extended_due_date("ccpa", due) == received + timedelta(days=90)
