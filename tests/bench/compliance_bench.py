"""Benchmark of `auditlake compliance` (not a test; run by hand).

    .venv/bin/python tests/bench/compliance_bench.py --events 1000000 [--lake DIR] [--keep] [--gx]

Builds (or reuses, with --lake DIR of an earlier run) a lake from the generator's landing
files (planted violations + ground truth) through the real ingest, then measures one
compliance evaluation (`auditlake.compliance.run.evaluate_lake`: read the ledger's
projection columns, the vectorised rules, the findings append, the HTML/CSV report), best
and median of --repeat runs. Target: <= 10 s for 1M events. It also checks the findings
against the generator's ground truth (precision and recall per rule), and with --gx
times the Great Expectations suites the command runs afterwards (GX import excluded).

AUDITLAKE_HOME defaults to <lake>/../home so a reused lake finds its keystore.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 10.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--lake", help="reuse (or create) the lake in this folder; its generator output is DIR/../gen")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--gx", action="store_true", help="also time the Great Expectations suites")
    args = p.parse_args()

    root = Path(args.lake).resolve().parent if args.lake else Path(tempfile.mkdtemp(prefix="compliance-bench-"))
    lake_dir = Path(args.lake).resolve() if args.lake else root / "lake"
    gen_dir = root / "gen"
    os.environ.setdefault("AUDITLAKE_HOME", str(root / "home"))

    from auditlake.compliance import rules
    from auditlake.compliance.run import evaluate_lake, latest_findings
    from auditlake.generate import generate
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake

    lake = Lake.open(str(lake_dir))
    if lake.delta("ledger") is None:
        if not (gen_dir / "ground_truth.json").exists():
            t0 = time.monotonic()
            generate(gen_dir, events=args.events, seed=args.seed, days=args.days)
            print(f"generate: {args.events} lines in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        report = ingest(lake, [str(gen_dir / "landing")])
        print(f"ingest: {report.accepted} accepted, {report.quarantined} quarantined in {time.monotonic() - t0:.1f}s")
    events = lake.delta("ledger").to_pyarrow_dataset().count_rows()
    print(f"lake {lake.uri}: {events} events")

    runs = []
    for i in range(args.repeat):
        t0 = time.monotonic()
        summary = evaluate_lake(lake)
        took = time.monotonic() - t0
        runs.append(took)
        print(f"run {i + 1}: {took:.2f}s  {summary['findings']} findings  {summary['timings']}")
    best, median = min(runs), statistics.median(runs)
    print(f"compliance over {events} events: best {best:.2f}s, median {median:.2f}s "
          f"({events / best:,.0f} events/s); target <= {TARGET_S:.0f}s: {'MET' if best <= TARGET_S else 'MISSED'}")

    truth_file = gen_dir / "ground_truth.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text())
        want = {(f["rule_id"], f["event_id"]) for f in truth["findings"]}
        latest = latest_findings(lake)
        got = set(zip(latest["rule_id"], latest["event_id"]))
        worst = 1.0
        for rule in rules.RULE_IDS:
            g, w = {e for r, e in got if r == rule}, {e for r, e in want if r == rule}
            tp = len(g & w)
            precision, recall = (tp / len(g) if g else 1.0), (tp / len(w) if w else 1.0)
            worst = min(worst, precision, recall)
            print(f"  {rule:<14} {len(w):>6} expected  precision {precision:.3f}  recall {recall:.3f}")
        print(f"ground truth: {'exact' if got == want else 'DIFFERS'} (worst precision/recall {worst:.3f})")

    if args.gx:
        from auditlake import expectations

        t0 = time.monotonic()
        expectations._gx()
        print(f"GX import: {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        suites = expectations.validate_all(lake, run_name="bench")
        print(f"GX suites with Data Docs: {time.monotonic() - t0:.1f}s "
              + ", ".join(f"{s.summary()} in {s.duration_s:.1f}s" for s in suites.values()))

    if not args.lake and not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
