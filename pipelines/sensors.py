"""The landing sensor: new landing files trigger ingest runs.

Each tick lists `<lake>/landing/`; a file not seen before (by name, size and modification
time) is hashed, and a file whose *content* is new gets one run of `ingest_job` for its
landing day with `run_key = landing:<sha256>`. A re-dropped file (same content, any name)
triggers nothing: its content is already in the ingest log or in the cursor, and Dagster
would also refuse a second run with the same run key. The cursor is JSON:
`{"files": {name: [size, mtime_ns, sha256]}}`.
"""

import json
import os

import dagster as dg
import pyarrow.compute as pc

from assets.partitions import is_partition, landing_listing
from auditlake.lake.store import Lake
from pipelines.resources import LakeResource

from .jobs import ingest_job

MAX_RUNS_PER_TICK = 100


def ingested_shas(lake: Lake) -> set[str]:
    dt = lake.delta("ingest_log")
    if dt is None:
        return set()
    col = dt.to_pyarrow_dataset().to_table(columns=["source_sha256"]).column("source_sha256")
    return set(pc.unique(col).to_pylist())


def run_key(sha: str) -> str:
    return f"landing:{sha}"


@dg.sensor(
    name="landing_sensor",
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New landing files -> one ingest run per new file content (run_key = landing:<sha256>).",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    lk = lake.lake()
    previous: dict[str, list] = (json.loads(context.cursor) if context.cursor else {}).get("files", {})
    listing = landing_listing(lk)
    done = ingested_shas(lk) if listing else set()
    known_shas = {v[2] for v in previous.values()}
    cursor: dict[str, list] = {}
    requests: list[dg.RunRequest] = []
    outside: list[str] = []
    for d in listing:
        lf = d.file
        old = previous.get(d.name)
        if old and old[0] == lf.size and old[1] == d.mtime_ns:
            cursor[d.name] = old
            continue
        if len(requests) >= MAX_RUNS_PER_TICK:
            continue  # not recorded: the next tick picks it up
        if not is_partition(d.day):
            # Not recorded either: once renamed or inside the partitions it is new work, and
            # its content never hides a copy under a valid day.
            outside.append(f"{d.name} ({d.day})")
            continue
        sha = lf.sha256()
        cursor[d.name] = [lf.size, d.mtime_ns, sha]
        if sha in done or sha in known_shas:
            continue  # the same content again, under any name: nothing to do
        known_shas.add(sha)
        requests.append(
            dg.RunRequest(
                run_key=run_key(sha),
                partition_key=d.day,
                run_config={"ops": {"ledger": {"config": {"files": [d.name]}}}},
                tags={"auditlake/landing_file": d.name[-200:], "auditlake/sha256": sha},
            )
        )
    if outside:
        context.log.warning(
            "landing files dated outside the daily partitions (set AUDITLAKE_PARTITIONS_START or rename them): "
            + ", ".join(outside[:20])
        )
    new_cursor = json.dumps({"files": cursor}, sort_keys=True, separators=(",", ":"))
    if not requests:
        where = "" if listing or lk.is_s3 or os.path.isdir(lk.child("landing")) else f"; no landing folder at {lk.child('landing')}"
        return dg.SensorResult(skip_reason=f"no new landing files ({len(listing)} seen{where})", cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


SENSORS = [landing_sensor]
