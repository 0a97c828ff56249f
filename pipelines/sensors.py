"""The landing sensor: new landing files trigger ingest runs.

Each tick lists `<lake>/landing/`; a file not seen before (by name, size and modification
time) is hashed, and a file whose *content* is not in the ingest log gets a run of
`ingest_job` for its landing day with `run_key = landing:<sha256>`, unless a run for that
content is still queued or going. A re-dropped file (same content, any name) triggers
nothing. A content whose runs all ended without ingesting it (the run failed, or the file
was renamed or moved before its run) is asked again, as `landing:<sha256>:<attempt>`, up to
MAX_ATTEMPTS runs: nothing is dropped because one run went wrong. A content asked for with
no run on record REASK_S later (its run was deleted, or never made) is asked again (the run
key keeps a run that does exist from being made twice). The cursor is JSON:
`{"files": {name: [size, mtime_ns, sha256, asked_at]}}` (asked_at: epoch seconds, 0 if not).

A run that failed after committing ledger rows but before their checkpoint leaves an
unsealed tail that no new file would bring a run for: once no run is queued or going and the
same tail has been there SEAL_AFTER_S, it gets a run of its own (the last day's partition; an
ingest of no new file seals it first), `run_key = seal:<ledger version>`, asked again like a
file's up to MAX_ATTEMPTS runs. The cursor keeps it as `"unsealed": [ledger version, first seen]`.
"""

import json
import os
import time

import dagster as dg
import pyarrow.compute as pc

from assets.partitions import DAILY, is_partition, landing_listing
from auditlake.lake.store import Lake
from pipelines.resources import LakeResource

from .jobs import ingest_job

MAX_RUNS_PER_TICK = 100
MAX_ATTEMPTS = 3  # runs per landing content before the sensor only warns about it
REASK_S = 600  # a request with no run on record this long after it is made again
SEAL_AFTER_S = 60  # an unsealed tail this old is no writer between its commits


def ingested_shas(lake: Lake) -> set[str]:
    dt = lake.delta("ingest_log")
    if dt is None:
        return set()
    col = dt.to_pyarrow_dataset().to_table(columns=["source_sha256"]).column("source_sha256")
    return set(pc.unique(col).to_pylist())


def unsealed_tail(lake: Lake) -> tuple[int, int] | None:
    """(ledger version, rows past the latest checkpoint) when there are such rows, from the
    Delta log's row counts and the newest checkpoint alone (no data read)."""
    import pyarrow as pa

    from auditlake.head import read_checkpoints

    dt = lake.delta("ledger")
    if dt is None:
        return None
    rows = pc.sum(pa.table(dt.get_add_actions(flatten=True)).column("num_records")).as_py() or 0
    sealed = max((r["tree_size"] for r in read_checkpoints(lake, latest=True)), default=0)
    return (dt.version(), rows - sealed) if rows > sealed else None


def _seal_request(context: dg.SensorEvaluationContext, lk: Lake, seen: list | None,
                  now: float) -> tuple[dg.RunRequest | None, list | None]:
    """A run for an unsealed tail that nothing is sealing, and what the cursor keeps of the
    tail ([ledger version, first seen]). While any run is queued or going, or until the same
    tail has been there SEAL_AFTER_S (a writer outside Dagster, `auditlake ingest` or the
    lake's own audit events, is between its ledger and checkpoint commits for a moment), none."""
    going = context.instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED]), limit=1)
    tail = None if going else unsealed_tail(lk)
    if tail is None:
        return None, None
    version, rows = tail
    seen = seen if seen and seen[0] == version else [version, now]
    if now - seen[1] < SEAL_AFTER_S:
        return None, seen
    day = DAILY.get_last_partition_key()
    if day is None:
        return None, seen
    attempts = len(context.instance.get_runs(filters=dg.RunsFilter(tags={"auditlake/seal": str(version)})))
    if attempts >= MAX_ATTEMPTS:
        context.log.warning(f"{rows} ledger rows past the latest checkpoint (ledger version {version}): "
                            f"{MAX_ATTEMPTS} runs failed to seal them (see those runs; `auditlake ingest` seals them)")
        return None, seen
    return dg.RunRequest(run_key=f"seal:{version}" + (f":{attempts}" if attempts else ""),
                         partition_key=day,
                         tags={"auditlake/seal": str(version)}), seen


def run_key(sha: str, attempt: int = 0) -> str:
    return f"landing:{sha}" + (f":{attempt}" if attempt else "")


def _runs_of(instance: dg.DagsterInstance, sha: str) -> tuple[int, bool]:
    """(runs asked for this content, whether one of them is still queued or going)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"auditlake/sha256": sha}))
    return len(runs), any(not r.is_finished for r in runs)


@dg.sensor(
    name="landing_sensor",
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New landing files -> one ingest run per new file content (run_key = landing:<sha256>).",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    lk = lake.lake()
    state = json.loads(context.cursor) if context.cursor else {}
    previous: dict[str, list] = state.get("files", {})
    listing = landing_listing(lk)
    done = ingested_shas(lk) if listing else set()
    now = time.time()
    # Asked for by a recent tick: its run is about to be made (or its request was dropped).
    asked_recently = {v[2] for v in previous.values() if len(v) > 3 and now - v[3] < REASK_S}
    cursor: dict[str, list] = {}
    requests: list[dg.RunRequest] = []
    asked: set[str] = set()
    outside: list[str] = []
    given_up: list[str] = []
    for d in listing:
        lf = d.file
        old = previous.get(d.name)
        if old and old[0] == lf.size and old[1] == d.mtime_ns:
            cursor[d.name] = old
            sha = old[2]
        else:
            if len(requests) >= MAX_RUNS_PER_TICK:
                continue  # not recorded: the next tick picks it up
            if not is_partition(d.day):
                # Not recorded either: once renamed or inside the partitions it is new work, and
                # its content never hides a copy under a valid day.
                outside.append(f"{d.name} ({d.day})")
                continue
            sha = lf.sha256()
            cursor[d.name] = [lf.size, d.mtime_ns, sha, 0]
        if sha in done or sha in asked or len(requests) >= MAX_RUNS_PER_TICK:
            continue  # ingested, or asked for under another name this tick
        asked.add(sha)
        attempts, in_flight = _runs_of(context.instance, sha)
        if in_flight or (not attempts and sha in asked_recently):
            continue  # its run is queued or going (or about to be made from an earlier tick's request)
        if attempts >= MAX_ATTEMPTS:
            given_up.append(d.name)
            continue
        cursor[d.name] = [*cursor[d.name][:3], now]
        requests.append(
            dg.RunRequest(
                run_key=run_key(sha, attempts),
                partition_key=d.day,
                run_config={"ops": {"ledger": {"config": {"files": [d.name]}}}},
                tags={"auditlake/landing_file": d.name[-200:], "auditlake/sha256": sha},
            )
        )
    if given_up:
        context.log.warning(f"landing files whose {MAX_ATTEMPTS} ingest runs all failed (see those runs; "
                            "ingest them by hand or with a backfill): " + ", ".join(given_up[:20]))
    if outside:
        context.log.warning(
            "landing files dated outside the daily partitions (set AUDITLAKE_PARTITIONS_START or rename them): "
            + ", ".join(outside[:20])
        )
    unsealed = None
    if not requests:
        seal, unsealed = _seal_request(context, lk, state.get("unsealed"), now)
        requests += [seal] if seal else []
    new_cursor = json.dumps({"files": cursor} | ({"unsealed": unsealed} if unsealed else {}),
                            sort_keys=True, separators=(",", ":"))
    if not requests:
        where = "" if listing or lk.is_s3 or os.path.isdir(lk.child("landing")) else f"; no landing folder at {lk.child('landing')}"
        return dg.SensorResult(skip_reason=f"no new landing files ({len(listing)} seen{where})", cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


SENSORS = [landing_sensor]
