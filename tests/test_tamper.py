"""Any single tamper of the kinds the foundation issue names is detected and located by verify,
and an untouched lake gives no false alarm."""
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlake import ingest as ingest_module
from auditlake import landing as landing_module
from auditlake.ingest import ingest
from auditlake.lake.meta import open_lake_keys
from auditlake.lake.store import Lake
from auditlake.verify import verify
from events import event, forge_delta_checkpoint, write_jsonl

N_FILES, PER_FILE = 3, 12


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A lake of three ingest batches (three checkpoints), its keystore home and the trusted checkpoint."""
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("AUDITLAKE_HOME")
    os.environ["AUDITLAKE_HOME"] = str(home)
    root = tmp_path_factory.mktemp("pristine")
    lake = Lake.open(str(root / "lake"))
    for f in range(N_FILES):
        write_jsonl(root / f"in{f}" / "a.jsonl", [event(n=f * 100 + i) for i in range(PER_FILE)])
        ingest(lake, [str(root / f"in{f}")])
    report = verify(lake, update_trust=False)
    assert report.ok, report.findings
    trusted = root / "trusted.json"
    cps = lake.delta("checkpoints").to_pyarrow_dataset().to_table().to_pylist()
    last = max(cps, key=lambda c: c["tree_size"])
    trusted.write_text(json.dumps({k: v for k, v in last.items() if k not in ("frontier", "batch_id")}))
    yield root, home, trusted
    if old is None:
        os.environ.pop("AUDITLAKE_HOME", None)
    else:
        os.environ["AUDITLAKE_HOME"] = old


def _copy(pristine, dest: Path, monkeypatch) -> tuple[Lake, Path]:
    root, home, trusted = pristine
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(root / "lake", dest)
    for r, ds, fs in os.walk(dest):
        for n in fs:
            os.chmod(os.path.join(r, n), 0o644)  # the copy is a new lake; tampering needs write access
    # Its own home too: what a writer seals in one copy is remembered there (by log id).
    own_home = dest.parent / f"{dest.name}-home"
    if own_home.exists():
        shutil.rmtree(own_home)
    shutil.copytree(home, own_home)
    monkeypatch.setenv("AUDITLAKE_HOME", str(own_home))
    return Lake.open(str(dest)), trusted


def _files(lake: Lake, table: str) -> list[Path]:
    return sorted(Path(lake.uri, "tables", table).rglob("*.parquet"))


def _rewrite(path: Path, fn) -> None:
    t = pq.read_table(path)
    # Partition columns live in the path, not the file.
    pq.write_table(fn(t), path)


def _set(t: pa.Table, column: str, i: int, value) -> pa.Table:
    col = t.column(column).to_pylist()
    col[i] = value
    return t.set_column(t.schema.get_field_index(column), column, pa.array(col, t.schema.field(column).type))


def _row_file(lake: Lake, seq: int) -> tuple[Path, int]:
    for f in _files(lake, "ledger"):
        seqs = pq.read_table(f, columns=["seq"]).column("seq").to_pylist()
        if seq in seqs:
            return f, seqs.index(seq)
    raise AssertionError(seq)


def tamper_changed_field(lake, seq):
    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: _set(t, "tenant_id", i, "tenant-evil"))
    return {"changed_field"}


def tamper_changed_leaf(lake, seq):
    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: _set(t, "leaf", i, t.column("leaf")[i].as_py().replace("tenant-a", "tenant-b")))
    return {"changed_row"}


def tamper_deleted_row(lake, seq):
    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: t.slice(0, i).concat_arrays() if False else pa.concat_tables([t.slice(0, i), t.slice(i + 1)]))
    return {"deleted_row", "truncated_tail"}


def tamper_duplicated_row(lake, seq):
    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: pa.concat_tables([t, t.slice(i, 1)]))
    return {"duplicate_row"}


def tamper_inserted_row(lake, seq):
    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: pa.concat_tables([t, _set(_set(t.slice(i, 1), "seq", 0, 10_000), "event_id", 0, "forged")]))
    return {"changed_row", "deleted_row", "reordered_row"}


def tamper_unsequenced_row(lake, seq):
    """A blind append of a copy of a row with no seq: no seq range reads it."""
    from deltalake import write_deltalake

    f, i = _row_file(lake, seq)
    row = _set(_set(pq.read_table(f).slice(i, 1), "seq", 0, None), "event_id", 0, "forged-unsequenced")
    day = f.parent.name.split("=", 1)[1]
    write_deltalake(lake.table_uri("ledger"), row.append_column("event_date", pa.array([day])), mode="append",
                    partition_by=["event_date"])
    return {"reordered_row"}


def tamper_negative_seq_row(lake, seq):
    """A blind append of a copy of a row with a negative seq, below every seq range."""
    from deltalake import write_deltalake

    f, i = _row_file(lake, seq)
    row = _set(_set(pq.read_table(f).slice(i, 1), "seq", 0, -1 - seq), "event_id", 0, "forged-unsequenced")
    day = f.parent.name.split("=", 1)[1]
    write_deltalake(lake.table_uri("ledger"), row.append_column("event_date", pa.array([day])), mode="append",
                    partition_by=["event_date"])
    return {"reordered_row"}


def tamper_readded_file(lake, seq):
    """A blind-append commit that adds a sealed file again under a percent-encoded path: one
    file to the lake, two to a reader that does not decode paths (every row counted twice)."""
    log = Path(lake.uri, "tables", "ledger", "_delta_log")
    last = max(int(p.name[:20]) for p in log.glob("*.json"))
    victim = str(_row_file(lake, seq)[0].relative_to(Path(lake.uri, "tables", "ledger")))
    add = next(a["add"] for v in range(last + 1) for a in map(json.loads, (log / f"{v:020d}.json").read_text().splitlines())
               if "add" in a and a["add"]["path"] == victim)
    actions = [{"commitInfo": {"timestamp": 1, "operation": "WRITE", "operationParameters": {"mode": "Append"}}},
               {"add": add | {"path": victim.replace("=", "%3D")}}]
    (log / f"{last + 1:020d}.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    return {"non_append_commit"}


def tamper_foreign_table(lake, seq):
    """A table no part of the lake made, beside its own (nothing reads it, but someone wrote it)."""
    import pyarrow.parquet as pq

    folder = Path(lake.uri, "tables", f"shadow_{seq}")
    folder.mkdir()
    pq.write_table(pa.table({"seq": [seq]}), folder / "part-0.parquet")
    return {"data_file_inserted"}


def tamper_forged_ingest_log_row(lake, seq):
    """A blind append to the ingest log, which would make ingest skip a landing file as done."""
    from deltalake import write_deltalake

    from auditlake.lake.tables import INGEST_LOG

    row = {"source_file": "a.jsonl", "source_sha256": f"{seq:064x}", "format": "jsonl", "lines_read": 0, "accepted": 0,
           "quarantined": 0, "first_seq": None, "last_seq": None, "completed_at": None, "batch_id": "forged"}
    write_deltalake(lake.table_uri("ingest_log"), pa.Table.from_pylist([row], schema=INGEST_LOG), mode="append")
    return {"unsigned_commit"}


def tamper_changed_ingest_log_row(lake, seq):
    f = _files(lake, "ingest_log")[seq % N_FILES]
    _rewrite(f, lambda t: _set(t, "lines_read", 0, t.column("lines_read")[0].as_py() + 1))
    return {"unsigned_commit"}


def tamper_reordered_rows(lake, seq):
    """Swap the positions of two neighbouring events (possibly in different files)."""
    other = seq + 1 if seq + 1 < N_FILES * PER_FILE else seq - 1
    places = [(_row_file(lake, a), b) for a, b in ((seq, other), (other, seq))]
    for (f, i), b in places:
        _rewrite(f, lambda t: _set(t, "seq", i, b))
    return {"reordered_row"}


def tamper_removed_file(lake, seq):
    f, _ = _row_file(lake, seq)
    f.unlink()
    return {"data_file_removed"}


def tamper_replaced_file(lake, seq):
    f, i = _row_file(lake, seq)
    t = pq.read_table(f)
    pq.write_table(t, f, compression="gzip")  # same rows, different bytes
    return {"data_file_replaced"}


def tamper_forged_checkpoint(lake, seq):
    f = _files(lake, "checkpoints")[seq % N_FILES]
    _rewrite(f, lambda t: _set(t, "root", 0, "ab" * 32))
    return {"forged_checkpoint", "root_mismatch"}


def tamper_missing_checkpoint(lake, seq):
    _files(lake, "checkpoints")[seq % (N_FILES - 1)].unlink()
    return {"data_file_removed", "missing_checkpoint"}


def tamper_non_append_commit(lake, seq):
    log = Path(lake.uri, "tables", "ledger", "_delta_log")
    last = max(int(p.name[:20]) for p in log.glob("*.json"))
    victim = _row_file(lake, seq)[0].relative_to(Path(lake.uri, "tables", "ledger"))
    actions = [
        {"commitInfo": {"timestamp": 1, "operation": "DELETE", "operationParameters": {}}},
        {"remove": {"path": str(victim), "deletionTimestamp": 1, "dataChange": True}},
    ]
    (log / f"{last + 1:020d}.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    return {"non_append_commit"}


def tamper_table_property(lake, seq):
    log = Path(lake.uri, "tables", "ledger", "_delta_log")
    last = max(int(p.name[:20]) for p in log.glob("*.json"))
    meta = next(json.loads(l) for l in (log / f"{0:020d}.json").read_text().splitlines() if l.startswith('{"metaData"'))
    meta["metaData"]["configuration"]["delta.appendOnly"] = "false"
    actions = [{"commitInfo": {"timestamp": 1, "operation": "SET TBLPROPERTIES", "operationParameters": {}}}, meta]
    (log / f"{last + 1:020d}.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    return {"table_property_changed", "non_append_commit"}


CHECKPOINT_FORGERIES = [
    None,  # the file left out
    lambda add: add | {"partitionValues": [("event_date", "2031-01-01")]},
    lambda add: add | {"deletionVector": {"storageType": "i", "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L",
                                           "offset": None, "sizeInBytes": 40, "cardinality": 3}},
    lambda add: add | {"stats": add["stats"].replace('"numRecords":', '"numRecords":1') },
]


def tamper_forged_delta_checkpoint(lake, seq):
    """A Delta checkpoint, which readers start from, that leaves out a file or says something
    else of it than the log: its partition, a deletion vector hiding rows, its statistics."""
    table = Path(lake.uri, "tables", "ledger")
    forge_delta_checkpoint(table, str(_row_file(lake, seq)[0].relative_to(table)),
                           CHECKPOINT_FORGERIES[seq % len(CHECKPOINT_FORGERIES)])
    return {"history_forged"}


def tamper_unknown_log_file(lake, seq):
    """A log compaction file (today's readers ignore it; a later one might not), numbered like a version."""
    log = Path(lake.uri, "tables", "ledger", "_delta_log")
    (log / f"{0:020d}.{N_FILES - 1:020d}.compacted.json").write_text((log / f"{0:020d}.json").read_text())
    return {"data_file_inserted"}


def tamper_changed_ingested_at(lake, seq):
    """ingested_at is sealed in the record like every other projected column."""
    from datetime import timedelta

    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: _set(t, "ingested_at", i, t.column("ingested_at")[i].as_py() - timedelta(days=3)))
    return {"changed_field"}


def tamper_leaf_not_json(lake, seq):
    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: _set(t, "leaf", i, "not json"))
    return {"changed_row", "changed_field"}


def tamper_invalid_utf8(lake, seq):
    """A string that is not UTF-8 in a row's leaf (a changed byte in a page can do that)."""
    f, i = _row_file(lake, seq)

    def change(t):
        leaf = t.column("leaf").to_pylist()
        raw = [v.encode() for v in leaf]
        raw[i] = raw[i][:10] + b"\xff" + raw[i][11:]
        return t.set_column(t.schema.get_field_index("leaf"), "leaf", pa.array(raw, pa.binary()).view(pa.string()))

    _rewrite(f, change)
    return {"data_file_replaced"}


def tamper_corrupt_page(lake, seq):
    """Bytes changed in place inside a data page, the footer intact: the file reads no more."""
    f, _ = _row_file(lake, seq)
    data = bytearray(f.read_bytes())
    data[8:108] = bytes(100)
    f.write_bytes(bytes(data))
    return {"data_file_replaced"}


def tamper_junk_log_entry(lake, seq):
    """A commit that is no Delta action at all (in any table's log): a finding, not a crash."""
    table = ("ledger", "checkpoints", "ingest_log")[seq % 3]
    log = Path(lake.uri, "tables", table, "_delta_log")
    last = max(int(p.name[:20]) for p in log.glob("*.json"))
    junk = ["not json at all", '{"add":1}', '{"add":{"path":5}}', "[]", '{"commitInfo":{"operationParameters":[1]}}']
    (log / f"{last + 1:020d}.json").write_text(junk[seq % len(junk)] + "\n")
    return {"non_append_commit"}


def tamper_empty_commit(lake, seq):
    """A blind append that adds nothing (a note for readers of the history), in the ledger's
    or the checkpoints' log: no commit the lake makes there."""
    table = ("ledger", "checkpoints")[seq % 2]
    log = Path(lake.uri, "tables", table, "_delta_log")
    last = max(int(p.name[:20]) for p in log.glob("*.json"))
    note = {"commitInfo": {"operation": "WRITE", "operationParameters": {"mode": "Append"},
                           "userMetadata": "lake audited OK; seq 100-200 deleted with approval"}}
    (log / f"{last + 1:020d}.json").write_text(json.dumps(note) + "\n")
    return {"non_append_commit"}


def tamper_partition_value(lake, seq):
    """The add action of the row's file gives its rows another event_date (readers take it
    from there) than its folder and its rows say."""
    log = Path(lake.uri, "tables", "ledger", "_delta_log")
    victim = str(_row_file(lake, seq)[0].relative_to(Path(lake.uri, "tables", "ledger")))
    for entry in log.glob("*.json"):
        lines = entry.read_text().splitlines()
        if any(victim in line for line in lines):
            entry.write_text("\n".join(line.replace('"event_date":"', '"event_date":"1999') if victim in line else line
                                       for line in lines) + "\n")
    return {"changed_field"}


def tamper_truncated_tail(lake, seq):
    """Drop the last batch with its checkpoint, history and all: only the trusted checkpoint tells."""
    for table in ("ledger", "checkpoints", "ingest_log"):
        log = Path(lake.uri, "tables", table, "_delta_log")
        last = max(p for p in log.glob("*.json"))
        for line in last.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                Path(lake.uri, "tables", table, action["add"]["path"]).unlink()
        last.unlink()
    shutil.rmtree(Path(lake.uri, "_retention"))  # an attacker would rewrite the local manifests too
    return {"truncated_tail", "missing_checkpoint"}


TAMPERS = [v for k, v in dict(globals()).items() if k.startswith("tamper_")]


def _relock(lake: Lake) -> None:
    """Restore the read-only locks of the original lake."""
    for r, ds, fs in os.walk(lake.uri):
        for n in fs:
            os.chmod(os.path.join(r, n), 0o444)


def test_untouched_lake_verifies(pristine, tmp_path, monkeypatch):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert report.ok, report.findings
    assert report.events == N_FILES * PER_FILE and report.checkpoints == N_FILES


@settings(max_examples=int(os.environ.get("TAMPER_EXAMPLES", "24")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tamper=st.sampled_from(TAMPERS), seq=st.integers(0, N_FILES * PER_FILE - 1))
def test_any_single_tamper_is_detected_and_located(pristine, tmp_path, monkeypatch, tamper, seq):
    from auditlake import verify as verify_module

    monkeypatch.setattr(verify_module, "_SCAN_FILES", 2)  # the scan's groups of files end mid-ledger
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    expected = tamper(lake, seq)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    kinds = {f.kind for f in report.findings}
    assert not report.ok and kinds & expected, (tamper.__name__, kinds)
    located = [f for f in report.findings if f.kind in expected]
    assert all(f.table and f.detail for f in located)
    if tamper in (tamper_changed_field, tamper_changed_leaf):
        assert any(f.seq == seq for f in located), (seq, report.findings)
    if tamper in (tamper_unsequenced_row, tamper_negative_seq_row):
        assert any(f.event_id == "forged-unsequenced" and f.file.startswith("event_date=") for f in located)
    if tamper in (tamper_forged_ingest_log_row, tamper_changed_ingest_log_row):
        assert all(f.table == "ingest_log" and f.file.startswith("_delta_log/") for f in located)
    if tamper in (tamper_removed_file, tamper_replaced_file, tamper_readded_file):
        assert any(f.file and f.file.startswith("event_date=") for f in located)
    if tamper is tamper_unknown_log_file:
        assert "history_missing" not in kinds, report.findings  # it is no version
    if tamper is tamper_forged_delta_checkpoint:
        assert {f.file.rsplit("/", 1)[1] for f in located} == {"00000000000000000002.checkpoint.parquet", "_last_checkpoint"}


def test_incremental_verify_reads_only_the_new_tail_and_still_catches_tampering(pristine, tmp_path, monkeypatch):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    root, _, _ = pristine
    first = lake.delta("checkpoints").to_pyarrow_dataset().to_table().to_pylist()
    early = min(first, key=lambda c: c["tree_size"])  # trust the first batch only
    early_file = tmp_path / "early.json"
    early_file.write_text(json.dumps({k: v for k, v in early.items() if k not in ("frontier", "batch_id")}))
    _relock(lake)
    report = verify(lake, trusted_file=str(early_file), update_trust=False, incremental=True)
    assert report.ok, report.findings
    assert report.events == N_FILES * PER_FILE and report.root == verify(lake, update_trust=False).root
    tamper_changed_leaf(lake, PER_FILE + 3)  # in the part that is re-read
    bad = verify(lake, trusted_file=str(early_file), update_trust=False, incremental=True)
    assert any(f.kind == "changed_row" and f.seq == PER_FILE + 3 for f in bad.findings)


def test_incremental_verify_catches_a_truncated_log(pristine, tmp_path, monkeypatch):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    tamper_truncated_tail(lake, 0)
    report = verify(lake, trusted_file=str(trusted), update_trust=False, incremental=True)
    assert {f.kind for f in report.findings} & {"truncated_tail", "missing_checkpoint"}


@pytest.mark.parametrize("tamper", [tamper_unsequenced_row, tamper_negative_seq_row, tamper_readded_file])
def test_what_is_outside_the_chain_is_found_never_sealed_and_removed_by_repair(pristine, tmp_path, monkeypatch, tamper):
    """A row appended with no seq or a negative one is outside every seq range that verify
    reads, a file added twice is read once: verify finds them, the next ingest refuses to
    seal them (sealed, they would stay for good), and repair removes them."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    expected = tamper(lake, 3)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert expected <= {f.kind for f in report.findings}, report.findings
    assert next(f for f in report.findings if f.kind in expected).file.startswith("event_date=")
    _refused_until_repaired(lake, trusted, tmp_path, "is no commit the lake makes")


def test_a_commit_the_lake_did_not_sign_is_never_sealed_and_repair_removes_it(pristine, tmp_path, monkeypatch):
    """A well-formed append the lake did not sign, in a table whose commits it signs: the next
    ingest stops before sealing it (sealed, it would be a finding for good), repair removes it."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    tamper_forged_ingest_log_row(lake, 7)
    _refused_until_repaired(lake, trusted, tmp_path, f"ingest_log/_delta_log/{N_FILES:020d}.json is no commit the lake "
                            "makes", table="ingest_log")


def test_a_forged_ingest_log_row_does_not_make_ingest_skip_its_file(pristine, tmp_path, monkeypatch):
    import hashlib

    from deltalake import write_deltalake

    from auditlake.lake.tables import INGEST_LOG

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    landing = write_jsonl(tmp_path / "more" / "a.jsonl", [event(n=10_000 + i) for i in range(3)])
    forged = {"source_file": "a.jsonl", "source_sha256": hashlib.sha256(landing.read_bytes()).hexdigest(),
              "format": "jsonl", "lines_read": 3, "accepted": 3, "quarantined": 0, "first_seq": 0, "last_seq": 2,
              "completed_at": None, "batch_id": "forged"}
    write_deltalake(lake.table_uri("ingest_log"), pa.Table.from_pylist([forged], schema=INGEST_LOG), mode="append")
    # Its row is never taken for the lake's: the ingest stops at the unsigned commit, and
    # without it (see the test above) reads the file.
    state = ingest_module._load_state(lake, open_lake_keys(lake), landing_module.find(lake, [str(landing)]), False)
    assert not state.done


def test_a_forged_quarantine_row_does_not_make_ingest_skip_its_line(pristine, tmp_path, monkeypatch):
    import hashlib

    from deltalake import write_deltalake

    from auditlake.lake.tables import QUARANTINE

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    landing = write_jsonl(tmp_path / "more" / "a.jsonl", [event(n=10_000 + i) for i in range(3)])
    forged = {"source_file": "a.jsonl", "source_sha256": hashlib.sha256(landing.read_bytes()).hexdigest(), "line": 2,
              "reason": "not JSON", "raw": "", "event_id": None, "quarantined_at": None, "batch_id": "forged"}
    write_deltalake(lake.table_uri("quarantine"), pa.Table.from_pylist([forged], schema=QUARANTINE), mode="append")
    state = ingest_module._load_state(lake, open_lake_keys(lake), landing_module.find(lake, [str(landing)]), False)
    assert not any(state.quarantined_lines.values())  # its line is not taken as quarantined
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    # The forged commit made the table, without its properties: reported too, and it is unsealed.
    assert {f.kind for f in report.findings} == {"unsigned_commit", "table_property_changed", "RET-WORM"}, report.findings
    assert {f.table for f in report.findings} == {"quarantine"}


@pytest.mark.parametrize("seq", [0, 5, 13, 22, 31])
@pytest.mark.parametrize("tamper", [tamper_changed_ingested_at, tamper_leaf_not_json, tamper_corrupt_page,
                                    tamper_invalid_utf8, tamper_junk_log_entry])
def test_malformed_tampering_is_a_finding_not_a_crash(pristine, tmp_path, monkeypatch, tamper, seq):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim = _row_file(lake, seq)[0].relative_to(Path(lake.uri, "tables", "ledger"))
    expected = tamper(lake, seq)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    located = [f for f in report.findings if f.kind in expected]
    assert located, (tamper.__name__, report.findings)
    if tamper is tamper_changed_ingested_at:
        assert [(f.seq, f.detail) for f in located] == [(seq, "column(s) ingested_at differ from the sealed record")]
    if tamper is tamper_leaf_not_json:
        assert any(f.kind == "changed_field" and f.seq == seq and "not a JSON text" in f.detail for f in located)
    if tamper in (tamper_corrupt_page, tamper_invalid_utf8):  # (a rewritten file also differs in size)
        (f,) = [f for f in located if f.detail.startswith("unreadable")]
        assert f.file == str(victim) and f.partition == f.file.split("/")[0]
    if tamper is tamper_junk_log_entry:
        assert all(f.file.startswith("_delta_log/") and "not a Delta action" in f.detail for f in located)


@pytest.mark.parametrize("tamper", [tamper_junk_log_entry, tamper_table_property, tamper_non_append_commit,
                                    tamper_empty_commit])
def test_a_forged_log_entry_is_never_sealed_nor_written_after(pristine, tmp_path, monkeypatch, tamper):
    """Sealed (read-only plus manifest here, COMPLIANCE on S3) a forged entry could never be
    removed and later commits would build on it: the next ingest stops before both, and once
    the entry is removed the lake carries on."""
    from auditlake.errors import AuditlakeError
    from auditlake.lake import retention

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    versions = {t: lake.delta(t).version() for t in ("ledger", "checkpoints", "ingest_log")}
    tamper(lake, 1)  # the ledger's log, or (junk) the checkpoints' log
    forged = [p for t in versions for p in Path(lake.uri, "tables", t, "_delta_log").glob("*.json")
              if int(p.name[:20]) > versions[t]]
    assert len(forged) == 1
    write_jsonl(tmp_path / "next" / "b.jsonl", [event(n=900 + i) for i in range(3)])
    with pytest.raises(AuditlakeError, match="is no commit the lake makes|cannot open table checkpoints") as refused:
        ingest(lake, [str(tmp_path / "next")])
    assert "\n" not in str(refused.value) and "<unknown>" not in str(refused.value)
    sealed = {rel for m in retention._manifests(lake).values() if m for rel in m.get("objects", {})}
    assert str(forged[0].relative_to(lake.uri)) not in sealed and forged[0].stat().st_mode & 0o200
    _relock(lake)  # the copy was made writable to tamper with
    from auditlake.lake.admin import repair

    done = repair(lake)
    assert not forged[0].exists() and str(forged[0].relative_to(lake.uri)) in done["repaired"], done
    assert ingest(lake, [str(tmp_path / "next")]).accepted == 3
    assert verify(lake, trusted_file=str(trusted), update_trust=False).ok


def _footer_byte(data: bytes, share: float) -> int:
    """A byte `share` of the way into a Parquet file's footer."""
    size = int.from_bytes(data[-8:-4], "little")
    return len(data) - 8 - size + int(size * share)


def _column_name_byte(data: bytes) -> int:
    """The first byte of the last column name in a Parquet file's footer (a flip makes it invalid UTF-8)."""
    from auditlake.lake.tables import SCHEMAS

    footer = _footer_byte(data, 0)
    return max(data.find(name.encode(), footer) for table in SCHEMAS.values() for name in table.names)


@pytest.mark.parametrize("where", [lambda d: len(d) // 4, lambda d: len(d) // 2, lambda d: _footer_byte(d, 0.6),
                                   _column_name_byte], ids=["quarter", "middle", "footer", "column-name"])
@pytest.mark.parametrize("table", ["ledger", "checkpoints", "ingest_log", "findings"])
def test_a_byte_changed_in_a_sealed_tables_file_is_a_finding_not_a_crash(pristine, tmp_path, monkeypatch, table, where):
    """Bytes flipped in a page or the footer of a checkpoints, ingest log or findings file
    (whose string pages then decode to invalid UTF-8, or not at all) are tampering: exit 1."""
    from auditlake.compliance.run import evaluate_lake

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    if table == "findings":
        evaluate_lake(lake)
    victim = _files(lake, table)[0]
    data = bytearray(victim.read_bytes())
    data[where(data)] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert not report.ok and any(f.table == table for f in report.findings), report.findings


@pytest.mark.parametrize("seq", [0, 13, N_FILES * PER_FILE - 1])
@pytest.mark.parametrize("stored", [lambda h: h[:-1] + ("0" if h[-1] != "0" else "1"), str.upper, lambda h: None,
                                    lambda h: "zz", lambda h: h + "00"],
                         ids=["other-hex", "upper-case", "null", "not-hex", "longer"])
def test_a_changed_stored_hash_is_a_changed_row_at_its_seq(pristine, tmp_path, monkeypatch, stored, seq):
    """The scan compares each computed link with the hash the positions pass read: in any
    form but the computed one's, the row is reported (and its successor, chained from it)."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    f, i = _row_file(lake, seq)
    _rewrite(f, lambda t: _set(t, "hash", i, stored(t.column("hash")[i].as_py())))
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    changed = sorted(f.seq for f in report.findings if f.kind == "changed_row")
    assert changed and changed[0] == seq and set(changed) <= {seq, seq + 1}, report.findings
    rows = {"deleted_row", "duplicate_row", "inserted_row", "reordered_row", "changed_field", "unknown_key"}
    assert not {f.kind for f in report.findings} & rows, report.findings


@pytest.mark.parametrize("incremental", [False, True])
@pytest.mark.parametrize("seq, kind, not_kind", [(5, "deleted_row", "truncated_tail"),
                                                  (N_FILES * PER_FILE - 1, "truncated_tail", "deleted_row")])
def test_a_row_deleted_inside_the_log_is_no_truncated_tail(pristine, tmp_path, monkeypatch, seq, kind, not_kind, incremental):
    """Alike in a full pass and an incremental one (which reads the rows before its trusted
    checkpoint by seq alone), and a deleted row is located by its seq."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    tamper_deleted_row(lake, seq)
    report = verify(lake, trusted_file=str(trusted), update_trust=False, incremental=incremental)
    kinds = {f.kind for f in report.findings}
    assert kind in kinds and not_kind not in kinds, report.findings
    if kind == "deleted_row":
        assert [f.seq for f in report.findings if f.kind == kind] == [seq]


def test_an_incremental_pass_finds_a_row_deleted_and_another_copied_before_its_checkpoint(pristine, tmp_path, monkeypatch):
    """As many rows as the trusted checkpoint covers, but not each seq once."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    tamper_deleted_row(lake, 5)
    tamper_duplicated_row(lake, 9)
    report = verify(lake, trusted_file=str(trusted), update_trust=False, incremental=True)
    located = {(f.kind, f.seq) for f in report.findings if f.kind in ("deleted_row", "duplicate_row")}
    assert located == {("deleted_row", 5), ("duplicate_row", 9)}, report.findings


def test_an_edited_checkpoint_is_reported_for_each_check_it_fails_and_its_successor_still_links(
        pristine, tmp_path, monkeypatch):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    first = min(_files(lake, "checkpoints"), key=lambda f: pq.read_table(f).column("tree_size")[0].as_py())
    _rewrite(first, lambda t: _set(t, "time", 0, "2020-01-01T00:00:00Z"))
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    details = sorted(f.detail for f in report.findings if f.kind == "forged_checkpoint")
    assert details == [f"tree size {PER_FILE}: checkpoint_hash does not match the checkpoint's fields",
                       f"tree size {PER_FILE}: signature does not verify"], report.findings
    assert "missing_checkpoint" not in {f.kind for f in report.findings}


@pytest.mark.parametrize("column, value", [("tree_size", None), ("frontier", ["zz"]), ("frontier", ["ab" * 32] * 9),
                                           ("checkpoint_hash", None), ("time", None)])
def test_a_checkpoint_row_of_the_wrong_shape_is_a_finding_not_a_crash(pristine, tmp_path, monkeypatch, column, value):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim = _files(lake, "checkpoints")[1]
    _rewrite(victim, lambda t: _set(t, column, 0, value))
    for incremental in (False, True):
        report = verify(lake, trusted_file=str(trusted), update_trust=False, incremental=incremental)
        assert "forged_checkpoint" in {f.kind for f in report.findings}, (column, value, report.findings)


@pytest.mark.parametrize("change", [
    lambda t: t.set_column(0, "seq", pa.array([str(x) for x in t.column("seq").to_pylist()])),
    lambda t: t.append_column("evil", pa.array(["x"] * t.num_rows)),
    lambda t: t.drop(["data"]),
    lambda t: t.drop(["leaf"]),
    lambda t: t.set_column(t.schema.get_field_index("hash"), "hash", pa.array(range(t.num_rows))),
], ids=["seq-as-text", "extra-column", "no-data", "no-leaf", "hash-as-int"])
def test_a_data_file_of_other_columns_is_reported_and_its_rows_missing(pristine, tmp_path, monkeypatch, change):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim, _ = _row_file(lake, 7)
    _rewrite(victim, change)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    rel = str(victim.relative_to(Path(lake.uri, "tables", "ledger")))
    assert any(f.kind == "data_file_replaced" and f.file == rel and f.detail.startswith("not a ledger file")
               for f in report.findings), report.findings
    assert "deleted_row" in {f.kind for f in report.findings}  # its rows are not read


@pytest.mark.parametrize("change", [lambda t: t.drop([t.column_names[0]]),
                                    lambda t: t.append_column("evil", pa.array(["x"] * t.num_rows))],
                         ids=["dropped-column", "extra-column"])
def test_a_signed_tables_file_with_other_columns_is_unsigned(pristine, tmp_path, monkeypatch, change):
    """The signature covers the table's columns read by name: a column dropped or added is
    no longer the signed file."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    _rewrite(_files(lake, "ingest_log")[0], change)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert any(f.kind == "unsigned_commit" and f.table == "ingest_log" and "columns" in f.detail
               for f in report.findings), report.findings


def _newest_manifest(lake: Lake) -> Path:
    return sorted(Path(lake.uri, "_retention").glob("*.json"))[-1]


def test_the_newest_batch_sealed_again_before_any_verify_saw_it_is_found(pristine, tmp_path, monkeypatch):
    """No verify has seen the newest batch's manifest (the fixture never advances the trust
    store), yet the writer remembered it beside the trusted checkpoint when it sealed it: its
    deletion, a file of the batch changed meanwhile, and repair sealing the files again as
    they are now, is found."""
    from auditlake.cli import main

    lake, _ = _copy(pristine, tmp_path / "lake", monkeypatch)
    newest = _newest_manifest(lake)
    victim = next(Path(lake.uri, rel) for rel in json.loads(newest.read_text())["objects"]
                  if rel.startswith("tables/ledger/") and rel.endswith(".parquet"))
    _rewrite(victim, lambda t: _set(t, "source_line", 0, 999))  # provenance: outside the sealed record
    newest.unlink()
    assert main(["--lake", lake.uri, "repair"]) in (0, 1)
    report = verify(lake, update_trust=False)
    assert any(f.kind == "RET-WORM" and f.file == f"_retention/{newest.name}" and "is gone or changed" in f.detail
               for f in report.findings), report.findings


def test_the_newest_batch_removed_whole_before_any_verify_saw_it_is_found(pristine, tmp_path, monkeypatch):
    """Every table's last commit, its files and the manifest sealing them deleted leaves a
    shorter lake that is consistent in itself: the manifest the writer remembered is missing."""
    lake, _ = _copy(pristine, tmp_path / "lake", monkeypatch)
    newest = _newest_manifest(lake)
    for rel in json.loads(newest.read_text())["objects"]:
        Path(lake.uri, rel).unlink(missing_ok=True)
    newest.unlink()
    _relock(lake)
    report = verify(lake, update_trust=False)
    assert report.events == (N_FILES - 1) * PER_FILE  # the shorter lake reads whole
    assert [(f.kind, f.file) for f in report.findings] == [("RET-WORM", f"_retention/{newest.name}")], report.findings


def test_a_malformed_manifest_is_a_finding_not_a_crash(pristine, tmp_path, monkeypatch):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    for name, body in (("zz.json", "[]"), ("zy.json", '{"objects": [1]}'), ("zx.json", '{"objects": {"a": 1}}')):
        Path(lake.uri, "_retention", name).write_text(body)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    unreadable = {f.file for f in report.findings if f.detail == "retention manifest is unreadable"}
    assert unreadable == {"_retention/zz.json", "_retention/zy.json", "_retention/zx.json"}, report.findings


def test_a_ledger_file_overwritten_with_noise_is_replaced_not_missing(pristine, tmp_path, monkeypatch):
    """pyarrow's message for it says "magic bytes not found": the file is there, unreadable."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim, _ = _row_file(lake, 7)
    victim.write_bytes(os.urandom(victim.stat().st_size))
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    rel = str(victim.relative_to(Path(lake.uri, "tables", "ledger")))
    assert any(f.kind == "data_file_replaced" and f.file == rel and f.detail.startswith("unreadable")
               for f in report.findings), report.findings


def test_a_ledger_file_only_duckdb_cannot_read_is_replaced_not_a_crash(pristine, tmp_path, monkeypatch):
    """A changed byte that pyarrow reads past (the same rows) but DuckDB's reader refuses
    (a page header): a finding naming the file (exit 1), not DuckDB's error (exit 2). Such
    bytes are plentiful in any column but rare in seq and hash, the columns verify reads
    through DuckDB first: here it reads every column there (as a tamper in those would)."""
    import io

    import duckdb
    import pyarrow.parquet as pq

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim, _ = _row_file(lake, 7)
    original = victim.read_bytes()
    for at in range(4, len(original) - 8):  # (page headers, where such bytes are, come early)
        damaged = bytearray(original)
        damaged[at] ^= 1
        try:
            pq.read_table(io.BytesIO(bytes(damaged))).validate(full=True)
        except Exception:  # noqa: BLE001 - pyarrow sees this one: another test's case
            continue
        victim.write_bytes(damaged)
        try:
            duckdb.execute("SELECT * FROM read_parquet(?)", [str(victim)]).to_arrow_table()
        except duckdb.Error:
            break
    else:
        pytest.fail("no byte of the file that only DuckDB's reader refuses")
    from auditlake.verify import _Positions

    monkeypatch.setattr(_Positions, "_read", staticmethod(
        lambda con: con.execute("SELECT seq, hash, * EXCLUDE (seq, hash) FROM ledger").to_arrow_reader(1 << 20)))
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    rel = str(victim.relative_to(Path(lake.uri, "tables", "ledger")))
    assert any(f.kind == "data_file_replaced" and f.file == rel and f.detail.startswith("unreadable")
               for f in report.findings), report.findings


@pytest.mark.parametrize("folder", ["_delta_log_old", "_delta_logx"])
def test_a_data_file_in_a_folder_named_like_the_log_is_inserted(pristine, tmp_path, monkeypatch, folder):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim, _ = _row_file(lake, 7)
    copy = Path(lake.uri, "tables", "ledger", folder, "x.parquet")
    copy.parent.mkdir()
    shutil.copy(victim, copy)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert any(f.kind == "data_file_inserted" and f.file == f"{folder}/x.parquet" for f in report.findings), report.findings


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_sealed_file_behind_a_symbolic_link_is_a_finding(pristine, tmp_path, monkeypatch, link):
    """Identical bytes elsewhere are not under the lake's lock (the attacker may change them)."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim, _ = _row_file(lake, 7)
    moved = tmp_path / "outside" / victim.parent.name
    if link == "file":
        moved.mkdir(parents=True)
        shutil.move(victim, moved / victim.name)
        victim.symlink_to(moved / victim.name)
    else:
        moved.parent.mkdir()
        shutil.move(victim.parent, moved)
        victim.parent.symlink_to(moved, target_is_directory=True)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    rel = str(victim.relative_to(Path(lake.uri, "tables", "ledger")))  # as every finding names a table's file
    assert any(f.kind == "RET-WORM" and f.file == rel and f.partition == victim.parent.name and "symbolic link" in f.detail
               for f in report.findings), report.findings


def test_a_row_copied_into_a_later_commit_is_located_at_the_copy(pristine, tmp_path, monkeypatch):
    """The duplicate is the copy a later commit added: its file, partition and event id (the
    original file sorts either side of it by name)."""
    from deltalake import write_deltalake

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    original, i = _row_file(lake, 7)
    row = pq.read_table(original).slice(i, 1)
    day = original.parent.name.split("=", 1)[1]
    before = set(_files(lake, "ledger"))
    write_deltalake(lake.table_uri("ledger"), row.append_column("event_date", pa.array([day])), mode="append")
    copy, = set(_files(lake, "ledger")) - before
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    dup, = [f for f in report.findings if f.kind == "duplicate_row"]
    assert (dup.seq, dup.file, dup.partition, dup.event_id) == (
        7, str(copy.relative_to(Path(lake.uri, "tables", "ledger"))), original.parent.name, row.column("event_id")[0].as_py())


def test_a_row_without_seq_is_located_with_its_partition(pristine, tmp_path, monkeypatch):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    tamper_unsequenced_row(lake, 7)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    row, = [f for f in report.findings if f.event_id == "forged-unsequenced"]
    assert row.kind == "reordered_row" and row.partition == row.file.split("/")[0], row


def test_every_finding_names_a_tables_file_the_same_way(pristine, tmp_path, monkeypatch):
    """A file changed in place is found by the row checks and the retention check: both name
    it relative to its table, so a reader grouping findings by file sees one file."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim, i = _row_file(lake, 7)
    _rewrite(victim, lambda t: _set(t, "tenant_id", i, "tenant-z"))
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    rel = str(victim.relative_to(Path(lake.uri, "tables", "ledger")))
    named = {(f.kind, f.file) for f in report.findings if f.table == "ledger" and f.kind in ("changed_field", "RET-WORM")}
    assert {k for k, _ in named} == {"changed_field", "RET-WORM"} and {f for _, f in named} == {rel}, report.findings


@pytest.mark.parametrize("forge", ["copied-rows", "unchained-row"])
def test_a_ledger_commit_the_lake_did_not_make_is_never_sealed_and_repair_removes_it(pristine, tmp_path, monkeypatch,
                                                                                       forge):
    """A blind append of copies of sealed rows (seqs the log has), or of a next row whose hash
    does not chain: sealed by the next ingest it would stay for good (COMPLIANCE-locked on
    S3), the seqs no longer gap-free; the ingest stops with one line, repair removes it."""
    from deltalake import write_deltalake

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    original, i = _row_file(lake, 7)
    row = pq.read_table(original).slice(i, 1)
    if forge == "unchained-row":
        row = _set(_set(row, "seq", 0, N_FILES * PER_FILE), "hash", 0, "ab" * 32)
    day = original.parent.name.split("=", 1)[1]
    write_deltalake(lake.table_uri("ledger"), row.append_column("event_date", pa.array([day])), mode="append")
    # (The unchained row is also the tail after the last checkpoint, which ingest checks first.)
    _refused_until_repaired(lake, trusted, tmp_path, f"ledger/_delta_log/{N_FILES:020d}.json is no commit the lake "
                                                     "makes|the ledger's tail after the last checkpoint does not chain")


def _refused_until_repaired(lake, trusted, tmp_path, refused: str, table: str = "ledger") -> None:
    """The next ingest stops with one line matching `refused`, before sealing the forged commit
    (the table's first after the pristine lake's); repair removes it; then ingest carries on
    and verify is clean."""
    from auditlake.errors import AuditlakeError
    from auditlake.lake.admin import repair

    landing = write_jsonl(tmp_path / "more" / "a.jsonl", [event(n=10_000 + i) for i in range(3)])
    with pytest.raises(AuditlakeError, match=refused):
        ingest(lake, [str(landing)])
    _relock(lake)
    assert f"tables/{table}/_delta_log/{N_FILES:020d}.json" in repair(lake)["repaired"]
    assert ingest(lake, [str(landing)]).accepted == 3
    assert verify(lake, trusted_file=str(trusted), update_trust=False).ok


def test_a_public_key_planted_in_the_lakes_identity_file_is_reported(pristine, tmp_path, monkeypatch):
    """auditlake.json's public keys are informational, but an offline verifier may take them
    from there: one the keystore does not hold was planted."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    meta = Path(lake.uri, "auditlake.json")
    doc = json.loads(meta.read_text())
    from auditlake.lake.meta import open_lake_keys

    doc["public_keys"] = {**open_lake_keys(lake).public_keys(), "sk-planted": "AAAA"}
    meta.write_text(json.dumps(doc))
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert [(f.kind, f.file) for f in report.findings] == [("identity_changed", "auditlake.json")], report.findings
    assert "sk-planted" in report.findings[0].detail


def test_a_deleted_identity_file_is_a_finding_not_a_usage_error(pristine, tmp_path, monkeypatch):
    """auditlake.json gone while the tables are there is tampering (exit 1, a finding), the
    rest verified under the keystore its checkpoints' log id names; a writer still refuses."""
    from auditlake.cli import main
    from auditlake.errors import AuditlakeError

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    Path(lake.uri, "auditlake.json").unlink()
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert [(f.kind, f.file) for f in report.findings] == [("identity_changed", "auditlake.json")], report.findings
    assert report.events == N_FILES * PER_FILE
    assert main(["--lake", lake.uri, "verify", "--no-trust-update"]) == 1
    landing = write_jsonl(tmp_path / "more" / "a.jsonl", [event(n=10_000)])
    with pytest.raises(AuditlakeError, match="has tables but no auditlake.json"):
        ingest(lake, [str(landing)])


@pytest.mark.parametrize("log_id", ["log-00000000000000000000000000000000", 7, "another log of this host"])
def test_an_identity_file_naming_another_log_is_a_finding_not_a_usage_error(pristine, tmp_path, monkeypatch, log_id):
    """auditlake.json edited to name a log this host has no keys of, or another lake's of
    this host, while the checkpoints are signed for one it has: exit 1 with that one finding,
    the rest verified under the checkpoints' keys; writers refuse."""
    from auditlake.cli import main
    from auditlake.errors import AuditlakeError
    from auditlake.keys import KeyStore

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    if log_id == "another log of this host":
        log_id = KeyStore("log-" + "1" * 32).log_id
    meta = Path(lake.uri, "auditlake.json")
    doc = json.loads(meta.read_text())
    real, doc["log_id"] = doc["log_id"], log_id
    meta.write_text(json.dumps(doc))
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert [(f.kind, f.file) for f in report.findings] == [("identity_changed", "auditlake.json")], report.findings
    assert real in report.findings[0].detail and report.events == N_FILES * PER_FILE
    assert main(["--lake", lake.uri, "verify", "--no-trust-update"]) == 1
    landing = write_jsonl(tmp_path / "more" / "a.jsonl", [event(n=10_000)])
    with pytest.raises((AuditlakeError, TypeError)):
        ingest(lake, [str(landing)])


def test_an_identity_file_never_picks_keys_outside_the_keystore_folder(pristine, tmp_path, monkeypatch):
    """A log id is a name, never a path: auditlake.json naming "../../<lake>/.k/<id>", where a
    keystore was planted, is refused (the keys could be anyone's, the lake's own forger's)."""
    from auditlake.cli import main
    from auditlake.errors import AuditlakeError
    from auditlake.keys import KeyStore, auditlake_home, keystore_dir

    lake, _trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    meta = Path(lake.uri, "auditlake.json")
    doc = json.loads(meta.read_text())
    planted = Path(lake.uri, ".k", doc["log_id"])
    shutil.copytree(keystore_dir(doc["log_id"]), planted)
    path_id = "../" * len(auditlake_home().joinpath("keystores").resolve().parts) + str(planted.resolve()).lstrip("/")
    assert (auditlake_home() / "keystores" / path_id).resolve() == planted.resolve()
    keys = json.loads((planted / "keys.json").read_text())
    (planted / "keys.json").write_text(json.dumps(keys | {"log_id": path_id}))
    doc["log_id"] = path_id
    meta.write_text(json.dumps(doc))
    monkeypatch.setenv("AUDITLAKE_HOME", str(tmp_path / "verifier"))  # a host that holds other logs' keys
    KeyStore("log-" + "0" * 32)
    assert main(["--lake", lake.uri, "verify", "--no-trust-update"]) == 2
    with pytest.raises(AuditlakeError, match="no log id"):
        keystore_dir(path_id)


@pytest.mark.parametrize("damage", ["gap", "junk_entry"])
def test_a_damaged_delta_log_is_a_finding_with_the_catalog_beside_it(pristine, tmp_path, monkeypatch, damage):
    """The catalog's views bind the tables' Delta logs: one DuckDB cannot read must not stop
    verify (it did, exit 2, before any finding); the history checks report it."""
    from auditlake.catalog import build_catalog

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    build_catalog(lake)
    log = Path(lake.uri, "tables", "ledger", "_delta_log")
    if damage == "gap":
        (log / f"{N_FILES + 2:020d}.json").write_text('{"commitInfo":{"operation":"WRITE"}}\n')
    else:
        (log / f"{N_FILES:020d}.json").write_text("this is not json\n")
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    kinds = {f.kind for f in report.findings}
    assert ("history_missing" if damage == "gap" else "non_append_commit") in kinds, report.findings


def test_a_checkpoint_row_past_jsons_exact_integers_is_forged_not_a_crash(pristine, tmp_path, monkeypatch):
    from deltalake import write_deltalake

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    t = lake.delta("checkpoints").to_pyarrow_dataset().to_table()
    row = t.slice(t.num_rows - 1, 1)
    row = row.set_column(row.schema.get_field_index("tree_size"), "tree_size", pa.array([2**53 + 1], pa.int64()))
    before = {p.name for p in Path(lake.table_uri("checkpoints")).glob("*.parquet")}
    write_deltalake(lake.table_uri("checkpoints"), row, mode="append")
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    (forged,) = [f for f in report.findings if f.kind == "forged_checkpoint"]
    (added,) = {p.name for p in Path(lake.table_uri("checkpoints")).glob("*.parquet")} - before
    assert (forged.detail, forged.file) == (f"a checkpoint whose tree size is {2**53 + 1}", added)  # located


@pytest.mark.parametrize("column, value", [("tree_size", N_FILES * PER_FILE + 50), ("root", "ab" * 32)])
def test_a_forged_checkpoint_is_evidence_of_nothing_about_the_rows(pristine, tmp_path, monkeypatch, column, value):
    """An unsigned checkpoint row past the ledger's end (or with another root) is forged, and
    the intact ledger is neither a truncated tail nor a root mismatch because of it."""
    from deltalake import write_deltalake

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    t = lake.delta("checkpoints").to_pyarrow_dataset().to_table()
    row = _set(t.slice(t.num_rows - 1, 1), column, 0, value)
    write_deltalake(lake.table_uri("checkpoints"), row, mode="append")
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    kinds = {f.kind for f in report.findings}
    assert "forged_checkpoint" in kinds and not kinds & {"truncated_tail", "root_mismatch"}, report.findings


@pytest.mark.parametrize("edit, said", [
    (lambda d: d | {"public_keys": {"sk-deadbeef0000": "A" * 43 + "="}}, "publishes the public key sk-deadbeef0000"),
    (lambda d: d | {"public_keys": "garbage"}, "publishes public_keys that are no map of key ids"),
    (lambda d: "{", "is no JSON object"),
])
def test_an_identity_file_publishing_other_keys_or_no_json_is_a_finding(pristine, tmp_path, monkeypatch, edit, said):
    """Only planted keys published (none of the keystore's), or auditlake.json no longer JSON:
    exit 1 with identity_changed, the rest verified (it was exit 2, as for a wrong keystore)."""
    from auditlake.cli import main

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    meta = Path(lake.uri, "auditlake.json")
    new = edit(json.loads(meta.read_text()))
    meta.write_text(new if isinstance(new, str) else json.dumps(new))
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    assert [(f.kind, f.file) for f in report.findings] == [("identity_changed", "auditlake.json")], report.findings
    assert said in report.findings[0].detail and report.events == N_FILES * PER_FILE
    assert main(["--lake", lake.uri, "verify", "--no-trust-update"]) == 1


@pytest.mark.parametrize("seq", [0, 20])
def test_an_add_action_giving_its_rows_another_partition_value_is_located(pristine, tmp_path, monkeypatch, seq):
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    victim = str(_row_file(lake, seq)[0].relative_to(Path(lake.uri, "tables", "ledger")))
    tamper_partition_value(lake, seq)
    _relock(lake)
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    (f,) = [f for f in report.findings if f.kind == "changed_field"]
    assert (f.table, f.file, f.partition) == ("ledger", victim, victim.split("/")[0]) and "1999" in f.detail


def test_ingest_does_not_write_over_a_tail_dropped_with_its_manifests(pristine, tmp_path, monkeypatch):
    """The last batch dropped from every table and the retention manifests rewritten: this
    host remembers the manifests it sealed, so the next ingest stops instead of forking the
    log at the old tree size."""
    from auditlake.errors import AuditlakeError

    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    tamper_truncated_tail(lake, 0)
    before = lake.delta("ledger").version()
    write_jsonl(tmp_path / "next" / "b.jsonl", [event(n=900 + i) for i in range(3)])
    with pytest.raises(AuditlakeError, match="was sealed here and is gone or changed"):
        ingest(lake, [str(tmp_path / "next")])
    assert lake.delta("ledger").version() == before


def test_a_verify_that_ends_after_a_newer_one_never_moves_the_trust_store_back(lake, tmp_path, monkeypatch):
    """Verify A reads the checkpoints; meanwhile a batch lands and verify B trusts its newer
    checkpoint; A, clean over what it read, must leave B's in the trust store."""
    from auditlake import verify as verify_module

    ingest(lake, [str(write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)]))])
    read = verify_module._read_checkpoints
    inner = []

    def read_then_let_another_verify_finish(*args):
        rows = read(*args)
        if not inner:
            inner.append(True)
            ingest(lake, [str(write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(3, 6)]))])
            assert verify(lake).ok  # B: trusts tree size 6
        return rows

    monkeypatch.setattr(verify_module, "_read_checkpoints", read_then_let_another_verify_finish)
    assert verify(lake).ok  # A: read the checkpoints at tree size 3
    trusted = json.loads(verify_module.trust_path(open_lake_keys(lake).log_id).read_text())
    assert trusted["tree_size"] == 6


def _fifo_at(lake, rel):
    path = Path(lake.uri, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return rel


@pytest.mark.timeout(120)
@pytest.mark.parametrize("plant", [
    lambda lake: _fifo_at(lake, "tables/ledger/_delta_log/00000000000000000099.json"),
    lambda lake: _fifo_at(lake, "_retention/zz.json"),
    lambda lake: _fifo_at(lake, "_holds/x.json"),
    lambda lake: _fifo_at(lake, "auditlake.json"),
])
def test_a_fifo_planted_in_the_lake_is_reported_and_never_read(pristine, tmp_path, monkeypatch, plant):
    """Reading a FIFO blocks for ever (verify hung), and the listings skipped it (verify said
    intact): it is an entry the lake never makes, reported without being opened."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    rel = plant(lake)
    for incremental in (False, True):
        report = verify(lake, trusted_file=str(trusted), update_trust=False, incremental=incremental)
        assert ("data_file_inserted", rel) in {(f.kind, f.file) for f in report.findings}, report.findings


@pytest.mark.timeout(120)
def test_planted_oddities_that_hung_or_crashed_verify_are_findings(pristine, tmp_path, monkeypatch):
    """A manifest name linked to /dev/zero (read without end), and a log entry named with a
    final newline (taken for the version without it: verify stopped with exit 2)."""
    lake, trusted = _copy(pristine, tmp_path / "lake", monkeypatch)
    os.symlink("/dev/zero", Path(lake.uri, "_retention", "zz.json"))
    Path(lake.uri, "tables", "ledger", "_delta_log", "00000000000000000099.json\n").write_text("")
    report = verify(lake, trusted_file=str(trusted), update_trust=False)
    found = {(f.kind, f.file) for f in report.findings}
    assert ("data_file_inserted", "_delta_log/00000000000000000099.json\n") in found, report.findings
    assert any(f.kind == "RET-WORM" and f.file == "_retention/zz.json" for f in report.findings), report.findings
