"""AWS KMS envelope encryption of the data keys, against moto's server (KMS and S3)."""
import json

import boto3
import pytest

from auditlake import export, privacy
from auditlake.errors import AuditlakeError
from auditlake.ingest import ingest
from auditlake.keys import KeyStore
from auditlake.kms import PREFIX, KmsKeyStore, KmsKeyWrapper
from auditlake.lake.meta import open_lake_keys
from auditlake.lake.store import Lake
from auditlake.verify import verify
from events import event, write_jsonl

pytestmark = pytest.mark.s3


@pytest.fixture
def kms_key(s3_env, monkeypatch):
    kms = boto3.client("kms", region_name="us-east-1")
    key_id = kms.create_key(Description="auditlake test", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    monkeypatch.setenv("AUDITLAKE_KMS_KEY_ID", key_id)
    return key_id


def _wrapped(keys, sid):
    con = keys._db()
    try:
        row = con.execute("SELECT wrapped FROM datakeys WHERE subject_id = ?", (sid,)).fetchone()
    finally:
        con.close()
    return None if row is None else bytes(row[0])


def test_kms_envelope_keys_on_an_s3_lake(kms_key, s3_lake_uri, tmp_path, monkeypatch):
    lake = Lake.open(s3_lake_uri)
    evs = [event(n=i) for i in range(21)]
    write_jsonl(tmp_path / "in" / "a.jsonl", evs)
    ingest(lake, [str(tmp_path / "in")])
    keys = open_lake_keys(lake)
    assert isinstance(keys, KmsKeyStore)
    kms = boto3.client("kms", region_name="us-east-1")
    # Each subject's data key is stored only as a KMS ciphertext bound to the subject.
    for sid in ("subj-0", "subj-3", "subj-6"):
        blob = _wrapped(keys, sid)
        assert blob.startswith(PREFIX)
        plain = kms.decrypt(CiphertextBlob=blob[len(PREFIX):], EncryptionContext={"subject_id": sid})["Plaintext"]
        assert keys.data_keys([sid], create=False)[sid] == plain
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=blob[len(PREFIX):], EncryptionContext={"subject_id": "someone-else"})
    # The local key-encryption key cannot open them.
    with pytest.raises(Exception):
        KeyStore(keys.log_id).data_keys(["subj-0"], create=False)
    # PII reads back through KMS; the keystore stays KMS-bound without the variable.
    rows = lake.delta("ledger").to_pyarrow_dataset().to_table().to_pylist()
    by_id = {e["event_id"]: e for e in evs}
    for r in privacy.read_pii(lake, rows):
        assert r["subject_email"] == by_id[r["event_id"]]["subject"]["email"]
    monkeypatch.delenv("AUDITLAKE_KMS_KEY_ID")
    assert isinstance(open_lake_keys(lake), KmsKeyStore)
    # Erasure shreds the KMS-wrapped key; verify still passes; exports read [erased].
    res = privacy.erase(lake, "subj-3")
    assert res["key_destroyed"] and _wrapped(keys, "subj-3") is None
    mine = [r for r in privacy.read_pii(lake, rows) if r["subject_id"] == "subj-3"]
    assert mine and all(r["subject_phone"] == privacy.ERASED for r in mine)
    m = export.build_export(lake, str(tmp_path / "bundle"), ["jsonl"], {"subjects": ["subj-3", "subj-4"]},
                            reveal_reason="KMS test 2026-001")
    rows_out = [json.loads(x) for x in (tmp_path / "bundle" / "data" / "part-00000.jsonl").read_text().splitlines()]
    assert {r["subject_phone"] == privacy.ERASED for r in rows_out if r["source"] != "auditlake"} == {True, False}
    assert export.verify_export(str(tmp_path / "bundle"))["ok"] and m["revealed"]
    report = verify(lake)
    assert report.ok, report.findings


def test_kms_failures_are_clear_and_local_keys_still_open(kms_key, tmp_path, monkeypatch):
    lake = Lake.open(str(tmp_path / "lake"))
    # Keys made before KMS was enabled (local KEK) keep opening after it is.
    monkeypatch.delenv("AUDITLAKE_KMS_KEY_ID")
    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(7)])
    ingest(lake, [str(tmp_path / "in")])
    local = open_lake_keys(lake)
    assert type(local) is KeyStore
    before = local.data_keys(["subj-1"], create=False)["subj-1"]
    monkeypatch.setenv("AUDITLAKE_KMS_KEY_ID", kms_key)
    keys = open_lake_keys(lake)
    assert isinstance(keys, KmsKeyStore)
    assert keys.data_keys(["subj-1"], create=False)["subj-1"] == before
    fresh = keys.data_keys(["new-subject"])["new-subject"]
    assert len(fresh) == 32 and _wrapped(keys, "new-subject").startswith(PREFIX)
    # KMS trouble is a clear one-line error, never a silent fallback to the local key.
    with pytest.raises(AuditlakeError, match="KMS"):
        KmsKeyWrapper("alias/no-such-key").wrap("x", b"k" * 32)
    blob = _wrapped(keys, "new-subject")
    with pytest.raises(AuditlakeError, match="KMS Decrypt"):
        keys.wrapper.unwrap("new-subject", blob[:-4] + b"XXXX")
    with pytest.raises(AuditlakeError, match="KMS Decrypt"):
        keys.wrapper.unwrap("another-subject", blob)  # the context binds the key to its subject
