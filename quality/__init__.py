"""Data-quality checks of the lake as Dagster asset checks.

Thin wrappers: the logic (Great Expectations suites over the ledger, the quarantine and
the findings) lives in `auditlake.expectations`; `quality.checks.build_quality_checks`
turns it into `@asset_check`s. This package never imports `pipelines` (layering): the
lake comes from the resource named `lake`, anything with a `.lake()` method returning an
`auditlake.lake.store.Lake`.
"""
from .checks import build_quality_checks

__all__ = ["build_quality_checks"]
