"""The one resource every asset, check, sensor and schedule uses: the lake.

The same definitions serve a local folder and an S3 lake; only this resource's configuration
differs, and it is chosen as data by `AUDITLAKE_DEPLOYMENT` (`local`, the default, or `s3`):

- `local`: `uri` left empty, so the lake is `$AUDITLAKE_LAKE` at run time, else `./lake`
  (relative to the code location's working directory). An unset variable is fine here.
- `s3`: `uri` is `EnvVar("AUDITLAKE_LAKE")` (e.g. `s3://audit-bucket/lake`), which Dagster
  resolves when a run starts and shows as an environment variable in the UI. The AWS
  credentials, region and endpoint come from the standard AWS variables (AWS_PROFILE,
  AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT_URL...), read by the engine.
"""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from auditlake.errors import AuditlakeError
from auditlake.lake.store import Lake, default_lake_uri

DEFAULT_QUARANTINE_WARN_SHARE = 0.05


class LakeResource(dg.ConfigurableResource):
    """The audit lake: a local folder or s3://bucket/prefix."""

    uri: str = Field(
        default="",
        description="A folder or s3://bucket/prefix; empty means $AUDITLAKE_LAKE at run time, else ./lake.",
    )
    require_s3: bool = Field(default=False, description="Refuse a lake that is not on S3 (the s3 deployment).")
    quarantine_warn_share: float = Field(
        default=DEFAULT_QUARANTINE_WARN_SHARE,
        description="The quarantine_rate check warns when more than this share of a day's lines was quarantined.",
    )
    catalog_db: str = Field(
        default="",
        description="DuckDB catalog file; empty means $AUDITLAKE_CATALOG_DB, else the engine's default "
        "(<lake>/catalog.duckdb for a folder, $AUDITLAKE_HOME/catalogs/ for S3).",
    )
    export_dir: str = Field(
        default="", description="Folder for export bundles; empty means $AUDITLAKE_EXPORT_DIR, else ./exports."
    )

    def resolved_uri(self) -> str:
        return (self.uri or default_lake_uri()).strip()

    def lake(self) -> Lake:
        uri = self.resolved_uri()
        if self.require_s3 and not uri.startswith("s3://"):
            raise AuditlakeError(f"the s3 deployment needs AUDITLAKE_LAKE=s3://bucket/prefix, got {uri!r}")
        return Lake.open(uri)

    def catalog_path(self) -> str | None:
        return self.catalog_db or os.environ.get("AUDITLAKE_CATALOG_DB") or None

    def exports_root(self) -> Path:
        return Path(self.export_dir or os.environ.get("AUDITLAKE_EXPORT_DIR") or "./exports").expanduser().resolve()


def _quarantine_share() -> float:
    raw = (os.environ.get("AUDITLAKE_QUARANTINE_WARN_SHARE") or "").strip()
    if not raw:
        return DEFAULT_QUARANTINE_WARN_SHARE
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        raise ValueError(f"AUDITLAKE_QUARANTINE_WARN_SHARE must be a share between 0 and 1 (0.05 is 5%), got {raw!r}")
    return share


def deployments() -> dict[str, dict[str, object]]:
    """Per-deployment resources (data, not code paths): the assets are the same for all."""
    share = _quarantine_share()
    return {
        "local": {"lake": LakeResource(quarantine_warn_share=share)},
        "s3": {
            "lake": LakeResource(
                uri=dg.EnvVar("AUDITLAKE_LAKE"),
                require_s3=True,
                quarantine_warn_share=share,
            )
        },
    }


def deployment_name() -> str:
    name = (os.environ.get("AUDITLAKE_DEPLOYMENT") or "local").strip().lower()
    if name not in deployments():
        raise ValueError(f"AUDITLAKE_DEPLOYMENT must be one of {sorted(deployments())}, got {name!r}")
    return name


def resources_for_deployment(name: str | None = None) -> dict[str, object]:
    return deployments()[name or deployment_name()]
