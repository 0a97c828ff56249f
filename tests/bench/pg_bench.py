"""The PostgreSQL design audit logs are usually built on, as the bench's point of comparison.

    .venv/bin/python tests/bench/pg_bench.py --landing DIR [--repeat 3]

* a table partitioned by day (RANGE on occurred_at, plus a DEFAULT partition) with a
  primary key (seq, occurred_at);
* an append-only trigger (UPDATE, DELETE and TRUNCATE raise);
* a hash-chain trigger: BEFORE INSERT FOR EACH ROW, PL/pgSQL, sets
  seq = previous seq + 1 and hash = pgcrypto hmac(prev_hash || payload, key, 'sha256'),
  payload being the row's fields joined by '|' (jsonb text is normalised). The first row
  of a transaction takes a transaction advisory lock (writers are serialised, the chain
  cannot fork) and reads the chain's last row (ORDER BY seq DESC LIMIT 1); later rows
  take the previous seq/hash from a transaction-local setting instead of re-reading it
  (keeping the head in a one-row table updated per row is O(n^2) inside one COPY: every
  update walks the chain of dead versions the same transaction left, 500 rows/s at 20K).
  An AFTER INSERT statement trigger publishes the head to a one-row table;
* loaded with COPY (psql \\copy, CSV) in one transaction;
* verified in one SQL statement: every row's hash recomputed from the stored hash of the
  row before it (lag over seq), seq gaps counted, the last hash compared with the head.

The COPY input is the landing events that meet the contract (auditlake's own validator,
first occurrence of an event_id), so both sides store the same events; converting the
landing files to CSV is timed separately and not counted as PostgreSQL ingest time.

The cluster is private and temporary: `initdb` into a temp folder (as the `postgres` user
when run as root), `pg_ctl start` on 127.0.0.1 and a free port, torn down at the end.
PostgreSQL itself is installed with apt-get (Debian package `postgresql`) when missing.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import orjson

PG_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'512MB'",
    "work_mem": "'64MB'",
    "maintenance_work_mem": "'256MB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'30min'",
    "fsync": "on",
    "synchronous_commit": "on",
    "logging_collector": "off",
}
COLUMNS = ("event_id", "event_type", "occurred_at", "source", "tenant_id", "actor", "subject", "lawful_basis", "data")
PAYLOAD = ("concat_ws('|', {p}seq, {p}event_id, {p}event_type, {p}occurred_at, {p}source, {p}tenant_id, "
           "{p}actor, {p}subject, {p}lawful_basis, {p}data)")
ZERO = "'\\x" + "00" * 32 + "'::bytea"


def find_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return str(Path(found[-1]).parent)
    pg_ctl = shutil.which("pg_ctl")
    return str(Path(pg_ctl).resolve().parent) if pg_ctl else None


def ensure_postgres(log=print) -> str:
    """The PostgreSQL bin folder, installing the Debian package first if needed."""
    bindir = find_bindir()
    if bindir and Path(bindir, "initdb").exists():
        return bindir
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is not installed and installing it needs root (apt-get install postgresql)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("installing PostgreSQL (apt-get install -y postgresql) ...")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, capture_output=True, check=True)
    bindir = find_bindir()
    if not bindir:
        raise RuntimeError("apt-get installed postgresql but no pg_ctl was found under /usr/lib/postgresql")
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A private PostgreSQL cluster in a temp folder; use as a context manager."""

    def __init__(self, bindir: str, log=print):
        self.bindir = bindir
        self.log = log
        self.dir: Path | None = None
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        self.db = "auditbench"

    def _run_pg(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        cmd = ([*(["runuser", "-u", "postgres", "--"] if self.as_postgres else []), *args])
        return subprocess.run(cmd, capture_output=True, text=True, **kw)

    def __enter__(self) -> "PgCluster":
        self.dir = Path(tempfile.mkdtemp(prefix="auditlake-pgbench-"))
        data = self.dir / "data"
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        r = self._run_pg([f"{self.bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust",
                          "--encoding=UTF8", "--locale=C", "--no-sync"])
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-500:]}")
        conf = dict(PG_SETTINGS, port=str(self.port), unix_socket_directories=f"'{self.dir}'")
        with open(data / "postgresql.conf", "a") as f:
            f.write("\n# auditlake bench\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        r = self._run_pg([f"{self.bindir}/pg_ctl", "-D", str(data), "-l", str(self.dir / "server.log"), "-w",
                          "-t", "120", "start"])
        if r.returncode:
            log = (self.dir / "server.log").read_text()[-800:] if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {log}")
        self.psql(f"CREATE DATABASE {self.db}", db="postgres")
        self.psql(f"ALTER DATABASE {self.db} SET timezone = 'UTC'; ALTER DATABASE {self.db} SET datestyle = 'ISO, YMD'",
                  db="postgres")
        self.version = self.psql("SHOW server_version", tuples=True).strip()
        return self

    def __exit__(self, *exc) -> None:
        if self.dir is None:
            return
        self._run_pg([f"{self.bindir}/pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def psql(self, sql: str, db: str | None = None, tuples: bool = False) -> str:
        cmd = [f"{self.bindir}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
               "-d", db or self.db, "-v", "ON_ERROR_STOP=1"]
        if tuples:
            cmd += ["-A", "-t"]
        r = subprocess.run(cmd + ["-c", sql], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"psql failed: {r.stderr.strip()[-600:]}\n  SQL: {sql[:300]}")
        return r.stdout

    def size_mb(self) -> float:
        return int(self.psql(f"SELECT pg_database_size('{self.db}')", tuples=True)) / 2**20


# ----------------------------------------------------------------------------- COPY input
def prepare_copy(landing: str, out_csv: Path) -> dict:
    """The landing events that meet the contract as a CSV for COPY; returns counts and the
    UTC date range."""
    from auditlake.contract import MAX_LINE_BYTES, validate
    from auditlake.lake.store import Lake
    from auditlake import landing as landing_mod

    t0 = time.perf_counter()
    files = landing_mod.find(Lake.open(str(Path(out_csv).parent / "_unused_lake")), [landing])
    seen: set[str] = set()
    rows = skipped = 0
    lo = hi = None
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        for lf in files:
            for _, raw in lf.records():
                if isinstance(raw, landing_mod.Unreadable):
                    continue
                if isinstance(raw, dict):
                    ev = raw
                else:
                    if len(raw) > MAX_LINE_BYTES or not raw.strip():
                        continue
                    try:
                        ev = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        continue
                occurred, reason = validate(ev)
                if reason is not None or ev["event_id"] in seen:
                    continue
                seen.add(ev["event_id"])
                nested = [orjson.dumps(ev[k]).decode() if ev.get(k) is not None else None for k in ("actor", "subject", "data")]
                if any(x is not None and "\\u0000" in x for x in nested):
                    skipped += 1  # jsonb cannot hold NUL characters
                    continue
                d = occurred.date()
                lo = d if lo is None or d < lo else lo
                hi = d if hi is None or d > hi else hi
                w.writerow([ev["event_id"], ev["event_type"], ev["occurred_at"], ev["source"], ev["tenant_id"],
                            nested[0], nested[1], ev.get("lawful_basis"), nested[2]])
                rows += 1
    return {"rows": rows, "skipped_nul": skipped, "first_day": lo.isoformat() if lo else None,
            "last_day": hi.isoformat() if hi else None, "seconds": time.perf_counter() - t0,
            "bytes": out_csv.stat().st_size}


# ----------------------------------------------------------------------------- schema
def schema_sql(first_day: str, last_day: str) -> str:
    d0, d1 = date.fromisoformat(first_day), date.fromisoformat(last_day)
    parts = []
    d = d0
    while d <= d1:
        n = d + timedelta(days=1)
        parts.append(f"CREATE TABLE audit_events_{d:%Y%m%d} PARTITION OF audit_events "
                     f"FOR VALUES FROM ('{d}T00:00:00Z') TO ('{n}T00:00:00Z');")
        d = n
    payload = PAYLOAD.format(p="NEW.")
    return f"""
DROP TABLE IF EXISTS audit_events CASCADE;
DROP TABLE IF EXISTS chain_head;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE chain_head (id int PRIMARY KEY, seq bigint NOT NULL, hash bytea NOT NULL, k bytea NOT NULL);
INSERT INTO chain_head VALUES (1, -1, {ZERO}, gen_random_bytes(32));
CREATE TABLE audit_events (
  seq bigint NOT NULL,
  event_id uuid NOT NULL,
  event_type text NOT NULL,
  occurred_at timestamptz NOT NULL,
  source text NOT NULL,
  tenant_id text NOT NULL,
  actor jsonb NOT NULL,
  subject jsonb,
  lawful_basis text,
  data jsonb NOT NULL,
  hash bytea NOT NULL,
  PRIMARY KEY (seq, occurred_at)
) PARTITION BY RANGE (occurred_at);
{chr(10).join(parts)}
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE OR REPLACE FUNCTION audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  head text := current_setting('audit.head', true);
  prev bytea; key bytea; s bigint;
BEGIN
  IF coalesce(head, '') = '' THEN
    -- First row of this transaction: serialise writers, read the chain's last row.
    PERFORM pg_advisory_xact_lock(7242);
    SELECT e.seq, e.hash INTO s, prev FROM audit_events e ORDER BY e.seq DESC LIMIT 1;
    IF NOT FOUND THEN s := -1; prev := {ZERO}; END IF;
    SELECT k INTO key FROM chain_head WHERE id = 1;
    PERFORM set_config('audit.key', encode(key, 'hex'), true);
  ELSE
    s := split_part(head, ':', 1)::bigint;
    prev := decode(split_part(head, ':', 2), 'hex');
    key := decode(current_setting('audit.key'), 'hex');
  END IF;
  NEW.seq := s + 1;
  NEW.hash := hmac(prev || convert_to({payload}, 'UTF8'), key, 'sha256');
  PERFORM set_config('audit.head', NEW.seq || ':' || encode(NEW.hash, 'hex'), true);
  RETURN NEW;
END $$;
CREATE TRIGGER audit_chain BEFORE INSERT ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_chain();

-- Publish the head once per statement (what an auditor pins, like a checkpoint).
CREATE OR REPLACE FUNCTION audit_publish_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE head text := current_setting('audit.head', true);
BEGIN
  IF coalesce(head, '') <> '' THEN
    UPDATE chain_head SET seq = split_part(head, ':', 1)::bigint, hash = decode(split_part(head, ':', 2), 'hex')
      WHERE id = 1;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER audit_publish_head AFTER INSERT ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_publish_head();
"""


VERIFY_SQL = f"""
WITH c AS (
  SELECT seq, hash, lag(hash) OVER w AS prev, lag(seq) OVER w AS prev_seq,
         convert_to({PAYLOAD.format(p='')}, 'UTF8') AS payload
  FROM audit_events WINDOW w AS (ORDER BY seq)
), k AS (SELECT k, hash AS head, seq AS head_seq FROM chain_head WHERE id = 1)
SELECT json_build_object(
  'rows', count(*),
  'bad_hash', count(*) FILTER (WHERE c.hash IS DISTINCT FROM hmac(coalesce(c.prev, {ZERO}) || c.payload, k.k, 'sha256')),
  'seq_gaps', count(*) FILTER (WHERE c.prev_seq IS NOT NULL AND c.seq <> c.prev_seq + 1),
  'first_seq', min(c.seq),
  'head_ok', bool_or(c.seq = k.head_seq AND c.hash = k.head))
FROM c CROSS JOIN k
"""


def load(cluster: PgCluster, csv_path: Path, meta: dict) -> dict:
    """(Re)create the schema (not timed), then COPY the CSV (timed)."""
    cluster.psql(schema_sql(meta["first_day"], meta["last_day"]))
    cluster.psql("CHECKPOINT")
    t0 = time.perf_counter()
    cluster.psql(f"\\copy audit_events ({', '.join(COLUMNS)}) FROM '{csv_path}' WITH (FORMAT csv)")
    took = time.perf_counter() - t0
    n = int(cluster.psql("SELECT count(*) FROM audit_events", tuples=True))
    return {"seconds": took, "rows": n}


def verify(cluster: PgCluster) -> dict:
    t0 = time.perf_counter()
    out = cluster.psql(VERIFY_SQL, tuples=True)
    took = time.perf_counter() - t0
    res = json.loads(out)
    res["ok"] = res["bad_hash"] == 0 and res["seq_gaps"] == 0 and res["first_seq"] in (0, None) and bool(res["head_ok"])
    return {"seconds": took, **res}


def run(landing: str, work: Path, repeat: int, log=print) -> dict:
    """Prepare, then `repeat` times load + verify; the cluster is torn down at the end."""
    bindir = ensure_postgres(log)
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / "pg_copy.csv"
    meta = prepare_copy(landing, csv_path)
    log(f"  postgres: COPY input {meta['rows']:,} rows ({meta['bytes'] / 2**20:.0f} MB) in {meta['seconds']:.1f}s")
    loads, verifies = [], []
    try:
        with PgCluster(bindir, log) as pg:
            for i in range(repeat):
                ld = load(pg, csv_path, meta)
                loads.append(ld)
                log(f"  postgres: COPY with triggers {ld['rows']:,} rows in {ld['seconds']:.2f}s")
                vf = verify(pg)
                verifies.append(vf)
                log(f"  postgres: SQL chain verify in {vf['seconds']:.2f}s (ok={vf['ok']})")
                if not vf["ok"]:
                    raise RuntimeError(f"the PostgreSQL chain does not verify: {vf}")
            size = pg.size_mb()
            version = pg.version
    finally:
        csv_path.unlink(missing_ok=True)
    return {
        "server_version": version,
        "settings": {k: v.strip("'") for k, v in PG_SETTINGS.items() if k != "listen_addresses"},
        "prepare": meta,
        "ingest_s": [x["seconds"] for x in loads],
        "verify_s": [x["seconds"] for x in verifies],
        "ingest_median_s": statistics.median(x["seconds"] for x in loads),
        "verify_median_s": statistics.median(x["seconds"] for x in verifies),
        "rows": loads[-1]["rows"],
        "db_size_mb": round(size, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--landing", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", help="scratch folder (default: a temp folder)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pgbench-"))
    print(json.dumps(run(args.landing, work, args.repeat), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
