"""`auditlake compliance [--as-of TS]`: evaluate RULES.md into the findings table, write the
compliance report, then run the Great Expectations suites (ledger, quarantine, findings).

Exit codes (INTERFACES.md: 1 = "the check found a problem"): findings are the command's
normal output (data, not a failure), so it exits 0 whatever it found; 1 when a
Great Expectations suite fails with an *error* (the ledger, the quarantine or the
findings table is broken: a duplicate or missing seq, a malformed hash, an unmasked
quarantine line, ...); 2 for usage or I/O errors. Expectation *warnings* (producer data
the rules cope with, e.g. an unknown time-zone name) are printed but keep exit code 0.

`--json` prints one document: the evaluation summary (evaluation_id, as_of, evaluated_at,
code_version, tree_size, findings, by_rule, report, timings) plus `quality` ({suite:
result}), `data_docs` (the GX Data Docs index) and `ok` (false exactly when a suite
failed with an error, i.e. when the exit code is 1).
"""
from __future__ import annotations

import sys

from ..cli import emit
from ..lake.store import Lake


def run(args) -> int:
    from .. import expectations
    from .run import evaluate_lake

    lake = Lake.open(args.lake)
    summary = evaluate_lake(lake, as_of=getattr(args, "as_of", None))
    suites = expectations.validate_all(lake, evaluation_id=summary["evaluation_id"],
                                       run_name=f"compliance-{summary['evaluation_id']}")
    ok = all(s.ok for s in suites.values())
    docs = next((s.data_docs_uri for s in suites.values() if s.data_docs_uri), None)
    doc = {
        "ok": ok,
        **{k: v for k, v in summary.items() if k != "report"},
        "report": {k: summary["report"][k] for k in ("uri", "latest_uri", "html", "files")} if "report" in summary else None,
        "quality": {name: s.to_dict() for name, s in suites.items()},
        "data_docs": docs,
    }
    if summary.get("catalog_note"):
        print(f"auditlake: warning: {summary['catalog_note']}", file=sys.stderr)
    emit(args, _human(summary, suites, docs), doc)
    if getattr(args, "json", False):  # stdout holds the JSON; tell a human on stderr
        for s in suites.values():
            for line in s.failures_text():
                print(f"auditlake: quality {s.suite}: {line}", file=sys.stderr)
    return 0 if ok else 1


def _human(summary: dict, suites: dict, docs: str | None) -> str:
    lines = [
        f"evaluation {summary['evaluation_id']}: {summary['tree_size']} events as of {summary['as_of']} "
        f"-> {summary['findings']} finding(s) ({summary['code_version']}, {summary['duration_s']:.1f}s)",
    ]
    width = max(len(r) for r in summary["by_rule"])
    lines += [f"  {rule:<{width}}  {n}" for rule, n in summary["by_rule"].items()]
    if summary.get("report"):
        lines.append(f"report: {summary['report']['html']}")
    for s in suites.values():
        lines.append(f"quality {s.summary()}")
        lines += [f"  {text}" for text in s.failures_text()]
    if docs:
        lines.append(f"data docs: {docs}")
    return "\n".join(lines)
