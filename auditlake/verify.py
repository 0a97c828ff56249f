"""Full verification of a lake: Delta history, data files, rows, chain, Merkle roots,
signed checkpoints and the trusted checkpoint (docs/LEDGER.md section 8).

The rows are read in one batched scan in no particular order (pyarrow's parallel Parquet
reader; an S3 lake is first copied into a DuckDB table). Each row's HMAC is checked against
the stored hash of the position before it, so no sort of the wide rows is needed. Two
threads check batches side by side: the batch hasher (_sha256.c: OpenSSL over the arrow
buffers, GIL released) computes the HMACs and leaf hashes, and the record matcher
(_records.c) compares each row's columns with its sealed record as text; only the rows it
does not clear are parsed as JSON, by DuckDB, to name the changed field. Per position only
flat numpy arrays are kept (seq, first stored hash, leaf hash: about a hundred bytes per
event, no Python object per row), and the Merkle roots the checkpoints need come from the
leaf hashes through a frontier, which holds O(log n) hashes.
"""
from __future__ import annotations

import binascii
import fcntl
import json
import os
import posixpath
import re
import secrets
import stat
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import _records
from .catalog import catalog_problems
from .errors import AuditlakeError
from .keys import KeyStore, load_public_key, trust_dir, write_private
from .lake import retention, tables
from .lake.meta import meta_or_none, open_lake_keys
from .lake.store import AUDIT_DIR, HOLDS_DIR, Lake
from .ledger import chain, merkle, packed
from .ledger.checkpoint import SIGNED_FIELDS, ZERO_HASH, Checkpoint
from .ledger.canonical import MAX_EXACT_INT
from .ledger.commits import SIGNATURE as COMMIT_SIGNATURE

FINDINGS_PER_KIND = 50
GENESIS_HEX = ZERO_HASH
# The ledger's projection columns and the path of the same value in the sealed record.
PROJECTION = {
    "event_id": "$.event_id",
    "event_type": "$.event_type",
    "source": "$.source",
    "tenant_id": "$.tenant_id",
    "actor_type": "$.actor.type",
    "actor_id": "$.actor.id",
    "actor_role": "$.actor.role",
    "actor_ip_sealed": "$.actor.ip",
    "subject_id": "$.subject.id",
    "subject_country": "$.subject.country",
    "subject_region": "$.subject.region",
    "subject_timezone": "$.subject.timezone",
    "subject_pii_sealed": "$.subject.pii",
    "phone_bidx": "$.subject.phone_bidx",
    "pii_fields": "$.pii_fields",
    "lawful_basis": "$.lawful_basis",
}


@dataclass
class Finding:
    kind: str
    table: str
    detail: str
    partition: str | None = None
    file: str | None = None
    seq: int | None = None
    event_id: str | None = None


CATALOG_CHANGED = "catalog_changed"


@dataclass
class VerifyReport:
    ok: bool = True
    events: int = 0
    findings: list[Finding] = field(default_factory=list)
    tree_size: int = 0
    root: str = ""
    checkpoints: int = 0
    unsealed_tail: int = 0
    trusted_tree_size: int | None = None
    duration_s: float = 0.0

    @property
    def ledger_ok(self) -> bool:
        """No finding about the sealed record (a changed catalog file is derived from it and
        rebuilt by `auditlake catalog`). The trust store still advances only on a pass with
        no finding at all (`ok`)."""
        return all(f.kind == CATALOG_CHANGED for f in self.findings)

    def add(self, kind: str, table: str, detail: str, **where) -> None:
        if sum(1 for f in self.findings if f.kind == kind) < FINDINGS_PER_KIND:
            self.findings.append(Finding(kind, table, detail, **where))
        self.ok = False

    def to_dict(self) -> dict:
        return {
            "ok": not self.findings,
            "events": self.events,
            "findings": [asdict(f) for f in self.findings],
            "tree_size": self.tree_size,
            "root": self.root,
            "checkpoints": self.checkpoints,
            "unsealed_tail": self.unsealed_tail,
            "trusted_tree_size": self.trusted_tree_size,
            "duration_s": round(self.duration_s, 3),
        }


# ----------------------------------------------------------------------------- Delta log
def _list(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    try:
        return [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File]
    except FileNotFoundError:
        return []


def check_history(lake: Lake, name: str, report: VerifyReport, keys: KeyStore) -> dict[str, dict] | None:
    """Replay the table's _delta_log: only blind appends, appendOnly from version 0, no gaps,
    each commit signed where the table's commits are (see _check_signed_commits). Returns
    the live data files {relative path: add action} or None if there is no table."""
    fs, root = lake.filesystem()
    table_path = f"{root}/tables/{name}"
    log_path = f"{table_path}/_delta_log"
    entries = _list(fs, log_path)
    if not entries:
        return None
    versions = []
    for i in entries:
        rel = posixpath.relpath(i.path, log_path)
        if m := retention.LOG_RE.match(rel):
            versions.append(int(m.group(1)))
        elif not (retention.CHECKPOINT_RE.match(rel) or rel == "_last_checkpoint" or retention.STAGING_RE.search(rel)):
            report.add("data_file_inserted", name, "a file in the Delta log that no commit or checkpoint makes",
                       file=f"_delta_log/{rel}")
    versions.sort()
    if not versions or versions[0] != 0:
        report.add("history_missing", name, "the Delta log does not start at version 0")
    for a, b in zip(versions, versions[1:]):
        if b != a + 1:
            report.add("history_missing", name, f"Delta log versions {a + 1}..{b - 1} are missing")
    live: dict[str, dict] = {}
    added_in: dict[str, int] = {}  # by path as stored: one file under two spellings of its path is read twice by other readers
    commits: dict[int, tuple[dict, list[tuple[str, dict]]]] = {}  # version -> (commitInfo, (path, partitionValues) it adds)
    for v in versions:
        fname = f"{log_path}/{v:020d}.json"
        with fs.open_input_stream(fname) as f:
            raw = f.read()
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            action = _action(line)
            if action is None:
                report.add("non_append_commit", name, f"version {v}: line {number} is not a Delta action",
                           file=f"_delta_log/{v:020d}.json")
                continue
            kind, body = action
            info, adds = commits.setdefault(v, ({}, []))
            if kind == "add":
                rel = _unquote(body["path"])
                adds.append((rel, body.get("partitionValues")))
                if why := _partition_values_problem(name, rel, body.get("partitionValues")):
                    report.add("changed_field", name, f"version {v}: {why}", file=rel, partition=_partition(rel))
                if rel in added_in:
                    report.add("non_append_commit", name, f"version {v} adds a file that version {added_in[rel]} added",
                               file=rel, partition=_partition(rel))
                else:
                    added_in[rel] = v
                    live[body["path"]] = body | {"version": v}
            elif kind == "commitInfo":
                info.update(body)
                params = body.get("operationParameters")
                op, mode = body.get("operation"), params.get("mode") if isinstance(params, dict) else None
                if not (op == "WRITE" and mode in ("Append", "ErrorIfExists" if v == 0 else "Append")):
                    report.add("non_append_commit", name, f"version {v} is {op} {mode or ''}".strip())
            elif kind == "metaData":
                conf = body.get("configuration") if isinstance(body.get("configuration"), dict) else {}
                if v != 0:
                    report.add("table_property_changed", name, f"version {v} rewrites the table metadata")
                if conf.get("delta.appendOnly") != "true":
                    report.add("table_property_changed", name, f"version {v}: delta.appendOnly is not true")
            elif kind == "protocol" and v != 0:
                report.add("table_property_changed", name, f"version {v} changes the protocol")
            elif kind in ("remove", "cdc", "domainMetadata"):
                report.add("non_append_commit", name, f"version {v} has a {kind} action")
    # Files on storage must be exactly the ones the log added, with their recorded sizes.
    on_disk = {
        posixpath.relpath(i.path, table_path): i.size
        for i in _list(fs, table_path)
        if posixpath.relpath(i.path, table_path).split("/", 1)[0] != "_delta_log"  # not _delta_log_old/ or _delta_logx
    }
    for path, add in live.items():
        rel = _unquote(path)
        partition = _partition(rel)
        if rel not in on_disk:
            report.add("data_file_removed", name, "a committed data file is missing", partition=partition, file=rel)
        elif on_disk[rel] != add["size"]:
            report.add("data_file_replaced", name, f"size {on_disk[rel]} != committed {add['size']}", partition=partition, file=rel)
    for rel, why in sorted(retention.checkpoint_problems(lake, name, retention.list_log(lake, name), cache=False).items()):
        report.add("history_forged", name, why, file=rel.split("/", 2)[2])  # table-relative, as the other findings
    committed = {_unquote(p) for p in live}
    for rel in sorted(set(on_disk) - committed):
        report.add("data_file_inserted", name, "a data file that no commit added", file=rel,
                   partition=_partition(rel))
    if name in tables.SIGNED_COMMITS:
        _check_signed_commits(lake, name, commits, keys, report)
    elif name in ("ledger", "checkpoints"):  # each commit the lake makes there adds rows
        for v, (_info, adds) in sorted(commits.items()):
            if not adds:
                report.add("non_append_commit", name, f"version {v} adds no rows: no commit the lake makes",
                           file=f"_delta_log/{v:020d}.json")
    return {_unquote(p): a for p, a in live.items()}


def _partition_values_problem(name: str, rel: str, values) -> str:
    """Readers take a partitioned file's column from its add action's partitionValues, the
    rows' checks from the folder: the two must agree ("" if they do)."""
    columns = tables.PARTITIONS.get(name)
    if not columns:
        return ""
    folder = dict(part.split("=", 1) for part in rel.split("/")[:-1] if "=" in part)
    want = {c: _unquote(folder.get(c, "")) for c in columns}
    if not isinstance(values, dict) or {c: values.get(c) for c in columns} != want:
        return f"its add action gives the rows {str(values)[:120]}, its folder {want}"
    return ""


def _check_signed_commits(lake: Lake, name: str, commits: dict[int, tuple[dict, list[tuple[str, dict]]]], keys: KeyStore,
                          report: VerifyReport) -> None:
    """Each commit carries the lake's signature of the rows it adds (ledger.commits): one
    without it was not made by the lake (a forged findings evaluation, an ingest log row
    that would make ingest skip a landing file), one whose rows differ had a file swapped."""
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    signed_before = False
    for v, (info, adds) in sorted(commits.items()):
        # Tiles were signed from commit 71bf81c on: the unsigned commits before a lake's first
        # signed one are a lake's made earlier (a cache that proofs check anyway), not forged.
        legacy = name == "tiles" and not signed_before and COMMIT_SIGNATURE not in info
        if why := tables.commit_signature_problem(lake, name, v, info, adds, public, keys.log_id):
            if not legacy:
                report.add("unsigned_commit", name, why, file=f"_delta_log/{v:020d}.json")
        else:
            signed_before = True


def _action(line: bytes) -> tuple[str, dict] | None:
    """A log line's (kind, body): one JSON object holding one action object (an add with a
    path and a size); None for anything else."""
    try:
        action = json.loads(line)
    except ValueError:  # also not UTF-8
        return None
    if not isinstance(action, dict) or len(action) != 1:
        return None
    kind, body = next(iter(action.items()))
    if not isinstance(body, dict):
        return None
    if kind == "add" and not (isinstance(body.get("path"), str) and isinstance(body.get("size"), int)):
        return None
    return kind, body


def _table_relative(table: str, rel: str | None) -> str | None:
    """A lake-relative path of a table's file as every finding names it: relative to the
    table's folder (the lake's other files stay relative to the lake)."""
    prefix = f"tables/{table}/"
    return rel[len(prefix):] if rel and rel.startswith(prefix) else rel


def _partition(rel: str | None) -> str | None:
    """A table-relative file's partition folder ("event_date=2026-03-01"), as every finding names it."""
    return rel.split("/")[0] if rel and "/" in rel else None


def _unquote(p: str) -> str:
    from urllib.parse import unquote

    return unquote(p)


# ----------------------------------------------------------------------------- ledger rows
def _ledger_files(lake: Lake, live: dict[str, dict], report: VerifyReport) -> tuple[list[str], pafs.FileSystem, int]:
    """The readable committed ledger files of the ledger's columns and their rows in all; row
    counts checked against the log's stats. A file of other columns or types is reported and
    left out (its rows are then missing)."""
    fs, root = lake.filesystem()
    paths, total = [], 0
    for rel, add in sorted(live.items()):
        path = f"{root}/tables/ledger/{rel}"
        try:
            parquet = pq.ParquetFile(fs.open_input_file(path))
            rows = parquet.metadata.num_rows
            if problem := _schema_problem(parquet.schema_arrow):
                report.add("data_file_replaced", "ledger", f"not a ledger file: {problem}", file=rel,
                           partition=_partition(rel))
                continue
        except FileNotFoundError:
            continue  # reported by check_history
        except (OSError, ValueError) as exc:  # ValueError: also a name that is not UTF-8
            # Gone is check_history's finding; a message's words ("magic bytes not found") are not.
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                report.add("data_file_replaced", "ledger", f"unreadable: {str(exc)[:120]}", file=rel,
                           partition=_partition(rel))
            continue
        try:
            stats = json.loads(add.get("stats") or "{}")
        except (TypeError, ValueError):
            stats = {}  # the log's own check reports a malformed add
        if isinstance(stats, dict) and "numRecords" in stats and stats["numRecords"] != rows:
            report.add("data_file_replaced", "ledger", f"{rows} rows != committed {stats['numRecords']}", file=rel,
                       partition=_partition(rel))
        paths.append(path)
        total += rows
    return paths, fs, total


_LEDGER_COLUMNS = {f.name: f.type for f in tables.LEDGER if f.name != "event_date"}  # event_date: the path


def _schema_problem(schema: pa.Schema) -> str | None:
    """How a data file's columns differ from the ledger's, or None."""
    got = {f.name: f.type for f in schema}
    if missing := sorted(set(_LEDGER_COLUMNS) - set(got)):
        return f"no column {missing[0]}"
    if extra := sorted(set(got) - set(_LEDGER_COLUMNS)):
        return f"a column {extra[0]} the ledger does not have"
    if wrong := [n for n, t in _LEDGER_COLUMNS.items() if got[n] != t]:
        return f"column {wrong[0]} is {got[wrong[0]]}, not {_LEDGER_COLUMNS[wrong[0]]}"
    return None


def _unreadable_files(paths: list[str], fs: pafs.FileSystem) -> dict[str, str]:
    """{path: why} of the ledger files that cannot be read in full, by pyarrow or, for a
    local file, by DuckDB (which reads some damage that pyarrow takes in its stride: a
    changed byte in a page header)."""
    bad = {}
    con = duckdb.connect() if isinstance(fs, pafs.LocalFileSystem) else None
    for path in paths:
        try:
            pq.read_table(fs.open_input_file(path)).validate(full=True)  # full: strings must be UTF-8
            if con is not None:
                con.execute("SELECT * FROM read_parquet(?)", [path]).to_arrow_table()
        except (OSError, pa.ArrowException, duckdb.Error) as exc:
            bad[path] = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    if con is not None:
        con.close()
    return bad


def _check_unsequenced(report: VerifyReport, paths: list[str], fs: pafs.FileSystem, root: str) -> None:
    """Rows with no seq or a negative one, which the full pass does not select: each is
    outside the chain, as a row whose record's seq differs from its column (reordered_row).
    Only looked for when the files hold more rows than the checks read, so an untouched
    ledger is not read again."""
    prefix = f"{root}/tables/ledger/"
    found = 0
    for path in paths:
        rows = pq.read_table(fs.open_input_file(path), columns=["seq", "event_id"])
        seq = rows.column("seq")
        outside = rows.filter(pc.or_kleene(pc.is_null(seq), pc.less(seq, 0)))
        for seq, event_id in zip(outside.column("seq").to_pylist(), outside.column("event_id").to_pylist()):
            report.add("reordered_row", "ledger", f"a row with {'no seq' if seq is None else f'seq {seq}'}: outside the chain",
                       file=path[len(prefix):], event_id=event_id, partition=_partition(path[len(prefix):]))
            found += 1
            if found == FINDINGS_PER_KIND:
                return


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _load_ledger(con: duckdb.DuckDBPyConnection, paths: list[str], fs: pafs.FileSystem, root: str, start: int = 0) -> None:
    """Make `ledger` the rows with seq >= start (with their _file and event_date) and
    `ledger_below` the seq of the rows below. Local files stay views over DuckDB's parallel
    Parquet reader, so each check reads only the columns it needs; other filesystems (S3,
    which DuckDB cannot reach without httpfs) are streamed once into tables, which spill
    to disk past the memory limit. Not TEMP: the private in-memory database is shared by
    the connection's cursors."""
    base = pa.schema([f for f in tables.LEDGER if f.name != "event_date"])
    schema = base.append(pa.field("_file", pa.string())).append(pa.field("event_date", pa.string()))
    prefix = f"{root}/tables/ledger/"

    if paths and isinstance(fs, pafs.LocalFileSystem):
        files = f"[{', '.join(_sql_str(p) for p in paths)}]"
        con.execute(
            f"""CREATE VIEW ledger AS SELECT {', '.join(base.names)},
                   substr(filename, {len(prefix) + 1}) AS _file,
                   regexp_extract(filename, 'event_date=([^/]+)', 1) AS event_date
                FROM read_parquet({files}, filename = true, hive_partitioning = false) WHERE seq >= {int(start)}"""
        )
        con.execute(f"CREATE VIEW ledger_below AS SELECT seq FROM read_parquet({files}) WHERE seq < {int(start)}")
        return
    def batches(columns, flt):
        if not paths:
            return
        for fragment in pads.dataset(paths, schema=base, filesystem=fs, format="parquet").get_fragments():
            rel = fragment.path[len(prefix):]
            part = next((p.split("=", 1)[1] for p in rel.split("/") if p.startswith("event_date=")), None)
            for b in fragment.to_batches(columns=columns, filter=flt, batch_size=65_536):
                n = b.num_rows
                if columns == base.names:
                    b = pa.RecordBatch.from_arrays(
                        [*b.columns, pa.array([rel] * n, pa.string()), pa.array([part] * n, pa.string())], schema=schema
                    )
                yield b

    seq = pads.field("seq")
    con.register("ledger_src", pa.RecordBatchReader.from_batches(schema, batches(base.names, seq >= start)))
    con.execute("CREATE TABLE ledger AS SELECT * FROM ledger_src")
    con.unregister("ledger_src")
    below_schema = pa.schema([base.field("seq")])
    con.register("below_src", pa.RecordBatchReader.from_batches(below_schema, batches(["seq"], seq < start)))
    con.execute("CREATE TABLE ledger_below AS SELECT * FROM below_src")
    con.unregister("below_src")


class _Positions:
    """The distinct seq of the loaded rows in order, each with its first stored hash (the
    lowest, as a scan in (seq, hash) order meets it): the hash the next position chains
    from and the chain head a checkpoint at that size must carry. Flat numpy arrays, not
    Python objects per row, so memory stays small."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        n, lo, hi = con.execute("SELECT count(*), min(seq), max(seq) FROM ledger").fetchone()
        if n and lo is not None and hi - lo + 1 == n and self._placed(con, n, lo):
            return
        # Two narrow columns sorted in numpy: several times cheaper than DuckDB grouping
        # a million string hashes by seq.
        seqs, raws, odd, n = [], [], {}, 0
        for batch in self._read(con):
            raw, bad = _decode_hashes(batch.column(1))
            odd.update((n + i, h) for i, h in bad.items())
            seqs.append(batch.column(0).to_numpy())
            raws.append(raw)
            n += batch.num_rows
        seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        raw = np.concatenate(raws) if raws else np.zeros((0, 32), np.uint8)
        del seqs, raws
        order = np.argsort(seq, kind="stable")
        seq = seq[order]
        starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]]) if len(seq) else np.zeros(0, np.int64)
        self.seq = seq[starts]
        self.lo = None  # not lo..lo+n-1 each once: a position is found by search
        self.count = np.diff(np.r_[starts, len(seq)])
        self.raw = raw[order[starts]]
        self.odd = {p: odd[r] for p, r in enumerate(order[starts].tolist()) if r in odd} if odd else {}
        for p in np.flatnonzero(self.count > 1).tolist():
            rows = order[starts[p]:starts[p] + self.count[p]].tolist()
            self._set_first(p, [odd[r] if r in odd else raw[r].tobytes().hex() for r in rows])

    @staticmethod
    def _read(con: duckdb.DuckDBPyConnection):
        return con.execute("SELECT seq, hash FROM ledger").to_arrow_reader(1 << 20)

    def _placed(self, con: duckdb.DuckDBPyConnection, n: int, lo: int) -> bool:
        """The usual case, each seq of lo..lo+n-1 once: every row's hash is put in its place
        as it is read, so the only copy is the result. False on a repeated seq."""
        raw, placed, odd = np.zeros((n, 32), np.uint8), np.zeros(n, bool), {}
        for batch in self._read(con):
            at = batch.column(0).to_numpy() - lo
            placed[at] = True
            rows, bad = _decode_hashes(batch.column(1))
            raw[at] = rows
            odd.update((int(at[i]), h) for i, h in bad.items())
        if not placed.all():  # n rows in n places: a repeated seq leaves one empty
            return False
        self.seq = np.arange(lo, lo + n, dtype=np.int64)
        self.lo = lo
        self.count = np.broadcast_to(np.int64(1), n)  # every count is 1: no memory per event
        self.raw, self.odd = raw, odd
        return True

    def _set_first(self, p: int, hashes: list[str | None]) -> None:
        """A duplicated position's first hash: the lowest stored one (as SQL's min, NULLs last)."""
        first = min((h for h in hashes if h is not None), default=None)
        self.odd.pop(p, None)
        if first is not None and len(first) == 64 and _LOWER_HEX.fullmatch(first):
            self.raw[p] = np.frombuffer(bytes.fromhex(first), np.uint8)
        else:
            self.odd[p] = first

    def __len__(self) -> int:
        return len(self.seq)

    def index(self, seq: np.ndarray) -> np.ndarray:
        """Each read row's position index: with each seq of lo.. once, seq - lo (a seq outside
        them, were DuckDB and pyarrow to read a file differently, takes the search)."""
        at = seq - self.lo if self.lo is not None else None
        if at is None or (len(at) and (at.min() < 0 or at.max() >= len(self.seq))):
            at = np.searchsorted(self.seq, seq)
        return at

    def stored(self, i: int) -> str | None:
        """The first stored hash of position index i, as stored."""
        return self.odd[i] if i in self.odd else self.raw[i].tobytes().hex()

    def head(self, seq: int, default: str) -> str | None:
        i = int(np.searchsorted(self.seq, seq))
        return self.stored(i) if i < len(self.seq) and self.seq[i] == seq else default

    def prev_bytes(self, i: int) -> bytes | None:
        """Position i's first hash as the next position's HMAC input; None when there is no
        usable one (NULL or not hex), so the next row's link cannot be checked."""
        h = self.odd[i] if i in self.odd else self.raw[i].tobytes()
        if isinstance(h, str):
            try:
                h = bytes.fromhex(h)
            except ValueError:
                return None
        return h


def _decode_hashes(hashes: pa.Array) -> tuple[np.ndarray, dict[int, str | None]]:
    """Stored hex hashes as an (n, 32) byte matrix, and {index: value} of those that are not
    64 lowercase hex digits (or NULL), whose rows of the matrix are zero."""
    rows = _fixed_rows(hashes, 64)
    if rows is not None:
        text = rows.tobytes()
        try:
            raw = binascii.unhexlify(text)
        except binascii.Error:
            raw = None
        if raw is not None and binascii.hexlify(raw) == text:
            return np.frombuffer(raw, np.uint8).reshape(-1, 32), {}
    raw, odd = np.zeros((len(hashes), 32), np.uint8), {}
    for i, h in enumerate(hashes.to_pylist()):
        if h is not None and len(h) == 64 and _LOWER_HEX.fullmatch(h):
            raw[i] = np.frombuffer(bytes.fromhex(h), np.uint8)
        else:
            odd[i] = h
    return raw, odd


_LOWER_HEX = re.compile(r"[0-9a-f]*")


def _check_positions(con: duckdb.DuckDBPyConnection, pos: _Positions, report: VerifyReport, start: int) -> None:
    """Duplicated and missing seq (the rows below `start` are counted by the caller)."""
    report.events = int(pos.count.sum())
    dups = np.flatnonzero(pos.count > 1)[:FINDINGS_PER_KIND]
    if len(dups):
        seqs = pos.seq[dups].tolist()
        # The copy a later commit added is the duplicate (ledger_added: each file's commit).
        copies = {seq: (eid, f) for seq, eid, f in con.execute(
            """SELECT seq, arg_max(event_id, (coalesce(version, -1), _file)), arg_max(_file, (coalesce(version, -1), _file))
               FROM ledger LEFT JOIN ledger_added USING (_file)
               WHERE seq IN (SELECT unnest(?::BIGINT[])) GROUP BY seq""", [seqs]).fetchall()}
        for i, seq in zip(dups.tolist(), seqs):
            eid, f = copies.get(seq, (None, None))
            report.add("duplicate_row", "ledger", f"seq {seq} appears {pos.count[i]} times", seq=seq, event_id=eid,
                       file=f, partition=_partition(f) if f else None)
    if len(pos):
        for i in np.flatnonzero(np.diff(pos.seq) > 1)[:FINDINGS_PER_KIND].tolist():
            lo, hi = int(pos.seq[i]) + 1, int(pos.seq[i + 1]) - 1
            report.add("deleted_row", "ledger", f"seq {lo}..{hi} missing", seq=lo)
        if pos.seq[0] != start:
            report.add("deleted_row", "ledger", f"seq {start}..{pos.seq[0] - 1} missing", seq=start)


def _check_below(con: duckdb.DuckDBPyConnection, report: VerifyReport, start: int, rows_after: bool) -> int:
    """An incremental pass's rows before the trusted checkpoint, by their seq alone: each of
    0..start-1 exactly once (a count would miss a row deleted and another copied). One
    streaming pass compares the sum of a hash keyed afresh each run over the seqs with its
    sum over 0..start-1, in constant memory; only when they differ are the gaps and copies
    found and located (DuckDB, which spills), as a full pass reports them (a missing top with
    no row after it is the tail). Returns how many there are (rows with a negative seq are
    outside the chain, reported with those of no seq)."""
    salt = secrets.randbits(60)
    n, got = con.execute(f"SELECT count(*), sum(hash(seq + {salt})) FROM ledger_below WHERE seq >= 0").fetchone()
    want = con.execute(f"SELECT sum(hash(i + {salt})) FROM range({int(start)}) t(i)").fetchone()[0]
    if n == start and got == want:
        return n
    for s, k in con.execute(f"""SELECT seq, count(*) FROM ledger_below WHERE seq >= 0 GROUP BY seq HAVING count(*) > 1
                                ORDER BY seq LIMIT {FINDINGS_PER_KIND}""").fetchall():
        report.add("duplicate_row", "ledger", f"seq {s} appears {k} times", seq=s)
    gaps = con.execute(f"""
        WITH s AS (SELECT DISTINCT seq FROM ledger_below WHERE seq >= 0 UNION ALL SELECT -1 UNION ALL SELECT {int(start)}),
             n AS (SELECT seq, lead(seq) OVER (ORDER BY seq) AS nxt FROM s)
        SELECT seq + 1, nxt - 1 FROM n WHERE nxt > seq + 1 ORDER BY seq LIMIT {FINDINGS_PER_KIND}""").fetchall()
    for lo, hi in gaps:
        if hi == start - 1 and not rows_after:
            report.add("truncated_tail", "ledger", f"the trusted checkpoint covers {start} events but the ledger ends at seq {lo - 1}")
        else:
            report.add("deleted_row", "ledger", f"seq {lo}..{hi} missing", seq=lo)
    return n


def _fixed_rows(a: pa.Array, width: int) -> np.ndarray | None:
    """A string array's values as an (n, width) byte matrix if all are non-null and that long."""
    a = a.cast(pa.large_string())
    offsets = np.frombuffer(a.buffers()[1], np.int64, len(a) + 1, 8 * a.offset)
    if a.null_count or not (np.diff(offsets) == width).all():
        return None
    return np.frombuffer(a.buffers()[2], np.uint8, width * len(a), int(offsets[0])).reshape(-1, width)


class _EventIds:
    """Each position's event id as 64 bits (a canonical UUID's 36 bytes folded by XOR, read
    in place; any other id hashed whole): an event id at two positions (EVENTS.md: unique
    across the ledger) is one event sealed twice, and each link and record can be sound, so
    only this shows it. Equal fingerprints are compared exactly after the scan."""

    def __init__(self, pos: _Positions):
        self.pos = pos
        self.prints = np.zeros(len(pos), np.uint64)

    def add(self, seq: np.ndarray, ids: pa.Array) -> None:
        at = self.pos.index(seq)
        rows = _fixed_rows(ids, 36)
        if rows is not None:
            flat, n = rows.reshape(-1), len(rows)  # each id's bytes as four 8-byte words and a 4-byte one
            words = np.ndarray((n, 4), "<u8", flat, 0, (36, 8))
            tail = np.ndarray((n,), "<u4", flat, 32, (36,))
            self.prints[at] = np.bitwise_xor.reduce(words, axis=1) ^ tail
        else:
            self.prints[at] = np.array([hash(x) & 0xFFFF_FFFF_FFFF_FFFF for x in ids.to_pylist()], np.uint64)

    def report(self, con: duckdb.DuckDBPyConnection, report: VerifyReport) -> None:
        ordered = np.sort(self.prints)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if not len(repeated):
            return
        seqs = self.pos.seq[np.isin(self.prints, repeated)].tolist()
        twice = con.execute(
            f"""SELECT event_id, max(seq), arg_max(_file, seq) FROM ledger
                WHERE event_id IS NOT NULL AND seq IN (SELECT unnest(?::BIGINT[]))
                GROUP BY event_id HAVING min(seq) <> max(seq) ORDER BY 2 LIMIT {FINDINGS_PER_KIND}""", [seqs]).fetchall()
        for eid, seq, f in twice:  # located at the later copy
            report.add("duplicate_row", "ledger", f"event id {eid} is sealed at more than one position", seq=seq,
                       event_id=eid, file=f, partition=_partition(f) if f else None)


# The sealed record, parsed once per row by from_json into a struct `s`: much cheaper than
# a list of json_extract paths, and it agrees with json_extract_string (VARCHAR: a string
# unquoted, anything else as JSON text, null or missing as NULL) and json_extract (JSON).
def _record_type() -> str:
    record: dict = {"seq": "JSON", "data": "JSON", "occurred_at": "VARCHAR", "ingested_at": "VARCHAR"}
    for path in PROJECTION.values():
        *parents, name = path[2:].split(".")
        node = record
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = "VARCHAR"
    return json.dumps(record)


def _sealed(path: str) -> str:
    """The field of `s` at a PROJECTION path."""
    return "s" + "".join(f'."{p}"' for p in path[2:].split("."))


# try(): a leaf that is not JSON (or NULL) parses to NULL, a changed record, not an error.
_PARSED = f"(SELECT *, try(from_json(leaf, '{_record_type()}')) AS s FROM ledger)"
_UNREADABLE = "s IS NULL"
# Compared as text: a record seq of "7" or 7.4 is not the row's 7 (a cast would make it so).
_REORDERED = "s IS NOT NULL AND CAST(s.seq AS VARCHAR) IS DISTINCT FROM CAST(seq AS VARCHAR)"
_COLUMNS_BAD = [f"{_sealed(p)} IS DISTINCT FROM {c}" for c, p in PROJECTION.items()]
# Textually equal JSON is equal: json() (a parse each) only runs where the text differs; a
# data column that is not JSON differs.
_DATA_BAD = "CASE WHEN s.data::VARCHAR = data THEN false ELSE json(s.data) IS DISTINCT FROM try(json(data)) END"
# RFC 3339 allows a lower-case 't' and 'z', which DuckDB's cast does not read; a record
# time that does not parse at all is a changed field, not an error.
_TIME_BAD = ("(TRY_CAST(upper(s.occurred_at) AS TIMESTAMPTZ) IS DISTINCT FROM occurred_at "
             "OR strftime(occurred_at, '%Y-%m-%d') IS DISTINCT FROM event_date)")
_INGESTED_BAD = "TRY_CAST(upper(s.ingested_at) AS TIMESTAMPTZ) IS DISTINCT FROM ingested_at"
_CHANGED = " OR ".join([_UNREADABLE, *_COLUMNS_BAD, _DATA_BAD, _TIME_BAD, _INGESTED_BAD])


def _check_rows(con: duckdb.DuckDBPyConnection, keys: KeyStore, report: VerifyReport, source: tuple,
                start: int = 0, start_hash: str = ZERO_HASH) -> tuple[_Positions, memoryview]:
    """Row checks of the rows loaded (seq >= start, chained from start_hash): duplicated and
    missing seq, then one scan (see _scan; `source` is its (paths, filesystem)) for each
    row's chain link (see _Chain) and its sealed record against its seq and projection
    columns (see _Projection). Returns the positions and their leaf hashes in seq order.
    The reader fills the next batch in its own threads while two threads check batches."""
    projection = _Projection()
    pos = _Positions(con)
    _check_positions(con, pos, report, start)
    links = _Chain(keys, pos, start, start_hash)
    event_ids = _EventIds(pos)

    def check(item: tuple[pa.RecordBatch, np.ndarray]) -> None:
        batch, outside_partition = item
        seq = batch.column("seq").to_numpy()
        leaf = batch.column("leaf").cast(pa.large_binary()).fill_null(b"")  # as the C code reads it
        links.check(seq, batch.column("key_id"), batch.column("hash"), leaf)
        projection.check(seq, batch, leaf, outside_partition)
        event_ids.add(seq, batch.column("event_id"))

    # Two batches at a time: the hashing and matching release the GIL.
    with ThreadPoolExecutor(2) as pool:
        pending: deque = deque()
        for item in _scan(con, *source, start):
            pending.append(pool.submit(check, item))
            if len(pending) > 3:
                pending.popleft().result()
        for future in pending:
            future.result()
    links.note_retired()
    links.bad.report(con, report)
    projection.report(con, report)
    event_ids.report(con, report)
    return pos, memoryview(links.leaf_hashes.reshape(-1))  # no copy: 32 bytes per event


_SCAN_COLUMNS = ["seq", "key_id", "hash", "leaf", *PROJECTION, "data", "occurred_at", "ingested_at"]
# Columns with a few distinct values, read dictionary-encoded: no string per row to build.
_DICTIONARY_COLUMNS = ["key_id", "event_type", "source", "tenant_id", "actor_type", "actor_role", "subject_country",
                       "subject_region", "subject_timezone", "pii_fields", "lawful_basis"]
_SCAN_FILES = 32  # files per dataset scanned: bounds what it reads ahead
_EVENT_DATE = re.compile(r"event_date=([^/]+)")  # as the ledger view's regexp_extract


def _scan(con: duckdb.DuckDBPyConnection, paths: list[str], fs: pafs.FileSystem, start: int):
    """The rows with seq >= start in batches of _SCAN_COLUMNS, each with whether each row's
    occurred_at falls outside its file's event_date partition. Local files are read by
    pyarrow's parallel Parquet reader straight into arrow (several times cheaper than
    exporting DuckDB's rows to arrow); a copied (S3) ledger comes from its DuckDB table."""
    if not isinstance(fs, pafs.LocalFileSystem):
        cursor = con.cursor()
        reader = cursor.execute(
            f"""SELECT {', '.join(_SCAN_COLUMNS)}, strftime(occurred_at, '%Y-%m-%d') IS DISTINCT FROM event_date
                FROM ledger"""
        ).to_arrow_reader(65_536)
        for batch in reader:
            yield batch, batch.column(len(_SCAN_COLUMNS)).to_numpy(zero_copy_only=False)
        cursor.close()
        return
    if not paths:
        return
    # The dictionary columns typed as read: a plain string type would make the scan decode them.
    schema = pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in _DICTIONARY_COLUMNS else f
                        for f in tables.LEDGER if f.name != "event_date"])
    fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=_DICTIONARY_COLUMNS))
    # A few files at a time: a dataset's scanner reads ahead of the slower checks with no
    # bound on memory (about 900 MB at 10M events) and keeps every file's parsed footer.
    for at in range(0, len(paths), _SCAN_FILES):
        group = paths[at:at + _SCAN_FILES]
        scanner = pads.dataset(group, schema=schema, format=fmt, filesystem=fs).scanner(
            # The scanner's filter skips files by their statistics but copies every batch
            # (a third of a full pass's time): a full pass filters only the rare batch that
            # holds a seq below the start or none at all (reported by other checks).
            columns=_SCAN_COLUMNS, filter=pads.field("seq") >= start if start else None, batch_size=65_536,
            fragment_readahead=2, batch_readahead=1)
        for tagged in scanner.scan_batches():
            batch = tagged.record_batch
            seq = batch.column("seq")
            if seq.null_count or (len(seq) and pc.min(seq).as_py() < start):
                batch = batch.filter(pc.greater_equal(seq, start))
            if batch.num_rows:
                yield batch, _outside_partition(batch.column("occurred_at"), tagged.fragment.path)


def _outside_partition(occurred: pa.Array, path: str) -> np.ndarray:
    """Per row, whether occurred_at's UTC date (as strftime '%Y-%m-%d') is not the event_date
    of the file's path; every row when the path has no date in that form."""
    found = _EVENT_DATE.search(path)
    try:
        day = np.datetime64(found.group(1), "D") if found and re.fullmatch(r"\d{4}-\d{2}-\d{2}", found.group(1)) else None
    except ValueError:
        day = None
    if day is None:
        return np.ones(len(occurred), bool)
    micros = occurred.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    return micros // 86_400_000_000 != day.astype(np.int64)


def _lowest(seqs: np.ndarray, more: np.ndarray) -> np.ndarray:
    """The FINDINGS_PER_KIND lowest of both."""
    return np.sort(np.concatenate([seqs, more]))[:FINDINGS_PER_KIND] if len(more) else seqs


class _Projection:
    """The check of each row's columns against its sealed record. The record is not parsed
    where it is exactly the text the columns spell in the sealed layout (sealing._row's
    record in RFC 8785 key order), with an occurred_at that parses to the column's instant
    on the row's event date: _records.match_records compares the text in C. The rows that
    differ in any way (a changed column, a record of another layout, an unusual string)
    are the suspects, which the exact check parses in DuckDB after the scan."""

    COLUMNS = [*PROJECTION, "data", "seq", "occurred_at", "ingested_at"]

    def __init__(self):
        self.suspects: list[np.ndarray] = []
        col = {name: i for i, name in enumerate(self.COLUMNS)}

        def string(name: str) -> tuple:
            return (1, col[name])

        subject = ["subject_country", "subject_id", "phone_bidx", "subject_pii_sealed", "subject_region",
                   "subject_timezone"]
        subject_steps = []
        for key, name in zip(["country", "id", "phone_bidx", "pii", "region", "timezone"], subject):
            subject_steps += [(0, ('{"' if key == "country" else ',"').encode() + key.encode() + b'":'), string(name)]
        self.template = (
            (0, b'{"actor":{"id":'), string("actor_id"), (0, b',"ip":'), string("actor_ip_sealed"),
            (0, b',"role":'), string("actor_role"), (0, b',"type":'), string("actor_type"),
            (0, b'},"data":'), (2, col["data"]), (0, b',"event_id":'), string("event_id"),
            (0, b',"event_type":'), string("event_type"), (0, b',"ingested_at":'), (6, col["ingested_at"]),
            (0, b',"lawful_basis":'), string("lawful_basis"), (0, b',"occurred_at":'), (6, col["occurred_at"]),
            (0, b',"pii_fields":'), string("pii_fields"), (0, b',"seq":'), (3, col["seq"]),
            (0, b',"source":'), string("source"), (0, b',"subject":'),
            (5, len(subject_steps) + 1, tuple(col[c] for c in subject)), *subject_steps, (0, b"}"),
            (0, b',"tenant_id":'), string("tenant_id"), (0, b',"v":1}'),
        )

    def check(self, seq: np.ndarray, batch: pa.RecordBatch, leaf: pa.Array, outside_partition: np.ndarray) -> None:
        """Add the batch's rows that the text comparison does not clear to the suspects
        (`leaf`: the batch's leaves as large_binary, NULL as empty)."""
        columns = tuple(packed.column_buffers(batch.column(name)) for name in self.COLUMNS)
        (data, offsets), = packed.buffers(leaf)
        ok = np.frombuffer(_records.match_records(self.template, data, offsets, columns), np.bool_) & ~outside_partition
        self.suspects.append(seq[~ok])

    def report(self, con: duckdb.DuckDBPyConnection, report: VerifyReport) -> None:
        """The exact check of the suspects: reordered_row and changed_field findings."""
        suspects = np.unique(np.concatenate(self.suspects)) if self.suspects else np.zeros(0, np.int64)
        if not len(suspects):
            return
        con.register("suspects", pa.table({"seq": suspects}))
        reordered, changed = np.zeros(0, np.int64), np.zeros(0, np.int64)  # the lowest seq of each
        for batch in con.execute(
            f"""SELECT seq, {_REORDERED}, {_CHANGED} FROM {_PARSED}
                WHERE seq IN (SELECT seq FROM suspects) AND ({_REORDERED} OR {_CHANGED})"""
        ).to_arrow_reader(65_536):
            seq = batch.column(0).to_numpy()
            reordered = _lowest(reordered, seq[batch.column(1).to_numpy(zero_copy_only=False)])
            changed = _lowest(changed, seq[batch.column(2).to_numpy(zero_copy_only=False)])
        con.unregister("suspects")
        _report_projection(report, _projection_details(con, sorted({*reordered.tolist(), *changed.tolist()})))


class _Chain:
    """The chain check of rows read in any order: a row's HMAC must equal its stored hash,
    computed over the first stored hash of the position before it (so every row is checked
    on its own, no sort of the wide leaf column is needed) or over start_hash at `start`.
    Also collects the positions' leaf hashes. The batch hasher (OpenSSL, GIL released) does
    the hashing straight from the arrow buffers."""

    def __init__(self, keys: KeyStore, pos: _Positions, start: int, start_hash: str):
        self.keys = keys.chain_keys()
        self.pos, self.start = pos, start
        self.start_raw = np.frombuffer(bytes.fromhex(start_hash), np.uint8)
        self.leaf_hashes = np.zeros((len(pos), 32), np.uint8)
        # Each position's chain key by age (the keystore's order, oldest first; -1 unknown):
        # a key a newer one replaced must not chain rows after that one's (see note_retired).
        self.rank = {kid: i for i, kid in enumerate(self.keys)}
        self.ranks = np.full(len(pos), -1, np.int16)
        self.taken: set[int] = set()  # duplicated positions whose leaf hash is set
        self._taking = threading.Lock()  # batches are checked in two threads
        self.bad = _FirstRows()

    def check(self, seq: np.ndarray, key_id: pa.Array, stored: pa.Array, leaf: pa.Array) -> None:
        """Check a batch's links (`leaf` as large_binary, NULL as empty)."""
        at = self.pos.index(seq)  # every row read is a position
        self._leaf_hashes(at, stored, leaf)
        prevs, has_prev, odd = self._prevs(seq, at)
        key_ids = key_id if pa.types.is_dictionary(key_id.type) else pc.dictionary_encode(key_id)
        codes = key_ids.indices.fill_null(-1).to_numpy()
        self.ranks[at] = np.array([self.rank.get(k, -1) for k in key_ids.dictionary.to_pylist()] + [-1], np.int16)[codes]
        for code, kid in [*enumerate(key_ids.dictionary.to_pylist()), (-1, None)]:
            rows = np.flatnonzero(codes == code)
            if kid not in self.keys:
                if len(rows):
                    self.bad.add("unknown_key", seq[rows].tolist(), stored.take(pa.array(rows, pa.int64())).to_pylist())
                continue
            rows = rows[has_prev[rows]]
            computed = self._links(self.keys[kid], rows, prevs, leaf, odd)
            self._compare(computed, stored.take(pa.array(rows, pa.int64())), seq[rows])

    def note_retired(self) -> None:
        """The rows chained with a key older than one a row before them used: rotation
        retires a key, and whoever still holds it (a copy taken before) must not extend the
        log with it. (Rotation changes the chain and the signing key at once; a writer that
        meets a newer key in the lake reads the keystore again.)"""
        known = self.ranks >= 0
        newest = np.maximum.accumulate(np.where(known, self.ranks, -1))
        bad = np.flatnonzero(known & (self.ranks < newest))[:FINDINGS_PER_KIND].tolist()
        if bad:
            self.bad.add("retired_key", self.pos.seq[bad].tolist(), [self.pos.stored(p) for p in bad])

    def _links(self, key: bytes, rows: np.ndarray, prevs: np.ndarray, leaf: pa.Array, odd: dict[int, bytes]) -> bytes:
        """The HMACs of `rows`, packed; a previous hash that is not 32 bytes (a stored hash
        that is hex but of another length) is linked on its own."""
        leaves = leaf if len(rows) == len(leaf) else leaf.take(pa.array(rows, pa.int64()))
        computed = chain.links(key, prevs[rows].tobytes(), leaves)
        if not odd:
            return computed
        out = bytearray(computed)
        for j in np.flatnonzero(np.isin(rows, list(odd))).tolist():
            out[32 * j:32 * j + 32] = chain.link(key, odd[int(rows[j])], leaves[j].as_py())
        return bytes(out)

    def _leaf_hashes(self, at: np.ndarray, stored: pa.Array, leaf: pa.Array) -> None:
        """Each position's leaf hash, from its first row (a duplicated position has more)."""
        dup = self.pos.count[at] > 1
        if dup.any():
            first = np.flatnonzero(~dup | self._firsts(at, dup, stored))
            leaf = leaf.take(pa.array(first, pa.int64()))
            at = at[first]
        self.leaf_hashes[at] = np.frombuffer(merkle.leaf_hashes(leaf), np.uint8).reshape(-1, 32)

    def _firsts(self, at: np.ndarray, dup: np.ndarray, stored: pa.Array) -> np.ndarray:
        """The row of each duplicated position that gives its leaf hash: the first one read
        of those holding its first hash (rows equal in seq and hash tie; scan order decides)."""
        first = np.zeros(len(at), bool)
        with self._taking:
            for i in np.flatnonzero(dup).tolist():
                p = int(at[i])
                if p not in self.taken and stored[i].as_py() == self.pos.stored(p):
                    first[i] = True
                    self.taken.add(p)
        return first

    def _prevs(self, seq: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, bytes]]:
        """Each row's previous hash as an (n, 32) matrix, whether it has one (a missing
        position below is reported as a deleted row), and {row: previous hash} of the rows
        whose previous hash is stored in another form (not 64 lowercase hex digits)."""
        below = np.maximum(at - 1, 0)
        at_start = seq == self.start
        has_prev = at_start | ((at > 0) & (self.pos.seq[below] == seq - 1))
        prevs = self.pos.raw[below]
        if at_start.any():
            prevs[at_start] = self.start_raw
        odd: dict[int, bytes] = {}
        if self.pos.odd:
            for i in np.flatnonzero(has_prev & ~at_start).tolist():
                if int(below[i]) in self.pos.odd:
                    prev = self.pos.prev_bytes(int(below[i]))
                    has_prev[i] = prev is not None
                    if prev is not None and len(prev) == 32:
                        prevs[i] = np.frombuffer(prev, np.uint8)
                    elif prev is not None:
                        odd[i] = prev
        return prevs, has_prev, odd

    def _compare(self, computed: bytes, stored: pa.Array, seqs: np.ndarray) -> None:
        """Record the rows whose stored hash is not the computed one (as lowercase hex)."""
        got = np.frombuffer(binascii.hexlify(computed), np.uint8).reshape(-1, 64)
        rows = _fixed_rows(stored, 64)
        if rows is not None:
            wrong = np.flatnonzero((rows != got).any(axis=1))
        else:
            wrong = np.array([i for i, v in enumerate(stored.to_pylist()) if v != got[i].tobytes().decode()], np.int64)
        if len(wrong):
            self.bad.add("changed_row", seqs[wrong].tolist(), stored.take(pa.array(wrong, pa.int64())).to_pylist())


class _FirstRows:
    """The first FINDINGS_PER_KIND rows of each kind in (seq, hash) order, the order in which
    a sorted scan would report them, kept bounded however many rows are bad."""

    DETAIL = {
        "unknown_key": "row hashed with a key id the keystore does not hold",
        "changed_row": "the sealed record or its hash was altered (chain broken)",
        "retired_key": "chained with a key that a newer one had replaced at an earlier seq (a retired key extends nothing)",
    }

    def __init__(self):
        self.rows: dict[str, list[tuple]] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, seqs: list[int], hashes: list[str | None]) -> None:
        with self._lock:  # batches are checked in two threads
            rows = self.rows.setdefault(kind, [])
            rows.extend((s, h is None, h or "", h) for s, h in zip(seqs, hashes))  # NULLs last, as SQL
            if len(rows) > 4 * FINDINGS_PER_KIND:
                rows.sort()
                del rows[FINDINGS_PER_KIND:]

    def report(self, con: duckdb.DuckDBPyConnection, report: VerifyReport) -> None:
        """Add the findings, located by a look-up of just their rows."""
        found = sorted((r, k) for k, rows in self.rows.items() for r in sorted(rows)[:FINDINGS_PER_KIND])
        if not found:
            return
        where: dict[tuple, list[tuple]] = {}
        for seq, h, eid, f in con.execute(
            "SELECT seq, hash, event_id, _file FROM ledger WHERE seq IN (SELECT unnest(?::BIGINT[]))",
            [sorted({r[0] for r, _ in found})],
        ).fetchall():
            where.setdefault((seq, h), []).append((eid, f))
        for (seq, _, _, h), kind in found:
            eid, f = where[(seq, h)].pop()
            report.add(kind, "ledger", self.DETAIL[kind], seq=seq, event_id=eid, file=f, partition=_partition(f))


def _projection_details(con: duckdb.DuckDBPyConnection, seqs: list[int]) -> list[tuple]:
    """The rows at `seqs` (those the scan flagged), by seq: (seq, event_id, _file, reordered,
    unreadable, [column differs], data_bad, time_bad, ingested_bad)."""
    if not seqs:
        return []
    return con.execute(
        f"""SELECT seq, event_id, _file, {_REORDERED}, {_UNREADABLE}, [{', '.join(_COLUMNS_BAD)}], {_DATA_BAD},
                   {_TIME_BAD}, {_INGESTED_BAD}
            FROM {_PARSED} WHERE seq IN (SELECT unnest(?::BIGINT[])) ORDER BY seq""",
        [seqs],
    ).fetchall()


def _report_projection(report: VerifyReport, rows: list[tuple]) -> None:
    """reordered_row then changed_field findings, in seq order (report.add keeps the first
    FINDINGS_PER_KIND of each: `rows` holds those and possibly more)."""
    for seq, eid, f, reordered, *_ in rows:
        if reordered:
            report.add("reordered_row", "ledger", "the row's seq differs from its sealed record", seq=seq,
                       event_id=eid, file=f, partition=_partition(f))
    for seq, eid, f, _, unreadable, columns_bad, data_bad, time_bad, ingested_bad in rows:
        if unreadable:
            report.add("changed_field", "ledger", "the sealed record (leaf) is not a JSON text", seq=seq,
                       event_id=eid, file=f, partition=_partition(f))
            continue
        changed = [c for c, bad in zip(PROJECTION, columns_bad) if bad]
        if data_bad:
            changed.append("data")
        if time_bad:
            changed.append("occurred_at/event_date")
        if ingested_bad:
            changed.append("ingested_at")
        if changed:
            report.add("changed_field", "ledger", f"column(s) {', '.join(changed)} differ from the sealed record",
                       seq=seq, event_id=eid, file=f, partition=_partition(f))


# ----------------------------------------------------------------------------- Merkle
class _Tree:
    """Roots of prefixes of the log from the leaf hashes verified in this pass: those from
    `start` on (concatenated 32-byte hashes) after the frontier at `start` (the trusted one
    in an incremental pass, else empty), so it can root any size >= start (None below it).
    The frontier of every size asked for is kept: asking in increasing order hashes each
    node once, and only O(log n) hashes per size are held besides the leaves."""

    CHUNK = 1 << 16  # leaves appended per Frontier.extend call (bounds its copies)

    def __init__(self, leaf_hashes: bytes | memoryview, start: int = 0, frontier: merkle.Frontier | None = None):
        self.start = start
        self.size = start + len(leaf_hashes) // 32
        self._leaves = leaf_hashes
        self._frontiers = {start: frontier or merkle.Frontier.empty()}

    def root(self, size: int) -> bytes | None:
        if size < self.start or size > self.size:
            return None
        base = max(k for k in self._frontiers if k <= size)
        f = self._frontiers[base]
        for lo in range(base, size, self.CHUNK):
            a, b = 32 * (lo - self.start), 32 * (min(size, lo + self.CHUNK) - self.start)
            f = f.extend(self._leaves[a:b])
        self._frontiers[size] = f
        return f.root()


# ----------------------------------------------------------------------------- checkpoints
def trust_path(log_id: str) -> Path:
    return trust_dir() / f"{log_id}.json"


ROW_FILE = "_file"  # the checkpoint row's file (table-relative), for its findings' location


def _read_checkpoints(lake: Lake, live: dict[str, dict]) -> list[dict]:
    """Checkpoint rows from the committed files that still exist and read (a missing or
    unreadable one is reported by check_history and shows here as a broken link)."""
    fs, root = lake.filesystem()
    rows = []
    for rel in sorted(live):
        try:
            # ParquetFile, not read_table: that loads pyarrow.dataset (and pandas), ~0.4 s.
            rows.extend(r | {ROW_FILE: rel} for r in pq.ParquetFile(fs.open_input_file(f"{root}/tables/checkpoints/{rel}")).read().to_pylist())
        except (OSError, pa.ArrowException, ValueError):  # ValueError: bytes changed into invalid UTF-8
            continue  # its successor then links to nothing, and retention finds the file changed
    # A forged row may lack a field or hold another type: sorted first, reported by the checks.
    return sorted(rows, key=lambda r: (r.get("tree_size") if type(r.get("tree_size")) is int else -1, str(r.get("time"))))


def _frontier_root(size: int, frontier) -> str | None:
    """The root (hex) a stored frontier folds to; None when it is malformed."""
    try:
        return merkle.Frontier.from_hex(size, list(frontier)).root().hex()
    except (ValueError, TypeError):
        return None


def _check_checkpoints(keys: KeyStore, positions: _Positions, tree: _Tree, report: VerifyReport,
                       trusted: Checkpoint | None, rows: list[dict]) -> None:
    report.checkpoints = len(rows)
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    n = tree.size  # distinct positions in the log
    # Where the log's rows end: below it, a checkpoint past n lost rows inside the log (each
    # reported as deleted_row); past it, the tail.
    end = int(positions.seq[-1]) + 1 if len(positions) else tree.start

    def chain_head(seq: int) -> str | None:
        if trusted is not None and tree.start and seq == tree.start - 1:
            return trusted.chain_head
        return positions.head(seq, ZERO_HASH)

    prev_hash, prev_size = ZERO_HASH, -1
    order = {kid: i for i, kid in enumerate(public)}  # the keystore's signing keys, oldest first
    newest: tuple[int, str, int] | None = None  # (age, id, tree size) of the newest key a checkpoint used so far
    for row in rows:
        size, where = row.get("tree_size"), row.get(ROW_FILE)
        if type(size) is not int or size > MAX_EXACT_INT:  # past JSON's exact integers: the lake signs none
            report.add("forged_checkpoint", "checkpoints", f"a checkpoint whose tree size is {size!r}", file=where)
            continue
        try:
            cp = Checkpoint(**{k: row[k] for k in (*SIGNED_FIELDS, "signature")})
        except KeyError as exc:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: no {exc}", file=where)
            continue
        stored_hash = row.get("checkpoint_hash")
        if stored_hash != cp.checkpoint_hash:
            # Reported, and the other checks still run: an edited field also fails the signature.
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: checkpoint_hash does not match the checkpoint's fields", file=where)
        if cp.log_id != keys.log_id:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: log id {cp.log_id} is not this lake's", file=where)
        key = public.get(cp.key_id)
        # Only a checkpoint this log signed says what the ledger held: a forged or retired
        # one is reported as such, and its size and root are evidence of nothing.
        authentic = False
        if key is None or not cp.signature_valid(key):
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: signature does not verify", file=where)
        elif newest is not None and order[cp.key_id] < newest[0]:
            report.add("retired_key", "checkpoints", f"tree size {size}: signed with key {cp.key_id}, which key "
                       f"{newest[1]} had replaced (it signed the checkpoint at tree size {newest[2]}): a retired key "
                       "extends nothing", file=where)
        else:
            authentic = cp.log_id == keys.log_id
            if newest is None or order[cp.key_id] > newest[0]:
                newest = (order[cp.key_id], cp.key_id, size)
        if cp.prev_checkpoint_hash != prev_hash:
            report.add("missing_checkpoint", "checkpoints", f"tree size {size}: does not link to the previous checkpoint (one is missing or forged)", file=where)
        if size <= prev_size:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size} does not grow the log", file=where)
        if authentic and size > end:
            report.add("truncated_tail", "ledger", f"checkpoint covers {size} events but the ledger ends at seq {end - 1}")
        # (past n, its root cannot be recomputed without the deleted rows; sizes below an
        # incremental start were verified before)
        elif authentic and tree.start <= size <= n:
            root = tree.root(size)
            if root.hex() != cp.root:
                report.add("root_mismatch", "checkpoints", f"tree size {size}: Merkle root does not match the ledger", file=where)
            head = chain_head(size - 1) if size else ZERO_HASH
            if head != cp.chain_head:
                report.add("root_mismatch", "checkpoints", f"tree size {size}: chain head does not match the ledger", file=where)
        if row.get("frontier") is not None and _frontier_root(size, row["frontier"]) != cp.root:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: stored frontier does not match its root", file=where)
        prev_hash, prev_size = stored_hash or cp.checkpoint_hash, size  # what the next one links to
    if trusted is not None:
        report.trusted_tree_size = trusted.tree_size
        if trusted.log_id != keys.log_id:
            report.add("forged_checkpoint", "checkpoints", "the trusted checkpoint belongs to another log")
        elif trusted.tree_size > end:
            report.add("truncated_tail", "ledger",
                       f"the trusted checkpoint covers {trusted.tree_size} events but the ledger ends at seq {end - 1}")
        elif trusted.tree_size > n:
            pass  # rows deleted inside the log: reported as deleted_row
        elif tree.root(trusted.tree_size) is not None and tree.root(trusted.tree_size).hex() != trusted.root:
            report.add("root_mismatch", "ledger", f"the ledger no longer matches the trusted checkpoint at size {trusted.tree_size}")
        if not any(r.get("checkpoint_hash") == trusted.checkpoint_hash for r in rows):
            report.add("missing_checkpoint", "checkpoints", f"the trusted checkpoint (tree size {trusted.tree_size}) is not in the lake")
    last = max((r["tree_size"] for r in rows if type(r.get("tree_size")) is int), default=0)
    report.unsealed_tail = max(0, n - last)


# ----------------------------------------------------------------------------- entry
def _transient(finding: Finding) -> bool:
    """A finding a verify beside a concurrent writer can see for a moment: a data file written
    but not yet committed, or an object committed but not yet put under retention (the
    writer seals it right after its commit)."""
    return finding.kind == "data_file_inserted" or (finding.kind == "RET-WORM" and "not under retention" in finding.detail)


def verify_settled(lake: Lake, incremental: bool = False, update_trust: bool = True, attempts: int = 5,
                   pause_s: float = 0.5) -> tuple[VerifyReport, int]:
    """verify(), checked again when it failed while other writers were appending (the tables
    moved during the pass, or it found only what a writer in flight leaves for a moment);
    tampering is still there on every attempt. Returns (report, attempts made)."""
    for attempt in range(1, attempts + 1):
        before = {name: tables.version(lake, name) for name in tables.SCHEMAS}
        report = verify(lake, update_trust=update_trust, incremental=incremental)
        if report.ok or attempt == attempts:
            return report, attempt
        moved = {name: tables.version(lake, name) for name in tables.SCHEMAS} != before
        if not moved and not all(_transient(f) for f in report.findings):
            return report, attempt
        time.sleep(pause_s * attempt)
    raise AssertionError("unreachable")


def load_trusted(path: str | Path) -> Checkpoint:
    try:
        cp = Checkpoint.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise AuditlakeError(f"cannot read the trusted checkpoint {path}: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise AuditlakeError(f"{path} is not a checkpoint (JSON of a checkpoints row, as the trust store "
                             f"keeps it): {'no ' + str(exc) if isinstance(exc, KeyError) else exc}") from exc
    wrong = [f.name for f in fields(Checkpoint)
             if not (type(getattr(cp, f.name)) is int and cp.tree_size >= 0 if f.name == "tree_size"
                     else isinstance(getattr(cp, f.name), str))]
    if wrong:
        raise AuditlakeError(f"{path} is not a checkpoint (JSON of a checkpoints row, as the trust store keeps it): "
                             f"{', '.join(wrong)} of the wrong type (tree_size a whole number, the others text)")
    return cp


def verify(lake: Lake, trusted_file: str | None = None, update_trust: bool = True, incremental: bool = False) -> VerifyReport:
    """Verify the lake. `incremental` checks the Delta history and the checkpoints in full
    but re-reads only the rows after the trusted checkpoint, extending its Merkle frontier
    and chain head (falls back to a full pass when there is no trusted checkpoint)."""
    started = time.monotonic()
    report = VerifyReport()
    keys = _lake_keys(lake, report)
    tpath = trust_path(keys.log_id)
    trusted = load_trusted(trusted_file) if trusted_file else (load_trusted(tpath) if tpath.exists() else None)
    live: dict[str, dict[str, dict]] = {}
    for name in tables.SCHEMAS:
        if name != "tiles":  # (checked beside the rows, below)
            live[name] = check_history(lake, name, report, keys) or {}
    cps = _read_checkpoints(lake, live["checkpoints"])
    base = _incremental_base(trusted, cps, report) if incremental else None
    start = base.size if base else 0
    paths, fs, stored_rows = _ledger_files(lake, live["ledger"], report)
    # The retention and catalog checks need none of the rows: they run beside the row checks
    # (hashing every sealed file, GIL released), their findings reported after them.
    with ThreadPoolExecutor(1) as side:
        # The tiles' history too: checking each commit's signature reads every tiles file,
        # and nothing else needs them.
        tiles_report = VerifyReport()
        tiles_history = side.submit(check_history, lake, "tiles", tiles_report, keys)
        lake_findings = side.submit(_lake_findings, lake, keys)
        # A private spill folder: two verifies started in one directory must not share ./.tmp.
        spill = tempfile.TemporaryDirectory(prefix="auditlake-verify-")
        while True:
            con = duckdb.connect(config={"memory_limit": "1GB", "preserve_insertion_order": False,
                                         "temp_directory": spill.name})
            con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: the cursors too (a SET is per connection)
            before = len(report.findings)
            try:
                _load_ledger(con, paths, fs, lake.filesystem()[1], start)
                con.register("ledger_added", pa.table({"_file": [_unquote(p) for p in live["ledger"]],
                                                       "version": [a["version"] for a in live["ledger"].values()]}))
                positions, leaf_hashes = _check_rows(con, keys, report, (paths, fs), start,
                                                     trusted.chain_head if base else ZERO_HASH)
                break
            except (OSError, pa.ArrowException, duckdb.Error):
                # A file whose footer reads but whose pages do not (bytes changed in place):
                # reported, and the rows are checked again without it (its rows are missing).
                con.close()
                unreadable = _unreadable_files(paths, fs)
                if not unreadable:
                    raise
                del report.findings[before:]
                for path, why in unreadable.items():
                    rel = path.split("/tables/ledger/", 1)[-1]
                    report.add("data_file_replaced", "ledger", f"unreadable: {why}", file=rel, partition=_partition(rel))
                paths = [p for p in paths if p not in unreadable]
        if start:
            report.events += _check_below(con, report, start, rows_after=len(positions) > 0)
        if stored_rows > report.events:
            _check_unsequenced(report, paths, fs, lake.filesystem()[1])
        tree = _Tree(leaf_hashes, start, base)
        _check_checkpoints(keys, positions, tree, report, trusted, cps)
        report.tree_size = tree.size
        report.root = (tree.root(tree.size) or b"").hex()
        tiles_history.result()
        report.findings += tiles_report.findings
        found, manifests = lake_findings.result()
        for kind, table, detail, where in found:
            report.add(kind, table, detail, **where)
    report.ok = not report.findings
    if report.ok and update_trust and cps:
        _advance_trust(tpath, {k: v for k, v in cps[-1].items() if k not in ("frontier", "batch_id", ROW_FILE)})
        if manifests is not None:
            retention.remember_manifests(keys.log_id, manifests)
    con.close()
    spill.cleanup()
    report.duration_s = time.monotonic() - started
    return report


def _advance_trust(tpath: Path, checkpoint: dict) -> None:
    """Keep `checkpoint` as the trusted one unless the trust store already holds a larger
    one (a pass that started earlier and ends later must not move it back), under a lock
    shared by every verify on this host."""
    tpath.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(tpath.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            held = json.loads(tpath.read_text()).get("tree_size")
        except (OSError, ValueError, AttributeError):
            held = None
        if type(held) is int and held > checkpoint["tree_size"]:
            return
        write_private(tpath, json.dumps(checkpoint, indent=2))


def _lake_findings(lake: Lake, keys: KeyStore) -> tuple[list[tuple[str, str, str, dict]], dict[str, str] | None]:
    """(kind, table, detail, location) of the retention and catalog checks, and a local lake's
    retention manifests now ({name: SHA-256}, None on S3)."""
    found = [(f["kind"], f["table"], f["detail"], {"file": _table_relative(f["table"], f.get("file")),
                                                    "partition": f.get("partition")})
             for f in retention.check(lake, keys)]
    found += [(CATALOG_CHANGED, "catalog", why, {"file": "catalog.duckdb"}) for why in catalog_problems(lake)]
    found += [("data_file_inserted", "tables", "a file or folder under tables/ that is no table of the lake",
               {"file": f"tables/{name}", "partition": None}) for name in _foreign_tables(lake)]
    found += [("data_file_inserted", "lake", "a FIFO, socket or device, which the lake never makes (the listings "
               "skip it: reading one blocks)", {"file": rel, "partition": None}) for rel in _special_files(lake)]
    # The published public keys are informational (trust comes from the keystore), but an
    # offline verifier may take them from there: one the keystore does not hold is planted.
    published = (meta_or_none(lake) or {}).get("public_keys") or {}
    planted = ([f"the public key {kid}, which the keystore does not hold" for kid in sorted(set(published) - set(keys.public_keys()))]
               if isinstance(published, dict) else ["public_keys that are no map of key ids"])
    found += [("identity_changed", "lake", f"auditlake.json publishes {what}", {"file": "auditlake.json", "partition": None})
              for what in planted]
    if lake.is_s3:  # Object Lock keeps S3 objects; no memory needed
        return found, None
    seen = retention.seen_manifests(keys.log_id)  # first: one a writer seals meanwhile is then listed too
    manifests = retention.manifest_digests(lake)
    for name, digest in sorted(seen.items()):
        if manifests.get(name) != digest:
            found.append((retention.KIND, retention.MANIFEST_DIR,
                          "a retention manifest this host sealed or a clean verify saw is gone or changed",
                          {"file": f"{retention.MANIFEST_DIR}/{name}", "partition": None}))
    return found, manifests


def _special_files(lake: Lake) -> list[str]:
    """A local lake's entries that are neither files, folders nor links (a FIFO, a socket, a
    device), in the folders the lake owns, relative to the lake."""
    if lake.is_s3:
        return []
    paths = []
    for top in ("tables", retention.MANIFEST_DIR, HOLDS_DIR, AUDIT_DIR, "auditlake.json", "catalog.duckdb"):
        paths.append(os.path.join(lake.uri, top))
        for root, dirs, files in os.walk(paths[-1]):  # (links are not followed)
            paths += [os.path.join(root, name) for name in files + dirs]
    out = []
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            out.append(os.path.relpath(path, lake.uri))
    return sorted(out)


def _foreign_tables(lake: Lake) -> list[str]:
    """The names under tables/ that are no table of the lake (each table's own folder is
    checked file by file by check_history)."""
    fs, root = lake.filesystem()
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/tables", allow_not_found=True))
    return sorted(name for i in infos if (name := posixpath.basename(i.path)) not in tables.SCHEMAS)


def _lake_keys(lake: Lake, report: VerifyReport) -> KeyStore:
    """The lake's keystore. A lake whose identity file is gone, or names another log than
    its checkpoints, while its tables are there is tampering, not a usage error, when the
    checkpoints are of a log whose keystore is here: that keystore is taken (the checkpoints'
    signatures say whether they are its), the rest verified, the identity file reported."""
    from .head import read_checkpoints
    from .keys import keystore_exists
    from .kms import select_keystore
    from .lake.meta import META, KeysNotPublished, has_tables

    try:
        keys, error = open_lake_keys(lake), None
    except AuditlakeError as exc:
        keys, error = None, exc
    if keys is not None:
        try:  # the newest checkpoint's log: one file, by its statistics
            latest = {r.get("log_id") for r in read_checkpoints(lake, latest=True)}
        except (OSError, pa.ArrowException, AuditlakeError):
            return keys  # the checkpoint checks report it
        if not latest or keys.log_id in latest:
            return keys
    try:
        meta = lake.read_json(META)
    except AuditlakeError:
        meta = "not JSON"
    named = meta.get("log_id") if isinstance(meta, dict) else None
    # Its own keys are here, and the identity file publishes none of them: planted keys
    # (reported with the lake's findings), unless the checkpoints are another log's.
    planted = isinstance(error, KeysNotPublished)
    if error is not None and ((keystore_exists(named) and not planted) or not has_tables(lake)):
        raise error  # the error is another one
    try:
        ids = tables.dataset(lake, "checkpoints").to_table(columns=["log_id"]).column("log_id").unique().to_pylist()
    except (OSError, pa.ArrowException, AuditlakeError):
        if keys is not None or planted:
            return keys or select_keystore(named)
        raise AuditlakeError(f"the lake at {lake.uri} has no usable {META} (its identity) and no readable checkpoints: "
                             "restore them from a backup") from None
    known = [i for i in ids if isinstance(i, str) and keystore_exists(i)]
    if planted and known in ([], [named]):
        return select_keystore(named)
    if len(known) != 1 or known == [named]:
        if keys is not None:
            return keys  # the checkpoint checks report what is wrong
        raise error
    if meta is None:
        report.add("identity_changed", "lake", f"{META}, the lake's identity (log id, retention policy, published "
                   "keys), is gone", file=META)
    elif not isinstance(meta, dict):
        report.add("identity_changed", "lake", f"{META}, the lake's identity, is no JSON object", file=META)
    else:
        report.add("identity_changed", "lake", f"{META} names the log {str(named)[:80]!r}, not the one the lake's "
                   f"checkpoints are signed for ({known[0]})", file=META)
    return select_keystore(known[0])


def _incremental_base(trusted: Checkpoint | None, cps: list[dict], report: VerifyReport) -> merkle.Frontier | None:
    """The trusted checkpoint's frontier, if the lake still holds that checkpoint intact."""
    if trusted is None or trusted.tree_size == 0:
        return None
    row = next((r for r in cps if r.get("checkpoint_hash") == trusted.checkpoint_hash), None)
    if row is None or row.get("frontier") is None:
        return None  # reported by the checkpoint checks; a full pass shows the rest
    try:
        frontier = merkle.Frontier.from_hex(trusted.tree_size, list(row["frontier"]))
    except (ValueError, TypeError):
        return None  # reported by the checkpoint checks
    return frontier if frontier.root().hex() == trusted.root else None
