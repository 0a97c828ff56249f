"""Jobs: what the sensor, the schedules and people launch.

- `ingest_job` (daily partitioned): landing day -> ledger + quarantine, with the blocking
  integrity check and the quarantine-rate and data-quality checks. The sensor launches one
  run per new landing file; a backfill launches one run per day, in parallel.
- `nightly_refresh_job`: full verify (the `checkpoints` asset), compliance evaluation and
  the DuckDB catalog refresh.
- `hourly_verify_job`: verify from the last trusted checkpoint (incremental when the engine
  offers it, else full).
- `daily_pipeline_job` (daily partitioned): one day end to end, landing -> export bundle;
  the partitioned steps run for the given day, the lake-wide ones once.
- `export_job`: cut an export bundle (configure filters in the launchpad).
- `observe_landing_job`: record what is in the landing zone (files and bytes per day).
"""
from __future__ import annotations

import dagster as dg

from assets import (
    checkpoints,
    compliance_findings,
    duckdb_catalog,
    export_bundle,
    landing_files,
    ledger,
    quarantine,
)


# With run monitoring on (ORCHESTRATION.md's dagster.yaml), a run still going after this is
# marked failed and frees its slot: the default run launcher cannot see that a run's
# process died (OOM, kill -9), so without it such a run would hold a slot for ever.
MAX_RUNTIME = {"dagster/max_runtime": str(4 * 3600)}


def verify_config(mode: str) -> dict:
    return {"ops": {"checkpoints": {"config": {"mode": mode}}}}


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(ledger, quarantine),
    description="Ingest one landing day into the ledger (each file content exactly once) and view its quarantine.",
    tags=MAX_RUNTIME,
)

nightly_refresh_job = dg.define_asset_job(
    "nightly_refresh_job",
    selection=dg.AssetSelection.assets(checkpoints, compliance_findings, duckdb_catalog),
    config=verify_config("full"),
    description="Full verify of the ledger, then the compliance evaluation and the DuckDB catalog refresh.",
    tags=MAX_RUNTIME,
)

hourly_verify_job = dg.define_asset_job(
    "hourly_verify_job",
    selection=dg.AssetSelection.assets(checkpoints),
    config=verify_config("incremental"),
    description="Verify from the last trusted checkpoint and advance it.",
    tags=MAX_RUNTIME,
)

daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline_job",
    selection=dg.AssetSelection.assets(ledger, quarantine, checkpoints, compliance_findings, duckdb_catalog, export_bundle),
    config=verify_config("full"),
    description="One landing day end to end: ingest, verify, compliance, catalog and an export bundle.",
    tags=MAX_RUNTIME,
)

export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.assets(export_bundle),
    description="Write an export bundle with a signed manifest (set formats and filters in the launchpad).",
    tags=MAX_RUNTIME,
)

observe_landing_job = dg.define_asset_job(
    "observe_landing_job",
    selection=dg.AssetSelection.assets(landing_files.key),
    description="Observe the landing zone: files and bytes per landing day (no ingest).",
    tags=MAX_RUNTIME,
)

JOBS = [observe_landing_job, ingest_job, nightly_refresh_job, hourly_verify_job, daily_pipeline_job, export_job]
