"""Concurrent writers: several `auditlake ingest` processes on one lake at once never fork the
chain or the tree, never lose or duplicate an event, and leave a gap-free seq; and the
commit primitive they rely on (delta-rs put-if-absent) really refuses a second writer of the
same version, on the local disk and on the S3 server."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time

import pytest

from fixtures_s3 import ROOT, assert_exact, run_cli, write_landing

WRITERS = 3


def _landing(tmp_path) -> tuple[list, int, list[str]]:
    """Folders for the writers: a shared folder all of them ingest, one folder each, the same
    file under two names, and a file replaying events of another (quarantined as replays)."""
    common = tmp_path / "common"
    lines, ids = 0, []
    for n in range(3):
        r = write_landing(common / f"c{n}.jsonl", 80, seed=100 + n, bad_every=15)
        lines += r["lines"]
        ids += r["event_ids"]
    own = []
    for w in range(WRITERS):
        r = write_landing(tmp_path / f"own{w}" / f"o{w}.jsonl", 50, seed=200 + w, bad_every=20)
        lines += r["lines"]
        ids += r["event_ids"]
        own.append(tmp_path / f"own{w}")
    # The same content under another name in writer 1's folder: ingested once.
    shutil.copy(common / "c0.jsonl", own[1] / "copy-of-c0.jsonl")
    # A replay: writer 2 brings c1's first 30 lines again, in a new file (new content hash).
    src = (common / "c1.jsonl").read_text().splitlines()[:30]
    (own[2] / "replay.jsonl").write_text("\n".join(src + ['{"broken": true'] * 2) + "\n")
    lines += 32
    folders = [[str(common), str(o)] for o in own]
    return folders, lines, ids


def _run_writers(lake_uri: str, folders: list[list[str]]) -> list[subprocess.CompletedProcess]:
    env = {**os.environ}
    procs = [
        subprocess.Popen([sys.executable, "-m", "auditlake.cli", "--lake", lake_uri, "ingest", *f, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for f in folders
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_concurrent_ingest_on_a_fresh_lake(lake_uri, tmp_path):
    """Writers race from the very first commit (lake identity, keystore, table creation)."""
    folders, lines, ids = _landing(tmp_path)
    results = _run_writers(lake_uri, folders)
    for r in results:
        assert r.returncode == 0, r.stderr
    v = run_cli("--lake", lake_uri, "verify", "--json")
    doc = json.loads(v.stdout)
    assert v.returncode == 0 and doc["ok"], doc["findings"]
    c = assert_exact(lake_uri, lines, files=3 + WRITERS + 1)
    # Every valid event of the landing files is sealed exactly once.
    assert sorted(set(c["event_ids"])) == sorted(set(ids))
    assert doc["events"] == len(ids)
    # The log has one checkpoint chain covering everything (no fork).
    assert doc["tree_size"] == len(ids) and doc["unsealed_tail"] == 0
    retries = sum(json.loads(r.stdout)["retries"] for r in results)
    print(f"{len(results)} writers, {retries} re-plans after lost commit races")


def test_concurrent_ingest_into_a_busy_lake(lake_dir, tmp_path):
    """Writers that race while the lake already holds data and checkpoints."""
    lake_uri = str(lake_dir)
    first = write_landing(tmp_path / "first" / "f.jsonl", 100, seed=7, bad_every=10)
    run_cli("--lake", lake_uri, "ingest", str(tmp_path / "first"), check=True)
    folders, lines, ids = _landing(tmp_path)
    for r in _run_writers(lake_uri, folders):
        assert r.returncode == 0, r.stderr
    assert run_cli("--lake", lake_uri, "verify").returncode == 0
    c = assert_exact(lake_uri, lines + first["lines"], files=3 + WRITERS + 2)
    assert sorted(set(c["event_ids"])) == sorted(set(ids + first["event_ids"]))


def test_a_process_that_read_the_tables_sees_another_writers_commits(lake, lake_dir, tmp_path):
    """Ingest keeps each table open per thread and brings it up to date (Lake.latest), as a
    long-lived process (the Dagster code server, the explorer) does: another process's
    commits in between are seen when the next run plans, not only when its commit loses."""
    from auditlake.ingest import ingest

    a = write_landing(tmp_path / "a" / "a.jsonl", 60, seed=31, bad_every=9)
    b = write_landing(tmp_path / "b" / "b.jsonl", 60, seed=32, bad_every=9)
    c = write_landing(tmp_path / "c" / "c.jsonl", 60, seed=33, bad_every=9)
    ingest(lake, [str(tmp_path / "a")])
    run_cli("--lake", str(lake_dir), "ingest", str(tmp_path / "b"), check=True)
    report = ingest(lake, [str(tmp_path / d) for d in "abc"])
    assert report.retries == 0  # planned on the other writer's commits: no lost commit race
    assert sorted(f.skipped for f in report.files) == [False, True, True]
    assert report.accepted == c["lines"] - c["bad"] and report.quarantined == c["bad"]
    assert run_cli("--lake", str(lake_dir), "verify").returncode == 0
    assert_exact(str(lake_dir), a["lines"] + b["lines"] + c["lines"], files=3)


def _append_at(uri: str, opts: dict, start: float, q, i: int) -> None:
    import pyarrow as pa
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    dt = DeltaTable(uri, storage_options=opts or None)
    v = dt.version()
    while time.time() < start:
        time.sleep(0.001)
    try:
        write_deltalake(dt, pa.table({"writer": [i]}), mode="append",
                        commit_properties=CommitProperties(max_commit_retries=0))
        q.put(("ok", v, i))
    except Exception as exc:  # noqa: BLE001
        q.put((type(exc).__name__, v, i))


def test_delta_commits_race_put_if_absent(lake_uri):
    """The primitive behind ingest's safety: N writers append from the same table version at
    the same instant; exactly one wins each round, the others fail (never overwrite)."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from auditlake.lake.store import Lake

    lake = Lake.open(lake_uri)
    uri = lake.table_uri("race")
    opts = lake.storage_options
    write_deltalake(uri, pa.table({"writer": [-1]}), storage_options=opts or None)
    ctx = mp.get_context("spawn")
    rounds, n = 2, 3
    for rnd in range(rounds):
        q = ctx.Queue()
        start = time.time() + 2.5
        procs = [ctx.Process(target=_append_at, args=(uri, opts, start, q, rnd * 10 + i)) for i in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        results = [q.get(timeout=5) for _ in procs]
        assert len({v for _, v, _ in results}) == 1, "all writers started from the same version"
        assert sorted(r for r, _, _ in results) == ["CommitFailedError"] * (n - 1) + ["ok"], results
    dt = DeltaTable(uri, storage_options=opts or None)
    assert dt.version() == rounds
    assert dt.to_pyarrow_table().num_rows == 1 + rounds
    if lake.is_s3:
        from auditlake.lake import s3

        hist = s3.histories(lake, "tables/race/_delta_log/")
        entries = {k: h for k, h in hist.items() if k.endswith(".json")}
        assert len(entries) == rounds + 1
        assert all(h.intact for h in entries.values()), "a commit was overwritten"


_PAUSED_WRITER = """
import sys, time
from pathlib import Path
import auditlake.ingest as ing
from auditlake.lake.store import Lake

ready, go = Path(sys.argv[3]), Path(sys.argv[4])
commit = ing._commit_batch

def paused(*args, **kwargs):
    ready.touch()  # planned: lines read, nothing committed yet
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return commit(*args, **kwargs)

ing._commit_batch = paused
r = ing.ingest(Lake.open(sys.argv[1]), [sys.argv[2]])
print(r.accepted, r.quarantined, r.retries)
"""


def test_a_writer_overtaken_between_plan_and_commit(lake_dir, tmp_path):
    """Writer B plans a file, writer A ingests the same file meanwhile, then B commits: B must
    see A's events as already sealed (not as replays to quarantine), so every line still
    counts once. (Regression: B used to judge replays on a newer ledger than the one it
    commits on, and quarantined all of A's events a second time.)"""
    lake = str(lake_dir)
    data = write_landing(tmp_path / "in" / "a.jsonl", 60, seed=77)  # all valid: no quarantine commit by A
    ready, go = tmp_path / "ready", tmp_path / "go"
    b = subprocess.Popen([sys.executable, "-c", _PAUSED_WRITER, lake, str(tmp_path / "in"), str(ready), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not ready.exists() and b.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), b.communicate()
    run_cli("--lake", lake, "ingest", str(tmp_path / "in"), check=True)  # writer A
    go.touch()
    out, err = b.communicate(timeout=300)
    assert b.returncode == 0, err
    assert out.split()[:2] == ["0", "0"]  # B found everything done
    assert run_cli("--lake", lake, "verify").returncode == 0
    assert_exact(lake, data["lines"], data["event_ids"], files=1)


@pytest.mark.parametrize("table", ["ingest_log", "tiles"])
def test_the_loser_of_a_commit_race_removes_its_files(lake_uri, table):
    """A writer whose commit lost the race deletes the data files it wrote (found by batch id,
    or by its rows where the table has none), so verify sees no stray file."""
    import pyarrow as pa
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    from auditlake.lake import retention, tables
    from auditlake.lake.meta import open_lake_keys
    from auditlake.lake.store import Lake

    lake = Lake.open(lake_uri)
    open_lake_keys(lake, create=True)  # the keys that sign the lake's commits
    schema = tables.SCHEMAS[table]

    def rows(n: int) -> pa.Table:
        data = {}
        for f in schema:
            if pa.types.is_integer(f.type):
                data[f.name] = pa.array([n + i for i in range(3)], f.type)
            elif pa.types.is_timestamp(f.type):
                data[f.name] = pa.array([None] * 3, f.type)
            else:
                data[f.name] = pa.array([f"{f.name}-{n}-{i}" for i in range(3)], f.type)
        return pa.table(data, schema=schema)

    tables.append(lake, table, rows(0), None)
    stale = lake.delta(table)
    tables.append(lake, table, rows(10), 0)  # the winner
    mine = rows(20)
    with pytest.raises(CommitFailedError):
        write_deltalake(stale, mine, mode="append", commit_properties=CommitProperties(max_commit_retries=0))
    before = {o.rel for o in retention.committed(lake, table) if o.kind == "data"}
    removed = retention.discard_uncommitted(lake, table, mine)
    assert len(removed) >= 1 and not set(removed) & before
    fs, root = lake.filesystem()
    import pyarrow.fs as pafs

    left = {f"{__import__('posixpath').relpath(i.path, root)}" for i in
            fs.get_file_info(pafs.FileSelector(f"{root}/tables/{table}", recursive=True))
            if i.type == pafs.FileType.File and "_delta_log" not in i.path}
    assert left == before
