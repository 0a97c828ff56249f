"""Schemas of the lake's Delta tables and the one way the lake writes to them: a blind,
append-only commit that fails (instead of silently rebasing) if another writer got there
first, so the caller can re-plan from the new state."""
from __future__ import annotations

import pyarrow as pa

from ..errors import AuditlakeError, ConflictError
from .store import Lake

TS = pa.timestamp("us", tz="UTC")

LEDGER = pa.schema(
    [
        ("seq", pa.int64()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("occurred_at", TS),
        ("event_date", pa.string()),
        ("ingested_at", TS),
        ("source", pa.string()),
        ("tenant_id", pa.string()),
        ("actor_type", pa.string()),
        ("actor_id", pa.string()),
        ("actor_role", pa.string()),
        ("actor_ip_sealed", pa.string()),
        ("subject_id", pa.string()),
        ("subject_country", pa.string()),
        ("subject_region", pa.string()),
        ("subject_timezone", pa.string()),
        ("subject_pii_sealed", pa.string()),
        ("pii_fields", pa.string()),
        ("phone_bidx", pa.string()),
        ("lawful_basis", pa.string()),
        ("data", pa.string()),
        ("leaf", pa.string()),
        ("hash", pa.string()),
        ("key_id", pa.string()),
        ("batch_id", pa.string()),
        ("source_file", pa.string()),
        ("source_sha256", pa.string()),
        ("source_line", pa.int64()),
    ]
)

CHECKPOINTS = pa.schema(
    [
        ("log_id", pa.string()),
        ("tree_size", pa.int64()),
        ("root", pa.string()),
        ("chain_head", pa.string()),
        ("time", pa.string()),
        ("prev_checkpoint_hash", pa.string()),
        ("key_id", pa.string()),
        ("signature", pa.string()),
        ("checkpoint_hash", pa.string()),
        # Not signed: the compact-range frontier so the next batch extends the tree
        # without re-reading it; verify recomputes it.
        ("frontier", pa.list_(pa.string())),
        ("batch_id", pa.string()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_sha256", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("event_id", pa.string()),
        ("quarantined_at", TS),
        ("batch_id", pa.string()),
    ]
)

INGEST_LOG = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_sha256", pa.string()),
        ("format", pa.string()),
        ("lines_read", pa.int64()),
        ("accepted", pa.int64()),
        ("quarantined", pa.int64()),
        ("first_seq", pa.int64()),
        ("last_seq", pa.int64()),
        ("completed_at", TS),
        ("batch_id", pa.string()),
    ]
)

FINDINGS = pa.schema(
    [
        ("evaluation_id", pa.string()),
        ("as_of", TS),
        ("evaluated_at", TS),
        ("code_version", pa.string()),
        ("tree_size", pa.int64()),
        ("rule_id", pa.string()),
        ("event_id", pa.string()),
        ("tenant_id", pa.string()),
        ("occurred_at", TS),
        ("severity", pa.string()),
        ("detail", pa.string()),
    ]
)

INCIDENTS = pa.schema(
    [
        ("incident_id", pa.string()),
        ("at", TS),
        ("kind", pa.string()),
        ("object", pa.string()),
        ("detail", pa.string()),
    ]
)

# Perfect Merkle nodes of level >= 8 (a proof cache written by ingest; see proofs.py).
TILES = pa.schema([("level", pa.int32()), ("idx", pa.int64()), ("hash", pa.string())])

SCHEMAS: dict[str, pa.Schema] = {
    "ledger": LEDGER,
    "checkpoints": CHECKPOINTS,
    "quarantine": QUARANTINE,
    "ingest_log": INGEST_LOG,
    "findings": FINDINGS,
    "incidents": INCIDENTS,
    "tiles": TILES,
}
PARTITIONS = {"ledger": ["event_date"], "tiles": ["level"]}
# Tables whose rows no chain or signed checkpoint seals: each commit to one is signed
# (ledger.commits). The tiles, a cache of Merkle nodes that a proof is checked against the
# signed checkpoint anyway, too: a forged commit would otherwise be sealed for good.
SIGNED_COMMITS = ("quarantine", "ingest_log", "findings", "incidents", "tiles")
# Old log entries are the audit trail of the tables: never let delta-rs clean them up.
TABLE_CONFIG = {"delta.appendOnly": "true", "delta.enableExpiredLogCleanup": "false"}
# Long values no reader prunes files by (sealed text, leaves, hashes, raw lines): without
# these the Delta log keeps every file's full min and max of each (delta-rs does not cut
# them), about 4.3 KB of statistics per ledger file that every log replay parses (each
# DuckDB query over delta_scan replays it: a third of a second at 10M events).
NO_STATS = {
    "ledger": {"actor_ip_sealed", "subject_pii_sealed", "phone_bidx", "data", "leaf", "hash"},
    "checkpoints": {"root", "chain_head", "prev_checkpoint_hash", "signature", "checkpoint_hash", "frontier"},
    "quarantine": {"reason", "raw"},
    "findings": {"detail"},
    "incidents": {"detail"},
    "tiles": {"hash"},
}


def table_config(name: str) -> dict[str, str]:
    """The properties a table is created with."""
    stats = [f.name for f in SCHEMAS[name] if f.name not in NO_STATS.get(name, ()) and f.name not in PARTITIONS.get(name, ())]
    return {**TABLE_CONFIG, "delta.dataSkippingStatsColumns": ",".join(stats)}

# Columns with a value per row: dictionary encoding only costs time there (about a third of
# the ledger's write) for the same size after compression.
UNIQUE_COLUMNS = {
    "ledger": ["event_id", "actor_ip_sealed", "subject_pii_sealed", "phone_bidx", "data", "leaf", "hash"],
}


# Columns looked up by value: a Parquet bloom filter lets a reader (DuckDB) skip the row
# groups that cannot hold it, where min/max statistics of random ids skip nothing.
BLOOM_COLUMNS = {"ledger": ["event_id"]}
BLOOM_NDV = 100_000  # sized for a batch's file (the writer's default, a million, holds 1.2 MB per open file)
WRITE_CHUNK_ROWS = 4096  # rows per piece of the stream append() hands delta-rs


def _writer_properties(name: str):
    from deltalake import BloomFilterProperties, ColumnProperties, WriterProperties

    columns = {c: ColumnProperties(dictionary_enabled=False) for c in UNIQUE_COLUMNS.get(name, [])}
    for c in BLOOM_COLUMNS.get(name, []):
        columns[c] = ColumnProperties(dictionary_enabled=False,
                                      bloom_filter_properties=BloomFilterProperties(True, fpp=0.01, ndv=BLOOM_NDV))
    # Compression stated: per-column properties would otherwise leave the files uncompressed.
    return WriterProperties(compression="SNAPPY", column_properties=columns)


def append(lake: Lake, name: str, rows: pa.Table, read_version: int | None, metadata: dict | None = None) -> int:
    """Blind-append `rows` to table `name` as the commit right after `read_version`
    (None: the table must not exist yet). Raises ConflictError if another commit won."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError, DeltaError

    from .retention import discard_uncommitted, made_here

    rows = rows.select(SCHEMAS[name].names).cast(SCHEMAS[name])
    dt = lake.latest(name)  # brought up to date: a commit by another writer is seen here
    if (dt.version() if dt is not None else None) != read_version:
        raise ConflictError(f"table {name} moved past version {read_version}")
    metadata = {"auditlake": "append", **(metadata or {})}
    if name in SIGNED_COMMITS:
        metadata.update(_commit_signature(lake, name, rows, read_version + 1 if read_version is not None else 0))
    props = CommitProperties(max_commit_retries=0, custom_metadata=metadata)
    try:
        write_deltalake(
            dt if dt is not None else lake.table_uri(name),
            # As a stream of small batches: given the table, the writer splits a copy of it by
            # partition (about 85 MB more at the peak of a 75K-event batch).
            rows.to_reader(max_chunksize=WRITE_CHUNK_ROWS),
            mode="append" if dt is not None else "error",
            partition_by=PARTITIONS.get(name) if dt is None else None,
            configuration=table_config(name) if dt is None else None,
            storage_options=lake.storage_options or None if dt is None else None,
            commit_properties=props,
            writer_properties=_writer_properties(name),
        )
    except CommitFailedError as exc:
        discard_uncommitted(lake, name, rows)  # the data files of the lost commit
        raise ConflictError(f"table {name}: concurrent commit ({exc})") from exc
    except (DeltaError, OSError) as exc:
        if isinstance(exc, DeltaError) and dt is None and "exists" in str(exc).lower():
            raise ConflictError(f"table {name} was created concurrently") from exc
        # A write that failed (a full disk, a refused log entry): its data files would be
        # reported as inserted by verify until a later commit passes them.
        discard_uncommitted(lake, name, rows)
        from .s3 import error_line

        raise AuditlakeError(f"cannot append to table {name}: {error_line(exc)}") from exc
    version = (read_version + 1) if read_version is not None else 0
    made_here(lake, name, version)
    return version


def _commit_signature(lake: Lake, name: str, rows: pa.Table, version: int) -> dict[str, str]:
    """The commitInfo entries that sign `rows` as version `version` of table `name`. (Without
    retries a commit lands at exactly that version or not at all.)"""
    from ..ledger import commits
    from .meta import open_lake_keys

    keys = open_lake_keys(lake)
    digest = commits.rows_digest(zip(*(c.to_pylist() for c in rows.columns)))
    body = commits.commit_body(keys.log_id, name, version, digest, keys.signing_key_id)
    return {commits.ROWS: digest, commits.KEY_ID: keys.signing_key_id,
            commits.SIGNATURE: commits.sign(keys.signing_key(), body)}


def commit_signature_problem(lake: Lake, name: str, version: int, info: dict, adds: list[tuple[str, dict]],
                             public: dict, log_id: str) -> str | None:
    """Why version `version` of table `name` (its commitInfo `info`, adding `adds`: each file's
    path relative to the table, percent-decoded, and its add action's partitionValues) does
    not carry the lake's signature of its rows; None if it does, or if a file is gone (the
    history checks report that). A partition column's values are the add action's, as
    readers take them. `public`: {key_id: Ed25519PublicKey}."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from ..ledger import commits

    key_id, signature = info.get(commits.KEY_ID), info.get(commits.SIGNATURE)
    if not isinstance(signature, str) or key_id not in public:
        return f"version {version} carries no signature of the lake"
    fs, root = lake.filesystem()
    files = [f"{root}/tables/{name}/{p}" for p, _ in adds]
    partitions = PARTITIONS.get(name, [])
    stored = set(SCHEMAS[name].names) - set(partitions)
    try:
        rows = []
        for f, (_, values) in zip(files, adds):
            t = pq.read_table(fs.open_input_file(f))
            if set(t.column_names) != stored:
                # A column dropped or added would not change the signed values read by name.
                return f"version {version}: a file whose columns are not the table's"
            for c in partitions:
                value = values.get(c) if isinstance(values, dict) else None
                t = t.append_column(c, pa.array([value] * t.num_rows, pa.string()).cast(SCHEMAS[name].field(c).type))
            rows.append(t.select(SCHEMAS[name].names))
        digest = commits.rows_digest(r for t in rows for r in zip(*(c.to_pylist() for c in t.columns)))
    except (OSError, pa.ArrowException, ValueError):  # ValueError: bytes changed into invalid UTF-8
        if any(info.type == pafs.FileType.NotFound for info in fs.get_file_info(files)):
            return None
        return f"version {version}: a file that does not read as the rows the lake wrote"
    body = commits.commit_body(log_id, name, version, digest, key_id)
    if digest != info.get(commits.ROWS) or not commits.signature_valid(public[key_id], signature, body):
        return f"version {version}: its rows are not the ones the lake signed"
    return None


def dataset(lake: Lake, name: str, dt=None, rel_paths: list[str] | None = None):
    """The live data files of table `name` (at `dt`'s version, else the latest; or just
    `rel_paths` of them) as a pyarrow dataset without the partition columns. Much cheaper
    to open than DeltaTable.to_pyarrow_dataset(), which builds a partition expression per
    file."""
    import pyarrow.dataset as ds
    from urllib.parse import unquote

    partitions = set(PARTITIONS.get(name, ()))
    schema = pa.schema([f for f in SCHEMAS[name] if f.name not in partitions])
    fs, root = lake.filesystem()
    if rel_paths is None:
        dt = dt if dt is not None else lake.delta(name)
        rel_paths = pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist() if dt is not None else []
    return ds.dataset([f"{root}/tables/{name}/{unquote(p)}" for p in rel_paths], schema=schema, format="parquet",
                      filesystem=fs)


def files_for_seq_ranges(dt, ranges: list[tuple[int, int]]) -> list[str]:
    """Paths of the ledger files whose seq statistics overlap any [lo, hi): the others'
    footers need not even be opened (thousands of files in a large ledger)."""
    acts = pa.table(dt.get_add_actions(flatten=True))
    names = acts.column("path").to_pylist()
    cols = acts.column_names
    mins = acts.column("min.seq").to_pylist() if "min.seq" in cols else [None] * len(names)
    maxs = acts.column("max.seq").to_pylist() if "max.seq" in cols else [None] * len(names)
    return [
        name
        for name, lo_f, hi_f in zip(names, mins, maxs)
        if lo_f is None or hi_f is None or any(lo_f < hi and hi_f >= lo for lo, hi in ranges)
    ]


def version(lake: Lake, name: str) -> int | None:
    dt = lake.latest(name)
    return None if dt is None else dt.version()
