"""The compliance rule engine: RULES.md as vectorised polars over the ledger projection.

Input: one row per ledger event with the projection columns (never plain PII):
seq, event_id, event_type, occurred_at (Datetime us UTC), tenant_id, actor_id,
subject_id, subject_country, subject_region, subject_timezone, phone_bidx, pii_fields,
lawful_basis, data (the event's `data` object as JSON text).

Output: one row per (rule_id, event_id) with rule_id, event_id, tenant_id, occurred_at,
severity, detail; sorted by rule_id, occurred_at, event_id.

Every rule is a handful of filters, group-bys and as-of joins; the only Python loops
run over distinct time-zone names, never over rows. auditlake/compliance/oracle.py is
an independent row-by-row transcription of the same rules that tests compare against;
its docstring lists the readings taken where RULES.md is terse, which both follow.
"""
from __future__ import annotations

import zoneinfo
from datetime import date, datetime, time, timezone
from functools import lru_cache

import polars as pl

from .calendar import add_business_days_expr, add_calendar_months_expr

RULE_IDS: tuple[str, ...] = (
    "TCPA-HOURS", "TCPA-CONSENT", "TCPA-REVOKED", "TCPA-DNC",
    "GDPR-BASIS", "GDPR-TRANSFER", "GDPR-LATE",
    "CCPA-LATE", "CCPA-SALE",
    "SOX-SOD", "SOX-CHANGE",
)

# high: a violation per call/sale/transfer/payout with direct liability (TCPA statutory
# damages, unlawful transfer or sale, a control failure on money); medium: process and
# timeliness failures that are usually remediable.
SEVERITY: dict[str, str] = {
    "TCPA-HOURS": "high",
    "TCPA-CONSENT": "high",
    "TCPA-REVOKED": "high",
    "TCPA-DNC": "high",
    "GDPR-BASIS": "medium",
    "GDPR-TRANSFER": "high",
    "GDPR-LATE": "medium",
    "CCPA-LATE": "medium",
    "CCPA-SALE": "high",
    "SOX-SOD": "high",
    "SOX-CHANGE": "medium",
}

EEA = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    "IS", "LI", "NO",
})
ADEQUACY = frozenset({
    "AD", "AR", "CA", "CH", "FO", "GB", "GG", "IL", "IM", "JE", "JP", "KR", "NZ", "US", "UY",
})
US_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")

UTC = timezone.utc
_TS = pl.Datetime("us", "UTC")
_OUTPUT_SCHEMA = {
    "rule_id": pl.Utf8, "event_id": pl.Utf8, "tenant_id": pl.Utf8,
    "occurred_at": _TS, "severity": pl.Utf8, "detail": pl.Utf8,
}
_INPUT_SCHEMA = {
    "seq": pl.Int64, "event_id": pl.Utf8, "event_type": pl.Utf8, "occurred_at": _TS,
    "tenant_id": pl.Utf8, "actor_id": pl.Utf8, "subject_id": pl.Utf8,
    "subject_country": pl.Utf8, "subject_region": pl.Utf8, "subject_timezone": pl.Utf8,
    "phone_bidx": pl.Utf8, "pii_fields": pl.Utf8, "lawful_basis": pl.Utf8, "data": pl.Utf8,
}
_REQUIRED = ("event_id", "event_type", "occurred_at")
_FINDING_COLS = ["rule_id", "event_id", "tenant_id", "occurred_at", "detail"]
_PHONE_KEY = ["tenant_id", "phone_bidx"]
_SUBJECT_KEY = ["tenant_id", "subject_id"]
# Names in the tz database that are not real zones: "Factory" means "no zone set",
# "localtime" is a system link. Both get the four-zone check like any unknown name.
_NOT_ZONES = frozenset({"Factory", "localtime"})


def evaluate(events: pl.LazyFrame | pl.DataFrame, as_of: datetime | str | None = None,
             holidays: frozenset[date] = frozenset()) -> pl.DataFrame:
    """All findings of RULES.md on `events`, judged as of `as_of` (default: the latest
    occurred_at in the input; a naive datetime is UTC; a string is RFC 3339)."""
    df = _prepare(events)
    if as_of is None:
        as_of = df["occurred_at"].max()
    else:
        if isinstance(as_of, str):
            as_of = datetime.fromisoformat(as_of.replace("Z", "+00:00").replace("z", "+00:00"))
        as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
    hol = frozenset(holidays)
    parts = [
        _tcpa(df, hol),
        _gdpr_basis(df),
        _gdpr_transfer(df),
        _privacy_late(df, as_of, hol),
        _ccpa_sale(df, hol),
        _sox_sod(df),
        _sox_change(df),
    ]
    parts = [p.select(_FINDING_COLS) for p in parts if p.height]
    if not parts:
        return pl.DataFrame(schema=_OUTPUT_SCHEMA)
    out = pl.concat(parts, how="vertical")
    return (
        out.unique(["rule_id", "event_id"], keep="first", maintain_order=True)
        .with_columns(severity=pl.col("rule_id").replace_strict(SEVERITY, return_dtype=pl.Utf8))
        .select(list(_OUTPUT_SCHEMA))
        .sort(["rule_id", "occurred_at", "event_id"])
    )


# ----------------------------------------------------------------------------- input

def _prepare(events: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    df = events.collect() if isinstance(events, pl.LazyFrame) else events
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"events lack required columns: {missing}")
    if "seq" not in df.columns:  # seq only breaks ties; input order is the ledger order
        df = df.with_row_index("seq").with_columns(pl.col("seq").cast(pl.Int64))
    ts = df.schema["occurred_at"]
    if not isinstance(ts, pl.Datetime):
        raise ValueError(f"occurred_at must be a Datetime column, not {ts}")
    occ = pl.col("occurred_at")
    occ = occ.dt.replace_time_zone("UTC") if ts.time_zone is None else occ.dt.convert_time_zone("UTC")
    cols = []
    for name, dtype in _INPUT_SCHEMA.items():
        if name == "occurred_at":
            cols.append(occ.dt.cast_time_unit("us").alias(name))
        elif name in df.columns:
            cols.append(pl.col(name).cast(dtype))
        else:  # an absent optional column reads as all-null
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(cols)


def _field(name: str) -> pl.Expr:
    """A top-level field of the event's `data` JSON as text (null when absent or null)."""
    return pl.col("data").str.json_path_match(f"$.{name}")


def _missing(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | (expr == "")


def _epoch_key(rank: pl.Expr | int) -> pl.Expr:
    """Sort key for "at or before" with RULES.md's tie order: events at one instant are
    ordered by `rank` (0..3), so a join-asof on it sees same-instant events in that order."""
    return pl.col("occurred_at").dt.epoch("us") * 4 + rank


def _fmt(expr: pl.Expr) -> pl.Expr:
    """An instant in a finding's detail: to the second, or to the microsecond when it has
    them (a request completed 1 us late must not read as on time)."""
    return (pl.when(expr.dt.microsecond() == 0).then(expr.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
            .otherwise(expr.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")))


# ------------------------------------------------------------------------------ TCPA

def _tcpa(df: pl.DataFrame, hol: frozenset[date]) -> pl.DataFrame:
    calls = (
        df.filter(pl.col("event_type") == "call.started")
        .filter((_field("direction") == "outbound") & (_field("purpose") == "telemarketing"))
        .select("event_id", "tenant_id", "occurred_at", "subject_timezone", "phone_bidx",
                k=_epoch_key(3))  # a call sees every consent/DNC event of its own instant
    )
    if calls.height == 0:
        return calls
    keyed = df.filter(pl.col("phone_bidx").is_not_null() & pl.col("tenant_id").is_not_null())

    # Consent events: at one instant the revocation counts as the later one.
    consent = (
        keyed.filter(pl.col("event_type").is_in(["consent.granted", "consent.revoked"]))
        .select(*_PHONE_KEY, c_type="event_type", c_at="occurred_at",
                k=_epoch_key((pl.col("event_type") == "consent.revoked").cast(pl.Int64)))
        .sort("k")
    )
    first_grant = (
        consent.filter(pl.col("c_type") == "consent.granted")
        .group_by(_PHONE_KEY).agg(grant_k=pl.col("k").min())
    )
    dnc = (
        keyed.filter(pl.col("event_type").is_in(["dnc.added", "dnc.removed"]))
        .with_columns(list=_field("list"))
        .select(*_PHONE_KEY, "list", d_type="event_type", d_at="occurred_at",
                k=_epoch_key((pl.col("event_type") == "dnc.added").cast(pl.Int64)))
        .sort("k")
    )
    internal = dnc.filter(pl.col("list") == "internal").select(
        *_PHONE_KEY, "k", i_type="d_type", i_at="d_at")
    national = dnc.filter(pl.col("list") == "national").select(
        *_PHONE_KEY, "k", n_type="d_type", n_at="d_at")

    asof = dict(on="k", by=_PHONE_KEY, strategy="backward", check_sortedness=False)
    calls = (
        calls.sort("k")
        .join_asof(consent, **asof)
        .join_asof(internal, **asof)
        .join_asof(national, **asof)
        .join(first_grant, on=_PHONE_KEY, how="left")
    )
    added_internal = pl.col("i_type") == "dnc.added"
    added_national = pl.col("n_type") == "dnc.added"
    internal_late = added_internal & (
        pl.col("occurred_at") > add_business_days_expr(pl.col("i_at"), 10, hol))
    national_no_consent = added_national & pl.col("c_type").ne_missing("consent.granted")
    revoked_late = (pl.col("c_type") == "consent.revoked") & (
        pl.col("occurred_at") > add_business_days_expr(pl.col("c_at"), 10, hol))

    consent_f = calls.filter(pl.col("grant_k").is_null() | (pl.col("grant_k") > pl.col("k"))).with_columns(
        rule_id=pl.lit("TCPA-CONSENT"),
        detail=pl.lit("outbound telemarketing call with no consent.granted for the phone at or before it"))
    revoked_f = calls.filter(revoked_late.fill_null(False)).with_columns(
        rule_id=pl.lit("TCPA-REVOKED"),
        detail=pl.concat_str(pl.lit("consent revoked at "), _fmt(pl.col("c_at")),
                             pl.lit("; call more than 10 business days later")))
    dnc_f = calls.filter((internal_late.fill_null(False)) | national_no_consent.fill_null(False)).with_columns(
        rule_id=pl.lit("TCPA-DNC"),
        detail=pl.when(internal_late.fill_null(False))
        .then(pl.concat_str(pl.lit("on the internal DNC list since "), _fmt(pl.col("i_at")),
                            pl.lit("; call more than 10 business days later")))
        .otherwise(pl.concat_str(pl.lit("on the national DNC list since "), _fmt(pl.col("n_at")),
                                 pl.lit(" and the latest consent event is not a grant"))))
    return pl.concat([_tcpa_hours(calls), consent_f.select(_FINDING_COLS),
                      revoked_f.select(_FINDING_COLS), dnc_f.select(_FINDING_COLS)])


@lru_cache(maxsize=None)
def _valid_zone(name: str | None) -> bool:
    """A valid IANA name: in the tz database and loadable by both zoneinfo and polars.
    Anything else (missing, misspelt, a file path) gets the four-zone check."""
    if not name or name in _NOT_ZONES or name not in _zone_names():
        return False
    try:
        zoneinfo.ZoneInfo(name)
        pl.Series([datetime(2000, 1, 1, tzinfo=UTC)]).dt.convert_time_zone(name)
    except Exception:  # noqa: BLE001 - an unusable name is simply not a valid zone
        return False
    return True


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _outside_hours(local: pl.Expr) -> pl.Expr:
    tod = local.dt.time()  # wall-clock time of day, so DST days are handled by the zone
    return (tod < time(8)) | (tod >= time(21))


def _tcpa_hours(calls: pl.DataFrame) -> pl.DataFrame:
    zone = pl.col("subject_timezone")
    names = [n for n in calls["subject_timezone"].unique().to_list() if _valid_zone(n)]
    parts = []
    for name in sorted(names):  # one pass per distinct zone name, not per row
        local = pl.col("occurred_at").dt.convert_time_zone(name)
        part = calls.filter(zone == name).filter(_outside_hours(local)).with_columns(
            detail=pl.concat_str(pl.lit("outbound telemarketing call at "),
                                 local.dt.strftime("%H:%M:%S"), pl.lit(f" local ({name}), outside 08:00-21:00")))
        parts.append(part)
    unzoned = calls.filter(zone.is_null() | ~zone.is_in(names))
    if unzoned.height:
        short = {"America/New_York": "ET", "America/Chicago": "CT",
                 "America/Denver": "MT", "America/Los_Angeles": "PT"}
        outside = [pl.when(_outside_hours(pl.col("occurred_at").dt.convert_time_zone(z)))
                   .then(pl.lit(short[z])) for z in US_ZONES]
        part = (
            unzoned.with_columns(zones=pl.concat_list(outside).list.drop_nulls())
            .filter(pl.col("zones").list.len() > 0)
            .with_columns(detail=pl.concat_str(
                pl.lit("no valid subject time zone; outside 08:00-21:00 in "),
                pl.col("zones").list.join(",")))
        )
        parts.append(part)
    parts = [p.select(*_FINDING_COLS[1:]) for p in parts if p.height]
    if not parts:
        return pl.DataFrame(schema={c: _OUTPUT_SCHEMA[c] for c in _FINDING_COLS})
    return pl.concat(parts).with_columns(rule_id=pl.lit("TCPA-HOURS")).select(_FINDING_COLS)


# ------------------------------------------------------------------------------ GDPR

def _gdpr_basis(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(
        pl.col("subject_country").is_in(list(EEA)).fill_null(False)
        & ~_missing(pl.col("pii_fields"))
        & _missing(pl.col("lawful_basis"))
    ).with_columns(
        rule_id=pl.lit("GDPR-BASIS"),
        detail=pl.concat_str(pl.lit("EEA subject ("), pl.col("subject_country"),
                             pl.lit(") with PII fields "), pl.col("pii_fields"),
                             pl.lit(" and no lawful basis")),
    ).select(_FINDING_COLS)


def _gdpr_transfer(df: pl.DataFrame) -> pl.DataFrame:
    t = df.filter(
        (pl.col("event_type") == "transfer.cross_border")
        & pl.col("subject_country").is_in(list(EEA)).fill_null(False)
    ).with_columns(dest=_field("destination_country"), mech=_field("mechanism"))
    dest_outside = ~pl.col("dest").is_in(list(EEA)).fill_null(False)
    not_adequate = ~pl.col("dest").is_in(list(ADEQUACY)).fill_null(False)
    bad = dest_outside & ((pl.col("mech") == "none")
                          | ((pl.col("mech") == "adequacy") & not_adequate))
    return t.filter(bad.fill_null(False)).with_columns(
        rule_id=pl.lit("GDPR-TRANSFER"),
        detail=pl.concat_str(pl.lit("transfer from "), pl.col("subject_country"), pl.lit(" to "),
                             pl.col("dest").fill_null("?"), pl.lit(" with mechanism "), pl.col("mech")),
    ).select(_FINDING_COLS)


# ---------------------------------------------------------------- GDPR-LATE, CCPA-LATE

def _privacy_late(df: pl.DataFrame, as_of: datetime | None, hol: frozenset[date]) -> pl.DataFrame:
    requests = df.filter(pl.col("event_type").is_in(
        ["privacy.request_received", "privacy.request_extended", "privacy.request_completed"])
    ).with_columns(request_id=_field("request_id"))
    received = requests.filter(pl.col("event_type") == "privacy.request_received").with_columns(
        regulation=_field("regulation"), kind=_field("kind"))
    # Extensions and completions match by request_id only; only the earliest of each
    # matters ("an extension before the first deadline" exists iff the earliest is).
    by_id = (
        requests.filter(pl.col("request_id").is_not_null())
        .group_by("request_id").agg(
            ext_at=pl.col("occurred_at").filter(pl.col("event_type") == "privacy.request_extended").min(),
            done_at=pl.col("occurred_at").filter(pl.col("event_type") == "privacy.request_completed").min())
    )
    r = received.join(by_id, on="request_id", how="left")
    at = pl.col("occurred_at")
    first_gdpr = add_calendar_months_expr(at, 1)
    first_ccpa = at + pl.duration(days=45)
    extended = lambda first: pl.col("ext_at").is_not_null() & (pl.col("ext_at") < first)  # noqa: E731
    deadline = (
        pl.when(pl.col("regulation") == "gdpr")
        .then(pl.when(extended(first_gdpr)).then(add_calendar_months_expr(at, 3)).otherwise(first_gdpr))
        .when(pl.col("kind") == "opt_out")
        .then(add_business_days_expr(at, 15, hol))
        .otherwise(pl.when(extended(first_ccpa)).then(at + pl.duration(days=90)).otherwise(first_ccpa))
    )
    as_of_lit = pl.lit(as_of, dtype=_TS)
    late = (
        r.filter(pl.col("regulation").is_in(["gdpr", "ccpa"]))
        .with_columns(deadline=deadline)
        .filter(pl.when(pl.col("done_at").is_not_null())
                .then(pl.col("done_at") > pl.col("deadline"))
                .otherwise(as_of_lit > pl.col("deadline")).fill_null(False))
    )
    return late.with_columns(
        rule_id=pl.when(pl.col("regulation") == "gdpr").then(pl.lit("GDPR-LATE")).otherwise(pl.lit("CCPA-LATE")),
        detail=pl.when(pl.col("done_at").is_not_null())
        .then(pl.concat_str(pl.lit("completed "), _fmt(pl.col("done_at")),
                            pl.lit(" after the deadline "), _fmt(pl.col("deadline"))))
        .otherwise(pl.concat_str(pl.lit("still open; deadline "), _fmt(pl.col("deadline")),
                                 pl.lit(" passed before "), _fmt(as_of_lit))),
    ).select(_FINDING_COLS)


# ------------------------------------------------------------------------- CCPA-SALE

def _latest_known(df: pl.DataFrame, sales: pl.DataFrame, column: str) -> pl.DataFrame:
    """For each sale, the latest non-null `column` of its (tenant, subject) at or before
    it; same-instant values resolve to the highest seq (the later ledger entry)."""
    known = (
        df.filter(pl.col(column).is_not_null())
        .join(sales.select(_SUBJECT_KEY).unique(), on=_SUBJECT_KEY, how="semi")  # only these subjects
        .sort(["occurred_at", "seq"])
        .group_by([*_SUBJECT_KEY, "occurred_at"], maintain_order=True)
        .agg(pl.col(column).last().alias(f"known_{column}"))
        .sort("occurred_at")
    )
    return sales.sort("occurred_at").join_asof(
        known, on="occurred_at", by=_SUBJECT_KEY, strategy="backward", check_sortedness=False)


def _ccpa_sale(df: pl.DataFrame, hol: frozenset[date]) -> pl.DataFrame:
    sales = df.filter(pl.col("event_type") == "lead.sold").select(
        "event_id", "tenant_id", "subject_id", "occurred_at", "subject_country", "subject_region")
    if sales.height == 0:
        return sales
    needs = pl.col("subject_country").is_null() | pl.col("subject_region").is_null()
    own, lacking = sales.filter(~needs), sales.filter(needs)
    if lacking.height:
        lacking = _latest_known(df, lacking, "subject_country")
        lacking = _latest_known(df, lacking, "subject_region").with_columns(
            subject_country=pl.coalesce("subject_country", "known_subject_country"),
            subject_region=pl.coalesce("subject_region", "known_subject_region"),
        ).select(own.columns)
        sales = pl.concat([own, lacking])
    first_optout = (
        df.filter((pl.col("event_type") == "optout.received") & pl.col("subject_id").is_not_null())
        .group_by(_SUBJECT_KEY).agg(optout_at=pl.col("occurred_at").min())
    )
    # After the earliest opt-out + 15 business days implies after the opt-out itself,
    # so "an opt-out at or before the sale" needs no separate test.
    return (
        sales.filter((pl.col("subject_country") == "US") & (pl.col("subject_region") == "CA"))
        .join(first_optout, on=_SUBJECT_KEY, how="inner")
        .filter(pl.col("occurred_at") > add_business_days_expr(pl.col("optout_at"), 15, hol))
        .with_columns(
            rule_id=pl.lit("CCPA-SALE"),
            detail=pl.concat_str(pl.lit("sale of a California consumer's data more than 15 business days after the opt-out at "),
                                 _fmt(pl.col("optout_at"))))
        .select(_FINDING_COLS)
    )


# ------------------------------------------------------------------------------- SOX

def _sox_sod(df: pl.DataFrame) -> pl.DataFrame:
    approvals = (
        df.filter(pl.col("event_type") == "payout.approved")
        .with_columns(payout_id=_field("payout_id"))
        .with_row_index("approval")  # each approval is judged on its own
    )
    recorded = (
        df.filter(pl.col("event_type") == "payout.recorded")
        .select("tenant_id", payout_id=_field("payout_id"), rec_at="occurred_at", rec_actor="actor_id")
        .filter(pl.col("payout_id").is_not_null())
    )
    earlier = (
        approvals.join(recorded, on=["tenant_id", "payout_id"], how="inner")
        .filter(pl.col("rec_at") <= pl.col("occurred_at"))
        .group_by("approval").agg(
            n=pl.len(),
            self_approved=(pl.col("rec_actor") == pl.col("actor_id")).fill_null(False).any())
    )
    judged = approvals.join(earlier, on="approval", how="left")
    flagged = judged.filter(pl.col("n").is_null() | pl.col("self_approved"))
    return flagged.with_columns(
        rule_id=pl.lit("SOX-SOD"),
        detail=pl.when(pl.col("n").is_null())
        .then(pl.lit("no payout.recorded for this payout at or before the approval"))
        .otherwise(pl.lit("approver also recorded the payout")),
    ).select(_FINDING_COLS)


def _sox_change(df: pl.DataFrame) -> pl.DataFrame:
    c = df.filter(pl.col("event_type") == "config.changed").with_columns(
        category=_field("category"), ticket=_field("change_ticket"), approver=_field("approved_by"))
    no_ticket, no_approver = _missing(pl.col("ticket")), _missing(pl.col("approver"))
    self_ok = pl.col("approver") == pl.col("actor_id")
    return (
        c.filter(pl.col("category").is_in(["financial", "security"]).fill_null(False))
        .filter((no_ticket | no_approver | self_ok.fill_null(False)))
        .with_columns(
            rule_id=pl.lit("SOX-CHANGE"),
            detail=pl.concat_str(pl.lit("change to a "), pl.col("category"), pl.lit(" setting: "),
                                 pl.when(no_ticket).then(pl.lit("no change ticket"))
                                 .when(no_approver).then(pl.lit("no approver"))
                                 .otherwise(pl.lit("approved by the person who made it"))))
        .select(_FINDING_COLS)
    )
