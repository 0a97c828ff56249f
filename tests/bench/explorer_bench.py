"""Explorer page render times (a benchmark, not a test; run by hand).

    .venv/bin/python tests/bench/explorer_bench.py --events 10000000 [--lake DIR] [--keep]

Builds (or reuses with --lake DIR) a lake of synthetic contract-valid events, one landing
file per day, ingests it, writes the catalog, then renders every explorer page under
Streamlit's AppTest (server-side script time: every query the page runs) as an admin:

* cold: switching to the page (and filling its inputs) right after the lake changed (st.cache_data empty; the DuckDB
  connection and its delta extension already loaded, as in a running explorer);
* warm: the same page again (cached on the table versions);
* the one-off start cost (opening the catalog read_only and loading the extension);
* the Overview's first render, when the per-day event-type counts are all computed (later
  renders recount only the days a new batch touched).

`--scale-from DIR --factor K` builds a read-timing lake instead: the real lake under DIR
(a run of this script with --keep) copied K times (see `scale`). Used for the 10M figures,
since ingesting 10M events here takes hours.

Target: every page within 2 s on a 10M-event lake. AUDITLAKE_HOME defaults to
<lake>/../home so a reused lake finds its keystore.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
TYPES = ["call.started", "call.completed", "bid.placed", "consent.granted", "user.login", "lead.sold"]


def _event(rng: random.Random, t: datetime, subjects: int) -> dict:
    sid = rng.randrange(subjects)
    et = rng.choice(TYPES)
    call = f"call-{rng.getrandbits(48):012x}"
    subject = {"id": f"subj-{sid:07d}", "phone": f"+1{2000000000 + sid * 7919 % 7999999999}",
               "email": f"person{sid}@example.com", "name": f"Person {sid}", "country": "US", "region": "CA",
               "timezone": "America/Los_Angeles"}
    data = {
        "call.started": {"call_id": call, "direction": "outbound", "purpose": "telemarketing",
                         "campaign_id": f"camp-{sid % 50}", "publisher_id": f"pub-{sid % 20}"},
        "call.completed": {"call_id": call, "duration_s": rng.randrange(600), "disposition": "answered"},
        "bid.placed": {"bid_id": f"bid-{rng.getrandbits(40)}", "call_id": call, "buyer_id": f"buyer-{sid % 30}",
                       "amount": f"{rng.randrange(100, 5000) / 100:.2f}", "currency": "USD"},
        "consent.granted": {"consent_id": f"c-{rng.getrandbits(40)}", "method": "web_form", "seller": "acme"},
        "user.login": {"method": "password"},
        "lead.sold": {"call_id": call, "buyer_id": f"buyer-{sid % 30}", "price": "12.50", "currency": "USD"},
    }[et]
    return {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "occurred_at": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
            "event_type": et, "source": "routing-engine", "tenant_id": f"tenant-{sid % 8}",
            "actor": {"type": "service", "id": f"svc-{sid % 5}", "ip": f"10.0.{sid % 250}.{sid % 200}"},
            "subject": subject if et != "user.login" else None, "lawful_basis": "consent", "data": data}


def write_landing(out: Path, events: int, days: int = 30, subjects: int = 200_000, seed: int = 1) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    per_day = events // days
    for d in range(days):
        n = per_day + (events - per_day * days if d == days - 1 else 0)
        base = start + timedelta(days=d)
        offsets = sorted(rng.randrange(86_400_000) for _ in range(n))
        with open(out / f"day-{d:03d}.jsonl", "wb") as f:
            for ms in offsets:
                f.write(orjson.dumps(_event(rng, base + timedelta(milliseconds=ms), subjects)) + b"\n")


def real_events(lake) -> int:
    """Events covered by the signed checkpoints (all of a real lake; the first copy of a
    scaled one)."""
    from auditlake.head import read_checkpoints

    return read_checkpoints(lake)[-1]["tree_size"]


def _timed(fn, *a, **kw):
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t


def build(base: Path, events: int) -> None:
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake

    lake = Lake.open(str(base / "lake"))
    landing = base / "landing"
    _, t = _timed(write_landing, landing, events)
    print(f"wrote {events:,} landing events in {t:.1f}s", flush=True)
    rep, t = _timed(ingest, lake, [str(landing)])
    print(f"ingested {rep.accepted:,} events in {t:.1f}s ({rep.accepted / t:,.0f}/s)", flush=True)
    try:
        from auditlake.cli import main as cli

        _, t = _timed(cli, ["--lake", lake.uri, "compliance"])
        print(f"compliance evaluated in {t:.1f}s", flush=True)
    except Exception as exc:  # noqa: BLE001
        print(f"(no compliance run: {exc})", flush=True)


def scale(src: Path, dst: Path, factor: int) -> None:
    """A read-timing copy of a real lake with `factor` times its events: every ledger row
    again with a shifted seq and a derived event id (the copies have no valid leaf, chain
    or proof: the signed checkpoints cover the real first copy only, which can be proved),
    findings likewise."""
    import duckdb
    from deltalake import write_deltalake

    from auditlake.catalog import delta_extension_path
    from auditlake.lake import tables

    con = duckdb.connect()
    con.execute(f"LOAD '{delta_extension_path()}'")
    s, d = src / "lake" / "tables", dst / "lake" / "tables"
    (dst / "lake").mkdir(parents=True, exist_ok=True)
    (dst / "lake" / "auditlake.json").write_bytes((src / "lake" / "auditlake.json").read_bytes())
    n = con.execute(f"SELECT count(*) FROM delta_scan('{s}/ledger')").fetchone()[0]
    uid = ("substr(h,1,8)||'-'||substr(h,9,4)||'-4'||substr(h,14,3)||'-8'||substr(h,18,3)||'-'||substr(h,21,12)")
    for k in range(factor):
        t = time.perf_counter()
        eid = "event_id" if k == 0 else f"(SELECT {uid} FROM (SELECT md5(event_id || '{k}') AS h))"
        rel = con.execute(
            f"SELECT * REPLACE (seq + {k * n} AS seq, {eid} AS event_id, "
            f"{'leaf' if k == 0 else chr(39) * 2} AS leaf) FROM delta_scan('{s}/ledger')")
        write_deltalake(str(d / "ledger"), rel.to_arrow_reader(200_000), mode="append", partition_by=["event_date"],
                        configuration=tables.TABLE_CONFIG)
        f = con.execute(f"SELECT * REPLACE ({eid} AS event_id) FROM delta_scan('{s}/findings')").to_arrow_table()
        write_deltalake(str(d / "findings"), f.cast(tables.FINDINGS), mode="append")
        print(f"copy {k + 1}/{factor} in {time.perf_counter() - t:.0f}s", flush=True)
    for name in ("quarantine", "ingest_log", "checkpoints", "tiles"):
        if (s / name).exists():
            tb = con.execute(f"SELECT * FROM delta_scan('{s}/{name}')").to_arrow_table()
            write_deltalake(str(d / name), tb.cast(tables.SCHEMAS[name]) if name in tables.SCHEMAS else tb, mode="append")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--lake", help="reuse the lake under this folder (<DIR>/lake)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--scale-from", help="instead of ingesting: copy the real lake under this folder --factor times")
    ap.add_argument("--factor", type=int, default=10)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    base = Path(args.lake) if args.lake else Path(tempfile.mkdtemp(prefix="explorer-bench-"))
    os.environ.setdefault("AUDITLAKE_HOME", str(base / "home"))
    if not (base / "lake" / "tables" / "ledger").exists():
        if args.scale_from:
            os.environ["AUDITLAKE_HOME"] = str(Path(args.scale_from) / "home")
            scale(Path(args.scale_from), base, args.factor)
        else:
            build(base, args.events)
    elif args.scale_from:
        os.environ["AUDITLAKE_HOME"] = str(Path(args.scale_from) / "home")
    from auditlake.catalog import Explorer, add_user, build_catalog
    from auditlake.lake.store import Lake

    lake = Lake.open(str(base / "lake"))
    doc, t = _timed(build_catalog, lake)
    n = doc["counts"]["events"]
    print(f"catalog written in {t:.1f}s: {doc['counts']}", flush=True)
    users = base / "users.toml"
    add_user("bench", "admin", "bench-password", users)
    os.environ.update(AUDITLAKE_LAKE=lake.uri, AUDITLAKE_EXPLORER_USERS=str(users))
    _, t_open = _timed(lambda: Explorer(lake).query("SELECT 1"))
    print(f"start: open the catalog read_only + load the delta extension: {t_open:.2f}s", flush=True)

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    ex = Explorer(lake)
    last_day = ex.query("SELECT max(event_date) AS d FROM events").column("d")[0].as_py()
    ev = ex.query("SELECT event_id, subject_id, tenant_id, event_date FROM events WHERE event_date = ? AND "
                  "subject_id IS NOT NULL AND seq < ? LIMIT 1", [last_day, real_events(lake)]).to_pylist()[0]

    at = AppTest.from_file(str(ROOT / "dashboards" / "app.py"), default_timeout=600)
    at.secrets["bench"] = True
    at.run()
    at.text_input(key="login_user").set_value("bench")
    at.text_input(key="login_password").set_value("bench-password")
    at.button(key="FormSubmitter:login-Sign in").click().run()

    def page(name, setup=None):
        def run():
            if at.radio(key="page").value != name:
                at.radio(key="page").set_value(name).run()
                assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
                assert at.header[0].value.startswith(name.split()[0]), [h.value for h in at.header]
            if setup:
                setup()
            at.run()
            assert not at.exception, [e.value for e in at.exception]
        return run

    def search_setup(**kw):
        def s():
            at.date_input(key="search_from").set_value(date.fromisoformat(last_day) - timedelta(days=6))
            at.date_input(key="search_to").set_value(date.fromisoformat(last_day))
            at.text_input(key="search_tenant").set_value(kw.get("tenant", ""))
            at.text_input(key="search_subject").set_value(kw.get("subject", ""))
        return s

    def event_setup():
        at.session_state["event_date_hint"] = ev["event_date"]
        at.text_input(key="event_id").set_value(ev["event_id"])

    def sql_setup():
        at.text_area(key="sql_text").set_value(
            "SELECT event_type, count(*) AS n FROM events WHERE event_date >= '2026-03-20' GROUP BY 1")
        at.button(key="sql_run").click()

    cases = [
        ("Overview", page("Overview")),
        ("Search (7 days, no filter)", page("Search", search_setup())),
        ("Search (7 days, tenant + subject)", page("Search", search_setup(tenant=ev["tenant_id"], subject=ev["subject_id"]))),
        ("Event (fields, neighbours, proof)", page("Event", event_setup)),
        ("Compliance", page("Compliance")),
        ("Exports (form)", page("Exports")),
        ("SQL (group by over 10 days)", page("SQL", sql_setup)),
        ("Admin", page("Admin")),
    ]
    results = {}
    from dashboards.views import overview

    firsts = []
    for _ in range(args.repeat):
        at.radio(key="page").set_value("Admin").run()
        st.cache_data.clear()
        overview._type_counts_store.clear()
        firsts.append(_timed(page("Overview"))[1])
    results["Overview (first render: every day counted)"] = {
        "cold_s": round(statistics.median(firsts), 3), "warm_s": None, "cold_max_s": round(max(firsts), 3)}
    print(f"{'Overview (first render: every day counted)':40s} cold {statistics.median(firsts):6.2f}s "
          f"(max {max(firsts):.2f})", flush=True)
    for name, fn in cases:
        colds, warms = [], []
        at.radio(key="page").set_value("Admin" if name != "Admin" else "Exports (form)".split()[0]).run()
        for _ in range(args.repeat):
            st.cache_data.clear()
            colds.append(_timed(fn)[1])
            warms.append(_timed(fn)[1])
        results[name] = {"cold_s": round(statistics.median(colds), 3), "warm_s": round(statistics.median(warms), 3),
                         "cold_max_s": round(max(colds), 3)}
        print(f"{name:40s} cold {results[name]['cold_s']:6.2f}s (max {results[name]['cold_max_s']:.2f})  "
              f"warm {results[name]['warm_s']:6.2f}s", flush=True)
    summary = {"events": n, "start_s": round(t_open, 2), "pages": results, "cpus": os.cpu_count(),
               "load_avg": os.getloadavg()}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if not args.keep and not args.lake:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
