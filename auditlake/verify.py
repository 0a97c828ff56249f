"""Full verification of a lake: Delta history, data files, rows, chain, Merkle roots,
signed checkpoints and the trusted checkpoint (docs/LEDGER.md section 8).

Heavy lifting runs in DuckDB: the chain is checked row by row against the stored previous
hash (HMAC-SHA-256 computed with DuckDB's vectorised sha256 over HMAC's padded keys), and
the Merkle tree is built level by level, so nothing here loops in Python per event.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import AuditlakeError
from .keys import KeyStore, auditlake_home, load_public_key
from .lake import tables
from .lake.meta import open_lake_keys
from .lake.store import Lake
from .ledger import chain, merkle
from .ledger.checkpoint import ZERO_HASH, Checkpoint

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


def check_history(lake: Lake, name: str, report: VerifyReport) -> dict[str, dict] | None:
    """Replay the table's _delta_log: only blind appends, appendOnly from version 0, no gaps.
    Returns the live data files {relative path: add action} or None if there is no table."""
    fs, root = lake.filesystem()
    table_path = f"{root}/tables/{name}"
    log_path = f"{table_path}/_delta_log"
    entries = _list(fs, log_path)
    if not entries:
        return None
    versions = sorted(
        int(posixpath.basename(i.path)[:20])
        for i in entries
        if posixpath.basename(i.path).endswith(".json") and posixpath.basename(i.path)[:20].isdigit()
    )
    if not versions or versions[0] != 0:
        report.add("history_missing", name, "the Delta log does not start at version 0")
    for a, b in zip(versions, versions[1:]):
        if b != a + 1:
            report.add("history_missing", name, f"Delta log versions {a + 1}..{b - 1} are missing")
    live: dict[str, dict] = {}
    for v in versions:
        fname = f"{log_path}/{v:020d}.json"
        with fs.open_input_stream(fname) as f:
            text = f.read().decode()
        for line in text.splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            kind = next(iter(action))
            body = action[kind]
            if kind == "add":
                live[body["path"]] = body | {"version": v}
            elif kind == "commitInfo":
                op, mode = body.get("operation"), (body.get("operationParameters") or {}).get("mode")
                if not (op == "WRITE" and mode in ("Append", "ErrorIfExists" if v == 0 else "Append")):
                    report.add("non_append_commit", name, f"version {v} is {op} {mode or ''}".strip())
            elif kind == "metaData":
                conf = body.get("configuration") or {}
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
        if not posixpath.relpath(i.path, table_path).startswith("_delta_log")
    }
    for path, add in live.items():
        rel = _unquote(path)
        partition = rel.split("/")[0] if "/" in rel else None
        if rel not in on_disk:
            report.add("data_file_removed", name, "a committed data file is missing", partition=partition, file=rel)
        elif on_disk[rel] != add["size"]:
            report.add("data_file_replaced", name, f"size {on_disk[rel]} != committed {add['size']}", partition=partition, file=rel)
    committed = {_unquote(p) for p in live}
    for rel in sorted(set(on_disk) - committed):
        report.add("data_file_inserted", name, "a data file that no commit added", file=rel,
                   partition=rel.split("/")[0] if "/" in rel else None)
    return {_unquote(p): a for p, a in live.items()}


def _unquote(p: str) -> str:
    from urllib.parse import unquote

    return unquote(p)


# ----------------------------------------------------------------------------- ledger rows
def _ledger_files(lake: Lake, live: dict[str, dict], report: VerifyReport) -> tuple[list[str], pafs.FileSystem]:
    """The readable committed ledger files; row counts checked against the log's stats."""
    fs, root = lake.filesystem()
    paths = []
    for rel, add in sorted(live.items()):
        path = f"{root}/tables/ledger/{rel}"
        try:
            rows = pq.ParquetFile(fs.open_input_file(path)).metadata.num_rows
        except FileNotFoundError:
            continue  # reported by check_history
        except (OSError, pa.ArrowInvalid) as exc:
            if "not found" not in str(exc).lower():
                report.add("data_file_replaced", "ledger", f"unreadable: {str(exc)[:120]}", file=rel)
            continue
        stats = json.loads(add.get("stats") or "{}")
        if "numRecords" in stats and stats["numRecords"] != rows:
            report.add("data_file_replaced", "ledger", f"{rows} rows != committed {stats['numRecords']}", file=rel)
        paths.append(path)
    return paths, fs


def _load_ledger(con: duckdb.DuckDBPyConnection, paths: list[str], fs: pafs.FileSystem, root: str, start: int = 0) -> None:
    """Stream the ledger rows with seq >= start into a DuckDB table `ledger` (which spills to
    disk past its memory limit) and the seq of the rows below into `ledger_below`."""
    import pyarrow.dataset as pads

    base = pa.schema([f for f in tables.LEDGER if f.name != "event_date"])
    schema = base.append(pa.field("_file", pa.string())).append(pa.field("event_date", pa.string()))
    prefix = f"{root}/tables/ledger/"

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

    if paths and isinstance(fs, pafs.LocalFileSystem):
        # Local files: DuckDB's own parallel Parquet reader (it cannot reach S3 without httpfs).
        con.execute(
            f"""CREATE TEMP TABLE ledger AS SELECT {', '.join(base.names)},
                   substr(filename, {len(prefix) + 1}) AS _file,
                   regexp_extract(filename, 'event_date=([^/]+)', 1) AS event_date
                FROM read_parquet(?, filename = true, hive_partitioning = false) WHERE seq >= ?""",
            [paths, start],
        )
        con.execute("CREATE TEMP TABLE ledger_below AS SELECT seq FROM read_parquet(?) WHERE seq < ?", [paths, start])
        return
    seq = pads.field("seq")
    con.register("ledger_src", pa.RecordBatchReader.from_batches(schema, batches(base.names, seq >= start)))
    con.execute("CREATE TEMP TABLE ledger AS SELECT * FROM ledger_src")
    con.unregister("ledger_src")
    below_schema = pa.schema([base.field("seq")])
    con.register("below_src", pa.RecordBatchReader.from_batches(below_schema, batches(["seq"], seq < start)))
    con.execute("CREATE TEMP TABLE ledger_below AS SELECT * FROM below_src")
    con.unregister("below_src")


def _check_rows(con: duckdb.DuckDBPyConnection, keys: KeyStore, report: VerifyReport,
                start: int = 0, start_hash: str = ZERO_HASH) -> list[bytes]:
    """Row checks of the rows loaded (seq >= start, chained from start_hash); returns the
    leaf hashes of the distinct positions in seq order."""
    n, distinct, lo, hi = con.execute("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM ledger").fetchone()
    report.events = n
    for seq, c, f in con.execute(
        "SELECT seq, count(*), min(_file) FROM ledger GROUP BY seq HAVING count(*) > 1 ORDER BY seq LIMIT ?",
        [FINDINGS_PER_KIND],
    ).fetchall():
        report.add("duplicate_row", "ledger", f"seq {seq} appears {c} times", seq=seq, file=f)
    if n:
        for (gap_start, gap_end) in con.execute(
            """SELECT seq + 1, next - 1 FROM (SELECT seq, lead(seq) OVER (ORDER BY seq) AS next
               FROM (SELECT DISTINCT seq FROM ledger)) WHERE next > seq + 1 ORDER BY seq LIMIT ?""",
            [FINDINGS_PER_KIND],
        ).fetchall():
            report.add("deleted_row", "ledger", f"seq {gap_start}..{gap_end} missing", seq=gap_start)
        if lo != start:
            report.add("deleted_row", "ledger", f"seq {start}..{lo - 1} missing", seq=start)
    # The chain, each row against the stored hash of the row before it, and the leaf hashes,
    # in one ordered pass (hashlib: OpenSSL's SHA-256 is several times faster than DuckDB's).
    keyring = {kid: chain.hmac_pads(k) for kid, k in keys.chain_keys().items()}
    inner = {kid: hashlib.sha256(ipad) for kid, (ipad, _) in keyring.items()}
    outer = {kid: hashlib.sha256(opad) for kid, (_, opad) in keyring.items()}
    leaf_hashes: list[bytes] = []
    prev_seq, prev_hash, this_hash = None, GENESIS_HEX, None
    reader = con.execute(
        "SELECT seq, key_id, hash, leaf, event_id, _file, event_date FROM ledger ORDER BY seq, hash"
    ).to_arrow_reader(65_536)
    for batch in reader:
        cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for seq, key_id, stored, leaf, eid, f, part in zip(*cols):
            if seq != prev_seq:
                # Entering a new position: the first row of the previous one is its hash.
                if prev_seq is not None:
                    prev_hash = this_hash if prev_seq == seq - 1 else None
                else:
                    prev_hash = start_hash if seq == start else None
                this_hash = stored
                leaf_bytes = leaf.encode()
                leaf_hashes.append(hashlib.sha256(b"\x00" + leaf_bytes).digest())
                prev_seq = seq
            else:
                leaf_bytes = leaf.encode()
            if key_id not in inner:
                report.add("unknown_key", "ledger", "row hashed with a key id the keystore does not hold", seq=seq, event_id=eid, file=f, partition=part)
                continue
            if prev_hash is None:
                continue  # the previous position is missing: reported as a deleted row
            h = inner[key_id].copy()
            h.update(bytes.fromhex(prev_hash))
            h.update(leaf_bytes)
            o = outer[key_id].copy()
            o.update(h.digest())
            if o.hexdigest() != stored:
                report.add("changed_row", "ledger", "the sealed record or its hash was altered (chain broken)", seq=seq, event_id=eid, file=f, partition=part)
    # Projection columns must equal the sealed record.
    paths = list(PROJECTION.values())
    for seq, eid, f, part in con.execute(
        f"""SELECT seq, event_id, _file, event_date FROM ledger
            WHERE json_extract(leaf, '$.seq')::BIGINT IS DISTINCT FROM seq ORDER BY seq LIMIT {FINDINGS_PER_KIND}"""
    ).fetchall():
        report.add("reordered_row", "ledger", "the row's seq differs from its sealed record", seq=seq, event_id=eid, file=f, partition=part)
    mismatch = con.execute(
        f"""
        SELECT seq, event_id, _file, event_date, [{', '.join(f"'{c}'" for c in PROJECTION)}] AS cols, j,
               vals, data_bad, time_bad
        FROM (SELECT seq, event_id, _file, event_date, json_extract_string(leaf, ?) AS j,
                     [{', '.join(PROJECTION)}] AS vals,
                     json(json_extract(leaf, '$.data')) IS DISTINCT FROM json(data) AS data_bad,
                     (json_extract_string(leaf, '$.occurred_at')::TIMESTAMPTZ IS DISTINCT FROM occurred_at
                      OR strftime(occurred_at, '%Y-%m-%d') IS DISTINCT FROM event_date) AS time_bad
              FROM ledger)
        WHERE j IS DISTINCT FROM vals OR data_bad OR time_bad
        ORDER BY seq LIMIT {FINDINGS_PER_KIND}
        """,
        [paths],
    ).fetchall()
    for seq, eid, f, part, cols, j, vals, data_bad, time_bad in mismatch:
        changed = [c for c, a, b in zip(cols, j, vals) if a != b]
        if data_bad:
            changed.append("data")
        if time_bad:
            changed.append("occurred_at/event_date")
        report.add("changed_field", "ledger", f"column(s) {', '.join(changed)} differ from the sealed record",
                   seq=seq, event_id=eid, file=f, partition=part)
    return leaf_hashes


# ----------------------------------------------------------------------------- Merkle
def _perfect_levels(leaf_hashes: list[bytes]) -> list[list[bytes]]:
    """levels[L][i] = root of the perfect subtree of 2^L leaves starting at leaf i*2^L."""
    levels = [leaf_hashes]
    row = leaf_hashes
    while len(row) > 1:
        row = [hashlib.sha256(b"\x01" + a + b).digest() for a, b in zip(row[0::2], row[1::2])]
        levels.append(row)
    return levels


def _root_at(levels: list[list[bytes]], size: int) -> bytes:
    return merkle.root_from(size, lambda level, index: levels[level][index])


class _Tree:
    """Roots of prefixes of the log from the leaves verified in this pass.

    A full pass holds every leaf; an incremental pass holds the leaves from `start` on and
    the trusted frontier at `start`, so it can root any size >= start (None below it)."""

    def __init__(self, leaf_hashes: list[bytes], start: int = 0, frontier: merkle.Frontier | None = None):
        self.start = start
        self.size = start + len(leaf_hashes)
        self._leaves = leaf_hashes
        self._levels = _perfect_levels(leaf_hashes) if start == 0 else None
        self._frontiers = {start: frontier or merkle.Frontier.empty()}

    def root(self, size: int) -> bytes | None:
        if size < self.start or size > self.size:
            return None
        if self._levels is not None:
            return _root_at(self._levels, size)
        base = max(k for k in self._frontiers if k <= size)
        f = self._frontiers[base].extend(self._leaves[base - self.start : size - self.start])
        self._frontiers[size] = f
        return f.root()


# ----------------------------------------------------------------------------- checkpoints
def trust_path(log_id: str) -> Path:
    return auditlake_home() / "trust" / f"{log_id}.json"


def _read_checkpoints(lake: Lake, live: dict[str, dict]) -> list[dict]:
    """Checkpoint rows from the committed files that still exist (a missing one is reported
    by check_history and shows here as a broken link)."""
    fs, root = lake.filesystem()
    rows = []
    for rel in sorted(live):
        try:
            rows.extend(pq.read_table(f"{root}/tables/checkpoints/{rel}", filesystem=fs).to_pylist())
        except (OSError, pa.ArrowInvalid):
            continue
    return sorted(rows, key=lambda r: (r["tree_size"], r["time"]))


def _check_checkpoints(keys: KeyStore, con, tree: _Tree, report: VerifyReport, trusted: Checkpoint | None,
                       rows: list[dict]) -> None:
    report.checkpoints = len(rows)
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    n = tree.size  # distinct positions in the log
    hashes = dict(con.execute("SELECT seq, min(hash) FROM ledger GROUP BY seq").fetchall()) if rows else {}
    if trusted is not None and tree.start:
        hashes[tree.start - 1] = trusted.chain_head
    prev_hash, prev_size = ZERO_HASH, -1
    for row in rows:
        size = row["tree_size"]
        try:
            cp = Checkpoint.from_dict(row)
        except (ValueError, KeyError) as exc:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: {exc}")
            continue
        if cp.log_id != keys.log_id:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: log id {cp.log_id} is not this lake's")
        key = public.get(cp.key_id)
        if key is None or not cp.signature_valid(key):
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: signature does not verify")
        if cp.prev_checkpoint_hash != prev_hash:
            report.add("missing_checkpoint", "checkpoints", f"tree size {size}: does not link to the previous checkpoint (one is missing or forged)")
        if size <= prev_size:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size} does not grow the log")
        if size > n:
            report.add("truncated_tail", "ledger", f"checkpoint covers {size} events but the ledger holds {n}")
        elif size >= tree.start:  # sizes below an incremental start were verified before
            root = tree.root(size)
            if root.hex() != cp.root:
                report.add("root_mismatch", "checkpoints", f"tree size {size}: Merkle root does not match the ledger")
            head = hashes.get(size - 1, ZERO_HASH) if size else ZERO_HASH
            if head != cp.chain_head:
                report.add("root_mismatch", "checkpoints", f"tree size {size}: chain head does not match the ledger")
        if row.get("frontier") is not None and merkle.Frontier.from_hex(size, list(row["frontier"])).root().hex() != cp.root:
            report.add("forged_checkpoint", "checkpoints", f"tree size {size}: stored frontier does not match its root")
        prev_hash, prev_size = cp.checkpoint_hash, size
    if trusted is not None:
        report.trusted_tree_size = trusted.tree_size
        if trusted.log_id != keys.log_id:
            report.add("forged_checkpoint", "checkpoints", "the trusted checkpoint belongs to another log")
        elif trusted.tree_size > n:
            report.add("truncated_tail", "ledger", f"the trusted checkpoint covers {trusted.tree_size} events but the ledger holds {n}")
        elif tree.root(trusted.tree_size) is not None and tree.root(trusted.tree_size).hex() != trusted.root:
            report.add("root_mismatch", "ledger", f"the ledger no longer matches the trusted checkpoint at size {trusted.tree_size}")
        if not any(r["checkpoint_hash"] == trusted.checkpoint_hash for r in rows):
            report.add("missing_checkpoint", "checkpoints", f"the trusted checkpoint (tree size {trusted.tree_size}) is not in the lake")
    last = rows[-1]["tree_size"] if rows else 0
    report.unsealed_tail = max(0, n - last)


# ----------------------------------------------------------------------------- entry
def load_trusted(path: str | Path) -> Checkpoint:
    try:
        return Checkpoint.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditlakeError(f"cannot read the trusted checkpoint {path}: {exc}") from exc


def verify(lake: Lake, trusted_file: str | None = None, update_trust: bool = True, incremental: bool = False) -> VerifyReport:
    """Verify the lake. `incremental` checks the Delta history and the checkpoints in full
    but re-reads only the rows after the trusted checkpoint, extending its Merkle frontier
    and chain head (falls back to a full pass when there is no trusted checkpoint)."""
    started = time.monotonic()
    report = VerifyReport()
    keys = open_lake_keys(lake)
    tpath = trust_path(keys.log_id)
    trusted = load_trusted(trusted_file) if trusted_file else (load_trusted(tpath) if tpath.exists() else None)
    live: dict[str, dict[str, dict]] = {}
    for name in tables.SCHEMAS:
        live[name] = check_history(lake, name, report) or {}
    cps = _read_checkpoints(lake, live["checkpoints"])
    base = _incremental_base(trusted, cps, report) if incremental else None
    start = base.size if base else 0
    paths, fs = _ledger_files(lake, live["ledger"], report)
    # A private spill folder: two verifies started in one directory must not share ./.tmp.
    spill = tempfile.TemporaryDirectory(prefix="auditlake-verify-")
    con = duckdb.connect(config={"memory_limit": "1GB", "preserve_insertion_order": False,
                                 "temp_directory": spill.name})
    con.execute("SET TimeZone = 'UTC'")
    _load_ledger(con, paths, fs, lake.filesystem()[1], start)
    leaf_hashes = _check_rows(con, keys, report, start, trusted.chain_head if base else ZERO_HASH)
    if start:
        below = con.execute("SELECT count(*) FROM ledger_below").fetchone()[0]
        if below != start:
            report.add("deleted_row" if below < start else "duplicate_row", "ledger",
                       f"{below} rows before the trusted checkpoint, which covers {start}")
        report.events += below
    tree = _Tree(leaf_hashes, start, base)
    _check_checkpoints(keys, con, tree, report, trusted, cps)
    report.tree_size = tree.size
    report.root = (tree.root(tree.size) or b"").hex()
    from .lake import retention

    for f in retention.check(lake, keys):
        report.add(f["kind"], f["table"], f["detail"], file=f.get("file"), partition=f.get("partition"))
    report.ok = not report.findings
    if report.ok and update_trust and cps:
        tpath.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tpath.write_text(json.dumps({k: v for k, v in cps[-1].items() if k not in ("frontier", "batch_id")}, indent=2))
    con.close()
    spill.cleanup()
    report.duration_s = time.monotonic() - started
    return report


def _incremental_base(trusted: Checkpoint | None, cps: list[dict], report: VerifyReport) -> merkle.Frontier | None:
    """The trusted checkpoint's frontier, if the lake still holds that checkpoint intact."""
    if trusted is None or trusted.tree_size == 0:
        return None
    row = next((r for r in cps if r["checkpoint_hash"] == trusted.checkpoint_hash), None)
    if row is None or row.get("frontier") is None:
        return None  # reported by the checkpoint checks; a full pass shows the rest
    frontier = merkle.Frontier.from_hex(trusted.tree_size, list(row["frontier"]))
    return frontier if frontier.root().hex() == trusted.root else None
