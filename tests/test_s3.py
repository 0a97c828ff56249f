"""The lake on S3 (moto's standalone server as a separate process) works like the local lake:
every command takes `--lake s3://bucket/prefix` with the standard AWS settings, and S3
errors reach the user as one line."""
from __future__ import annotations

import json

import pytest

from auditlake.errors import AuditlakeError
from auditlake.ingest import ingest
from auditlake.lake.admin import init_lake, set_hold
from auditlake.lake.store import Lake
from auditlake.verify import verify
from events import event, parquet_torn_at_row
from fixtures_s3 import (ACCESS_KEY, REGION, SECRET_KEY, assert_exact, create_worm_bucket, run_cli, s3_client,
                         write_landing, write_landing_set)


def test_ingest_then_verify(lake_uri, tmp_path):
    landing = tmp_path / "landing"
    data = write_landing_set(landing, files=2, lines=300, seed=1, bad_every=25)
    r = run_cli("--lake", lake_uri, "ingest", str(landing), "--json", check=True)
    doc = json.loads(r.stdout)
    assert doc["accepted"] == data["lines"] - data["bad"] and doc["quarantined"] == data["bad"]
    v = run_cli("--lake", lake_uri, "verify", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    report = json.loads(v.stdout)
    assert report["ok"] and report["events"] == data["lines"] - data["bad"] and report["findings"] == []
    assert_exact(lake_uri, data["lines"], data["event_ids"], files=2)
    # The same files again: nothing new, still intact.
    again = ingest(Lake.open(lake_uri), [str(landing)])
    assert again.accepted == 0 and all(f.skipped for f in again.files)


def test_landing_folder_inside_the_s3_lake(s3_lake_uri, s3_env, tmp_path):
    """`ingest` with no path reads the lake's own landing/ prefix on S3."""
    data = write_landing(tmp_path / "a.jsonl", 120, seed=4, bad_every=40)
    bucket = s3_lake_uri.removeprefix("s3://").split("/")[0]
    s3_client(s3_env.endpoint).upload_file(str(tmp_path / "a.jsonl"), bucket, "lake/landing/2026/a.jsonl")
    lake = Lake.open(s3_lake_uri)
    report = ingest(lake)
    assert report.accepted == 117 and report.quarantined == 3
    assert [f.file for f in report.files] == ["2026/a.jsonl"]
    assert verify(lake, update_trust=False).ok
    assert_exact(s3_lake_uri, data["lines"], data["event_ids"], files=1)


def test_a_damaged_parquet_file_in_the_s3_landing_is_quarantined_from_where_it_breaks(s3_lake_uri, s3_env, tmp_path):
    parquet_torn_at_row(tmp_path / "c.parquet", [event(n=i) for i in range(6)], torn_group=1)
    bucket = s3_lake_uri.removeprefix("s3://").split("/")[0]
    s3_client(s3_env.endpoint).upload_file(str(tmp_path / "c.parquet"), bucket, "lake/landing/c.parquet")
    lake = Lake.open(s3_lake_uri)
    report = ingest(lake)
    assert (report.accepted, report.quarantined) == (2, 1)
    (row,) = lake.delta("quarantine").to_pyarrow_table(columns=["line", "reason"]).to_pylist()
    assert row["line"] == 3 and row["reason"].startswith("unreadable Parquet after row 2: ")
    assert verify(lake, update_trust=False).ok


@pytest.mark.s3
def test_lake_env_variable_and_profile(s3_env, tmp_path, monkeypatch):
    """AUDITLAKE_LAKE selects the lake; credentials and region may come from a profile."""
    bucket = create_worm_bucket(s3_env.endpoint)
    creds = tmp_path / "credentials"
    creds.write_text(f"[audit]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    config = tmp_path / "config"
    config.write_text(f"[profile audit]\nregion = {REGION}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(name)
    env = {"AWS_PROFILE": "audit", "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(config),
           "AUDITLAKE_LAKE": f"s3://{bucket}/p"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    write_landing(tmp_path / "in" / "a.jsonl", 50, seed=9)
    lake = Lake.open()  # from AUDITLAKE_LAKE
    assert lake.uri == f"s3://{bucket}/p" and lake.storage_options["AWS_ACCESS_KEY_ID"] == ACCESS_KEY
    assert ingest(lake, [str(tmp_path / "in")]).accepted == 50
    assert verify(lake, update_trust=False).ok
    keys = [o["Key"] for o in s3_client(s3_env.endpoint).list_objects_v2(Bucket=bucket, Prefix="p/tables/ledger/")["Contents"]]
    assert any(k.endswith(".parquet") for k in keys)


@pytest.mark.s3
def test_init_creates_a_worm_bucket_with_lifecycle(s3_env):
    bucket = "al-init-" + __import__("uuid").uuid4().hex[:10]
    r = run_cli("--lake", f"s3://{bucket}/audit", "init", "--retention-years", "10", "--cold-after-days", "60", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["bucket"] == {"name": bucket, "created": True, "versioning": "Enabled", "object_lock": "Enabled"}
    c = s3_client(s3_env.endpoint)
    assert c.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert c.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    rules = {r["ID"]: r for r in c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    cold = rules["auditlake-cold-storage"]
    assert cold["Filter"]["Prefix"] == "audit/tables/"
    assert [(t["Days"], t["StorageClass"]) for t in cold["Transitions"]] == [(60, "STANDARD_IA"), (365, "GLACIER_IR")]
    # Nothing expires while retained: no expiration of current versions in any rule, and
    # noncurrent versions only after the retention period.
    for rule in rules.values():
        assert "Expiration" not in rule
        if "NoncurrentVersionExpiration" in rule:
            assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 10 * 365
    meta = json.loads(c.get_object(Bucket=bucket, Key="audit/auditlake.json")["Body"].read())
    assert meta["retention"]["years"] == 10 and meta["log_id"] == doc["log_id"]
    # Running init again checks the bucket and keeps the lake's identity.
    again = init_lake(Lake.open(f"s3://{bucket}/audit"), 10)
    assert again["bucket"]["created"] is False and again["log_id"] == doc["log_id"]
    # The retention period can grow but never shrink.
    with pytest.raises(AuditlakeError, match="cannot be shortened"):
        init_lake(Lake.open(f"s3://{bucket}/audit"), 7)


@pytest.mark.s3
def test_init_turns_on_versioning_and_object_lock_of_an_existing_bucket(s3_env):
    bucket = "al-plain-" + __import__("uuid").uuid4().hex[:10]
    c = s3_client(s3_env.endpoint)
    c.create_bucket(Bucket=bucket)
    init_lake(Lake.open(f"s3://{bucket}"))
    assert c.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert c.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"


@pytest.mark.s3
def test_ingest_refuses_a_bucket_without_object_lock(s3_env, tmp_path):
    bucket = "al-nolock-" + __import__("uuid").uuid4().hex[:10]
    s3_client(s3_env.endpoint).create_bucket(Bucket=bucket)
    write_landing(tmp_path / "in" / "a.jsonl", 10)
    r = run_cli("--lake", f"s3://{bucket}/x", "ingest", str(tmp_path / "in"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Object Lock" in r.stderr and "auditlake init" in r.stderr
    # Nothing was written before the check: no tables, and no identity file of a lake the bucket could not keep.
    assert "Contents" not in s3_client(s3_env.endpoint).list_objects_v2(Bucket=bucket, Prefix="x/")


@pytest.mark.s3
@pytest.mark.parametrize("command", [["ingest"], ["verify"], ["repair"]])
def test_s3_errors_are_one_line(command, tmp_path, monkeypatch):
    """An unreachable endpoint or a missing bucket: exit 2 and one clear line, no traceback."""
    from fixtures_s3 import free_port, s3_environ

    for k, v in s3_environ(f"http://127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(k, v)
    write_landing(tmp_path / "in" / "a.jsonl", 5)
    args = command + ([str(tmp_path / "in")] if command == ["ingest"] else [])
    r = run_cli("--lake", "s3://no-such-bucket-here/p", *args, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("auditlake: ") and "\n" not in err, err
    assert "Traceback" not in r.stderr and "\x1b[" not in err
    assert "unreachable" in err or "S3" in err


@pytest.mark.s3
def test_missing_bucket_is_one_line(s3_env, tmp_path):
    r = run_cli("--lake", "s3://al-does-not-exist/p", "verify")
    assert r.returncode == 2
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert "bucket al-does-not-exist does not exist; create it with `auditlake init" in err, err


def test_error_line_flattens_delta_rs_chains():
    from auditlake.lake.s3 import error_line

    raw = ("Kernel error -> Generic S3 error\n          \x1b[31m↳\x1b[0m Error performing GET http://127.0.0.1:1/b/x in 3s, "
           "after 10 retries\n           \x1b[31m↳\x1b[0m HTTP error\n             \x1b[31m↳\x1b[0m error sending request\n"
           "              \x1b[31m↳\x1b[0m client error (Connect)\n")
    line = error_line(OSError(raw))
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("S3 endpoint unreachable (http://127.0.0.1:1)")


@pytest.mark.s3
def test_no_directory_marker_objects(s3_lake_uri, s3_env, tmp_path):
    """The lake writes only real objects to S3 (no empty `folder/` markers)."""
    write_landing(tmp_path / "in" / "a.jsonl", 30)
    lake = Lake.open(s3_lake_uri)
    init_lake(lake)
    ingest(lake, [str(tmp_path / "in")])
    set_hold(lake, None, "case 1")
    bucket = s3_lake_uri.removeprefix("s3://").split("/")[0]
    keys = [o["Key"] for o in s3_client(s3_env.endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and not [k for k in keys if k.endswith("/")]


@pytest.mark.s3
def test_requests_per_batch_are_bounded(s3_lake_uri, s3_env, tmp_path):
    """A rough budget of S3 requests for one ingest batch (counted in moto's access log), so
    a change that starts listing the whole lake per object shows up here."""
    write_landing(tmp_path / "a" / "a.jsonl", 200, seed=1)
    write_landing(tmp_path / "b" / "b.jsonl", 200, seed=2)
    lake = Lake.open(s3_lake_uri)
    ingest(lake, [str(tmp_path / "a")])
    before = s3_env.requests()
    ingest(lake, [str(tmp_path / "b")])
    used = s3_env.requests() - before
    print(f"S3 requests for one ingest batch: {used}")
    assert 0 < used < 250, used


def test_an_s3_lake_without_credentials_is_said_so_in_one_line(tmp_path, monkeypatch, capsys):
    """Not "ACCESS_DENIED during HeadObject" or a 403 from the instance metadata endpoint."""
    from auditlake.cli import main

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["--lake", "s3://some-bucket/audit", "verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no AWS credentials for the S3 lake" in err
