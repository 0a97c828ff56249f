"""Crashes and faults: SIGKILL at random moments (a small form of tests/bench/crash_trials.py),
an S3 endpoint that goes down or freezes mid-run, and memory that stays bounded on big
landing files. After each, the next run completes the work with exact counts and the lake
verifies; S3 errors reach the user as one line."""
from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures_s3 import ROOT, TcpProxy, assert_exact, create_worm_bucket, write_landing, write_landing_set

_spec = importlib.util.spec_from_file_location("crash_trials", Path(__file__).parent / "bench" / "crash_trials.py")
crash_trials = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_trials)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigkill_trials_local(tmp_path, workers):
    """Killing the ingest process also ends its sealing workers (their pipe closes); with or
    without them, the rerun completes the work exactly."""
    lake = str(tmp_path / "lake")
    s = crash_trials.run_trials(lake, tmp_path, trials=3, seed=11, files=2, lines=200,
                                env={"AUDITLAKE_INGEST_WORKERS": workers})
    assert s["killed"] + s["finished_before_kill"] == 3 and s["killed"] >= 2


@pytest.mark.s3
def test_sigkill_trials_s3(s3_env, s3_lake_uri, tmp_path):
    bucket = s3_lake_uri.removeprefix("s3://").split("/")[0]
    s = crash_trials.run_trials(s3_lake_uri, tmp_path, trials=2, seed=12, files=2, lines=150,
                                progress=crash_trials.moto_progress(s3_env.log, bucket))
    assert s["killed"] + s["finished_before_kill"] == 2


def _rerun_and_verify(lake_uri: str, folder: Path) -> None:
    """The next run (in this process: the CLI is what crash_trials exercises) and verify."""
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake
    from auditlake.verify import verify

    lake = Lake.open(lake_uri)
    ingest(lake, [str(folder)])
    report = verify(lake, update_trust=False)
    assert report.ok, report.findings


def _start_ingest(lake: str, folder: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "auditlake.cli", "--lake", lake, "ingest", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})})


def _wait_writes(progress, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    base, deadline = progress(), time.monotonic() + timeout
    while progress() - base < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)


@pytest.mark.s3
def test_s3_outage_mid_run(s3_env, tmp_path, monkeypatch):
    """The endpoint goes down in the middle of an ingest: the run stops with one line on
    stderr; once S3 is back, the next run completes the work exactly."""
    proxy = TcpProxy(s3_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    bucket = create_worm_bucket(s3_env.endpoint)
    lake = f"s3://{bucket}/lake"
    progress = crash_trials.moto_progress(s3_env.log, bucket)
    rnd = random.Random(5)
    lines, ids, files, outcomes = 0, [], 0, []
    try:
        for rnd_i in range(1):
            folder = tmp_path / f"in{rnd_i}"
            data = write_landing_set(folder, files=2, lines=200, seed=40 + rnd_i, bad_every=9)
            lines, ids, files = lines + data["lines"], ids + data["event_ids"], files + 2
            proc = _start_ingest(lake, folder)
            _wait_writes(progress, rnd.randint(3, 12), proc)
            proxy.stop()
            t_stop = time.monotonic()
            out, err = proc.communicate(timeout=300)
            print(f"ingest gave up {time.monotonic() - t_stop:.1f}s after the outage: {err.strip()[-300:]}")
            outcomes.append(proc.returncode)
            if proc.returncode != 0:
                assert proc.returncode == 2, err
                line = err.strip().splitlines()[-1]
                assert line.startswith("auditlake: ") and "Traceback" not in err, err
                assert "\x1b[" not in line and len(line) < 700
            proxy.start()
            _rerun_and_verify(lake, folder)
            assert_exact(lake, lines, ids, files=files)
    finally:
        proxy.stop()
    assert outcomes == [2], "the outage must hit the running ingest"


@pytest.mark.s3
def test_s3_server_frozen_mid_run(s3_env, s3_lake_uri, tmp_path):
    """The S3 server stops answering for a while (SIGSTOP) and comes back (SIGCONT): the run
    either waits it out or fails with one line; either way the lake ends up exact."""
    bucket = s3_lake_uri.removeprefix("s3://").split("/")[0]
    data = write_landing_set(tmp_path / "in", files=2, lines=150, seed=60, bad_every=7)
    proc = _start_ingest(s3_lake_uri, tmp_path / "in")
    _wait_writes(crash_trials.moto_progress(s3_env.log, bucket), 6, proc)
    os.kill(s3_env.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(3)
    finally:
        os.kill(s3_env.proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 2), err
    if proc.returncode:
        assert "Traceback" not in err and err.strip().count("\n") == 0
    _rerun_and_verify(s3_lake_uri, tmp_path / "in")
    assert_exact(s3_lake_uri, data["lines"], data["event_ids"], files=2)


_MEASURE = """
import resource, sys
import auditlake.ingest as ing
ing.BATCH_LINES = int(sys.argv[3])
ing.CHUNK_LINES = ing.BATCH_LINES // 4
from auditlake.lake.store import Lake
r = ing.ingest(Lake.open(sys.argv[1]), [sys.argv[2]])
print(r.accepted + r.quarantined, r.batches, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_mb(lake: Path, landing: Path, batch: int) -> tuple[int, int, float]:
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(lake), str(landing), str(batch)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    n, batches, kb = r.stdout.split()
    return int(n), int(batches), int(kb) / 1024


def test_ingest_memory_is_bounded_by_the_batch_not_the_file(tmp_path):
    """Ten times the lines, same batch size: the peak RSS barely moves (tests/bench/big_file.py
    measures a 2 GB file)."""
    write_landing(tmp_path / "small" / "s.jsonl", 2_000, seed=1, bad_every=50)
    write_landing(tmp_path / "big" / "b.jsonl", 20_000, seed=2, bad_every=50)
    n_small, b_small, small = _peak_rss_mb(tmp_path / "lake1", tmp_path / "small", 2_000)
    n_big, b_big, big = _peak_rss_mb(tmp_path / "lake2", tmp_path / "big", 2_000)
    assert (n_small, n_big) == (2_000, 20_000) and b_big >= 10 > b_small
    print(f"peak RSS: {small:.0f} MB for 2k lines, {big:.0f} MB for 20k lines (batches of 2k)")
    assert big - small < 100, (small, big)


_DIE_AT_TILES = """
import os, sys, uuid
import pyarrow as pa, pyarrow.parquet as pq
from auditlake import proofs

def write_then_die(lake, nodes, lock=False):
    # As a SIGKILL between delta-rs writing the tiles' data file and committing it.
    if nodes:
        level = nodes[0][0]
        folder = os.path.join(lake.uri, "tables", "tiles", f"level={level}")
        os.makedirs(folder, exist_ok=True)
        pq.write_table(pa.table({"idx": [n[1] for n in nodes], "hash": [n[2].hex() for n in nodes]}),
                       os.path.join(folder, f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"))
        os._exit(9)
    return True

proofs.write_tiles = write_then_die
from auditlake.ingest import ingest
from auditlake.lake.store import Lake
ingest(Lake.open(sys.argv[1]), [sys.argv[2]])
"""


def test_a_crash_between_the_ledger_and_its_tiles_leaves_no_stray_file(tmp_path):
    """Killed after the ledger commit, with the batch's tile file written but not committed:
    the rerun has no line left to ingest, yet it stores the tail's tiles, which sweeps the
    dead writer's file, so verify finds nothing and proofs still work."""
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake
    from auditlake.proofs import inclusion_proof, verify_proof_doc
    from auditlake.verify import verify

    lake_uri, folder = str(tmp_path / "lake"), tmp_path / "in"
    first = write_landing(folder / "a.jsonl", lines=600, seed=71)  # 600 leaves complete tiles of level 8
    ingest(Lake.open(lake_uri), [str(folder)])
    second = write_landing(folder / "b.jsonl", lines=600, seed=72)
    tiles_dir = tmp_path / "lake" / "tables" / "tiles"
    committed = set(tiles_dir.rglob("*.parquet"))
    r = subprocess.run([sys.executable, "-c", _DIE_AT_TILES, lake_uri, str(folder)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr
    lake = Lake.open(lake_uri)
    stray = set(tiles_dir.rglob("*.parquet")) - committed
    assert len(stray) == 1  # the dead writer's file

    ledger_version = lake.delta("ledger").version()
    ingest(lake, [str(folder)])
    assert lake.delta("ledger").version() == ledger_version  # the killed run committed every line
    assert_exact(lake_uri, 1200, first["event_ids"] + second["event_ids"], files=2)
    found = verify(lake, update_trust=False)
    assert found.ok, found.findings
    assert not any(f.exists() for f in stray)
    ok, why = verify_proof_doc(inclusion_proof(lake, second["event_ids"][300]))
    assert ok, why
