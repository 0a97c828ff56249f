"""The DuckDB catalog (`auditlake catalog`): views over the live Delta tables, masked PII,
partition pruning on time, the plain duckdb CLI, S3 lakes, read-only access that never
blocks a writer; and the explorer's users file and SQL guard."""
from __future__ import annotations

import gc
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from test_explorer_apptest import STALE_RULE, XSS_EVENT_ID, build, find_leaks, sample_event

from auditlake import catalog
from auditlake.lake.store import Lake

SEALED = {"actor_ip_sealed", "subject_pii_sealed", "leaf"}


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    return build(tmp_path_factory.mktemp("explorer"))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    from events import event, write_jsonl

    from auditlake.ingest import ingest

    lake = Lake.open(str(tmp_path / "lake"))
    evs = [event(n=i) for i in range(6)]
    ingest(lake, [str(write_jsonl(tmp_path / "a" / "a.jsonl", evs + ["{not json +13125550000"]))])
    return {"lake": lake, "events": evs, "tmp": tmp_path}


def duckdb_cli() -> str:
    exe = shutil.which("duckdb") or str(Path(sys.executable).with_name("duckdb"))
    if not os.path.exists(exe):
        pytest.skip("the duckdb command line is not installed (pip install duckdb-cli)")
    return exe


def connect(db) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(db), read_only=True)
    if not con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'delta'").fetchone()[0]:
        con.execute(f"LOAD '{catalog.delta_extension_path()}'")
    return con


def ledger_rows(lake) -> int:
    return lake.delta("ledger").to_pyarrow_dataset().count_rows()


# ----------------------------------------------------------------------------- views

def test_catalog_views_are_masked_and_complete(demo):
    lake, db = demo["lake"], demo["catalog"]["db"]
    assert db == str(Path(lake.uri) / "catalog.duckdb") and demo["catalog"]["mode"] == "live"
    con = connect(db)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"events", "findings", "quarantine", "checkpoints"} <= views
    for view in ("events", "findings", "quarantine", "checkpoints", "ingest_log"):
        cols = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
        assert not cols & SEALED, view
    cols = [r[0] for r in con.execute("DESCRIBE events").fetchall()]
    for c in ("event_id", "occurred_at", "event_type", "tenant_id", "seq", "hash", "pii", "subject_phone", "actor_ip"):
        assert c in cols
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == ledger_rows(lake)
    # PII columns are masks, never values
    vals = con.execute("SELECT DISTINCT subject_phone, subject_email, subject_name, actor_ip FROM events").fetchall()
    assert {v for row in vals for v in row} <= {"***", None}
    assert con.execute("SELECT pii FROM events WHERE event_id = ?", [XSS_EVENT_ID]).fetchone()[0] == "masked"
    for fcols in (["rule_id", "event_id", "tenant_id", "occurred_at", "severity", "detail"],):
        got = [r[0] for r in con.execute("DESCRIBE findings").fetchall()]
        assert got[: len(fcols)] == fcols
    q = [r[0] for r in con.execute("DESCRIBE quarantine").fetchall()]
    assert q[:4] == ["source_file", "line", "reason", "raw"]
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == demo["summary"]["quarantined"]
    n_cp = lake.delta("checkpoints").to_pyarrow_dataset().count_rows()
    assert con.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == n_cp
    texts = [r[0] for v in ("events", "quarantine", "findings", "checkpoints")
             for r in con.execute(f"SELECT CAST(x AS VARCHAR) FROM {v} AS x").fetchall()]
    assert len(texts) > ledger_rows(lake)
    leaked = find_leaks(demo["pii"], texts)
    assert not leaked, leaked[:5]
    con.close()


def test_findings_view_shows_only_the_latest_evaluation(demo):
    con = connect(demo["catalog"]["db"])
    rows = con.execute("SELECT rule_id, event_id, evaluation_id FROM findings").fetchall()
    assert {r[2] for r in rows} == {"eval-new"}
    assert STALE_RULE not in {r[0] for r in rows}
    assert sorted((r[0], r[1]) for r in rows) == sorted((f["rule_id"], f["event_id"]) for f in demo["truth"]["findings"])
    con.close()


def scanned_files(con, sql: str, params=()) -> tuple[int, int]:
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN ANALYZE " + sql, list(params)).fetchall())
    m = re.findall(r"Scanning Files: (\d+)/(\d+)", plan)
    assert m, plan
    return int(m[0][0]), int(m[0][1])


def test_time_filters_prune_partitions(demo):
    con = connect(demo["catalog"]["db"])
    ev = sample_event(demo["lake"])
    day = ev["event_date"]
    n_days = con.execute("SELECT count(DISTINCT event_date) FROM events").fetchone()[0]
    assert n_days > 5
    read, total = scanned_files(con, "SELECT count(*) FROM events WHERE event_date = ?", [day])
    assert read < total and read <= 2
    lo, hi = f"{day}T00:00:00Z", f"{day}T23:59:59Z"
    read, total = scanned_files(con, "SELECT count(*) FROM events_between(?, ?)", [lo, hi])
    assert read < total
    n = con.execute("SELECT count(*) FROM events_between(?, ?)", [lo, hi]).fetchone()[0]
    m = con.execute("SELECT count(*) FROM events WHERE occurred_at >= CAST(? AS TIMESTAMPTZ) AND "
                    "occurred_at < CAST(? AS TIMESTAMPTZ)", [lo, hi]).fetchone()[0]
    assert n == m > 0
    con.close()


def test_plain_duckdb_cli_opens_the_catalog(demo, tmp_path):
    """`auditlake catalog` with an empty DuckDB home installs the packaged delta extension
    there; the duckdb CLI then autoloads it and reads every view."""
    exe = duckdb_cli()
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "AUDITLAKE_HOME": str(demo["home"])}
    db = tmp_path / "cat.duckdb"
    out = subprocess.run([sys.executable, "-m", "auditlake.cli", "--lake", demo["lake"].uri, "catalog", "--db", str(db),
                          "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["db"] == str(db) and doc["counts"]["events"] == ledger_rows(demo["lake"])
    assert list(home.glob(".duckdb/extensions/*/*/delta.duckdb_extension"))
    sql = ("SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM findings) AS findings, "
           "(SELECT count(*) FROM quarantine) AS quarantine, (SELECT count(*) FROM checkpoints) AS checkpoints")
    res = subprocess.run([exe, "-readonly", "-json", str(db), "-c", sql,
                          "-c", "SELECT subject_pii_sealed FROM events LIMIT 1"],
                         env=env, capture_output=True, text=True, timeout=120)
    got = json.loads(res.stdout.strip().splitlines()[0] if res.stdout.strip().startswith("[{") and "\n" not in res.stdout.strip() else res.stdout[: res.stdout.index("]") + 1])[0]
    assert got["events"] == doc["counts"]["events"] and got["findings"] == len(demo["truth"]["findings"])
    assert got["quarantine"] == doc["counts"]["quarantine"] and got["checkpoints"] >= 1
    assert 'Referenced column "subject_pii_sealed" not found' in res.stderr  # sealed columns are not in the views


def test_views_are_live_and_readers_never_block_writers(tiny):
    from events import event, write_jsonl

    from auditlake.ingest import ingest

    lake = tiny["lake"]
    doc = catalog.build_catalog(lake)
    reader = connect(doc["db"])  # a read-only reader holds the file open
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 6
    # a table that does not exist yet (no compliance run) is an empty view with its columns
    assert reader.execute("SELECT count(*) FROM findings").fetchone()[0] == 0
    cols = [r[0] for r in reader.execute("DESCRIBE findings").fetchall()]
    assert cols[:6] == ["rule_id", "event_id", "tenant_id", "occurred_at", "severity", "detail"]
    ingest(lake, [str(write_jsonl(tiny["tmp"] / "b" / "b.jsonl", [event(n=i) for i in range(6, 10)]))])
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 10  # live, no rebuild
    doc2 = catalog.build_catalog(lake)  # rebuilding never waits for the reader
    assert doc2["counts"]["events"] == 10
    assert reader.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 2
    reader.close()
    raw = connect(doc2["db"]).execute("SELECT raw FROM quarantine").fetchone()[0]
    assert "+13125550000" not in raw and "***" in raw


def test_explorer_connection_is_confined(demo):
    ex = catalog.Explorer(demo["lake"])
    n = ex.query("SELECT count(*) AS n FROM events").column("n")[0].as_py()
    assert n == ledger_rows(demo["lake"])
    # DDL is kept out by the console's guard (test_analyst_sql_guard_refuses): the pages run fixed SQL.
    for sql in ("SELECT * FROM read_text('/etc/passwd')",
                "COPY (SELECT 1) TO '/tmp/x.csv'", "SET enable_external_access = true"):
        with pytest.raises(Exception):
            ex.query(sql)
    assert ex.query("SELECT count(*) AS n FROM events").column("n")[0].as_py() == n
    # Bounded in memory, spilling outside the lake.
    settings = {r["name"]: r["value"] for r in ex.query(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory')").to_pylist()}
    assert settings["memory_limit"] == "1.8 GiB", settings  # 2GB
    assert settings["temp_directory"] and not settings["temp_directory"].startswith(demo["lake"].uri)


def test_explorer_queries_go_on_while_an_erasure_is_taken_in(tiny):
    """Sessions share one explorer: taking in a new erased set never leaves them a closed
    connection or a missing view."""
    import threading

    from auditlake.privacy import erase

    catalog.build_catalog(tiny["lake"])  # a catalog file there is not what the explorer reads
    ex = catalog.Explorer(tiny["lake"])
    errors, done = [], threading.Event()

    def session():
        while not done.is_set():
            try:
                ex.query("SELECT count(*) FROM events WHERE subject_name = '[erased]'")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=session) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for ev in tiny["events"][:3]:
            erase(tiny["lake"], ev["subject"]["id"])
            ex.versions()
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []
    got = ex.query("SELECT count(DISTINCT subject_id) AS n FROM events WHERE subject_name = '[erased]'")
    assert got.column("n")[0].as_py() == len({ev["subject"]["id"] for ev in tiny["events"][:3]})
    ex.close()


def test_console_runs_each_query_in_a_worker_of_bounded_memory(tiny, monkeypatch):
    """The SQL console runs queries in worker processes whose data segment is limited: a
    value too large fails there in one line (the explorer's memory stays as it was), a row
    past the size cap is refused, a worker killed or stopped mid-query is said and replaced,
    and answers are the explorer's own."""
    import resource

    from auditlake import console

    monkeypatch.setattr(console, "GRACE_S", 1.0)
    con = console.Console(tiny["lake"])
    try:
        table, capped = con.run("SELECT count(*) AS n FROM events")
        assert table.column("n")[0].as_py() == len(tiny["events"]) and not capped
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(catalog.AnalystSQLError, match="Out of Memory"):
            con.run("SELECT repeat('a', 4000000000) AS x")
        with pytest.raises(catalog.AnalystSQLError, match="a row of the result is larger than the console's 1 MB"):
            con.run("SELECT repeat('a', 2000000) AS x", max_bytes=1 << 20)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 << 10  # KiB: under 50 MB more
        endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
        worker = con._idle[-1]
        os.kill(worker.pid, signal.SIGSTOP)  # stops answering: killed at the deadline
        with pytest.raises(catalog.AnalystSQLError, match="did not finish in time"):
            con.run(endless, timeout_s=0.5)
        assert worker.poll() is not None
        assert con.run("SELECT count(*) AS n FROM events")[0].num_rows == 1  # a fresh worker
        worker = con._idle[-1]
        threading.Timer(0.5, os.kill, (worker.pid, signal.SIGKILL)).start()
        with pytest.raises(catalog.AnalystSQLError, match="worker stopped"):
            con.run(endless, timeout_s=30)
        with pytest.raises(catalog.AnalystSQLError, match="syntax error"):
            con.run("SELEC 1")
        assert con.run("SELECT event_id FROM events ORDER BY seq")[0].column("event_id").to_pylist() == [
            ev["event_id"] for ev in tiny["events"]]
        # Masking writes a nested value as JSON text (about 6 bytes per false): the cap holds after it.
        table, capped = con.run("SELECT list_transform(generate_series(1, 100000), x -> false) AS x FROM events",
                                max_bytes=1 << 20)
        assert capped and table.num_rows == 1 and table.nbytes <= 1 << 20
        folders = [w.tmp for w in con._idle]
        assert folders and all(os.path.isdir(f) for f in folders)
    finally:
        con.close()
    assert not con._idle and not any(os.path.exists(f) for f in folders)  # spill folders go with their workers
    # A console dropped without close() ends its idle workers too.
    dropped = console.Console(tiny["lake"])
    dropped.run("SELECT 1 AS one")
    worker = dropped._idle[-1]
    del dropped
    gc.collect()
    assert worker.poll() is not None and not os.path.exists(worker.tmp)


def test_console_results_are_bounded_in_size_and_pii_shaped_text_is_masked(tiny, monkeypatch):
    monkeypatch.setattr(catalog, "ANALYST_BATCH", 2)  # rows per fetch: the tiny lake has 6
    ex = catalog.Explorer(tiny["lake"])
    total = ex.query("SELECT count(*) AS n FROM events").column("n")[0].as_py()
    table, capped = ex.analyst_query("SELECT repeat(data, 4000) AS big FROM events", max_bytes=1 << 20)
    assert capped and 0 < table.num_rows < total
    table, capped = ex.analyst_query(
        "SELECT event_id, data || ' bob@example.com' AS note, [data || ' +14155550100'] AS notes, "
        "encode('10.1.2.3') AS ip_bytes, '{\"cell\":\"Ann\"}' AS member, tenant_id FROM events")
    assert not capped and table.num_rows == total
    text = str(table.to_pylist())
    for value in ("bob@example.com", "+14155550100", "10.1.2.3", "Ann"):
        assert value not in text
    assert text.count("***") == 4 * total
    assert set(table.column("event_id").to_pylist()) == {ev["event_id"] for ev in tiny["events"]}  # ids are kept
    ex.close()


def test_explorer_removes_its_spill_folder(tiny):
    ex = catalog.Explorer(tiny["lake"])
    spill = Path(ex._spill.name)
    assert spill.is_dir()
    ex.close()
    assert not spill.exists()


def test_erased_subjects_pii_reads_erased_in_the_catalog_and_the_explorer(tiny):
    from auditlake.privacy import erase
    from auditlake.verify import verify

    lake, evs = tiny["lake"], tiny["events"]
    first, second = evs[0]["subject"]["id"], evs[1]["subject"]["id"]
    q = ("SELECT DISTINCT subject_phone, subject_email, subject_name FROM events "
         "WHERE subject_id = ? AND pii_fields <> ''")

    def shown(ex, sid):
        return {v for row in ex.query(q, [sid]).to_pylist() for v in row.values()}

    live = catalog.Explorer(lake)  # in-memory views
    assert shown(live, first) == {"***"}
    erase(lake, first)
    live.versions()  # the ledger moved (the erasure is logged): the erased set is reread
    assert shown(live, first) == {"[erased]"} and shown(live, second) == {"***"}
    # The catalog file carries the erased set as of its build, for the plain duckdb CLI.
    doc = catalog.build_catalog(lake)
    con = connect(doc["db"])
    assert {v for row in con.execute(q, [first]).fetchall() for v in row} == {"[erased]"}
    assert {v for row in con.execute(q, [second]).fetchall() for v in row} == {"***"}
    con.close()
    assert erase(lake, second)["catalog_note"] is None  # and the catalog file shows it at once
    live.versions()
    assert shown(live, first) == shown(live, second) == {"[erased]"} and shown(live, evs[2]["subject"]["id"]) == {"***"}
    con = connect(doc["db"])
    assert {v for row in con.execute(q, [second]).fetchall() for v in row} == {"[erased]"}
    con.close()
    # A reader in another process (an analyst's duckdb -readonly) never blocks it, and verify
    # finds the erased set the keystore's; a writer holding the file: said, not an error.
    for read_only, subject in ((True, evs[2]["subject"]["id"]), (False, evs[3]["subject"]["id"])):
        held = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(doc['db'])!r}, "
                                 f"read_only={read_only}); print('open', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert held.stdout.readline().strip() == "open"
            note = erase(lake, subject)["catalog_note"]
        finally:
            held.kill()
            held.wait()
        if read_only:
            assert note is None and verify(lake, update_trust=False).ok
    assert "run `auditlake catalog`" in note


# ----------------------------------------------------------------------------- S3

@pytest.mark.s3
def test_s3_lake_catalog_is_a_local_snapshot_and_explorer_reads_live(s3_lake_uri, tmp_path, monkeypatch):
    from events import event, write_jsonl

    from auditlake.ingest import ingest

    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lake = Lake.open(s3_lake_uri)
    evs = [event(n=i) for i in range(5)]
    ingest(lake, [str(write_jsonl(tmp_path / "a" / "a.jsonl", evs))])
    db = tmp_path / "s3.duckdb"
    doc = catalog.build_catalog(lake, db)
    assert doc["mode"] == "snapshot" and doc["counts"]["events"] == 5 and doc["counts"]["checkpoints"] == 1
    con = connect(db)
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 5
    assert not {r[0] for r in con.execute("DESCRIBE events").fetchall()} & SEALED
    con.close()
    # the snapshot files hold no sealed column
    import pyarrow.parquet as pq

    for f in Path(str(db) + ".snapshot").rglob("*.parquet"):
        assert not set(pq.read_schema(f).names) & SEALED
    # the explorer reads the S3 tables live (Arrow datasets), and sees new batches
    ex = catalog.Explorer(lake)
    assert ex.query("SELECT count(*) AS n FROM events").column("n")[0].as_py() == 5
    ingest(lake, [str(write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(5, 8)]))])
    ex.versions()
    assert ex.query("SELECT count(*) AS n FROM events").column("n")[0].as_py() == 8
    got = ex.query("SELECT count(*) AS n FROM events WHERE event_date = ?", [evs[0]["occurred_at"][:10]])
    assert got.column("n")[0].as_py() >= 1
    with pytest.raises(Exception):
        ex.query("SELECT * FROM read_text('/etc/passwd')")


# ----------------------------------------------------------------------------- users

def test_users_file_hashes_passwords_with_scrypt(tmp_path):
    path = tmp_path / "users.toml"
    catalog.add_user("ann", "auditor", "correct horse", path)
    catalog.add_user("pia", "privacy_officer", "battery staple", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "correct horse" not in text and text.count("scrypt$") == 2
    users = catalog.load_users(path)
    assert catalog.authenticate(users, "ann", "correct horse") == "auditor"
    assert catalog.authenticate(users, "pia", "battery staple") == "privacy_officer"
    assert catalog.authenticate(users, "ann", "battery staple") is None
    assert catalog.authenticate(users, "nobody", "correct horse") is None
    catalog.add_user("ann", "admin", "new password", path)  # replace
    assert catalog.authenticate(catalog.load_users(path), "ann", "new password") == "admin"
    for bad in (("a b", "auditor", "password1"), ("ann", "root", "password1"), ("ann", "auditor", "short")):
        with pytest.raises(catalog.AuditlakeError):
            catalog.add_user(*bad, path=path)
    assert not catalog.verify_password("x", "md5$abc") and not catalog.verify_password("x", "garbage")


def test_add_user_command_and_users_location(tmp_path, monkeypatch, auditlake_home):
    env = {**os.environ, "AUDITLAKE_PASSWORD": "s3cret-pass", "AUDITLAKE_HOME": str(auditlake_home)}
    env.pop("AUDITLAKE_EXPLORER_USERS", None)
    out = subprocess.run([sys.executable, "-m", "auditlake.catalog", "add-user", "adam", "admin"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    default = auditlake_home / "explorer_users.toml"
    assert catalog.authenticate(catalog.load_users(default), "adam", "s3cret-pass") == "admin"
    other = tmp_path / "u.toml"
    out = subprocess.run([sys.executable, "-m", "auditlake.catalog", "add-user", "ann", "auditor", "--users", str(other)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and catalog.load_users(other)["users"].keys() == {"ann"}
    out = subprocess.run([sys.executable, "-m", "auditlake.catalog", "add-user", "x", "superuser"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    monkeypatch.setenv("AUDITLAKE_EXPLORER_USERS", str(other))
    assert catalog.users_path() == other and catalog.users_path(str(default)) == default


def test_oidc_roles_come_from_the_users_file(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text('[oidc]\n"ann@example.com" = "auditor"\n"pia@example.com" = "privacy_officer"\n'
                    '"eve@example.com" = "root"\n')
    users = catalog.load_users(path)
    assert catalog.oidc_role(users, "ann@example.com") == "auditor"
    assert catalog.oidc_role(users, "eve@example.com") is None  # not a role
    assert catalog.oidc_role(users, "x@example.com") is None and catalog.oidc_role(users, None) is None


# ----------------------------------------------------------------------------- SQL guard, names, commands

@pytest.mark.parametrize("sql", [
    "DROP VIEW events", "SELECT 1; SELECT 2", "SELECT * FROM read_parquet('/x/*.parquet')",
    "SELECT * FROM delta_scan('/x')", "SELECT * FROM auditlake_catalog",
    "SELECT * FROM other.db.events", "PRAGMA database_list", "SELECT * FROM glob('/*')", "INSERT INTO events VALUES (1)",
    "WITH x AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM x",
    # A CTE is visible in its own query only: outside it the name is a file or a table.
    'SELECT * FROM (WITH "/x/*.parquet" AS (SELECT 1) SELECT 1 FROM events) AS x, "/x/*.parquet"',
    "WITH erased_subjects AS (SELECT 1) SELECT * FROM main.erased_subjects",
    "SELECT * FROM (WITH erased_subjects AS (SELECT 1) SELECT 1) AS x, erased_subjects",
    "SELECT * FROM memory.main.events",
])
def test_analyst_sql_guard_refuses(sql):
    con = duckdb.connect()
    con.execute("CREATE TABLE erased_subjects (subject_id VARCHAR)")  # as in a catalog
    with pytest.raises(catalog.AnalystSQLError):
        catalog.check_analyst_sql(con, sql)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM events", "WITH t AS (SELECT * FROM findings) SELECT rule_id, count(*) FROM t GROUP BY 1",
    "SELECT e.event_id FROM events e JOIN findings f USING (event_id) WHERE f.rule_id = 'X'",
    "SELECT * FROM events WHERE seq IN (SELECT tree_size FROM checkpoints)", "SELECT * FROM main.events",
])
def test_analyst_sql_guard_allows(sql):
    catalog.check_analyst_sql(duckdb.connect(), sql)


def test_safe_filename():
    assert catalog.safe_filename("../../etc/passwd") == "etc_passwd"
    assert catalog.safe_filename("export-1b2c.zip") == "export-1b2c.zip"
    assert catalog.safe_filename("a\x00b/c\\d:e") == "a_b_c_d_e"
    assert catalog.safe_filename("") == "download" and catalog.safe_filename("..") == "download"
    assert ".." not in catalog.safe_filename("x/../../y")


class _Streamlit:
    """Stands in for subprocess.Popen of the explorer: exits at once with `code`."""

    code = 0
    seen: dict = {}

    def __init__(self, cmd, env, preexec_fn=None):
        _Streamlit.seen = {"cmd": cmd, "env": env}

    def wait(self):
        return self.code


def test_explore_command_runs_streamlit_on_the_app(monkeypatch, tiny):
    monkeypatch.setattr(subprocess, "Popen", _Streamlit)
    from auditlake.cli import main

    assert main(["--lake", tiny["lake"].uri, "explore", "--port", "8599"]) == 0
    seen = _Streamlit.seen
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboards/app.py")
    assert Path(cmd[4]).exists() and "8599" in cmd and "--server.headless" in cmd
    assert cmd[cmd.index("--client.showErrorDetails") + 1] == "none"  # no traceback reaches the browser
    assert seen["env"]["AUDITLAKE_LAKE"] == tiny["lake"].uri


def test_explore_refuses_what_it_cannot_serve_with_one_line(monkeypatch, tiny, tmp_path, capsys):
    """No lake, a port out of range, an address that is no address, a port in use: exit 2
    and one line, before streamlit starts (it would print a traceback or serve nothing)."""
    import socket

    from auditlake.cli import main

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("streamlit started"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        for argv in ([str(tmp_path / "no-lake"), "explore"], [tiny["lake"].uri, "explore", "--port", "99999"],
                     [tiny["lake"].uri, "explore", "--address", "999.1.1.1"],
                     [tiny["lake"].uri, "explore", "--port", taken]):
            capsys.readouterr()
            assert main(["--lake", *argv]) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("auditlake: "), (argv, err)
    monkeypatch.setattr(_Streamlit, "code", 1)  # streamlit itself failed
    monkeypatch.setattr(subprocess, "Popen", _Streamlit)
    assert main(["--lake", tiny["lake"].uri, "explore", "--port", taken]) == 2  # free again
    assert "stopped with exit code 1" in capsys.readouterr().err


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_explore_stops_its_server(tiny, tmp_path, how):
    """A `kill` of `auditlake explore` (or its death by SIGKILL) leaves no explorer
    serving the lake."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "auditlake"
    proc = subprocess.Popen([str(exe), "--lake", tiny["lake"].uri, "explore", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    health = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(health, timeout=2).read()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the explorer did not start"
            time.sleep(0.25)
    proc.send_signal(how)
    proc.wait(30)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(health, timeout=2).read()
        except OSError:
            break  # nobody answers on the port any more
        assert time.monotonic() < deadline, "the explorer outlived `auditlake explore`"
        time.sleep(0.25)


def test_catalog_command_json(tiny, capsys):
    from auditlake.cli import main

    assert main(["--lake", tiny["lake"].uri, "catalog", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "live" and doc["counts"]["events"] == 6 and doc["counts"]["quarantine"] == 1
    assert set(doc["views"]) >= {"events", "findings", "quarantine", "checkpoints"}


def test_no_catalog_for_tables_that_lost_their_identity_file(tiny, capsys):
    from auditlake.cli import main

    (Path(tiny["lake"].uri) / "auditlake.json").unlink()
    assert main(["--lake", tiny["lake"].uri, "catalog"]) == 2
    assert "no auditlake.json" in capsys.readouterr().err
    assert not (Path(tiny["lake"].uri) / "catalog.duckdb").exists()


def test_verify_reports_a_catalog_view_that_is_not_the_one_auditlake_writes(tiny):
    """A view redefined in the lake's catalog file would hide events or findings from every
    analyst and auditor who reads through it."""
    from auditlake.verify import verify

    lake = tiny["lake"]
    db = catalog.build_catalog(lake)["db"]  # built before the findings table exists: an empty view
    assert verify(lake, update_trust=False).ok
    con = duckdb.connect(db)
    catalog.install_delta_extension(con)
    sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'events'").fetchone()[0]
    con.execute(sql.replace("CREATE VIEW events AS", "CREATE OR REPLACE VIEW events AS SELECT * FROM (").rstrip(";")
                + ") WHERE event_type <> 'call.started'")
    con.execute("CREATE MACRO helper(x) AS x + 1")
    con.close()
    report = verify(lake, update_trust=False)
    assert {(f.kind, f.table, f.file) for f in report.findings} == {("catalog_changed", "catalog", "catalog.duckdb")}
    assert sorted(f.detail.split(" ")[0] for f in report.findings) == ["events", "helper"]
    # The true macro moved to another schema and a changed one put in its place: the name alone
    # matched the true one (listed last), and verify said intact.
    con = duckdb.connect(db)
    real = con.execute("SELECT macro_definition FROM duckdb_functions() WHERE function_name = 'events_between'").fetchone()[0]
    con.execute("CREATE SCHEMA a")
    con.execute(f"CREATE MACRO a.events_between(t_from, t_to) AS TABLE {real}")
    con.execute(f"CREATE OR REPLACE MACRO main.events_between(t_from, t_to) AS TABLE {real} AND event_type <> 'data.exported'")
    con.close()
    details = [f.detail for f in verify(lake, update_trust=False).findings]
    assert any(d.startswith("a.events_between(t_from, t_to) is in the catalog") for d in details), details
    assert any(d.startswith("events_between is not defined as auditlake writes it") for d in details), details
    # The explorer defines its own views: the changed file hides nothing from it.
    ex = catalog.Explorer(lake)
    types = {r["event_type"] for r in ex.query("SELECT DISTINCT event_type FROM events").to_pylist()}
    assert "call.started" in types
    ex.close()
    catalog.build_catalog(lake)
    assert verify(lake, update_trust=False).ok


def test_a_catalog_built_before_its_tables_shows_them_once_they_exist(tmp_path, monkeypatch):
    """Built on a new lake, its views are typed empty stand-ins: the writers that then make
    the tables (ingest, compliance) rebuild it, else analysts would read nothing through it
    for good. One left stale is a verify finding."""
    from events import event, write_jsonl

    from auditlake.compliance.run import evaluate_lake
    from auditlake.ingest import ingest
    from auditlake.lake.admin import init_lake
    from auditlake.verify import verify

    lake = Lake.open(str(tmp_path / "lake"))
    init_lake(lake, 7)
    db = catalog.build_catalog(lake)["db"]
    ingest(lake, [str(write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(4)] + ["{not json"]))])
    con = connect(db)
    assert [con.execute(f"SELECT count(*) FROM {v}").fetchone()[0] for v in ("events", "quarantine", "findings")] == [4, 1, 0]
    con.close()
    assert verify(lake, update_trust=False).ok  # the findings view waits for its table
    with monkeypatch.context() as m:
        m.setattr(catalog, "refresh_views", lambda lake: None)  # a writer of an older auditlake
        evaluate_lake(lake, report=False)
    report = verify(lake, update_trust=False)
    assert [(f.kind, f.detail.split(" (")[0]) for f in report.findings] == [
        ("catalog_changed", f"the view {v} was built before its table existed and reads nothing")
        for v in ("findings", "findings_history")], report.findings
    assert evaluate_lake(lake, report=False)["catalog_note"] is None  # rebuilt by the next one
    assert verify(lake, update_trust=False).ok


def test_catalog_db_writes_over_its_own_catalog_only(tiny, capsys):
    """`--db PATH` names where the catalog goes: a user's file, folder or DuckDB database
    there is refused in one line (left as it was, no temporary file left), as is another
    lake's catalog; this lake's catalog is replaced."""
    from auditlake.cli import main

    tmp, lake = tiny["tmp"], tiny["lake"]
    (tmp / "notes.txt").write_text("important")
    (tmp / "adir").mkdir()
    duckdb.connect(str(tmp / "mine.duckdb")).execute("CREATE TABLE t (a INT)").close()
    for name, why in [("notes.txt", "is no auditlake catalog"), ("adir", "is a folder"),
                      ("mine.duckdb", "is a DuckDB database that is no auditlake catalog")]:
        assert main(["--lake", lake.uri, "catalog", "--db", str(tmp / name)]) == 2
        assert why in capsys.readouterr().err
    assert (tmp / "notes.txt").read_text() == "important" and not list(tmp.glob(".*.tmp"))
    assert duckdb.connect(str(tmp / "mine.duckdb"), read_only=True).execute("SELECT count(*) FROM t").fetchone() == (0,)
    for _ in range(2):  # made, then replaced
        assert main(["--lake", lake.uri, "catalog", "--db", str(tmp / "cat.duckdb")]) == 0
    # This lake moved elsewhere (same log id): its catalog is rebuilt. Another lake's catalog
    # (another log id) is not replaced: its analysts would read this lake.
    with duckdb.connect(str(tmp / "cat.duckdb")) as con:
        con.execute("UPDATE auditlake_catalog SET value = '/srv/old-place' WHERE key = 'lake'")
    assert main(["--lake", lake.uri, "catalog", "--db", str(tmp / "cat.duckdb")]) == 0
    with duckdb.connect(str(tmp / "cat.duckdb")) as con:
        con.execute("UPDATE auditlake_catalog SET value = '/srv/other-lake' WHERE key = 'lake'")
        con.execute("UPDATE auditlake_catalog SET value = 'log-other' WHERE key = 'log_id'")
    capsys.readouterr()
    assert main(["--lake", lake.uri, "catalog", "--db", str(tmp / "cat.duckdb")]) == 2
    assert "is the catalog of another lake (/srv/other-lake)" in capsys.readouterr().err
    (tmp / "cat.duckdb").unlink()
    assert main(["--lake", lake.uri, "catalog", "--db", str(tmp / "cat.duckdb")]) == 0
    # Open for writing in another process: another path's file is refused as such; the
    # lake's own catalog file is rebuilt all the same (it is auditlake's).
    default = str(catalog.default_db_path(lake))
    main(["--lake", lake.uri, "catalog"])
    for path, code in ((str(tmp / "cat.duckdb"), 2), (default, 0)):
        held = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({path!r}); "
                                 "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        try:
            assert held.stdout.readline().strip() == "open"
            assert main(["--lake", lake.uri, "catalog", *(["--db", path] if path != default else [])]) == code
        finally:
            held.kill()
            held.wait()
        assert code == 0 or "is a DuckDB database open for writing elsewhere" in capsys.readouterr().err


def test_verify_reports_an_erased_list_that_is_not_the_keystores(tiny, monkeypatch):
    """The events view labels the people in erased_subjects as erased: a row added there
    would label someone's data erased. One missing (an erasure between its key and its
    catalog update, which comes last) still reads masked: no finding."""
    from auditlake.privacy import erase
    from auditlake.verify import verify

    lake = tiny["lake"]
    db = catalog.build_catalog(lake)["db"]
    assert verify(lake, update_trust=False).ok
    with monkeypatch.context() as m:
        m.setattr(catalog, "refresh_erased", lambda lake: None)  # verify runs before the update
        erase(lake, tiny["events"][0]["subject"]["id"])
    assert verify(lake, update_trust=False).ok
    con = duckdb.connect(db)
    con.execute("INSERT INTO erased_subjects VALUES ('someone-not-erased')")
    con.close()
    report = verify(lake, update_trust=False)
    assert [(f.kind, f.file) for f in report.findings] == [("catalog_changed", "catalog.duckdb")]
    assert report.findings[0].detail.startswith("erased_subjects lists people the keystore has not erased")
    catalog.build_catalog(lake)
    assert verify(lake, update_trust=False).ok


def test_a_moved_lakes_catalog_is_said_to_read_another_folder(tiny):
    """The catalog's views read the lake by its path: after a move they read the old folder
    (or nothing). Said as such, and a rebuild fixes it."""
    from auditlake.verify import verify

    lake = tiny["lake"]
    catalog.build_catalog(lake)
    moved = tiny["tmp"] / "moved"
    shutil.move(lake.uri, moved)
    report = verify(Lake.open(str(moved)), update_trust=False)
    assert report.findings and all(f.kind == "catalog_changed" and "reads another folder than this lake" in f.detail
                                   for f in report.findings), report.findings
    catalog.build_catalog(Lake.open(str(moved)))
    assert verify(Lake.open(str(moved)), update_trust=False).ok


def test_a_killed_builds_half_written_files_are_removed_by_the_next(tiny):
    """A catalog build killed mid-way leaves its hidden temp file and WAL in the lake root;
    the next build removes those of dead processes, never a live one's."""
    from auditlake import catalog

    db = catalog.default_db_path(tiny["lake"])
    dead = 2**22 + 12345  # above Linux's pid_max default: no such process
    left = [db.with_name(f".{db.name}.{dead}.0badcafe.tmp"), db.with_name(f".{db.name}.{dead}.0badcafe.tmp.wal")]
    live = db.with_name(f".{db.name}.{os.getpid()}.0badcafe.tmp")
    for p in [*left, live]:
        p.write_bytes(b"half")
    catalog.build_catalog(tiny["lake"])
    assert not any(p.exists() for p in left) and live.exists()
    live.unlink()


def test_the_quarantine_view_keeps_the_cut_note_of_a_long_line_whatever_sits_at_the_cut(lake, tmp_path):
    """A line past 64 KiB keeps its first 4 KiB and says it was cut; a masked PII value just
    before the note must not swallow it (the stored text would read as a whole line)."""
    import uuid

    from auditlake.ingest import ingest

    lines = []
    for off in range(14):
        e = {"event_id": str(uuid.uuid4()), "occurred_at": "2026-03-02T14:03:22Z", "event_type": "call.completed",
             "source": "s", "tenant_id": "t", "actor": {"type": "service", "id": "s"}, "subject": {"id": "s"},
             "lawful_basis": None, "data": {"call_id": "c", "duration_s": 1, "disposition": "a"}}
        head = json.dumps(e, separators=(",", ":"))[:-1]
        lines.append(head + ',"note":"' + "a" * (4096 - len(head) - 13 - off) + '","phone":"+13125550186","pad":"'
                     + "z" * 70_000 + '"}')
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.jsonl").write_text("\n".join(lines) + "\n")
    ingest(lake, [str(tmp_path / "in")])
    con = connect(catalog.build_catalog(lake)["db"])
    raws = [r for (r,) in con.execute("SELECT raw FROM quarantine ORDER BY line").fetchall()]
    con.close()
    assert len(raws) == 14
    for raw in raws:
        assert "... [cut; the whole line has " in raw and "5550186" not in raw, raw[-60:]


def test_the_explorers_queries_are_in_utc_whatever_the_hosts_time_zone(tiny, monkeypatch):
    """Each query runs on a cursor, which a connection's SET does not reach: on a host in
    another zone the times (and the dates the compliance page derives from them) were local."""
    import time

    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        ex = catalog.Explorer(tiny["lake"])
        t = ex.query("SELECT current_setting('TimeZone') AS tz, occurred_at FROM events LIMIT 1")
        assert t.column("tz")[0].as_py() == "UTC" and t.schema.field("occurred_at").type.tz == "UTC"
        ex.close()
    finally:
        monkeypatch.undo()
        time.tzset()
