"""The landing sensor on a real landing folder: one ingest run per new file content, keyed by
its SHA-256; a re-dropped file (same content, any name) and an ingested file trigger nothing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import dagster as dg
from dagster import DagsterInstance
from events import event, write_jsonl

from pipelines.definitions import defs
from pipelines.resources import LakeResource
from pipelines.sensors import landing_sensor

DAY1, DAY2 = "2026-03-02", "2026-03-03"


def tick(instance, lake_dir, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"lake": LakeResource(uri=str(lake_dir))},
                                  repository_def=defs.get_repository_def())
    return landing_sensor.evaluate_tick(ctx)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_landing_files_trigger_one_run_per_content(lake_dir, monkeypatch):
    instance = DagsterInstance.ephemeral()
    (lake_dir / "landing").mkdir(parents=True)

    first = tick(instance, lake_dir)
    assert not first.run_requests and first.skip_message

    a = write_jsonl(lake_dir / "landing" / DAY1 / "calls-a.jsonl", [event("call.started", n) for n in range(5)])
    b = write_jsonl(lake_dir / "landing" / f"consents-{DAY2}.jsonl", [event("consent.granted", n) for n in range(10, 14)])
    write_jsonl(lake_dir / "landing" / DAY1 / ".upload-in-progress.jsonl", [event("user.login", 99)])  # hidden
    second = tick(instance, lake_dir, first.cursor)
    reqs = {r.partition_key: r for r in second.run_requests}
    assert set(reqs) == {DAY1, DAY2}
    assert reqs[DAY1].run_key == f"landing:{sha(a)}" and reqs[DAY2].run_key == f"landing:{sha(b)}"
    assert reqs[DAY1].run_config == {"ops": {"ledger": {"config": {"files": [f"{DAY1}/calls-a.jsonl"]}}}}
    assert reqs[DAY1].tags["auditlake/sha256"] == sha(a)
    assert json.loads(second.cursor)["files"][f"{DAY1}/calls-a.jsonl"][2] == sha(a)

    # nothing new: nothing to do
    assert not tick(instance, lake_dir, second.cursor).run_requests
    # the same content dropped again under another name (and day): nothing
    (lake_dir / "landing" / DAY2).mkdir()
    shutil.copy(a, lake_dir / "landing" / DAY2 / "calls-a-again.jsonl")
    third = tick(instance, lake_dir, second.cursor)
    assert not third.run_requests

    # run what the sensor asked for, through the code location's ingest job
    monkeypatch.setenv("AUDITLAKE_LAKE", str(lake_dir))
    job = defs.resolve_job_def("ingest_job")
    for req in second.run_requests:
        result = job.execute_in_process(run_config=req.run_config, partition_key=req.partition_key,
                                        instance=instance, tags=req.tags)
        assert result.success
        (mat,) = result.asset_materializations_for_node("ledger")
        assert mat.metadata["accepted"].value in (5, 4)

    # a sensor that starts afresh (no cursor) skips content already in the ingest log
    fresh = tick(instance, lake_dir, None)
    assert not fresh.run_requests

    # a genuinely new file triggers exactly one run; a file dated before the partitions none
    c = write_jsonl(lake_dir / "landing" / DAY2 / "calls-c.jsonl", [event("call.started", n) for n in range(20, 23)])
    write_jsonl(lake_dir / "landing" / "1999-01-01" / "ancient.jsonl", [event("user.login", 50)])
    fourth = tick(instance, lake_dir, third.cursor)
    assert [(r.partition_key, r.run_key) for r in fourth.run_requests] == [(DAY2, f"landing:{sha(c)}")]


def test_a_file_without_a_date_belongs_to_its_modification_day(lake_dir):
    instance = DagsterInstance.ephemeral()
    f = write_jsonl(lake_dir / "landing" / "calls.jsonl", [event("call.started", 1)])
    os.utime(f, (1772461800, 1772461800))  # 2026-03-02T14:30:00Z
    (req,) = tick(instance, lake_dir).run_requests
    assert req.partition_key == DAY1


def test_a_file_dated_outside_the_partitions_waits_and_never_hides_a_valid_copy(lake_dir):
    """Such a file is only warned about, not recorded: renamed into a partition day it is new
    work, and the same content under a valid day is requested at once."""
    instance = DagsterInstance.ephemeral()
    old = write_jsonl(lake_dir / "landing" / "1999-01-01" / "old.jsonl", [event("user.login", 60)])
    first = tick(instance, lake_dir)
    assert not first.run_requests and "1999-01-01/old.jsonl" not in json.loads(first.cursor)["files"]
    (lake_dir / "landing" / DAY1).mkdir()
    shutil.move(old, lake_dir / "landing" / DAY1 / "old.jsonl")  # the fix the warning asks for
    (req,) = tick(instance, lake_dir, first.cursor).run_requests
    assert req.partition_key == DAY1 and req.run_key == f"landing:{sha(lake_dir / 'landing' / DAY1 / 'old.jsonl')}"
    same = write_jsonl(lake_dir / "landing" / "1999-01-03" / "x.jsonl", [event("user.login", 61)])
    shutil.copy(same, lake_dir / "landing" / f"x-{DAY2}.jsonl")
    reqs = tick(instance, lake_dir, first.cursor).run_requests
    assert f"landing:{sha(same)}" in {r.run_key for r in reqs}


def test_a_missing_landing_folder_is_named_in_the_skip_reason(tmp_path):
    result = tick(DagsterInstance.ephemeral(), tmp_path / "no-lake-here")
    assert not result.run_requests and "no landing folder at" in result.skip_message


def test_a_file_renamed_before_its_run_is_asked_for_again_under_its_new_name(lake_dir, monkeypatch):
    """The run of a file moved away before it started fails; the content is not lost: the
    next tick asks again (a new run key), and once ingested nothing more is asked."""
    instance = DagsterInstance.ephemeral()
    monkeypatch.setenv("AUDITLAKE_LAKE", str(lake_dir))
    job = defs.resolve_job_def("ingest_job")
    a = write_jsonl(lake_dir / "landing" / DAY1 / "calls-a.jsonl", [event("call.started", n) for n in range(5)])
    first = tick(instance, lake_dir)
    (req,) = first.run_requests
    moved = lake_dir / "landing" / DAY2 / "calls-a-renamed.jsonl"
    moved.parent.mkdir(parents=True)
    shutil.move(a, moved)

    def run(req):
        return job.execute_in_process(run_config=req.run_config, partition_key=req.partition_key, instance=instance,
                                      tags={**req.tags, "dagster/run_key": req.run_key}, raise_on_error=False)

    assert not run(req).success
    second = tick(instance, lake_dir, first.cursor)
    (again,) = second.run_requests
    assert again.run_key == f"landing:{sha(moved)}:1" and again.partition_key == DAY2
    assert again.run_config["ops"]["ledger"]["config"]["files"] == [f"{DAY2}/calls-a-renamed.jsonl"]
    assert run(again).success
    assert not tick(instance, lake_dir, second.cursor).run_requests


def test_a_request_whose_run_is_gone_is_made_again_later(lake_dir, monkeypatch):
    """A run deleted (or a request the daemon never turned into one): the content is not
    lost. The next ticks leave it alone for a while (its run may be about to be made), then
    ask again under the same run key (which keeps a run that does exist from being made twice)."""
    import pipelines.sensors as sensors

    instance = DagsterInstance.ephemeral()
    a = write_jsonl(lake_dir / "landing" / DAY1 / "calls-a.jsonl", [event("call.started", n) for n in range(5)])
    first = tick(instance, lake_dir)
    (req,) = first.run_requests
    assert not tick(instance, lake_dir, first.cursor).run_requests  # asked a moment ago
    later = sensors.time.time() + sensors.REASK_S + 1
    monkeypatch.setattr(sensors.time, "time", lambda: later)
    (again,) = tick(instance, lake_dir, first.cursor).run_requests
    assert again.run_key == req.run_key == f"landing:{sha(a)}"


def test_an_unsealed_tail_a_failed_run_left_gets_a_run_that_seals_it(lake_dir, monkeypatch):
    """A run failed between the ledger commit and its checkpoint: its file is in the ingest
    log, so no new file brings a run. The sensor asks for one (once per ledger version),
    and that run, which ingests nothing new, seals the tail: verify is clean."""
    from auditlake import ingest as ingest_module
    from auditlake.errors import AuditlakeError
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake
    from auditlake.verify import verify
    from pipelines.sensors import unsealed_tail

    instance = DagsterInstance.ephemeral()
    lake = Lake.open(str(lake_dir))
    ingest(lake, [str(write_jsonl(lake_dir / "landing" / DAY1 / "a.jsonl", [event("call.started", n) for n in range(3)]))])

    def refused(*_a, **_k):
        raise AuditlakeError("cannot append to table checkpoints: Operation not permitted")

    with monkeypatch.context() as m:
        m.setattr(ingest_module, "_checkpoint", refused)
        try:
            ingest(lake, [str(write_jsonl(lake_dir / "landing" / DAY1 / "b.jsonl", [event("user.login", n) for n in range(10, 14)]))])
        except AuditlakeError:
            pass
    version, rows = unsealed_tail(lake)
    assert rows == 4 and not verify(lake, update_trust=False).ok
    # Not at once: a writer outside Dagster may be between its ledger and checkpoint commits.
    import pipelines.sensors as sensors

    now = [sensors.time.time()]
    monkeypatch.setattr(sensors.time, "time", lambda: now[0])
    early = tick(instance, lake_dir)
    assert not early.run_requests and json.loads(early.cursor)["unsealed"] == [version, now[0]]
    now[0] += sensors.SEAL_AFTER_S
    first = tick(instance, lake_dir, early.cursor)
    (req,) = first.run_requests
    assert req.run_key == f"seal:{version}" and req.tags["auditlake/seal"] == str(version)
    monkeypatch.setenv("AUDITLAKE_LAKE", str(lake_dir))
    result = defs.resolve_job_def("ingest_job").execute_in_process(
        run_config=req.run_config, partition_key=req.partition_key, instance=instance, tags=req.tags)
    assert result.success
    assert unsealed_tail(lake) is None and verify(lake, update_trust=False).ok
    assert not tick(instance, lake_dir, first.cursor).run_requests
