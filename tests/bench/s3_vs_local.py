"""Ingest and verify throughput on a local lake and on an S3 lake (a moto server started
here) for the same landing data, and the S3 requests each takes (from moto's access log).

    python tests/bench/s3_vs_local.py --events 50000
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from fixtures_s3 import ROOT, create_worm_bucket, s3_environ, start_moto, write_landing  # noqa: E402


def _cli(args: list[str], env: dict) -> tuple[float, dict | str]:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "auditlake.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    took = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit(f"auditlake {' '.join(args)} failed: {r.stderr}")
    try:
        return took, json.loads(r.stdout)
    except ValueError:
        return took, r.stdout


def _requests(log: Path, start: int) -> tuple[int, collections.Counter]:
    lines = log.read_text(errors="replace").splitlines()[start:]
    kinds = collections.Counter()
    for line in lines:
        m = re.search(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) (\S+)', line)
        if not m:
            continue
        method, path = m.groups()
        q = path.split("?", 1)[1].split("=")[0].split("&")[0] if "?" in path else ""
        kinds[f"{method}{'?' + q if q else ''}"] += 1
    return sum(kinds.values()), kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--files", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        per = args.events // args.files
        for n in range(args.files):
            write_landing(work / "landing" / f"f{n}.jsonl", per, seed=n, bad_every=100)
        size = sum(p.stat().st_size for p in (work / "landing").iterdir())
        server = start_moto(work / "moto.log")
        try:
            base_env = {**os.environ}
            results = {}
            for kind in ("local", "s3"):
                env = {**base_env, "AUDITLAKE_HOME": str(work / f"home-{kind}")}
                if kind == "s3":
                    env.update(s3_environ(server.endpoint))
                    lake = f"s3://{create_worm_bucket(server.endpoint)}/lake"
                else:
                    lake = str(work / "lake")
                _cli(["--lake", lake, "init"], env)
                mark = len(server.log.read_text(errors="replace").splitlines())
                t_ing, doc = _cli(["--lake", lake, "ingest", str(work / "landing"), "--json"], env)
                mark2 = len(server.log.read_text(errors="replace").splitlines())
                t_ver, vdoc = _cli(["--lake", lake, "verify", "--json", "--no-trust-update"], env)
                r = {"ingest_s": round(t_ing, 2), "ingest_events_per_s": round(doc["accepted"] / t_ing),
                     "ingest_mb_per_s": round(size / 1e6 / t_ing, 2), "batches": doc["batches"],
                     "verify_s": round(t_ver, 2), "verify_events_per_s": round(vdoc["events"] / t_ver),
                     "verify_ok": vdoc["ok"], "events": vdoc["events"]}
                if kind == "s3":
                    n_ing, k_ing = _requests(server.log, mark)
                    n_ver, k_ver = _requests(server.log, mark2)
                    r["ingest_requests"] = n_ing
                    r["requests_per_batch"] = round(n_ing / max(1, doc["batches"]))
                    r["ingest_requests_by_kind"] = dict(k_ing.most_common())
                    r["verify_requests"] = n_ver
                    r["verify_requests_by_kind"] = dict(k_ver.most_common())
                results[kind] = r
            results["landing"] = {"events": args.events, "bytes": size, "files": args.files}
            print(json.dumps(results, indent=2))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
