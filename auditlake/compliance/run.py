"""Evaluating the rules of RULES.md on a lake into the `findings` Delta table.

One evaluation = one read of the ledger's projection columns (never plain PII; never the
sealed `leaf`) at one table version, `rules.evaluate` over it, and one blind append to
`findings` of:

* one row per finding (`rule_id`, `event_id`, `tenant_id`, `occurred_at`, `severity`,
  `detail`), and
* exactly one **evaluation marker** row: `rule_id`, `event_id`, `tenant_id`,
  `occurred_at` and `severity` null, `detail` a JSON summary of the evaluation
  (`{"kind": "evaluation", "events": .., "findings": .., "by_rule": {..}}`). It records
  evaluations that found nothing, so "the latest evaluation" is never an older one.

Every row carries `evaluation_id`, `as_of`, `evaluated_at`, `code_version` (package version
+ a hash of the rule engine's source) and `tree_size` (ledger events evaluated).

Evaluations are kept forever (the table is append-only). "The findings view shows the
latest": the latest evaluation is the one with the greatest `(evaluated_at,
evaluation_id)`, `evaluated_at` not in the future (a row dated ahead, which only a forger
writes, would otherwise hide every later evaluation for good in an append-only table);
`evaluation_id` itself sorts by time (`YYYYMMDDTHHMMSSffffffZ-<hex8>`).
`latest_findings` (polars) and `catalog.latest_findings_sql` (DuckDB, for the catalog view) apply
exactly that rule and drop the marker row.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa

from ..errors import AuditlakeError, ConflictError
from ..lake import tables
from ..lake.store import Lake

UTC = timezone.utc

# The ledger columns the rule engine reads (tables.LEDGER names; no sealed columns, no leaf).
PROJECTION = (
    "seq", "event_id", "event_type", "occurred_at", "tenant_id", "actor_id", "subject_id",
    "subject_country", "subject_region", "subject_timezone", "phone_bidx", "pii_fields",
    "lawful_basis", "data",
)
FINDING_COLUMNS = ("rule_id", "event_id", "tenant_id", "occurred_at", "severity", "detail")
MAX_ATTEMPTS = 30


# ------------------------------------------------------------------------ identity

def code_version() -> str:
    """`auditlake <version>+rules.<sha256 of the rule engine's sources, 12 hex>`."""
    from importlib.metadata import PackageNotFoundError, version

    from . import calendar as cal_mod
    from . import rules as rules_mod

    try:
        pkg = version("auditlake")
    except PackageNotFoundError:  # running from a source tree
        pkg = "0+unknown"
    h = hashlib.sha256()
    for mod in (rules_mod, cal_mod):
        h.update(Path(mod.__file__).read_bytes())
    return f"auditlake {pkg}+rules.{h.hexdigest()[:12]}"


def new_evaluation_id(at: datetime) -> str:
    """A unique id that sorts by evaluation time."""
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def parse_as_of(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 instant (or a `YYYY-MM-DD` date, meaning its UTC midnight) as UTC."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    from ..contract import parse_instant

    text = value.strip()
    parsed = parse_instant(text)
    if parsed is None:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        except ValueError:
            raise AuditlakeError(f"--as-of: not an RFC 3339 instant or a date: {value!r}") from None
    return parsed


def configured_holidays(lake: Lake) -> frozenset[date]:
    """The holiday calendar of RULES.md's business days: `compliance.holidays` (a list of
    `YYYY-MM-DD`) in the lake's `auditlake.json`; none by default."""
    meta = lake.read_json("auditlake.json") or {}
    raw = (meta.get("compliance") or {}).get("holidays") or []
    try:
        return frozenset(date.fromisoformat(str(d)) for d in raw)
    except ValueError as exc:
        raise AuditlakeError(f"auditlake.json compliance.holidays: {exc}") from None


# ------------------------------------------------------------------------ reading

def scan(dt) -> pl.LazyFrame:
    """A lazy polars scan of a DeltaTable at its loaded version.

    polars' native Delta reader (`pl.scan_delta`, Rust parquet reads) is ~8x faster than
    polars over `DeltaTable.to_pyarrow_dataset()` (1M ledger rows: ~1 s against ~8 s);
    where it cannot open the table (e.g. an object store it is not configured for) the
    pyarrow dataset is used."""
    try:
        lf = pl.scan_delta(dt)
        lf.head(0).collect()  # opens the files' metadata: fails here, not at the real read
        return lf
    except Exception:  # noqa: BLE001 - the pyarrow path reads everything deltalake can
        return pl.scan_pyarrow_dataset(dt.to_pyarrow_dataset())


def read_projection(lake: Lake) -> tuple[pl.DataFrame, int | None]:
    """The ledger's projection columns at its current version, and that version (None:
    no ledger yet, an empty frame)."""
    from .rules import _INPUT_SCHEMA

    dt = lake.delta("ledger")
    if dt is None:
        return pl.DataFrame(schema={c: _INPUT_SCHEMA[c] for c in PROJECTION}), None
    return scan(dt).select(list(PROJECTION)).collect(), dt.version()


# ------------------------------------------------------------------------ evaluating

def _findings_table(findings: pl.DataFrame, marker_detail: str, evaluation_id: str, as_of: datetime | None,
                    evaluated_at: datetime, version: str, tree_size: int) -> pa.Table:
    ts = pl.Datetime("us", "UTC")
    marker = pl.DataFrame(
        {"rule_id": [None], "event_id": [None], "tenant_id": [None], "occurred_at": [None],
         "severity": [None], "detail": [marker_detail]},
        schema={"rule_id": pl.Utf8, "event_id": pl.Utf8, "tenant_id": pl.Utf8, "occurred_at": ts,
                "severity": pl.Utf8, "detail": pl.Utf8},
    )
    body = findings.select(
        pl.col("rule_id").cast(pl.Utf8), pl.col("event_id").cast(pl.Utf8), pl.col("tenant_id").cast(pl.Utf8),
        pl.col("occurred_at").cast(ts), pl.col("severity").cast(pl.Utf8), pl.col("detail").cast(pl.Utf8),
    )
    rows = pl.concat([body, marker]).with_columns(
        evaluation_id=pl.lit(evaluation_id),
        as_of=pl.lit(as_of, dtype=ts),
        evaluated_at=pl.lit(evaluated_at, dtype=ts),
        code_version=pl.lit(version),
        tree_size=pl.lit(tree_size, dtype=pl.Int64),
    )
    return rows.to_arrow().select(tables.FINDINGS.names).cast(tables.FINDINGS)


def append_findings(lake: Lake, table: pa.Table, metadata: dict | None = None) -> int:
    """Optimistic blind append to `findings`; on a concurrent commit, re-read the version
    and try again. Returns the committed version."""
    attempt = 0
    while True:
        try:
            version = tables.append(lake, "findings", table, tables.version(lake, "findings"), metadata)
            # Under retention at once (RET-WORM), or `verify` flags the new objects until the next ingest.
            from ..lake import retention
            from ..lake.meta import open_lake_keys

            retention.lock_new(lake, open_lake_keys(lake))
            return version
        except ConflictError:
            attempt += 1
            if attempt >= MAX_ATTEMPTS:
                raise AuditlakeError("gave up appending findings after repeated concurrent commits; run it again")
            time.sleep(random.uniform(0.02, 0.2) * min(attempt, 10))


def evaluate_lake(lake: Lake, as_of: datetime | str | None = None, holidays: frozenset[date] | None = None,
                  report: bool = True) -> dict:
    """Evaluate every rule over the lake's ledger and append the findings. Returns a
    summary: evaluation_id, as_of, evaluated_at, code_version, tree_size, ledger_version,
    findings (count), by_rule ({rule_id: count}, all 11 ids), findings_version, report
    (see `report.write_report`, when `report`), duration_s."""
    from . import rules

    started = time.monotonic()
    as_of_dt = parse_as_of(as_of)
    from ..lake.meta import read_meta

    read_meta(lake)  # a lake, whole (one line when it is not)
    hol = configured_holidays(lake) if holidays is None else frozenset(holidays)
    events, ledger_version = read_projection(lake)
    read_s = time.monotonic() - started

    t0 = time.monotonic()
    findings = rules.evaluate(events, as_of=as_of_dt, holidays=hol) if events.height else \
        pl.DataFrame(schema={"rule_id": pl.Utf8, "event_id": pl.Utf8, "tenant_id": pl.Utf8,
                             "occurred_at": pl.Datetime("us", "UTC"), "severity": pl.Utf8, "detail": pl.Utf8})
    rules_s = time.monotonic() - t0
    if as_of_dt is None and events.height:
        as_of_dt = events["occurred_at"].max()

    evaluated_at = datetime.now(UTC)
    evaluation_id = new_evaluation_id(evaluated_at)
    version = code_version()
    counts = dict(findings.group_by("rule_id").len().iter_rows()) if findings.height else {}
    by_rule = {r: int(counts.get(r, 0)) for r in rules.RULE_IDS}
    marker = json.dumps({"kind": "evaluation", "events": events.height, "findings": findings.height,
                         "by_rule": by_rule, "ledger_version": ledger_version,
                         "holidays": sorted(d.isoformat() for d in hol)}, sort_keys=True)
    table = _findings_table(findings, marker, evaluation_id, as_of_dt, evaluated_at, version, events.height)
    t0 = time.monotonic()
    findings_version = append_findings(lake, table, {"evaluation_id": evaluation_id})
    write_s = time.monotonic() - t0

    summary = {
        "evaluation_id": evaluation_id,
        "as_of": _iso(as_of_dt),
        "evaluated_at": _iso(evaluated_at),
        "code_version": version,
        "tree_size": events.height,
        "ledger_version": ledger_version,
        "findings": findings.height,
        "by_rule": by_rule,
        "findings_version": findings_version,
    }
    if report:
        from .report import write_report

        t0 = time.monotonic()
        summary["report"] = write_report(lake, summary, findings, events)
        summary["timings"] = {"report_s": round(time.monotonic() - t0, 3)}
    summary.setdefault("timings", {}).update(
        read_s=round(read_s, 3), rules_s=round(rules_s, 3), write_s=round(write_s, 3))
    from ..catalog import refresh_views

    summary["catalog_note"] = refresh_views(lake)  # the findings view of a catalog built before them
    summary["duration_s"] = round(time.monotonic() - started, 3)
    return summary


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------ the latest

def latest_evaluation_id(lake: Lake) -> str | None:
    """The id of the latest evaluation: greatest (evaluated_at, evaluation_id), not dated in
    the future."""
    dt = lake.delta("findings")
    if dt is None:
        return None
    t = (pl.scan_pyarrow_dataset(dt.to_pyarrow_dataset()).select("evaluation_id", "evaluated_at")
         .filter(pl.col("evaluated_at").is_null() | (pl.col("evaluated_at") <= datetime.now(timezone.utc))))
    top = t.unique().sort(["evaluated_at", "evaluation_id"], descending=True, nulls_last=True).head(1).collect()
    return top["evaluation_id"][0] if top.height else None


def evaluation_findings(lake: Lake, evaluation_id: str, include_marker: bool = False) -> pl.DataFrame:
    """All rows of one evaluation (findings only, unless `include_marker`)."""
    import pyarrow.dataset as ds

    dt = lake.delta("findings")
    if dt is None:
        return pl.from_arrow(tables.FINDINGS.empty_table())
    t = dt.to_pyarrow_dataset().to_table(filter=ds.field("evaluation_id") == evaluation_id)
    df = pl.from_arrow(t.select(tables.FINDINGS.names))
    if not include_marker:
        df = df.filter(pl.col("rule_id").is_not_null())
    return df.sort(["rule_id", "occurred_at", "event_id"], nulls_last=True)


def latest_findings(lake: Lake) -> pl.DataFrame:
    """The findings of the latest evaluation (columns of tables.FINDINGS; empty when there
    is none), sorted by rule_id, occurred_at, event_id. Same rule as `catalog.latest_findings_sql`."""
    eid = latest_evaluation_id(lake)
    if eid is None:
        return pl.from_arrow(tables.FINDINGS.empty_table())
    return evaluation_findings(lake, eid)


def evaluations(lake: Lake) -> pl.DataFrame:
    """One row per evaluation (from its marker row), newest first."""
    dt = lake.delta("findings")
    if dt is None:
        return pl.DataFrame()
    df = pl.from_arrow(dt.to_pyarrow_dataset().to_table(
        columns=["evaluation_id", "as_of", "evaluated_at", "code_version", "tree_size", "rule_id", "event_id", "detail"]))
    marks = df.filter(pl.col("rule_id").is_null() & pl.col("event_id").is_null())
    return marks.select("evaluation_id", "as_of", "evaluated_at", "code_version", "tree_size",
                        summary="detail").sort(["evaluated_at", "evaluation_id"], descending=True)
