"""Large landing files: ingest a 2 GB JSON Lines file and measure the peak memory (RSS) of the
ingest process, alone and with its sealing workers; the target is under 1.5 GB. Optionally verify the lake afterwards.

    python tests/bench/big_file.py                      # 2 GB, local lake, in a temp folder
    python tests/bench/big_file.py --gb 0.2 --verify    # a quicker look
    python tests/bench/big_file.py --work /data/bench --keep

Not part of the test suite (tests/test_crash.py has a small bounded-memory check).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 1536

_CALL = ('{"event_id":"%s","occurred_at":"%s","event_type":"call.started","source":"routing-engine",'
         '"tenant_id":"tenant-%d","actor":{"type":"service","id":"router","ip":"10.%d.%d.%d"},'
         '"subject":{"id":"subj-%d","phone":"+1555%07d","email":"person%d@example.com","name":"Person %d",'
         '"country":"US","region":"CA","timezone":"America/Los_Angeles"},"lawful_basis":"consent",'
         '"data":{"call_id":"call-%d","direction":"outbound","purpose":"telemarketing","campaign_id":"camp-%d",'
         '"publisher_id":"pub-%d","buyer_id":"buyer-%d","notes":"%s"}}\n')
_DONE = ('{"event_id":"%s","occurred_at":"%s","event_type":"call.completed","source":"routing-engine",'
         '"tenant_id":"tenant-%d","actor":{"type":"service","id":"router"},"subject":null,"lawful_basis":"contract",'
         '"data":{"call_id":"call-%d","duration_s":%d,"disposition":"answered","notes":"%s"}}\n')


def generate(path: Path, target_bytes: int, seed: int = 1, bad_every: int = 1000) -> tuple[int, int]:
    """Write contract-valid events (and a bad line every `bad_every`) until the file reaches
    `target_bytes`. Returns (lines, bytes)."""
    rnd = random.Random(seed)
    base = datetime(2026, 3, 1, tzinfo=timezone.utc)
    notes = "x" * 120
    n = size = 0
    buf: list[str] = []
    with open(path, "w") as f:
        while size < target_bytes:
            n += 1
            if n % bad_every == 0:
                line = '{"event_id": "broken"}\n'
            else:
                eid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
                t = base + timedelta(seconds=n % (30 * 86400), microseconds=rnd.randrange(1_000_000))
                ts = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                if n % 2:
                    s = rnd.randrange(200_000)
                    line = _CALL % (eid, ts, n % 7, n % 250, n % 200, n % 100, s, s, s, s, n, n % 40, n % 90, n % 30, notes)
                else:
                    line = _DONE % (eid, ts, n % 7, n, rnd.randrange(900), notes)
            buf.append(line)
            size += len(line)
            if len(buf) >= 50_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return n, size


def run_measured(args: list[str], env: dict) -> dict:
    """Run `python -m auditlake.cli ARGS`; wall time and the peak RSS (kernel's ru_maxrss)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "auditlake.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    samples: list[int] = []
    tree: list[int] = []

    def rss_kb(pid: int) -> int:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)

    def sample():  # the RSS over time, of the process and of it plus its workers
        while proc.poll() is None:
            try:
                own = rss_kb(proc.pid)
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
                    children = [int(c) for c in fh.read().split()]
                samples.append(own)
                tree.append(own + sum(rss_kb(c) for c in children))
            except (OSError, ValueError):
                pass
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out_chunks, err_chunks = [], []
    readers = [threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    elapsed = time.monotonic() - started
    return {"rc": proc.returncode, "seconds": round(elapsed, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "median_rss_mb": round(sorted(samples)[len(samples) // 2] / 1024) if samples else None,
            # Sampled every 0.2 s: the ingest process and its sealing workers together.
            "peak_tree_rss_mb": round(max(tree) / 1024) if tree else None,
            "stdout": "".join(out_chunks), "stderr": "".join(err_chunks)[-2000:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="landing file size in GB (default 2)")
    ap.add_argument("--work", help="work folder (default: a temporary one)")
    ap.add_argument("--lake", help="lake URI (default: <work>/lake)")
    ap.add_argument("--verify", action="store_true", help="also run verify and measure it")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="auditlake-big-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AUDITLAKE_HOME": str(work / "home")}
    lake = args.lake or str(work / "lake")
    landing = work / "landing" / "big.jsonl"
    landing.parent.mkdir(exist_ok=True)
    result: dict = {"lake": lake}
    try:
        t0 = time.monotonic()
        if not landing.exists() or landing.stat().st_size < args.gb * 1e9 * 0.99:
            lines, size = generate(landing, int(args.gb * 1e9))
        else:
            size = landing.stat().st_size
            lines = sum(1 for _ in open(landing, "rb"))
        result["landing"] = {"bytes": size, "lines": lines, "generated_s": round(time.monotonic() - t0, 1)}
        print(f"landing file: {size / 1e9:.2f} GB, {lines:,} lines", file=sys.stderr)
        ing = run_measured(["--lake", lake, "ingest", str(landing), "--json"], env)
        if ing["rc"] != 0:
            print(ing["stderr"], file=sys.stderr)
            result["ingest"] = {k: v for k, v in ing.items() if k != "stdout"}
            print(json.dumps(result, indent=2))
            return 1
        doc = json.loads(ing["stdout"])
        result["ingest"] = {
            "seconds": ing["seconds"], "peak_rss_mb": ing["peak_rss_mb"], "median_rss_mb": ing["median_rss_mb"],
            "peak_rss_with_workers_mb": ing["peak_tree_rss_mb"],
            "accepted": doc["accepted"], "quarantined": doc["quarantined"], "batches": doc["batches"],
            "events_per_s": round(lines / ing["seconds"]), "mb_per_s": round(size / 1e6 / ing["seconds"], 1),
            "exact": doc["accepted"] + doc["quarantined"] == lines,
            "under_limit": max(ing["peak_rss_mb"], ing["peak_tree_rss_mb"] or 0) < LIMIT_MB,
        }
        if args.verify:
            v = run_measured(["--lake", lake, "verify", "--json", "--no-trust-update"], env)
            vd = json.loads(v["stdout"]) if v["stdout"].strip() else {}
            result["verify"] = {"rc": v["rc"], "seconds": v["seconds"], "peak_rss_mb": v["peak_rss_mb"],
                                "stderr": v["stderr"].strip().splitlines()[-1:] if v["rc"] else [],
                                "ok": vd.get("ok"), "events": vd.get("events"),
                                "events_per_s": round((vd.get("events") or 0) / v["seconds"])}
        print(json.dumps(result, indent=2))
        ok = result["ingest"]["exact"] and result["ingest"]["under_limit"]
        return 0 if ok else 1
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
