"""SIGKILL trials: kill `auditlake ingest` at random moments, run it again, and check that the
lake verifies and holds every landing line exactly once (accepted + quarantined == lines,
gap-free seq, no duplicate event_id, every file logged once).

    python tests/bench/crash_trials.py --trials 20                # local lake
    python tests/bench/crash_trials.py --trials 20 --s3           # lake on a moto S3 server
    python tests/bench/crash_trials.py --trials 20 --workers 2    # sealing in worker processes

tests/test_crash.py runs the same trials in a smaller form.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures_s3 import ROOT, assert_exact, lake_counts, write_landing  # noqa: E402


def _cli(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "auditlake.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _run(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auditlake.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def _kill_after(proc: subprocess.Popen, delay: float, progress=None, writes: int = 0) -> bool:
    """SIGKILL the process after `delay` seconds, or (with `progress`) `delay` seconds after it
    has made `writes` writes to the lake; False if it finished first."""
    if progress is not None and writes:
        base = progress()
        while progress() - base < writes:
            if proc.poll() is not None:
                proc.communicate()
                return False
            time.sleep(0.002)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            proc.communicate()
            return False
        time.sleep(0.002)
    if proc.poll() is not None:
        proc.communicate()
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return True


def local_progress(lake: str):
    """Objects written so far into a local lake (files under it)."""
    def count() -> int:
        return sum(len(f) for _, _, f in os.walk(lake))
    return count


def moto_progress(log: Path, bucket: str):
    """Writes so far into the bucket (PUT, POST and DELETE lines of moto's access log, read
    incrementally)."""
    state = {"pos": 0, "count": 0, "rest": b""}
    needles = [f'"{m} /{bucket}/'.encode() for m in ("PUT", "POST", "DELETE")]

    def count() -> int:
        try:
            with open(log, "rb") as f:
                f.seek(state["pos"])
                data = f.read()
        except FileNotFoundError:
            return 0
        state["pos"] += len(data)
        data = state["rest"] + data
        cut = data.rfind(b"\n") + 1
        state["rest"] = data[cut:]
        state["count"] += sum(data[:cut].count(n) for n in needles)
        return state["count"]
    return count


def _verify(lake: str, env: dict) -> tuple[int, list[dict]]:
    """verify, in this process (the environment of the runs must be os.environ here too)."""
    from dataclasses import asdict

    from auditlake.errors import AuditlakeError
    from auditlake.lake.store import Lake
    from auditlake.verify import verify

    try:
        report = verify(Lake.open(lake), update_trust=False)
    except AuditlakeError as exc:
        return 2, [{"kind": "verify_failed", "detail": str(exc)}]
    return (0 if report.ok else 1), [asdict(f) for f in report.findings]


def _phase(lake: str, shas: set[str], lines: int) -> str:
    """How far the killed run got with this trial's files."""
    c = lake_counts(lake)
    done = sum(1 for s, _ in c["lines"] if s in shas)
    logged = sum(1 for s in c["logged"] if s in shas)
    if logged == len(shas):
        return "all files logged"
    if logged:
        return "some files logged"
    if done == lines:
        return "rows committed, files not logged"
    if done:
        return "part of the rows committed"
    return "nothing committed"


def run_trials(lake: str, work: Path, trials: int, seed: int = 0, env: dict | None = None,
               files: int = 3, lines: int = 400, log=print, progress=None) -> dict:
    """Run `trials` kill-and-rerun trials on `lake`; raises AssertionError on the first broken
    invariant. Returns a summary.

    Where the kill lands: with `progress` (a count of writes to the lake), most kills come a
    random number of writes into the run plus a few milliseconds, so they hit every commit
    and sealing step; the others come at a random time (startup, reading, planning)."""
    import hashlib

    env = {**os.environ, **(env or {})}
    rnd = random.Random(seed)
    total_lines, all_ids, n_files = 0, [], 0

    def landing(i: int) -> tuple[Path, set[str], int]:
        nonlocal total_lines, n_files
        folder = work / f"in{i:03d}"
        shas, count = set(), 0
        for f in range(files):
            r = write_landing(folder / f"t{i}-{f}.jsonl", lines, seed=seed * 100_000 + i * 100 + f, bad_every=13)
            shas.add(hashlib.sha256((folder / f"t{i}-{f}.jsonl").read_bytes()).hexdigest())
            all_ids.extend(r["event_ids"])
            count += r["lines"]
        total_lines += count
        n_files += files
        return folder, shas, count

    # Calibrate: how long an uninterrupted run takes here, and how many writes it makes.
    progress = progress or (local_progress(lake) if "://" not in lake else None)
    folder, _, _ = landing(0)
    t0 = time.monotonic()
    w0 = progress() if progress else 0
    r = _run(["--lake", lake, "ingest", str(folder)], env)
    assert r.returncode == 0, r.stderr
    duration = time.monotonic() - t0
    writes = (progress() - w0) if progress else 0
    log(f"calibration: one ingest run takes {duration:.2f}s and {writes} writes")

    summary = {"trials": trials, "killed": 0, "killed_twice": 0, "finished_before_kill": 0,
               "phases": collections.Counter(), "findings_after_kill": collections.Counter(),
               "clean_after_kill": 0, "calibration_s": round(duration, 2)}
    for i in range(1, trials + 1):
        folder, shas, count = landing(i)
        if progress and writes and rnd.random() < 0.8:
            at_write, delay = rnd.randint(1, writes), rnd.uniform(0, 0.03)
        else:
            at_write, delay = 0, rnd.uniform(0.1, 1.1) * duration
        killed = _kill_after(_cli(["--lake", lake, "ingest", str(folder)], env), delay, progress, at_write)
        phase = _phase(lake, shas, count) if killed else "finished"
        if killed:
            summary["killed"] += 1
            summary["phases"][phase] += 1
            rc, findings = _verify(lake, env)
            kinds = sorted({f["kind"] + (": " + f["detail"] if f["kind"] == "RET-WORM" else "") for f in findings})
            for k in kinds:
                summary["findings_after_kill"][k] += 1
            if not findings:
                summary["clean_after_kill"] += 1
            # A crash never damages the ledger itself: only leftovers the next run clears.
            damage = [f for f in findings if f["kind"] not in ("RET-WORM", "data_file_inserted")]
            assert not damage, f"trial {i}: the crash damaged the lake: {damage}"
            if rnd.random() < 0.25:  # and the recovery run crashes too
                if _kill_after(_cli(["--lake", lake, "ingest", str(folder)], env), rnd.uniform(0, 0.03), progress,
                               rnd.randint(1, max(1, writes))) if progress else \
                        _kill_after(_cli(["--lake", lake, "ingest", str(folder)], env), rnd.uniform(0.1, 1.1) * duration):
                    summary["killed_twice"] += 1
        else:
            summary["finished_before_kill"] += 1
        r = _run(["--lake", lake, "ingest", str(folder), "--json"], env)
        assert r.returncode == 0, f"trial {i}: the rerun failed: {r.stderr}"
        rc, findings = _verify(lake, env)
        assert rc == 0 and not findings, f"trial {i} ({phase}): verify after the rerun: {findings}"
        assert_exact(lake, total_lines, all_ids, files=n_files)
        where = f"write {at_write} + {delay * 1000:.0f}ms" if at_write else f"{delay:.2f}s"
        log(f"trial {i:2d}: kill at {where} -> {phase}; rerun + verify ok "
            f"({lake_counts(lake)['accepted']} events)")
    summary["phases"] = dict(summary["phases"])
    summary["findings_after_kill"] = dict(summary["findings_after_kill"])
    summary["lines"] = total_lines
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--s3", action="store_true", help="run against a moto S3 server (started here)")
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--lines", type=int, default=400)
    ap.add_argument("--workers", default="", help="AUDITLAKE_INGEST_WORKERS for the runs (default: automatic)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {"AUDITLAKE_HOME": str(work / "home")}
        if args.workers:
            env["AUDITLAKE_INGEST_WORKERS"] = args.workers
        server = None
        if args.s3:
            from fixtures_s3 import create_worm_bucket, s3_environ, start_moto

            server = start_moto(work / "moto.log")
            env.update(s3_environ(server.endpoint))
            bucket = create_worm_bucket(server.endpoint)
            lake = f"s3://{bucket}/lake"
            progress = moto_progress(server.log, bucket)
        else:
            progress = None
            lake = str(work / "lake")
        os.environ.update(env)  # the checks read the lake in this process
        try:
            started = time.monotonic()
            summary = run_trials(lake, work, args.trials, args.seed, env, args.files, args.lines, progress=progress)
            summary["elapsed_s"] = round(time.monotonic() - started, 1)
            summary["lake"] = "s3 (moto)" if args.s3 else "local"
            summary["workers"] = args.workers or "automatic"
            print(json.dumps(summary, indent=2))
        finally:
            if server:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
