"""Dagster asset checks over the lake's tables, backed by Great Expectations 1.x.

`build_quality_checks(ledger_key, quarantine_key, findings_key)` returns:

| check | on | severity | blocking |
|---|---|---|---|
| `gx_ledger_suite` | ledger | ERROR for integrity failures (seq gaps/duplicates, bad hashes, schema, nulls, unknown event types), WARN for data-quality ones (unknown time zone, implausible occurred_at) | yes (only an ERROR blocks) |
| `quarantine_rate_overall` | quarantine | WARN when more than the configured share of landing lines (whole lake, or the latest ingest day) was quarantined | no |
| `gx_quarantine_suite` | quarantine | ERROR if quarantined text holds an e-mail or phone number or a row lacks its reason; WARN for an unknown reason family | no |
| `gx_findings_suite` | findings | ERROR if a finding has an unknown rule or severity, or (evaluation_id, rule_id, event_id) repeats | no |

The logic is in `auditlake.expectations`; each check returns `AssetCheckResult(passed,
severity, metadata)` with the counts, a Markdown table of the expectations and a link to
the GX Data Docs written into the lake (`<lake>/reports/data_docs/index.html`).

The lake comes from the resource `lake`: any resource with a `.lake()` method returning an
`auditlake.lake.store.Lake` (the orchestration's LakeResource; this package does not
import `pipelines`). The quarantine share is, in order: the factory argument, the
resource's `quarantine_warn_share` attribute, 1%. (The per-landing-day `quarantine_rate`
check lives with the quarantine asset; this one watches the whole lake and the latest
ingest day.)
"""
# No `from __future__ import annotations`: Dagster inspects the `context` annotation at runtime.
from collections.abc import Sequence
from typing import Any, Protocol

import dagster as dg

DEFAULT_QUARANTINE_WARN_SHARE = 0.01
LAKE_RESOURCE = "lake"


class LakeProvider(Protocol):
    """What the checks need from the `lake` resource."""

    def lake(self): ...  # -> auditlake.lake.store.Lake


CoercibleKey = dg.AssetKey | str | Sequence[str]


def _lake(context: dg.AssetCheckExecutionContext):
    resource = getattr(context.resources, LAKE_RESOURCE)
    return resource.lake() if hasattr(resource, "lake") and callable(resource.lake) else resource


def _severity(name: str | None) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if name == "warn" else dg.AssetCheckSeverity.ERROR


def suite_check_result(result, docs_error: str | None = None) -> dg.AssetCheckResult:
    """An AssetCheckResult from an `auditlake.expectations.SuiteResult` (`docs_error`: why
    its Data Docs could not be written, when they could not)."""
    meta: dict[str, Any] = {
        "rows": result.rows,
        "expectations": len(result.expectations),
        "failed": len(result.failed),
        "failed_errors": len(result.errors),
        "unexpected_rows": result.unexpected_rows,
        "duration_s": round(result.duration_s, 3),
    }
    if result.data_docs_uri:
        meta["data_docs"] = dg.MetadataValue.url(result.data_docs_uri)
    if docs_error:
        meta["data_docs_not_written"] = docs_error
    text = [f"### GX suite `{result.suite}`: {result.summary()}"]
    if result.failed:
        text.append("#### Failed\n\n" + "\n".join(f"- {line}" for line in result.failures_text()))
    if result.expectations:
        text.append("#### Expectations\n\n" + result.markdown())
    if result.data_docs_pages:
        text.append("#### Data Docs\n\n" + "\n".join(f"- [{frame}]({uri})" for frame, uri in result.data_docs_pages.items()))
    meta["results"] = dg.MetadataValue.md("\n\n".join(text))
    for key, value in result.details.items():
        meta[f"detail_{key}"] = value if isinstance(value, (int, float, str, bool)) else dg.MetadataValue.json(value)
    return dg.AssetCheckResult(
        passed=result.success,
        severity=_severity(result.severity),
        description=result.summary(),
        metadata=meta,
    )


def _validated(what: str, validate, context: dg.AssetCheckExecutionContext, docs: bool) -> dg.AssetCheckResult:
    """Run a suite; when its reports cannot be written (a read-only or full disk), run it
    again without them: the data decides the check, not the report folder."""
    try:
        lake = _lake(context)
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash the run
        return _could_not_run(what, exc)
    try:
        return suite_check_result(validate(lake, docs=docs))
    except OSError as exc:
        if not docs:
            return _could_not_run(what, exc)
        why = f"{exc.__class__.__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001
        return _could_not_run(what, exc)
    try:
        return suite_check_result(validate(lake, docs=False), docs_error=why)
    except Exception as exc:  # noqa: BLE001
        return _could_not_run(what, exc)


def _could_not_run(what: str, exc: Exception, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=severity,
                               description=f"{what} could not run: {exc.__class__.__name__}: {exc}",
                               metadata={"error": f"{exc.__class__.__name__}: {exc}"})


def build_quality_checks(
    ledger_key: CoercibleKey,
    quarantine_key: CoercibleKey,
    findings_key: CoercibleKey,
    *,
    quarantine_warn_share: float | None = None,
    quarantine_rate_check: bool = True,
    data_docs: bool = True,
) -> list[dg.AssetChecksDefinition]:
    """The GX-backed asset checks of the ledger, quarantine and findings assets."""
    from auditlake import expectations  # cheap: GX itself is imported on first validation

    @dg.asset_check(
        asset=ledger_key, name="gx_ledger_suite", blocking=True, required_resource_keys={LAKE_RESOURCE},
        description="Great Expectations over the ledger: schema; seq non-null, unique and contiguous from 0; "
                    "unique event_id; 64-hex hashes; key ids; known event types; no nulls in required columns; "
                    "valid IANA time zones and plausible timestamps (these two only WARN). Blocking on ERROR.",
    )
    def gx_ledger_suite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return _validated("the ledger suite", expectations.validate_ledger, context, data_docs)

    @dg.asset_check(
        asset=quarantine_key, name="gx_quarantine_suite", required_resource_keys={LAKE_RESOURCE},
        description="Great Expectations over the quarantine: every row has its file, line and a reason of a known "
                    "family; the kept raw text and reason are masked (no e-mail address or phone number).",
    )
    def gx_quarantine_suite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return _validated("the quarantine suite", expectations.validate_quarantine, context, data_docs)

    @dg.asset_check(
        asset=findings_key, name="gx_findings_suite", required_resource_keys={LAKE_RESOURCE},
        description="Great Expectations over the latest compliance evaluation: rule ids among the 11 of RULES.md, "
                    "each rule's severity, unique (evaluation_id, rule_id, event_id), one marker row per evaluation.",
    )
    def gx_findings_suite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return _validated("the findings suite", expectations.validate_findings, context, data_docs)

    checks = [gx_ledger_suite, gx_quarantine_suite, gx_findings_suite]
    if quarantine_rate_check:
        @dg.asset_check(
            asset=quarantine_key, name="quarantine_rate_overall", required_resource_keys={LAKE_RESOURCE},
            description="Warns when more than the configured share of landing lines was quarantined, over the whole "
                        "lake or on the latest ingest day (the `lake` resource's quarantine_warn_share, else 1%).",
        )
        def quarantine_rate_overall(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            resource = getattr(context.resources, LAKE_RESOURCE)
            share = quarantine_warn_share
            if share is None:
                share = getattr(resource, "quarantine_warn_share", None)
            share = DEFAULT_QUARANTINE_WARN_SHARE if share is None else float(share)
            try:
                r = expectations.quarantine_rate(_lake(context))
            except Exception as exc:  # noqa: BLE001
                return _could_not_run("the quarantine rate", exc, dg.AssetCheckSeverity.WARN)
            worst = max(r["rate"], r["latest_day_rate"])
            passed = worst <= share
            rows = "\n".join(f"| {d['day']} | {d['lines_read']} | {d['quarantined']} | {d['rate']:.2%} |"
                             for d in r["by_day"])
            return dg.AssetCheckResult(
                passed=passed,
                severity=dg.AssetCheckSeverity.WARN,
                description=(f"{r['quarantined']} of {r['lines_read']} lines quarantined ({r['rate']:.2%}); "
                             f"latest ingest day {r['latest_day']}: {r['latest_day_rate']:.2%}; warn above {share:.2%}"),
                metadata={
                    "lines_read": r["lines_read"], "quarantined": r["quarantined"], "rate": round(r["rate"], 6),
                    "latest_day": str(r["latest_day"]), "latest_day_rate": round(r["latest_day_rate"], 6),
                    "warn_above": share,
                    "by_day": dg.MetadataValue.md("| ingest day | lines | quarantined | rate |\n|---|---|---|---|\n" + rows),
                },
            )

        checks.insert(1, quarantine_rate_overall)
    return checks
