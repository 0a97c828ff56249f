"""Date arithmetic exactly as RULES.md defines it, in UTC.

Two faces of the same definitions: scalar functions (used by the generator and tests)
and polars expressions (used by the vectorised rule engine). Tests check they agree.
"""
from __future__ import annotations

import calendar as _stdcal
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone

import polars as pl

UTC = timezone.utc


def _utc(t: datetime) -> datetime:
    # A naive datetime is taken to be UTC: the ledger stores every instant in UTC.
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def add_business_days(t: datetime, n: int, holidays: frozenset[date] = frozenset()) -> datetime:
    """Step forward one UTC day at a time, counting Mon-Fri days not in `holidays`, until
    `n` are counted; the time of day is kept. The start day itself never counts, so
    Friday + 1 = Monday and Saturday + 1 = Monday."""
    if n < 0:
        raise ValueError("n must be >= 0")
    t = _utc(t)
    counted = 0
    while counted < n:
        t += timedelta(days=1)  # exactly 24 h: UTC has no DST, so the time of day stays
        if t.weekday() < 5 and t.date() not in holidays:
            counted += 1
    return t


def add_calendar_months(t: datetime, n: int) -> datetime:
    """Same UTC day and time `n` months later, clamped to that month's last day
    (31 Jan + 1 month = 28/29 Feb)."""
    t = _utc(t)
    years, month0 = divmod(t.month - 1 + n, 12)
    year, month = t.year + years, month0 + 1
    day = min(t.day, _stdcal.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day)


def add_business_days_expr(expr: pl.Expr, n: int | pl.Expr,
                           holidays: Iterable[date] = frozenset()) -> pl.Expr:
    """Vectorised `add_business_days` for a Datetime(UTC) expression.

    polars counts business days after the start date; for a start on a weekend or
    holiday, `roll="backward"` moves it to the previous business day first, which
    has the same business days after it, so the result equals stepping day by day.
    With n = 0 nothing is stepped, so the instant stays (even on a weekend)."""
    stepped = expr.dt.add_business_days(n, holidays=sorted(holidays), roll="backward")
    if isinstance(n, pl.Expr):
        return pl.when(n == 0).then(expr).otherwise(stepped)
    return expr if n == 0 else stepped


def add_calendar_months_expr(expr: pl.Expr, n: int) -> pl.Expr:
    """Vectorised `add_calendar_months` for a Datetime(UTC) expression (polars clamps
    month-end days the same way)."""
    return expr.dt.offset_by(f"{int(n)}mo")
