"""The executor, chosen as data by `AUDITLAKE_EXECUTOR` (default `multiprocess`).

The assets never assume where a step runs: each step opens the lake from the `lake`
resource, so the same code location runs with one process per step on one machine
(`multiprocess`), one Kubernetes Job per step (`k8s`), or Celery workers (`celery`,
`celery_k8s`). Those three need their Dagster integration package installed in the code
location's image (the library line matching this Dagster release); they are imported only
when chosen.
"""
from __future__ import annotations

import importlib
import os

import dagster as dg

EXTERNAL = {
    "k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s"),
    "celery": ("dagster_celery", "celery_executor", "dagster-celery"),
    "celery_k8s": ("dagster_celery_k8s", "celery_k8s_job_executor", "dagster-celery-k8s"),
}


def executor_name() -> str:
    return (os.environ.get("AUDITLAKE_EXECUTOR") or "multiprocess").strip().lower()


def executor_for(name: str | None = None) -> dg.ExecutorDefinition:
    name = name or executor_name()
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "in_process":
        return dg.in_process_executor
    if name not in EXTERNAL:
        raise ValueError(f"AUDITLAKE_EXECUTOR must be multiprocess, in_process, {', '.join(EXTERNAL)}; got {name!r}")
    module, attr, package = EXTERNAL[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ImportError(f"AUDITLAKE_EXECUTOR={name} needs the {package} package in the code location's environment") from exc
