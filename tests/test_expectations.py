"""The Great Expectations suites (auditlake/expectations.py) with real GX 1.x validations:
they pass on a clean lake (and write Data Docs into it) and fail, with the right
expectation, severity and row counts, on planted bad frames. Bad data never raises."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from quality_fixtures import build_clean_lake, ledger_frame, quarantine_frame  # noqa: E402

from auditlake import expectations as X  # noqa: E402
from auditlake.compliance.run import evaluate_lake  # noqa: E402
from auditlake.lake import tables  # noqa: E402

UTC = timezone.utc


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean lake with one compliance evaluation, and its tables as frames."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDITLAKE_HOME", str(home))
        lake = build_clean_lake(tmp_path_factory.mktemp("clean"))
        summary = evaluate_lake(lake, report=False)
    findings = pl.from_arrow(lake.delta("findings").to_pyarrow_dataset().to_table())
    return {"lake": lake, "ledger": ledger_frame(lake), "quarantine": quarantine_frame(lake),
            "findings": findings, "summary": summary}


def failed(result: X.SuiteResult) -> dict[tuple[str, str | None], X.ExpectationResult]:
    return {(e.frame, e.column): e for e in result.failed}


# ----------------------------------------------------------------------------- clean

def test_clean_lake_passes_every_suite_and_writes_data_docs(clean):
    lake = clean["lake"]
    results = X.validate_all(lake, evaluation_id=clean["summary"]["evaluation_id"], run_name="clean")
    for name, r in results.items():
        assert r.success, (name, r.failures_text())
        assert r.ok and r.severity is None
        assert r.expectations and all(e.error is None for e in r.expectations)
    assert results["ledger"].rows == clean["ledger"].height == 40
    assert results["quarantine"].rows == 2
    assert results["quarantine"].details["by_reason_family"] == {"not_json": 1, "unknown_event_type": 1}
    assert results["findings"].rows == clean["summary"]["findings"] > 0
    # Data Docs: an index and one page per validated frame, inside the lake.
    index = Path(lake.uri) / "reports" / "data_docs" / "index.html"
    assert results["ledger"].data_docs_uri == index.as_uri() and index.exists()
    pages = {f: p for r in results.values() for f, p in r.data_docs_pages.items()}
    assert set(pages) == {"ledger.schema", "ledger.keys", "ledger.partitions", "ledger.values", "ledger.money",
                          "quarantine.rows", "quarantine.text", "findings.rows", "findings.evaluations"}
    for uri in pages.values():
        assert Path(uri.removeprefix("file://")).exists(), uri
    assert "clean" in index.read_text()
    # The results are JSON-able (the command prints them).
    json.dumps({k: r.to_dict() for k, r in results.items()})


# ----------------------------------------------------------------------------- ledger

def test_duplicate_seq(clean):
    df = clean["ledger"].with_columns(
        seq=pl.when(pl.col("seq") == 5).then(4).otherwise(pl.col("seq")))
    r = X.validate_ledger_frame(df, tables.LEDGER)
    f = failed(r)
    assert not r.ok and r.severity == "error"
    assert f[("ledger.keys", "seq")].expectation == "expect_column_values_to_be_unique"
    assert f[("ledger.keys", "seq")].unexpected_count == 2
    assert f[("ledger.keys", "seq_step")].unexpected_count == 2  # the repeat (step 0) and the jump over 5
    assert ("ledger.keys", "event_id") not in f


def test_seq_gap(clean):
    df = clean["ledger"].filter(pl.col("seq") != 7)
    r = X.validate_ledger_frame(df, tables.LEDGER)
    f = failed(r)
    assert not r.ok and set(f) == {("ledger.keys", "seq_step")}
    assert f[("ledger.keys", "seq_step")].affected_rows == 1
    assert f[("ledger.keys", "seq_step")].sample == ["2"]
    # A log that does not start at 0 is a gap too.
    r = X.validate_ledger_frame(clean["ledger"].filter(pl.col("seq") > 0), tables.LEDGER)
    assert set(failed(r)) == {("ledger.keys", "seq_step")}


def test_bad_hash_format(clean):
    df = clean["ledger"].with_columns(
        hash=pl.when(pl.col("seq") == 3).then(pl.col("hash").str.to_uppercase())
        .when(pl.col("seq") == 9).then(pl.lit("abc123")).otherwise(pl.col("hash")))
    r = X.validate_ledger_frame(df, tables.LEDGER)
    f = failed(r)
    assert set(f) == {("ledger.partitions", "bad_hash")} and r.severity == "error"
    assert f[("ledger.partitions", "bad_hash")].affected_rows == 2


def test_unknown_time_zone_is_a_warning_not_a_crash(clean):
    df = clean["ledger"].with_columns(
        subject_timezone=pl.when(pl.col("seq").is_in([1, 2, 6])).then(pl.lit("Mars/Olympus"))
        .when(pl.col("seq") == 11).then(pl.lit("Factory"))
        .when(pl.col("seq") == 12).then(pl.lit("x@tz.example.com")).otherwise(pl.col("subject_timezone")))
    r = X.validate_ledger_frame(df, tables.LEDGER)
    f = failed(r)
    assert set(f) == {("ledger.values", "subject_timezone")}
    e = f[("ledger.values", "subject_timezone")]
    assert e.severity == "warn" and r.severity == "warn"
    assert not r.success and r.ok  # a data-quality failure, not an integrity one
    # A PII-shaped value is counted but masked before GX sees it (its samples are stored).
    assert e.affected_rows == 5 and set(e.sample) == {"Mars/Olympus", "Factory", "***"}
    assert "x@tz.example.com" not in json.dumps(r.to_dict())


def test_country_and_currency_codes_outside_iso_are_warnings(clean):
    """Ingest checks the shape of a country (two capitals) or currency (three); a code ISO
    does not list is data the lake keeps as sent: a warning that names it and its rows."""
    df = clean["ledger"].with_columns(
        subject_country=pl.when(pl.col("seq").is_in([0, 1])).then(pl.lit("ZZ")).otherwise(pl.col("subject_country")),
        data=pl.when(pl.col("seq") == 3).then(pl.col("data").str.replace('"USD"', '"ABC"')).otherwise(pl.col("data")))
    assert df.filter(pl.col("seq").is_in([0, 1]))["subject_country"].null_count() == 0  # rows with a subject
    assert df.filter(pl.col("seq") == 3)["event_type"].item() == "payout.recorded"
    r = X.validate_ledger_frame(df, tables.LEDGER)
    f = failed(r)
    assert set(f) == {("ledger.values", "subject_country"), ("ledger.money", "currency")}
    assert f[("ledger.values", "subject_country")].sample == ["ZZ"] and f[("ledger.values", "subject_country")].affected_rows == 2
    assert f[("ledger.money", "currency")].sample == ["ABC"] and f[("ledger.money", "currency")].affected_rows == 1
    assert r.severity == "warn" and r.ok and not r.success
    assert "USD" in X.iso_currencies() and "US" in X.iso_countries() and "DE" in X.iso_countries()


def test_an_email_or_phone_written_into_data_is_a_warning(clean):
    """Only the contract's PII fields are sealed: the same data in `data` is kept as sent
    and seen by every reader, so the suite warns (without copying it into a sample)."""
    df = clean["ledger"].with_columns(data=pl.when(pl.col("seq").is_in([2, 5])).then(
        pl.lit('{"new_value":"jane.roe@example.com +14155550123"}')).otherwise(pl.col("data")))
    r = X.validate_ledger_frame(df, tables.LEDGER)
    f = failed(r)
    assert set(f) == {("ledger.partitions", "pii_in_data")}
    assert f[("ledger.partitions", "pii_in_data")].affected_rows == 2 and r.severity == "warn" and r.ok
    assert "jane.roe" not in json.dumps([e.sample for e in f.values()], default=str)


def test_unknown_event_type_and_bad_key_id(clean):
    df = clean["ledger"].with_columns(
        event_type=pl.when(pl.col("seq") == 0).then(pl.lit("call.teleported")).otherwise(pl.col("event_type")),
        key_id=pl.when(pl.col("seq") == 1).then(pl.lit("some-key")).otherwise(pl.col("key_id")))
    r = X.validate_ledger_frame(df, tables.LEDGER)
    f = failed(r)
    assert set(f) == {("ledger.values", "event_type"), ("ledger.values", "key_id")}
    assert f[("ledger.values", "event_type")].sample == ["call.teleported"]
    assert f[("ledger.values", "event_type")].affected_rows == 1 and r.severity == "error"


def test_timestamps_nulls_partition_and_missing_column(clean):
    base = clean["ledger"]
    df = base.with_columns(
        occurred_at=pl.when(pl.col("seq") == 2).then(pl.col("ingested_at") + timedelta(days=3))
        .when(pl.col("seq") == 3).then(pl.lit(datetime(1999, 12, 31, tzinfo=UTC)))
        .otherwise(pl.col("occurred_at")),
        tenant_id=pl.when(pl.col("seq") == 4).then(None).otherwise(pl.col("tenant_id")),
    ).drop("batch_id")
    r = X.validate_ledger_frame(df)  # the frame's own schema: batch_id is missing
    f = failed(r)
    assert f[("ledger.partitions", "occurred_after_ingest")].affected_rows == 1
    assert f[("ledger.partitions", "occurred_after_ingest")].severity == "warn"
    assert f[("ledger.partitions", "occurred_before_2000")].affected_rows == 1
    # both moved rows now sit in a partition that is not their occurred_at date
    assert f[("ledger.partitions", "wrong_partition")].affected_rows == 2
    assert f[("ledger.schema", "column")].expectation == "expect_column_distinct_values_to_equal_set"
    # batch_id reads as null for every row; seq 4 also lacks its tenant
    assert f[("ledger.partitions", "null_required")].affected_rows == base.height
    assert r.details["nulls"] == {"tenant_id": 1, "batch_id": base.height}
    assert r.severity == "error"


# ----------------------------------------------------------------------------- quarantine

def test_unmasked_quarantine_raw_fails_without_copying_the_pii(clean):
    q = clean["quarantine"]
    leaked = q.with_columns(raw=pl.when(pl.col("line") == q["line"].max())
                            .then(pl.lit('{"subject":{"email":"jane.doe@example.com","phone":"+13125550123"}}'))
                            .otherwise(pl.col("raw")))
    extra = pl.DataFrame({**{c: [q[c][0]] for c in q.columns}}).with_columns(
        raw=pl.lit("call me on (312) 555-0188"), reason=pl.lit("rejected by a new rule"), line=pl.lit(0, pl.Int64))
    r = X.validate_quarantine_frame(pl.concat([leaked, extra]))
    f = failed(r)
    assert not r.ok and r.severity == "error"
    assert f[("quarantine.text", "raw")].unexpected_count == 2
    assert f[("quarantine.text", "raw")].sample == []
    assert f[("quarantine.rows", "reason")].severity == "warn"  # unknown reason family
    assert f[("quarantine.rows", "line")].unexpected_count == 1  # lines are 1-based
    assert r.details["by_reason_family"]["unknown"] == 1
    dumped = json.dumps(r.to_dict())
    assert "jane.doe@example.com" not in dumped and "555-0188" not in dumped and "5550123" not in dumped


def test_quarantine_reason_with_pii_is_masked_in_samples(clean):
    q = clean["quarantine"].with_columns(reason=pl.lit("unknown event_type: bob@example.org"))
    r = X.validate_quarantine_frame(q)
    f = failed(r)
    assert set(f) == {("quarantine.text", "reason")}
    assert "bob@example.org" not in json.dumps(r.to_dict())


# ----------------------------------------------------------------------------- findings

def test_bad_findings(clean):
    fnd = clean["findings"]
    rows = fnd.filter(pl.col("rule_id").is_not_null())
    bad = pl.concat([
        fnd,
        rows.head(1),  # a duplicate (evaluation_id, rule_id, event_id)
        rows.head(1).with_columns(rule_id=pl.lit("TCPA-NIGHT")),
        rows.head(1).with_columns(event_id=pl.lit("e-2"), severity=pl.lit("urgent")),
        fnd.filter(pl.col("rule_id").is_null()),  # a second marker row for the same evaluation
    ])
    r = X.validate_findings_frame(bad)
    f = failed(r)
    assert {("findings.rows", "rule_id"), ("findings.rows", "severity"), ("findings.rows", "rule_id,severity"),
            ("findings.rows", "evaluation_id,rule_id,event_id"), ("findings.rows", "event_id"),
            ("findings.evaluations", "evaluation_id")} <= set(f)
    assert f[("findings.rows", "rule_id")].sample == ["TCPA-NIGHT"]
    assert f[("findings.rows", "evaluation_id,rule_id,event_id")].unexpected_count == 2
    assert r.severity == "error"
    assert X.validate_findings_frame(fnd).success


def test_absent_tables_pass(tmp_path):
    from auditlake.lake.store import Lake

    lake = Lake.open(str(tmp_path / "empty"))
    for fn in (X.validate_ledger, X.validate_quarantine, X.validate_findings):
        r = fn(lake)
        assert r.success and r.rows == 0 and r.note
