"""The Dagster command line as a user runs it (multiprocess executor, a real DAGSTER_HOME),
then `auditlake verify` on the lake it wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from events import event, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
DAY1, DAY2 = "2026-03-02", "2026-03-03"


def run(args: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_dagster_cli_materialises_a_day_then_auditlake_verifies(lake_dir, tmp_path):
    write_jsonl(lake_dir / "landing" / DAY1 / "calls.jsonl",
                [event("call.started", n) for n in range(30)] + ["not json"])
    write_jsonl(lake_dir / "landing" / DAY2 / "consents.jsonl", [event("consent.granted", n) for n in range(100, 110)])
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "AUDITLAKE_LAKE": str(lake_dir)}
    env.pop("AUDITLAKE_DEPLOYMENT", None)

    # one landing day, as in the UI's "Materialize" on a partition
    proc = run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
                "--select", "ledger", "--partition", DAY1], env)
    logs = proc.stdout + proc.stderr
    assert "multiprocess executor" in logs  # one process per step, as in deployed runs
    assert "RUN_SUCCESS" in logs and "Asset check 'integrity' on 'ledger' passed" in logs

    # a job, as the hourly schedule launches it: verify and advance the trusted checkpoint
    proc = run([sys.executable, "-m", "dagster", "job", "execute", "-m", "pipelines.definitions",
                "-j", "hourly_verify_job"], env)
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr

    verified = run([sys.executable, "-m", "auditlake.cli", "--lake", str(lake_dir), "verify", "--json"], env)
    doc = json.loads(verified.stdout)
    assert doc["ok"] and doc["events"] == 30  # only DAY1 was ingested
    assert doc["trusted_tree_size"] == 30  # the job advanced the trust store

    # the runs and their materialisations are in DAGSTER_HOME, for the UI
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        ev = instance.get_latest_materialization_event(dg.AssetKey("ledger"))
        meta = ev.asset_materialization.metadata
        assert ev.asset_materialization.partition == DAY1
        assert meta["accepted"].value == 30 and meta["quarantined"].value == 1
        assert meta["tree_size"].value == 30 and meta["root"].value == doc["root"]
        cp = instance.get_latest_materialization_event(dg.AssetKey("checkpoints")).asset_materialization
        assert cp.metadata["events_verified"].value == 30 and cp.metadata["checkpoint_id"].value
