"""Inclusion and consistency proofs against signed checkpoints (INTERFACES.md), and the
tiles that make them cheap.

Tiles: every perfect inner node of the Merkle tree at level >= TILE_LEVEL (each covers
256+ leaves) is stored once in the append-only Delta table `tiles` (level, idx, hash hex),
written by ingest after each batch (`extend_frontier`, a hook in `ingest._commit_batch`).
A proof needs O(log n) nodes: those at level >= 8 come from tiles, the ones below from the
<= 256 leaves of one aligned block, read by seq range (Delta file statistics pick the few
files that hold it). A tile that is missing (a crash between commits, a lake older than
tiles) is recomputed from the ledger leaves of its range and stored, so the next proof
reads it. Tiles are a cache, not a source of trust: every proof is checked against the
signed checkpoint before it is handed out, and a proof that fails with tiles is rebuilt
from the leaves alone.

Proof documents (JSON):

* inclusion: `type`, `version`, `log_id`, `event_id`, `leaf` (the canonical leaf bytes as a
  UTF-8 string), `leaf_b64`, `leaf_index`, `tree_size`, `root` (hex), `proof` (hex list,
  RFC 9162 audit path, bottom-up), `checkpoint` (the full signed checkpoint incl.
  `signature`, `key_id`, `checkpoint_hash`) and `public_key` (base64 raw Ed25519).
* consistency: `type`, `version`, `log_id`, `old` and `new` (signed checkpoints),
  `proof` (hex list, RFC 9162 consistency path) and `public_key`.

An offline verifier needs nothing but the document and, to pin trust, the public key.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from .errors import AuditlakeError, ConflictError
from .head import read_checkpoints
from .keys import load_public_key, public_key_b64, signing_key_id
from .lake import tables
from .lake.store import Lake
from .ledger import merkle, packed
from .ledger.canonical import loads_noting_repeats
from .ledger.checkpoint import SIGNED_FIELDS, Checkpoint

TILE_LEVEL = 8
TILE_LEAVES = 1 << TILE_LEVEL
PROOF_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ProofError(AuditlakeError):
    """The lake cannot back a valid proof (its data disagrees with its signed checkpoint)."""


# ============================================================================ ledger reads
_LEDGER_FILE_SCHEMA = None


def _ledger_schema() -> pa.Schema:
    global _LEDGER_FILE_SCHEMA
    if _LEDGER_FILE_SCHEMA is None:
        from .lake.tables import LEDGER

        _LEDGER_FILE_SCHEMA = pa.schema([f for f in LEDGER if f.name != "event_date"])
    return _LEDGER_FILE_SCHEMA


def _add_actions(dt) -> pa.Table:
    return pa.table(dt.get_add_actions(flatten=True))


def table_dataset(lake: Lake, name: str, rel_paths: list[str], schema: pa.Schema | None = None,
                  hive: pa.Schema | None = None) -> ds.Dataset:
    """A pyarrow dataset over these data files of a Delta table (paths relative to the
    table root, as in its add actions). Much cheaper than DeltaTable.to_pyarrow_dataset()."""
    fs, root = lake.filesystem()
    base = f"{root}/tables/{name}"
    paths = [f"{base}/{unquote(p)}" for p in rel_paths]
    kw = {}
    if hive is not None:
        kw = {"partitioning": ds.partitioning(hive, flavor="hive"), "partition_base_dir": base}
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=fs, **kw)


def ledger_dataset(lake: Lake, dt=None, rel_paths: list[str] | None = None) -> ds.Dataset:
    """The ledger's live data files as a dataset (without the event_date partition column)."""
    dt = dt if dt is not None else lake.delta("ledger")
    if rel_paths is None:
        rel_paths = _add_actions(dt).column("path").to_pylist() if dt is not None else []
    return table_dataset(lake, "ledger", rel_paths, _ledger_schema())


def _ranges_filter(ranges: list[tuple[int, int]]):
    expr = None
    for lo, hi in ranges:
        e = (pc.field("seq") >= lo) & (pc.field("seq") < hi)
        expr = e if expr is None else expr | e
    return expr


def _inside_table(rel_path) -> bool:
    """Is a data file path from a cache a plain path under the table root?"""
    return bool(rel_path) and not rel_path.startswith("/") and ".." not in rel_path.split("/")


def _data_file_paths(lake: Lake, name: str, rel_paths: list[str]) -> list[str]:
    """The paths polars reads for these data files of a Delta table (add-action paths)."""
    if lake.is_s3:
        return [f"{lake.table_uri(name)}/{unquote(p)}" for p in rel_paths]
    _, root = lake.filesystem()
    return [f"{root}/tables/{name}/{unquote(p)}" for p in rel_paths]


def polars_scan(lake: Lake, name: str, rel_paths: list[str], file_column: str | None = None):
    """A polars LazyFrame over these data files of a Delta table (no partition columns).
    Polars reads only the pages a filter needs, so a seq-range read of a few hundred rows
    does not decode a file's whole `leaf` column. `file_column` adds each row's file path."""
    import polars as pl

    paths = _data_file_paths(lake, name, rel_paths)
    opts = None
    if lake.is_s3:
        opts = {k.lower(): v for k, v in lake.storage_options.items() if k.upper().startswith("AWS_")} or None
    return pl.scan_parquet(paths, hive_partitioning=False, storage_options=opts, include_file_paths=file_column)


def read_seq_ranges(lake: Lake, ranges: list[tuple[int, int]], columns: list[str], dt=None) -> pa.Table:
    """Ledger rows with seq in any of the [lo, hi) ranges, sorted by seq (only the files whose
    Delta statistics overlap the ranges are opened)."""
    ranges = [(lo, hi) for lo, hi in ranges if hi > lo]
    dt = dt if dt is not None else lake.delta("ledger")
    cols = list(dict.fromkeys(["seq", *columns]))
    schema = _ledger_schema()
    if dt is None or not ranges:
        return pa.table({c: pa.array([], schema.field(c).type) for c in cols})
    files = tables.files_for_seq_ranges(dt, ranges)
    if not files:
        return pa.table({c: pa.array([], schema.field(c).type) for c in cols})
    try:
        import polars as pl

        if len(ranges) > 8 and sum(hi - lo for lo, hi in ranges) <= 1_000_000:
            expr = pl.col("seq").is_in([s for lo, hi in ranges for s in range(lo, hi)])  # scattered rows
        else:
            expr = None
            for lo, hi in ranges:
                e = (pl.col("seq") >= lo) & (pl.col("seq") < hi)
                expr = e if expr is None else expr | e
        df = polars_scan(lake, "ledger", files).filter(expr).select(cols).collect()
        table = df.to_arrow()
        table = table.cast(pa.schema([schema.field(c) for c in cols]))
    except Exception:  # noqa: BLE001 - any polars trouble (an S3 option it lacks...): pyarrow
        table = ledger_dataset(lake, dt, files).to_table(columns=cols, filter=_ranges_filter(ranges))
    return table.sort_by("seq")


def read_seqs(lake: Lake, seqs: list[int], columns: list[str], dt=None) -> pa.Table:
    """Ledger rows with these seqs (sorted by seq); consecutive seqs are read as ranges."""
    ranges: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if ranges and ranges[-1][1] == s:
            ranges[-1] = (ranges[-1][0], s + 1)
        else:
            ranges.append((s, s + 1))
    return read_seq_ranges(lake, ranges, columns, dt)


# ---------------------------------------------------------------------------- seq indexes
# Caches in the lake (under _index/, outside tables/, so not part of the audited state):
# segments of (key, seq) rows sorted by key, each covering a seq range [lo, hi) of the
# ledger, with small row groups so a lookup reads one row group per segment. They are
# built lazily for the part of the ledger they do not cover yet; that tail is scanned.
#
# * event_seq (key = event_id, with the ledger data file holding the row), for proofs.
#   Unsigned: a hit is checked against the ledger row itself and a miss falls back to a
#   scan, so a forged segment cannot mislead. The file lets a proof read its leaf from one
#   file instead of every file whose seq range overlaps (a batch's files all do).
# * subject_seq (key = subject.id, and actor.id for rows with a sealed actor IP), for
#   subject access. A forged segment could hide rows, so each segment carries a signed
#   sidecar (SHA-256 of the file, Ed25519 by the lake's signing key) and unsigned or
#   altered segments are ignored (the ledger is scanned instead).
# * leaf_hash (seq, leaf hash; no key, sorted by seq), for proofs: the 256 leaf hashes of a
#   proof's block without reading its leaves from the ~30 files they are spread over.
#   Unsigned: a proof built with it is checked against the signed root, and rebuilt from
#   the ledger leaves when it does not check.
# * tiles/upto-SIZE.parquet: every stored tile inside the tree of SIZE in one small file
#   (node = level << 48 | idx, sorted), so a proof reads it instead of opening the tiles
#   table; tiles past SIZE come from the table. Unsigned, like the tiles themselves.
INDEX_MIN_ROWS = 50_000  # index a tail once it is this long (shorter tails are just scanned)
INDEX_ROW_GROUP = 16_384
INDEX_MAX_SEGMENTS = 8
_SEG_RE = re.compile(r"seg-(\d{12})-(\d{12})\.parquet$")
EVENT_INDEX = "event_seq"
SUBJECT_INDEX = "subject_seq"
LEAF_INDEX = "leaf_hash"
LEAF_SEGMENT_ROWS = 1 << 20  # the most leaves read (and held) at once to build the leaf-hash index
LEAF_ROW_GROUP = 4096  # a multiple of TILE_LEAVES: a block is in one row group
TILE_CACHE = "tiles"
_TILE_CACHE_RE = re.compile(r"upto-(\d{12})\.parquet$")
_NODE_SHIFT = 48


def _index_dir(name: str) -> str:
    return f"_index/{name}"


def _index_segments(lake: Lake, name: str = EVENT_INDEX) -> list[tuple[int, int, str]]:
    import pyarrow.fs as pafs

    fs, root = lake.filesystem()
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{_index_dir(name)}", allow_not_found=True))
    except OSError:
        return []
    out = []
    for i in infos:
        m = _SEG_RE.search(i.path)
        if m and i.type == pafs.FileType.File:
            out.append((int(m.group(1)), int(m.group(2)), i.path))
    return out


def _cover(segs: list[tuple[int, int, str]]) -> tuple[list[tuple[int, int, str]], int]:
    """The fewest segments covering [0, hi) contiguously (greedy: the longest reach first)."""
    chosen, pos = [], 0
    while True:
        best = max((s for s in segs if s[0] == pos and s[1] > pos), key=lambda s: s[1], default=None)
        if best is None:
            return chosen, pos
        chosen.append(best)
        pos = best[1]


def _sig_body(name: str, log_id: str, lo: int, hi: int, rows: int, sha: str, key_id: str) -> bytes:
    from .ledger.canonical import canonical_json

    return canonical_json({"index": name, "log_id": log_id, "lo": lo, "hi": hi, "rows": rows, "sha256": sha,
                           "key_id": key_id})


def _signed_segments(lake: Lake, name: str, keys) -> list[tuple[int, int, str, str]]:
    """Segments whose sidecar signature verifies: (lo, hi, path, expected sha256)."""
    fs, _ = lake.filesystem()
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    out = []
    for lo, hi, path in _index_segments(lake, name):
        try:
            with fs.open_input_stream(path + ".sig") as f:
                sig = json.loads(f.read())
            key = public.get(sig["key_id"])
            body = _sig_body(name, keys.log_id, lo, hi, sig["rows"], sig["sha256"], sig["key_id"])
            key.verify(base64.b64decode(sig["signature"]), body)
        except Exception:  # noqa: BLE001 - missing, malformed or forged: not trusted
            continue
        out.append((lo, hi, path, sig["sha256"]))
    return out


def _segment_lookup(fs, path: str, key: str, expect_sha: str | None = None, all_rows: bool = False) -> list[int]:
    """Seqs stored under `key` in one segment (reading only the row groups that can hold it;
    with `expect_sha` the whole file is read and must have that SHA-256)."""
    return [seq for seq, _ in _segment_rows(fs, path, key, expect_sha, all_rows)]


def _segment_rows(fs, path: str, key: str, expect_sha: str | None = None,
                  all_rows: bool = False) -> list[tuple[int, str | None]]:
    """(seq, ledger file or None) of the rows stored under `key` in one segment."""
    import hashlib as _hl

    import pyarrow.parquet as pq

    if expect_sha is not None:
        with fs.open_input_stream(path) as f:
            raw = f.read()
        if _hl.sha256(raw).hexdigest() != expect_sha:
            raise ValueError("segment altered")
        source = pa.BufferReader(raw)
    else:
        source = fs.open_input_file(path)
    out: list[tuple[int, str | None]] = []
    with source:
        pf = pq.ParquetFile(source)
        md = pf.metadata
        cols = ["key", "seq"] + (["file"] if "file" in pf.schema_arrow.names else [])
        for rg in range(md.num_row_groups):
            st = md.row_group(rg).column(0).statistics
            if st is not None and st.has_min_max and not (st.min <= key <= st.max):
                continue
            t = pf.read_row_group(rg, columns=cols)
            t = t.filter(pc.equal(t.column("key"), key))  # vectorised: no Python list of 16K keys
            seqs = t.column("seq").to_pylist()
            files = t.column("file").to_pylist() if "file" in cols else [None] * len(seqs)
            out.extend(zip(seqs, files))
            if out and not all_rows:
                break
    return out


def _write_segment(lake: Lake, table: pa.Table, lo: int, hi: int, name: str = EVENT_INDEX, keys=None) -> None:
    """Store a segment (sorted by key, seq); signed when `keys` is given."""
    import hashlib as _hl

    import pyarrow.parquet as pq

    cols = ["key", "seq"] + (["file"] if "file" in table.column_names else [])
    table = table.select(cols).sort_by([("key", "ascending"), ("seq", "ascending")])
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, row_group_size=INDEX_ROW_GROUP, compression="zstd")
    raw = buf.getvalue().to_pybytes()
    rel = f"{_index_dir(name)}/seg-{lo:012d}-{hi:012d}.parquet"
    try:
        lake.write_bytes(rel, raw)
        if keys is not None:
            sha = _hl.sha256(raw).hexdigest()
            kid = keys.signing_key_id
            sig = keys.signing_key().sign(_sig_body(name, keys.log_id, lo, hi, table.num_rows, sha, kid))
            lake.write_bytes(rel + ".sig", json.dumps({"index": name, "lo": lo, "hi": hi, "rows": table.num_rows,
                                                       "sha256": sha, "key_id": kid,
                                                       "signature": base64.b64encode(sig).decode()}).encode())
    except AuditlakeError as exc:  # a cache: everything still works without it
        _warn_not_stored("index segment", exc)


def _warn_not_stored(what: str, exc: BaseException) -> None:
    """One line on stderr: a proof cache that failed to store (proofs recompute without it)."""
    from .lake.s3 import error_line

    print(f"auditlake: warning: {what} not stored ({exc.__class__.__name__}: {error_line(exc)}); "
          "proofs recompute without it", file=sys.stderr)


def _tail_files(dt, lo: int) -> list[str]:
    acts = _add_actions(dt)
    cols = acts.column_names
    paths = acts.column("path").to_pylist()
    maxs = acts.column("max.seq").to_pylist() if "max.seq" in cols else [None] * len(paths)
    return [p for p, hi_f in zip(paths, maxs) if hi_f is None or hi_f >= lo]


def _scan_keys(lake: Lake, dt, lo: int, name: str) -> tuple[pa.Table, int]:
    """(key, seq, file) rows of the ledger with seq >= lo for an index (files picked by
    statistics), and the end of the seq range scanned (1 + its largest seq, or lo)."""
    files = _tail_files(dt, lo)
    if not files:
        empty = pa.table({"key": pa.array([], pa.string()), "seq": pa.array([], pa.int64()),
                          "file": pa.array([], pa.string())})
        return empty, lo
    if name == EVENT_INDEX:
        t = _rows_with_files(lake, dt, files, lo, ["event_id"])
        return pa.table({"key": t.column("event_id"), "seq": t.column("seq"), "file": t.column("file")}), _end(t, lo)
    t = _rows_with_files(lake, dt, files, lo, ["subject_id", "actor_id", "actor_ip_sealed"])
    end = _end(t, lo)
    subj = t.filter(pc.field("subject_id").is_valid())
    act = t.filter(pc.field("actor_ip_sealed").is_valid() & ((pc.field("actor_id") != pc.field("subject_id"))
                                                              | pc.field("subject_id").is_null()))
    return pa.concat_tables([
        pa.table({"key": subj.column("subject_id"), "seq": subj.column("seq"), "file": subj.column("file")}),
        pa.table({"key": act.column("actor_id"), "seq": act.column("seq"), "file": act.column("file")}),
    ]), end


def _rows_with_files(lake: Lake, dt, files: list[str], lo: int, columns: list[str]) -> pa.Table:
    """These columns, `seq` and `file` (the add-action path of the data file holding the row)
    of the ledger rows with seq >= lo in these files; `file` is null if polars cannot read them."""
    import polars as pl

    schema = _ledger_schema()
    types = pa.schema([schema.field(c) for c in [*columns, "seq"]] + [pa.field("file", pa.string())])
    try:
        by_path = dict(zip(_data_file_paths(lake, "ledger", files), files))
        df = (polars_scan(lake, "ledger", files, file_column="file").filter(pl.col("seq") >= lo)
              .select(*columns, "seq", pl.col("file").replace_strict(by_path, default=None, return_dtype=pl.String))
              .collect())
        return df.to_arrow().cast(types)
    except Exception:  # noqa: BLE001 - any polars trouble (an S3 option it lacks...): pyarrow, no files
        t = ledger_dataset(lake, dt, files).to_table(columns=[*columns, "seq"], filter=pc.field("seq") >= lo)
        return t.append_column("file", pa.nulls(t.num_rows, pa.string())).cast(types)


def _end(t: pa.Table, lo: int) -> int:
    if t.num_rows == 0:
        return lo
    m = pc.max(t.column("seq")).as_py()
    n = pc.count_distinct(t.column("seq")).as_py()
    # Only a gap-free range can be covered (a gap means rows missing: leave it to verify).
    return m + 1 if m + 1 - lo == n == t.num_rows else lo


def update_index(lake: Lake, name: str = EVENT_INDEX, dt=None, keys=None) -> int:
    """Index the ledger rows an index does not cover yet, and compact it when it has too
    many segments. Returns the seq up to which it covers. `keys` signs (subject index)."""
    dt = dt if dt is not None else lake.delta("ledger")
    if dt is None:
        return 0
    segs = _signed_segments(lake, name, keys) if keys is not None else _index_segments(lake, name)
    chosen, covered = _cover([s[:3] for s in segs])
    tail, hi = _scan_keys(lake, dt, covered, name)
    if hi > covered:
        _write_segment(lake, tail, covered, hi, name, keys)
        chosen.append((covered, hi, ""))
        covered = hi
    if len(chosen) > INDEX_MAX_SEGMENTS and covered:
        fs, _ = lake.filesystem()
        import pyarrow.parquet as pq

        segs = _signed_segments(lake, name, keys) if keys is not None else _index_segments(lake, name)
        parts = []
        for seg in _cover([x[:3] for x in segs])[0]:
            with fs.open_input_file(seg[2]) as f:
                parts.append(pq.read_table(f))
        _write_segment(lake, pa.concat_tables(parts, promote_options="default"), 0, covered, name, keys)
    return covered


def update_event_index(lake: Lake, dt=None) -> int:
    return update_index(lake, EVENT_INDEX, dt)


def locate_event(lake: Lake, event_id: str, dt=None) -> int | None:
    """The seq of an event id, or None. Uses the event index (one row group per segment);
    a tail it does not cover is scanned (and indexed once it is long); a miss falls back
    to a scan of the event_id column."""
    hit, covered = _indexed_event(lake, event_id)
    if hit is not None:
        return hit[0]
    return _locate_unindexed(lake, event_id, covered, dt)


def _indexed_event(lake: Lake, event_id: str) -> tuple[tuple[int, str | None] | None, int]:
    """((seq, ledger file or None) from the event index or None, the seq it covers up to).
    Needs no Delta table: a hit costs one row group read per segment."""
    fs, _ = lake.filesystem()
    chosen, covered = _cover(_index_segments(lake, EVENT_INDEX))
    for _, _, path in chosen:
        try:
            rows = _segment_rows(fs, path, event_id)
        except Exception:  # noqa: BLE001 - an unreadable cache segment is skipped
            rows = []
        if rows:
            return rows[0], covered
    return None, covered


def _locate_unindexed(lake: Lake, event_id: str, covered: int, dt=None) -> int | None:
    """The seq of an event the index does not hold: a scan of the tail it does not cover
    (indexed once it is long), then of the whole event_id column."""
    dt = dt if dt is not None else lake.delta("ledger")
    if dt is None:
        return None
    tail, _ = _scan_keys(lake, dt, covered, EVENT_INDEX)
    hit = tail.filter(pc.field("key") == event_id)
    if tail.num_rows >= INDEX_MIN_ROWS:
        update_index(lake, EVENT_INDEX, dt)
    if hit.num_rows:
        if hit.num_rows > 1:
            raise ProofError(f"event {event_id} appears {hit.num_rows} times in the ledger; run `auditlake verify`")
        return hit.column("seq")[0].as_py()
    return scan_event(lake, event_id, dt) if covered else None


def subject_seqs(lake: Lake, subject_id: str, keys, dt=None) -> list[int]:
    """Every seq whose row is about this person (subject, or actor with a sealed IP), from
    the signed subject index plus a scan of the tail it does not cover."""
    return sorted(subject_locations(lake, subject_id, keys, dt))


def subject_locations(lake: Lake, subject_id: str, keys, dt=None) -> dict[int, str | None]:
    """subject_seqs with the ledger data file of each row where the index knows it."""
    dt = dt if dt is not None else lake.delta("ledger")
    if dt is None:
        return {}
    fs, _ = lake.filesystem()
    segs = _signed_segments(lake, SUBJECT_INDEX, keys)
    chosen, covered = _cover([s[:3] for s in segs])
    sha_of = {s[2]: s[3] for s in segs}
    out: dict[int, str | None] = {}
    for lo, _, path in chosen:
        try:
            out.update(_segment_rows(fs, path, subject_id, expect_sha=sha_of[path], all_rows=True))
        except Exception:  # noqa: BLE001 - altered or unreadable
            covered = lo  # not trustworthy from here on: scan instead
            break
    tail, _ = _scan_keys(lake, dt, covered, SUBJECT_INDEX)
    mine = tail.filter(pc.field("key") == subject_id)
    out.update(zip(mine.column("seq").to_pylist(), mine.column("file").to_pylist()))
    if tail.num_rows >= INDEX_MIN_ROWS:
        update_index(lake, SUBJECT_INDEX, dt, keys)
    return {s: f for s, f in out.items() if s >= 0}


def read_located(lake: Lake, located: dict[int, str | None], columns: list[str], dt=None) -> pa.Table:
    """Ledger rows by seq (sorted by seq), each read from its known data file where given
    (so only those files are opened), the rest (and any a file no longer holds) by seq."""
    import polars as pl

    cols = list(dict.fromkeys(["seq", *columns]))
    files = sorted({f for f in located.values() if _inside_table(f)})
    parts = []
    if files:
        wanted = [s for s, f in located.items() if f in files]
        try:
            df = polars_scan(lake, "ledger", files).filter(pl.col("seq").is_in(wanted)).select(cols).collect()
            schema = _ledger_schema()
            parts.append(df.to_arrow().cast(pa.schema([schema.field(c) for c in cols])))
        except Exception:  # noqa: BLE001 - a file gone (compacted) or unreadable: read by seq
            pass
    found = set(parts[0].column("seq").to_pylist()) if parts else set()
    rest = [s for s in located if s not in found]
    if rest or not parts:
        parts.append(read_seqs(lake, rest, cols, dt))
    return pa.concat_tables(parts).sort_by("seq")


def scan_event(lake: Lake, event_id: str, dt=None) -> int | None:
    """The seq of an event id by a scan of the ledger's event_id column."""
    dt = dt if dt is not None else lake.delta("ledger")
    if dt is None:
        return None
    t = ledger_dataset(lake, dt).to_table(columns=["seq"], filter=pc.field("event_id") == event_id)
    seqs = t.column("seq").to_pylist()
    if len(seqs) > 1:
        raise ProofError(f"event {event_id} appears {len(seqs)} times in the ledger; run `auditlake verify`")
    return seqs[0] if seqs else None


# ---------------------------------------------------------------------------- leaf-hash index
def update_leaf_index(lake: Lake, size: int, dt=None) -> int:
    """Store the leaf hashes of seqs [covered, size) once at least INDEX_MIN_ROWS of them are
    missing, reading their leaves. Segments are only appended; each ends at a multiple of
    TILE_LEAVES (a block is never split) and none crosses a multiple of LEAF_SEGMENT_ROWS.
    Returns the seq the index covers up to."""
    covered = _cover(_index_segments(lake, LEAF_INDEX))[1]
    end = size - size % TILE_LEAVES
    if end - covered < INDEX_MIN_ROWS:
        return covered
    dt = dt if dt is not None else lake.delta("ledger")
    if dt is None:
        return covered
    while covered < end:
        hi = min(covered - covered % LEAF_SEGMENT_ROWS + LEAF_SEGMENT_ROWS, end)
        hashes = _leaf_hashes_of_range(lake, dt, covered, hi)
        if hashes is None or not _write_leaf_segment(lake, covered, hi, hashes):
            break
        covered = hi
    return covered


def _leaf_hashes_of_range(lake: Lake, dt, lo: int, hi: int) -> bytes | None:
    """The leaf hashes of seqs [lo, hi) (packed), or None if the ledger does not hold exactly those
    rows (left to verify) or cannot be read by polars. Hashed from polars' own buffers: a
    million leaves are ~600 MB, too much to copy into arrow strings and sort again."""
    import polars as pl

    try:
        df = (polars_scan(lake, "ledger", tables.files_for_seq_ranges(dt, [(lo, hi)]))
              .filter((pl.col("seq") >= lo) & (pl.col("seq") < hi)).select("seq", "leaf").collect().sort("seq"))
    except Exception:  # noqa: BLE001 - a cache: proofs read the leaves themselves
        return None
    if not _is_range(df.get_column("seq"), lo, hi) or df.get_column("leaf").null_count():
        return None
    return merkle.leaf_hashes(df.get_column("leaf").to_arrow(compat_level=pl.CompatLevel.newest()))


def _is_range(seqs, lo: int, hi: int) -> bool:
    import numpy as np

    return len(seqs) == hi - lo and bool(np.array_equal(seqs.to_numpy(), np.arange(lo, hi)))


def _write_leaf_segment(lake: Lake, lo: int, hi: int, hashes: bytes) -> bool:
    import numpy as np
    import pyarrow.parquet as pq

    table = pa.table({"seq": pa.array(np.arange(lo, hi), pa.int64()), "hash": packed.fixed_array(hashes)})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, row_group_size=LEAF_ROW_GROUP, compression="none")  # hashes do not compress
    try:
        lake.write_bytes(f"{_index_dir(LEAF_INDEX)}/seg-{lo:012d}-{hi:012d}.parquet", buf.getvalue().to_pybytes())
    except AuditlakeError as exc:  # a cache: proofs still work without it
        _warn_not_stored("leaf-hash index segment", exc)
        return False
    return True


def _cached_leaf_hashes(lake: Lake, segments: list[tuple[int, int, str]], lo: int, hi: int) -> list[bytes] | None:
    """The stored leaf hashes of seqs [lo, hi) (inside one row group), or None."""
    import pyarrow.parquet as pq

    seg = next((x for x in segments if x[0] <= lo and hi <= x[1]), None)
    if seg is None:
        return None
    fs, _ = lake.filesystem()
    rg, start = divmod(lo - seg[0], LEAF_ROW_GROUP)
    try:
        with fs.open_input_file(seg[2]) as f:
            t = pq.ParquetFile(f).read_row_group(rg).slice(start, hi - lo)
    except Exception:  # noqa: BLE001 - an unreadable cache segment is a miss
        return None
    if not _is_range(t.column("seq"), lo, hi):
        return None
    return t.column("hash").to_pylist()


def _leaf_in_file(lake: Lake, rel_path: str, seq: int) -> bytes | None:
    """The leaf of `seq` read from one ledger data file (the event index's pointer), or None."""
    import polars as pl

    if not _inside_table(rel_path):
        return None
    try:
        df = polars_scan(lake, "ledger", [rel_path]).filter(pl.col("seq") == seq).select("leaf").collect()
    except Exception:  # noqa: BLE001 - gone (compacted) or unreadable: read the block instead
        return None
    return df.item(0, 0).encode() if df.height == 1 and df.item(0, 0) is not None else None


def _tile_caches(lake: Lake) -> list[tuple[int, str]]:
    """(tree size, path) of the tile cache files, largest first."""
    import pyarrow.fs as pafs

    fs, root = lake.filesystem()
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{_index_dir(TILE_CACHE)}", allow_not_found=True))
    except OSError:
        return []
    found = [(int(m.group(1)), i.path) for i in infos if (m := _TILE_CACHE_RE.search(i.path))]
    return sorted(found, reverse=True)


def update_tile_cache(lake: Lake, size: int) -> None:
    """Rewrite the tile cache from the tiles table once it lags the tree of `size` by
    INDEX_MIN_ROWS leaves or more (older cache files are removed)."""
    import numpy as np
    import pyarrow.parquet as pq

    caches = _tile_caches(lake)
    if size - (caches[0][0] if caches else 0) < INDEX_MIN_ROWS:
        return
    paths = [p for p, *_ in _tile_files(lake)]
    if not paths:
        return
    t = _tiles_dataset(lake, paths).to_table(columns=["level", "idx", "hash"])
    level = t.column("level").to_numpy().astype(np.int64)
    idx = t.column("idx").to_numpy()
    node = ((level << _NODE_SHIFT) | idx).tolist()
    hexes = t.column("hash").to_pylist()
    seen: dict[int, bytes] = {}
    for i in np.flatnonzero(((idx + 1) << level) <= size).tolist():  # the nodes inside the tree
        if isinstance(hexes[i], str) and _HEX64.fullmatch(hexes[i]):
            seen.setdefault(node[i], bytes.fromhex(hexes[i]))  # as TreeNodes: the first stored copy
    order = sorted(seen)
    table = pa.table({"node": pa.array(order, pa.int64()), "hash": pa.array([seen[n] for n in order], pa.binary(32))})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="none")
    try:
        lake.write_bytes(f"{_index_dir(TILE_CACHE)}/upto-{size:012d}.parquet", buf.getvalue().to_pybytes())
    except AuditlakeError as exc:
        _warn_not_stored("tile cache", exc)
        return
    fs, _ = lake.filesystem()
    for _, old in caches:
        try:
            fs.delete_file(old)
        except OSError:
            pass  # only the largest cache is read


def _cached_tiles(lake: Lake, size: int, ids: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The cached hashes of these perfect nodes (those inside the cache's tree)."""
    import numpy as np
    import pyarrow.parquet as pq

    caches = _tile_caches(lake)
    if not caches:
        return {}
    cache_size, path = caches[0]
    ids = [(lv, i) for lv, i in ids if ((i + 1) << lv) <= min(cache_size, size)]
    if not ids:
        return {}
    fs, _ = lake.filesystem()
    try:
        with fs.open_input_file(path) as f:
            t = pq.read_table(f)
        nodes = t.column("node").to_numpy()
        hashes = t.column("hash")
    except Exception:  # noqa: BLE001 - an unreadable cache is a miss
        return {}
    want = np.array([(lv << _NODE_SHIFT) | i for lv, i in ids], np.int64)
    pos = np.minimum(np.searchsorted(nodes, want), len(nodes) - 1)
    return {nid: hashes[int(p)].as_py() for nid, w, p in zip(ids, want, pos) if len(nodes) and nodes[p] == w}


def _levels(level: list[bytes]) -> list[list[bytes]]:
    """Levels 0.. of the perfect subtree over these (2**k) leaf hashes."""
    levels = [level]
    while len(level) > 1:
        level = [merkle.node_hash(a, c) for a, c in zip(level[0::2], level[1::2])]
        levels.append(level)
    return levels


# ============================================================================ tiles
def write_tiles(lake: Lake, nodes: list[tuple[int, int, bytes]], lock: bool = False) -> bool:
    """Append perfect nodes to the tiles table; best effort (tiles are a cache). With `lock`
    the new objects are put under retention at once (ingest does that itself)."""
    if not nodes:
        return True
    rows = pa.table(
        {
            "level": pa.array([n[0] for n in nodes], pa.int32()),
            "idx": pa.array([n[1] for n in nodes], pa.int64()),
            "hash": pa.array([n[2].hex() for n in nodes], pa.string()),
        }
    )
    for _ in range(5):
        try:
            tables.append(lake, "tiles", rows, tables.version(lake, "tiles"), {"auditlake_tiles": str(len(nodes))})
            break
        except ConflictError:
            continue
        except AuditlakeError as exc:
            _warn_not_stored("tiles", exc)
            return False
    else:
        return False
    if lock:
        from .lake import retention
        from .lake.meta import open_lake_keys

        retention.lock_new(lake, open_lake_keys(lake))
    return True


def extend_frontier(lake: Lake, frontier: merkle.Frontier, leaf_hashes: bytes) -> merkle.Frontier:
    """Ingest's hook: append the batch's leaf hashes to the frontier and store the perfect
    nodes of level >= TILE_LEVEL that the batch completed."""
    nodes: list[tuple[int, int, bytes]] = []
    out = frontier.extend(
        leaf_hashes,
        min_level=TILE_LEVEL,
        on_node=lambda lv, i, h: nodes.append((lv, i, h)),
    )
    try:
        write_tiles(lake, nodes)
    except Exception as exc:  # noqa: BLE001 - a cache must never fail an ingest
        _warn_not_stored("tiles", exc)
    return out


def _tile_files(lake: Lake) -> list[tuple]:
    """(path, level, min idx, max idx) of the tiles table's files."""
    dt = lake.latest("tiles")
    if dt is None:
        return []
    acts = _add_actions(dt)
    cols = acts.column_names
    n = acts.num_rows
    return list(zip(
        acts.column("path").to_pylist(),
        acts.column("partition.level").to_pylist() if "partition.level" in cols else [None] * n,
        acts.column("min.idx").to_pylist() if "min.idx" in cols else [None] * n,
        acts.column("max.idx").to_pylist() if "max.idx" in cols else [None] * n,
    ))


def _tiles_dataset(lake: Lake, paths: list[str]) -> ds.Dataset:
    schema = pa.schema([("idx", pa.int64()), ("hash", pa.string()), ("level", pa.int32())])
    return table_dataset(lake, "tiles", paths, schema, hive=pa.schema([("level", pa.int32())]))


class TreeNodes:
    """`get_node(level, idx)` for a tree of `size` over the lake's ledger: tiles for level
    >= TILE_LEVEL (recomputed and stored when missing), leaves of one block below.
    `use_tiles=False` reads leaves only: no tiles and none of the proof caches."""

    def __init__(self, lake: Lake, size: int, use_tiles: bool = True, dt=None):
        self.lake, self.size, self.use_tiles = lake, size, use_tiles
        self._dt = dt  # the Delta tables are opened only when needed (~20 ms each)
        self.tiles: dict[tuple[int, int], bytes] = {}
        self.fetched: set[tuple[int, int]] = set()
        self.blocks: dict[int, list[list[bytes]]] = {}
        self.leaves: dict[int, bytes] = {}  # seq -> leaf bytes of the blocks read
        self.new_tiles: dict[tuple[int, int], bytes] = {}
        self._tile_files: list | None = None
        self._leaf_segments: list | None = None

    @property
    def dt(self):
        if self._dt is None:
            self._dt = self.lake.latest("ledger")
        return self._dt

    def seed(self, frontier_hex: list[str] | None) -> None:
        """Known perfect nodes: a checkpoint's frontier (the right edge of its tree). Unsigned,
        so only a hint: every proof is checked against the signed root."""
        try:
            f = merkle.Frontier.from_hex(self.size, list(frontier_hex or []))
        except (ValueError, TypeError):
            return
        for lv, i, h in f.nodes():
            self.tiles.setdefault((lv, i), h)

    # -- stored tiles -------------------------------------------------------------------
    def _fetch(self, level_ranges: list[tuple[int, int, int]]) -> None:
        """Load stored tiles with level == l and lo <= idx < hi for each (l, lo, hi); only the
        files (one level each) whose idx statistics overlap are opened."""
        if not self.use_tiles or not level_ranges:
            return
        if self._tile_files is None:
            self._tile_files = _tile_files(self.lake)
        paths = []
        for path, lv, lo_f, hi_f in self._tile_files:
            lv = None if lv is None else int(lv)
            for want_lv, lo, hi in level_ranges:
                if (lv is None or lv == want_lv) and (lo_f is None or hi_f is None or (lo_f < hi and hi_f >= lo)):
                    paths.append(path)
                    break
        if not paths:
            return
        expr = None
        for lv, lo, hi in level_ranges:
            e = (pc.field("level") == lv) & (pc.field("idx") >= lo) & (pc.field("idx") < hi)
            expr = e if expr is None else expr | e
        t = _tiles_dataset(self.lake, paths).to_table(columns=["level", "idx", "hash"], filter=expr)
        for lv, i, h in zip(t.column("level").to_pylist(), t.column("idx").to_pylist(), t.column("hash").to_pylist()):
            if isinstance(h, str) and _HEX64.fullmatch(h):
                self.tiles.setdefault((lv, i), bytes.fromhex(h))

    def prefetch(self, ids: list[tuple[int, int]]) -> None:
        want = sorted({(lv, i) for lv, i in ids if lv >= TILE_LEVEL and (lv, i) not in self.tiles})
        if not want:
            return
        if self.use_tiles:
            for nid, h in _cached_tiles(self.lake, self.size, want).items():
                self.tiles.setdefault(nid, h)
            self.fetched.update(nid for nid in want if nid in self.tiles)
            want = [nid for nid in want if nid not in self.tiles]
            if not want:
                return
        self._fetch([(lv, i, i + 1) for lv, i in want])
        self.fetched.update(want)

    # -- leaves -------------------------------------------------------------------------
    def _read_blocks(self, blocks: list[int], keep_leaves: bool = False) -> None:
        """Leaves of these 256-leaf blocks (clipped to size), in as few reads as possible;
        their levels 0..TILE_LEVEL into `self.blocks`."""
        blocks = sorted(b for b in set(blocks) if b not in self.blocks)
        for i in range(0, len(blocks), 1024):
            self._read_block_chunk(blocks[i : i + 1024], keep_leaves)

    def _read_block_chunk(self, blocks: list[int], keep_leaves: bool) -> None:
        spans = [(b, b * TILE_LEAVES, min((b + 1) * TILE_LEAVES, self.size)) for b in blocks]
        ranges: list[tuple[int, int]] = []
        for _, lo, hi in spans:
            if ranges and ranges[-1][1] == lo:
                ranges[-1] = (ranges[-1][0], hi)
            else:
                ranges.append((lo, hi))
        t = read_seq_ranges(self.lake, ranges, ["leaf"], self.dt)
        seqs = t.column("seq")
        expected = [s for lo, hi in ranges for s in range(lo, hi)]
        if seqs.to_pylist() != expected:
            raise ProofError("ledger rows of the needed seq range are missing or duplicated; run `auditlake verify`")
        hashes = packed.split(merkle.leaf_hashes(t.column("leaf")))
        pos = 0
        for b, lo, hi in spans:
            level = hashes[pos : pos + hi - lo]
            if keep_leaves:
                for s, leaf in zip(range(lo, hi), t.column("leaf").slice(pos, hi - lo).to_pylist()):
                    self.leaves[s] = leaf.encode()
            pos += hi - lo
            self.blocks[b] = _levels(level)

    def _block(self, b: int) -> None:
        """Levels 0..TILE_LEVEL of block b: from the leaf-hash index when it holds the block
        and agrees with the leaves read, else from the ledger leaves."""
        lo, hi = b * TILE_LEAVES, min((b + 1) * TILE_LEAVES, self.size)
        hashes = None
        if self.use_tiles:
            if self._leaf_segments is None:
                self._leaf_segments = _cover(_index_segments(self.lake, LEAF_INDEX))[0]
            hashes = _cached_leaf_hashes(self.lake, self._leaf_segments, lo, hi)
        if hashes is not None and all(merkle.leaf_hash(self.leaves[s]) == hashes[s - lo]
                                      for s in range(lo, hi) if s in self.leaves):
            self.blocks[b] = _levels(hashes)
        else:
            self._read_blocks([b])

    def leaf(self, seq: int, file: str | None = None) -> bytes:
        """The leaf of `seq`: from `file` (the event index's pointer) when it holds it, else
        read with its whole block."""
        if seq not in self.leaves and file is not None and self.use_tiles:
            leaf = _leaf_in_file(self.lake, file, seq)
            if leaf is not None:
                self.leaves[seq] = leaf
        if seq not in self.leaves:
            b = seq >> TILE_LEVEL
            self.blocks.pop(b, None)
            self._read_blocks([b], keep_leaves=True)
        return self.leaves[seq]

    # -- nodes --------------------------------------------------------------------------
    def get(self, level: int, idx: int) -> bytes:
        h = self.tiles.get((level, idx))
        if h is not None:
            return h
        if level < TILE_LEVEL:
            b = (idx << level) >> TILE_LEVEL
            if b not in self.blocks:
                self._block(b)
            levels = self.blocks[b]
            return levels[level][idx - (b << (TILE_LEVEL - level))]
        h = self.tiles.get((level, idx))
        if h is None and (level, idx) not in self.fetched:
            self.prefetch([(level, idx)])
            h = self.tiles.get((level, idx))
        if h is None:
            h = self._recover(level, idx)
        return h

    def _recover(self, level: int, idx: int) -> bytes:
        """Compute a missing perfect node (level >= TILE_LEVEL) from the stored tiles below
        it and, where those are missing too, from the ledger leaves (read in bulk)."""
        if (idx + 1) << level > self.size:
            raise ValueError(f"node ({level}, {idx}) is not inside a tree of size {self.size}")
        self._fetch([(lv, idx << (level - lv), (idx + 1) << (level - lv)) for lv in range(TILE_LEVEL, level)])
        blocks: list[int] = []
        stack = [(level, idx)]
        while stack:
            lv, i = stack.pop()
            if (lv, i) in self.tiles:
                continue
            if lv == TILE_LEVEL:
                blocks.append(i)
            else:
                stack.extend(((lv - 1, 2 * i + 1), (lv - 1, 2 * i)))
        blocks.sort()
        for i in range(0, len(blocks), 4096):
            chunk = blocks[i : i + 4096]
            self._read_blocks(chunk)
            for b in chunk:
                h = self.blocks.pop(b)[-1][0]
                self.tiles[(TILE_LEVEL, b)] = h
                self.new_tiles[(TILE_LEVEL, b)] = h
        return self._compute(level, idx)

    def _compute(self, level: int, idx: int) -> bytes:
        h = self.tiles.get((level, idx))
        if h is not None:
            return h
        if level == TILE_LEVEL:
            self._read_blocks([idx])
            h = self.blocks[idx][-1][0]
        else:
            h = merkle.node_hash(self._compute(level - 1, 2 * idx), self._compute(level - 1, 2 * idx + 1))
        self.tiles[(level, idx)] = h
        self.new_tiles[(level, idx)] = h
        return h

    def store_new(self) -> None:
        if self.use_tiles and self.new_tiles:
            nodes = [(lv, i, h) for (lv, i), h in sorted(self.new_tiles.items())]
            self.new_tiles = {}
            write_tiles(self.lake, nodes, lock=True)


def _needed(fn) -> list[tuple[int, int]]:
    """The node ids a *_proof_from call asks for (dry run with dummy hashes)."""
    ids: list[tuple[int, int]] = []

    def rec(level: int, idx: int) -> bytes:
        ids.append((level, idx))
        return bytes(32)

    fn(rec)
    return ids


def backfill_tiles(lake: Lake, size: int | None = None) -> int:
    """Compute and store every missing tile of the tree of `size` (default: the latest
    checkpoint); for lakes written before tiles existed. Returns the number stored."""
    cp = latest_checkpoint(lake)
    size = size if size is not None else (cp["tree_size"] if cp else 0)
    nodes = TreeNodes(lake, size)
    for level, idx, _ in merkle.Frontier(size, (bytes(32),) * bin(size).count("1")).nodes():
        if level >= TILE_LEVEL:
            nodes.get(level, idx)
    n = len(nodes.new_tiles)
    nodes.store_new()
    return n


# ============================================================================ building proofs
def latest_checkpoint(lake: Lake) -> dict | None:
    rows = read_checkpoints(lake, latest=True)
    return rows[-1] if rows else None


def _cp_dict(row: dict) -> dict:
    cp = Checkpoint.from_dict(row)
    return cp.to_dict()


def _public_key_for(lake: Lake, key_id: str) -> str:
    from .lake.meta import open_lake_keys

    pub = open_lake_keys(lake).public_keys().get(key_id)
    if pub is None:
        raise ProofError(f"the keystore holds no signing key {key_id}")
    return pub


def _build(lake: Lake, size: int, fn, check, frontier: list[str] | None = None) -> list[bytes]:
    """Run a *_proof_from with tiles; if the result does not check, once more from leaves."""
    nodes = TreeNodes(lake, size)
    nodes.seed(frontier)
    nodes.prefetch(_needed(fn))
    proof = fn(nodes.get)
    if check(proof):
        nodes.store_new()
        return proof
    nodes = TreeNodes(lake, size, use_tiles=False, dt=nodes.dt)
    proof = fn(nodes.get)
    if check(proof):
        print("auditlake: warning: stored tiles disagree with the ledger; the proof was rebuilt from leaves "
              "(run `auditlake verify`)", file=sys.stderr)
        return proof
    raise ProofError("the ledger does not match its signed checkpoint; run `auditlake verify`")


def inclusion_proof(lake: Lake, event_id: str) -> dict:
    """The inclusion proof document of one event against the latest signed checkpoint."""
    event_id = str(event_id).strip().lower()
    hit, covered = _indexed_event(lake, event_id)
    dt = None
    if hit is not None:
        seq, file = hit
    else:  # not indexed (yet): the ledger table is needed
        dt = lake.latest("ledger")
        seq, file = _locate_unindexed(lake, event_id, covered, dt), None
    if seq is None:
        raise AuditlakeError(f"no event {event_id} in the ledger")
    rows = read_checkpoints(lake, latest=True)
    if not rows or rows[-1]["tree_size"] <= seq:
        raise AuditlakeError(f"event {event_id} (seq {seq}) is not yet covered by a signed checkpoint; run ingest")
    row = rows[-1]
    cp = _cp_dict(row)
    size = cp["tree_size"]
    root = bytes.fromhex(cp["root"])
    update_leaf_index(lake, size, dt)
    update_tile_cache(lake, size)
    nodes = TreeNodes(lake, size, dt=dt)
    nodes.seed(row.get("frontier"))
    leaf = nodes.leaf(seq, file)
    if orjson.loads(leaf).get("event_id") != event_id:  # a stale or forged index entry
        seq = scan_event(lake, event_id, nodes.dt)
        if seq is None or seq >= size:
            raise AuditlakeError(f"no event {event_id} covered by the latest checkpoint")
        nodes = TreeNodes(lake, size, dt=nodes.dt)
        nodes.seed(row.get("frontier"))
        leaf = nodes.leaf(seq)
    lh = merkle.leaf_hash(leaf)
    fn = lambda get: merkle.inclusion_proof_from(seq, size, get)  # noqa: E731
    # Reuse the block already read for the leaf.
    nodes.prefetch(_needed(fn))
    proof = fn(nodes.get)
    if merkle.verify_inclusion(lh, seq, size, proof, root):
        nodes.store_new()
    else:
        proof = _build(lake, size, fn, lambda p: merkle.verify_inclusion(lh, seq, size, p, root))
    doc = {
        "type": "inclusion",
        "version": PROOF_VERSION,
        "log_id": cp["log_id"],
        "event_id": event_id,
        "leaf": leaf.decode(),
        "leaf_b64": base64.b64encode(leaf).decode(),
        "leaf_index": seq,
        "tree_size": size,
        "root": cp["root"],
        "proof": [h.hex() for h in proof],
        "checkpoint": cp,
        "public_key": _public_key_for(lake, cp["key_id"]),
    }
    ok, reason = verify_proof_doc(doc)
    if not ok:
        raise ProofError(f"the proof for {event_id} does not verify: {reason}; run `auditlake verify`")
    return doc


def consistency_proof(lake: Lake, old_size: int, new_size: int) -> dict:
    """A consistency proof between the signed checkpoints of these two tree sizes."""
    if old_size > new_size:
        raise AuditlakeError(f"the old tree size {old_size} is larger than the new one {new_size}")
    rows = read_checkpoints(lake, sizes=[old_size, new_size])
    by_size = {r["tree_size"]: r for r in rows}
    for s in (old_size, new_size):
        if s not in by_size:
            sizes = [r["tree_size"] for r in read_checkpoints(lake)]
            shown = ", ".join(map(str, sizes[-10:])) + (" ..." if len(sizes) > 10 else "")
            raise AuditlakeError(f"no signed checkpoint of tree size {s} (checkpoints: {shown or 'none'})")
    old, new = _cp_dict(by_size[old_size]), _cp_dict(by_size[new_size])
    r_old, r_new = bytes.fromhex(old["root"]), bytes.fromhex(new["root"])
    fn = lambda get: merkle.consistency_proof_from(old_size, new_size, get)  # noqa: E731
    proof = _build(lake, new_size, fn, lambda p: merkle.verify_consistency(old_size, new_size, r_old, r_new, p),
                   by_size[new_size].get("frontier"))
    keys = {old["key_id"]: _public_key_for(lake, old["key_id"]), new["key_id"]: _public_key_for(lake, new["key_id"])}
    doc = {
        "type": "consistency",
        "version": PROOF_VERSION,
        "log_id": new["log_id"],
        "old": old,
        "new": new,
        "proof": [h.hex() for h in proof],
        "public_key": keys[new["key_id"]],
    }
    if old["key_id"] != new["key_id"]:
        doc["public_keys"] = keys
    ok, reason = verify_proof_doc(doc)
    if not ok:
        raise ProofError(f"the consistency proof does not verify: {reason}; run `auditlake verify`")
    return doc


# ============================================================================ verifying proofs
class PinnedKeys(dict):
    """{key_id: b64} an offline check trusts, with what the key file says of them: the log
    they sign for (None: not said) and, per retired key, the tree size from which a newer
    key signed (a checkpoint it signs at that size or later is forged: a retired key,
    leaked or kept, extends nothing)."""

    def __init__(self, keys: dict[str, str], log_id: str | None = None, retired_at: dict[str, int] | None = None):
        super().__init__(keys)
        self.log_id = log_id
        self.retired_at = dict(retired_at or {})


def key_retirements(lake: Lake, keys) -> dict[str, int]:
    """{key_id: the smallest tree size a newer signing key signed a checkpoint at}, from the
    lake's checkpoints whose signatures verify (verify's `retired_key` rule, for offline use)."""
    public = keys.public_keys()
    order = {kid: i for i, kid in enumerate(public)}  # oldest first
    first: dict[str, int] = {}  # key -> the smallest tree size it signed at
    for row in read_checkpoints(lake):
        kid = row.get("key_id")
        if kid not in order or kid in first:
            continue
        try:
            cp = Checkpoint(**{k: row[k] for k in (*SIGNED_FIELDS, "signature")})
        except (KeyError, TypeError):
            continue
        if cp.signature_valid(load_public_key(public[kid])):
            first[kid] = cp.tree_size
    out = {}
    for kid, age in order.items():
        later = [size for k, size in first.items() if order[k] > age]
        if later:
            out[kid] = min(later)
    return out


def public_key_document(lake: Lake, keys) -> dict:
    """What `auditlake keys export-public` writes: the log, its public keys (oldest first)
    and the retired keys' limits."""
    return {"log_id": keys.log_id, "public_keys": keys.public_keys(), "retired_at": key_retirements(lake, keys)}


def _key_map(public_key) -> dict[str, str]:
    """{key_id: b64} from a b64 string or a {key_id: b64} mapping."""
    if public_key is None:
        return {}
    if isinstance(public_key, PinnedKeys):
        return public_key
    if isinstance(public_key, dict):
        return {str(k): str(v) for k, v in public_key.items()}
    pub = load_public_key(str(public_key).strip())
    return {signing_key_id(pub): public_key_b64(pub)}


def _check_checkpoint(d, label: str, pinned: dict[str, str], doc_keys: dict[str, str]) -> tuple[Checkpoint | None, str]:
    if not isinstance(d, dict):
        return None, f"{label} is missing or not an object"
    if "checkpoint_hash" not in d:
        return None, f"{label} has no checkpoint_hash"
    if unsigned := sorted(set(d) - {*SIGNED_FIELDS, "signature", "checkpoint_hash"}):
        # A reader could take such a field for part of what the lake signed.
        return None, f"{label} has fields no signature covers: {', '.join(map(str, unsigned))[:200]}"
    try:
        cp = Checkpoint.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"{label} is malformed: {exc}"
    if not (isinstance(cp.tree_size, int) and not isinstance(cp.tree_size, bool) and cp.tree_size >= 0):
        return None, f"{label} tree_size is not a non-negative integer"
    if not (isinstance(cp.root, str) and _HEX64.fullmatch(cp.root)):
        return None, f"{label} root is not 64 lowercase hex digits"
    keys = pinned or doc_keys
    b64 = keys.get(cp.key_id)
    if b64 is None:
        whose = "the pinned public key" if pinned else "the proof's public key"
        return None, f"{label} is signed with key {cp.key_id}, not {whose}"
    try:
        pub = load_public_key(b64)
    except (ValueError, binascii.Error, TypeError) as exc:
        return None, f"public key for {cp.key_id} is not a base64 Ed25519 key: {exc}"
    if signing_key_id(pub) != cp.key_id:
        return None, f"the public key does not have key id {cp.key_id}"
    if not cp.signature_valid(pub):
        return None, f"{label} signature does not verify with key {cp.key_id}"
    if why := pinned_limits(pinned, cp.log_id, cp.key_id, cp.tree_size):
        return None, f"{label} {why}"
    return cp, ""


def pinned_limits(pinned, log_id, key_id, tree_size) -> str:
    """Why a signature by `key_id` over something at `tree_size` of `log_id` is not one the
    pinned key file accepts ("" if it is)."""
    if not isinstance(pinned, PinnedKeys):
        return ""
    if pinned.log_id is not None and log_id != pinned.log_id:
        return f"is of log {str(log_id)[:80]}, the pinned keys are of log {pinned.log_id}"
    limit = pinned.retired_at.get(key_id)
    if limit is not None and isinstance(tree_size, int) and tree_size >= limit:
        return (f"(tree size {tree_size}) is signed with key {key_id}, which a newer key replaced at tree size "
                f"{limit}: a retired key extends nothing")
    return ""


def _hashes(proof) -> list[bytes] | None:
    if not isinstance(proof, list):
        return None
    out = []
    for h in proof:
        if not isinstance(h, str) or not _HEX64.fullmatch(h):
            return None
        out.append(bytes.fromhex(h))
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def verify_proof_doc(doc, public_key_b64=None) -> tuple[bool, str]:
    """Check an inclusion or consistency proof document offline: (valid, reason).

    `public_key_b64` pins trust: a base64 Ed25519 key or a {key_id: b64} mapping. Without
    it the document's own `public_key` is used (which proves integrity, not origin)."""
    try:
        pinned = _key_map(public_key_b64)
    except (ValueError, binascii.Error, TypeError) as exc:
        return False, f"the pinned public key is not a base64 Ed25519 key: {exc}"
    if public_key_b64 is not None and not pinned:  # pinned to no key: nothing verifies
        return False, "the pinned key set holds no public key"
    if not isinstance(doc, dict):
        return False, "the proof is not a JSON object"
    if doc.get("version") != PROOF_VERSION:
        return False, f"unsupported proof version {doc.get('version')!r}"
    doc_keys: dict[str, str] = {}
    try:
        if isinstance(doc.get("public_keys"), dict):
            doc_keys.update({str(k): str(v) for k, v in doc["public_keys"].items()})
        if doc.get("public_key") is not None:
            own = _key_map(doc["public_key"])
            for kid, b64 in own.items():
                if kid in doc_keys and doc_keys[kid] != b64:
                    return False, "public_key and public_keys disagree"
            doc_keys.update(own)
    except (ValueError, binascii.Error, TypeError) as exc:
        return False, f"the proof's public key is not a base64 Ed25519 key: {exc}"
    if not pinned and not doc_keys:
        return False, "no public key: the proof carries none and none was given"
    if pinned and (differ := sorted(kid for kid, b64 in doc_keys.items() if pinned.get(kid) != b64)):
        return False, f"the proof declares a public key for {differ[0][:80]} that is not the pinned one"
    trust = "pinned key" if pinned else "the proof's own key (not pinned; pass --public-key to pin one)"
    kind = doc.get("type")
    if kind == "inclusion":
        ok, reason = _verify_inclusion_doc(doc, pinned, doc_keys)
    elif kind == "consistency":
        ok, reason = _verify_consistency_doc(doc, pinned, doc_keys)
    else:
        return False, f"unknown proof type {kind!r}"
    return ok, (f"{reason}; signature checked with {trust}" if ok else reason)


def _verify_inclusion_doc(doc: dict, pinned, doc_keys) -> tuple[bool, str]:
    for name in ("event_id", "leaf", "leaf_b64", "root", "log_id"):
        if not isinstance(doc.get(name), str):
            return False, f"{name} is missing or not a string"
    for name in ("leaf_index", "tree_size"):
        if not _is_int(doc.get(name)) or doc[name] < 0:
            return False, f"{name} is missing or not a non-negative integer"
    leaf = doc["leaf"].encode()
    try:
        if base64.b64decode(doc["leaf_b64"], validate=True) != leaf:
            return False, "leaf and leaf_b64 differ"
    except (binascii.Error, ValueError):
        return False, "leaf_b64 is not base64"
    try:
        record = orjson.loads(leaf)
    except orjson.JSONDecodeError:
        return False, "leaf is not JSON"
    if not isinstance(record, dict):
        return False, "leaf is not a JSON object"
    if record.get("event_id") != doc["event_id"]:
        return False, "the leaf is not the record of event_id"
    if record.get("seq") != doc["leaf_index"]:
        return False, "the leaf's seq is not leaf_index"
    proof = _hashes(doc.get("proof"))
    if proof is None:
        return False, "proof is not a list of 64-digit lowercase hex hashes"
    cp, why = _check_checkpoint(doc.get("checkpoint"), "checkpoint", pinned, doc_keys)
    if cp is None:
        return False, why
    if cp.log_id != doc["log_id"]:
        return False, "log_id differs from the checkpoint's"
    if cp.tree_size != doc["tree_size"]:
        return False, "tree_size differs from the checkpoint's"
    if cp.root != doc["root"]:
        return False, "root differs from the checkpoint's"
    if doc["leaf_index"] >= doc["tree_size"]:
        return False, "leaf_index is outside the tree"
    if not merkle.verify_inclusion(merkle.leaf_hash(leaf), doc["leaf_index"], doc["tree_size"], proof, bytes.fromhex(cp.root)):
        return False, "the audit path does not lead from the leaf to the signed root"
    return True, (f"event {doc['event_id']} is leaf {doc['leaf_index']} of the signed tree of size "
                  f"{doc['tree_size']} (log {cp.log_id}, root {cp.root[:16]}..., key {cp.key_id})")


def _verify_consistency_doc(doc: dict, pinned, doc_keys) -> tuple[bool, str]:
    if not isinstance(doc.get("log_id"), str):
        return False, "log_id is missing or not a string"
    old, why = _check_checkpoint(doc.get("old"), "old checkpoint", pinned, doc_keys)
    if old is None:
        return False, why
    new, why = _check_checkpoint(doc.get("new"), "new checkpoint", pinned, doc_keys)
    if new is None:
        return False, why
    if not (old.log_id == new.log_id == doc["log_id"]):
        return False, "the checkpoints belong to different logs"
    proof = _hashes(doc.get("proof"))
    if proof is None:
        return False, "proof is not a list of 64-digit lowercase hex hashes"
    if old.tree_size > new.tree_size:
        return False, "the old checkpoint is larger than the new one"
    if not merkle.verify_consistency(old.tree_size, new.tree_size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof):
        return False, "the consistency path does not show the new tree extends the old one"
    return True, (f"the signed tree of size {new.tree_size} (root {new.root[:16]}...) is an append-only extension "
                  f"of the signed tree of size {old.tree_size} (root {old.root[:16]}...)")


# ============================================================================ public key files
def pinned_public_keys(args) -> dict[str, str]:
    """The public keys an offline check trusts: --public-key's, else those of the lake named by
    --lake or AUDITLAKE_LAKE, else of ./lake if there is one (every command's default lake).
    Without any, or without that lake's keystore here (open_lake_keys never makes one for a
    reader), AuditlakeError: a document checked against the key it carries itself proves
    nothing about who made it."""
    from .lake.meta import META, open_lake_keys

    if args.public_key:
        return load_public_key_file(args.public_key)
    named = getattr(args, "lake", None) or os.environ.get("AUDITLAKE_LAKE")
    if not named and Path("lake", META).is_file():
        named = "./lake"
    if not named:
        raise AuditlakeError("no public key to check the signature with: pass --public-key FILE "
                             "(from `auditlake keys export-public` on the lake's host)")
    lake = Lake.open(named)
    doc = public_key_document(lake, open_lake_keys(lake))
    return PinnedKeys(doc["public_keys"], doc["log_id"], doc["retired_at"])


_SIGNED_DOCUMENT_FIELDS = {"signature", "checkpoint", "proof", "files", "old", "new"}


def load_public_key_file(path: str) -> dict[str, str]:
    """{key_id: b64} from `auditlake keys export-public` JSON, {"public_key": b64}, a bare
    base64 key, or a PEM SubjectPublicKeyInfo."""
    from .inputs import read_document

    try:
        text = read_document(path, "the public key file", 1 << 20).decode().strip()
    except UnicodeDecodeError as exc:
        raise AuditlakeError(f"cannot read the public key file {path}: {exc}") from exc
    try:
        if text.startswith("{"):
            d = json.loads(text)
            if _SIGNED_DOCUMENT_FIELDS & d.keys():
                # A proof or a bundle's manifest carries its own key: pinned, it would vouch for itself.
                raise ValueError("it is a signed document (a proof or an export manifest), not a key file; "
                                 "take the key from `auditlake keys export-public` on the lake's host")
            if isinstance(d.get("public_keys"), dict):
                if not d["public_keys"]:  # pinned to nothing must not read as "not pinned"
                    raise ValueError("its public_keys are empty")
                log_id, retired = d.get("log_id"), d.get("retired_at") or {}
                if log_id is not None and not isinstance(log_id, str):
                    raise ValueError("its log_id is not a string")
                if not (isinstance(retired, dict) and all(type(v) is int for v in retired.values())):
                    raise ValueError("its retired_at is not a map of key ids to tree sizes")
                return PinnedKeys({str(k): str(v) for k, v in d["public_keys"].items()}, log_id,
                                  {str(k): v for k, v in retired.items()})
            if isinstance(d.get("public_key"), str):
                return _key_map(d["public_key"])
            raise ValueError("no public_keys or public_key in it")
        if text.startswith("-----BEGIN"):
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            key = load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return {signing_key_id(key): public_key_b64(key)}
        return _key_map(text)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise AuditlakeError(f"{path} is not a public key file: {exc}") from exc


# ============================================================================ CLI
def cli_prove(args) -> int:
    from .cli import emit, fail

    from .lake.meta import read_meta

    lake = Lake.open(args.lake)
    read_meta(lake)  # "no lake at", not "no event" on a mistyped path
    try:
        if args.consistency:
            old, new = args.consistency
            doc = consistency_proof(lake, old, new)
            what = f"consistency proof {old} -> {new}"
        elif args.event_id:
            doc = inclusion_proof(lake, args.event_id)
            what = f"inclusion proof of {doc['event_id']} (leaf {doc['leaf_index']} of {doc['tree_size']})"
        else:
            raise AuditlakeError("prove needs an EVENT_ID or --consistency OLD NEW")
    except ProofError as exc:
        fail(str(exc), args.json)
        return 1
    text = json.dumps(doc, indent=2)
    if args.out:
        lake.refuse_output_inside(args.out, "the proof file")
        try:
            Path(args.out).write_text(text + "\n")
        except OSError as exc:
            raise AuditlakeError(f"cannot write {args.out}: {exc}") from exc
        emit(args, f"wrote the {what} to {args.out}", doc)
    else:
        emit(args, text, doc)
    return 0


def cli_verify_proof(args) -> int:
    from .cli import emit

    from .inputs import read_document

    raw = read_document(args.file, "the proof")
    pinned = pinned_public_keys(args)
    try:
        doc, repeated = loads_noting_repeats(raw)
    except (ValueError, UnicodeError, RecursionError) as exc:  # a damaged proof, as any other: not valid
        doc, repeated, ok, reason = None, [], False, f"{args.file} is not JSON: {str(exc)[:200] or exc.__class__.__name__}"
    else:
        try:
            ok, reason = verify_proof_doc(doc, pinned)
        except (TypeError, AttributeError, ValueError, KeyError, RecursionError, UnicodeError) as exc:
            ok, reason = False, f"the proof is malformed ({exc.__class__.__name__}: {str(exc)[:200]})"
    if ok and repeated:
        ok, reason = False, f"the proof repeats the key(s) {', '.join(sorted(set(repeated)))}"
    kind = doc.get("type") if isinstance(doc, dict) else None
    emit(args, f"{'valid' if ok else 'INVALID'}: {reason}", {"ok": ok, "type": kind, "reason": reason, "pinned": bool(pinned)})
    return 0 if ok else 1
