"""Legal deadlines: GDPR one month (+2), CCPA 45 days (+45)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cioguard.erasure.deadlines import (
    add_months,
    due_date,
    extend_due_date,
    extended_due_date,
    extension_reason,
    regime_for,
)
from cioguard.errors import InvalidInputError


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


def test_gdpr_extensions_add_up_to_the_two_month_limit() -> None:
    due = at(2024, 3, 1)
    first = extend_due_date("gdpr", due, None, days=31)
    second = extend_due_date("gdpr", due, first, days=30)
    assert second == at(2024, 5, 1)
    with pytest.raises(InvalidInputError, match="2024-05-01 at most"):
        extend_due_date("gdpr", due, second, days=1)


def test_ccpa_allows_one_extension_of_45_days() -> None:
    due = at(2024, 3, 1)
    assert extend_due_date("ccpa", due, None, days=45) == due + timedelta(days=45)
    with pytest.raises(InvalidInputError, match="at most"):
        extend_due_date("ccpa", due, None, days=46)
    with pytest.raises(InvalidInputError, match="only once"):
        extend_due_date("ccpa", due, due + timedelta(days=1), days=1)


@pytest.mark.parametrize("days", [0, -3, True, 1.5])
def test_extension_days_must_be_a_positive_whole_number(days: object) -> None:
    with pytest.raises(InvalidInputError, match="days"):
        extend_due_date("gdpr", at(2024, 3, 1), None, days=days)  # type: ignore[arg-type]


def test_extension_reasons_are_normalized_and_required() -> None:
    assert extension_reason("  complex \n request ") == "complex request"
    for bad in ("", "   ", None, "x" * 161):
        with pytest.raises(InvalidInputError):
            extension_reason(bad)
