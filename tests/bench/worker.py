"""One measured step of `make bench`, run in its own process (so its peak RSS is its own).

    .venv/bin/python tests/bench/worker.py ingest   --lake DIR --landing DIR [--profile FILE]
    .venv/bin/python tests/bench/worker.py baseline --lake DIR --landing DIR [--profile FILE]
    .venv/bin/python tests/bench/worker.py verify   --lake DIR [--profile FILE] [--trust]
    .venv/bin/python tests/bench/worker.py verify-incremental --lake DIR

Prints one JSON document on stdout (the last line): `seconds` is the step alone (imports
and interpreter start excluded), `peak_rss_mb` the larger of the process's own high-water
mark (VmHWM) and the largest sum of its and its sealing workers' RSS sampled every 50 ms,
`import_rss_mb` its RSS after the imports, before the step. AUDITLAKE_HOME comes from the environment (run.py sets it).

`baseline` is the integrity-free alternative to `auditlake ingest`: polars reads each
landing file natively (JSONL lines, gzip included, or Parquet), takes the nine envelope
fields (nested objects kept as JSON text), drops lines that are not JSON objects, parses
occurred_at, and appends the rows to a Delta table partitioned by event_date in batches
of about 100K rows (like ingest). No contract check, no sealing, no chain, Merkle tree,
checkpoint or retention lock.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
ENVELOPE = ("event_id", "occurred_at", "event_type", "source", "tenant_id", "actor", "subject", "lawful_basis", "data")
BASELINE_BATCH = 100_000


def _status_kb(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0)


def _rss_now_mb() -> float:
    try:
        return _status_kb("self", "VmRSS") / 1024
    except OSError:
        return float("nan")


def _peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM). Not getrusage's ru_maxrss: that survives
    exec, so a process started by a big parent reports the parent's size at fork."""
    return _status_kb("self", "VmHWM") / 1024


class _TreeSampler:
    """The largest RSS of this process plus its children (the sealing workers), sampled
    every 50 ms while a step runs."""

    def __init__(self):
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.05):
            try:
                with open(f"/proc/{me}/task/{me}/children") as f:
                    children = f.read().split()
                total = _status_kb(me, "VmRSS") + sum(_status_kb(c, "VmRSS") for c in children)
            except (OSError, ValueError):
                continue  # a worker exited between the listing and the read
            self.peak_kb = max(self.peak_kb, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def _profiled(fn, profile_out: str | None):
    """Run fn(), under cProfile if asked (stats dumped to profile_out)."""
    if not profile_out:
        return fn()
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        prof.dump_stats(profile_out)


# ----------------------------------------------------------------------------- steps
def step_ingest(args) -> dict:
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake

    lake = Lake.open(args.lake)
    rss0 = _rss_now_mb()
    t0 = time.perf_counter()
    rep = _profiled(lambda: ingest(lake, [args.landing]), args.profile)
    took = time.perf_counter() - t0
    return {"seconds": took, "accepted": rep.accepted, "quarantined": rep.quarantined, "lines_read": rep.lines_read,
            "batches": rep.batches, "tree_size": rep.tree_size, "retries": rep.retries, "import_rss_mb": rss0,
            "workers": rep.workers}


def _baseline_frames(landing: str):
    import polars as pl

    files = sorted(p for p in Path(landing).rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)
                   and not any(part.startswith(".") for part in p.relative_to(landing).parts))
    for path in files:
        if path.name.endswith(".parquet"):
            df = pl.read_parquet(path)
            cols = []
            for name in ENVELOPE:
                if name not in df.columns:
                    cols.append(pl.lit(None, dtype=pl.String).alias(name))
                elif isinstance(df.schema[name], pl.Struct):
                    cols.append(pl.col(name).struct.json_encode().alias(name))
                else:
                    cols.append(pl.col(name).cast(pl.String))
            df = df.select(cols)
        else:
            lines = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None, schema={"line": pl.String},
                                encoding="utf8-lossy")
            line = pl.col("line")
            df = lines.select([line.str.json_path_match(f"$.{name}").alias(name) for name in ENVELOPE])
        df = df.filter(pl.col("event_id").is_not_null())
        df = df.with_columns(
            occurred_ts=pl.col("occurred_at").str.to_datetime(format="%+", time_zone="UTC", strict=False,
                                                              time_unit="us"),
            source_file=pl.lit(path.name),
        ).filter(pl.col("occurred_ts").is_not_null())
        yield df.with_columns(event_date=pl.col("occurred_ts").dt.strftime("%Y-%m-%d"))


def step_baseline(args) -> dict:
    import polars as pl
    from deltalake import write_deltalake

    rss0 = _rss_now_mb()
    out = str(Path(args.lake).resolve())

    def run() -> dict:
        rows = commits = 0
        pending, n_pending = [], 0

        def flush():
            nonlocal pending, n_pending, commits
            table = pl.concat(pending, how="vertical").to_arrow()
            write_deltalake(out, table, mode="append", partition_by=["event_date"],
                            configuration={"delta.appendOnly": "true"})
            commits += 1
            pending, n_pending = [], 0

        for df in _baseline_frames(args.landing):
            pending.append(df)
            n_pending += df.height
            rows += df.height
            if n_pending >= BASELINE_BATCH:
                flush()
        if pending:
            flush()
        return {"rows": rows, "commits": commits}

    t0 = time.perf_counter()
    res = _profiled(run, args.profile)
    took = time.perf_counter() - t0
    return {"seconds": took, **res, "import_rss_mb": rss0}


def step_verify(args) -> dict:
    from auditlake.lake.store import Lake
    from auditlake.verify import verify

    lake = Lake.open(args.lake)
    rss0 = _rss_now_mb()
    t0 = time.perf_counter()
    rep = _profiled(lambda: verify(lake, update_trust=args.trust), args.profile)
    took = time.perf_counter() - t0
    return {"seconds": took, "ok": rep.ok, "events": rep.events, "checkpoints": rep.checkpoints,
            "findings": [f"{f.kind}: {f.detail}" for f in rep.findings[:5]], "import_rss_mb": rss0}


INCREMENTAL_KWARGS = ("incremental", "since_trusted", "from_trusted")


def incremental_kwarg() -> str | None:
    """The keyword of verify() that checks only what follows the trusted checkpoint, if any."""
    from auditlake.verify import verify

    params = inspect.signature(verify).parameters
    return next((k for k in INCREMENTAL_KWARGS if k in params), None)


def step_verify_incremental(args) -> dict:
    """Incremental verify from the trusted checkpoint (set by a prior `verify --trust` and
    followed by a small extra ingest), if verify() has such a mode."""
    from auditlake.lake.store import Lake
    from auditlake.verify import verify

    kw = incremental_kwarg()
    if kw is None:
        return {"available": False, "detail": "auditlake.verify.verify() has no incremental mode "
                                              f"(none of {', '.join(INCREMENTAL_KWARGS)})"}
    lake = Lake.open(args.lake)
    rss0 = _rss_now_mb()
    t0 = time.perf_counter()
    rep = _profiled(lambda: verify(lake, update_trust=False, **{kw: True}), args.profile)
    took = time.perf_counter() - t0
    return {"available": True, "kwarg": kw, "seconds": took, "ok": rep.ok, "events": rep.events,
            "import_rss_mb": rss0}


STEPS = {"ingest": step_ingest, "baseline": step_baseline, "verify": step_verify,
         "verify-incremental": step_verify_incremental}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=sorted(STEPS))
    p.add_argument("--lake", required=True)
    p.add_argument("--landing")
    p.add_argument("--profile", help="write cProfile stats of the step to this file")
    p.add_argument("--trust", action="store_true", help="verify: advance the trusted checkpoint after a clean pass")
    args = p.parse_args(argv)
    if "AUDITLAKE_HOME" not in os.environ:
        print("AUDITLAKE_HOME must be set", file=sys.stderr)
        return 2
    sampler = _TreeSampler()
    out = STEPS[args.step](args)
    out["own_peak_rss_mb"] = _peak_rss_mb()
    out["with_workers_peak_rss_mb"] = sampler.stop()
    out["peak_rss_mb"] = max(out["own_peak_rss_mb"], out["with_workers_peak_rss_mb"])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
