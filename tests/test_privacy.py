"""Erasure by crypto-shredding, subject access (DSAR), reveals, and the audit events they leave."""
import base64
import csv
import json
import shutil

import orjson
import pytest

from auditlake import privacy
from auditlake.cli import main
from auditlake.ingest import ingest
from auditlake.lake import admin
from auditlake.lake.meta import open_lake_keys
from auditlake.verify import verify
from events import event, write_jsonl

SUBJECT = "subj-3"  # events n with n % 7 == 3


def _ledger(lake):
    return lake.delta("ledger").to_pyarrow_dataset().to_table().sort_by("seq").to_pylist()


def _build(lake, tmp_path, lo=0, hi=40, name="in"):
    evs = [event(n=i) for i in range(lo, hi)]
    write_jsonl(tmp_path / name / "a.jsonl", evs)
    ingest(lake, [str(tmp_path / name)])
    return evs


def _pii_of(evs, sid):
    out = []
    for ev in evs:
        if ev["subject"]["id"] == sid:
            out += [ev["subject"]["phone"], ev["subject"]["email"], ev["subject"]["name"]]
    return out


def _audit_events(lake, event_type):
    rows = [r for r in _ledger(lake) if r["source"] == "auditlake" and r["event_type"] == event_type]
    return [dict(r, data=json.loads(r["data"])) for r in rows]


def test_read_pii_decrypts_and_reads_erased_after_erasure(lake, tmp_path, capsys):
    evs = _build(lake, tmp_path)
    rows = [r for r in _ledger(lake) if r["subject_id"] == SUBJECT]
    assert rows
    before = privacy.read_pii(lake, rows)
    by_id = {e["event_id"]: e for e in evs}
    for r in before:
        ev = by_id[r["event_id"]]
        assert (r["subject_phone"], r["subject_email"], r["subject_name"]) == (
            ev["subject"]["phone"], ev["subject"]["email"], ev["subject"]["name"])
        assert r["actor_ip"] == ev["actor"]["ip"]

    assert main(["--lake", lake.uri, "erase", SUBJECT, "--reason", "GDPR Art. 17 request #12"]) == 0
    assert "erased subj-3" in capsys.readouterr().out

    after = privacy.read_pii(lake, rows)
    for r in after:
        assert r["subject_phone"] == r["subject_email"] == r["subject_name"] == privacy.ERASED
        # A service reported the address on the person's event: it is the person's, erased too.
        assert r["actor_ip"] == privacy.ERASED
    other = privacy.read_pii(lake, [r for r in _ledger(lake) if r["subject_id"] == "subj-4"])
    assert all(r["subject_phone"].startswith("+1") for r in other)
    # The records, hashes, tree and checkpoints are untouched: verify passes.
    report = verify(lake)
    assert report.ok, report.findings
    # The erasure is an audit event in the ledger, naming the subject by id only.
    done = _audit_events(lake, "privacy.request_completed")
    assert len(done) == 1
    d = done[0]
    assert d["subject_id"] == SUBJECT and d["data"]["outcome"] == "fulfilled" and d["data"]["kind"] == "erasure"
    assert d["data"]["request_id"].startswith("erase-") and d["data"]["key_destroyed"] is True
    assert d["actor_type"] in ("user", "system") and d["actor_id"]
    assert d["subject_pii_sealed"] is None and d["pii_fields"] == ""


def test_no_copy_of_an_erased_key_survives(lake, tmp_path, auditlake_home):
    _build(lake, tmp_path)
    keys = open_lake_keys(lake)
    raw = keys.data_keys([SUBJECT], create=False)[SUBJECT]
    con = keys._db()
    wrapped = con.execute("SELECT wrapped FROM datakeys WHERE subject_id = ?", (SUBJECT,)).fetchone()[0]
    con.close()
    needles = [raw, wrapped, base64.b64encode(raw), base64.b64encode(wrapped), raw.hex().encode(), wrapped.hex().encode()]
    # A copy exists before erasure (the scan can find it)...
    blobs = [p.read_bytes() for p in auditlake_home.rglob("*") if p.is_file()]
    assert any(wrapped in b for b in blobs)
    privacy.erase(lake, SUBJECT)
    # ...and none after, in any file of the keystore home (sqlite pages, journals, keys.json,
    # backups), nor in the lake.
    for root in (auditlake_home, tmp_path / "lake"):
        for p in root.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                for needle in needles:
                    assert needle not in data, (p, needle[:8])
    assert keys.data_keys([SUBJECT], create=False) == {}
    assert keys.is_erased([SUBJECT]) == {SUBJECT}
    assert SUBJECT in privacy.erased_subjects(lake)
    # A second erasure is harmless and logged too.
    res = privacy.erase(lake, SUBJECT)
    assert res["key_destroyed"] is False
    assert len(_audit_events(lake, "privacy.request_completed")) == 2


def test_an_erased_subjects_later_events_keep_no_pii(lake, tmp_path):
    _build(lake, tmp_path)
    privacy.erase(lake, SUBJECT)
    late = [event(n=i, event_id=f"11111111-1111-4111-8111-{i:012d}") for i in range(100, 120)]
    write_jsonl(tmp_path / "late" / "a.jsonl", late)
    ingest(lake, [str(tmp_path / "late")])
    keys = open_lake_keys(lake)
    assert keys.data_keys([SUBJECT], create=False) == {}  # no new key was made
    rows = [r for r in _ledger(lake) if r["subject_id"] == SUBJECT and r["event_id"].startswith("11111111")]
    assert rows and all(r["subject_pii_sealed"] is None for r in rows)
    assert all(r["subject_phone"] == privacy.ERASED for r in privacy.read_pii(lake, rows))
    assert verify(lake).ok


def test_an_erasure_between_the_sealers_look_and_its_key_request_makes_no_key(lake, tmp_path, monkeypatch):
    """The sealer asks who is erased, then for the others' keys: an erasure committed in
    between must not be outlived by a key made for the new events (their PII would then be
    readable by anyone holding the keystore)."""
    from auditlake.keys import KeyStore

    _build(lake, tmp_path)
    asked, erasing = KeyStore.is_erased, []

    def erased_right_after_the_look(self, ids):
        found = asked(self, ids)
        if SUBJECT in ids and not erasing:
            erasing.append(SUBJECT)
            privacy.erase(lake, SUBJECT)
        return found

    monkeypatch.setattr(KeyStore, "is_erased", erased_right_after_the_look)
    late = [event(n=i, event_id=f"22222222-2222-4222-8222-{i:012d}") for i in range(100, 110)]
    write_jsonl(tmp_path / "late" / "a.jsonl", late)
    ingest(lake, [str(tmp_path / "late")])
    monkeypatch.setattr(KeyStore, "is_erased", asked)
    keys = open_lake_keys(lake)
    assert erasing and keys.is_erased([SUBJECT]) == {SUBJECT}
    assert keys.data_keys([SUBJECT], create=False) == {} and keys.data_keys([SUBJECT]) == {}
    rows = [r for r in _ledger(lake) if r["subject_id"] == SUBJECT and r["event_id"].startswith("22222222")]
    assert rows and all(r["subject_pii_sealed"] is None for r in rows)


@pytest.mark.parametrize("action", ["erase", "hold lift"])
def test_an_audit_event_a_crash_left_unlogged_is_ingested_by_the_next_run(lake, tmp_path, monkeypatch, action):
    """Killed after the erasure (or hold lift) was done and its audit event file written, but
    before that file was ingested: the next ingest, of anything, records the event."""
    import auditlake.ingest as ingest_module

    _build(lake, tmp_path)
    if action == "hold lift":
        admin.set_hold(lake, SUBJECT, reason="litigation")
    real = ingest_module.ingest

    def killed(lake_, paths=None, progress=None, fresh_since=None):
        if fresh_since is not None:
            raise KeyboardInterrupt  # the process dies before the audit file is ingested
        return real(lake_, paths, progress, fresh_since)

    monkeypatch.setattr(ingest_module, "ingest", killed)
    with pytest.raises(KeyboardInterrupt):
        privacy.erase(lake, SUBJECT) if action == "erase" else admin.lift_hold(lake, SUBJECT, "settled")
    monkeypatch.setattr(ingest_module, "ingest", real)
    kind = "privacy.request_completed" if action == "erase" else "config.changed"
    before = len(_audit_events(lake, kind))
    write_jsonl(tmp_path / "next" / "a.jsonl", [event(n=500)])
    report = ingest(lake, [str(tmp_path / "next")])
    assert report.accepted == 2 and report.quarantined == 0
    recorded = _audit_events(lake, kind)
    assert len(recorded) == before + 1
    if action == "erase":
        assert recorded[-1]["data"]["key_destroyed"] is True
    assert ingest(lake, [str(tmp_path / "next")]).accepted == 0  # once
    assert verify(lake).ok


def test_a_legal_hold_blocks_erasure(lake, tmp_path, capsys):
    _build(lake, tmp_path)
    admin.set_hold(lake, SUBJECT, reason="litigation 2026-17")
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 2
    err = capsys.readouterr().err
    assert "legal hold" in err and "litigation 2026-17" in err
    keys = open_lake_keys(lake)
    assert SUBJECT in keys.data_keys([SUBJECT], create=False)  # nothing was destroyed
    denied = _audit_events(lake, "privacy.request_completed")
    assert [d["data"]["outcome"] for d in denied] == ["denied"]
    assert "legal hold" in denied[0]["data"]["denial_reason"]
    # Another subject is not held; a lake-wide hold holds everyone.
    assert privacy.erase(lake, "subj-5")["key_destroyed"]
    admin.set_hold(lake, None, reason="regulator inquiry")
    with pytest.raises(Exception, match="legal hold"):
        privacy.erase(lake, "subj-6")
    admin.lift_hold(lake, None, reason="closed")
    admin.lift_hold(lake, SUBJECT, reason="settled")
    assert privacy.erase(lake, SUBJECT)["key_destroyed"]
    assert verify(lake).ok


def test_dsar_exports_every_event_with_pii_as_json_and_csv(lake, tmp_path, capsys):
    evs = _build(lake, tmp_path)
    mine = {e["event_id"]: e for e in evs if e["subject"]["id"] == SUBJECT}
    out = tmp_path / "dsar"
    assert main(["--lake", lake.uri, "dsar", SUBJECT, "--out", str(out)]) == 0
    doc = json.loads((out / "subject_access.json").read_text())
    assert doc["subject_id"] == SUBJECT and not doc["erased"]
    got = {e["event_id"]: e for e in doc["events"]}
    assert set(got) == set(mine)
    for eid, ev in mine.items():
        g = got[eid]
        assert g["subject"]["phone"] == ev["subject"]["phone"]
        assert g["subject"]["email"] == ev["subject"]["email"]
        assert g["subject"]["name"] == ev["subject"]["name"]
        assert g["actor"]["ip"] == ev["actor"]["ip"]
        assert g["data"] == ev["data"] and g["event_type"] == ev["event_type"]
    with open(out / "subject_access.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["event_id"] for r in rows} == set(mine)
    assert {r["subject_email"] for r in rows} == {e["subject"]["email"] for e in mine.values()}
    # Recorded as a data.exported audit event, with no plain PII in it.
    ex = _audit_events(lake, "data.exported")
    assert len(ex) == 1 and ex[0]["data"]["export_id"] == doc["export_id"]
    assert ex[0]["data"]["rows"] == len(mine) and ex[0]["subject_id"] == SUBJECT
    assert ex[0]["event_id"] == doc["audit_event_id"]
    leaf = ex[0]["leaf"]
    for value in _pii_of(evs, SUBJECT):
        assert value not in leaf
    # The output folder must be new; after erasure the DSAR shows [erased].
    assert main(["--lake", lake.uri, "dsar", SUBJECT, "--out", str(out)]) == 2
    privacy.erase(lake, SUBJECT)
    res = privacy.dsar(lake, SUBJECT, str(tmp_path / "dsar2"))
    doc2 = json.loads((tmp_path / "dsar2" / "subject_access.json").read_text())
    assert res["erased"] and doc2["erased"]
    assert all(e["subject"]["phone"] == privacy.ERASED for e in doc2["events"] if e["event_id"] in mine)
    text = (tmp_path / "dsar2" / "subject_access.json").read_text() + (tmp_path / "dsar2" / "subject_access.csv").read_text()
    for value in _pii_of(evs, SUBJECT):
        assert value not in text
    assert verify(lake).ok


def test_a_subject_access_export_shows_no_one_elses_personal_data(lake, tmp_path):
    """An employee who served a customer sees their own address, not the customer's data;
    the customer sees theirs, not the employee's address."""
    served = event("call.started", n=1, actor={"type": "user", "id": "emp-agent-1", "ip": "10.20.30.40"},
                   subject={"id": "cust-third", "phone": "+14155550123", "email": "third@example.com",
                            "name": "Thea Third", "country": "US"})
    # What the producer wrote of the customer in `data` too (the contract keeps it as written).
    served["data"] = served["data"] | {"customer_email": "third@example.com", "note": "callback +1 415 555 0123"}
    own = event("user.login", n=2, actor={"type": "user", "id": "emp-agent-1", "ip": "10.20.30.41"}, subject=None)
    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", [served, own]))])
    employee = privacy.dsar(lake, "emp-agent-1", str(tmp_path / "emp"))
    customer = privacy.dsar(lake, "cust-third", str(tmp_path / "cust"))
    assert employee["events"] == 2 and customer["events"] == 1
    emp = {e["event_id"]: e for e in json.loads((tmp_path / "emp" / "subject_access.json").read_text())["events"]}
    assert emp[served["event_id"]]["actor"]["ip"] == "10.20.30.40" and emp[own["event_id"]]["actor"]["ip"] == "10.20.30.41"
    assert {emp[served["event_id"]]["subject"][k] for k in ("phone", "email", "name")} == {privacy.OTHERS_DATA}
    text = (tmp_path / "emp" / "subject_access.json").read_text() + (tmp_path / "emp" / "subject_access.csv").read_text()
    for value in ("+14155550123", "third@example.com", "Thea Third", "+1 415 555 0123"):
        assert value not in text
    assert emp[served["event_id"]]["data"]["customer_email"] == "***"
    (cust,) = json.loads((tmp_path / "cust" / "subject_access.json").read_text())["events"]
    assert cust["subject"]["email"] == "third@example.com" and cust["actor"]["ip"] == privacy.OTHERS_DATA
    assert cust["data"]["customer_email"] == "third@example.com"  # the person's own, as written
    assert "10.20.30.4" not in (tmp_path / "cust" / "subject_access.csv").read_text()


def test_a_subject_access_export_lists_the_persons_quarantined_lines(lake, tmp_path):
    mine = event("consent.granted", n=1,
                 subject={"id": "kunde-müller", "phone": "+14155550177", "email": "q@example.com"})
    rejected = {**event("consent.granted", n=2, subject={"id": "kunde-müller", "phone": "+14155550177"}), "data": {}}
    other = {**event("consent.granted", n=3, subject={"id": "cust-other", "phone": "+14155550178"}), "data": {}}
    # A line that is no JSON names the id as a word; ids that merely contain it are others'.
    lines = [json.dumps(mine), json.dumps(rejected), json.dumps(other), "callback for kunde-müller; tel ***",
             "kunde-müller2 kunde-müllerX x.kunde-müller"]
    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", lines))])
    privacy.dsar(lake, "kunde-müller", str(tmp_path / "out"))
    doc = json.loads((tmp_path / "out" / "subject_access.json").read_text())
    assert [e["event_id"] for e in doc["events"]] == [mine["event_id"]]
    q, plain = doc["quarantined"]
    assert (q["source_file"], q["line"]) == ("a.jsonl", 2) and "consent_id" in q["reason"]
    assert "+14155550177" not in q["raw"] and '"kunde-müller"' in q["raw"]  # as the quarantine keeps it: masked
    assert plain["line"] == 4 and plain["raw"].startswith("callback for kunde-müller")


def test_reveal_is_audited_and_needs_a_reason(lake, tmp_path):
    evs = _build(lake, tmp_path, 0, 15)
    for blank in ("  ", "\u200b" * 12, "ok\u2060\u00a0" * 4):  # blank, zero-width, or eight visible characters
        with pytest.raises(Exception, match="reason of at least 10 visible characters"):
            privacy.reveal_subject(lake, SUBJECT, blank, actor="alice")
    assert _audit_events(lake, "data.exported") == []
    shown = privacy.reveal_subject(lake, SUBJECT, "customer called support, ticket 881", actor="alice")
    assert {e["subject"]["email"] for e in shown} == {e["subject"]["email"] for e in evs if e["subject"]["id"] == SUBJECT}
    ex = _audit_events(lake, "data.exported")
    assert len(ex) == 1
    assert ex[0]["actor_id"] == "alice" and ex[0]["data"]["format"] == "view"
    assert ex[0]["data"]["reason"] == "customer called support, ticket 881"


def test_audit_events_meet_the_contract_and_carry_no_pii():
    from auditlake.audit_events import build_event
    from auditlake.contract import check_event

    ev = build_event("data.exported", {"export_id": "x", "rows": 1, "format": "csv"}, actor="bob",
                     subject={"id": "s1", "phone": "+13125550000", "email": "a@b.c", "name": "N", "country": "DE"})
    assert check_event(ev) is None
    assert ev["subject"] == {"id": "s1", "country": "DE"}
    assert "+1312" not in orjson.dumps(ev).decode()
    with pytest.raises(Exception, match="contract"):
        build_event("data.exported", {"rows": 1}, actor="bob")


def test_erasure_shreds_keystore_backups_and_reports_other_copies(lake, tmp_path, capsys):
    import shutil

    _build(lake, tmp_path)
    keys = open_lake_keys(lake)
    wrapped = privacy._wrapped_key(keys, SUBJECT)
    other = privacy._wrapped_key(keys, "subj-4")
    backup = keys.dir / "backups" / "datakeys-2026-03-01.sqlite"
    backup.parent.mkdir()
    shutil.copy(keys.dir / "datakeys.sqlite", backup)
    dump = keys.dir / "backups" / "dump.bin"
    dump.write_bytes(b"header" + wrapped + b"trailer")
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 1  # a copy it cannot shred is reported
    out = capsys.readouterr().out
    assert "dump.bin" in out and "WARNING" in out
    assert wrapped not in backup.read_bytes() and other in backup.read_bytes()  # only that key went
    assert wrapped not in (keys.dir / "datakeys.sqlite").read_bytes()
    done = _audit_events(lake, "privacy.request_completed")[-1]["data"]
    assert done["keystore_copies_shredded"] == 1 and done["keystore_copies_remaining"] == 1
    dump.unlink()
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 0


@pytest.mark.parametrize("form", ["sql_dump", "gzip", "zip", "base64", "zstd"])
def test_erasure_finds_the_key_in_dumps_and_compressed_backups(lake, tmp_path, capsys, form):
    """An SQL `.dump` holds the key as hex, a gzip or zip backup compressed, a JSON export as
    base64: each is named and erase exits 1; a compressed file it cannot read is named too."""
    import gzip
    import sqlite3
    import zipfile

    _build(lake, tmp_path)
    keys = open_lake_keys(lake)
    wrapped = privacy._wrapped_key(keys, SUBJECT)
    backups = keys.dir / "backups"
    backups.mkdir()
    if form == "sql_dump":
        con = sqlite3.connect(keys.dir / "datakeys.sqlite")
        (backups / "dump.sql").write_text("\n".join(con.iterdump()))
        con.close()
    elif form == "gzip":
        (backups / "datakeys.sqlite.gz").write_bytes(gzip.compress((keys.dir / "datakeys.sqlite").read_bytes()))
    elif form == "zip":
        with zipfile.ZipFile(backups / "keys.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.write(keys.dir / "datakeys.sqlite", "datakeys.sqlite")
    elif form == "base64":
        (backups / "export.json").write_text(json.dumps({SUBJECT: base64.b64encode(wrapped).decode()}))
    else:
        (backups / "datakeys.sqlite.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 64)
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 1
    out = capsys.readouterr().out
    assert "WARNING: copies of the destroyed key remain in:" in out and str(backups) in out
    assert _audit_events(lake, "privacy.request_completed")[-1]["data"]["keystore_copies_remaining"] == 1
    # Erasing again, with the key gone, still names the copy (it exited 0 with none), and
    # keeps the first erasure's time; once the copy is deleted, all is clear.
    first = keys.is_erased([SUBJECT]) and privacy.erased_subjects(lake, keys)[SUBJECT]
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 1
    out = capsys.readouterr().out
    assert "unchanged since the key was destroyed" in out and f"already erased at {first}" in out
    assert _audit_events(lake, "privacy.request_completed")[-1]["data"]["keystore_copies_remaining"] == 1
    shutil.rmtree(backups)
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 0
    assert _audit_events(lake, "privacy.request_completed")[-1]["data"]["keystore_copies_remaining"] == 0


def _indexable_lake(lake, tmp_path, monkeypatch, batches: int) -> list[int]:
    """A lake of `batches` ingests of 30 events, indexed from 20 rows on; the seqs of
    SUBJECT's rows (as subject, or as the actor of an event with a sealed IP)."""
    from auditlake import proofs

    monkeypatch.setattr(proofs, "INDEX_MIN_ROWS", 20)
    for k in range(batches):
        _build(lake, tmp_path, k * 30, (k + 1) * 30, f"b{k}")
    return sorted(r["seq"] for r in _ledger(lake) if r["subject_id"] == SUBJECT
                  or (r["actor_id"] == SUBJECT and r["actor_ip_sealed"]))


def test_subject_index_is_signed_and_a_forged_one_cannot_hide_rows(lake, tmp_path, monkeypatch):
    from auditlake import proofs

    truth = _indexable_lake(lake, tmp_path, monkeypatch, batches=3)
    keys = open_lake_keys(lake)
    assert privacy.subject_rows(lake, SUBJECT).column("seq").to_pylist() == truth  # scans, then indexes
    segs = proofs._signed_segments(lake, proofs.SUBJECT_INDEX, keys)
    assert segs and proofs._cover([s[:3] for s in segs])[1] >= 90
    assert proofs.subject_seqs(lake, SUBJECT, keys) == truth
    # "router", the service acting in every event, has no address of its own: the ones it
    # reports are its events' subjects' (ip_owner), so it has no rows as a person.
    assert privacy.subject_rows(lake, "router").num_rows == 0
    # A forged segment that omits the subject cannot hide its rows: unsigned, it is ignored...
    import pyarrow as pa

    fake = pa.table({"key": ["zzz"], "seq": pa.array([0], pa.int64())})
    proofs._write_segment(lake, fake, 0, 10_000, proofs.SUBJECT_INDEX)
    assert not any(s[1] == 10_000 for s in proofs._signed_segments(lake, proofs.SUBJECT_INDEX, keys))
    assert proofs.subject_seqs(lake, SUBJECT, keys) == truth
    # ...signed by another key, it is ignored...
    from auditlake.keys import KeyStore

    other = KeyStore(keys.log_id, root=tmp_path / "other-keystores")
    proofs._write_segment(lake, fake, 0, 20_000, proofs.SUBJECT_INDEX, other)
    assert proofs.subject_seqs(lake, SUBJECT, keys) == truth
    # ...and a signed segment whose file was replaced afterwards fails its SHA-256 check.
    lo, hi, path, _ = max(proofs._signed_segments(lake, proofs.SUBJECT_INDEX, keys), key=lambda s: s[1])
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(fake, sink)
    with open(path, "wb") as f:
        f.write(sink.getvalue().to_pybytes())
    assert proofs.subject_seqs(lake, SUBJECT, keys) == truth


def test_subject_rows_read_only_the_indexed_files_and_survive_a_stale_pointer(lake, tmp_path, monkeypatch):
    from auditlake import proofs

    truth = _indexable_lake(lake, tmp_path, monkeypatch, batches=2)
    keys = open_lake_keys(lake)
    privacy.subject_rows(lake, "warm-up")  # indexes the ledger
    located = proofs.subject_locations(lake, SUBJECT, keys)
    assert sorted(located) == truth and all(located.values())  # every row with its data file
    monkeypatch.setattr(proofs, "read_seqs", lambda *a, **k: pytest.fail("read by seq although every file is known"))
    assert privacy.subject_rows(lake, SUBJECT).column("seq").to_pylist() == truth
    monkeypatch.undo()
    # A pointer to a file that does not hold the row (compacted away, say): read by seq.
    stale = {s: "event_date=2000-01-01/gone.parquet" for s in located}
    assert proofs.read_located(lake, stale, ["event_id"]).column("seq").to_pylist() == truth


def test_a_data_key_another_writer_made_first_is_the_one_used(tmp_path, monkeypatch):
    """Two keystore users create a person's key at once: the stored key wins for both, and
    keys created without a race are returned without reading them back."""
    from auditlake import keys as keys_module

    mine, theirs = keys_module.KeyStore("log-race", root=tmp_path), keys_module.KeyStore("log-race", root=tmp_path)
    insert = keys_module._insert_keys
    raced: list[dict] = []

    def other_writer_first(con, rows):  # once: the other writer's own insert is the real one
        monkeypatch.setattr(keys_module, "_insert_keys", insert)
        raced.append(theirs.data_keys(["s-1"]))
        return insert(con, rows)

    monkeypatch.setattr(keys_module, "_insert_keys", other_writer_first)
    got = mine.data_keys(["s-1", "s-2"])
    assert got["s-1"] == raced[0]["s-1"]
    assert got == theirs.data_keys(["s-1", "s-2"], create=False)
    monkeypatch.setattr(mine.wrapper, "unwrap", lambda *a: pytest.fail("a key just stored was read back"))
    fresh = mine.data_keys(["s-3"])
    assert fresh == theirs.data_keys(["s-3"], create=False)


def test_an_address_is_erased_with_its_owner(lake, tmp_path):
    """A user's own address stays theirs on a person's event; a service's report of an
    address on a person's event is the person's (see ip_owner); the catalog and the exports
    say [erased] for exactly those."""
    from auditlake import export
    import duckdb

    from auditlake.catalog import build_catalog, delta_extension_path

    agent = event(n=1) | {"actor": {"type": "user", "id": "agent-7", "ip": "10.20.30.40"}}
    form = event(n=8) | {"actor": {"type": "service", "id": "webform", "ip": "203.0.113.9"}}
    login = event(n=15, event_type="user.login") | {"actor": {"type": "user", "id": "agent-7", "ip": "10.20.30.41"},
                                                   "subject": None}
    for ev in (agent, form):
        ev["subject"]["id"] = "subj-x"
    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", [agent, form, login]))])
    assert main(["--lake", lake.uri, "erase", "subj-x", "--reason", "GDPR Art. 17"]) == 0
    ips = {r["event_id"]: r["actor_ip"] for r in privacy.read_pii(lake, _ledger(lake))}
    assert ips[agent["event_id"]] == "10.20.30.40" and ips[login["event_id"]] == "10.20.30.41"
    assert ips[form["event_id"]] == privacy.ERASED
    con = duckdb.connect(build_catalog(lake)["db"], read_only=True)
    con.execute(f"LOAD '{delta_extension_path()}'")
    shown = dict(con.execute("SELECT event_id, actor_ip FROM events WHERE actor_ip IS NOT NULL").fetchall())
    con.close()
    assert shown[form["event_id"]] == "[erased]" and shown[agent["event_id"]] == "***"
    m = export.build_export(lake, str(tmp_path / "bundle"), ["jsonl"], {})
    rows = [json.loads(line) for f in sorted((tmp_path / "bundle").rglob("*.jsonl")) for line in f.read_text().splitlines()]
    masked = {r["event_id"]: r.get("actor_ip") for r in rows if "event_id" in r}
    assert masked[form["event_id"]] == "[erased]" and masked[agent["event_id"]] == "***", m
    assert main(["--lake", lake.uri, "erase", "agent-7", "--reason", "GDPR Art. 17"]) == 0
    ips = {r["event_id"]: r["actor_ip"] for r in privacy.read_pii(lake, _ledger(lake))}
    assert ips[agent["event_id"]] == ips[login["event_id"]] == privacy.ERASED
    assert verify(lake, update_trust=False).ok


def test_a_reason_typed_by_a_person_is_masked_in_the_audit_event(lake, tmp_path):
    _build(lake, tmp_path, 0, 10)
    assert main(["--lake", lake.uri, "erase", SUBJECT, "--reason", "request from jane.roe@example.com, +14155550123"]) == 0
    (done,) = _audit_events(lake, "privacy.request_completed")
    assert done["data"]["reason"] == "request from ***, ***"


def test_erasing_twice_or_an_unknown_subject_says_so(lake, tmp_path, capsys):
    _build(lake, tmp_path, 0, 10)
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 0
    capsys.readouterr()
    assert main(["--lake", lake.uri, "erase", SUBJECT]) == 0
    assert "already erased at 20" in capsys.readouterr().out
    assert main(["--lake", lake.uri, "erase", "subj-never-seen"]) == 0
    assert "no event of it carried sealed personal data" in capsys.readouterr().out


def test_an_audit_event_another_ingest_took_meanwhile_is_sealed_once(lake, tmp_path, monkeypatch):
    """Every ingest takes the lake's audit files not yet logged. One that sealed the rows of a
    file whose recorder is still at work (its ingest log row not yet written): the recorder
    must find them in the ledger, not seal the same events again."""
    from auditlake import audit_events
    from auditlake import ingest as ingest_module
    from auditlake.lake import tables

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest_module.ingest(lake, [str(tmp_path / "a")])
    ev = audit_events.build_event("data.exported", {"export_id": "x1", "format": "parquet", "rows": 1,
                                                    "destination": "here"})
    before = tables.version(lake, "ledger")
    rel = f"_audit/{ev['occurred_at'][:10]}/{ev['event_id']}.jsonl"
    lake.write_bytes(rel, json.dumps(ev).encode() + b"\n")
    real_append = tables.append

    def dies_before_its_log(lake_, name, *args, **kwargs):
        if name == "ingest_log":
            raise KeyboardInterrupt  # the other ingest stops after sealing the rows
        return real_append(lake_, name, *args, **kwargs)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(tables, "append", dies_before_its_log)
        write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=9)])
        ingest_module.ingest(lake, [str(tmp_path / "b")])  # takes the pending audit file too
    ingest_module.ingest(lake, [lake.child(rel)], fresh_since=before)  # the recorder carries on
    ids = lake.delta("ledger").to_pyarrow_dataset().to_table(columns=["event_id"]).column("event_id").to_pylist()
    assert ids.count(ev["event_id"]) == 1 and len(ids) == len(set(ids))
    assert verify(lake).ok


def test_erasing_an_id_the_ledger_does_not_know_says_so(lake, tmp_path, capsys):
    """A request ahead of the person's data is honoured, but a mistyped id would leave the
    right person unerased: the command says that no event of the id is in the ledger."""
    _build(lake, tmp_path)
    assert main(["--lake", lake.uri, "erase", "subj-does-not-exist"]) == 0
    assert "WARNING: no event of subj-does-not-exist is in the ledger" in capsys.readouterr().out
    assert main(["--lake", lake.uri, "--json", "erase", SUBJECT]) == 0
    assert json.loads(capsys.readouterr().out)["in_ledger"] is True


def test_a_subject_access_export_appears_whole_or_not_at_all(lake, tmp_path, monkeypatch):
    """Written in a private folder and moved into place: a run stopped while writing leaves
    no folder that looks finished, and the same folder (even made empty beforehand) is
    retried; the files are the owner's only."""
    _build(lake, tmp_path)
    out = tmp_path / "dsar"
    out.mkdir()
    real_flat = privacy._flat

    def stop(ev):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(privacy, "_flat", stop)
    with pytest.raises(Exception, match="No space left on device"):
        privacy.dsar(lake, SUBJECT, str(out))
    assert not any(out.iterdir()) and [p.name for p in tmp_path.iterdir() if p.name.startswith(".dsar")] == []
    monkeypatch.setattr(privacy, "_flat", real_flat)
    res = privacy.dsar(lake, SUBJECT, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["subject_access.csv", "subject_access.json"]
    assert res["events"] > 0 and all((out / n).stat().st_mode & 0o777 == 0o600 for n in ("subject_access.csv", "subject_access.json"))
    assert out.stat().st_mode & 0o077 == 0
