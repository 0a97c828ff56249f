"""Benchmarks of the privacy and hand-off features (not a test; run by hand).

    .venv/bin/python tests/bench/privacy_bench.py --events 1000000 [--lake DIR] [--keep]

Builds (or reuses, with --lake DIR of an earlier run) a lake of synthetic, contract-valid
events written as one landing file per day in time order, like producers that roll files,
then measures:

* export: a default-profile (redacted) Parquet export of the whole lake, events/s
  (target >= 500K events/s);
* dsar: a subject access export of one subject (target < 5 s on a 10M-event lake);
* prove: inclusion proof generation for random events, median and p95 (target < 50 ms),
  split into the event-id lookup and the proof build from tiles;
* verify-export and verify-proof for completeness.

Export and DSAR times include recording their `data.exported` audit event (an ingest of one
line into the lake), which is also reported on its own.

AUDITLAKE_HOME defaults to <lake>/../home so a reused lake finds its keystore.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

FIRST = ["Ann", "Bob", "Chen", "Dana", "Eve", "Farid", "Gita", "Hugo", "Ines", "Jon"]
LAST = ["Lee", "Okafor", "Smith", "Garcia", "Novak", "Tanaka", "Berg", "Silva"]
TYPES = ["call.started", "call.completed", "bid.placed", "consent.granted", "user.login"]


def _event(rng: random.Random, t: datetime, subjects: int) -> dict:
    sid = rng.randrange(subjects)
    et = rng.choice(TYPES)
    subject = {
        "id": f"subj-{sid:07d}",
        "phone": f"+1{2000000000 + sid * 7919 % 7999999999}",
        "email": f"person{sid}@example.com",
        "name": f"{FIRST[sid % len(FIRST)]} {LAST[sid % len(LAST)]}",
        "country": "US",
        "region": "CA",
        "timezone": "America/Los_Angeles",
    }
    actor = {"type": "service", "id": "routing-engine"}
    data: dict = {}
    if et == "call.started":
        data = {"call_id": uuid.UUID(int=rng.getrandbits(128)).hex, "direction": "outbound", "purpose": "telemarketing",
                "campaign_id": f"camp-{sid % 50}", "publisher_id": f"pub-{sid % 20}"}
    elif et == "call.completed":
        data = {"call_id": uuid.UUID(int=rng.getrandbits(128)).hex, "duration_s": rng.randrange(600), "disposition": "answered"}
    elif et == "bid.placed":
        data = {"bid_id": f"bid-{rng.getrandbits(40)}", "call_id": "c", "buyer_id": f"buyer-{sid % 30}",
                "amount": f"{rng.randrange(1, 5000) / 100:.2f}", "currency": "USD"}
    elif et == "consent.granted":
        data = {"consent_id": f"cons-{rng.getrandbits(40)}", "method": "web_form", "seller": "acme"}
    else:
        actor = {"type": "user", "id": f"user-{sid % 200}", "ip": f"10.{sid % 250}.{sid // 250 % 250}.{sid % 7 + 1}"}
        data = {"method": "password"}
        subject = None
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "occurred_at": t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "event_type": et,
        "source": "bench",
        "tenant_id": f"tenant-{sid % 5}",
        "actor": actor,
        "subject": subject,
        "lawful_basis": "consent",
        "data": data,
    }


def write_landing(out: Path, events: int, days: int = 30, subjects: int = 100_000, seed: int = 1) -> None:
    """One JSONL file per day, events in time order."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    per_day = events // days
    for d in range(days):
        n = per_day + (events - per_day * days if d == days - 1 else 0)
        step = 86_400 / max(n, 1)
        with open(out / f"events-{d:03d}.jsonl", "wb") as f:
            for i in range(n):
                t = start + timedelta(days=d, seconds=i * step)
                f.write(orjson.dumps(_event(rng, t, subjects)) + b"\n")


def _timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


class AuditTimer:
    """Time spent recording the lake's own audit events (data.exported: an ingest of one
    line), which exports and DSAR pay on top of their own work."""

    def __init__(self):
        from auditlake import audit_events

        self.seconds = 0.0
        real = audit_events.record_events

        def timed(lake, events):
            t = time.perf_counter()
            try:
                return real(lake, events)
            finally:
                self.seconds += time.perf_counter() - t

        audit_events.record_events = timed

    def take(self) -> float:
        s, self.seconds = self.seconds, 0.0
        return s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--lake", help="lake folder (reused if it holds a ledger)")
    ap.add_argument("--proofs", type=int, default=30)
    ap.add_argument("--skip", default="", help="comma-separated: export,dsar,prove")
    args = ap.parse_args()
    base = Path(args.lake).resolve().parent if args.lake else Path(tempfile.mkdtemp(prefix="privbench-"))
    lake_dir = Path(args.lake).resolve() if args.lake else base / "lake"
    os.environ.setdefault("AUDITLAKE_HOME", str(base / "home"))
    skip = set(filter(None, args.skip.split(",")))

    from auditlake.export import build_export, verify_export
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake
    from auditlake.privacy import dsar
    from auditlake.proofs import inclusion_proof, locate_event, verify_proof_doc

    lake = Lake.open(str(lake_dir))
    audit = AuditTimer()
    if lake.delta("ledger") is None:
        landing = base / "landing"
        _, t = _timed(write_landing, landing, args.events)
        print(f"wrote {args.events} landing events in {t:.1f}s", flush=True)
        rep, t = _timed(ingest, lake, [str(landing)])
        print(f"ingested {rep.accepted} events in {t:.1f}s ({rep.accepted / t:,.0f}/s)", flush=True)
    dt = lake.delta("ledger")
    ids = dt.to_pyarrow_dataset().to_table(columns=["event_id", "subject_id"])
    n = ids.num_rows
    print(f"lake {lake.uri}: {n} events, {len(dt.file_uris())} ledger files", flush=True)
    rng = random.Random(5)
    # Machine calibration: how long this machine takes for one SHA-256 of a 600-byte row (an
    # idle core with SHA extensions: ~0.4 us). Export speed scales with it.
    import hashlib

    sample = [os.urandom(600) for _ in range(100_000)]
    c0 = time.process_time()
    for d in sample:
        hashlib.sha256(b"\x00" + d).digest()
    print(f"calibration: {(time.process_time() - c0) * 10:.2f} us per 600-byte SHA-256; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    if "export" not in skip:
        import polars  # noqa: F401 - imported before timing
        out = None
        for fmt in ("parquet", "parquet,csv,jsonl"):
            if out is not None:  # a 10M bundle in three formats is about 11 GB: one at a time
                shutil.rmtree(out, ignore_errors=True)
            out = base / f"export-{uuid.uuid4().hex[:6]}"
            c0 = time.process_time()
            audit.take()
            manifest, t = _timed(build_export, lake, str(out), fmt.split(","), {}, actor="bench")
            cpu = time.process_time() - c0
            t_audit = audit.take()
            print(f"export {fmt} (default profile): {manifest['rows']} rows in {t:.2f}s = "
                  f"{manifest['rows'] / t:,.0f} events/s ({cpu:.1f} CPU-s); of which {t_audit:.2f}s recording the "
                  f"data.exported audit event, without it {manifest['rows'] / (t - t_audit):,.0f} events/s", flush=True)
        res, t = _timed(verify_export, str(out))
        print(f"verify-export: ok={res['ok']} in {t:.2f}s", flush=True)
        shutil.rmtree(out, ignore_errors=True)

    if "dsar" not in skip:
        from auditlake.privacy import subject_rows

        subjects = [s for s in ids.column("subject_id").slice(0, 1000).to_pylist() if s]
        _, t = _timed(subject_rows, lake, "warm-up")  # builds the signed subject index on first use
        print(f"dsar warm-up (first use builds the subject index): {t:.2f}s", flush=True)
        for sid in rng.sample(subjects, 3):
            rows, t_find = _timed(subject_rows, lake, sid)
            out = base / f"dsar-{uuid.uuid4().hex[:6]}"
            audit.take()
            doc, t = _timed(dsar, lake, sid, str(out), actor="bench")
            print(f"dsar {sid}: {doc['events']} events in {t:.2f}s (finding the rows alone: {t_find:.2f}s; recording "
                  f"the data.exported audit event: {audit.take():.2f}s; the rest is decrypting and writing)", flush=True)
            shutil.rmtree(out, ignore_errors=True)

    if "prove" not in skip:
        eids = [ids.column("event_id")[rng.randrange(n)].as_py() for _ in range(args.proofs)]
        _, t = _timed(inclusion_proof, lake, eids[0])  # warm up (imports; builds the event index on first use)
        print(f"prove warm-up (first use builds the event and leaf-hash indexes and the tile cache): {t:.2f}s",
              flush=True)
        totals, lookups = [], []
        for eid in eids:
            _, tl = _timed(locate_event, lake, eid)
            doc, tt = _timed(inclusion_proof, lake, eid)
            ok, why = verify_proof_doc(doc)
            assert ok, why
            totals.append(tt * 1000)
            lookups.append(tl * 1000)
        totals.sort()
        print(f"prove: median {statistics.median(totals):.1f} ms, p95 {totals[int(len(totals) * 0.95) - 1]:.1f} ms "
              f"(event-id lookup alone: median {statistics.median(lookups):.1f} ms)", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
