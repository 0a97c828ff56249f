"""The Dagster code location: it loads, validates, shows the lineage a newcomer expects, and
its resources, jobs, schedules and sensor are wired as documented (docs/ORCHESTRATION.md)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.definitions import defs
from pipelines.resources import LakeResource, deployment_name, resources_for_deployment

ROOT = Path(__file__).resolve().parents[1]

LINEAGE = {
    "ledger": {"landing_files"},
    "quarantine": {"ledger"},
    "checkpoints": {"ledger"},
    "compliance_findings": {"checkpoints"},
    "duckdb_catalog": {"compliance_findings", "quarantine", "checkpoints"},
    "export_bundle": {"duckdb_catalog"},
}


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"landing_files", *LINEAGE} <= keys


def test_lineage_reads_landing_to_exports():
    graph = defs.resolve_asset_graph()
    for asset, parents in LINEAGE.items():
        got = {p.to_user_string() for p in graph.get(dg.AssetKey(asset)).parent_keys}
        assert got == parents, asset
    assert graph.get(dg.AssetKey("landing_files")).is_observable


def test_ledger_facing_assets_are_daily_partitioned():
    graph = defs.resolve_asset_graph()
    for name in ("ledger", "quarantine"):
        pdef = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(pdef, dg.DailyPartitionsDefinition), name
        assert pdef.has_partition_key(datetime.now(timezone.utc).strftime("%Y-%m-%d"))  # today exists
    for name in ("checkpoints", "compliance_findings", "duckdb_catalog", "export_bundle"):
        assert graph.get(dg.AssetKey(name)).partitions_def is None, name


def test_integrity_is_a_blocking_check_on_the_ledger():
    graph = defs.resolve_asset_graph()
    checks = {k.name: k for k in graph.asset_check_keys}
    assert checks["integrity"].asset_key == dg.AssetKey("ledger")
    assert graph.get_check_spec(checks["integrity"]).blocking
    assert checks["quarantine_rate"].asset_key == dg.AssetKey("quarantine")


def test_jobs_schedules_sensor():
    for job in ("ingest_job", "nightly_refresh_job", "hourly_verify_job", "daily_pipeline_job", "export_job"):
        # A run whose process died is failed by run monitoring after this, freeing its slot.
        assert defs.resolve_job_def(job).tags["dagster/max_runtime"] == str(4 * 3600)
    assert defs.resolve_job_def("ingest_job").partitions_def is not None
    sensor = defs.resolve_sensor_def("landing_sensor")
    assert sensor.job_name == "ingest_job"
    crons = {s.name: (s.cron_schedule, s.job_name) for s in defs.get_repository_def().schedule_defs}
    assert crons["nightly_refresh"] == ("0 2 * * *", "nightly_refresh_job")
    assert crons["hourly_incremental_verify"][1] == "hourly_verify_job"
    assert crons["daily_catch_up_ingest"][1] == "ingest_job"
    nightly = defs.resolve_job_def("nightly_refresh_job")
    assert {k.to_user_string() for k in nightly.asset_layer.executable_asset_keys} >= {
        "checkpoints", "compliance_findings", "duckdb_catalog"}


def test_schedules_request_the_right_runs(tmp_path, monkeypatch):
    from auditlake.lake.admin import init_lake
    from auditlake.lake.store import Lake
    from pipelines.resources import LakeResource

    monkeypatch.setenv("AUDITLAKE_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("AUDITLAKE_HOME", str(tmp_path / "home"))
    at = datetime(2026, 3, 2, 5, 15, tzinfo=timezone.utc)
    for name in ("hourly_incremental_verify", "nightly_refresh"):  # before the first ingest: a skip, said
        data = defs.resolve_schedule_def(name).evaluate_tick(dg.build_schedule_context(
            repository_def=defs.get_repository_def(), scheduled_execution_time=at, resources={"lake": LakeResource()}))
        assert not data.run_requests and "no lake at" in data.skip_message
    init_lake(Lake.open(str(tmp_path / "lake")), 7)
    hourly = defs.resolve_schedule_def("hourly_incremental_verify")
    data = hourly.evaluate_tick(dg.build_schedule_context(repository_def=defs.get_repository_def(),
                                                          scheduled_execution_time=at, resources={"lake": LakeResource()}))
    assert len(data.run_requests) == 1
    assert defs.resolve_job_def("hourly_verify_job").run_config == {
        "ops": {"checkpoints": {"config": {"mode": "incremental"}}}}
    assert defs.resolve_job_def("nightly_refresh_job").run_config == {
        "ops": {"checkpoints": {"config": {"mode": "full"}}}}

    catch_up = defs.resolve_schedule_def("daily_catch_up_ingest")
    data = catch_up.evaluate_tick(dg.build_schedule_context(
        repository_def=defs.get_repository_def(), scheduled_execution_time=datetime(2026, 3, 3, 0, 30, tzinfo=timezone.utc)))
    (req,) = data.run_requests
    assert req.partition_key == "2026-03-02"


def test_workspace_yaml_loads_the_code_location():
    ws = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    (entry,) = ws["load_from"]
    assert entry["python_module"]["module_name"] == "pipelines.definitions"
    assert entry["python_module"]["working_directory"] == "."


def test_lake_resource_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("AUDITLAKE_LAKE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert LakeResource().lake().uri == str(tmp_path / "lake")  # unset variable: ./lake
    monkeypatch.setenv("AUDITLAKE_LAKE", str(tmp_path / "elsewhere"))
    assert LakeResource().lake().uri == str(tmp_path / "elsewhere")
    assert LakeResource(uri=str(tmp_path / "explicit")).lake().uri == str(tmp_path / "explicit")


def test_deployments_are_data_with_the_same_definitions(monkeypatch):
    monkeypatch.delenv("AUDITLAKE_DEPLOYMENT", raising=False)
    assert deployment_name() == "local"
    s3 = resources_for_deployment("s3")["lake"]
    assert s3.require_s3
    # the S3 deployment reads its URI from the environment at run time (EnvVar), so the same
    # definitions load with it even where the variable is unset
    s3_defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs,
                             schedules=defs.schedules, sensors=defs.sensors, resources={"lake": s3})
    dg.Definitions.validate_loadable(s3_defs)
    monkeypatch.setenv("AUDITLAKE_DEPLOYMENT", "s3")
    assert deployment_name() == "s3"
    monkeypatch.setenv("AUDITLAKE_DEPLOYMENT", "mars")
    with pytest.raises(ValueError):
        deployment_name()


def test_the_quarantine_share_setting_is_checked(monkeypatch):
    from pipelines.resources import deployments

    monkeypatch.setenv("AUDITLAKE_QUARANTINE_WARN_SHARE", "0.2")
    assert deployments()["local"]["lake"].quarantine_warn_share == 0.2
    for bad in ("5", "-1", "5%", "nan"):
        monkeypatch.setenv("AUDITLAKE_QUARANTINE_WARN_SHARE", bad)
        with pytest.raises(ValueError, match="AUDITLAKE_QUARANTINE_WARN_SHARE must be a share between 0 and 1"):
            deployments()


def test_s3_deployment_refuses_a_folder(tmp_path):
    with pytest.raises(Exception, match="s3://"):
        LakeResource(uri=str(tmp_path), require_s3=True).lake()


def test_runs_use_the_multiprocess_executor():
    job = defs.resolve_job_def("ingest_job")
    assert job.executor_def.name == "multiprocess"


def test_executor_is_chosen_as_data(monkeypatch):
    from pipelines.executors import EXTERNAL, executor_for

    monkeypatch.delenv("AUDITLAKE_EXECUTOR", raising=False)
    assert executor_for().name == "multiprocess"
    assert executor_for("in_process").name == "in_process"
    with pytest.raises(ValueError):
        executor_for("threads")
    import importlib.util

    for name, (module, _attr, package) in EXTERNAL.items():
        if importlib.util.find_spec(module) is None:  # not installed here: a clear message
            with pytest.raises(ImportError, match=package):
                executor_for(name)
        else:
            assert executor_for(name) is not None
