"""Ingest: landing files -> contract check -> sealed, chained ledger rows -> checkpoint.

Exactly once, crash-safe and safe with concurrent writers, because every step is an
idempotent function of the tables' state and every commit is an optimistic blind append
that fails if another writer committed first (then the whole plan is redone):

1. ledger rows of a batch (one Delta commit; the atomic point),
2. the batch's quarantine rows,
3. ingest-log rows of the files the batch finished (a file is done once it is logged),
4. a signed checkpoint over the new tree.

A crash between steps leaves rows that the next run recognises by
(source_sha256, line) and completes; a file's identity is its content hash, so a file
dropped again under any name is skipped.

Sealing (the contract check, PII encryption and canonical record; sealing.py) depends on
none of that state, so chunks of lines are sealed ahead, by worker processes on a
multi-core machine, while this process numbers, chains and commits them in order.
"""
from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from . import audit_events, landing, proofs, sealing
from .errors import AuditlakeError, ConflictError
from .head import Head, load_head, prev_checkpoint_hash
from .keys import KeyStore
from .lake import retention, tables
from .lake.meta import open_lake_keys
from .lake.store import Lake
from .ledger import chain, merkle, packed
from .ledger.checkpoint import Checkpoint

# A batch (one commit per table) closes at this many lines or raw landing bytes; sealing
# works on smaller chunks, up to WINDOW of them in flight while a batch commits.
BATCH_LINES = 75_000
BATCH_BYTES = 64 << 20
CHUNK_LINES = 5_000
WINDOW = 12
PARALLEL_MIN_BYTES = 16 << 20  # below this much landing input, seal in-process
DIRECT_LOOKUP_IDS = 2_000  # a first batch this small looks its event ids up instead of indexing the ledger
# The replay index's runs stop merging at this many ids (64 MB): a merge holds both runs and
# their union at once, so bigger runs would raise the peak memory of a large run by hundreds of MB.
RUN_MAX_IDS = 1 << 22
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
MAX_ATTEMPTS = 40


@dataclass
class FileReport:
    file: str
    sha256: str
    lines_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    skipped: bool = False
    # A skipped file (its content was ingested before, under any name): the name it was
    # ingested as, whose counts the three above are (this file added nothing).
    ingested_as: str | None = None
    # A file ingested under a name that earlier held other content (landing files are
    # immutable: a producer rewrote it): that content's SHA-256. Its lines were taken as new.
    name_held_other: str | None = None


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    accepted: int = 0
    quarantined: int = 0
    batches: int = 0
    tree_size: int = 0
    root: str = ""
    checkpoint_hash: str = ""
    duration_s: float = 0.0
    retries: int = 0
    workers: int = 0  # sealing worker processes (0: sealed in the ingest process)
    ignored: list[dict] = field(default_factory=list)  # what the landing folders hold that is no landing file
    catalog_note: str | None = None  # why the lake's catalog, built before a table this run made, is not rebuilt

    @property
    def lines_read(self) -> int:
        """Of the files this run ingested: accepted + quarantined (skipped files show their
        first ingest's counts in `files`)."""
        return sum(f.lines_read for f in self.files if not f.skipped)

    def to_dict(self) -> dict:
        return {
            "files": [vars(f) for f in self.files],
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "lines_read": self.lines_read,
            "batches": self.batches,
            "tree_size": self.tree_size,
            "root": self.root,
            "checkpoint_hash": self.checkpoint_hash,
            "duration_s": round(self.duration_s, 3),
            "retries": self.retries,
            "workers": self.workers,
            "ignored": self.ignored,
            "catalog_note": self.catalog_note,
        }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ----------------------------------------------------------------------------- state
@dataclass
class _State:
    head: Head
    done: set[str]  # source_sha256 of logged (finished) files
    seen_ledger: set[str]  # source_sha256 with any ledger row
    # Per source_sha256, its lines in the quarantine as the plan began (signed commits only),
    # and how many rows it has there now (the plan's own commits added).
    quarantined_lines: dict[str, set[int]]
    quarantine_version: int | None
    log_version: int | None
    event_index: _EventIndex | None = None
    fresh: bool = False  # see ingest(): no ledger row can come from these files
    # Ledger rows per file planned in this plan: (count, first seq, last seq), exact while
    # the ledger is at head.ledger_version (every commit since the plan is this run's own).
    file_rows: dict[str, tuple[int, int | None, int | None]] = field(default_factory=dict)
    quarantine_rows: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self.quarantine_rows.update({sha: len(lines) for sha, lines in self.quarantined_lines.items()})


def _shas_with_rows(lake: Lake, name: str, shas: set[str]) -> tuple[set[str], int | None]:
    """Which of these landing files (content hashes) have rows in table `name`, and the
    table's version. Only the data files whose source_sha256 statistics can hold one of them
    are read: the tables gain files with every batch, and an ingest of a few files into a
    large lake must not read them all (the ledger's 4,000 files at 10M events took 2-4 s)."""
    dt = lake.latest(name)
    if dt is None:
        return set(), None
    version = dt.version()
    wanted = sorted(shas)
    acts = pa.table(dt.get_add_actions(flatten=True))
    paths = acts.column("path").to_pylist()
    if {"min.source_sha256", "max.source_sha256"} <= set(acts.column_names):
        lo, hi = acts.column("min.source_sha256").to_pylist(), acts.column("max.source_sha256").to_pylist()
        paths = [p for p, a, b in zip(paths, lo, hi) if a is None or b is None or retention.any_between(wanted, a, b)]
    found: set[str] = set()
    if wanted and paths:
        for b in tables.dataset(lake, name, dt, paths).to_batches(  # bounded memory
                columns=["source_sha256"], filter=pc.field("source_sha256").isin(wanted)):
            found.update(pc.unique(b.column(0)).to_pylist())
    return found, version


def _signed_rows(lake: Lake, keys: KeyStore, name: str, shas: set[str], columns: list[str]) -> pa.Table:
    """The rows of table `name` of these landing files (content hashes) that commits the lake
    signed hold (source_sha256 and `columns`): a forged ingest log or quarantine row must not
    make ingest skip a landing file or line (verify reports its commit as unsigned_commit).
    Only the files whose statistics allow one of the hashes are read."""
    from .keys import load_public_key

    out = [pa.table({c: pa.array([], tables.SCHEMAS[name].field(c).type) for c in ["source_sha256", *columns]})]
    if not shas:
        return out[0]
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    allowed = {"source_sha256": sorted(shas)}
    for info, log, data in retention.entries(lake, name):
        maybe = [d.rel.split("/", 2)[2] for d in data if retention.stats_allow(d.action, allowed)]
        if not maybe:
            continue
        rows = tables.dataset(lake, name, rel_paths=maybe).to_table(
            columns=["source_sha256", *columns], filter=pc.field("source_sha256").isin(allowed["source_sha256"]))
        if rows.num_rows and _signed(lake, keys, name, info, log, data, public):
            out.append(rows)
    return pa.concat_tables(out)


_signed_verdicts: dict[tuple, bool] = {}  # a log entry never changes: known by its write time and size


def _signed(lake: Lake, keys: KeyStore, name: str, info, log: retention.Obj, data: list[retention.Obj],
            public: dict) -> bool:
    key = (lake.uri, name, log.version, info.mtime_ns, info.size)
    if key not in _signed_verdicts:
        _signed_verdicts[key] = not tables.commit_signature_problem(
            lake, name, log.version, log.action or {},
            [(d.rel.split("/", 2)[2], (d.action or {}).get("partitionValues")) for d in data], public, keys.log_id)
    return _signed_verdicts[key]


def _load_state(lake: Lake, keys: KeyStore, files: list[landing.LandingFile], fresh_since: int | None = None) -> _State:
    try:
        return _read_state(lake, keys, files, fresh_since)
    except FileNotFoundError as exc:  # a file a table's log names is gone: never ingest on top of that
        raise AuditlakeError(f"a committed file of the lake is missing ({exc}): the lake is damaged; run "
                             "`auditlake verify`, then `auditlake repair` (nothing was written)") from exc


def _read_state(lake: Lake, keys: KeyStore, files: list[landing.LandingFile], fresh_since: int | None = None) -> _State:
    """The plan's state for these landing files. Lake.latest: tables already open in this
    process (an export's audit event) are only brought up to date; each version is taken
    before anything else can update its table."""
    # Hashing every file before sealing starts costs seconds on a bulk load (2.7 GB: 6.6 s
    # here); a lake with none of these tables has nothing to look up, so a first load is
    # hashed file by file as its lines are read (_chunks).
    looked_up = any(lake.latest(name) is not None for name in ("ingest_log", "quarantine", "ledger"))
    shas = {lf.sha256() for lf in files} if looked_up else set()
    done, log_version = _shas_with_rows(lake, "ingest_log", shas)
    done = set(_signed_rows(lake, keys, "ingest_log", done, []).column("source_sha256").to_pylist())
    q_sha, q_version = _shas_with_rows(lake, "quarantine", shas)
    quarantined: dict[str, set[int]] = {}
    for row in _signed_rows(lake, keys, "quarantine", q_sha, ["line"]).to_pylist():
        quarantined.setdefault(row["source_sha256"], set()).add(row["line"])
    head = load_head(lake, keys)
    # New files of new events (see ingest()): while the ledger is where it was when they were
    # written, none of its rows can come from them. Once it moved, another ingest may have
    # taken them (every ingest takes the audit files not yet logged): searched as any file.
    fresh = fresh_since is not None and (head.ledger_version if head.ledger_version is not None else -1) == fresh_since
    l_sha = set()
    if head.ledger_version is not None and not fresh:
        l_sha, _ = _shas_with_rows(lake, "ledger", shas)
    return _State(head, done, l_sha, quarantined, q_version, log_version, fresh=fresh)


def _rows_of(lake: Lake, sha: str) -> pa.Table:
    """(source_line, seq) of the ledger rows of one landing file."""
    return tables.dataset(lake, "ledger").to_table(columns=["source_line", "seq"], filter=pc.field("source_sha256") == sha)


def _ids_in_ledger(lake: Lake, ids: list[str], version: int | None) -> set[str]:
    """Event ids already in the ledger as of `version`, the snapshot this batch will commit on
    (a newer snapshot could hold lines another writer just sealed: this batch's commit will
    fail and re-plan, but a batch of only "replays" would wrongly quarantine them)."""
    if not ids or version is None:
        return set()
    dt = lake.delta("ledger")
    if dt is None:
        return set()
    if dt.version() != version:
        dt.load_as_version(version)
    t = tables.dataset(lake, "ledger", dt).to_table(columns=["event_id"], filter=pc.field("event_id").isin(ids))
    return set(t.column("event_id").to_pylist())


_HEX = np.full(256, 255, np.uint8)  # ASCII byte -> its value as a lowercase hex digit, else 255
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_UUID_DIGITS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _uuid_keys(ids) -> tuple[np.ndarray, np.ndarray]:
    """(16-byte key, is a canonical lowercase UUID) of each id: the UUID's bytes as numpy
    'S16', whose order and equality are those of the bytes (zeros where not a UUID).
    Vectorised over the arrow string buffer."""
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64, n + 1, 8 * arr.offset)
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    ok = np.diff(offsets) == 36
    if arr.null_count:
        ok &= np.asarray(arr.is_valid())
    if ok.all() and offsets[-1] - offsets[0] == 36 * n:  # the usual case: 36 bytes each, back to back
        text = data[offsets[0]:offsets[-1]].reshape(n, 36)
    else:
        text = np.zeros((n, 36), np.uint8)
        for i in np.flatnonzero(ok):
            text[i] = data[offsets[i]:offsets[i] + 36]
    nibbles = _HEX[text[:, _UUID_DIGITS]]
    ok &= (text[:, [8, 13, 18, 23]] == ord("-")).all(axis=1) & (nibbles != 255).all(axis=1)
    raw = (nibbles[:, 0::2] << 4) | (nibbles[:, 1::2] & 15)  # 16 bytes per id
    raw[~ok] = 0
    return np.ascontiguousarray(raw).view("S16").ravel(), ok


class _EventIndex:
    """The event ids in the ledger at the planned snapshot plus this run's own commits, held
    exactly and compactly: a canonical UUID (the contract's event_id) is 16 bytes, so a
    batch's replays are found in memory instead of by a search of every ledger file per
    batch. Sorted runs are merged by size up to RUN_MAX_IDS, like a log-structured tree (a
    stable sort merges two sorted runs in one pass). An id that is not a canonical UUID (none
    passes the contract; only a tampered ledger could hold one) is kept as text."""

    def __init__(self, lake: Lake | None, version: int | None):
        self._runs: list[np.ndarray] = []  # sorted 'S16' keys
        self._others: set[str] = set()
        if version is not None:
            dt = lake.delta("ledger")
            if dt.version() != version:
                dt.load_as_version(version)
            ledger = tables.dataset(lake, "ledger", dt)
            run = np.empty(ledger.count_rows(), "S16")  # filled in place: no second copy of the index
            filled, pending, rows = 0, [], 0

            def convert():  # a million ids at a time: a call per ledger file costs more than the work
                nonlocal filled
                keys = self._keys(pa.concat_arrays(pending))
                pending.clear()
                run[filled:filled + len(keys)] = keys
                filled += len(keys)

            for b in ledger.to_batches(columns=["event_id"]):
                pending.append(b.column(0))
                rows += b.num_rows
                if rows >= 1 << 20:
                    convert()
                    rows = 0
            if pending:
                convert()
            if filled:
                run = run[:filled]
                run.sort()  # in place
                self._runs.append(run)

    def _keys(self, ids) -> np.ndarray:
        """The keys of the canonical UUIDs among ids; the other ids go to the text set."""
        keys, ok = _uuid_keys(ids)
        if not ok.all():
            ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
            self._others.update(ids.filter(pa.array(~ok)).to_pylist())
        return keys[ok]

    def add(self, ids) -> None:
        keys = self._keys(ids)
        if not len(keys):
            return
        self._runs.append(np.sort(keys))
        while (len(self._runs) > 1 and 2 * len(self._runs[-1]) >= len(self._runs[-2])
               and len(self._runs[-1]) + len(self._runs[-2]) <= RUN_MAX_IDS):
            merged = np.concatenate([self._runs.pop(-2), self._runs.pop()])
            merged.sort(kind="stable")  # timsort: the two sorted runs merge in one pass
            self._runs.append(merged)

    def known(self, ids) -> np.ndarray:
        """Which ids are in the index (exactly)."""
        found = np.zeros(len(ids), bool)
        if not len(ids):
            return found
        keys, ok = _uuid_keys(ids)
        order = np.argsort(keys)  # sorted keys: searchsorted walks each run once
        keys, ok = keys[order], ok[order]
        hit = np.zeros(len(ids), bool)
        for run in self._runs:
            at = np.searchsorted(run, keys).clip(max=len(run) - 1)
            hit |= ok & (run[at] == keys)
        found[order] = hit
        if self._others:
            found |= np.array([x in self._others for x in ids.to_pylist()], bool)
        return found


# ----------------------------------------------------------------------------- batches
@dataclass
class _Batch:
    sealed: list[pa.RecordBatch] = field(default_factory=list)  # sealing.SEALED
    bad: list[dict] = field(default_factory=list)  # quarantine rows without batch fields
    finished: list[tuple[landing.LandingFile, str, int]] = field(default_factory=list)  # (file, sha, lines)
    lines: int = 0
    raw_bytes: int = 0
    last: bool = False  # the run's last batch


@dataclass
class _Pending:
    """A chunk handed to the sealers, and the file it finishes (with its line count), if any."""

    future: Future
    lines: int
    finishes: tuple[landing.LandingFile, str, int] | None = None


def _chunks(lake: Lake, files: list[landing.LandingFile], state: _State, report: IngestReport
            ) -> Iterator[tuple[sealing.Chunk, int, tuple[landing.LandingFile, str, int] | None]]:
    """(chunk, its line count, the file it finishes) for the lines still to do, in file
    order; a file's last chunk (possibly empty) carries the file and its line count."""
    this_run: set[str] = set()
    for lf in files:
        sha = lf.sha256()
        fr = FileReport(lf.name, sha)
        report.files.append(fr)
        if sha in state.done or sha in this_run:  # same content under any name: once
            fr.skipped = True
            continue
        this_run.add(sha)
        # Lines already committed by an interrupted or concurrent run are not redone.
        committed: set[int] = set()
        state.file_rows[sha] = (0, None, None)
        if sha in state.seen_ledger:
            rows = _rows_of(lake, sha)
            committed = set(rows.column("source_line").to_pylist())
            if rows.num_rows:
                seqs = rows.column("seq")
                state.file_rows[sha] = (rows.num_rows, pc.min(seqs).as_py(), pc.max(seqs).as_py())
        skip = frozenset(committed | state.quarantined_lines.get(sha, set()))
        lines = 0
        for first, block in lf.blocks(CHUNK_LINES):
            size = landing.block_size(block)
            lines = first + size - 1
            for i in range(0, size, CHUNK_LINES):
                part = block[i : i + CHUNK_LINES] if isinstance(block, list) else block
                n = landing.block_size(part)
                part_skip = frozenset(ln for ln in range(first + i, first + i + n) if ln in skip) if skip else frozenset()
                yield sealing.Chunk(lf.name, sha, first + i, part, part_skip), n, None
        yield sealing.Chunk(lf.name, sha, lines + 1, []), 0, (lf, sha, lines)


def _batches(lake: Lake, files: list[landing.LandingFile], state: _State, report: IngestReport,
             sealers: sealing.InlineSealing | sealing.WorkerSealing) -> Iterator[_Batch]:
    """Batches of sealed chunks, in landing order; up to WINDOW chunks are being sealed
    ahead while the caller commits."""
    pending: deque[_Pending] = deque()
    batch = _Batch()
    try:
        for chunk, lines, finishes in _chunks(lake, files, state, report):
            pending.append(_Pending(sealers.submit(chunk), lines, finishes))
            while len(pending) >= WINDOW or (pending and pending[0].future.done()):
                if _add(batch, pending.popleft()):
                    yield batch
                    batch = _Batch()
        while pending:
            if _add(batch, pending.popleft()):
                yield batch
                batch = _Batch()
        if batch.lines or batch.finished:
            batch.last = True
            yield batch
    finally:
        for p in pending:  # a re-plan abandons chunks sealed for this plan
            p.future.cancel()


def _add(batch: _Batch, p: _Pending) -> bool:
    """Add a sealed chunk to the batch; True when the batch is full."""
    sealed: sealing.SealedChunk = p.future.result()
    if sealed.rows.num_rows:
        batch.sealed.append(sealed.rows)
    batch.bad.extend(sealed.bad)
    batch.lines += p.lines
    batch.raw_bytes += sealed.raw_bytes
    if p.finishes:
        batch.finished.append(p.finishes)
    return batch.lines >= BATCH_LINES or batch.raw_bytes >= BATCH_BYTES


def _sealing(keys: KeyStore, files: list[landing.LandingFile]) -> sealing.InlineSealing | sealing.WorkerSealing:
    """AUDITLAKE_INGEST_WORKERS worker processes if set (0 or 1: none); by default one per
    core when there is more than one and the input is large enough to pay for them."""
    setting = os.environ.get("AUDITLAKE_INGEST_WORKERS", "").strip()
    if setting:
        try:
            workers = int(setting)
        except ValueError:
            raise AuditlakeError(f"AUDITLAKE_INGEST_WORKERS must be a number, not {setting!r}") from None
    else:
        workers = (os.cpu_count() or 1) if sum(f.size for f in files) >= PARALLEL_MIN_BYTES else 1
    return sealing.WorkerSealing(keys, workers) if workers > 1 else sealing.InlineSealing(keys)


# ----------------------------------------------------------------------------- commit
def _checkpoint(lake: Lake, keys: KeyStore, head: Head, batch_id: str) -> Checkpoint:
    cp = Checkpoint(
        log_id=keys.log_id,
        tree_size=head.tree_size,
        root=head.frontier.root().hex(),
        chain_head=head.chain_head.hex(),
        time=_iso(_now()),
        prev_checkpoint_hash=prev_checkpoint_hash(head),
        key_id=keys.signing_key_id,
    ).signed(keys.signing_key())
    row = cp.to_dict() | {"frontier": head.frontier.to_hex(), "batch_id": batch_id}
    head.checkpoints_version = tables.append(
        lake, "checkpoints", pa.Table.from_pylist([row], schema=tables.CHECKPOINTS), head.checkpoints_version
    )
    head.checkpoint = cp
    head.checkpoint_frontier_size = head.tree_size
    return cp


def _recover(lake: Lake, keys: KeyStore, head: Head) -> None:
    """Seal the tail a crash left after the last checkpoint. Its tiles are stored again
    first: the crashed run may have died with their data file written but not committed, a
    file that only a later commit to the tiles table lets `retention.sweep` remove, and the
    rerun may have no batch of its own to make one. (Tiles the crashed run did commit are
    stored twice; readers take the first of equal hashes.)"""
    proofs.extend_frontier(lake, head.checkpoint_frontier, head.tail_leaf_hashes)
    _checkpoint(lake, keys, head, "recovery")


def _replays(lake: Lake, state: _State, sealed: pa.Table, last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are replays: an event_id already in the ledger, or repeated within this
    batch (the first one wins): (replay mask, already-in-the-ledger mask)."""
    ids = sealed.column("event_id")
    known = np.zeros(len(ids), bool)
    if state.fresh:
        pass
    elif state.event_index is None and (last or len(ids) <= DIRECT_LOOKUP_IDS):
        # A run of one batch (a lake-written audit event, a trickle of lines, a day's file)
        # or a small first batch: one filtered read of the ledger's event ids costs less
        # than indexing them all.
        in_ledger = _ids_in_ledger(lake, ids.to_pylist(), state.head.ledger_version)
        if in_ledger:
            known = pc.is_in(ids, pa.array(sorted(in_ledger), pa.string())).to_numpy(zero_copy_only=False)
    else:
        if state.event_index is None:
            state.event_index = _EventIndex(lake, state.head.ledger_version)
        known = state.event_index.known(ids)
    repeated = ~pl.from_arrow(ids).is_first_distinct().to_numpy()
    return known | repeated, known


def _ledger_rows(keys: KeyStore, head: Head, sealed: pa.Table, batch_id: str, now: datetime
                 ) -> tuple[pa.Table, bytes, bytes]:
    """The ledger rows of the sealed events, numbered from the head: each record completed
    with its seq and ingested_at, chained and leaf-hashed by the batch hasher straight from
    the arrow buffers, chunk by chunk. Returns the table, the RFC 6962 leaf hashes (packed)
    and the new chain head."""
    key_id = keys.chain_key_id
    key = keys.chain_keys()[key_id]
    ingested = pa.scalar(orjson.dumps(_iso(now)).decode())
    pos, prev = head.tree_size, head.chain_head
    seqs, leaves, hashes, leaf_hashes = [], [], [], []
    for rb in sealed.to_batches():
        if not rb.num_rows:
            continue
        seq = pa.array(np.arange(pos, pos + rb.num_rows, dtype=np.int64))
        leaf = pc.binary_join_element_wise(rb["leaf_head"], ingested, rb["leaf_mid"], pc.cast(seq, pa.string()),
                                           rb["leaf_tail"], "")
        links = chain.extend({key_id: key}, prev, [key_id] * rb.num_rows, leaf)
        leaf_hashes.append(merkle.leaf_hashes(leaf))
        pos, prev = pos + rb.num_rows, links[-packed.HASH_SIZE:]
        seqs.append(seq)
        leaves.append(leaf)
        hashes.append(packed.hex_array(links))
    n = sealed.num_rows
    extra = {
        "seq": pa.chunked_array(seqs, pa.int64()),
        "occurred_at": sealed["occurred_at"].cast(tables.TS),
        "ingested_at": pa.array(np.full(n, (now - _EPOCH) // _MICROSECOND, np.int64)).cast(tables.TS),
        "leaf": pa.chunked_array(leaves, pa.string()),
        "hash": pa.chunked_array(hashes, pa.string()),
        "key_id": pa.array(np.full(n, key_id, object), pa.string()),
        "batch_id": pa.array(np.full(n, batch_id, object), pa.string()),
    }
    table = pa.table([extra[f.name] if f.name in extra else sealed[f.name] for f in tables.LEDGER], schema=tables.LEDGER)
    return table, b"".join(leaf_hashes), prev


def _commit_batch(lake: Lake, keys: KeyStore, state: _State, batch: _Batch) -> tuple[int, int]:
    head = state.head
    batch_id = uuid.uuid4().hex
    now = _now()
    sealed = pa.Table.from_batches(batch.sealed, schema=sealing.SEALED)
    batch.sealed = []
    if sealed.num_rows:
        replay, known = _replays(lake, state, sealed, batch.last)
        for i in np.flatnonzero(replay):
            reason = "replay: event_id already in the ledger" if known[i] else "replay: event_id repeated in this batch"
            batch.bad.append(sealing.quarantine_row(
                sealed["source_file"][i].as_py(), sealed["source_sha256"][i].as_py(), sealed["source_line"][i].as_py(),
                reason, sealed["raw"][i].as_py(), {"event_id": sealed["event_id"][i].as_py()}))
        sealed = sealed.drop_columns(["raw"])
        if replay.any():
            sealed = sealed.filter(pa.array(~replay))
    n = sealed.num_rows

    if n:
        table, leaf_hashes, chain_head = _ledger_rows(keys, head, sealed, batch_id, now)
        del sealed  # the record parts: the table holds the completed leaves (less memory while it is written)
        head.ledger_version = tables.append(lake, "ledger", table, head.ledger_version, {"batch_id": batch_id})
        head.frontier = proofs.extend_frontier(lake, head.frontier, leaf_hashes)  # also stores tiles
        head.chain_head = chain_head
        head.tree_size += n
        by_file = table.group_by("source_sha256").aggregate([("seq", "count"), ("seq", "min"), ("seq", "max")])
        for sha, count, first, last in zip(*(by_file.column(c).to_pylist() for c in ("source_sha256", "seq_count", "seq_min", "seq_max"))):
            had, lo, hi = state.file_rows.get(sha, (0, None, None))
            state.file_rows[sha] = (had + count, first if lo is None else min(lo, first), last if hi is None else max(hi, last))
        state.seen_ledger.update(by_file.column("source_sha256").to_pylist())
        if state.event_index is not None:  # else the next batch reads the ledger, this commit included
            state.event_index.add(table["event_id"])

    if batch.bad:
        for b in batch.bad:
            b["quarantined_at"] = now
            b["batch_id"] = batch_id
        qt = pa.Table.from_pylist(batch.bad, schema=tables.QUARANTINE)
        state.quarantine_version = tables.append(lake, "quarantine", qt, state.quarantine_version, {"batch_id": batch_id})
        state.quarantine_rows.update(b["source_sha256"] for b in batch.bad)

    if batch.finished:
        _log_files(lake, keys, state, batch, batch_id, now)

    if head.tree_size > head.checkpoint_frontier_size:
        _checkpoint(lake, keys, head, batch_id)
    retention.lock_new(lake, keys)
    sealing.release_memory()
    return n, len(batch.bad)


def _counts(lake: Lake, name: str, shas: list[str], extra: str | None = None) -> dict[str, tuple[int, int | None, int | None]]:
    dt = lake.latest(name)
    if dt is None or not shas:
        return {}
    cols = ["source_sha256"] + ([extra] if extra else [])
    t = tables.dataset(lake, name, dt).to_table(columns=cols, filter=pc.field("source_sha256").isin(shas))
    if extra:
        g = t.group_by("source_sha256").aggregate([(extra, "count"), (extra, "min"), (extra, "max")])
        return {r["source_sha256"]: (r[f"{extra}_count"], r[f"{extra}_min"], r[f"{extra}_max"]) for r in g.to_pylist()}
    g = t.group_by("source_sha256").aggregate([("source_sha256", "count")])
    return {r["source_sha256"]: (r["source_sha256_count"], None, None) for r in g.to_pylist()}


def _log_files(lake: Lake, keys: KeyStore, state: _State, batch: _Batch, batch_id: str, now: datetime) -> None:
    shas = [sha for _, sha, _ in batch.finished]
    if tables.version(lake, "ledger") == state.head.ledger_version:
        acc = {sha: state.file_rows[sha] for sha in shas if state.file_rows.get(sha, (0,))[0]}
    else:  # another writer committed since: count what the ledger holds now
        acc = _counts(lake, "ledger", shas, "seq")
    if tables.version(lake, "quarantine") == state.quarantine_version:
        quar = state.quarantine_rows
    else:  # another writer committed since: count what the lake signed
        quar = Counter(_signed_rows(lake, keys, "quarantine", set(shas), []).column("source_sha256").to_pylist())
    rows = []
    for lf, sha, lines in batch.finished:
        a, first, last = acc.get(sha, (0, None, None))
        q = quar[sha]
        if a + q != lines:
            raise AuditlakeError(
                f"{lf.name}: {lines} lines read but {a} accepted + {q} quarantined; not logging it (run ingest again)"
            )
        rows.append({"source_file": lf.name, "source_sha256": sha, "format": lf.format, "lines_read": lines,
                     "accepted": a, "quarantined": q, "first_seq": first, "last_seq": last,
                     "completed_at": now, "batch_id": batch_id})
    state.log_version = tables.append(lake, "ingest_log", pa.Table.from_pylist(rows, schema=tables.INGEST_LOG),
                                      state.log_version, {"batch_id": batch_id})
    state.done.update(shas)


# ----------------------------------------------------------------------------- entry
def ingest(lake: Lake, paths: list[str] | None = None, progress: Callable[[str], None] | None = None,
           fresh_since: int | None = None) -> IngestReport:
    """Ingest landing files (files or folders; default the lake's landing/), and the lake's own
    audit event files a crash left unlogged (audit_events.pending_files). `fresh_since` is for
    the lake's own audit events: the ledger's version (-1: none) before the caller wrote these
    files under new names with new event ids; while the ledger is still there, no ledger row
    can come from them and the ledger is not searched for their content hashes or event ids
    (seconds on a large ledger). Everything else, the ingest log and the replays within the
    files included, is checked as usual."""
    started = time.monotonic()
    ignored: list[dict] = []
    # First: a wrong path makes no lake and no keys. An empty list (not None) reads no landing
    # file: the run only completes what an earlier one left (its unsealed tail, unlocked objects).
    files = [] if paths == [] else landing.find(lake, paths, ignored)
    if lake.is_s3:
        retention.require_worm_bucket(lake)  # nor does a bucket that could not keep it
    keys = open_lake_keys(lake, create=True)
    if fresh_since is None:
        audit_events.log_unlogged_rotation(lake, keys)
    if fresh_since is None and (pending := audit_events.pending_files(lake)):
        known = {f.path for f in files}
        files += [f for f in landing.find(lake, pending) if f.path not in known]
    sealers = _sealing(keys, files)
    try:
        report, state, retries = _plan_and_commit(lake, keys, files, sealers, progress, fresh_since)
    finally:
        sealers.shutdown()
    _fill_report(lake, report, state)
    from .catalog import refresh_views

    report.catalog_note = refresh_views(lake)
    report.retries = retries
    report.ignored = ignored
    report.workers = getattr(sealers, "workers", 0)
    report.duration_s = time.monotonic() - started
    return report


def _plan_and_commit(lake: Lake, keys: KeyStore, files: list[landing.LandingFile],
                     sealers: sealing.InlineSealing | sealing.WorkerSealing,
                     progress: Callable[[str], None] | None, fresh_since: int | None = None) -> tuple[IngestReport, _State, int]:
    """Plan from the tables' state and commit batch by batch; on a lost commit race, re-plan."""
    retries = 0
    while True:
        report = IngestReport()
        try:
            state = _load_state(lake, keys, files, fresh_since)
            head = state.head
            _require_the_lakes_keys(keys, head)
            retention.refuse_hidden_tail(lake, keys.log_id)
            if head.tree_size > head.checkpoint_frontier_size:  # a crash left an unsealed tail
                _recover(lake, keys, head)
            retention.lock_new(lake, keys)  # objects a crash left unlocked
            for batch in _batches(lake, files, state, report, sealers):
                a, q = _commit_batch(lake, keys, state, batch)
                report.batches += 1
                if progress:
                    progress(f"batch {report.batches}: {a} accepted, {q} quarantined, tree size {head.tree_size}")
            break
        except ConflictError:
            retries += 1
            if retries >= MAX_ATTEMPTS:
                raise AuditlakeError("gave up after repeated concurrent commits by other writers; run ingest again")
            time.sleep(random.uniform(0.05, 0.3) * min(retries, 10))
    return report, state, retries


def _require_the_lakes_keys(keys: KeyStore, head: Head) -> None:
    """Refuse to write with a keystore that did not sign the lake's latest checkpoint (a
    second host whose AUDITLAKE_HOME lacks the lake's keys): its rows and commits would be
    signed and chained under keys no verifier of this lake knows, and locked for years."""
    if head.checkpoint is not None and head.checkpoint.key_id not in keys.public_keys():
        from .keys import auditlake_home

        raise AuditlakeError(
            f"the keystore in {auditlake_home()} does not hold the key that signed this lake's checkpoints "
            f"({head.checkpoint.key_id}): point AUDITLAKE_HOME at the lake's keystore (nothing was written)")


def _fill_report(lake: Lake, report: IngestReport, state: _State) -> None:
    log = lake.latest("ingest_log")
    logged = []
    if log is not None and report.files:
        shas = pa.array([f.sha256 for f in report.files], pa.string())
        names = pa.array([f.file for f in report.files if not f.skipped], pa.string())
        logged = tables.dataset(lake, "ingest_log", log).to_table(
            filter=pc.field("source_sha256").isin(shas) | pc.field("source_file").isin(names)).to_pylist()
    by_sha = {r["source_sha256"]: r for r in logged}
    held: dict[str, set[str]] = {}  # name -> the contents logged under it
    for r in logged:
        held.setdefault(r["source_file"], set()).add(r["source_sha256"])
    for f in report.files:
        if not f.skipped:
            f.name_held_other = min(held.get(f.file, set()) - {f.sha256}, default=None)
        r = by_sha.get(f.sha256)
        if r:
            f.lines_read, f.accepted, f.quarantined = r["lines_read"], r["accepted"], r["quarantined"]
            if f.skipped:
                f.ingested_as = r["source_file"]
            else:
                report.accepted += f.accepted
                report.quarantined += f.quarantined
    head = state.head
    report.tree_size = head.tree_size
    report.root = head.frontier.root().hex()
    report.checkpoint_hash = head.checkpoint.checkpoint_hash if head.checkpoint else ""
