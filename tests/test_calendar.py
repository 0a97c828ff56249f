"""Business days and calendar months as RULES.md defines them, scalar and vectorised."""
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlake.compliance.calendar import (
    add_business_days, add_business_days_expr, add_calendar_months, add_calendar_months_expr,
)

UTC = timezone.utc


def dt(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("start, n, expected", [
    (dt(2026, 3, 6, 15, 30), 1, dt(2026, 3, 9, 15, 30)),          # Friday + 1 = Monday
    (dt(2026, 3, 7, 9, 0), 1, dt(2026, 3, 9, 9, 0)),               # Saturday + 1 = Monday
    (dt(2026, 3, 8, 23, 59, 59), 1, dt(2026, 3, 9, 23, 59, 59)),   # Sunday + 1 = Monday
    (dt(2026, 3, 2, 0, 0), 5, dt(2026, 3, 9, 0, 0)),               # Monday + 5 = next Monday
    (dt(2026, 3, 6, 12, 0), 10, dt(2026, 3, 20, 12, 0)),           # Friday + 10 = Friday, 2 weeks on
    (dt(2026, 3, 7, 12, 0), 10, dt(2026, 3, 20, 12, 0)),           # Saturday + 10 = that same Friday
    (dt(2026, 2, 20, 8, 0, 0, 123456), 15, dt(2026, 3, 13, 8, 0, 0, 123456)),  # microseconds kept
    (dt(2026, 3, 4, 10, 0), 0, dt(2026, 3, 4, 10, 0)),             # n = 0 is the instant itself
    (dt(2024, 2, 28, 10, 0), 1, dt(2024, 2, 29, 10, 0)),           # leap day is a Thursday
    (dt(2026, 12, 31, 18, 0), 1, dt(2027, 1, 1, 18, 0)),           # no holidays by default
])
def test_add_business_days_by_hand(start, n, expected):
    assert add_business_days(start, n) == expected


def test_add_business_days_skips_holidays():
    holidays = frozenset({date(2026, 12, 25), date(2027, 1, 1)})
    # Thu 24 Dec + 1: Fri 25 is a holiday, so Mon 28.
    assert add_business_days(dt(2026, 12, 24, 9), 1, holidays) == dt(2026, 12, 28, 9)
    # Thu 31 Dec + 1: Fri 1 Jan is a holiday, weekend, so Mon 4 Jan.
    assert add_business_days(dt(2026, 12, 31, 9), 1, holidays) == dt(2027, 1, 4, 9)
    # A holiday as the start day does not matter: the start never counts.
    assert add_business_days(dt(2026, 12, 25, 9), 1, holidays) == dt(2026, 12, 28, 9)
    # A holiday on a weekend changes nothing.
    assert add_business_days(dt(2026, 3, 6, 9), 1, frozenset({date(2026, 3, 7)})) == dt(2026, 3, 9, 9)


def test_add_business_days_uses_the_utc_date():
    # 23:30 on Friday in New York is already Saturday in UTC: + 1 = Monday (UTC).
    ny = timezone(timedelta(hours=-5))
    assert add_business_days(datetime(2026, 3, 6, 23, 30, tzinfo=ny), 1) == dt(2026, 3, 9, 4, 30)


@pytest.mark.parametrize("start, n, expected", [
    (dt(2026, 1, 31, 10, 0), 1, dt(2026, 2, 28, 10, 0)),
    (dt(2024, 1, 31, 10, 0), 1, dt(2024, 2, 29, 10, 0)),   # leap year
    (dt(2000, 1, 30, 0, 0), 1, dt(2000, 2, 29, 0, 0)),      # 2000 is a leap year
    (dt(2100, 1, 29, 0, 0), 1, dt(2100, 2, 28, 0, 0)),      # 2100 is not
    (dt(2026, 1, 31, 10, 0), 3, dt(2026, 4, 30, 10, 0)),
    (dt(2026, 3, 31, 23, 59, 59), 1, dt(2026, 4, 30, 23, 59, 59)),
    (dt(2026, 11, 30, 12, 0), 3, dt(2027, 2, 28, 12, 0)),   # across a year end
    (dt(2026, 12, 15, 1, 2, 3, 4), 1, dt(2027, 1, 15, 1, 2, 3, 4)),
    (dt(2026, 2, 28, 10, 0), 1, dt(2026, 3, 28, 10, 0)),    # no "end of month" stickiness
])
def test_add_calendar_months_by_hand(start, n, expected):
    assert add_calendar_months(start, n) == expected


def _vector(values, expr):
    s = pl.DataFrame({"t": values}, schema={"t": pl.Datetime("us", "UTC")})
    return s.select(expr(pl.col("t")).alias("r"))["r"].to_list()


instants = st.datetimes(min_value=datetime(1999, 1, 1), max_value=datetime(2101, 12, 31),
                        timezones=st.just(UTC))
holiday_sets = st.frozensets(st.dates(min_value=date(1999, 1, 1), max_value=date(2102, 12, 31)), max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(instants, min_size=1, max_size=20), st.integers(0, 40), holiday_sets, st.data())
def test_business_days_scalar_equals_vectorised(values, n, holidays, data):
    # Add holidays right after the start dates so they actually get in the way.
    near = data.draw(st.frozensets(st.sampled_from([v.date() + timedelta(days=k)
                                                    for v in values for k in range(1, 15)]), max_size=4))
    holidays = holidays | near
    got = _vector(values, lambda c: add_business_days_expr(c, n, holidays))
    assert got == [add_business_days(v, n, holidays) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(instants, min_size=1, max_size=20), st.integers(0, 24))
def test_calendar_months_scalar_equals_vectorised(values, n):
    got = _vector(values, lambda c: add_calendar_months_expr(c, n))
    assert got == [add_calendar_months(v, n) for v in values]
