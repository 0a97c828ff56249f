"""`make bench`: speed and memory of auditlake against the alternatives, on the same data.

    .venv/bin/python tests/bench/run.py [--sizes 100000,1000000,10000000] [--repeat 3] [--out results/]
                                        [--skip-postgres] [--skip STEP,...] [--work DIR --keep]

For each size the generator's landing data (auditlake.generate: JSONL, JSONL.gz and
Parquet files, planted violations, about 0.5% bad lines) is written once, then measured,
each figure the median of --repeat runs (sizes from 10M: one run):

1. ingest: `auditlake ingest` (auditlake.ingest.ingest, fresh lake each run, own process)
   against the integrity-free baseline (worker.py: polars read + Delta append, no
   contract, sealing, chain, Merkle tree or checkpoint). Target: at most 2x.
2. PostgreSQL (pg_bench.py): partitioned table, append-only and hash-chain triggers
   (pgcrypto), COPY, full-chain verify in SQL, in a private cluster started and torn
   down here (Debian package installed if missing). Target: auditlake ingest and verify
   at least 5x faster.
3. DuckDB catalog queries (auditlake.catalog): point lookup by event_id, a subject's
   history, a one-day aggregation by type, a 30-day compliance query (outbound
   telemarketing calls without a prior consent.granted for the phone, per tenant) and the
   30-day findings summary. Target: each under 1 s at 10M events.
4. export: Parquet with the default (redacting) profile. Target: >= 500K events/s.
5. memory: peak RSS of each ingest process with its sealing workers. Target: flat, under
   1.5 GB at 1M and 10M.
6. growth: ingest, full verify, incremental verify from the trusted checkpoint (after a
   fixed extra ingest of --extra-events) and inclusion-proof size, as a table and a plot.

Writes <out>/bench.json, <out>/bench.md, <out>/growth.png and, with profiling on (the
default), <out>/profile-{ingest,verify,baseline}.txt (cProfile of one extra run at the
smallest size). `--extras` also runs the other engineers' scripts (privacy_bench.py,
compliance_bench.py, explorer_bench.py) on the largest lake and keeps their output.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import report  # noqa: E402  (tests/bench/report.py)

PY = sys.executable
STEPS = ("baseline", "postgres", "verify", "incremental", "proofs", "queries", "compliance", "export")
GB = 1024


LARGE = 10_000_000  # sizes from here on are measured once per step

def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- helpers
def _rmtree(path: Path) -> None:
    """Remove a lake folder (retention makes its files read-only)."""
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass
    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _worker(step: str, env: dict, lake: Path, landing: Path | None = None, profile: Path | None = None,
            trust: bool = False) -> dict:
    """Run one worker.py step in its own process; its JSON result plus wall time."""
    cmd = [PY, str(HERE / "worker.py"), step, "--lake", str(lake)]
    if landing is not None:
        cmd += ["--landing", str(landing)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    if trust:
        cmd.append("--trust")
    # A private working directory: DuckDB spills to ".tmp/" under the current directory, and
    # two processes spilling into the same file there corrupt each other's temp storage.
    cwd = Path(tempfile.mkdtemp(prefix=f"worker-{step}-", dir=lake.parent))
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    finally:
        wall = time.perf_counter() - t0
        shutil.rmtree(cwd, ignore_errors=True)
    if r.returncode != 0:
        raise RuntimeError(f"worker {step} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def machine_info() -> dict:
    def cmd(*a):
        try:
            return subprocess.run(a, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    versions = {}
    for mod in ("polars", "deltalake", "duckdb", "pyarrow", "orjson", "cryptography"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {
        "nproc": int(cmd("nproc") or os.cpu_count() or 0),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kb / 2**20, 1),
        "free_h": cmd("free", "-h"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()),
    }


# ----------------------------------------------------------------------------- in-process steps
def _sample_events(lake, count: int, rng: random.Random):
    """`count` random ledger rows (event_id, subject_id), read without loading the whole log."""
    import pyarrow as pa

    ds = lake.delta("ledger").to_pyarrow_dataset()
    n = ds.count_rows()
    idx = sorted(rng.sample(range(n), min(count, n)))
    return ds.take(pa.array(idx, pa.int64()), columns=["event_id", "subject_id"]), n


def bench_proofs(lake, sample, rng: random.Random) -> dict:
    from auditlake.proofs import inclusion_proof, verify_proof_doc

    picks = sample.column("event_id").to_pylist()
    rng.shuffle(picks)
    t0 = time.perf_counter()
    inclusion_proof(lake, picks[0])  # the first call may build the event index
    first = time.perf_counter() - t0
    ms, sizes, hashes = [], [], []
    for eid in picks:
        t0 = time.perf_counter()
        doc = inclusion_proof(lake, eid)
        ms.append((time.perf_counter() - t0) * 1000)
        ok, why = verify_proof_doc(doc)
        if not ok:
            raise RuntimeError(f"proof of {eid} does not verify: {why}")
        sizes.append(len(json.dumps(doc, separators=(",", ":")).encode()))
        hashes.append(len(doc["proof"]))
    ms.sort()
    return {"count": len(picks), "first_ms": first * 1000, "ms_median": statistics.median(ms),
            "ms_p95": ms[max(0, int(len(ms) * 0.95) - 1)], "bytes_median": statistics.median(sizes),
            "bytes_max": max(sizes), "hashes_median": statistics.median(hashes), "hashes_max": max(hashes),
            "tree_size": doc["tree_size"]}


QUERIES = {
    "point_lookup": ("point lookup by event_id",
                     "SELECT * FROM events WHERE event_id = $event_id"),
    "subject_history": ("a subject's history",
                        "SELECT seq, occurred_at, event_type, tenant_id, data FROM events "
                        "WHERE subject_id = $subject_id ORDER BY seq"),
    "day_by_type": ("one-day aggregation by type",
                    "SELECT event_type, count(*) AS n FROM events WHERE event_date = $day GROUP BY 1 ORDER BY 2 DESC"),
    "compliance_30d": (
        "30-day compliance query (telemarketing calls without prior consent, per tenant)",
        """WITH calls AS (
             SELECT tenant_id, phone_bidx, occurred_at FROM events
             WHERE event_date BETWEEN $from_day AND $to_day AND event_type = 'call.started'
               AND json_extract_string(data, '$.direction') = 'outbound'
               AND json_extract_string(data, '$.purpose') = 'telemarketing'),
           grants AS (
             SELECT tenant_id, phone_bidx, min(occurred_at) AS first_grant FROM events
             WHERE event_type = 'consent.granted' AND phone_bidx IS NOT NULL GROUP BY ALL)
           SELECT c.tenant_id, count(*) AS calls,
                  count(*) FILTER (WHERE g.first_grant IS NULL OR g.first_grant > c.occurred_at) AS without_consent
           FROM calls c LEFT JOIN grants g USING (tenant_id, phone_bidx)
           GROUP BY 1 ORDER BY 1"""),
    "findings_30d": ("30-day findings summary (latest evaluation, by rule and severity)",
                     "SELECT rule_id, severity, count(*) AS n FROM findings "
                     "WHERE occurred_at >= CAST($from_day AS TIMESTAMPTZ) GROUP BY ALL ORDER BY 1, 2"),
}


def bench_queries(lake, sample, repeat: int, with_findings: bool) -> dict:
    import duckdb

    from auditlake import catalog

    write = getattr(catalog, "write_catalog", None) or catalog.build_catalog
    t0 = time.perf_counter()
    doc = write(lake)
    build_s = time.perf_counter() - t0
    db = doc["db"] if isinstance(doc, dict) and "db" in doc else str(catalog.default_db_path(lake))

    event_id = sample.column("event_id")[0].as_py()
    subject_id = next((s for s in sample.column("subject_id").to_pylist() if s), None)
    con = duckdb.connect(db, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"LOAD '{catalog.delta_extension_path()}'")
    day, last = con.execute(
        "SELECT arg_max(event_date, n), max(event_date) FROM "
        "(SELECT event_date, count(*) AS n FROM events GROUP BY 1)").fetchone()
    from_day = (datetime.fromisoformat(last) - timedelta(days=29)).date().isoformat()
    params = {"event_id": event_id, "subject_id": subject_id, "day": day, "from_day": from_day, "to_day": last}
    out = {"catalog_build_s": build_s, "db": db, "params": params, "queries": {}}
    for name, (title, sql) in QUERIES.items():
        if name == "findings_30d" and not with_findings:
            continue
        names = {k for k in params if f"${k}" in sql}
        runs, rows = [], None
        for _ in range(repeat + 1):  # the first run is reported apart (cold)
            t0 = time.perf_counter()
            rows = con.execute(sql, {k: params[k] for k in names}).fetchall()
            runs.append(time.perf_counter() - t0)
        out["queries"][name] = {"title": title, "first_s": runs[0], "runs_s": runs[1:],
                                "median_s": statistics.median(runs[1:]), "rows": len(rows)}
        log(f"  query {name}: median {out['queries'][name]['median_s'] * 1000:.0f} ms "
            f"(first {runs[0] * 1000:.0f} ms, {len(rows)} rows)")
    con.close()
    return out


def bench_export(lake, work: Path, repeat: int) -> dict:
    from auditlake.export import build_export

    runs, rows = [], 0
    for i in range(repeat):
        out = work / f"export-{i}"
        _rmtree(out)
        t0 = time.perf_counter()
        manifest = build_export(lake, str(out), ["parquet"], {}, profile="default", actor="bench")
        runs.append(time.perf_counter() - t0)
        rows = manifest["rows"]
        _rmtree(out)
    med = statistics.median(runs)
    return {"runs_s": runs, "median_s": med, "rows": rows, "events_per_s": rows / med}


def bench_compliance(lake) -> dict:
    from auditlake.compliance.run import evaluate_lake

    t0 = time.perf_counter()
    summary = evaluate_lake(lake)
    return {"evaluate_s": time.perf_counter() - t0, "findings": summary.get("findings")}


# ----------------------------------------------------------------------------- one size
def bench_size(n: int, args, work: Path, extra_landing: Path | None, profile_dir: Path | None) -> dict:
    base = work / f"n{n}"
    repeat = 1 if n >= LARGE else args.repeat  # a 10M run takes minutes per step: once
    gen, lake_dir, home = base / "gen", base / "lake", base / "home"
    base.mkdir(parents=True, exist_ok=True)
    os.environ["AUDITLAKE_HOME"] = str(home)
    os.chdir(base)  # DuckDB spills to ./.tmp: keep that private to this run (see _worker)
    env = dict(os.environ, AUDITLAKE_HOME=str(home))
    res: dict = {"events": n}
    skip = args.skip_set

    from auditlake.generate import generate
    from auditlake.lake.store import Lake

    if not (gen / "ground_truth.json").exists():
        t0 = time.perf_counter()
        summary = generate(gen, events=n, seed=args.seed, days=args.days)
        res["generate_s"] = time.perf_counter() - t0
        log(f"n={n:,}: generated {summary['events']:,} lines in {summary['files']} files in {res['generate_s']:.1f}s")
    landing = gen / "landing"
    res["landing_mb"] = sum(p.stat().st_size for p in landing.iterdir()) / 2**20

    # 1. ingest, each run into a fresh lake in its own process; the last run's lake is kept.
    runs = []
    for i in range(repeat):
        target = lake_dir if i == repeat - 1 else base / "scratch-lake"
        _rmtree(target)
        r = _worker("ingest", env, target, landing)
        runs.append(r)
        log(f"n={n:,}: ingest {i + 1}/{repeat}: {r['seconds']:.1f}s ({r['accepted']:,} accepted, "
            f"{r['quarantined']:,} quarantined), peak RSS {r['peak_rss_mb']:.0f} MB")
        if target != lake_dir:
            _rmtree(target)
    med = statistics.median(r["seconds"] for r in runs)
    res["ingest"] = {"runs_s": [r["seconds"] for r in runs], "median_s": med,
                     "accepted": runs[-1]["accepted"], "quarantined": runs[-1]["quarantined"],
                     "lines_read": runs[-1]["lines_read"], "batches": runs[-1]["batches"],
                     "events_per_s": runs[-1]["lines_read"] / med,
                     "peak_rss_mb": [r["peak_rss_mb"] for r in runs],
                     "peak_rss_max_mb": max(r["peak_rss_mb"] for r in runs),
                     "import_rss_mb": runs[-1]["import_rss_mb"]}

    if profile_dir is not None:
        _rmtree(base / "scratch-lake")
        _worker("ingest", env, base / "scratch-lake", landing, profile=profile_dir / "ingest.prof")
        _rmtree(base / "scratch-lake")

    # 1b. the integrity-free baseline
    if "baseline" not in skip:
        runs = []
        for i in range(repeat):
            target = base / "baseline-delta"
            _rmtree(target)
            r = _worker("baseline", env, target, landing)
            runs.append(r)
            _rmtree(target)
            log(f"n={n:,}: baseline {i + 1}/{repeat}: {r['seconds']:.1f}s ({r['rows']:,} rows), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB")
        if profile_dir is not None:
            _worker("baseline", env, base / "baseline-delta", landing, profile=profile_dir / "baseline.prof")
            _rmtree(base / "baseline-delta")
        res["baseline"] = {"runs_s": [r["seconds"] for r in runs], "median_s": statistics.median(r["seconds"] for r in runs),
                           "rows": runs[-1]["rows"], "commits": runs[-1]["commits"],
                           "peak_rss_max_mb": max(r["peak_rss_mb"] for r in runs)}
        res["integrity_overhead_x"] = res["ingest"]["median_s"] / res["baseline"]["median_s"]

    def step(name: str, fn) -> None:
        """Run one measurement; a failure is recorded in the report instead of ending the bench."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            log(f"n={n:,}: {name} FAILED: {str(exc)[-600:]}")
            res.setdefault("errors", {})[name] = str(exc)[-2000:]

    lake = Lake.open(str(lake_dir))
    rng = random.Random(args.seed)
    sample, _ = _sample_events(lake, max(args.proofs, 50), rng)

    # 2. full verify
    def verify_full():
        runs = []
        for i in range(repeat):
            r = _worker("verify", env, lake_dir)
            if not r["ok"]:
                raise RuntimeError(f"verify found problems in the bench lake: {r['findings']}")
            runs.append(r)
            log(f"n={n:,}: verify {i + 1}/{repeat}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB")
        med = statistics.median(r["seconds"] for r in runs)
        res["verify"] = {"runs_s": [r["seconds"] for r in runs], "median_s": med, "events": runs[-1]["events"],
                         "events_per_s": runs[-1]["events"] / med,
                         "peak_rss_max_mb": max(r["peak_rss_mb"] for r in runs)}
        if profile_dir is not None:
            _worker("verify", env, lake_dir, profile=profile_dir / "verify.prof")

    def proofs():
        res["proof"] = bench_proofs(lake, sample.slice(0, args.proofs), rng)
        log(f"n={n:,}: proof {res['proof']['bytes_median']:.0f} bytes, {res['proof']['hashes_median']:.0f} hashes, "
            f"median {res['proof']['ms_median']:.1f} ms (first {res['proof']['first_ms']:.0f} ms)")

    def compliance():
        res["compliance"] = bench_compliance(lake)
        log(f"n={n:,}: compliance evaluation {res['compliance']['evaluate_s']:.1f}s, "
            f"{res['compliance']['findings']} findings")

    def queries():
        res["catalog"] = bench_queries(lake, sample, repeat, with_findings="compliance" in res)

    def export():
        res["export"] = bench_export(lake, base, repeat)
        log(f"n={n:,}: export {res['export']['rows']:,} rows, median {res['export']['median_s']:.2f}s = "
            f"{res['export']['events_per_s']:,.0f} events/s")

    # 2b. PostgreSQL on the same landing events
    def postgres():
        import pg_bench

        res["postgres"] = {"error": "did not finish"}
        res["postgres"] = pg_bench.run(str(landing), base / "pg", 1 if n >= LARGE else (args.pg_repeat or args.repeat), log=log)
        pg = res["postgres"]
        res["pg_ingest_speedup_x"] = pg["ingest_median_s"] / res["ingest"]["median_s"]
        if "verify" in res:
            res["pg_verify_speedup_x"] = pg["verify_median_s"] / res["verify"]["median_s"]

    # 6. incremental verify: trust the current state, ingest a fixed extra batch, verify from the trust point.
    def incremental():
        full = _worker("verify", env, lake_dir, trust=True)
        if not full["ok"]:
            raise RuntimeError(f"verify found problems in the bench lake: {full['findings']}")
        extra = _worker("ingest", env, lake_dir, extra_landing)
        inc = {"extra_events": extra["accepted"], "extra_ingest_s": extra["seconds"],
               "extra_ingest_peak_rss_mb": extra["peak_rss_mb"], "full_with_trust_s": full["seconds"]}
        res["verify_incremental"] = inc
        log(f"n={n:,}: +{extra['accepted']:,} events ingested into the {n:,} lake in {extra['seconds']:.1f}s, "
            f"peak RSS {extra['peak_rss_mb']:.0f} MB")
        runs = []
        for i in range(repeat):
            r = _worker("verify-incremental", env, lake_dir)
            if not r.get("available"):
                inc.update(available=False, detail=r.get("detail"))
                log(f"n={n:,}: incremental verify not available: {r.get('detail')}")
                return
            if not r["ok"]:
                raise RuntimeError("incremental verify found problems in the bench lake")
            runs.append(r)
            log(f"n={n:,}: incremental verify {i + 1}/{repeat}: {r['seconds']:.2f}s")
        inc.update(available=True, runs_s=[r["seconds"] for r in runs],
                   median_s=statistics.median(r["seconds"] for r in runs), kwarg=runs[-1]["kwarg"],
                   peak_rss_max_mb=max(r["peak_rss_mb"] for r in runs))

    for name, fn in (("verify", verify_full), ("proofs", proofs), ("compliance", compliance), ("queries", queries),
                     ("export", export), ("postgres", postgres), ("incremental", incremental)):
        if name in skip or (name == "incremental" and extra_landing is None):
            continue
        step(name, fn)

    res["loadavg_end"] = list(os.getloadavg())
    return res


def run_extras(n: int, work: Path, out: Path) -> dict:
    """The other benchmark scripts on the bench lake of size n (their output kept)."""
    base = work / f"n{n}"
    env = dict(os.environ, AUDITLAKE_HOME=str(base / "home"))
    scripts = {
        "privacy_bench": [str(HERE / "privacy_bench.py"), "--lake", str(base / "lake")],
        "compliance_bench": [str(HERE / "compliance_bench.py"), "--lake", str(base / "lake"), "--repeat", "1"],
        "explorer_bench": [str(HERE / "explorer_bench.py"), "--lake", str(base), "--repeat", "1"],
    }
    done = {}
    (out / "extras").mkdir(parents=True, exist_ok=True)
    for name, cmd in scripts.items():
        if not Path(cmd[0]).exists():
            continue
        log(f"extras: {name} on the {n:,}-event lake")
        t0 = time.perf_counter()
        r = subprocess.run([PY, *cmd], env=env, capture_output=True, text=True)
        text = r.stdout + ("\n--- stderr ---\n" + r.stderr[-5000:] if r.returncode else "")
        (out / "extras" / f"{name}-{n}.txt").write_text(text)
        done[name] = {"exit": r.returncode, "seconds": time.perf_counter() - t0,
                      "output": f"extras/{name}-{n}.txt"}
    return done


def code_fingerprint() -> dict:
    """SHA-256 over the engine's sources (no git here): shows whether the code measured
    changed while the bench ran (other engineers edit it), and the newest file."""
    import hashlib

    h = hashlib.sha256()
    newest = (0.0, "")
    for p in sorted((ROOT / "auditlake").rglob("*.py")):
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
        newest = max(newest, (p.stat().st_mtime, str(p.relative_to(ROOT))))
    return {"sha256": h.hexdigest()[:16], "newest_file": newest[1],
            "newest_mtime": datetime.fromtimestamp(newest[0], timezone.utc).isoformat(timespec="seconds")}


def _batch_lines() -> int | None:
    try:
        from auditlake import ingest

        return getattr(ingest, "BATCH_LINES", None)
    except ImportError:
        return None


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000", help="comma-separated event counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is reported); sizes from 10M run once")
    ap.add_argument("--pg-repeat", type=int, default=0, help="PostgreSQL runs per figure (default: --repeat)")
    ap.add_argument("--out", default=str(ROOT / "results"), help="report folder (default: results/)")
    ap.add_argument("--skip-postgres", action="store_true", help="no PostgreSQL comparison")
    ap.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {','.join(STEPS)}")
    ap.add_argument("--work", help="scratch folder (default: a temp folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (lakes, landing data)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--extra-events", type=int, default=10_000, help="extra ingest before the incremental verify")
    ap.add_argument("--proofs", type=int, default=20, help="inclusion proofs per size")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile runs at the smallest size")
    ap.add_argument("--extras", action="store_true", help="also run privacy/compliance/explorer benches on the largest lake")
    args = ap.parse_args(argv)
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    args.skip_set = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip_set - set(STEPS)
    if unknown:
        ap.error(f"unknown step(s) for --skip: {', '.join(sorted(unknown))}")
    if args.skip_postgres:
        args.skip_set.add("postgres")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="auditlake-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    doc = {"format": 1, "started_at": started.isoformat(timespec="seconds"), "machine": machine_info(),
           "args": {"sizes": sizes, "repeat": args.repeat, "pg_repeat": args.pg_repeat or args.repeat,
                    "skip": sorted(args.skip_set), "seed": args.seed, "days": args.days,
                    "extra_events": args.extra_events, "proofs": args.proofs,
                    "ingest_batch_lines": _batch_lines()},
           "code": {"start": code_fingerprint()}, "sizes": {}}
    log(f"bench sizes {sizes}, {args.repeat} runs each, scratch {work}, report {out}")
    log(f"machine: {doc['machine']['nproc']} cores, {doc['machine']['cpu_model']}, "
        f"{doc['machine']['mem_total_gib']} GiB, load {doc['machine']['loadavg_start']}")
    try:
        extra_landing = None
        if "incremental" not in args.skip_set:
            from auditlake.generate import generate

            extra = work / "extra"
            if not (extra / "ground_truth.json").exists():
                generate(extra, events=args.extra_events, seed=args.seed + 1000, days=args.days)
            extra_landing = extra / "landing"
        for i, n in enumerate(sizes):
            prof_dir = None
            if i == 0 and not args.no_profile:
                prof_dir = work / "profiles"
                prof_dir.mkdir(exist_ok=True)
            doc["sizes"][str(n)] = bench_size(n, args, work, extra_landing, prof_dir)
            if prof_dir is not None:
                doc["profiles"] = report.write_profiles(prof_dir, out, n)
            doc["machine"]["loadavg_end"] = list(os.getloadavg())
            report.write_all(doc, out)  # after every size: a late failure keeps the figures so far
            os.chdir(work)
            if not args.keep and not (args.extras and n == sizes[-1]):
                _rmtree(work / f"n{n}")
        if args.extras:
            doc["extras"] = run_extras(sizes[-1], work, out)
    finally:
        os.chdir(ROOT)
        doc["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        doc["duration_s"] = (datetime.now(timezone.utc) - started).total_seconds()
        doc["machine"]["loadavg_end"] = list(os.getloadavg())
        doc["code"]["end"] = code_fingerprint()
        doc["code"]["changed_during_run"] = doc["code"]["end"]["sha256"] != doc["code"]["start"]["sha256"]
        if doc["sizes"]:
            report.write_all(doc, out)
        if not args.keep and not args.work:
            _rmtree(work)
        elif args.keep:
            log(f"kept {work}")
    log(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'growth.png'}")
    print((out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
