"""Verify's comparison of the ledger's columns with the sealed record: the text fast path
(_records.match_records) clears a row only when the exact check (parsing in DuckDB) would,
and every changed column is still found and named."""
import json
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from auditlake import _records, verify as verify_module
from auditlake.ingest import ingest
from auditlake.lake.store import Lake
from auditlake.ledger import packed
from auditlake.verify import verify
from events import event, write_jsonl


@pytest.fixture(scope="module")
def sealed_lake(tmp_path_factory):
    """A lake whose events cover the record's shapes: a subject or none, a role or none,
    PII or none, offsets and fractions in occurred_at, escapes and non-ASCII in strings."""
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("AUDITLAKE_HOME")
    os.environ["AUDITLAKE_HOME"] = str(home)
    root = tmp_path_factory.mktemp("sealed")
    events = [event(n=i) for i in range(6)]
    events += [
        event("user.login", n=10, subject=None, actor={"type": "user", "id": "u-1", "role": "admin"}),
        event(n=11, occurred_at="2026-03-08T02:30:00-05:00"),
        event(n=12, occurred_at="2026-03-08T23:30:00.5+05:30"),
        event(n=13, occurred_at="2028-02-29T00:00:00.123456Z"),
        event(n=14, tenant_id="tenant-ü", source="routing \"engine\""),
        event("consent.granted", n=15, data={"consent_id": "c-\\15", "method": "web_form", "seller": "ac\"me"}),
        event(n=16, subject={"id": "subj-x", "country": "DE", "phone": "+49301234567"}, lawful_basis=None),
    ]
    write_jsonl(root / "in" / "a.jsonl", events)
    lake = Lake.open(str(root / "lake"))
    report = ingest(lake, [str(root / "in")])
    assert report.quarantined == 0 and report.accepted == len(events)
    yield root, home, len(events)
    if old is None:
        os.environ.pop("AUDITLAKE_HOME", None)
    else:
        os.environ["AUDITLAKE_HOME"] = old


def _copy(sealed_lake, dest: Path, monkeypatch, writable: bool = True) -> Lake:
    """A copy of the lake; writable (lifting its retention locks) for tampering."""
    root, home, _ = sealed_lake
    shutil.copytree(root / "lake", dest)
    if writable:
        for r, _, fs in os.walk(dest):
            for n in fs:
                os.chmod(os.path.join(r, n), 0o644)
    monkeypatch.setenv("AUDITLAKE_HOME", str(home))
    return Lake.open(str(dest))


def _suspects(lake: Lake) -> tuple[set[int], dict[int, str]]:
    """The seqs the fast path leaves to the exact check, and every row's leaf."""
    paths = sorted(str(p) for p in Path(lake.uri, "tables", "ledger").rglob("*.parquet"))
    projection = verify_module._Projection()
    for batch, outside in verify_module._scan(duckdb.connect(), paths, pafs.LocalFileSystem(), 0):
        leaf = batch.column("leaf").cast(pa.large_binary())
        projection.check(batch.column("seq").to_numpy(), batch, leaf, outside)
    leaves = {}
    for p in paths:
        t = pq.read_table(p, columns=["seq", "leaf"])
        leaves.update(zip(t.column("seq").to_pylist(), t.column("leaf").to_pylist()))
    return {int(s) for a in projection.suspects for s in a}, leaves


def test_the_sealed_layout_needs_no_parsing(sealed_lake, tmp_path, monkeypatch):
    """Every row the sealer wrote is cleared by the text comparison, except one with an
    escape in a column's string (here the source), which is parsed; escapes inside data
    are compared verbatim."""
    lake = _copy(sealed_lake, tmp_path / "lake", monkeypatch, writable=False)
    suspects, leaves = _suspects(lake)
    assert len(leaves) == sealed_lake[2]
    assert suspects == {s for s, leaf in leaves.items() if 'routing \\"engine' in leaf}
    assert len(suspects) == 1
    assert verify(lake, update_trust=False).ok


def _rewrite_row(lake: Lake, seq: int, column: str, value) -> None:
    for path in Path(lake.uri, "tables", "ledger").rglob("*.parquet"):
        t = pq.read_table(path)
        seqs = t.column("seq").to_pylist()
        if seq in seqs:
            values = t.column(column).to_pylist()
            values[seqs.index(seq)] = value
            i = t.schema.get_field_index(column)
            pq.write_table(t.set_column(i, column, pa.array(values, t.schema.field(column).type)), path)
            return
    raise AssertionError(seq)


def _row(lake: Lake, seq: int) -> dict:
    for path in Path(lake.uri, "tables", "ledger").rglob("*.parquet"):
        for row in pq.read_table(path).to_pylist():
            if row["seq"] == seq:
                return row
    raise AssertionError(seq)


# (column, seq, new value or a function of the row): plain changes, a value that would shift
# the record's text if it were pasted in unquoted, NULL for a value and a value for NULL.
CHANGES = [
    ("event_id", 0, "00000000-0000-4000-8000-000000000000"),
    ("event_type", 1, "call.ended"),
    ("source", 2, 'routing-engine","tenant_id":"tenant-a'),
    ("tenant_id", 3, "tenant-b"),
    ("actor_type", 4, "user"),
    ("actor_id", 5, None),
    ("actor_role", 6, None),
    ("actor_role", 0, "admin"),
    ("actor_ip_sealed", 1, lambda r: r["actor_ip_sealed"][:-2] + "AA"),
    ("subject_id", 2, "subj-other"),
    ("subject_country", 12, None),
    ("subject_region", 12, "NY"),
    ("subject_timezone", 3, "America/New_York"),
    ("subject_pii_sealed", 4, lambda r: r["subject_pii_sealed"].replace("k1.", "k1.A", 1)),
    ("phone_bidx", 5, None),
    ("pii_fields", 0, "actor.ip"),
    ("lawful_basis", 12, "consent"),
    ("lawful_basis", 1, "con\\u0073ent"),
    ("data", 2, lambda r: r["data"].replace("outbound", "inbound")),
    ("data", 3, lambda r: json.dumps(dict(reversed(list(json.loads(r["data"]).items()))), separators=(",", ":"))),
    ("occurred_at", 7, lambda r: r["occurred_at"].replace(microsecond=1)),
    ("occurred_at", 8, lambda r: r["occurred_at"].replace(hour=(r["occurred_at"].hour + 1) % 24)),
]


@pytest.mark.parametrize("column,seq,change", CHANGES, ids=[f"{c}-{s}" for c, s, _ in CHANGES])
def test_every_changed_column_is_found_and_named(sealed_lake, tmp_path, monkeypatch, column, seq, change):
    lake = _copy(sealed_lake, tmp_path / "lake", monkeypatch)
    value = change(_row(lake, seq)) if callable(change) else change
    _rewrite_row(lake, seq, column, value)
    report = verify(lake, update_trust=False)
    found = [f for f in report.findings if f.kind == "changed_field" and f.seq == seq]
    assert found, report.findings
    named = "occurred_at/event_date" if column == "occurred_at" else column
    assert named in found[0].detail


def test_a_changed_seq_is_a_reordered_row(sealed_lake, tmp_path, monkeypatch):
    lake = _copy(sealed_lake, tmp_path / "lake", monkeypatch)
    _rewrite_row(lake, 4, "seq", 40)
    kinds = {f.kind for f in verify(lake, update_trust=False).findings}
    assert "reordered_row" in kinds


def _match(template, leaves: list[bytes], columns: list[pa.Array]) -> list[bool]:
    arr = pa.array(leaves, pa.large_binary())
    _, offsets, data = arr.buffers()
    cols = tuple(packed.column_buffers(c) for c in columns)
    return [bool(b) for b in _records.match_records(template, data, offsets, cols)]


def test_a_value_cannot_shift_the_record():
    """Pasted in as is, these values would spell the record's text; quoted, they must not."""
    template = ((0, b'{"a":'), (1, 0), (0, b',"b":'), (1, 1), (0, b"}"))
    leaf = b'{"a":"x","b":"y","b":"z"}'
    assert _match(template, [leaf], [pa.array(['x","b":"y']), pa.array(["z"])]) == [False]
    assert _match(template, [b'{"a":"x\\"","b":"z"}'], [pa.array(['x\\"']), pa.array(["z"])]) == [False]
    assert _match(template, [b'{"a":"x","b":null}'], [pa.array(["x"]), pa.array([None], pa.string())]) == [True]
    assert _match(template, [b'{"a":"x","b":"null"}'], [pa.array(["x"]), pa.array([None], pa.string())]) == [False]
    verbatim = ((0, b'{"d":'), (2, 0), (0, b',"e":'), (1, 1), (0, b"}"))
    leaf = b'{"d":{"k":1},"e":"v","e":"w"}'
    assert _match(verbatim, [leaf], [pa.array(['{"k":1},"e":"v"']), pa.array(["w"])]) == [False]
    assert _match(verbatim, [b'{"d":{"k":"}"},"e":"w"}'], [pa.array(['{"k":"}"}']), pa.array(["w"])]) == [True]


def test_dictionary_columns_match_like_plain_ones():
    template = ((0, b"["), (1, 0), (0, b"]"))
    values = ["a", None, "b", "a"]
    leaves = [b'["a"]', b"[null]", b'["a"]', b'["a"]']
    assert _match(template, leaves, [pa.array(values)]) == [True, True, False, True]
    assert _match(template, leaves, [pa.array(values).dictionary_encode()]) == [True, True, False, True]
    sliced = pa.array(["x", *values]).dictionary_encode().slice(1)
    assert _match(template, leaves, [sliced]) == [True, True, False, True]


INSTANTS = ["2026-03-08T02:30:00Z", "2026-03-08T02:30:00.5Z", "2026-03-08T02:30:00.123456Z",
            "2026-03-08T02:30:00-05:00", "2026-11-01T01:59:59.999+14:00", "2024-02-29T23:59:59-00:30",
            "1969-12-31T23:59:59.000001Z", "2000-01-01T00:00:00+00:00"]
NOT_STRICT = ["2026-02-30T00:00:00Z", "2026-03-08T02:30:00.1234567Z", "2026-03-08T02:30:00",
              "2026-03-08 02:30:00Z", "2026-03-08T24:00:00Z", "2026-03-08T02:30:60Z", "2025-02-29T00:00:00Z",
              "2026-03-08T02:30:00+24:00", "2026-03-08T02:30:00.Z", "2026-3-08T02:30:00Z"]


def test_instants_read_as_duckdb_reads_them():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    template = ((6, 0),)
    for text in INSTANTS:
        micros = con.execute("SELECT epoch_us(?::TIMESTAMPTZ)", [text]).fetchone()[0]
        leaf = json.dumps(text).encode()
        column = pa.array([micros], pa.int64()).cast(pa.timestamp("us", "UTC"))
        assert _match(template, [leaf], [column]) == [True], text
        assert _match(template, [leaf], [pa.array([micros + 1], pa.int64())]) == [False], text
    for text in NOT_STRICT:  # left to the exact check, even against DuckDB's own reading
        try:
            micros = con.execute("SELECT epoch_us(?::TIMESTAMPTZ)", [text]).fetchone()[0]
        except duckdb.Error:
            micros = 0
        assert _match(template, [json.dumps(text).encode()], [pa.array([micros], pa.int64())]) == [False], text


def test_an_event_sealed_twice_is_a_duplicate_row(lake, tmp_path):
    """One event id at two positions (EVENTS.md: unique across the ledger): every link and
    record is sound, so only the ids show it. Made here the way a writer's shortcut could
    (an audit event recorder that did not search the ledger), located at the later copy."""
    import json

    from auditlake.ingest import ingest
    from auditlake.lake import tables
    from auditlake.verify import verify
    from events import event, write_jsonl

    write_jsonl(tmp_path / "a" / "a.jsonl", [event(n=i) for i in range(5)])
    ingest(lake, [str(tmp_path / "a")])
    again = tmp_path / "b" / "b.jsonl"
    again.parent.mkdir()
    again.write_text(json.dumps(event(n=2), indent=None, separators=(", ", ": ")) + "\n")  # other bytes, same event
    ingest(lake, [str(again)], fresh_since=tables.version(lake, "ledger"))
    report = verify(lake, update_trust=False)
    assert [(f.kind, f.seq, f.event_id) for f in report.findings] == [("duplicate_row", 5, event(n=2)["event_id"])]
    assert report.findings[0].file.startswith("event_date=")
