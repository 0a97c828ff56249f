"""The Dagster UI: `dagster-webserver` loads workspace.yaml on a free loopback port, and its
GraphQL endpoint shows the assets, their lineage, partitions and checks."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    isObservable
    dependencyKeys { path }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: bytes | None = None, timeout: float = 10) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def test_webserver_serves_the_assets_over_graphql(tmp_path, lake_dir):
    home = tmp_path / "dagster_home"
    home.mkdir()
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "AUDITLAKE_LAKE": str(lake_dir)}
    log = open(tmp_path / "webserver.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the webserver and the code server it starts
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "dagster-webserver exited:\n" + (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                info = json.loads(http(f"{base}/server_info", timeout=2))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                assert time.monotonic() < deadline, "no /server_info within 120 s"
                time.sleep(0.5)
        assert info["dagster_webserver_version"]

        doc = json.loads(http(f"{base}/graphql", json.dumps({"query": QUERY}).encode(), timeout=60))
        assert "errors" not in doc, doc
        nodes = {"/".join(n["assetKey"]["path"]): n for n in doc["data"]["assetNodes"]}
        assert set(nodes) >= {"landing_files", "ledger", "quarantine", "checkpoints", "compliance_findings",
                              "duckdb_catalog", "export_bundle"}
        deps = {k: {"/".join(d["path"]) for d in n["dependencyKeys"]} for k, n in nodes.items()}
        chain = ["landing_files", "ledger", "checkpoints", "compliance_findings", "duckdb_catalog", "export_bundle"]
        for parent, child in zip(chain, chain[1:]):
            assert parent in deps[child], (parent, child)
        assert "ledger" in deps["quarantine"] and "quarantine" in deps["duckdb_catalog"]
        assert nodes["ledger"]["isPartitioned"] and nodes["quarantine"]["isPartitioned"]
        assert not nodes["checkpoints"]["isPartitioned"]
        assert nodes["landing_files"]["isObservable"]
        assert {n["groupName"] for n in nodes.values()} == {"ingest", "integrity", "compliance", "serving"}
        ledger_checks = {c["name"]: c["blocking"] for c in nodes["ledger"]["assetChecksOrError"]["checks"]}
        assert ledger_checks["integrity"] is True
        quarantine_checks = {c["name"] for c in nodes["quarantine"]["assetChecksOrError"]["checks"]}
        assert "quarantine_rate" in quarantine_checks
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen) -> None:
    """End the webserver and everything in its process group (only what this test started)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(0.5)
    try:  # stragglers (e.g. the code server) in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)
