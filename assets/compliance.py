"""Compliance findings: the rules of RULES.md evaluated over the verified ledger."""

import dagster as dg
import polars as pl
from pydantic import Field

from auditlake.compliance.run import evaluate_lake, evaluation_findings
from pipelines.resources import LakeResource

from . import md
from .integrity import checkpoints

GROUP = "compliance"


class ComplianceConfig(dg.Config):
    as_of: str = Field(default="", description="RFC 3339 instant; empty: the latest occurred_at in the ledger")


@dg.asset(
    deps=[checkpoints],
    group_name=GROUP,
    kinds={"delta", "python"},
    description=(
        "Findings of the TCPA/TSR, GDPR, CCPA and SOX rules (RULES.md): one row per offending event, "
        "keyed by (rule_id, event_id), appended as a new evaluation of the verified ledger. Re-evaluating "
        "the same ledger gives the same findings; the catalog's findings view shows the latest evaluation."
    ),
)
def compliance_findings(context: dg.AssetExecutionContext, config: ComplianceConfig, lake: LakeResource) -> dg.MaterializeResult:
    lk = lake.lake()
    summary = evaluate_lake(lk, as_of=config.as_of or None)
    findings = evaluation_findings(lk, summary["evaluation_id"])
    return dg.MaterializeResult(metadata=findings_metadata(summary, findings))


def findings_metadata(summary: dict, findings: pl.DataFrame) -> dict:
    by_rule = summary.get("by_rule") or {}
    total = int(summary.get("findings", findings.height))
    per_day = (
        findings.with_columns(day=pl.col("occurred_at").dt.strftime("%Y-%m-%d"))
        .group_by("day").len().sort("day", descending=True).iter_rows()
        if findings.height else []
    )
    report = summary.get("report")
    report_md = report.get("markdown") if isinstance(report, dict) else None
    sample = findings.head(10).select("rule_id", "event_id", "occurred_at", "severity", "detail").iter_rows() \
        if findings.height else []
    header = (f"### Evaluation `{summary.get('evaluation_id')}`: {total} findings over {summary.get('tree_size')} "
              f"events (as of {summary.get('as_of')})")
    first = "#### First findings\n\n" + md.table(["rule", "event_id", "occurred_at", "severity", "detail"], list(sample))
    if isinstance(report_md, str) and len(report_md) < 50_000:
        parts = [header, report_md, first]  # the engine's report: by rule, daily trend, top tenants/campaigns
    else:
        parts = [header, "#### By rule\n\n" + md.table(["rule", "findings"], sorted(by_rule.items())),
                 "#### By day of the offending event\n\n" + md.table(["day", "findings"], list(per_day), limit=31),
                 first]
    preview = "\n\n".join(parts)
    meta = {
        "dagster/row_count": total,
        "findings": total,
        "events_evaluated": int(summary.get("tree_size") or 0),
        "evaluation_id": str(summary.get("evaluation_id")),
        "as_of": str(summary.get("as_of")),
        "code_version": str(summary.get("code_version")),
        "duration_s": float(summary.get("duration_s") or 0.0),
        "preview": dg.MetadataValue.md(preview),
    }
    meta.update({f"rule {rule}": int(n) for rule, n in sorted(by_rule.items())})
    if isinstance(report, dict) and report.get("html"):
        meta["report"] = dg.MetadataValue.path(str(report["html"]))
    return meta
