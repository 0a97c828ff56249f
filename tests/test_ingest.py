"""Ingest: contract checks, quarantine accounting, exactly-once, sealing of PII."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditlake.ingest import ingest
from auditlake.verify import verify
from events import event, parquet_torn_at_row, write_jsonl


def _table(lake, name):
    return lake.delta(name).to_pyarrow_dataset().to_table()


def _assert_reasons_have_families(lake):
    """The quality suite sorts quarantine reasons into families: every reason must have one."""
    import re

    from auditlake.expectations import REASON_FAMILIES

    for reason in _table(lake, "quarantine").column("reason").to_pylist():
        assert any(re.search(p, reason) for p in REASON_FAMILIES.values()), reason


BAD_LINES = [
    ("not json", "not JSON"),
    ("\ufeff" + json.dumps(event(n=86)), "byte order mark"),
    ("", "empty line"),
    ('{"event_id": 5}', "missing required field"),
    (json.dumps(event(n=90) | {"event_type": "call.teleported"}), "unknown event_type"),
    (json.dumps(event(n=91) | {"event_id": "NOT-A-UUID"}), "bad event_id"),
    (json.dumps(event(n=92) | {"occurred_at": "2026-03-02 14:03"}), "bad occurred_at"),
    (json.dumps(event(n=98) | {"occurred_at": "9999-12-31T23:59:59-01:00"}), "bad occurred_at"),  # no UTC date
    (json.dumps(event(n=93) | {"subject": None}), "missing required field: subject"),
    (json.dumps(event(n=94) | {"data": {"call_id": "x", "direction": "sideways", "purpose": "telemarketing",
                                       "campaign_id": "c", "publisher_id": "p"}}), "bad data.direction"),
    (json.dumps(event(n=95) | {"tenant_id": 17}), "wrong type"),
    (json.dumps(event(n=96) | {"data": {"pad": "x" * 70_000}}), "larger than 64 KiB"),
    (json.dumps(event(n=97, event_type="user.login") | {"data": {"method": "pw", "ratio": 2**60}}), "canonical"),
    (json.dumps(event(n=99) | {"event_id": event(n=99)["event_id"] + "\n"}), "bad event_id"),  # `$` would pass it
    (json.dumps(event(n=89, event_type="user.login") | {"occurred_at": "2026-03-0\u0663T14:00:00Z"}), "bad occurred_at"),
    (json.dumps(event(n=88) | {"subject": event(n=88)["subject"] | {"phone": "+1312555\u0660\u0661\u0662\u0663"}}),
     "subject.phone"),
    (json.dumps(event(n=87) | {"event_type": "bid.placed", "data": {"bid_id": "b1", "call_id": "c1", "buyer_id": "x",
                                                                   "amount": "\u0661\u0662.50", "currency": "USD"}}),
     "data.amount"),
    # A name twice in one object: orjson keeps the last, other readers the first (RFC 7493).
    (json.dumps(event(n=85))[:-1] + ', "event_type": "consent.granted"}', 'the member name "event_type" twice'),
    (json.dumps(event(n=84)).replace('"direction": ', '"\\u0064irection": "inbound", "direction": '),
     'the member name "direction" twice'),
]


def test_every_line_is_accepted_or_quarantined_with_its_reason(lake, tmp_path):
    good = [event(n=i) for i in range(20)]
    lines = good[:10] + [line for line, _ in BAD_LINES] + good[10:] + [json.dumps(good[3])]  # a replay
    write_jsonl(tmp_path / "in" / "a.jsonl", lines)
    report = ingest(lake, [str(tmp_path / "in")])
    assert (report.accepted, report.quarantined) == (20, len(BAD_LINES) + 1)
    q = _table(lake, "quarantine").to_pylist()
    by_line = {r["line"]: r["reason"] for r in q}
    for i, (_, expected) in enumerate(BAD_LINES):
        assert expected in by_line[11 + i], (expected, by_line[11 + i])
    assert "replay" in by_line[len(lines)]
    raws = {r["line"]: r["raw"] for r in q}
    big = next(i for i, (_, why) in enumerate(BAD_LINES) if why == "larger than 64 KiB")
    assert raws[11 + big].endswith(f"... [cut; the whole line has {len(BAD_LINES[big][0].encode())} bytes]")
    _assert_reasons_have_families(lake)
    log = _table(lake, "ingest_log").to_pylist()
    assert log[0]["lines_read"] == len(lines) == log[0]["accepted"] + log[0]["quarantined"]
    assert verify(lake).ok


def test_the_delta_log_keeps_statistics_of_the_columns_readers_prune_by_only(lake, tmp_path):
    """Long values (sealed text, leaves, hashes, raw lines) have no statistics in the Delta log:
    every reader replays it. The lake's own file lookups (content hash, source, type) still
    find their files by statistics."""
    from auditlake.lake import retention, tables

    lines = [event(n=i) for i in range(10)] + ["not json " + "x" * 2_000]
    write_jsonl(tmp_path / "in" / "a.jsonl", lines)
    ingest(lake, [str(tmp_path / "in")])
    for name in ("ledger", "quarantine"):
        adds = [d.action for _, _, data in retention.entries(lake, name) for d in data]
        assert adds, name
        for add in adds:
            stats = json.loads(add["stats"])
            assert set(stats["minValues"]).isdisjoint(tables.NO_STATS[name]), (name, sorted(stats["minValues"]))
            assert {"source_sha256"} <= set(stats["minValues"])
            assert len(add["stats"]) < 2_000, (name, len(add["stats"]))
    sha = _table(lake, "ledger").column("source_sha256")[0].as_py()
    ledger_adds = [d.action for _, _, data in retention.entries(lake, "ledger") for d in data]
    assert any(retention.stats_allow(a, {"source_sha256": [sha], "event_type": ["call.started"]}) for a in ledger_adds)
    assert not any(retention.stats_allow(a, {"source_sha256": ["0" * 64]}) for a in ledger_adds)
    assert verify(lake).ok


def test_events_at_the_ends_of_the_calendar_are_sealed_and_retained(lake, tmp_path):
    times = ["0001-01-01T00:00:00Z", "0001-01-01T05:00:00+04:00", "9999-12-31T23:59:59.999999999Z",
             "9999-12-31T10:00:00-13:00"]
    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i, occurred_at=t) for i, t in enumerate(times)])
    report = ingest(lake, [str(tmp_path / "in")])
    assert (report.accepted, report.quarantined) == (4, 0)
    dates = sorted(r["event_date"] for r in _table(lake, "ledger").to_pylist())
    assert dates == ["0001-01-01", "0001-01-01", "9999-12-31", "9999-12-31"]
    result = verify(lake)
    assert result.ok, result.findings  # includes every object's retention seal


def test_valid_text_that_line_splitters_and_casts_trip_on_is_sealed_and_verifies(lake, tmp_path):
    # U+2028 ends a line for str.splitlines (it reaches the Delta log's statistics raw);
    # RFC 3339 allows a lower-case 't' and 'z', which DuckDB's timestamp cast does not.
    lines = [event(n=1) | {"tenant_id": "a\u2028b"}, event(n=2, event_type="user.login") | {"data": {"method": "p\u2029w\x85"}},
             event(n=3, occurred_at="2026-03-01t12:00:00z"), event(n=4, occurred_at="2026-03-01t23:30:00.5-05:00")]
    write_jsonl(tmp_path / "in" / "a.jsonl", [json.dumps(e, ensure_ascii=False) for e in lines])
    report = ingest(lake, [str(tmp_path / "in")])
    assert (report.accepted, report.quarantined) == (4, 0)
    result = verify(lake)
    assert result.ok, result.findings
    dates = sorted(r["event_date"] for r in _table(lake, "ledger").to_pylist())
    assert dates == ["2026-03-01", "2026-03-02", "2026-03-02", "2026-03-03"]


def test_quarantined_raw_lines_have_no_plain_pii(lake, tmp_path):
    bad = event(n=5) | {"event_type": "nope"}
    # A name in a line that is not JSON, and names under keys the contract does not use.
    odd = event(n=6) | {"event_type": "nope"}
    odd["data"] = {"full_name": "Zelda Quimby", "contact": {"phone_number": "555-0100", "ip_address": "fe80::1:2"},
                   "callerName": "Yolanda Pettigrew", "customerName": "Ulric Oatley", "userName": "Ines Varga"}
    # A subject given as an array, a flat dotted key, a key with a space, a name as a value
    # the reason quotes.
    arrayed = event(n=7) | {"subject": ["Quentin Arrayname", "+13125550177", "q@example.org"]}
    dotted = event(n=8) | {"event_type": "nope", "subject.name": "Dotty Dottedname"}
    spaced = event(n=9) | {"event_type": "nope"}
    spaced["data"] = {"contact": {"Full Name": "Spacey Spacename"}}
    typed = event(n=10) | {"event_type": "Eve Typename"}
    write_jsonl(tmp_path / "in" / "a.jsonl", [json.dumps(bad), "garbage +13125550199 mail me@example.org 10.0.0.9",
                                              "sub_zq,+14155550166,Zelda Quimby,203.0.113.251", json.dumps(odd),
                                              json.dumps(arrayed), json.dumps(dotted), json.dumps(spaced),
                                              json.dumps(typed)])
    ingest(lake, [str(tmp_path / "in")])
    rows = _table(lake, "quarantine").to_pylist()
    raws = " ".join(r["raw"] for r in rows)
    for pii in ("+13125550005", "person5@example.com", "Person Number5", "+13125550199", "me@example.org", "10.0.0.9",
                "Zelda", "Quimby", "555-0100", "fe80::1:2", "Pettigrew", "Oatley", "Varga", "Arrayname", "Dottedname",
                "Spacename"):
        assert pii not in raws, pii
    assert "***" in raws
    # A reason quotes no name (the raw line keeps an envelope value as sent: only keys and
    # shapes say what is personal there).
    assert "unknown event_type: ***" in {r["reason"] for r in rows}


def test_lake_audit_events_do_not_search_the_ledger(lake, tmp_path, monkeypatch):
    """The lake's own audit events (new files, new ids) skip the ledger-wide searches, yet
    are chained, logged and verified like any event, and a repeat within them is still caught."""
    from auditlake import ingest as ingest_module
    from auditlake.audit_events import build_event, record_events

    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(5)])
    ingest(lake, [str(tmp_path / "in")])
    searched = []
    real = ingest_module._shas_with_rows
    monkeypatch.setattr(ingest_module, "_ids_in_ledger", lambda *a: searched.append("ids") or set())
    monkeypatch.setattr(ingest_module, "_shas_with_rows",
                        lambda lake, name, shas: searched.append(name) if name == "ledger" else real(lake, name, shas))
    ev = build_event("data.exported", {"export_id": "e-1", "rows": 5, "format": "parquet", "kind": "bundle"})
    with pytest.raises(Exception, match="quarantined"):
        record_events(lake, [ev, ev])  # the same event twice in one file: the repeat is quarantined
    [event_id] = record_events(lake, [build_event("data.exported", {"export_id": "e-2", "rows": 5,
                                                                     "format": "parquet", "kind": "bundle"})])
    assert searched == []
    ledger = _table(lake, "ledger")
    assert ledger.num_rows == 7 and event_id in ledger.column("event_id").to_pylist()
    assert verify(lake).ok


def test_the_head_reads_only_the_latest_checkpoints_file(lake, tmp_path, monkeypatch):
    """Every batch commits a checkpoint file; the next ingest's head picks the latest one by
    the files' tree_size statistics instead of reading them all (one a batch, for years)."""
    from auditlake import head as head_module
    from auditlake.lake import tables
    from auditlake.lake.meta import open_lake_keys

    for n in range(3):
        write_jsonl(tmp_path / f"in{n}" / "a.jsonl", [event(n=10 * n + i) for i in range(4)])
        ingest(lake, [str(tmp_path / f"in{n}")])
    read = []
    real = tables.dataset
    monkeypatch.setattr(tables, "dataset", lambda lake, name, dt=None, rel_paths=None: (
        read.append((name, rel_paths)) or real(lake, name, dt, rel_paths)))
    head = head_module.load_head(lake, open_lake_keys(lake))
    [paths] = [p for name, p in read if name == "checkpoints"]
    assert len(lake.delta("checkpoints").file_uris()) == 3 and len(paths) == 1
    assert head.checkpoint.tree_size == head.tree_size == 12


def test_the_plan_reads_only_the_files_that_can_hold_its_landing_files(lake, tmp_path, monkeypatch):
    """An ingest looks its landing files' content hashes up in the ingest log, quarantine and
    ledger, reading only the data files whose source_sha256 statistics can hold one (the
    ledger gains files with every batch: a small ingest into a large lake reads few)."""
    import hashlib

    import pyarrow.dataset as ds

    from auditlake import ingest as ingest_module
    from auditlake.lake import tables

    shas = []
    for n in range(4):
        path = tmp_path / f"in{n}" / "a.jsonl"
        write_jsonl(path, [event(n=10 * n + i) for i in range(3)] + ["not json"])
        ingest(lake, [str(path.parent)])
        shas.append(hashlib.sha256(path.read_bytes()).hexdigest())
    pair = []  # two landing files in one batch: its data files hold both
    for n in range(2):
        path = tmp_path / "pair" / f"p{n}.jsonl"
        write_jsonl(path, [event(n=100 + 10 * n + i) for i in range(3)] + ["not json"])
        pair.append(hashlib.sha256(path.read_bytes()).hexdigest())
    ingest(lake, [str(tmp_path / "pair")])
    read = []
    real = tables.dataset
    monkeypatch.setattr(tables, "dataset", lambda lake, name, dt=None, rel_paths=None: (
        read.append(rel_paths) or real(lake, name, dt, rel_paths)))
    for name in ("ingest_log", "quarantine", "ledger"):
        files = lake.delta(name).file_uris()
        holding = [f for f in files
                   if shas[2] in ds.dataset(f).to_table(columns=["source_sha256"]).column(0).to_pylist()]
        read.clear()
        found, version = ingest_module._shas_with_rows(lake, name, {shas[2], "0" * 64})  # and one no file holds
        assert found == {shas[2]} and version == lake.delta(name).version()
        assert len(read[0]) == len(holding) < len(files)
        assert ingest_module._shas_with_rows(lake, name, {pair[0]})[0] == {pair[0]}


def test_a_lake_removed_and_made_again_at_its_path_is_read_afresh(lake_dir, tmp_path):
    """A long-lived process (the explorer, the Dagster code server) keeps tables and log
    entries open; a local lake removed and made again under it is read afresh, not through
    files that are gone, and its new objects are put under retention."""
    from auditlake.lake.store import Lake

    for n in range(3):
        write_jsonl(tmp_path / f"old{n}" / "a.jsonl", [event(n=10 * n + i) for i in range(4)])
        ingest(Lake.open(str(lake_dir)), [str(tmp_path / f"old{n}")])
    shutil.rmtree(lake_dir)
    write_jsonl(tmp_path / "new" / "a.jsonl", [event(n=100 + i) for i in range(5)])
    report = ingest(Lake.open(str(lake_dir)), [str(tmp_path / "new")])
    assert report.accepted == 5 and report.tree_size == 5
    result = verify(Lake.open(str(lake_dir)))
    assert result.ok, result.findings


@pytest.mark.parametrize("per_batch", [75_000, 1], ids=["looked-up", "indexed"])
def test_same_content_under_another_name_and_replays_are_not_ingested_twice(lake, tmp_path, monkeypatch, per_batch):
    """Replays are found both ways: a run of one batch looks its ids up in the ledger, a run
    of several indexes the ledger's ids once (here: one line per batch)."""
    from auditlake import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "BATCH_LINES", per_batch)
    monkeypatch.setattr(ingest_module, "CHUNK_LINES", min(per_batch, ingest_module.CHUNK_LINES))
    if per_batch == 1:
        monkeypatch.setattr(ingest_module, "DIRECT_LOOKUP_IDS", 0)  # else a first batch this small looks up too
    used = []
    looked_up, indexed = ingest_module._ids_in_ledger, ingest_module._EventIndex.known
    monkeypatch.setattr(ingest_module, "_ids_in_ledger", lambda *a: used.append("looked-up") or looked_up(*a))
    monkeypatch.setattr(ingest_module._EventIndex, "known", lambda self, ids: used.append("indexed") or indexed(self, ids))
    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(5)])
    first = ingest(lake, [str(tmp_path / "in")])
    shutil.copy(tmp_path / "in" / "a.jsonl", tmp_path / "in" / "copy-of-a.jsonl")
    second = ingest(lake, [str(tmp_path / "in")])
    assert first.accepted == 5 and second.accepted == 0 and second.quarantined == 0
    assert all(f.skipped for f in second.files)
    assert {f.file: f.ingested_as for f in second.files} == {"a.jsonl": "a.jsonl", "copy-of-a.jsonl": "a.jsonl"}
    # A new file replaying one old event: the replay is quarantined, the new one accepted.
    used.clear()
    write_jsonl(tmp_path / "in" / "b.jsonl", [event(n=2), event(n=50)])
    third = ingest(lake, [str(tmp_path / "in")])
    assert (third.accepted, third.quarantined) == (1, 1)
    assert second.lines_read == 0 and third.lines_read == 2  # skipped files count in neither total
    assert set(used) == {"looked-up" if per_batch > 1 else "indexed"}
    ledger = _table(lake, "ledger")
    assert sorted(ledger.column("seq").to_pylist()) == list(range(6))
    assert len(set(ledger.column("event_id").to_pylist())) == 6
    assert verify(lake).ok


@pytest.mark.parametrize("run_max", [1 << 22, 1_000], ids=["merged", "capped"])
def test_event_index_is_exact(monkeypatch, run_max):
    """The replay index holds ids exactly: across merged runs (or runs left apart at the
    cap), ids sharing their first 64 bits, and ids that are not canonical UUIDs (kept as text)."""
    import random
    import uuid

    import pyarrow as pa

    from auditlake.ingest import _EventIndex

    monkeypatch.setattr("auditlake.ingest.RUN_MAX_IDS", run_max)
    rng = random.Random(5)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3000)]
    twins = [ids[0][:19] + f"{i:04x}-{i:012x}" for i in range(3)]  # same high word as ids[0]
    crowd = [f"00000000-0000-4000-8000-{i:012x}" for i in range(0, 4000, 2)]  # one high word, made on purpose
    odd = ["not-a-uuid", "ABCDEF00-0000-0000-0000-000000000000"]
    index = _EventIndex(None, None)
    for i in range(0, len(ids), 250):  # more runs than are kept apart: merged on the way
        index.add(pa.chunked_array([pa.array(ids[i:i + 250])]))
    index.add(pa.chunked_array([pa.array(twins[:2] + odd)]))
    for i in range(0, len(crowd), 500):
        index.add(pa.chunked_array([pa.array(crowd[i:i + 500][::-1])]))
    stored = set(ids) | set(twins[:2]) | set(odd) | set(crowd)
    asked = (ids[::11] + twins + odd + ["abcdef00-0000-0000-0000-000000000000", "other"]
             + [f"00000000-0000-4000-8000-{i:012x}" for i in range(0, 4000, 7)]
             + [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(200)])
    got = index.known(pa.chunked_array([pa.array(asked)]))
    assert got.tolist() == [x in stored for x in asked]
    assert max(len(run) for run in index._runs) <= run_max
    sliced = pa.array([None, "x", *asked]).slice(2)  # an offset into the arrow buffers, nulls before it
    assert index.known(pa.chunked_array([sliced])).tolist() == [x in stored for x in asked]
    assert not index.known(pa.chunked_array([pa.array([], pa.string())])).any()


def test_gzip_and_parquet_landing_files(lake, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    with gzip.open(d / "a.jsonl.gz", "wt") as f:
        for i in range(4):
            f.write(json.dumps(event(n=i)) + "\n")
    rows = [event(n=i) for i in range(10, 13)]
    struct_table = pa.Table.from_pylist(rows)  # actor/subject/data as structs
    pq.write_table(struct_table, d / "b.parquet")
    json_cols = pa.table({k: [json.dumps(r[k]) if isinstance(r[k], dict) else r[k] for r in rows] for k in rows[0]})
    pq.write_table(json_cols.set_column(0, "event_id", pa.array([event(n=i)["event_id"] for i in range(20, 23)])), d / "c.parquet")
    report = ingest(lake, [str(d)])
    assert (report.accepted, report.quarantined) == (10, 0)
    data = {r["event_id"]: json.loads(r["data"]) for r in _table(lake, "ledger").to_pylist()}
    assert data[event(n=10)["event_id"]] == event(n=10)["data"]
    assert verify(lake).ok


def test_a_damaged_gzip_file_is_read_up_to_the_damage_and_the_rest_is_one_line(lake, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    member = gzip.compress(b"".join(json.dumps(event(n=i)).encode() + b"\n" for i in range(3)))
    two = gzip.compress(b"".join(json.dumps(event(n=i)).encode() + b"\n" for i in range(3, 5)))
    (d / "members.jsonl.gz").write_bytes(member + two)  # two members are one file
    (d / "zeros.jsonl.gz").write_bytes(gzip.compress(json.dumps(event(n=10)).encode() + b"\n") + bytes(512))
    (d / "garbage.jsonl.gz").write_bytes(gzip.compress(json.dumps(event(n=11)).encode() + b"\n") + b"garbage")
    big = gzip.compress(b"".join(json.dumps(event(n=i)).encode() + b"\n" for i in range(20, 40)))
    (d / "cut.jsonl.gz").write_bytes(big[:-8])  # no trailer: the stream does not end
    report = ingest(lake, [str(d)])
    bad = {r["source_file"]: (r["line"], r["reason"]) for r in _table(lake, "quarantine").to_pylist()}
    assert bad["zeros.jsonl.gz"][0] == bad["garbage.jsonl.gz"][0] == 2
    assert bad["zeros.jsonl.gz"][1].startswith("data after the end of the gzip stream after line 1: ")
    assert bad["cut.jsonl.gz"][1].startswith("gzip stream cut off after line ")
    log = {r["source_file"]: (r["lines_read"], r["accepted"], r["quarantined"]) for r in _table(lake, "ingest_log").to_pylist()}
    assert log["members.jsonl.gz"] == (5, 5, 0) and log["zeros.jsonl.gz"] == log["garbage.jsonl.gz"] == (2, 1, 1)
    cut_read, cut_accepted, _ = log["cut.jsonl.gz"]
    assert cut_read == cut_accepted + 1 and cut_accepted >= 15  # whole lines before the cut are read
    assert report.accepted == 5 + 2 + cut_accepted
    _assert_reasons_have_families(lake)
    assert verify(lake).ok


@pytest.mark.parametrize("level, at", [(0, "value"), (6, "middle"), (6, "trailer")])
def test_a_gzip_file_failing_its_check_gives_no_line_even_before_the_damage(lake, tmp_path, level, at):
    """A CRC that fails says the member is damaged, not where: a byte changed early in a
    stored (level 0) member inflates to different money, which must never be sealed."""
    lines = b"".join(json.dumps(event(n=i) | {"data": event(n=i)["data"] | {"price": "84.71"}}).encode() + b"\n"
                     for i in range(400))
    data = bytearray(gzip.compress(lines, compresslevel=level))
    where = data.index(b"84.71") + 4 if at == "value" else len(data) // 2 if at == "middle" else len(data) - 6
    data[where] ^= 0x08  # 84.71 -> 84.79 in the stored member
    path = tmp_path / "in" / "bids.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(bytes(data))
    report = ingest(lake, [str(path)])
    assert report.accepted == 0
    (bad,) = _table(lake, "quarantine").to_pylist()
    assert bad["line"] == 1 and bad["reason"].startswith("corrupt gzip stream (") and "no line of the file" in bad["reason"]
    assert verify(lake).ok


def test_a_parquet_row_larger_than_64_kib_is_quarantined_like_a_line(lake, tmp_path):
    rows = [event(n=1), event(n=2, event_type="user.login") | {"data": {"method": "pw", "pad": "x" * 70_000}}]
    pq.write_table(pa.table({k: [json.dumps(r[k]) if isinstance(r[k], dict) else r[k] for r in rows] for k in rows[0]}),
                   tmp_path / "big.parquet")
    report = ingest(lake, [str(tmp_path / "big.parquet")])
    assert (report.accepted, report.quarantined) == (1, 1)
    (bad,) = _table(lake, "quarantine").to_pylist()
    assert bad["line"] == 2 and bad["reason"].startswith("line larger than 64 KiB (")
    # A row with no JSON form is measured by its text and left to the contract check.
    from auditlake.sealing import parse

    assert parse({"event_id": 2**70}) == ({"event_id": 2**70}, None)


def test_a_parquet_member_name_given_twice_is_quarantined_with_the_row(lake, tmp_path):
    """As in a line: a JSON-string column with a name twice in one object, and a struct type
    with a field twice (which reads back with one of them: every row of the file)."""
    rows = [event(n=i) for i in range(3)]
    text = {k: [json.dumps(r[k]) if isinstance(r[k], dict) else r[k] for r in rows] for k in rows[0]}
    text["data"][1] = text["data"][1][:-1] + ', "direction": "inbound"}'
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table(text), tmp_path / "in" / "a.parquet")
    twice = pa.struct([("id", pa.string()), ("id", pa.string())])
    table = pa.table({k: v for k, v in text.items() if k != "subject"}).append_column(
        "subject", pa.array([{"id": "s"}] * 3, pa.struct([("id", pa.string())])).cast(twice))
    pq.write_table(table, tmp_path / "in" / "b.parquet")
    # A column twice (pyarrow's rows take the last one): both event_ids, one a phone number
    # (a producer's mix-up), which the quarantine's event_id column must not show.
    more = [event(n=i) for i in range(10, 12)]
    mixed = pa.table({k: [json.dumps(r[k]) if isinstance(r[k], dict) else r[k] for r in more] for k in more[0]})
    mixed = mixed.append_column("event_id", pa.array(["+13125550186", more[1]["event_id"]]))
    pq.write_table(mixed, tmp_path / "in" / "c.parquet")
    # Both at once: a column twice and a struct with a field twice (a crash, every ingest after).
    both = table.append_column("event_id", table.column("event_id"))
    pq.write_table(both, tmp_path / "in" / "d.parquet")
    report = ingest(lake, [str(tmp_path / "in")])
    assert (report.accepted, report.quarantined) == (2, 9)
    q = sorted(_table(lake, "quarantine").to_pylist(), key=lambda r: (r["source_file"], r["line"]))
    assert [(r["source_file"].rsplit("/", 1)[-1], r["line"]) for r in q] == (
        [("a.parquet", 2)] + [("b.parquet", i) for i in (1, 2, 3)] + [("c.parquet", 1), ("c.parquet", 2)]
        + [("d.parquet", i) for i in (1, 2, 3)])
    assert q[0]["reason"].startswith('not I-JSON: column data holds the member name "direction" twice')
    assert "call_id" in q[0]["raw"] and "+1312555" not in q[0]["raw"]  # the row as read, PII masked
    assert all(r["reason"].startswith('not I-JSON: column subject holds the member name "id" twice') for r in q[1:4])
    assert all(r["reason"].startswith('not I-JSON: the file\'s schema holds the column "event_id" twice') for r in q[4:])
    assert [r["event_id"] for r in q[4:]] == [None] * 5 and all("+1312555" not in r["raw"] for r in q[4:])
    _assert_reasons_have_families(lake)


def test_a_damaged_parquet_file_is_quarantined_from_where_it_breaks(lake, tmp_path):
    d = tmp_path / "in"
    write_jsonl(d / "a.jsonl", [json.dumps(event(n=i)) for i in range(2)])
    (d / "b.parquet").write_bytes(b"PAR1 not parquet at all PAR1")
    (d / "g.jsonl.gz").write_bytes(b'{"not": "gzip"}\n')
    parquet_torn_at_row(d / "c.parquet", [event(n=i) for i in range(10, 16)], torn_group=2)
    report = ingest(lake, [str(d)])
    assert (report.accepted, report.quarantined) == (2 + 4, 3)
    bad = {(r["source_file"], r["line"]): r["reason"] for r in _table(lake, "quarantine").to_pylist()}
    assert set(bad) == {("b.parquet", 1), ("c.parquet", 5), ("g.jsonl.gz", 1)}
    assert bad["g.jsonl.gz", 1].startswith("corrupt gzip stream (Error -3 ")
    assert bad["b.parquet", 1].startswith("unreadable Parquet after row 0: ")
    assert bad["c.parquet", 5].startswith("unreadable Parquet after row 4: ")
    log = {r["source_file"]: (r["lines_read"], r["accepted"], r["quarantined"]) for r in _table(lake, "ingest_log").to_pylist()}
    assert log == {"a.jsonl": (2, 2, 0), "b.parquet": (1, 0, 1), "c.parquet": (5, 4, 1), "g.jsonl.gz": (1, 0, 1)}
    assert ingest(lake, [str(d)]).accepted == 0
    assert verify(lake).ok


def test_a_parquet_read_error_that_does_not_repeat_loses_and_repeats_no_row(lake, tmp_path, monkeypatch):
    from auditlake.landing import LandingFile

    d = tmp_path / "in"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist([event(n=i) for i in range(10, 16)]), d / "c.parquet", row_group_size=2)
    read = LandingFile._parquet_batches
    calls = []

    def dropped_twice(self, max_rows, skip):
        calls.append(skip)
        batches = read(self, max_rows, skip)
        if len(calls) > 2:
            yield from batches
            return
        yield next(batches).slice(0, 2)  # each failed read gets two rows further
        raise OSError("connection reset by peer")

    monkeypatch.setattr(LandingFile, "_parquet_batches", dropped_twice)
    report = ingest(lake, [str(d)])
    assert calls == [0, 2, 4]  # read again from the row where it broke, each time
    assert (report.accepted, report.quarantined) == (6, 0)
    assert verify(lake).ok


def test_a_reason_from_a_file_reader_is_masked():
    from auditlake.landing import Unreadable
    from auditlake.sealing import parse

    _, reason = parse(Unreadable("bad bytes near dm@example.net, +15551234567"))
    assert "dm@example.net" not in reason and "+15551234567" not in reason


@pytest.mark.parametrize("name, reread", [("c.parquet", "fails"), ("c.parquet", "differs"), ("g.jsonl.gz", "differs")])
def test_a_damaged_file_whose_bytes_do_not_read_back_is_not_quarantined(lake, tmp_path, monkeypatch, name, reread):
    from auditlake.errors import AuditlakeError
    from auditlake.landing import LandingFile

    d = tmp_path / "in"
    d.mkdir()
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist([event(n=i) for i in range(3)]), d / name)

        def storage_gone(self, max_rows, skip):
            raise OSError("connection refused")
            yield

        monkeypatch.setattr(LandingFile, "_parquet_batches", storage_gone)
    else:
        (d / name).write_bytes(b'{"not": "gzip"}\n')
    hashed = LandingFile._content_sha256
    hashes = []

    def rehash(self):
        hashes.append(self.name)
        if len(hashes) == 1:
            return hashed(self)
        if reread == "fails":
            raise OSError("connection refused")
        return "0" * 64

    monkeypatch.setattr(LandingFile, "_content_sha256", rehash)
    with pytest.raises(AuditlakeError, match=f"cannot read landing file {name}: connection refused"
                       if reread == "fails" else f"{name}: changed while it was read"):
        ingest(lake, [str(d)])
    assert lake.delta("quarantine") is None and lake.delta("ingest_log") is None


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_crlf_line_ends_are_cut_wherever_the_read_splits(lake, tmp_path, monkeypatch, suffix):
    from auditlake import landing

    lines = [json.dumps(event(n=i)).encode() for i in range(40)]
    text = b"".join(ln + (b"\r\n" if i % 3 else b"\n") for i, ln in enumerate(lines))
    text += b'{"not": "a\rline"}\r\n' + lines[0][:20]  # a CR inside a line stays; no end of line on the last
    d = tmp_path / "in"
    d.mkdir()
    (d / f"a{suffix}").write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    monkeypatch.setattr(landing, "_CHUNK", 97)  # reads end anywhere, between a CR and its LF too
    (found,) = landing.find(lake, [str(d)])
    assert [raw for _, raw in found.records()] == lines + [b'{"not": "a\rline"}', lines[0][:20]]


def test_no_plain_pii_at_rest(lake, tmp_path):
    events = [event(n=i) for i in range(30)]
    write_jsonl(tmp_path / "in" / "a.jsonl", events)
    ingest(lake, [str(tmp_path / "in")])
    blob = b""
    for root, _, files in os.walk(lake.uri):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                blob += f.read()
    import pyarrow.parquet as pq2

    text = " ".join(str(pq2.read_table(os.path.join(r, n)).to_pylist()) for r, _, fs in os.walk(lake.uri) for n in fs if n.endswith(".parquet"))
    for ev in events:
        for pii in (ev["subject"]["phone"], ev["subject"]["email"], ev["subject"]["name"], ev["actor"]["ip"]):
            assert pii.encode() not in blob and pii not in text
    row = _table(lake, "ledger").to_pylist()[0]
    assert row["subject_pii_sealed"].startswith("k1.") and row["phone_bidx"].startswith("b1.")
    assert row["pii_fields"] == "actor.ip,subject.email,subject.name,subject.phone"


def test_keystore_files_are_private_and_outside_the_lake(lake, tmp_path, auditlake_home):
    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=1)])
    ingest(lake, [str(tmp_path / "in")])
    key_files = [os.path.join(r, n) for r, _, fs in os.walk(auditlake_home / "keystores") for n in fs]
    assert key_files and all(oct(os.stat(p).st_mode & 0o777) == "0o600" for p in key_files)
    assert not any(str(auditlake_home) in r or n.endswith(".sqlite") for r, _, fs in os.walk(lake.uri) for n in fs)


def test_key_rotation_keeps_old_rows_verifying(lake, tmp_path):
    from auditlake.lake.meta import open_lake_keys

    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest(lake, [str(tmp_path / "in")])
    old_chain, old_sign = open_lake_keys(lake).chain_key_id, open_lake_keys(lake).signing_key_id
    open_lake_keys(lake).rotate()
    write_jsonl(tmp_path / "in" / "b.jsonl", [event(n=i) for i in range(3, 6)])
    ingest(lake, [str(tmp_path / "in")])
    rows = _table(lake, "ledger").to_pylist()
    assert {r["key_id"] for r in rows if r["seq"] < 3} == {old_chain}
    assert {r["key_id"] for r in rows if r["seq"] >= 3} != {old_chain}
    cps = _table(lake, "checkpoints").to_pylist()
    assert {c["key_id"] for c in cps} >= {old_sign}
    assert verify(lake).ok


def test_a_run_with_nothing_to_ingest_changes_nothing(lake, tmp_path, capsys):
    from auditlake.cli import main

    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=1)])
    (tmp_path / "empty").mkdir()
    ingest(lake, [str(tmp_path / "in")])
    before = lake.latest("ledger")
    capsys.readouterr()
    assert main(["--lake", lake.uri, "ingest", str(tmp_path / "empty"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["accepted"], out["quarantined"], out["files"]) == (0, 0, [])
    assert lake.latest("ledger") == before


def test_a_landing_folder_is_read_without_following_links_and_what_it_skips_is_said(lake, tmp_path):
    land, outside = tmp_path / "in", tmp_path / "outside"
    write_jsonl(land / "real.jsonl", [event(n=1)])
    write_jsonl(outside / "secret.jsonl", [event(n=2)])
    (land / "out.jsonl").symlink_to(outside / "secret.jsonl")
    (land / "outdir").symlink_to(outside)
    (land / "loop").symlink_to(land)
    (land / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (land / "notes.txt").write_text("not an event")
    (land / "events.JSONL").write_text(json.dumps(event(n=3)))
    os.close(os.open(os.path.join(os.fsencode(land), b"bad\xff.jsonl"), os.O_CREAT | os.O_WRONLY))
    (land / ".uploading.jsonl").write_text("half")
    report = ingest(lake, [str(land)])
    assert [f.file for f in report.files] == ["real.jsonl"] and report.accepted == 1
    assert {i["file"]: i["reason"] for i in report.ignored} == {
        "out.jsonl": "a symbolic link: not followed", "outdir": "a symbolic link: not followed",
        "loop": "a symbolic link: not followed", "dangling.jsonl": "a symbolic link: not followed",
        "notes.txt": "not a landing file (.jsonl, .jsonl.gz or .parquet)",
        "events.JSONL": "not a landing file (.jsonl, .jsonl.gz or .parquet)",
        "bad\ufffd.jsonl": "the file name is not UTF-8",
    }


def test_pipes_sockets_and_devices_are_ignored_not_opened(lake, tmp_path, capsys):
    """Opening a pipe waits for a writer forever, a device reads forever, a socket fails: in a
    folder each is listed as ignored and the files beside it are ingested; named alone, one line."""
    import socket

    from auditlake.cli import main

    land = tmp_path / "in"
    write_jsonl(land / "good.jsonl", [event(n=1)])
    os.mkfifo(land / "pipe.jsonl")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(land / "sock.jsonl"))
    try:
        report = ingest(lake, [str(land)])
        assert [f.file for f in report.files] == ["good.jsonl"] and report.accepted == 1
        assert {i["file"]: i["reason"] for i in report.ignored} == {
            name: "not a regular file (a pipe, socket or device): not opened" for name in ("pipe.jsonl", "sock.jsonl")}
        capsys.readouterr()
        assert main(["--lake", lake.uri, "ingest", str(land / "pipe.jsonl")]) == 2
        assert "not a regular file" in capsys.readouterr().err
    finally:
        sock.close()


def test_bad_paths_are_one_line_errors(lake, tmp_path):
    from auditlake.cli import main

    assert main(["--lake", lake.uri, "ingest", str(tmp_path / "missing")]) == 2
    (tmp_path / "x.txt").write_text("hi")
    assert main(["--lake", lake.uri, "ingest", str(tmp_path / "x.txt")]) == 2


SUBJECT_JSON = json.dumps({"id": "s", "phone": "+14155550199", "name": "Zebulon Canaryfield", "email": "zc@example.net"})
PII_IN_ANY_SPELLING = [
    '{"event_id": "x", "subject": {"id": "s", "name": "Zebulon Canaryfield", "email": "zc@example.net"',  # cut off
    "{'event_id': 'x', 'subject': {'id': 's', 'name': 'Zebulon Canaryfield', 'phone': '+14155550199'}}",  # a Python repr
    '{"event_id": "x", "subject": {"id": "s", "n\\u0061me": "Zebulon Canaryfield"}',  # an escaped key, broken JSON
    '{"event_id": "x", "subject": {"id": "s", \'Name\': \'Zebulon Canaryfield\', "ph\\u006fne": 4155550199}',
    json.dumps(event(n=1) | {"data": SUBJECT_JSON}),  # valid JSON holding the subject in a string
    json.dumps(event(n=2) | {"subject": SUBJECT_JSON}),
    json.dumps(json.dumps(event(n=3) | {"subject": {"id": "s", "name": "Zebulon Canaryfield"}})),  # the event as a string
]


def test_broken_json_lines_keep_no_pii_members(lake, tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", PII_IN_ANY_SPELLING)
    ingest(lake, [str(tmp_path / "in")])
    raws = _table(lake, "quarantine").column("raw").to_pylist()
    assert len(raws) == len(PII_IN_ANY_SPELLING)
    for raw in raws:
        assert not any(pii in raw for pii in ("Zebulon", "Canaryfield", "zc@example.net", "4155550199")), raw
    assert '"name":"***"' in raws[0].replace(" ", "") and '"event_id": "x"' in raws[0]


def _ledger_and_quarantine(lake):
    ledger = {(r["seq"], r["event_id"], r["source_file"], r["source_line"], r["subject_id"], r["data"])
              for r in _table(lake, "ledger").select(
                  ["seq", "event_id", "source_file", "source_line", "subject_id", "data"]).to_pylist()}
    quarantine = {(r["source_file"], r["line"], r["reason"], r["raw"]) for r in _table(lake, "quarantine").to_pylist()}
    return ledger, quarantine


def test_worker_processes_seal_exactly_like_the_ingest_process(tmp_path, generated, monkeypatch):
    """Sealing in worker processes (large inputs) and in-process (small ones) give the same
    ledger and quarantine, with batches and chunks cut mid-file and replays across chunks."""
    from auditlake import ingest as ingest_module
    from auditlake.lake.store import Lake

    landing = tmp_path / "in"
    shutil.copytree(generated / "landing", landing)
    good = [event(n=i) for i in range(30)]
    write_jsonl(landing / "zz-mixed.jsonl", good[:12] + [line for line, _ in BAD_LINES] + good[12:] + [json.dumps(good[3])] * 3
                + [json.dumps(event(n=99))] * 2)
    monkeypatch.setattr(ingest_module, "CHUNK_LINES", 7)
    monkeypatch.setattr(ingest_module, "BATCH_LINES", 250)
    results = {}
    for mode, workers in (("inline", "1"), ("workers", "2")):
        monkeypatch.setenv("AUDITLAKE_INGEST_WORKERS", workers)
        lake = Lake.open(str(tmp_path / f"lake-{mode}"))
        report = ingest(lake, [str(landing)])
        assert report.workers == (2 if mode == "workers" else 0)
        assert report.batches > 3 and report.lines_read == report.accepted + report.quarantined
        assert verify(lake).ok
        results[mode] = (report.accepted, report.quarantined, _ledger_and_quarantine(lake))
    assert results["workers"] == results["inline"]
    reasons = {q[2] for q in results["workers"][2][1]}
    assert {"replay: event_id repeated in this batch", "replay: event_id already in the ledger"} <= reasons


def test_a_failing_sealing_worker_is_a_clear_error(lake):
    from auditlake import sealing
    from auditlake.errors import AuditlakeError
    from auditlake.lake.meta import open_lake_keys

    workers = sealing.WorkerSealing(open_lake_keys(lake, create=True), 1)
    try:
        with pytest.raises(AuditlakeError, match="sealing worker: TypeError"):
            workers.submit(sealing.Chunk("f.jsonl", "0" * 64, 1, [12345])).result(timeout=60)
        ok = workers.submit(sealing.Chunk("f.jsonl", "0" * 64, 1, [json.dumps(event(n=1)).encode()])).result(timeout=60)
        assert ok.rows.num_rows == 1 and not ok.bad  # the worker lives on after a failed chunk
        # pyarrow would load pandas (about 55 MB) on the first array built from a list
        assert "pandas" not in open(f"/proc/{workers._procs[0].pid}/maps").read()
    finally:
        workers.shutdown()


def test_the_bounded_key_cache_never_drops_a_key_the_chunk_needs(lake, monkeypatch):
    from auditlake import sealing
    from auditlake.lake.meta import open_lake_keys

    monkeypatch.setattr(sealing, "_KEY_CACHE", 4)
    keys = open_lake_keys(lake, create=True)
    loaded: list[set] = []
    read = keys.data_keys
    monkeypatch.setattr(keys, "data_keys", lambda ids, create=True: loaded.append(set(ids)) or read(ids, create))
    sealer = sealing.Sealer(keys)
    # Seven people (subj-0..6) and a user acting with an address of their own: overlapping
    # chunks meet cached people and new ones past the bound.
    agent = {"type": "user", "id": "agent-1", "ip": "10.0.0.1"}
    lines = [json.dumps(event(n=i) | {"actor": agent}).encode() for i in range(12)]
    for start in (0, 2, 5, 0, 9, 7):
        out = sealer.seal_chunk(sealing.Chunk("a.jsonl", "0" * 64, 1, lines[start:start + 3]))
        assert out.rows.num_rows == 3 and not out.bad
        people = {"agent-1"} | {f"subj-{n % 7}" for n in range(start, start + 3)}
        assert len(sealer._keys) <= max(4, len(people))
        assert {sid: sealer._keys[sid] for sid in people} == read(people, create=False)
    # Only people not cached were read: the first chunk's three and the agent, then the new ones.
    assert loaded[0] == {"agent-1", "subj-0", "subj-1", "subj-2"} and loaded[1] == {"subj-3", "subj-4"}
    assert sum(map(len, loaded)) < 6 * 4


def _mutants():
    """One event per (field path, odd JSON value): every value type in every envelope, actor
    and subject member and in data, plus deep nesting and out-of-range offsets."""
    odd = [None, True, 0, -1, 1.5, 18446744073709551616, "", "x", [], ["user"], {}, {"a": 1}]
    paths = [("event_id",), ("occurred_at",), ("event_type",), ("source",), ("tenant_id",), ("actor",),
             ("actor", "type"), ("actor", "id"), ("actor", "ip"), ("actor", "role"), ("subject",),
             ("subject", "id"), ("subject", "phone"), ("subject", "email"), ("subject", "name"),
             ("subject", "country"), ("subject", "region"), ("subject", "timezone"), ("lawful_basis",), ("data",),
             ("data", "direction"), ("data", "call_id"), ("data", "extra")]
    n = 1000
    for path in paths:
        for value in odd:
            ev = event(n=n)
            n += 1
            node = ev
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            yield ev
    for depth in (1000, 1100):  # past Python's recursion limit; past the JSON parser's 1024 levels
        yield json.dumps(event(n=n, data=event()["data"] | {"deep": "DEEP"})).replace(
            '"DEEP"', '{"a":' * depth + '"leaf"' + "}" * depth)
        n += 1
    for offset in ("+05:99", "+05:60", "-00:99", "+24:00", "+23:59"):
        yield event(n=n + 1, occurred_at=f"2026-03-02T14:03:22{offset}")
        n += 1


def test_no_value_of_any_type_in_any_field_stops_ingest(lake, tmp_path):
    """Every line is accepted or quarantined with a reason; an odd value never fails the run."""
    lines = list(_mutants())
    src = write_jsonl(tmp_path / "in" / "odd.jsonl", lines)
    report = ingest(lake, [str(src)])
    assert report.accepted + report.quarantined == len(lines)
    quarantine = _table(lake, "quarantine").to_pylist()
    reasons = {q["line"]: q["reason"] for q in quarantine}
    offsets = {len(lines) - 4 + i: o for i, o in enumerate(("+05:99", "+05:60", "-00:99", "+24:00", "+23:59"))}
    for line, offset in offsets.items():
        if offset == "+23:59":
            assert line not in reasons
        else:
            assert reasons[line].startswith("bad occurred_at"), (offset, reasons.get(line))
    assert reasons[len(lines) - 6] == "data has no canonical JSON form: nested too deeply"
    assert reasons[len(lines) - 5].startswith("not JSON: depth limit exceeded")
    _assert_reasons_have_families(lake)
    assert verify(lake, update_trust=False).ok


def test_no_personal_data_reaches_the_quarantine_in_reasons_or_odd_shapes(lake, tmp_path):
    pii = ["+15551234567", "jane@example.com", "Jane", "Doeson", "Johnny", "Smithers", "10.9.8.7"]
    lines = [
        json.dumps(event(n=1) | {"event_type": "call to +15551234567 jane@example.com"}),
        json.dumps(event(n=2) | {"subject": {"id": "s1", " name": "Jane Doeson"}}),
        json.dumps(event(n=3) | {"subject": {"id": "s1", "mobile": "+15551234567"}}),
        json.dumps(event(n=4) | {"actor": {"type": "robot", "id": "a", "ip": "10.9.8.7"}}),
        '{"subject":{"id":"s","name":["Jane","Doeson"]},',  # not JSON: masked as text
        '{"subject":{"id":"s","name":{"first":"Johnny","last":"Smithers"}},',
        '{"subject":{"id":"s"," name ":"Jane Doeson"',
    ]
    report = ingest(lake, [str(write_jsonl(tmp_path / "in" / "pii.jsonl", lines))])
    assert report.quarantined == len(lines)
    for row in _table(lake, "quarantine").to_pylist():
        for value in pii:
            assert value not in row["raw"] and value not in row["reason"], (value, row)


def test_a_struct_column_keeps_the_null_members_the_contract_says_are_present(lake, tmp_path):
    """config.changed's old_value of a new setting is null but present: from a struct column as
    from JSON. Other null members of a struct column mean absent (the column is the union of
    every row's fields)."""
    rows = [{**event(n=i), "event_type": "config.changed",
             "data": {"setting": "max_bid", "category": "financial", "old_value": old, "new_value": "12.50",
                      "change_ticket": None}}
            for i, old in enumerate([None, "10.00"])]
    d = tmp_path / "in"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), d / "config.parquet")
    write_jsonl(d / "config.jsonl", [{**rows[0], "event_id": event(n=9)["event_id"]}])
    report = ingest(lake, [str(d)])
    assert (report.accepted, report.quarantined) == (3, 0), _table(lake, "quarantine").to_pylist()
    data = [json.loads(r["data"]) for r in _table(lake, "ledger").to_pylist()]
    assert sum(1 for x in data if "old_value" in x and x["old_value"] is None) == 2
    assert all("change_ticket" not in x for x in data if x["old_value"] == "10.00")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_line_of_megabytes_is_quarantined_by_its_length_without_being_held(lake, tmp_path, suffix):
    """Past 64 KiB only a line's length is still needed: the reader counts the rest, so a
    line of any size costs neither memory nor re-joining, and its neighbours are read."""
    long_line = b'{"pad":"' + b"x" * 3_000_000 + b'"}'
    text = b"\n".join([json.dumps(event(n=1)).encode(), long_line, json.dumps(event(n=2)).encode(), long_line])
    path = tmp_path / "in" / f"long{suffix}"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)  # the last line has no newline
    report = ingest(lake, [str(path)])
    assert (report.accepted, report.quarantined) == (2, 2)
    rows = sorted(_table(lake, "quarantine").to_pylist(), key=lambda r: r["line"])
    assert [r["line"] for r in rows] == [2, 4]
    for row in rows:
        assert row["reason"] == f"line larger than 64 KiB ({len(long_line)} bytes)"
        assert row["raw"].endswith(f"[cut; the whole line has {len(long_line)} bytes]") and len(row["raw"]) < 5000
    assert verify(lake, update_trust=False).ok


@pytest.mark.parametrize("name, cut", [("a.jsonl", "mid-line"), ("a.jsonl", "line-end"), ("a.jsonl.gz", "mid-line"),
                                       ("a.parquet", "other-rows")])
def test_a_file_rewritten_in_place_while_it_is_read_is_an_error_and_nothing_of_it_is_lost(
        lake, tmp_path, monkeypatch, name, cut):
    """A producer's `cp` over a landing file truncates it and writes it again: read between
    the two, the file is shorter than the one planned with. Not logged as read (its lines
    would be lost for good, the finished file having the logged hash), and its half last line
    is not quarantined; the next run ingests it whole."""
    from auditlake.errors import AuditlakeError
    from auditlake.landing import LandingFile

    events = [event(n=i) for i in range(40)]
    d = tmp_path / "in"
    d.mkdir()
    path = d / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(events), path)
        partial = pa.Table.from_pylist(events[:25])
    else:
        text = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        cut_at = text.index(b"\n", len(text) // 2) + (1 if cut == "line-end" else -7)
        path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
        partial = text[:cut_at]
    whole = path.read_bytes()
    planned = LandingFile.sha256

    def rewritten_after_planning(self):
        sha = planned(self)
        if isinstance(partial, pa.Table):
            pq.write_table(partial, path)
        else:
            path.write_bytes(gzip.compress(partial)[:-9] if name.endswith(".gz") else partial)
        return sha

    monkeypatch.setattr(LandingFile, "sha256", rewritten_after_planning)
    with pytest.raises(AuditlakeError, match=f"{name}: changed while it was read"):
        ingest(lake, [str(d)])
    assert lake.delta("ingest_log") is None and lake.delta("quarantine") is None
    monkeypatch.undo()
    path.write_bytes(whole)  # the producer's copy done
    before = _committed(lake)
    report = ingest(lake, [str(d)])
    assert (report.accepted, report.quarantined) == (40 - before, 0)
    assert verify(lake).ok and lake.delta("ledger").to_pyarrow_dataset().count_rows() == 40


def _committed(lake) -> int:
    """Rows an interrupted run left in the ledger (whole lines, resumed from, not redone)."""
    return 0 if lake.delta("ledger") is None else lake.delta("ledger").to_pyarrow_dataset().count_rows()


def test_a_keystore_that_did_not_sign_the_lake_writes_nothing(lake, tmp_path, monkeypatch):
    """A second host whose AUDITLAKE_HOME lacks the lake's keys would chain and sign under
    keys no verifier of the lake knows (and lock them for years): refused before any write.
    A rotated keystore, which holds the old keys too, still writes."""
    from auditlake.cli import main
    from auditlake.errors import AuditlakeError

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(5)])
    ingest(lake, [str(tmp_path / "a")])
    versions = {t: lake.delta(t).version() for t in ("ledger", "checkpoints", "ingest_log")}
    home = os.environ["AUDITLAKE_HOME"]
    monkeypatch.setenv("AUDITLAKE_HOME", str(tmp_path / "other-host"))
    write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(5, 9)])
    with pytest.raises(AuditlakeError, match="no keystore of the lake"):  # and none is made up
        ingest(lake, [str(tmp_path / "b")])
    assert not (tmp_path / "other-host" / "keystores").exists()
    from auditlake.keys import KeyStore
    from auditlake.lake.meta import read_meta

    KeyStore(read_meta(lake)["log_id"])  # a keystore of this log made elsewhere: other keys
    with pytest.raises(AuditlakeError, match="does not hold the key that signed this lake's checkpoints"):
        ingest(lake, [str(tmp_path / "b")])
    assert {t: lake.delta(t).version() for t in versions} == versions
    monkeypatch.setenv("AUDITLAKE_HOME", home)
    assert main(["--lake", lake.uri, "keys", "rotate"]) == 0
    assert ingest(lake, [str(tmp_path / "b")]).accepted == 4 and verify(lake).ok


def test_a_commit_that_fails_leaves_no_data_files_behind(lake, tmp_path, monkeypatch, capsys):
    """A tiles commit that fails after its data files were written (a full disk, a log entry
    refused) is a warning, and its files go with it: verify does not report them as inserted
    until some later commit passes them."""
    import deltalake
    from deltalake.exceptions import DeltaError

    real = deltalake.write_deltalake

    def log_entry_refused(table, data, **kwargs):
        real(table, data, **kwargs)
        uri = table if isinstance(table, str) else table.table_uri
        if uri.rstrip("/").endswith("/tiles"):
            log = sorted((Path(uri.removeprefix("file://")) / "_delta_log").glob("*.json"))[-1]
            log.unlink()  # the data files are written; the commit is not
            raise DeltaError("Generic error: No space left on device (os error 28)")

    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(300)])
    ingest(lake, [str(tmp_path / "in")])  # the tiles table exists
    monkeypatch.setattr(deltalake, "write_deltalake", log_entry_refused)
    write_jsonl(tmp_path / "in2" / "b.jsonl", [event(n=i) for i in range(300, 600)])
    assert ingest(lake, [str(tmp_path / "in2")]).accepted == 300
    assert "tiles not stored" in capsys.readouterr().err
    monkeypatch.setattr(deltalake, "write_deltalake", real)
    report = verify(lake)
    assert report.ok, report.findings


def test_an_integer_canonical_json_cannot_hold_exactly_is_quarantined_never_changed(lake, tmp_path):
    """RFC 8785 numbers are IEEE-754 doubles: an integer beyond 2^53 has no exact canonical
    form. Beyond 64 bits orjson reads it as a float; that reading must not be sealed."""
    def line(n: int, number: str) -> str:
        ev = json.dumps(event("user.login", n=n) | {"data": {"method": "password", "ref": 0}})
        return ev.replace('"ref": 0', f'"ref": {number}')

    numbers = ["18446744073709551617", "9007199254740993", "-123456789012345678901234"]
    ok = ["9007199254740991", "1.5e300", "18446744073709551617.0"]  # exact, or written as floats
    write_jsonl(tmp_path / "in" / "a.jsonl", [line(i, x) for i, x in enumerate(numbers + ok)])
    rows = [{**event("user.login", n=10), "actor": json.dumps(event("user.login", n=10)["actor"]),
             "subject": json.dumps(event("user.login", n=10)["subject"]), "data": '{"method":"sms","ref":123456789012345678901}'}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "b.parquet")
    report = ingest(lake, [str(tmp_path / "in")])
    assert (report.accepted, report.quarantined) == (len(ok), len(numbers) + 1)
    reasons = [r["reason"] for r in _table(lake, "quarantine").to_pylist()]
    assert all("exceeds safe integer domain" in why for why in reasons), reasons
    refs = sorted(json.loads(r["data"])["ref"] for r in _table(lake, "ledger").to_pylist())
    assert refs == [9007199254740991, 18446744073709552000, 1.5e300]  # a float literal reads as a double


def test_a_missing_committed_file_stops_ingest_with_one_clear_line(lake, tmp_path):
    from auditlake.errors import AuditlakeError

    ingest(lake, [str(write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)]))])
    (gone,) = (Path(lake.uri) / "tables" / "checkpoints").glob("*.parquet")
    gone.unlink()
    with pytest.raises(AuditlakeError, match="committed file of the lake is missing .*run `auditlake verify`"):
        ingest(lake, [str(write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(3, 5)]))])
    assert lake.delta("ledger").to_pyarrow_dataset().count_rows() == 3


def test_a_leap_second_is_quarantined_for_what_it_is(lake, tmp_path):
    leap = "bad occurred_at: a leap second (:60) has no instant in the time scale the ledger keeps (POSIX)"
    other = "bad occurred_at: not an RFC 3339 timestamp with Z or an offset"
    cases = {"2016-12-31T23:59:60Z": leap, "2016-12-31T18:59:60-05:00": leap, "2016-12-31T12:30:60Z": other,
             "2016-12-31T23:59:61Z": other}
    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i, occurred_at=at) for i, at in enumerate(cases)])
    ingest(lake, [str(tmp_path / "in")])
    assert {r["line"]: r["reason"] for r in _table(lake, "quarantine").to_pylist()} == {
        i + 1: why for i, why in enumerate(cases.values())}


def test_an_instant_with_any_number_of_fraction_digits_is_accepted_and_kept_to_the_microsecond(lake, tmp_path):
    """RFC 3339 allows any number of digits after the second (time-secfrac = "." 1*DIGIT):
    the sealed record keeps the producer's text, the lake's columns the instant cut to the
    microsecond (never rounded into the next second), and the lake verifies."""
    from auditlake.verify import verify

    cases = {"2026-01-01T10:00:00.123456789Z": "2026-01-01 10:00:00.123456",
             "2026-01-01T10:00:00.1234567891Z": "2026-01-01 10:00:00.123456",
             "2026-01-01T10:00:00.000000000000Z": "2026-01-01 10:00:00",
             "2026-01-01T23:59:59.99999999999999+00:00": "2026-01-01 23:59:59.999999"}
    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i, occurred_at=at) for i, at in enumerate(cases)])
    ingest(lake, [str(tmp_path / "in")])
    assert lake.delta("quarantine") is None  # nothing quarantined
    rows = sorted(_table(lake, "ledger").select(["seq", "occurred_at", "leaf"]).to_pylist(), key=lambda r: r["seq"])
    assert [r["occurred_at"].strftime("%Y-%m-%d %H:%M:%S.%f").removesuffix(".000000") for r in rows] == list(cases.values())
    assert all(json.loads(r["leaf"])["occurred_at"] == at for r, at in zip(rows, cases))
    report = verify(lake, update_trust=False)
    assert report.ok, report.findings


def test_masking_hostile_runs_does_not_hang():
    """Runs that made the masking regexes backtrack from every start (quadratic: before,
    about 20 s for one 64 KiB line of backslashes and 16 s for a reason quoting a key of
    "X' X' ...") are masked in one pass: the lot finishes far inside a generous bound (a
    hang guard, not a speed measurement)."""
    code = (
        "from auditlake.masking import mask_text\n"
        "from auditlake.sealing import reason_line\n"
        "for unit in ('\\\\', \"X' \", 'A- ', '\\\\\"name\\\\\": '):\n"
        "    mask_text(unit * (65536 // len(unit)), names=True)\n"
        "print(reason_line('unknown envelope field: ' + \"X' \" * 20000)[:30])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "unknown envelope field: ***"


def test_masking_takes_personal_keys_and_shapes_only():
    from auditlake.masking import mask_raw, mask_text

    raw = mask_raw(b'{"event_id":"x","data":{"campaign_name":"Spring Sale","hostname":"web-01","username":"svc_router",'
                   b'"full_name":"Zed Quinn","customer_phone":"555-0100","client_ip":"10.9.8.7","first.name":"Ada",'
                   b'"e-mail":"ada at home","phone no":"five five five","domain name":"example.org"}}')
    assert all(kept in raw for kept in ('"campaign_name":"Spring Sale"', '"hostname":"web-01"', '"username":"svc_router"',
                                        '"domain name":"example.org"'))
    assert not any(gone in raw for gone in ("Zed Quinn", "555-0100", "10.9.8.7", "Ada", "ada at home", "five five"))
    # A time of day is no IPv6 address; an ISO instant and a UUID are kept whole.
    text = ("call at 07:30:00.250 local, 2026-03-02T14:03:22Z, 00000000-0000-4000-8000-000000000001, "
            "fe80:0:0:0:202:b3ff:fe1e:8329, 2001:db8::1, std::vector")
    assert mask_text(text) == ("call at 07:30:00.250 local, 2026-03-02T14:03:22Z, 00000000-0000-4000-8000-000000000001, "
                               "***, ***, std::vector")
    # An area code and seven digits, however they are joined, is a phone number.
    assert mask_text("312 5550186, (312)5550186, 312-5550186; seq 123 4567, amount 1234567") == (
        "***, ***, ***; seq 123 4567, amount 1234567")


def test_masking_takes_national_phone_forms_and_e_mail_addresses_in_any_script():
    from auditlake.masking import mask_text

    text = ("us (415)555-0123, uk 07700 900123, london 020 7946 0958, berlin 030 12345678, paris 01 23 45 67 89, "
            "zoë@exämple.de, josé.garcía@example.es, jose\u0301@example.es, नमस्ते@उदाहरण.भारत")
    assert mask_text(text) == "us ***, uk ***, london ***, berlin ***, paris ***, ***, ***, ***, ***"
    # Amounts, tickets, ids, dates and times that merely hold digits and separators are kept.
    kept = ("amount 12.50, 125000.5000, version 1.2.3, count 0123 items, order 100 200 300, 2026-01-02T10:00:00Z, "
            "CHG-202403-0001, 0001-2345-6789, 0001 0002 0003, 05.03.24 14.30, price 100.1234567")
    assert mask_text(kept) == kept


def test_a_lake_started_by_init_on_one_host_is_not_forked_by_another(lake_dir, tmp_path, monkeypatch):
    """`init` publishes the lake's keys: another host without them refuses to make its own."""
    from auditlake.errors import AuditlakeError
    from auditlake.keys import KeyStore
    from auditlake.lake.admin import init_lake
    from auditlake.lake.meta import read_meta
    from auditlake.lake.store import Lake

    lake = Lake.open(str(lake_dir))
    init_lake(lake)
    monkeypatch.setenv("AUDITLAKE_HOME", str(tmp_path / "host-b"))
    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=1)])
    with pytest.raises(AuditlakeError, match="no keystore of the lake"):
        ingest(lake, [str(tmp_path / "a")])
    KeyStore(read_meta(lake)["log_id"])  # host B's own keys for that log
    with pytest.raises(AuditlakeError, match="holds none of the keys the lake .* published"):
        ingest(lake, [str(tmp_path / "a")])
    assert lake.delta("ledger") is None


def test_a_quarantine_reason_is_one_bounded_line_whatever_the_producer_wrote(lake, tmp_path):
    """Reasons quote producer values: a newline in them would forge a second line wherever
    reasons are shown, a terminal escape would colour it, a 50,000-character name would flood it."""
    from auditlake.sealing import REASON_MAX

    lines = [event(n=1) | {"event_type": "call.completed\nINJECTED: accepted"},
             event(n=2) | {"evil\r\nkey": 1},
             event(n=3) | {"event_type": "\x1b[31mred\x1b[0m\u2028"},
             event(n=4) | {"k" * 50_000: 1}]
    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", lines))])
    reasons = {r["line"]: r["reason"] for r in _table(lake, "quarantine").to_pylist()}
    assert len(reasons) == 4
    for reason in reasons.values():
        assert len(reason) <= REASON_MAX and reason.isprintable(), repr(reason)
    assert "call.completed\\nINJECTED: accepted" in reasons[1] and "\\x1b[31mred" in reasons[3]
    assert reasons[4].endswith("…")
    _assert_reasons_have_families(lake)


def test_the_lakes_own_data_is_never_read_as_landing_data(lake_dir, tmp_path, capsys):
    """`ingest <lake>` or a table folder is refused (its Parquet files would be quarantined
    with their sealed text copied into raw); `ingest .` beside the lake skips the lake."""
    from auditlake.cli import main

    parent = lake_dir.parent
    write_jsonl(parent / "drop" / "a.jsonl", [event(n=1)])
    assert main(["--lake", str(lake_dir), "ingest", str(parent / "drop")]) == 0
    for inside in (lake_dir, lake_dir / "tables" / "ledger"):
        capsys.readouterr()
        assert main(["--lake", str(lake_dir), "ingest", str(inside)]) == 2
        assert "is the lake's own data, not landing data" in capsys.readouterr().err
    write_jsonl(parent / "b.jsonl", [event(n=2)])
    capsys.readouterr()
    assert main(["--lake", str(lake_dir), "--json", "ingest", str(parent)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["accepted"] == 1 and doc["quarantined"] == 0
    assert {"file": "lake", "reason": "the lake's own folder: its data is no landing data"} in doc["ignored"]


def test_a_landing_file_rewritten_under_its_name_is_said_not_silent(lake, tmp_path, capsys):
    """Landing files are immutable: new content under a name ingested before is ingested as a
    new file (its new events accepted, its repeated ones quarantined as replays) and said."""
    from auditlake.cli import main

    path = write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=1), event(n=2)])
    first = ingest(lake, [str(path)]).files[0]
    assert first.name_held_other is None
    write_jsonl(path, [event(n=2), event(n=3)])
    second = ingest(lake, [str(path)])
    assert second.files[0].name_held_other == first.sha256 and (second.accepted, second.quarantined) == (1, 1)
    assert second.to_dict()["files"][0]["name_held_other"] == first.sha256
    write_jsonl(path, [event(n=4)])
    capsys.readouterr()
    assert main(["--lake", lake.uri, "ingest", str(path)]) == 0
    assert "a.jsonl held other content when it was ingested before" in capsys.readouterr().err
    assert main(["--lake", lake.uri, "ingest", str(path)]) == 0  # the same content again: skipped, no warning
    assert "held other content" not in capsys.readouterr().err


def test_concurrent_rotations_keep_every_key(lake, tmp_path):
    """A rotation reads, adds to and writes keys.json: run at once, each would drop the
    keys the others added, and a key that signed is lost for good."""
    import subprocess
    import sys

    from auditlake.lake.meta import open_lake_keys, read_meta

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest(lake, [str(tmp_path / "a")])
    procs = [subprocess.Popen([sys.executable, "-m", "auditlake.cli", "--lake", lake.uri, "--json", "keys", "rotate"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    made = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    keys = open_lake_keys(lake)
    assert {m["signing_key_id"] for m in made} < set(keys.public_keys()) and len(keys.public_keys()) == 7
    assert {m["chain_key_id"] for m in made} < set(keys.chain_keys()) and len(keys.chain_keys()) == 7
    assert set(read_meta(lake)["public_keys"]) == set(keys.public_keys())  # published whole
    write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(3, 6)])
    ingest(lake, [str(tmp_path / "b")])
    assert verify(lake).ok


def test_a_keystore_is_refused_when_damaged_foreign_inside_the_lake_or_without_its_data_keys(lake, tmp_path, monkeypatch):
    """One line naming what is wrong, and nothing made up in its place: another log's keys
    would make the whole lake read as forged; keys inside the lake sit beside what they
    seal; an empty data-key store made again would forget every erasure."""
    import shutil

    from auditlake.errors import AuditlakeError
    from auditlake.keys import keystore_dir
    from auditlake.lake.meta import read_meta
    from auditlake.privacy import erase

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest(lake, [str(tmp_path / "a")])
    erase(lake, event(n=0)["subject"]["id"])
    ks = keystore_dir(read_meta(lake)["log_id"])
    saved = tmp_path / "saved"
    shutil.copytree(ks, saved)
    write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(3, 6)])

    (ks / "datakeys.sqlite").unlink()
    with pytest.raises(AuditlakeError, match="data-key store .* is missing"):
        ingest(lake, [str(tmp_path / "b")])
    assert not (ks / "datakeys.sqlite").exists()

    keys = json.loads((saved / "keys.json").read_text())
    for broken in [{**keys, "log_id": "log-" + "0" * 32}, {**keys, "kek": "AAAA"}, {k: v for k, v in keys.items() if k != "chain"}]:
        (ks / "keys.json").write_text(json.dumps(broken))
        with pytest.raises(AuditlakeError, match=r"keystore file .*keys.json (holds the keys of log log-0|is damaged)") as refused:
            ingest(lake, [str(tmp_path / "b")])
        assert "\n" not in str(refused.value)

    shutil.rmtree(ks)
    shutil.copytree(saved, ks)
    with monkeypatch.context() as m, pytest.raises(AuditlakeError, match="is inside the lake"):
        m.setenv("AUDITLAKE_HOME", str(Path(lake.uri) / "_retention" / "home"))
        ingest(lake, [str(tmp_path / "b")])
    assert ingest(lake, [str(tmp_path / "b")]).accepted == 3 and verify(lake).ok


def _keystore_copy(lake, where: Path) -> Path:
    """A copy of the lake's keystore as it is now (a backup, or a copy someone took): its keys.json."""
    import shutil

    from auditlake.keys import keystore_dir
    from auditlake.lake.meta import read_meta

    log_id = read_meta(lake)["log_id"]
    shutil.copytree(keystore_dir(log_id), where / log_id)
    return where / log_id / "keys.json"


def test_a_retired_key_extends_nothing(lake, tmp_path, monkeypatch):
    """Rotation retires the old keys: rows chained and a checkpoint signed with them after
    the new keys were used (someone kept a copy of the old keystore) are retired_key
    findings, located. The rotation itself is an audit event under the new keys."""
    import auditlake.ingest as ingest_module
    from auditlake.cli import main
    from auditlake.keys import KeyStore
    from auditlake.lake.meta import open_lake_keys

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest(lake, [str(tmp_path / "a")])
    keys = open_lake_keys(lake)
    log_id, old_chain, old_signing = keys.log_id, keys.chain_key_id, keys.signing_key_id
    assert main(["--lake", lake.uri, "keys", "rotate"]) == 0
    rotation = [r for r in _table(lake, "ledger").to_pylist() if r["event_type"] == "config.changed"]
    assert [(r["seq"], json.loads(r["data"])["setting"], json.loads(r["data"])["category"]) for r in rotation] == [
        (3, "keys", "security")]
    assert rotation[0]["key_id"] != old_chain and keys.chain_key_id == rotation[0]["key_id"]  # (it reads the keys again)
    # Someone who kept the old private keys (and knows the public ones): a keystore whose
    # current keys are the retired ones.
    stolen_dir = tmp_path / "stolen"
    keys_file = _keystore_copy(lake, stolen_dir)
    doc = json.loads(keys_file.read_text())
    doc["chain"]["current"], doc["signing"]["current"] = old_chain, old_signing
    keys_file.write_text(json.dumps(doc))
    stolen = KeyStore(log_id, root=stolen_dir)
    with monkeypatch.context() as m:  # the holder of the copy, with the checks of the lake's writer taken out
        m.setattr(ingest_module, "open_lake_keys", lambda lake, create=False: stolen)
        m.setattr(ingest_module, "_require_the_lakes_keys", lambda keys, head: None)
        write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(3, 5)])
        assert ingest(lake, [str(tmp_path / "b")]).accepted == 2
    report = verify(lake, update_trust=False)
    found = {(f.kind, f.table, f.seq) for f in report.findings}
    assert {("retired_key", "ledger", 4), ("retired_key", "ledger", 5), ("retired_key", "checkpoints", None)} <= found, found
    assert all(f.event_id and f.file for f in report.findings if f.kind == "retired_key" and f.table == "ledger")


def test_a_writer_that_meets_newer_keys_in_the_lake_takes_them(lake, tmp_path, monkeypatch):
    """A keystore read before another process rotated (a long-running writer) reads it again
    when the lake's latest checkpoint is signed by a key it does not use: it never extends
    the log with the retired keys."""
    import auditlake.ingest as ingest_module
    from auditlake.cli import main
    from auditlake.lake.meta import open_lake_keys

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest(lake, [str(tmp_path / "a")])
    early = open_lake_keys(lake)
    assert main(["--lake", lake.uri, "keys", "rotate"]) == 0  # and its audit event is sealed
    with monkeypatch.context() as m:
        m.setattr(ingest_module, "open_lake_keys", lambda lake, create=False: early)
        write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(3, 5)])
        assert ingest(lake, [str(tmp_path / "b")]).accepted == 2
    assert early.signing_key_id == open_lake_keys(lake).signing_key_id
    assert verify(lake).ok


def test_a_key_rotation_is_a_security_change_sox_reads(lake, tmp_path):
    from auditlake.cli import main
    from auditlake.compliance.run import evaluate_lake

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest(lake, [str(tmp_path / "a")])
    assert main(["--lake", lake.uri, "keys", "rotate"]) == 0
    assert main(["--lake", lake.uri, "keys", "rotate", "--change-ticket", "CHG-7", "--approved-by", "security-lead"]) == 0
    evaluate_lake(lake, report=False)
    flagged = {r["event_id"] for r in _table(lake, "findings").to_pylist() if r["rule_id"] == "SOX-CHANGE"}
    rotations = {r["event_id"]: json.loads(r["data"]) for r in _table(lake, "ledger").to_pylist()
                 if r["event_type"] == "config.changed"}
    assert [d.get("change_ticket") for e, d in rotations.items() if e in flagged] == [None]
    assert [d.get("change_ticket") for e, d in rotations.items() if e not in flagged] == ["CHG-7"]


def test_the_quarantines_event_id_is_an_event_id_or_null(lake, tmp_path):
    """A producer's mix-up can put a phone number or an e-mail address where the event id
    goes: `raw` shows it masked, and the event_id column only ever holds an event id."""
    bad_type = event(n=1) | {"event_type": "call.teleported"}
    lines = [json.dumps(event(n=0) | {"event_id": "zelda.quixote@mailhost.example.org"}),
             json.dumps(event(n=2) | {"event_id": "+13125550186 " + "x" * 5000}), json.dumps(bad_type)]
    write_jsonl(tmp_path / "in" / "a.jsonl", lines)
    assert ingest(lake, [str(tmp_path / "in")]).quarantined == 3
    q = sorted(_table(lake, "quarantine").to_pylist(), key=lambda r: r["line"])
    assert [r["event_id"] for r in q] == [None, None, bad_type["event_id"]]
    assert not any("zelda" in r["raw"] or "5550186" in r["raw"] for r in q)


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_a_crlf_line_of_exactly_64_kib_gets_one_verdict_wherever_it_sits(lake, tmp_path, offset):
    """The line's CR at the end of a read (its LF in the next) is its CRLF's, not a byte of
    the line: a 65,536-byte line is accepted wherever the reads fall."""
    from auditlake import landing

    ev = event(n=5)
    ev["data"]["pad"] = ""
    ev["data"]["pad"] = "x" * (65_536 - len(json.dumps(ev, separators=(",", ":")).encode()))
    line = json.dumps(ev, separators=(",", ":")).encode()
    assert len(line) == 65_536
    head = b"".join(json.dumps(event(n=6 + i), separators=(",", ":")).encode() + b"\r\n" for i in range(4))
    pad = landing._CHUNK - len(head) - len(line) - 1 + offset  # offset 0: the CR is a read's last byte
    text = head + b"{}" + b" " * (pad - 4) + b"\r\n" + line + b"\r\n"
    path = tmp_path / "in" / "crlf.jsonl"
    path.parent.mkdir()
    path.write_bytes(text)
    report = ingest(lake, [str(path)])
    q = _table(lake, "quarantine").to_pylist()
    assert report.accepted == 5 and [r["line"] for r in q] == [5], q  # "{}" lacks the fields; the long line is in


def test_a_rotation_stopped_before_its_record_is_logged_late_by_the_next_writer(lake, tmp_path):
    """`keys rotate` killed after the new keys are in force and before its audit event: the
    next ingest (or rotation) logs it first, without a ticket, so SOX-CHANGE reports it."""
    from auditlake.cli import main
    from auditlake.compliance.run import evaluate_lake
    from auditlake.lake.meta import open_lake_keys

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(3)])
    ingest(lake, [str(tmp_path / "a")])
    keys = open_lake_keys(lake)
    old_chain, old_sk = keys.chain_key_id, keys.signing_key_id
    chain_id, sk_id = keys.rotate()  # what the killed command did (its process is gone, below)
    write_jsonl(tmp_path / "b" / "b.jsonl", [event(n=i) for i in range(3, 5)])
    assert ingest(lake, [str(tmp_path / "b")]).accepted == 2  # while it could still be logging: not logged for it
    assert [n["signing"] for n in keys.unlogged_rotations()] == [[old_sk, sk_id]]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stored = json.loads(keys._path.read_text())
    stored["unlogged_rotations"][0]["pid"] = int(gone.stdout)
    keys._path.write_text(json.dumps(stored))
    write_jsonl(tmp_path / "c" / "c.jsonl", [event(n=i) for i in range(5, 7)])
    assert ingest(lake, [str(tmp_path / "c")]).accepted == 2
    assert open_lake_keys(lake).unlogged_rotations() == []
    rows = sorted(_table(lake, "ledger").to_pylist(), key=lambda r: r["seq"])
    (late,) = [r for r in rows if r["event_type"] == "config.changed"]
    data = json.loads(late["data"])
    assert (data["old_value"], data["new_value"]) == (f"chain key {old_chain}, signing key {old_sk}",
                                                      f"chain key {chain_id}, signing key {sk_id}")
    assert "recorded late" in data["note"]
    assert late["seq"] == 5  # before that batch's rows
    evaluate_lake(lake, report=False)
    assert late["event_id"] in {r["event_id"] for r in _table(lake, "findings").to_pylist() if r["rule_id"] == "SOX-CHANGE"}
    # A rotation that completes leaves no note behind.
    assert main(["--lake", lake.uri, "keys", "rotate", "--change-ticket", "CHG-8", "--approved-by", "lead"]) == 0
    assert open_lake_keys(lake).unlogged_rotations() == [] and verify(lake).ok
