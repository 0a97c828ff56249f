"""Integrity: the blocking `integrity` check on the ledger and the verified `checkpoints` asset.

Both call the engine's `auditlake.verify.verify`. The check gates every run that touches the
ledger (downstream steps never start on a tampered ledger); the `checkpoints` asset is the
verified trail of signed checkpoints and advances the trusted checkpoint, so anything
downstream of it (compliance, catalog, exports) only ever reads a ledger that verified.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from auditlake.head import read_checkpoints
from auditlake.errors import AuditlakeError
from auditlake.lake.meta import has_tables
from auditlake.lake.store import Lake
from auditlake.verify import VerifyReport, verify_settled
from pipelines.resources import LakeResource

from . import md
from .ingest import ledger

GROUP = "integrity"


def run_verify(lake: Lake, *, incremental: bool, update_trust: bool) -> tuple[VerifyReport, str, int]:
    """The engine's verify, checked again while other runs append (verify_settled); returns
    (report, mode, attempts)."""
    report, attempts = verify_settled(lake, incremental=incremental, update_trust=update_trust)
    return report, "incremental" if incremental else "full", attempts


def findings_md(report: VerifyReport, limit: int = 25) -> str:
    return md.table(
        ["kind", "table", "file", "seq", "event_id", "detail"],  # (the file names its partition)
        [(f.kind, f.table, f.file, f.seq, f.event_id, f.detail) for f in report.findings],
        limit=limit,
        width=100,
    )


def _has_lake(lake: Lake) -> bool:
    return lake.read_json("auditlake.json") is not None or has_tables(lake)


# ----------------------------------------------------------------------------- the check
@dg.asset_check(
    asset=ledger,
    name="integrity",
    blocking=True,
    description=(
        "Verifies the ledger (LEDGER.md section 8; rows after the trusted checkpoint, the rest in full): "
        "append-only Delta history, gap-free seq, "
        "the HMAC chain, the Merkle roots and signatures of the checkpoints, the trusted checkpoint and "
        "the retention lock. Blocking: if it fails, nothing downstream of the ledger runs."
    ),
)
def ledger_integrity(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    lk = lake.lake()
    if not _has_lake(lk):
        return dg.AssetCheckResult(passed=True, description=f"no ledger yet at {lk.uri}", metadata={"events": 0})
    # The trust store is advanced by the `checkpoints` asset (one writer), not by every partition run.
    try:
        report, mode, attempts = run_verify(lk, incremental=True, update_trust=False)
    except AuditlakeError as exc:  # e.g. tables without the lake's identity file: not verifiable
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=str(exc),
                                   metadata={"error": str(exc)})
    if report.ok:
        summary = f"intact: {report.events} events, {report.checkpoints} checkpoints"
    elif report.ledger_ok:  # only the derived catalog file: the nightly job's duckdb_catalog rebuilds it
        summary = (f"ledger intact: {report.events} events; the catalog file differs from what `auditlake catalog` "
                   "writes (rebuilt by duckdb_catalog)")
    else:
        summary = f"{len(report.findings)} finding(s): the ledger was tampered with or damaged"
    return dg.AssetCheckResult(
        passed=report.ok,
        severity=dg.AssetCheckSeverity.ERROR if not report.ledger_ok else dg.AssetCheckSeverity.WARN,
        description=summary,
        metadata={
            "events": report.events,
            "tree_size": report.tree_size,
            "root": report.root,
            "findings": len(report.findings),
            "mode": mode,
            "attempts": attempts,
            "duration_s": round(report.duration_s, 3),
            "report": dg.MetadataValue.md(f"### Verify: {summary}\n\n" + (findings_md(report) if report.findings else "")),
        },
    )


# ----------------------------------------------------------------------------- checkpoints
class VerifyConfig(dg.Config):
    mode: Literal["full", "incremental"] = Field(
        default="full",
        description="full: re-verify everything; incremental: from the last trusted checkpoint "
        "(falls back to full when the engine has no incremental verify).",
    )


@dg.asset(
    deps=[ledger],
    group_name=GROUP,
    kinds={"delta", "python"},
    pool="auditlake_trust",  # limit to 1 (`dagster instance concurrency set auditlake_trust 1`): one trust-store writer
    description=(
        "The signed checkpoints (Merkle root, chain head, Ed25519 signature) over the ledger, verified: "
        "materialising this re-verifies the ledger against them and advances the trusted checkpoint. "
        "Fails on any finding about the ledger, so compliance, the catalog and exports never read a tampered "
        "ledger (a changed catalog file alone is a warning: the catalog step downstream rebuilds it)."
    ),
)
def checkpoints(context: dg.AssetExecutionContext, config: VerifyConfig, lake: LakeResource) -> dg.MaterializeResult:
    lk = lake.lake()
    report, mode, attempts = run_verify(lk, incremental=config.mode == "incremental", update_trust=True)
    if config.mode == "incremental" and mode != "incremental":
        context.log.warning("the engine has no incremental verify (verify(..., incremental=True)); ran a full verify")
    if not report.ledger_ok:
        raise dg.Failure(
            description=f"the ledger failed verification with {len(report.findings)} finding(s)",
            metadata={"findings": dg.MetadataValue.md(findings_md(report)), "events": report.events},
        )
    if report.findings:
        context.log.warning("the catalog file differs from what `auditlake catalog` writes (rebuilt downstream; "
                            "the trusted checkpoint waits for a clean pass): "
                            + "; ".join(f.detail for f in report.findings[:5]))
    rows = read_checkpoints(lk)
    latest = rows[-1] if rows else {}
    recent = [(r["tree_size"], r["time"], md.short(r["root"]), md.short(r["checkpoint_hash"]), r["key_id"])
              for r in reversed(rows)]
    preview = "\n\n".join([
        f"### Ledger verified ({mode}): {report.events} events, {len(rows)} signed checkpoints",
        f"Latest checkpoint: tree size **{latest.get('tree_size', 0)}**, root `{latest.get('root', '')}`, "
        f"id `{latest.get('checkpoint_hash', '')}`, signed with key `{latest.get('key_id', '')}` at {latest.get('time', '-')}.",
        f"Trusted checkpoint before this run: tree size {report.trusted_tree_size if report.trusted_tree_size is not None else 'none'}; "
        + ("now advanced to the latest." if report.ok else
           "not advanced: the catalog file differs (the catalog step rebuilds it; the next clean verify advances it)."),
        "#### Recent checkpoints\n\n" + md.table(["tree size", "time", "root", "checkpoint id", "key"], recent, limit=10),
    ])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "events_verified": report.events,
            "tree_size": report.tree_size,
            "root": report.root,
            "checkpoint_id": latest.get("checkpoint_hash", ""),
            "checkpoint_time": latest.get("time", ""),
            "checkpoints": len(rows),
            "unsealed_tail": report.unsealed_tail,
            "previously_trusted_tree_size": report.trusted_tree_size if report.trusted_tree_size is not None else -1,
            "mode": mode,
            "attempts": attempts,
            "duration_s": round(report.duration_s, 3),
            "preview": dg.MetadataValue.md(preview),
        },
    )
