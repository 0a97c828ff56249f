"""Retention lock (RET-WORM): on S3, COMPLIANCE-mode Object Lock until at least
occurred_at + the retention period on every committed object, which cannot be deleted or
overwritten; locally, read-only files plus a signed manifest. `verify` reports whatever
breaks either; `repair` restores from the sealed versions; legal holds are recorded and
block erasure."""
from __future__ import annotations

import json
import os
import stat
from datetime import date, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from events import forge_delta_checkpoint
from fixtures_s3 import assert_exact, run_cli, s3_client, write_landing
from auditlake.errors import AuditlakeError
from auditlake.lake import admin, retention
from auditlake.lake.store import Lake


def _bucket(uri: str) -> str:
    return uri.removeprefix("s3://").split("/")[0]


def _ingest(uri: str, folder: Path, lines: int = 60, seed: int = 0, bad_every: int = 0) -> dict:
    """Ingest in this process (the CLI is exercised in test_s3, test_concurrency, test_crash)."""
    from auditlake.ingest import ingest

    data = write_landing(folder / f"f{seed}.jsonl", lines, seed=seed, bad_every=bad_every)
    ingest(Lake.open(uri), [str(folder)])
    return data


def _findings(uri: str) -> list[dict]:
    from dataclasses import asdict

    from auditlake.verify import verify

    report = verify(Lake.open(uri), update_trust=False)
    assert report.ok == (not report.findings)
    # Findings name a table's file relative to the table; the retention findings here by the
    # object's path in the lake, as the retention module and repair name objects.
    return [asdict(f) | ({"file": f"tables/{f.table}/{f.file}"} if f.kind == "RET-WORM" and f.file
                         and not f.table.startswith("_") and f.table not in ("lake", "bucket") else {})
            for f in report.findings]


def _init(uri: str, years: int = 7) -> dict:
    return admin.init_lake(Lake.open(uri), years)


def _committed(uri: str) -> list[retention.Obj]:
    lake = Lake.open(uri)
    return [o for t in retention.table_names(lake) for o in retention.committed(lake, t)]


def _ledger_file(uri: str) -> retention.Obj:
    return next(o for o in _committed(uri) if o.table == "ledger" and o.kind == "data")


# ----------------------------------------------------------------------------- S3 Object Lock
@pytest.mark.s3
def test_every_committed_object_is_locked_in_compliance_mode(s3_lake_uri, s3_env, tmp_path):
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 80, seed=1, bad_every=20)
    c = s3_client(s3_env.endpoint)
    objs = _committed(s3_lake_uri)
    kinds = {(o.table, o.kind) for o in objs}
    assert {("ledger", "data"), ("ledger", "log"), ("checkpoints", "data"), ("checkpoints", "log"),
            ("quarantine", "data"), ("ingest_log", "data")} <= kinds
    today = date.today()
    for o in objs:
        h = c.head_object(Bucket=_bucket(s3_lake_uri), Key=f"lake/{o.rel}")
        assert h["ObjectLockMode"] == "COMPLIANCE", o.rel
        until = h["ObjectLockRetainUntilDate"].date()
        assert until >= retention.add_years(today, 7), o.rel
        for d in o.dates:  # at least occurred_at + 7 years, for every event in it
            assert until >= retention.add_years(d + timedelta(days=1), 7)
    assert _findings(s3_lake_uri) == []


@pytest.mark.s3
def test_future_events_are_retained_from_their_occurred_at(s3_lake_uri, s3_env, tmp_path):
    """An event dated after today keeps its file locked until its own date + 7 years."""
    from fixtures_s3 import event_line
    import random

    rnd = random.Random(3)
    future = date.today() + timedelta(days=400)
    line = json.loads(event_line(rnd, 1))
    line["occurred_at"] = f"{future.isoformat()}T10:00:00Z"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f.jsonl").write_text(json.dumps(line) + "\n")
    from auditlake.ingest import ingest

    ingest(Lake.open(s3_lake_uri), [str(tmp_path / "in")])
    c = s3_client(s3_env.endpoint)
    ledger = [o for o in _committed(s3_lake_uri) if o.table == "ledger"]
    assert ledger and all(future in o.dates for o in ledger)
    for o in ledger:
        until = c.head_object(Bucket=_bucket(s3_lake_uri), Key=f"lake/{o.rel}")["ObjectLockRetainUntilDate"].date()
        assert until >= retention.add_years(future + timedelta(days=1), 7)


@pytest.mark.s3
def test_sealed_objects_cannot_be_deleted_or_overwritten(s3_lake_uri, s3_env, tmp_path):
    _ingest(s3_lake_uri, tmp_path / "in", 40)
    c = s3_client(s3_env.endpoint)
    bucket = _bucket(s3_lake_uri)
    target = _ledger_file(s3_lake_uri)
    k = f"lake/{target.rel}"
    original = c.get_object(Bucket=bucket, Key=k)
    body, vid = original["Body"].read(), original["VersionId"]
    # Deleting the sealed version is refused by S3 (COMPLIANCE: nobody, not even root).
    with pytest.raises(ClientError) as exc:
        c.delete_object(Bucket=bucket, Key=k, VersionId=vid)
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    batch = c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k, "VersionId": vid}]})
    assert not batch.get("Deleted") and batch["Errors"][0]["Key"] == k
    # An overwrite cannot replace it either: it only stacks a new version on top...
    c.put_object(Bucket=bucket, Key=k, Body=b"forged parquet")
    assert c.get_object(Bucket=bucket, Key=k, VersionId=vid)["Body"].read() == body
    # ...and a plain delete only a delete marker. Both are reported by verify.
    findings = _findings(s3_lake_uri)
    assert any(f["kind"] == "RET-WORM" and f["file"] == target.rel and "2 versions" in f["detail"] for f in findings)
    c.delete_object(Bucket=bucket, Key=f"lake/tables/checkpoints/_delta_log/{0:020d}.json")
    findings = _findings(s3_lake_uri)
    assert any(f["kind"] == "RET-WORM" and f["file"].startswith("tables/checkpoints/_delta_log/") and "delete marker" in f["detail"]
               for f in findings), findings
    assert c.get_object(Bucket=bucket, Key=k, VersionId=vid)["Body"].read() == body


@pytest.mark.s3
def test_verify_reports_an_object_not_under_retention(s3_lake_uri, s3_env, tmp_path):
    """A commit made around the lake (no lock) breaks RET-WORM."""
    import pyarrow as pa
    from deltalake import write_deltalake

    _ingest(s3_lake_uri, tmp_path / "in", 20)
    assert _findings(s3_lake_uri) == []
    lake = Lake.open(s3_lake_uri)
    write_deltalake(lake.table_uri("extra"), pa.table({"x": [1]}), storage_options=lake.storage_options,
                    configuration={"delta.appendOnly": "true"})
    f = _findings(s3_lake_uri)
    unlocked = [x for x in f if x["kind"] == "RET-WORM" and "not under retention" in x["detail"]]
    assert {x["file"].split("/_delta_log/")[0] for x in unlocked if "_delta_log" in x["file"]} == {"tables/extra"}
    assert any(x["file"].endswith(".parquet") for x in unlocked)


@pytest.mark.s3
def test_repair_restores_tampered_objects_on_s3(s3_lake_uri, s3_env, tmp_path):
    _init(s3_lake_uri)
    data = _ingest(s3_lake_uri, tmp_path / "in", 90, seed=5, bad_every=30)
    c = s3_client(s3_env.endpoint)
    bucket = _bucket(s3_lake_uri)
    # Tamper: overwrite a ledger data file with a doctored copy, overwrite a Delta log entry,
    # and delete a checkpoint's data file.
    import io

    import pyarrow.parquet as pq

    target = _ledger_file(s3_lake_uri)
    t = pq.read_table(io.BytesIO(c.get_object(Bucket=bucket, Key=f"lake/{target.rel}")["Body"].read()))
    doctored = t.set_column(t.schema.get_field_index("tenant_id"), "tenant_id",
                            __import__("pyarrow").array(["tenant-evil"] * t.num_rows))
    buf = io.BytesIO()
    pq.write_table(doctored, buf)
    c.put_object(Bucket=bucket, Key=f"lake/{target.rel}", Body=buf.getvalue())
    log0 = f"lake/tables/ingest_log/_delta_log/{0:020d}.json"
    c.put_object(Bucket=bucket, Key=log0, Body=c.get_object(Bucket=bucket, Key=log0)["Body"].read() + b"\n")
    cp = next(o for o in _committed(s3_lake_uri) if o.table == "checkpoints" and o.kind == "data")
    c.delete_object(Bucket=bucket, Key=f"lake/{cp.rel}")
    before = _findings(s3_lake_uri)
    kinds = {f["kind"] for f in before}
    assert "RET-WORM" in kinds and len(kinds) >= 2, before

    r = run_cli("--lake", s3_lake_uri, "repair", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and not doc["failed"]
    assert {target.rel, cp.rel, log0.removeprefix("lake/")} <= set(doc["repaired"])
    assert _findings(s3_lake_uri) == []
    for k in (f"lake/{target.rel}", log0, f"lake/{cp.rel}"):
        versions = c.list_object_versions(Bucket=bucket, Prefix=k)
        assert len(versions.get("Versions", [])) == 1 and not versions.get("DeleteMarkers")
    # The incident is on record in the lake (itself a sealed table).
    lake = Lake.open(s3_lake_uri)
    incidents = lake.delta("incidents").to_pyarrow_dataset().to_table().to_pylist()
    assert {i["object"] for i in incidents if i["kind"] == "object_restored"} >= {target.rel, cp.rel}
    assert all(i["at"] is not None and i["detail"] for i in incidents)
    assert_exact(s3_lake_uri, data["lines"], data["event_ids"], files=1)
    # And the repaired lake keeps working.
    _ingest(s3_lake_uri, tmp_path / "in2", 30, seed=6)
    assert _findings(s3_lake_uri) == []


@pytest.mark.s3
def test_no_writer_builds_on_a_log_entry_written_over_on_s3(s3_lake_uri, s3_env, tmp_path):
    """A new version put on a committed (locked) log entry that drops its data file: ingest
    refuses before its sweep could take the file for a leftover; repair restores the entry
    and writers carry on."""
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 40, seed=1)
    _ingest(s3_lake_uri, tmp_path / "in2", 40, seed=2)
    c, bucket = s3_client(s3_env.endpoint), _bucket(s3_lake_uri)
    lake = Lake.open(s3_lake_uri)
    latest = retention.list_log(lake, "ledger").latest
    key = f"lake/tables/ledger/_delta_log/{latest:020d}.json"
    lines = c.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    kept = [ln for ln in lines if b'"add"' not in ln]
    assert len(kept) < len(lines)
    c.put_object(Bucket=bucket, Key=key, Body=b"\n".join(kept) + b"\n")
    data_keys = {v["Key"] for v in c.list_object_versions(Bucket=bucket, Prefix="lake/tables/ledger/event_date=")
                 .get("Versions", [])}
    with pytest.raises(AuditlakeError, match="was changed after it was committed"):
        _ingest(s3_lake_uri, tmp_path / "in3", 10, seed=3)
    after = c.list_object_versions(Bucket=bucket, Prefix="lake/tables/ledger/event_date=")
    assert not after.get("DeleteMarkers") and {v["Key"] for v in after["Versions"]} == data_keys  # nothing swept
    r = run_cli("--lake", s3_lake_uri, "repair", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
    _ingest(s3_lake_uri, tmp_path / "in3", 10, seed=3)
    assert _findings(s3_lake_uri) == []


@pytest.mark.s3
def test_repair_of_a_forged_commit_or_a_weakened_lock_leaves_writers_free_on_s3(s3_lake_uri, s3_env, tmp_path):
    """A forged ingest_log commit that repair removes leaves no version behind to read as a
    hidden commit (writers carry on); nor does a junk version put and deleted at the next
    log entry. A committed object whose lock was removed or weakened to GOVERNANCE (with the
    bypass permission) is locked in COMPLIANCE mode again."""
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 40, seed=1)
    c, bucket = s3_client(s3_env.endpoint), _bucket(s3_lake_uri)
    lake = Lake.open(s3_lake_uri)
    forged_version = retention.list_log(lake, "ingest_log").latest + 1
    forged = f"lake/tables/ingest_log/_delta_log/{forged_version:020d}.json"
    c.put_object(Bucket=bucket, Key=forged, Body=b'{"commitInfo":{"operation":"WRITE"}}\n')
    junk = f"lake/tables/quarantine/_delta_log/{retention.list_log(lake, 'quarantine').latest + 1:020d}.json"
    c.put_object(Bucket=bucket, Key=junk, Body=b"{}\n")
    c.delete_object(Bucket=bucket, Key=junk)
    ledger, cp = _ledger_file(s3_lake_uri), next(o for o in _committed(s3_lake_uri) if o.table == "checkpoints")
    c.put_object_retention(Bucket=bucket, Key=f"lake/{ledger.rel}", Retention={}, BypassGovernanceRetention=True)
    c.put_object_retention(Bucket=bucket, Key=f"lake/{cp.rel}", BypassGovernanceRetention=True,
                           Retention={"Mode": "GOVERNANCE", "RetainUntilDate": "2030-01-01T00:00:00Z"})
    kinds = {f["kind"] for f in _findings(s3_lake_uri)}
    assert {"unsigned_commit", "RET-WORM"} <= kinds, kinds
    r = run_cli("--lake", s3_lake_uri, "repair", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"], r.stdout + r.stderr
    assert {f"tables/ingest_log/_delta_log/{forged_version:020d}.json", ledger.rel, cp.rel} <= set(doc["repaired"])
    for rel in (ledger.rel, cp.rel):
        assert c.head_object(Bucket=bucket, Key=f"lake/{rel}")["ObjectLockMode"] == "COMPLIANCE"
    assert not c.list_object_versions(Bucket=bucket, Prefix=forged).get("Versions")
    _ingest(s3_lake_uri, tmp_path / "in2", 20, seed=2)  # not stopped by a "hidden" commit
    assert _findings(s3_lake_uri) == []


def test_a_forged_retention_watermark_does_not_stop_writers_locking(s3_lake_uri, s3_env, tmp_path):
    """The watermark (how far retention was applied) lives in the bucket: raised by someone
    who can write there, it would stop every later commit being locked. It is signed; a
    forged one reads as none, and the next writer locks everything committed."""
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 40, seed=1)
    c = s3_client(s3_env.endpoint)
    bucket = _bucket(s3_lake_uri)
    key = f"lake/{retention.WATERMARK_DIR}/ledger.json"
    mark = json.loads(c.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert mark["signature"] and mark["table"] == "ledger"
    c.put_object(Bucket=bucket, Key=key, Body=json.dumps(mark | {"locked_through": 10**9}).encode())
    retention._marks.clear()  # as a new process
    write_landing(tmp_path / "in2" / "b.jsonl", 20, seed=2)
    r = run_cli("--lake", s3_lake_uri, "ingest", str(tmp_path / "in2"))
    assert r.returncode == 0, r.stderr
    for o in _committed(s3_lake_uri):
        head = c.head_object(Bucket=bucket, Key=f"lake/{o.rel}")
        assert head.get("ObjectLockMode") == "COMPLIANCE", o.rel
    assert _findings(s3_lake_uri) == []


def test_ingest_does_not_write_over_a_hidden_tail_on_s3(s3_lake_uri, s3_env, tmp_path):
    """Delete markers on the newest log entry of each table hide a sealed batch: an ingest then
    would sweep its data files as leftovers and commit that version again (a fork). It stops
    before writing anything; repair restores the entries and the lake carries on."""
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 40, seed=1)
    _ingest(s3_lake_uri, tmp_path / "in2", 40, seed=2)
    c = s3_client(s3_env.endpoint)
    bucket = _bucket(s3_lake_uri)
    lake = Lake.open(s3_lake_uri)
    hidden = [retention.log_rel(t, retention.list_log(lake, t).latest) for t in ("ledger", "checkpoints", "ingest_log")]
    for rel in hidden:
        c.delete_object(Bucket=bucket, Key=f"lake/{rel}")
    before = {o["Key"]: o["ETag"] for o in c.list_objects_v2(Bucket=bucket, Prefix="lake/tables/").get("Contents", [])}
    write_landing(tmp_path / "in3" / "c.jsonl", 10, seed=3)
    r = run_cli("--lake", s3_lake_uri, "ingest", str(tmp_path / "in3"))
    assert r.returncode == 2 and "was committed and is gone" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    after = {o["Key"]: o["ETag"] for o in c.list_objects_v2(Bucket=bucket, Prefix="lake/tables/").get("Contents", [])}
    assert after == before  # nothing swept, nothing written
    assert run_cli("--lake", s3_lake_uri, "repair").returncode == 0
    _ingest(s3_lake_uri, tmp_path / "in3", 10, seed=3)
    assert _findings(s3_lake_uri) == []


# ----------------------------------------------------------------------------- local equivalent
def test_local_lake_seals_committed_files(lake_dir, tmp_path):
    uri = str(lake_dir)
    _init(uri)
    _ingest(uri, tmp_path / "in", 50, seed=2, bad_every=10)
    objs = _committed(uri)
    assert objs
    for o in objs:
        mode = os.stat(lake_dir / o.rel).st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), o.rel
    manifests = list((lake_dir / "_retention").glob("*.json"))
    sealed = {}
    for m in manifests:
        sealed.update(json.loads(m.read_text())["objects"])
        assert not os.stat(m).st_mode & stat.S_IWUSR
    assert {o.rel for o in objs} <= set(sealed)
    for o in objs:
        assert sealed[o.rel]["retain_until"] >= retention.add_years(date.today(), 7).isoformat()
    assert _findings(uri) == []


def test_local_verify_reports_what_breaks_the_seal(lake_dir, tmp_path):
    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 50, seed=2)
    objs = _committed(uri)
    data_file = next(o for o in objs if o.table == "ledger" and o.kind == "data")
    other = next(o for o in objs if o.table == "quarantine" or o.table == "ingest_log")
    path = lake_dir / data_file.rel
    os.chmod(path, 0o644)  # lock lifted, content intact
    f = _findings(uri)
    assert [x["detail"] for x in f if x["file"] == data_file.rel] == ["sealed object is writable (retention lock lifted)"]
    with open(path, "ab") as fh:
        fh.write(b"x")
    f = _findings(uri)
    assert any(x["file"] == data_file.rel and "differs from its sealed version" in x["detail"] for x in f)
    os.chmod(lake_dir / other.rel, 0o644)
    os.remove(lake_dir / other.rel)
    f = _findings(uri)
    assert any(x["file"] == other.rel and x["detail"] == "sealed object was deleted" for x in f)
    # A forged manifest does not verify.
    m = sorted((lake_dir / "_retention").glob("*.json"))[0]
    body = json.loads(m.read_text())
    body["objects"][data_file.rel]["sha256"] = "0" * 64
    os.chmod(m, 0o644)
    m.write_text(json.dumps(body))
    f = _findings(uri)
    assert any(x["kind"] == "RET-WORM" and "manifest signature does not verify" in x["detail"] for x in f)


def _rows_readers_see(lake_dir: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(lake_dir / "tables" / "ledger")).to_pyarrow_dataset().count_rows()


def _moved_to_2031(add: dict) -> dict:
    return add | {"partitionValues": [("event_date", "2031-01-01")]}


@pytest.mark.parametrize("edit", [None, _moved_to_2031], ids=["file-left-out", "partition-moved"])
def test_a_forged_delta_checkpoint_is_reported_never_sealed_or_swept_and_repaired(lake_dir, tmp_path, edit):
    from deltalake import DeltaTable

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in1", 40, seed=1)
    # A genuine checkpoint (delta-rs writes one every 100 commits) is no finding and is sealed.
    DeltaTable(str(lake_dir / "tables" / "ledger")).create_checkpoint()
    found = _findings(uri)
    assert found and all(x["file"].endswith(".checkpoint.parquet") and "not under retention" in x["detail"] for x in found)
    _ingest(uri, tmp_path / "in2", 40, seed=2)
    assert _findings(uri) == []
    total = _rows_readers_see(lake_dir)
    hidden = next(o for o in _committed(uri) if o.table == "ledger" and o.kind == "data")
    checkpoint = forge_delta_checkpoint(lake_dir / "tables" / "ledger", hidden.rel.split("/", 2)[2], edit)
    # Readers start from the forged checkpoint.
    if edit is None:
        assert _rows_readers_see(lake_dir) < total
    else:
        moved = DeltaTable(str(lake_dir / "tables" / "ledger")).to_pyarrow_table(filters=[("event_date", "=", "2031-01-01")])
        assert moved.num_rows > 0

    # A new process reads the table from the forged checkpoint; its sweep goes by the log.
    write_landing(tmp_path / "in3" / "f3.jsonl", 40, seed=3)
    run_cli("ingest", str(tmp_path / "in3"), "--lake", uri, check=True)
    assert (lake_dir / hidden.rel).exists()
    forged = {str(checkpoint.relative_to(lake_dir)), "tables/ledger/_delta_log/_last_checkpoint"}
    found = _findings(uri)
    assert {(x["kind"], x["table"], f"tables/ledger/{x['file']}") for x in found} == {
        ("history_forged", "ledger", rel) for rel in forged}, found
    sealed = {rel for m in (lake_dir / "_retention").glob("*.json") for rel in json.loads(m.read_text())["objects"]}
    assert not forged & sealed

    result = admin.repair(Lake.open(uri))
    assert result["ok"], result
    assert not any((lake_dir / rel).exists() for rel in forged)
    assert _rows_readers_see(lake_dir) == total + 40
    assert _findings(uri) == []


def test_local_commit_without_seal_is_reported(lake_dir, tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 20)
    write_deltalake(str(lake_dir / "tables" / "extra"), pa.table({"x": [1]}), configuration={"delta.appendOnly": "true"})
    f = _findings(uri)
    assert {x["file"] for x in f if "not under retention" in x["detail"]} >= {f"tables/extra/_delta_log/{0:020d}.json"}


def test_local_repair_restores_the_lock_and_reports_what_it_cannot(lake_dir, tmp_path):
    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 40, seed=3)
    objs = _committed(uri)
    loosened = [o for o in objs if o.table == "ledger" and o.kind == "data"][0]
    os.chmod(lake_dir / loosened.rel, 0o666)
    r = run_cli("--lake", uri, "repair", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and loosened.rel in doc["repaired"]
    assert not os.stat(lake_dir / loosened.rel).st_mode & stat.S_IWUSR
    incidents = Lake.open(uri).delta("incidents").to_pyarrow_dataset().to_table().to_pylist()
    assert [i["kind"] for i in incidents] == ["lock_restored"]
    # A changed file has no sealed copy to come back from in a local lake: reported, exit 1.
    victim = lake_dir / [o for o in objs if o.table == "checkpoints" and o.kind == "data"][0].rel
    os.chmod(victim, 0o644)
    victim.write_bytes(victim.read_bytes()[:-3] + b"zzz")
    r = run_cli("--lake", uri, "repair")
    assert r.returncode == 1
    assert "cannot restore" in r.stdout and victim.name in r.stdout


def test_uncommitted_leftovers_are_swept_but_foreign_files_are_not(lake_dir, tmp_path):
    """A crashed writer's data file (no commit references it) is removed once a later commit
    proves no writer can commit it; a file not named like delta-rs's is left for verify."""
    import time as _t

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "a", 20, seed=1)
    ledger = lake_dir / "tables" / "ledger"
    src = next(ledger.rglob("part-*.parquet"))
    orphan = src.parent / "part-00000-00000000-0000-4000-8000-000000000000-c000.snappy.parquet"
    orphan.write_bytes(src.read_bytes())
    foreign = src.parent / "evil.parquet"
    foreign.write_bytes(src.read_bytes())
    assert {"data_file_inserted"} <= {f["kind"] for f in _findings(uri)}
    _t.sleep(0.05)
    _ingest(uri, tmp_path / "b", 20, seed=2)  # a later commit of the ledger
    assert not orphan.exists() and foreign.exists()
    f = _findings(uri)
    assert [x["file"] for x in f if x["kind"] == "data_file_inserted"] == [str(foreign.relative_to(ledger))]


# ----------------------------------------------------------------------------- policy
def test_retention_period_is_configurable(lake_uri, tmp_path):
    assert _init(lake_uri, 10)["retention"]["years"] == 10
    _ingest(lake_uri, tmp_path / "in", 30)
    lake = Lake.open(lake_uri)
    o = _ledger_file(lake_uri)
    if lake.is_s3:
        from auditlake.lake import s3

        until = s3.lock_info(lake, o.rel).until.date()
    else:
        sealed = {}
        for m in (Path(lake_uri) / "_retention").glob("*.json"):
            sealed.update(json.loads(m.read_text())["objects"])
        until = date.fromisoformat(sealed[o.rel]["retain_until"])
    assert until >= retention.add_years(date.today(), 10)
    assert _findings(lake_uri) == []


def test_a_policy_edited_down_is_reported(lake_uri, tmp_path):
    """Seven years or more, but less than the lake was sealed under: new objects would be
    kept for less than promised. Local lakes know it from the signed retention manifests,
    S3 from auditlake.json's earlier versions; put back, it is no finding."""
    _init(lake_uri, 10)
    _ingest(lake_uri, tmp_path / "a", 20)
    assert _findings(lake_uri) == []
    lake = Lake.open(lake_uri)
    meta = lake.read_json("auditlake.json")
    meta["retention"]["years"] = 8
    lake.write_json("auditlake.json", meta)
    assert [(x["kind"], x["file"], x["detail"]) for x in _findings(lake_uri)] == [
        ("RET-WORM", "auditlake.json", "the retention policy is 8 years, shortened from 10 "
         "(a lake's retention can grow, never shrink)")]
    if lake.is_s3:  # the evidence, auditlake.json's earlier versions, cannot be deleted
        from botocore.exceptions import ClientError

        from auditlake.lake import s3

        versions = s3.history(lake, "auditlake.json").versions
        assert len(versions) >= 3  # created, the policy set, the keys published (then the edit)
        for v in versions[:-1]:
            with pytest.raises(ClientError):
                s3.client(lake).delete_object(Bucket=lake.bucket, Key=s3.key(lake, "auditlake.json"), VersionId=v.version_id)
    meta["retention"]["years"] = 10
    lake.write_json("auditlake.json", meta)
    assert _findings(lake_uri) == []


def test_a_policy_the_identity_file_does_not_state_is_no_promise(lake_dir, tmp_path, monkeypatch):
    """Writers that took AUDITLAKE_RETENTION_YEARS sealed under it, but auditlake.json never
    said so: a verify without the variable reports nothing shortened (a false alarm)."""
    uri = str(lake_dir)
    monkeypatch.setenv("AUDITLAKE_RETENTION_YEARS", "10")
    _ingest(uri, tmp_path / "a", 20)
    assert _findings(uri) == []
    monkeypatch.delenv("AUDITLAKE_RETENTION_YEARS")
    assert _findings(uri) == []


def test_a_policy_shorter_than_seven_years_is_refused_reported_and_never_used(lake_dir, tmp_path):
    """init refuses it; edited into auditlake.json (anyone who can write the lake can), it is
    reported and writers still lock for seven years."""
    from auditlake.errors import AuditlakeError

    uri = str(lake_dir)
    with pytest.raises(AuditlakeError, match="at least 7"):
        _init(uri, 3)
    _init(uri, 7)
    meta = json.loads((lake_dir / "auditlake.json").read_text())
    meta["retention"]["years"] = 1
    (lake_dir / "auditlake.json").write_text(json.dumps(meta))
    _ingest(uri, tmp_path / "in", 10)
    f = _findings(uri)
    assert [x["detail"] for x in f] == ["the retention policy is 1 years; RET-WORM needs at least 7 (writers lock for 7)"]
    sealed = {}
    for m in (lake_dir / "_retention").glob("*.json"):
        sealed.update(json.loads(m.read_text())["objects"])
    assert sealed and all(o["retain_until"] >= retention.add_years(date.today(), 7).isoformat() for o in sealed.values())


def test_required_until_is_at_least_occurred_at_plus_the_period():
    assert retention.required_until(date(2026, 3, 1), [date(2026, 1, 5)], 7) == date(2033, 3, 2)
    assert retention.required_until(date(2026, 3, 1), [date(2027, 1, 5)], 7) == date(2034, 1, 6)
    assert retention.required_until(date(2028, 2, 28), [], 7) == date(2035, 3, 1)  # 29 Feb + 7y
    # An event dated within the period of year 9999 is kept as long as a date can say.
    assert retention.required_until(date(2026, 3, 1), [date(9993, 1, 1)], 7) == date.max
    assert retention.required_until(date(2026, 3, 1), [date.max], 7) == date.max


# ----------------------------------------------------------------------------- legal holds
def _subjects(uri: str) -> list[str]:
    t = Lake.open(uri).delta("ledger").to_pyarrow_dataset().to_table(columns=["subject_id"])
    return sorted({s for s in t.column("subject_id").to_pylist() if s})


def test_legal_hold_set_and_lift(lake_uri, tmp_path):
    _ingest(lake_uri, tmp_path / "in", 30, seed=8)
    lake = Lake.open(lake_uri)
    s1, s2 = _subjects(lake_uri)[:2]
    assert not admin.legal_hold_active(lake) and not admin.legal_hold_active(lake, s1)
    run_cli("--lake", lake_uri, "hold", "set", "--subject", s1, "--reason", "litigation 42", check=True)
    assert admin.legal_hold_active(lake, s1) and not admin.legal_hold_active(lake, s2)
    assert not admin.legal_hold_active(lake)
    admin.set_hold(lake, None, "regulator inquiry")
    assert admin.legal_hold_active(lake) and admin.legal_hold_active(lake, s2)
    st = json.loads(run_cli("--lake", lake_uri, "hold", "status", "--json", check=True).stdout)
    assert {(h["scope"], h["subject_id"], h["reason"]) for h in st["holds"]} == {
        ("subject", s1, "litigation 42"), ("lake", None, "regulator inquiry")}
    if lake.is_s3:
        from auditlake.lake import s3

        objs = _committed(lake_uri)
        assert all(s3.lock_info(lake, o.rel).legal_hold for o in objs)
        # Objects committed while the lake-wide hold is on are held from the start.
        _ingest(lake_uri, tmp_path / "in2", 10, seed=9)
        new = [o for o in _committed(lake_uri) if o.rel not in {x.rel for x in objs}]
        assert new and all(s3.lock_info(lake, o.rel).legal_hold for o in new)
    assert _findings(lake_uri) == []
    admin.lift_hold(lake, None, "inquiry closed")
    assert not admin.legal_hold_active(lake) and admin.legal_hold_active(lake, s1)
    if lake.is_s3:
        held = {o.rel for o in _committed(lake_uri) if s3.lock_info(lake, o.rel).legal_hold}
        assert held == admin.subject_files(lake, {s1}) and held
        # A subject's file whose S3 legal hold is switched off: reported, and repair sets it again.
        off = sorted(held)[0]
        s3.set_legal_hold(lake, off, False, s3.history(lake, off).original.version_id)
        found = _findings(lake_uri)
        assert [(f["file"], "on a subject" in f["detail"]) for f in found] == [(off, True)]
        assert run_cli("--lake", lake_uri, "repair").returncode == 0 and _findings(lake_uri) == []
    with pytest.raises(AuditlakeError, match="no legal hold"):
        admin.lift_hold(lake, "subj-none", "")
    admin.lift_hold(lake, s1, "settled")
    assert not admin.legal_hold_active(lake, s1)
    assert _findings(lake_uri) == []


def test_a_forged_lift_does_not_lift_a_hold(lake_dir, tmp_path):
    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    admin.set_hold(Lake.open(uri), None, "case")
    lake = Lake.open(uri)
    rec = json.loads(next((lake_dir / "_holds").glob("*.json")).read_text())
    forged = {**rec, "action": "lift", "hold_id": "f" * 32, "at": "2999-01-01T00:00:00.000000Z"}
    (lake_dir / "_holds" / "29990101T000000000000-forged.json").write_text(json.dumps(forged))
    assert admin.legal_hold_active(lake)
    # It lifts nothing, but someone wrote it: a finding, as is any other file there that is
    # no record the lake signed.
    (lake_dir / "_holds" / "notes.txt").write_text("junk")
    (lake_dir / "_holds" / "list.json").write_text("[]")
    (lake_dir / "_holds" / "more").mkdir()
    (lake_dir / "_holds" / "more" / "lift.json").write_text(json.dumps(forged))
    assert [(f["kind"], f["table"], f["file"]) for f in _findings(uri)] == [
        ("RET-WORM", "_holds", f"_holds/{name}") for name in ("29990101T000000000000-forged.json", "list.json", "more/",
                                                              "notes.txt")]


def test_an_unsigned_hold_record_holds_is_reported_and_can_be_lifted(lake_dir, tmp_path):
    from auditlake.privacy import erase

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    s1 = _subjects(uri)[0]
    lake = Lake.open(uri)
    planted = {"hold_id": "e" * 32, "action": "set", "scope": "subject", "subject_id": s1, "reason": "x",
               "at": "9999-12-31T00:00:00.000000Z", "actor": "nobody"}
    (lake_dir / "_holds").mkdir(exist_ok=True)
    (lake_dir / "_holds" / "99991231-planted.json").write_text(json.dumps(planted))
    with pytest.raises(AuditlakeError, match="hold"):
        erase(lake, s1)
    found = _findings(uri)
    assert [f["kind"] for f in found] == ["RET-WORM"] and "not signed by the lake" in found[0]["detail"]
    admin.lift_hold(lake, s1, "planted", hold_id="e" * 32)  # dated 9999: the lift names it all the same
    assert not admin.legal_hold_active(lake, s1) and _findings(uri) == []


def _forged_hold_event(n: int, action: str, scope: str, subject_id: str | None) -> dict:
    """A producer's landing line dressed as the lake's own hold event (no record signed by the lake)."""
    from events import event

    return {**event("user.login", n=900 + n), "event_type": "config.changed", "source": "auditlake", "subject": None,
            "actor": {"type": "system", "id": "auditlake"}, "data": {
                "setting": "legal_hold", "category": "other", "old_value": "x",
                "new_value": "on" if action == "set" else "off", "hold_id": f"{n:032x}", "scope": scope,
                "subject_id": subject_id, "at": "2099-01-01T00:00:00.000000Z"}}


def test_a_producers_line_lifts_no_hold_and_a_set_it_tells_of_holds_until_lifted(lake_dir, tmp_path):
    """Any producer can write a config.changed line dressed as the lake's hold event. A lift
    so told lifts nothing; a set so told holds (the safe reading: it cannot be told apart
    from an event of a lake written before events carried signed records) until a lift
    signed by the lake names it."""
    from events import write_jsonl

    from auditlake.ingest import ingest
    from auditlake.privacy import erase

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    s1, s2 = _subjects(uri)[:2]
    lake = Lake.open(uri)
    admin.set_hold(lake, s1, "case 11")
    forged = [_forged_hold_event(1, "lift", "subject", s1), _forged_hold_event(2, "lift", "lake", None),
              _forged_hold_event(3, "set", "subject", s2)]
    report = ingest(lake, [str(write_jsonl(tmp_path / "forged" / "holds.jsonl", forged))])
    assert report.accepted == 3  # contract-valid events, kept in the ledger
    assert sorted((h["scope"], h["subject_id"]) for h in admin.active_holds(lake)) == [("subject", s1), ("subject", s2)]
    with pytest.raises(AuditlakeError, match="hold"):
        erase(lake, s1)
    assert [f["kind"] for f in _findings(uri)] == ["RET-WORM"]  # a hold the ledger tells of, not in _holds/
    admin.lift_hold(lake, s2, "not ours", hold_id=f"{3:032x}")  # dated 2099, lifted all the same
    erase(lake, s2)
    admin.set_hold(lake, None, "case 12")  # a forged lift dated 2099 voids no later hold
    assert admin.legal_hold_active(lake)
    assert _findings(uri) == []


def test_a_hold_set_before_events_carried_records_still_holds_when_its_record_is_deleted(lake_dir, tmp_path,
                                                                                         monkeypatch):
    from auditlake import audit_events
    from auditlake.privacy import erase

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    s1 = _subjects(uri)[0]
    lake = Lake.open(uri)
    build = audit_events.build_event
    with monkeypatch.context() as older_writer:  # its ledger event has the hold's fields, no signed record
        older_writer.setattr(audit_events, "build_event", lambda event_type, data, **kw: build(
            event_type, {k: v for k, v in data.items() if k != "hold_record"}, **kw))
        admin.set_hold(lake, s1, "old hold")
    for record in (lake_dir / "_holds").glob("*.json"):
        record.unlink()
    assert [h["subject_id"] for h in admin.active_holds(lake)] == [s1]
    with pytest.raises(AuditlakeError, match="hold"):
        erase(lake, s1)
    assert [f["kind"] for f in _findings(uri)] == ["RET-WORM"]


def test_each_hold_is_lifted_by_its_own_id(lake_dir, tmp_path):
    from auditlake.privacy import erase

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    s1 = _subjects(uri)[0]
    lake = Lake.open(uri)
    a = admin.set_hold(lake, None, "matter A")["hold"]["hold_id"]
    b = admin.set_hold(lake, None, "matter B")["hold"]["hold_id"]
    r = run_cli("--lake", uri, "hold", "lift", "--reason", "matter A closed")
    assert r.returncode == 2 and a in r.stderr and b in r.stderr and "--hold-id" in r.stderr
    r = run_cli("--lake", uri, "hold", "lift", "--subject", s1, "--hold-id", a, "--reason", "x")
    assert r.returncode == 2 and "is on the whole lake" in r.stderr  # a lake-wide hold is not lifted as a subject's
    run_cli("--lake", uri, "hold", "lift", "--hold-id", a, "--reason", "matter A closed", check=True)
    assert [h["hold_id"] for h in admin.active_holds(lake)] == [b]
    with pytest.raises(AuditlakeError, match="hold"):
        erase(lake, s1)
    # Without the lake's keystore no lift can be checked: said so, never a wrong list.
    r = run_cli("--lake", uri, "hold", "status", env={"AUDITLAKE_HOME": str(tmp_path / "other-host")})
    assert r.returncode == 2 and "no keystore" in r.stderr
    run_cli("--lake", uri, "hold", "lift", "--reason", "matter B closed", check=True)  # the only one left
    assert not admin.legal_hold_active(lake)
    assert _findings(uri) == []


def test_a_hold_on_an_empty_subject_is_refused_before_anything_is_written(lake_dir, tmp_path):
    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    for action in ("set", "lift"):
        r = run_cli("--lake", uri, "hold", action, "--subject", "", "--reason", "x")
        assert r.returncode == 2 and "must not be empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (lake_dir / "_holds").exists() or not list((lake_dir / "_holds").iterdir())
    assert not admin.legal_hold_active(Lake.open(uri))


def test_a_hold_reason_keeps_no_personal_data(lake_dir, tmp_path):
    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    admin.set_hold(Lake.open(uri), None, "subpoena re jane.doe@example.com +14155550100")
    (record,) = (lake_dir / "_holds").glob("*.json")
    status = run_cli("--lake", uri, "hold", "status", check=True).stdout
    for text in (record.read_text(), status):
        assert "jane.doe@example.com" not in text and "+14155550100" not in text and "subpoena re ***" in text


def test_a_deleted_hold_record_still_holds_and_is_reported(lake_dir, tmp_path):
    """Each hold record is also a sealed audit event in the ledger: deleting the record from
    _holds/ lifts nothing, and verify says it is gone."""
    from auditlake.privacy import erase

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    s1 = _subjects(uri)[0]
    admin.set_hold(Lake.open(uri), s1, "case 7")
    assert _findings(uri) == []
    (record,) = (lake_dir / "_holds").glob("*.json")
    record.unlink()
    lake = Lake.open(uri)
    assert admin.legal_hold_active(lake, s1)
    with pytest.raises(AuditlakeError, match="hold"):
        erase(lake, s1)
    found = _findings(uri)
    assert [(x["kind"], x["table"], x["file"]) for x in found] == [("RET-WORM", "_holds", f"_holds/{record.name}")]
    assert s1 in found[0]["detail"]
    admin.lift_hold(lake, s1, "settled")  # a lift signed by the lake still lifts it
    assert not admin.legal_hold_active(lake, s1)
    # The ledger's event carries the record signed: repair writes it back, and all is clean.
    r = run_cli("--lake", uri, "repair", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"_holds/{record.name}" in json.loads(r.stdout)["repaired"] and record.exists()
    assert _findings(uri) == []


def test_repair_extends_locks_shorter_than_ret_worm_needs_on_s3(s3_lake_uri, s3_env, tmp_path, monkeypatch):
    """Objects locked under a shorter period (an older lake, a policy edited down before
    writers refused it) are reported, and repair lengthens their COMPLIANCE locks."""
    monkeypatch.setattr(retention, "MIN_YEARS", 1)
    monkeypatch.setenv("AUDITLAKE_RETENTION_YEARS", "1")
    _ingest(s3_lake_uri, tmp_path / "in", 20)
    monkeypatch.setattr(retention, "MIN_YEARS", 7)
    monkeypatch.delenv("AUDITLAKE_RETENTION_YEARS")
    short = [f for f in _findings(s3_lake_uri) if "RET-WORM needs" in f["detail"]]
    assert short
    r = run_cli("--lake", s3_lake_uri, "repair", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {f["file"] for f in short} <= set(json.loads(r.stdout)["repaired"])
    assert _findings(s3_lake_uri) == []


def test_repair_restores_a_hold_record_hidden_on_s3(s3_lake_uri, s3_env, tmp_path):
    """A delete marker on a hold record (its version still in the bucket) is reported, and
    repair removes the marker: the record reads again and verify is clean."""
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 5)
    admin.set_hold(Lake.open(s3_lake_uri), None, "case 9")
    c = s3_client(s3_env.endpoint)
    bucket = _bucket(s3_lake_uri)
    (record,) = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="lake/_holds/")["Contents"]]
    # The record is write-once in fact: COMPLIANCE retention, so its version cannot be deleted.
    version = c.head_object(Bucket=bucket, Key=record)
    assert version["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError):
        c.delete_object(Bucket=bucket, Key=record, VersionId=version["VersionId"])
    c.delete_object(Bucket=bucket, Key=record)
    assert [x["table"] for x in _findings(s3_lake_uri)] == ["_holds"]
    # Meanwhile: objects committed without the hold's S3 legal hold, and one switched off.
    _ingest(s3_lake_uri, tmp_path / "in2", 3, seed=4)
    ledger_key = next(o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="lake/tables/ledger/")["Contents"]
                      if o["Key"].endswith(".parquet"))
    c.put_object_legal_hold(Bucket=bucket, Key=ledger_key, LegalHold={"Status": "OFF"})
    r = run_cli("--lake", s3_lake_uri, "repair", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert record.removeprefix("lake/") in json.loads(r.stdout)["repaired"]
    assert _findings(s3_lake_uri) == [] and admin.legal_hold_active(Lake.open(s3_lake_uri))
    assert c.get_object_legal_hold(Bucket=bucket, Key=ledger_key)["LegalHold"]["Status"] == "ON"
    # Each hold put back is on record, the one switched off among them.
    incidents = Lake.open(s3_lake_uri).delta("incidents").to_pyarrow_dataset().to_table().to_pylist()
    restored = {i["object"] for i in incidents if i["kind"] == "legal_hold_restored"}
    assert ledger_key.removeprefix("lake/") in restored
    assert ledger_key.removeprefix("lake/") in json.loads(r.stdout)["repaired"]


@pytest.mark.s3
def test_repair_leaves_a_deleted_entry_the_lake_never_signed_under_holds_deleted_on_s3(s3_lake_uri, s3_env, tmp_path):
    """An entry planted under _holds/ is reported; the operator deletes it (a marker over its
    one version); repair, restoring what else was hidden, must not bring it back."""
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 5)
    c, bucket = s3_client(s3_env.endpoint), _bucket(s3_lake_uri)
    c.put_object(Bucket=bucket, Key="lake/_holds/notes.json", Body=b'{"hold_id": "x"}')
    assert [(x["kind"], x["file"]) for x in _findings(s3_lake_uri)] == [("RET-WORM", "_holds/notes.json")]
    c.delete_object(Bucket=bucket, Key="lake/_holds/notes.json")
    # Something for repair to do: a ledger file hidden under a marker too.
    ledger_key = next(o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="lake/tables/ledger/")["Contents"]
                      if o["Key"].endswith(".parquet"))
    c.delete_object(Bucket=bucket, Key=ledger_key)
    r = run_cli("--lake", s3_lake_uri, "repair", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["repaired"] == [ledger_key.removeprefix("lake/")]
    assert "Contents" not in c.list_objects_v2(Bucket=bucket, Prefix="lake/_holds/")
    assert _findings(s3_lake_uri) == []


@pytest.mark.s3
def test_repair_brings_back_a_deleted_identity_file_on_s3(s3_lake_uri, s3_env, tmp_path):
    """auditlake.json deleted (a marker over its versions): verify reports it, repair removes
    the markers so its newest version reads again, and records that."""
    _init(s3_lake_uri, 9)
    _ingest(s3_lake_uri, tmp_path / "in", 5)
    c, bucket = s3_client(s3_env.endpoint), _bucket(s3_lake_uri)
    before = c.get_object(Bucket=bucket, Key="lake/auditlake.json")["Body"].read()
    c.delete_object(Bucket=bucket, Key="lake/auditlake.json")
    c.delete_object(Bucket=bucket, Key="lake/auditlake.json")
    assert [(x["kind"], x["file"]) for x in _findings(s3_lake_uri)] == [("identity_changed", "auditlake.json")]
    r = run_cli("--lake", s3_lake_uri, "repair", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "auditlake.json" in json.loads(r.stdout)["repaired"]
    assert c.get_object(Bucket=bucket, Key="lake/auditlake.json")["Body"].read() == before
    assert _findings(s3_lake_uri) == [] and retention.policy(Lake.open(s3_lake_uri), refresh=True)["years"] == 9
    incidents = Lake.open(s3_lake_uri).delta("incidents").to_pyarrow_dataset().to_table().to_pylist()
    assert [i["object"] for i in incidents if i["kind"] == "object_restored"] == ["auditlake.json"]


def test_a_local_lake_without_its_identity_file_is_not_repaired_into_a_new_one(lake_dir, tmp_path):
    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    (lake_dir / "auditlake.json").unlink()
    r = run_cli("--lake", uri, "repair")
    assert r.returncode == 2 and "restore that file from a backup" in r.stderr
    assert not (lake_dir / "auditlake.json").exists()


@pytest.mark.s3
def test_a_lifecycle_rule_that_would_hide_or_lose_retained_objects_is_reported(s3_lake_uri, s3_env, tmp_path):
    """Object Lock keeps versions, but a rule expiring current versions puts a delete marker
    on every sealed object, one expiring noncurrent versions early loses the evidence of
    tampering, and DEEP_ARCHIVE needs a restore before a read: each is a finding; the lake's
    own rules and another prefix's rules are not."""
    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 5)
    lake = Lake.open(s3_lake_uri)
    c = s3_client(s3_env.endpoint)
    own = c.get_bucket_lifecycle_configuration(Bucket=lake.bucket)["Rules"]
    hostile = [{"ID": "cleanup", "Status": "Enabled", "Filter": {"Prefix": "lake/"}, "Expiration": {"Days": 1},
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
               {"ID": "archive", "Status": "Enabled", "Filter": {"Prefix": "lake/tables/"},
                "Transitions": [{"Days": 30, "StorageClass": "DEEP_ARCHIVE"}]},
               {"ID": "elsewhere", "Status": "Enabled", "Filter": {"Prefix": "scratch/"}, "Expiration": {"Days": 1}}]
    assert _findings(s3_lake_uri) == []
    c.put_bucket_lifecycle_configuration(Bucket=lake.bucket, LifecycleConfiguration={"Rules": own + hostile})
    details = sorted(f["detail"] for f in _findings(s3_lake_uri))
    assert len(details) == 3 and all(d.startswith("lifecycle rule ") for d in details), details
    assert "'archive'" in details[0] and "DEEP_ARCHIVE" in details[0]
    assert "expires current versions" in details[1] and "after 1 days" in details[2]


@pytest.mark.s3
def test_a_junk_log_entry_locked_by_its_writer_is_said_to_block_the_table(s3_lake_uri, s3_env, tmp_path):
    """Anyone who may lock objects can put a locked junk entry at a table's next version: it
    cannot be removed, so the table can take no commit until the lock ends. Ingest and repair
    say so (not "repair removes it", and no delete marker that would read as a hidden commit)."""
    from datetime import datetime, timezone

    _init(s3_lake_uri)
    _ingest(s3_lake_uri, tmp_path / "in", 5)
    lake = Lake.open(s3_lake_uri)
    c = s3_client(s3_env.endpoint)
    nxt = retention.list_log(lake, "ledger").latest + 1
    key = f"lake/tables/ledger/_delta_log/{nxt:020d}.json"
    c.put_object(Bucket=lake.bucket, Key=key, Body=b'{"commitInfo":{"operation":"WRITE"}}\n', ObjectLockMode="COMPLIANCE",
                 ObjectLockRetainUntilDate=datetime(2036, 1, 1, tzinfo=timezone.utc))
    write_landing(tmp_path / "more" / "b.jsonl", 3, seed=9)
    r = run_cli("--lake", s3_lake_uri, "ingest", str(tmp_path / "more"))
    assert r.returncode == 2 and "is locked by whoever wrote it (COMPLIANCE until 2036-01-01)" in r.stderr, r.stderr
    r = run_cli("--lake", s3_lake_uri, "repair")
    assert r.returncode != 0 and "can take no commit before the lock ends" in r.stdout + r.stderr, r
    assert not c.list_object_versions(Bucket=lake.bucket, Prefix=key).get("DeleteMarkers")


def test_erasure_does_not_go_ahead_when_the_ledger_cannot_say_whether_a_hold_applies(lake_dir, tmp_path):
    import pyarrow.parquet as pq

    from auditlake.privacy import erase

    uri = str(lake_dir)
    _ingest(uri, tmp_path / "in", 5)
    s1 = _subjects(uri)[0]
    admin.set_hold(Lake.open(uri), s1, "case 8")
    for record in (lake_dir / "_holds").glob("*.json"):
        record.unlink()
    for f in (lake_dir / "tables" / "ledger").rglob("*.parquet"):
        if "auditlake" in pq.read_table(f, columns=["source"]).column("source").to_pylist():
            os.chmod(f, 0o644)
            f.write_bytes(b"not parquet any more")
    with pytest.raises(AuditlakeError, match="cannot read the ledger"):
        erase(Lake.open(uri), s1)


def test_manifests_deleted_and_resealed_are_caught_by_the_memory_of_the_last_clean_verify(lake, tmp_path):
    """Deleting the local manifests and letting repair (or the next ingest) seal the files
    again would launder any change made to them meanwhile: the trust store outside the lake
    remembers the manifests a clean verify saw."""
    import shutil

    from auditlake.cli import main
    from auditlake.ingest import ingest
    from auditlake.verify import verify
    from events import event, write_jsonl

    ingest(lake, [str(write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(6)]))])
    assert verify(lake).ok  # remembers the manifests
    ingest(lake, [str(write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(10, 14)]))])
    assert verify(lake).ok  # a new manifest beside the old ones is no finding
    shutil.rmtree(Path(lake.uri, "_retention"))
    assert main(["--lake", lake.uri, "repair"]) in (0, 1)  # seals every file again, as it is now
    report = verify(lake, update_trust=False)
    assert any(f.kind == "RET-WORM" and f.detail.startswith("a retention manifest this host sealed or a clean verify saw")
               for f in report.findings), report.findings


@pytest.mark.parametrize("writer_finishes", [True, False])
def test_an_object_a_writer_locks_a_moment_later_is_no_finding(lake_dir, tmp_path, monkeypatch, writer_finishes):
    """verify beside a running ingest sees its last commit before the writer locks it: looked
    at again after a moment, it is locked and no tamper alarm is raised; one left unlocked stays."""
    from auditlake.lake.meta import open_lake_keys

    uri = str(lake_dir)
    _init(uri)
    _ingest(uri, tmp_path / "in", 30)
    lake = Lake.open(uri)
    keys = open_lake_keys(lake)
    newest = max((lake_dir / "_retention").glob("*.json"))
    newest.chmod(0o644)
    newest.unlink()  # its objects: committed, not sealed yet
    waits = []

    def writer_at_work(seconds):
        waits.append(seconds)
        if writer_finishes:
            retention.lock_new(lake, keys)

    monkeypatch.setattr(retention.time, "sleep", writer_at_work)
    unlocked = [f for f in retention.check(lake, keys) if f["detail"].startswith(retention.UNLOCKED)]
    assert waits == [retention.UNLOCKED_GRACE_S]
    assert (unlocked == []) == writer_finishes, unlocked


def test_init_run_again_keeps_the_lakes_policy_and_refuses_only_an_asked_shortening(lake_dir):
    """Left out, --retention-years and --cold-after-days stay as the lake has them: a plain
    `init` after the period was raised succeeds (it was exit 2, "cannot be shortened to 7")."""
    uri = str(lake_dir)
    r = run_cli("--lake", uri, "init", "--retention-years", "10", "--cold-after-days", "30", "--json")
    assert r.returncode == 0, r.stderr
    r = run_cli("--lake", uri, "init", "--json")
    assert r.returncode == 0, r.stderr
    pol = json.loads(r.stdout)["retention"]
    assert (pol["years"], pol["cold_after_days"]) == (10, 30)
    r = run_cli("--lake", uri, "init", "--retention-years", "7", "--json")
    assert r.returncode == 2 and "cannot be shortened to 7" in r.stderr
    r = run_cli("--lake", uri, "init", "--cold-after-days", "20")  # S3 would move nothing before 30
    assert r.returncode == 2 and "--cold-after-days must be at least 30" in r.stderr
    new = run_cli("--lake", str(lake_dir.parent / "new"), "init", "--json")
    assert (json.loads(new.stdout)["retention"]["years"], json.loads(new.stdout)["retention"]["cold_after_days"]) == (7, 90)
