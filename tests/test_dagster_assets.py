"""Every asset materialises with `materialize(..., partition_key=...)` on a temporary lake;
re-materialising days (in parallel, twice) never duplicates events, quarantine rows or
findings; a tampered ledger stops everything downstream; the quarantine rate warns."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from events import event, write_jsonl

from assets import (
    ALL_ASSETS,
    checkpoints,
    compliance_findings,
    export_bundle,
    ledger,
    ledger_integrity,
    quarantine,
)
from auditlake.compliance.run import latest_findings
from auditlake.export import verify_export
from auditlake.lake.store import Lake
from auditlake.verify import verify
from pipelines.definitions import defs, quality_checks
from pipelines.resources import LakeResource

DAY1, DAY2, DAY3 = "2026-03-02", "2026-03-03", "2026-03-04"
TYPES = ("call.started", "consent.granted", "user.login")


def drop(lake_dir: Path, day: str, first: int, n: int, bad: int = 0, name: str = "events.jsonl") -> Path:
    """A landing file in the day folder: n valid events (ids first..first+n-1) and `bad` broken lines."""
    lines = [event(TYPES[i % 3], first + i, occurred_at=f"{day}T{8 + i % 12:02d}:{i % 60:02d}:00Z")
             for i in range(n)]
    lines += ["{this is not json"] * bad
    return write_jsonl(lake_dir / "landing" / day / name, lines)


def resources(lake_dir: Path, **kw) -> dict:
    return {"lake": LakeResource(uri=str(lake_dir), export_dir=str(lake_dir.parent / "exports"), **kw)}


def everything():
    """All assets and checks of the code location except the observed landing source."""
    return [a for a in ALL_ASSETS if a.key != dg.AssetKey("landing_files")] + [ledger_integrity, *quality_checks]


def mats(result) -> dict[str, dict]:
    return {m.asset_key.to_user_string(): {k: v.value for k, v in m.materialization.metadata.items()}
            for m in result.get_asset_materialization_events()}


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def ledger_rows(lake_dir: Path) -> list[dict]:
    dt = Lake.open(str(lake_dir)).delta("ledger")
    return [] if dt is None else dt.to_pyarrow_dataset().to_table(columns=["seq", "event_id"]).to_pylist()


def count(lake_dir: Path, table: str) -> int:
    dt = Lake.open(str(lake_dir)).delta(table)
    return 0 if dt is None else dt.to_pyarrow_dataset().count_rows()


def test_every_asset_materialises_for_a_day(lake_dir):
    drop(lake_dir, DAY1, 0, 40, bad=2)
    drop(lake_dir, DAY2, 100, 30)
    result = dg.materialize(everything(), partition_key=DAY1, resources=resources(lake_dir))
    assert result.success
    m = mats(result)
    assert set(m) == {"ledger", "quarantine", "checkpoints", "compliance_findings", "duckdb_catalog", "export_bundle"}

    led = m["ledger"]
    assert (led["accepted"], led["quarantined"], led["tree_size"]) == (40, 2, 40)  # only DAY1's file
    assert len(led["root"]) == 64 and len(led["checkpoint_id"]) == 64
    assert led["duration_s"] > 0 and led["dagster/row_count"] == 40
    assert "Landing day 2026-03-02" in led["preview"] and "| seq |" in led["preview"]
    assert m["quarantine"]["quarantined"] == 2 and m["quarantine"]["lines_read"] == 42
    cp = m["checkpoints"]
    assert cp["events_verified"] == 40 and cp["checkpoint_id"] == led["checkpoint_id"] and cp["root"] == led["root"]
    assert m["compliance_findings"]["events_evaluated"] == 40 and m["compliance_findings"]["evaluation_id"]
    assert "findings" in m["compliance_findings"]["preview"]
    assert Path(m["duckdb_catalog"]["path"]).exists() and m["duckdb_catalog"]["rows_events"] == 40
    bundle = m["export_bundle"]
    assert bundle["rows"] == 40 and bundle["source_tree_size"] == 40
    assert verify_export(bundle["path"])["ok"]
    # A privileged export from the launchpad takes the reason it must log.
    privileged = {"ops": {"export_bundle": {"config": {"profile": "privileged", "reveal_reason": "court order 12"}}}}
    again = dg.materialize([export_bundle], resources=resources(lake_dir), run_config=privileged)
    assert verify_export(mats(again)["export_bundle"]["path"])["revealed"]
    c = checks(result)
    assert c["integrity"].passed and c["quarantine_rate"].passed
    assert verify(Lake.open(str(lake_dir))).ok

    # the partition key is the landing day: DAY2 adds exactly its own file (after the two
    # exports' own data.exported audit events, which the ledger logged)
    result = dg.materialize([ledger, quarantine, ledger_integrity], partition_key=DAY2, resources=resources(lake_dir))
    led = mats(result)["ledger"]
    assert (led["accepted"], led["tree_size"], led["day_events"]) == (30, 40 + 2 + 30, 30)
    for run in result.get_asset_materialization_events():
        assert run.partition == DAY2


def test_landing_files_are_observed(lake_dir, monkeypatch):
    drop(lake_dir, DAY1, 0, 3)
    drop(lake_dir, DAY2, 10, 3)
    monkeypatch.setenv("AUDITLAKE_LAKE", str(lake_dir))  # the code location's own (local) resource
    result = defs.resolve_job_def("observe_landing_job").execute_in_process()
    (obs,) = result.asset_observations_for_node("landing_files")
    assert obs.metadata["files"].value == 2 and obs.metadata["days"].value == 2
    assert DAY1 in obs.metadata["preview"].value
    again = defs.resolve_job_def("observe_landing_job").execute_in_process()
    (obs2,) = again.asset_observations_for_node("landing_files")
    assert obs2.data_version == obs.data_version  # unchanged landing zone, same version


def test_a_day_without_files_ingests_nothing_else(lake_dir):
    drop(lake_dir, DAY1, 0, 5)
    result = dg.materialize([ledger, ledger_integrity], partition_key=DAY3, resources=resources(lake_dir))
    assert mats(result)["ledger"]["accepted"] == 0
    assert ledger_rows(lake_dir) == []  # DAY1's file stays for DAY1


def test_ingest_can_be_limited_to_named_files(lake_dir):
    drop(lake_dir, DAY1, 0, 5, name="a.jsonl")
    drop(lake_dir, DAY1, 10, 7, name="b.jsonl")
    config = {"ops": {"ledger": {"config": {"files": [f"{DAY1}/b.jsonl"]}}}}
    result = dg.materialize([ledger], partition_key=DAY1, resources=resources(lake_dir), run_config=config)
    assert mats(result)["ledger"]["accepted"] == 7
    with pytest.raises(dg.Failure, match="not landing files"):
        dg.materialize([ledger], partition_key=DAY1, resources=resources(lake_dir),
                       run_config={"ops": {"ledger": {"config": {"files": ["nope.jsonl"]}}}})


def test_backfill_in_parallel_then_again_is_idempotent(lake_dir):
    days = {DAY1: (0, 40, 1), DAY2: (100, 35, 2), DAY3: (200, 30, 0)}
    for day, (first, n, bad) in days.items():
        drop(lake_dir, day, first, n, bad=bad)
        drop(lake_dir, day, first + 50, 5, name="late.jsonl")
    expected = sum(n + 5 for _, n, _ in days.values())
    res = resources(lake_dir)

    def run(day):
        return dg.materialize([ledger, quarantine, ledger_integrity], partition_key=day, resources=res)

    with ThreadPoolExecutor(max_workers=3) as pool:  # days side by side; the append retries on conflict
        first_pass = list(pool.map(run, days))
    assert all(r.success for r in first_pass)
    rows = ledger_rows(lake_dir)
    assert len(rows) == expected
    assert sorted(r["seq"] for r in rows) == list(range(expected))
    assert len({r["event_id"] for r in rows}) == expected
    assert count(lake_dir, "quarantine") == 3
    assert verify(Lake.open(str(lake_dir))).ok

    with ThreadPoolExecutor(max_workers=3) as pool:  # the same backfill again
        second = list(pool.map(run, days))
    assert all(mats(r)["ledger"]["accepted"] == 0 for r in second)
    assert all(mats(r)["ledger"]["day_events"] == mats(f)["ledger"]["day_events"] for r, f in zip(second, first_pass))
    assert len(ledger_rows(lake_dir)) == expected and count(lake_dir, "quarantine") == 3

    # findings: evaluating the same ledger again yields the same findings, none twice
    lake = Lake.open(str(lake_dir))
    keys = []
    for _ in range(2):
        dg.materialize([compliance_findings], resources=res)
        f = latest_findings(lake)
        pairs = list(zip(f["rule_id"].to_list(), f["event_id"].to_list()))
        assert len(pairs) == len(set(pairs))
        keys.append(sorted(pairs))
    assert keys[0] == keys[1] and keys[0]  # telemarketing calls without consent are flagged


def _tamper(lake_dir: Path) -> None:
    """Rewrite one committed ledger data file with one event's type changed, padded to its
    committed size (a careful forger), so that only the chain and the sealed record tell."""
    path = next((lake_dir / "tables" / "ledger").rglob("*.parquet"))
    size = path.stat().st_size
    table = pq.read_table(path)
    types = table.column("event_type").to_pylist()
    types[0] = "user.login" if types[0] != "user.login" else "call.started"
    table = table.set_column(table.schema.get_field_index("event_type"), "event_type", pa.array(types))
    os.chmod(path, 0o644)
    tmp = path.with_name("forged.tmp")

    def forge(pad: int) -> int:
        with pq.ParquetWriter(tmp, table.schema, compression="zstd", store_schema=False) as w:
            w.write_table(table)
            w.add_key_value_metadata({"p": "x" * pad})
        return tmp.stat().st_size

    start = max(0, size - forge(0) - 16)
    for pad in range(start, start + 64):
        if forge(pad) == size:
            break
    else:
        raise AssertionError("could not forge a file of the committed size")
    shutil.move(tmp, path)


def test_a_tampered_ledger_stops_everything_downstream(lake_dir):
    drop(lake_dir, DAY1, 0, 20)
    drop(lake_dir, DAY2, 100, 10)
    res = resources(lake_dir)
    assert dg.materialize([ledger, ledger_integrity], partition_key=DAY1, resources=res).success
    _tamper(lake_dir)
    result = dg.materialize(everything(), partition_key=DAY2, resources=res, raise_on_error=False)
    assert not result.success
    c = checks(result)
    assert not c["integrity"].passed and c["integrity"].severity == dg.AssetCheckSeverity.ERROR
    assert c["integrity"].metadata["findings"].value > 0
    tampered = str(next((lake_dir / "tables" / "ledger").rglob("*.parquet")).relative_to(lake_dir / "tables" / "ledger"))
    assert tampered in c["integrity"].metadata["report"].value  # the report names the file
    assert set(mats(result)) == {"ledger"}  # nothing downstream of the ledger ran
    # and the verified checkpoints asset refuses on its own (e.g. the hourly verify)
    with pytest.raises(dg.Failure, match="failed verification"):
        dg.materialize([checkpoints], resources=res)


def test_a_lake_that_lost_its_identity_file_fails_the_check_and_gets_no_new_one(lake_dir):
    drop(lake_dir, DAY1, 0, 20)
    res = resources(lake_dir)
    assert dg.materialize([ledger, ledger_integrity], partition_key=DAY1, resources=res).success
    (lake_dir / "auditlake.json").unlink()
    got = ledger_integrity(dg.build_asset_check_context(), lake=res["lake"])
    assert not got.passed and got.severity == dg.AssetCheckSeverity.ERROR  # a finding, not an I/O error
    assert "identity_changed" in got.metadata["report"].value and "auditlake.json" in got.metadata["report"].value
    drop(lake_dir, DAY2, 100, 10)  # a new file: the ingest refuses rather than start a second log
    result = dg.materialize([ledger, ledger_integrity], partition_key=DAY2, resources=res, raise_on_error=False)
    assert not result.success and not (lake_dir / "auditlake.json").exists()


def test_a_changed_catalog_file_only_warns_and_the_catalog_step_rebuilds_it(lake_dir):
    """The catalog file is derived (a view in it is checked by verify): a stale or changed
    one must not stop the very run that rebuilds it."""
    import duckdb

    drop(lake_dir, DAY1, 0, 20)
    res = resources(lake_dir)
    assert dg.materialize(everything(), partition_key=DAY1, resources=res).success
    con = duckdb.connect(str(lake_dir / "catalog.duckdb"))
    con.execute("CREATE MACRO helper(x) AS x + 1")
    con.close()
    assert [f.kind for f in verify(Lake.open(str(lake_dir)), update_trust=False).findings] == ["catalog_changed"]
    result = dg.materialize(everything(), partition_key=DAY1, resources=res, raise_on_error=False)
    assert result.success and "duckdb_catalog" in mats(result)
    c = checks(result)
    assert not c["integrity"].passed and c["integrity"].severity == dg.AssetCheckSeverity.WARN
    assert "not advanced" in mats(result)["checkpoints"]["preview"]  # the trust store waits for a clean pass
    assert verify(Lake.open(str(lake_dir)), update_trust=False).ok


def test_a_file_dropped_again_on_another_day_is_counted_once_under_its_first_day(lake_dir):
    first = drop(lake_dir, DAY1, 0, 20, bad=2)
    (lake_dir / "landing" / DAY2).mkdir(parents=True)
    shutil.copy(first, lake_dir / "landing" / DAY2 / "again.jsonl")
    res = resources(lake_dir)
    one = mats(dg.materialize([ledger, quarantine], partition_key=DAY1, resources=res))
    two = mats(dg.materialize([ledger, quarantine], partition_key=DAY2, resources=res))
    assert (one["ledger"]["day_events"], one["quarantine"]["quarantined"], one["quarantine"]["lines_read"]) == (20, 2, 22)
    assert (two["ledger"]["accepted"], two["ledger"]["day_events"], two["ledger"]["files_already_ingested"]) == (0, 0, 1)
    assert (two["quarantine"]["quarantined"], two["quarantine"]["lines_read"]) == (0, 0)


def test_a_file_renamed_within_its_day_still_counts_there(lake_dir):
    """Same content under a new name the same day: the day's totals are unchanged (its
    events and quarantined lines were dropped from them, the ledger still holding them)."""
    first = drop(lake_dir, DAY1, 0, 20, bad=2)
    drop(lake_dir, DAY1, 50, 10, name="other.jsonl")
    res = resources(lake_dir)
    before = mats(dg.materialize([ledger, quarantine], partition_key=DAY1, resources=res))
    first.rename(first.with_name("renamed.jsonl"))
    after = mats(dg.materialize([ledger, quarantine], partition_key=DAY1, resources=res))
    assert after["ledger"]["accepted"] == 0
    assert (after["ledger"]["day_events"], after["quarantine"]["quarantined"], after["quarantine"]["lines_read"]) == (
        before["ledger"]["day_events"], before["quarantine"]["quarantined"], before["quarantine"]["lines_read"]) == (30, 2, 32)


def test_quarantine_rate_warns_above_the_configured_share(lake_dir):
    drop(lake_dir, DAY1, 0, 6, bad=4)
    result = dg.materialize([ledger, quarantine], partition_key=DAY1, resources=resources(lake_dir))
    assert result.success  # a warning, not a failure
    rate = checks(result)["quarantine_rate"]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert rate.metadata["rate"].value == pytest.approx(0.4)
    relaxed = resources(lake_dir, quarantine_warn_share=0.5)
    result = dg.materialize([quarantine], partition_key=DAY1, resources=relaxed)
    assert checks(result)["quarantine_rate"].passed


def test_incremental_verify_mode(lake_dir):
    drop(lake_dir, DAY1, 0, 10)
    res = resources(lake_dir)
    dg.materialize([ledger], partition_key=DAY1, resources=res)
    result = dg.materialize([checkpoints], resources=res,
                            run_config={"ops": {"checkpoints": {"config": {"mode": "incremental"}}}})
    meta = mats(result)["checkpoints"]
    assert meta["mode"] == "incremental"
    assert meta["events_verified"] == 10 and meta["tree_size"] == 10


def test_verify_rechecks_what_a_concurrent_ingest_shows_for_a_moment(lake_dir, monkeypatch):
    """A verify next to a running ingest can see an uncommitted data file or a committed object
    not yet under retention; those are checked again, real findings are reported at once
    (the engine's verify_settled, which the integrity check and every export use)."""
    from auditlake import verify as verify_module
    from auditlake.verify import Finding, VerifyReport, verify_settled

    def report(*findings):
        r = VerifyReport(ok=not findings, events=1)
        r.findings = list(findings)
        return r

    inflight = Finding("RET-WORM", "ledger", "committed object is not under retention (not in a sealed manifest)")
    uncommitted = Finding("data_file_inserted", "ledger", "a data file that no commit added")
    changed = Finding("changed_row", "ledger", "the sealed record or its hash was altered (chain broken)")
    answers = iter([report(inflight, uncommitted), report()])
    monkeypatch.setattr(verify_module, "verify", lambda lake, **kw: next(answers))
    monkeypatch.setattr(verify_module.tables, "version", lambda lake, name: 0)
    rep, attempts = verify_settled(None, pause_s=0)
    assert rep.ok and attempts == 2

    answers = iter([report(changed, inflight)] * 5)
    rep, attempts = verify_settled(None, pause_s=0)
    assert not rep.ok and attempts == 1  # tampering: no second chance

    answers = iter([report(uncommitted)] * 5)  # an inserted file that stays is tampering too
    rep, attempts = verify_settled(None, pause_s=0)
    assert not rep.ok and attempts == 5
