"""The explorer under Streamlit's AppTest: every page for every role, sign-in, roles,
SQL injection in every filter, a hostile event rendered inert, no plain PII for an auditor.

The lake helper here (`build`) is shared with test_catalog.py and test_explorer_browser.py:
one small lake per process with generated landing data, a hostile event (`<script>` in its
data), findings of two evaluations (the older must never show), a verified checkpoint and a
catalog file, and the set of plain PII values of the landing data."""
from __future__ import annotations

import gzip
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

XSS_EVENT_ID = "00000000-0000-4000-8000-00000000c0de"
XSS_PAYLOAD = "<script>window.__xss=1;alert('xss')</script>"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
STALE_RULE = "STALE-RULE"
PASSWORDS = {"ann": ("auditor", "auditor-pass-1"), "pia": ("privacy_officer", "privacy-pass-1"),
             "adam": ("admin", "admin-pass-12")}

_BUILT: dict = {}


def pii_values(landing: Path) -> set[str]:
    """Every plain PII value (subject phone/email/name, actor ip) in the landing files."""
    out: set[str] = set()

    def obj(v):
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                return None
        return v

    def take(ev):
        if not isinstance(ev, dict):
            return
        a, s = obj(ev.get("actor")), obj(ev.get("subject"))
        if isinstance(a, dict) and isinstance(a.get("ip"), str) and len(a["ip"]) >= 7:
            out.add(a["ip"])
        if isinstance(s, dict):
            for k in ("phone", "email", "name"):
                if isinstance(s.get(k), str) and len(s[k]) >= 6:
                    out.add(s[k])

    for p in sorted(Path(landing).rglob("*")):
        if p.name.endswith(".parquet"):
            for r in pq.read_table(p).to_pylist():
                take(r)
        elif p.name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if p.name.endswith(".gz") else open
            with opener(p, "rb") as f:
                for line in f:
                    try:
                        take(json.loads(line))
                    except ValueError:
                        pass
    return out


def _xss_event(occurred_at: str) -> dict:
    return {
        "event_id": XSS_EVENT_ID,
        "occurred_at": occurred_at,
        "event_type": "user.login",
        "source": "admin-console",
        "tenant_id": "tenant-xss",
        "actor": {"type": "user", "id": "mallory", "ip": "203.0.113.77"},
        "subject": {"id": "subj-xss", "phone": "+13125550199", "email": "victim.xss@example.com",
                    "name": "Victim Xssperson", "country": "US", "region": "IL", "timezone": "America/Chicago"},
        "lawful_basis": "contract",
        "data": {"method": XSS_PAYLOAD, "note": XSS_IMG},
    }


def _findings(lake, ground_truth: dict) -> None:
    """Two evaluations: an old one (a rule that must not show) and the latest, from the
    generator's ground truth."""
    import pyarrow.compute as pc

    from auditlake.lake import tables

    wanted = {f["event_id"]: f["rule_id"] for f in ground_truth["findings"]}
    led = lake.delta("ledger").to_pyarrow_dataset().to_table(
        columns=["event_id", "tenant_id", "occurred_at"], filter=pc.field("event_id").isin(list(wanted)))
    info = {r["event_id"]: r for r in led.to_pylist()}
    now = datetime.now(timezone.utc)
    as_of = datetime.fromisoformat(ground_truth["as_of"].replace("Z", "+00:00"))
    some = next(iter(info.values()))

    def rows(eval_id, when, items):
        return [{"evaluation_id": eval_id, "as_of": as_of, "evaluated_at": when, "code_version": "test",
                 "tree_size": 0, "rule_id": rule, "event_id": eid, "tenant_id": info[eid]["tenant_id"],
                 "occurred_at": info[eid]["occurred_at"], "severity": "high", "detail": f"{rule} planted"}
                for rule, eid in items]

    old = rows("eval-old", now - timedelta(days=1), [(STALE_RULE, some["event_id"])])
    new = rows("eval-new", now, [(r, e) for e, r in wanted.items() if e in info])
    v = tables.version(lake, "findings")
    v = tables.append(lake, "findings", pa.Table.from_pylist(old, schema=tables.FINDINGS), v)
    tables.append(lake, "findings", pa.Table.from_pylist(new, schema=tables.FINDINGS), v)


def build(root: Path, events: int = 3000) -> dict:
    """Build (once per process) and return {lake, home, landing, pii, users, ...}."""
    if _BUILT:
        return _BUILT
    from auditlake.catalog import add_user, build_catalog
    from auditlake.generate import generate
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake
    from auditlake.verify import verify

    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    old_home = os.environ.get("AUDITLAKE_HOME")
    os.environ["AUDITLAKE_HOME"] = str(home)
    try:
        gen = root / "gen"
        summary = generate(gen, events=events, seed=7, days=20)
        truth = json.loads((gen / "ground_truth.json").read_text())
        xss_dir = root / "xss"
        xss_dir.mkdir(exist_ok=True)
        last_day = datetime.fromisoformat(truth["as_of"].replace("Z", "+00:00")) - timedelta(hours=1)
        (xss_dir / "hostile.jsonl").write_text(json.dumps(_xss_event(last_day.strftime("%Y-%m-%dT%H:%M:%SZ"))) + "\n")
        lake = Lake.open(str(root / "lake"))
        ingest(lake, [str(gen / "landing")])
        ingest(lake, [str(xss_dir)])
        _findings(lake, truth)
        report = verify(lake)
        assert report.ok, report.to_dict()
        users = root / "explorer_users.toml"
        for name, (role, pw) in PASSWORDS.items():
            add_user(name, role, pw, users)
        catalog = build_catalog(lake)
    finally:
        if old_home is None:
            os.environ.pop("AUDITLAKE_HOME", None)
        else:
            os.environ["AUDITLAKE_HOME"] = old_home
    pii = pii_values(gen / "landing") | pii_values(xss_dir)
    _BUILT.update(lake=lake, home=home, landing=gen / "landing", truth=truth, summary=summary, pii=pii,
                  users=users, catalog=catalog, root=root)
    return _BUILT


def sample_event(lake) -> dict:
    """A generated event with a subject and a call id (for searches)."""
    import duckdb

    from auditlake.catalog import delta_extension_path

    con = duckdb.connect()
    con.execute(f"LOAD '{delta_extension_path()}'")
    row = con.execute(
        "SELECT event_id, tenant_id, subject_id, actor_id, json_extract_string(data, '$.call_id') AS call_id, "
        "event_date, event_type FROM delta_scan(?) WHERE event_type = 'call.started' AND subject_id IS NOT NULL "
        "ORDER BY seq LIMIT 1", [lake.table_uri("ledger")]).fetchone()
    con.close()
    keys = ("event_id", "tenant_id", "subject_id", "actor_id", "call_id", "event_date", "event_type")
    return dict(zip(keys, row))


def uuid4() -> str:
    return str(uuid.uuid4())
