"""Serving: the DuckDB catalog analysts open, and signed export bundles."""

from datetime import datetime, timezone

import dagster as dg
from pydantic import Field

from auditlake.catalog import build_catalog
from auditlake.export import build_export
from pipelines.resources import LakeResource

from . import md
from .compliance import compliance_findings
from .ingest import quarantine
from .integrity import checkpoints

GROUP = "serving"


@dg.asset(
    deps=[compliance_findings, quarantine, checkpoints],
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "A DuckDB database whose views (events, findings, quarantine, checkpoints, ingest_log) read the "
        "lake with PII masked; open it with `duckdb -readonly <path>`. Rebuilt beside "
        "the old file and swapped in, so open readers are never blocked."
    ),
)
def duckdb_catalog(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    lk = lake.lake()
    doc = build_catalog(lk, lake.catalog_path())
    counts = doc.get("counts", {})
    preview = "\n\n".join([
        f"### DuckDB catalog `{doc['db']}` ({doc.get('mode', '')})",
        "#### Views\n\n" + md.table(["view", "rows"], sorted(counts.items())),
        f"Open it with:\n\n```\nduckdb -readonly {doc['db']}\n```",
    ])
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(doc["db"]),
            "mode": doc.get("mode", ""),
            "dagster/row_count": int(counts.get("events", 0)),
            **{f"rows_{view}": int(n) for view, n in counts.items()},
            "preview": dg.MetadataValue.md(preview),
        }
    )


class ExportConfig(dg.Config):
    formats: list[str] = Field(default_factory=lambda: ["parquet"], description="parquet, csv and/or jsonl")
    time_from: str = Field(default="", description="occurred_at >= this RFC 3339 instant (empty: no bound)")
    time_to: str = Field(default="", description="occurred_at < this RFC 3339 instant (empty: no bound)")
    event_types: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)
    subjects: list[str] = Field(default_factory=list)
    profile: str = Field(default="default", description="redaction profile (PII stays redacted, but for `privileged`)")
    reveal_reason: str = Field(default="", description="privileged profile only: why the PII is revealed (logged "
                               "in the ledger with the export)")
    out_dir: str = Field(default="", description="bundle folder; empty: <export_dir>/bundle-<UTC time>")


def export_filters(config: ExportConfig) -> dict:
    return {"from": config.time_from or None, "to": config.time_to or None, "event_types": list(config.event_types),
            "tenants": list(config.tenants), "subjects": list(config.subjects)}


@dg.asset(
    deps=[duckdb_catalog],
    group_name=GROUP,
    kinds={"parquet", "csv"},
    description=(
        "An export bundle (Parquet/CSV/JSONL, PII redacted by profile) of the events under the latest signed "
        "checkpoint, with a signed manifest that `auditlake verify-export` checks offline. Cut only from a "
        "ledger that verified; the export itself is logged in the ledger as a `data.exported` event."
    ),
)
def export_bundle(context: dg.AssetExecutionContext, config: ExportConfig, lake: LakeResource) -> dg.MaterializeResult:
    lk = lake.lake()
    out = config.out_dir or str(lake.exports_root() / f"bundle-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
    formats = [f.strip() for f in config.formats if f.strip()]
    manifest = build_export(lk, out, formats, export_filters(config), profile=config.profile,
                            reveal_reason=config.reveal_reason or None)
    return dg.MaterializeResult(metadata=export_metadata(out, manifest))


def export_metadata(out: str, manifest: dict) -> dict:
    files = manifest.get("files") or []
    rows = int(manifest.get("rows") or 0)
    cp = manifest.get("source_checkpoint") or {}
    merkle = manifest.get("merkle") or {}
    file_rows = [(f.get("path"), f.get("format"), f.get("rows"), f.get("bytes"), md.short(f.get("sha256"), 16))
                 for f in files]
    active = {k: v for k, v in (manifest.get("filters") or {}).items() if v}
    preview = "\n\n".join([
        f"### Export bundle `{out}`: {rows} rows",
        f"Events under checkpoint tree size **{cp.get('tree_size')}** (`{cp.get('checkpoint_hash', '')}`), "
        f"profile `{(manifest.get('profile') or {}).get('name', '')}`, filters `{active or 'none'}`; "
        f"Merkle root over the rows `{merkle.get('root', '')}`; logged as audit event `{manifest.get('audit_event_id')}`.",
        "#### Files\n\n" + md.table(["file", "format", "rows", "bytes", "sha256"], file_rows),
        f"Check it offline with:\n\n```\nauditlake verify-export {out}\n```",
    ])
    return {
        "path": dg.MetadataValue.path(out),
        "dagster/row_count": rows,
        "rows": rows,
        "files": len(files),
        "export_id": str(manifest.get("export_id", "")),
        "audit_event_id": str(manifest.get("audit_event_id", "")),
        "source_tree_size": int(cp.get("tree_size") or 0),
        "merkle_root": str(merkle.get("root", "")),
        "preview": dg.MetadataValue.md(preview),
    }
