"""The Dagster asset checks of quality/checks.py: called directly, and run by
`dagster.materialize` next to trivial stand-in assets, where the blocking ledger suite
stops what is downstream of a broken ledger."""
from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from quality_fixtures import build_clean_lake  # noqa: E402

from auditlake.compliance.run import evaluate_lake  # noqa: E402
from auditlake.lake import tables  # noqa: E402
from auditlake.lake.store import Lake  # noqa: E402
from quality.checks import build_quality_checks  # noqa: E402


class FakeLakeResource(dg.ConfigurableResource):
    """Stands in for the orchestration's LakeResource: same key, same `.lake()`."""

    uri: str
    quarantine_warn_share: float = 0.5

    def lake(self) -> Lake:
        return Lake.open(self.uri)


@pytest.fixture(scope="module")
def clean_home(tmp_path_factory) -> Path:
    """Where the clean lake's keys are (a test that writes to a copy of it signs with them)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def clean_lake(tmp_path_factory, clean_home) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDITLAKE_HOME", str(clean_home))
        lake = build_clean_lake(tmp_path_factory.mktemp("clean"))
        evaluate_lake(lake, report=False)
    return lake.uri


def run_check(check: dg.AssetChecksDefinition, resource) -> dg.AssetCheckResult:
    context = dg.build_asset_check_context(resources={"lake": resource})
    try:
        return check(context)
    finally:
        del context  # tear its resources down now, not at interpreter exit


def by_name(checks) -> dict[str, dg.AssetChecksDefinition]:
    return {next(iter(c.check_keys)).name: c for c in checks}


def test_factory_keys_and_blocking():
    checks = build_quality_checks("ledger", dg.AssetKey("quarantine"), ["compliance_findings"])
    keys = {k for c in checks for k in c.check_keys}
    assert keys == {
        dg.AssetCheckKey(dg.AssetKey("ledger"), "gx_ledger_suite"),
        dg.AssetCheckKey(dg.AssetKey("quarantine"), "quarantine_rate_overall"),
        dg.AssetCheckKey(dg.AssetKey("quarantine"), "gx_quarantine_suite"),
        dg.AssetCheckKey(dg.AssetKey("compliance_findings"), "gx_findings_suite"),
    }
    specs = {s.name: s for c in checks for s in c.check_specs}
    assert specs["gx_ledger_suite"].blocking and not specs["gx_findings_suite"].blocking
    assert len(build_quality_checks("a", "b", "c", quarantine_rate_check=False)) == 3


def test_checks_called_directly_on_a_clean_lake(clean_lake):
    checks = by_name(build_quality_checks("ledger", "quarantine", "findings"))
    resource = FakeLakeResource(uri=clean_lake)
    for name in ("gx_ledger_suite", "gx_quarantine_suite", "gx_findings_suite"):
        result = run_check(checks[name], resource)
        assert result.passed, (name, result.description)
        assert result.metadata["rows"].value > 0
        assert result.metadata["failed"].value == 0
        assert result.metadata["data_docs"].value.endswith("reports/data_docs/index.html")
        assert "| frame | expectation |" in result.metadata["results"].value
    # 2 of 42 landing lines quarantined (4.8%): under the resource's 50%, over the default 1%
    rate = run_check(checks["quarantine_rate_overall"], resource)
    assert rate.passed and rate.metadata["quarantined"].value == 2 and rate.metadata["lines_read"].value == 42
    strict = by_name(build_quality_checks("ledger", "quarantine", "findings", quarantine_warn_share=0.01))
    rate = run_check(strict["quarantine_rate_overall"], resource)
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert "warn above 1.00%" in rate.description


def _break_ledger(uri: str) -> None:
    """Append a row that repeats seq 0: what a buggy or hostile writer could leave."""
    lake = Lake.open(uri)
    dt = lake.delta("ledger")
    row = dt.to_pyarrow_dataset().to_table().slice(0, 1)
    tables.append(lake, "ledger", row, dt.version())


def test_materialize_with_stand_in_assets_and_a_blocking_failure(tmp_path, clean_lake):
    @dg.asset(name="ledger")
    def ledger_asset() -> None: ...

    @dg.asset(name="quarantine", deps=[ledger_asset])
    def quarantine_asset() -> None: ...

    @dg.asset(name="findings", deps=[ledger_asset])
    def findings_asset() -> None: ...

    checks = build_quality_checks("ledger", "quarantine", "findings", data_docs=False)
    assets = [ledger_asset, quarantine_asset, findings_asset]
    result = dg.materialize(assets + checks, resources={"lake": FakeLakeResource(uri=clean_lake)})
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"gx_ledger_suite", "quarantine_rate_overall", "gx_quarantine_suite", "gx_findings_suite"}
    assert all(e.passed for e in evaluations.values())

    # A copy of the lake whose ledger repeats a seq: the blocking ledger suite fails with
    # ERROR and the assets downstream of the ledger are not materialised.
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(clean_lake, broken, copy_function=shutil.copy)
    for p in broken.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the copy of a retention-locked lake is writable
    _break_ledger(str(broken))
    result = dg.materialize(assets + checks, resources={"lake": FakeLakeResource(uri=str(broken))},
                            raise_on_error=False)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    ledger_eval = evaluations["gx_ledger_suite"]
    assert not ledger_eval.passed and ledger_eval.severity == dg.AssetCheckSeverity.ERROR
    assert "seq" in ledger_eval.metadata["results"].value
    materialized = {m.asset_key for m in result.get_asset_materialization_events()
                    } if hasattr(result, "get_asset_materialization_events") else {
        e.event_specific_data.materialization.asset_key for e in result.all_events if e.is_step_materialization}
    assert dg.AssetKey("ledger") in materialized
    assert dg.AssetKey("quarantine") not in materialized and dg.AssetKey("findings") not in materialized


def test_a_check_reports_instead_of_crashing(tmp_path):
    class Broken(dg.ConfigurableResource):
        def lake(self) -> Lake:
            raise OSError("the bucket is gone")

    checks = by_name(build_quality_checks("ledger", "quarantine", "findings"))
    result = run_check(checks["gx_ledger_suite"], Broken())
    assert not result.passed and "the bucket is gone" in result.description
    empty = FakeLakeResource(uri=str(tmp_path / "nothing"))
    for name, check in checks.items():
        assert run_check(check, empty).passed, name  # no tables yet: nothing is wrong


def test_a_report_folder_that_cannot_be_written_does_not_fail_the_data(tmp_path, clean_lake):
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(clean_lake, lake)
    shutil.rmtree(lake / "reports", ignore_errors=True)
    (lake / "reports").write_text("not a folder: the reports cannot be written")  # as a read-only or full disk
    checks = by_name(build_quality_checks("ledger", "quarantine", "findings"))
    result = run_check(checks["gx_ledger_suite"], FakeLakeResource(uri=str(lake)))
    assert result.passed and result.metadata["failed"].value == 0, result.description
    assert "data_docs_not_written" in result.metadata and "data_docs" not in result.metadata


def test_findings_frame_breakage_fails_the_findings_check(tmp_path, clean_lake, clean_home, monkeypatch):
    import shutil

    monkeypatch.setenv("AUDITLAKE_HOME", str(clean_home))
    copy = tmp_path / "copy"
    shutil.copytree(clean_lake, copy, copy_function=shutil.copy)
    for p in copy.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    lake = Lake.open(str(copy))
    dt = lake.delta("findings")
    latest = pl.from_arrow(dt.to_pyarrow_dataset().to_table()).filter(pl.col("rule_id").is_not_null())
    bogus = latest.head(1).with_columns(rule_id=pl.lit("TCPA-MOON"))
    tables.append(lake, "findings", bogus.to_arrow(), dt.version())
    result = run_check(by_name(build_quality_checks("l", "q", "f"))["gx_findings_suite"], FakeLakeResource(uri=str(copy)))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert "TCPA-MOON" in result.metadata["results"].value
