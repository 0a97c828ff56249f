"""The auditlake Dagster code location (loaded by workspace.yaml: `pipelines.definitions`).

Lineage in the UI, as a newcomer reads it:

    landing_files -> ledger (daily) -> checkpoints -> compliance_findings -> duckdb_catalog -> export_bundle
                            \\-> quarantine (daily) --------------------------^

Runs use the multiprocess executor (one process per step, independent steps side by side);
`AUDITLAKE_EXECUTOR=k8s|celery|celery_k8s` selects Dagster's Kubernetes or Celery executors for
the same definitions. See docs/ORCHESTRATION.md for scale-out and what stays serial.
"""
from __future__ import annotations

import dagster as dg

from assets import ALL_ASSETS, ledger_integrity
from quality.checks import build_quality_checks

from .executors import executor_for, executor_name
from .jobs import JOBS
from .resources import deployment_name, resources_for_deployment
from .schedules import SCHEDULES
from .sensors import SENSORS

quality_checks = build_quality_checks(dg.AssetKey("ledger"), dg.AssetKey("quarantine"), dg.AssetKey("compliance_findings"))

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=[ledger_integrity, *quality_checks],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=resources_for_deployment(),
    executor=executor_for(),
    metadata={"deployment": deployment_name(), "executor": executor_name()},
)
