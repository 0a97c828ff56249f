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
"""
from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import landing, proofs
from .contract import MAX_LINE_BYTES, validate
from .errors import AuditlakeError, ConflictError
from .head import Head, load_head, prev_checkpoint_hash
from .keys import KeyStore
from .lake import retention, tables
from .lake.meta import open_lake_keys
from .lake.store import Lake
from .ledger import chain, merkle
from .ledger.canonical import CanonicalError, canonical_json, canonical_with_fragments, fragment
from .ledger.checkpoint import Checkpoint
from .ledger.seal import aad, blind_index, seal
from .masking import mask_raw

BATCH_LINES = 100_000
ROW_COLUMNS = (
    "seq", "event_id", "event_type", "occurred_at", "event_date", "source", "tenant_id", "actor_type", "actor_id",
    "actor_role", "actor_ip_sealed", "subject_id", "subject_country", "subject_region", "subject_timezone",
    "subject_pii_sealed", "pii_fields", "phone_bidx", "lawful_basis", "data", "leaf", "source_file",
    "source_sha256", "source_line",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
BATCH_BYTES = 32 << 20  # raw landing bytes per batch too: a batch's memory is ~20x its raw size
MAX_ATTEMPTS = 40


@dataclass
class FileReport:
    file: str
    sha256: str
    lines_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    skipped: bool = False


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

    @property
    def lines_read(self) -> int:
        return sum(f.lines_read for f in self.files)

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
    seen_quarantine: set[str]
    quarantine_version: int | None
    log_version: int | None
    event_index: _EventIndex | None = None


def _distinct_sha(lake: Lake, name: str) -> tuple[set[str], int | None]:
    dt = lake.delta(name)
    if dt is None:
        return set(), None
    col = dt.to_pyarrow_dataset().to_table(columns=["source_sha256"]).column("source_sha256")
    return set(pc.unique(col).to_pylist()), dt.version()


def _load_state(lake: Lake, keys: KeyStore) -> _State:
    log_dt = lake.delta("ingest_log")
    done: set[str] = set()
    if log_dt is not None:
        done = set(log_dt.to_pyarrow_dataset().to_table(columns=["source_sha256"]).column("source_sha256").to_pylist())
    q_sha, q_version = _distinct_sha(lake, "quarantine")
    head = load_head(lake, keys)
    l_sha = set()
    if head.ledger_version is not None:
        l_sha, _ = _distinct_sha(lake, "ledger")
    return _State(head, done, l_sha, q_sha, q_version, None if log_dt is None else log_dt.version())


def _lines_of(lake: Lake, name: str, sha: str, column: str) -> set[int]:
    dt = lake.delta(name)
    if dt is None:
        return set()
    t = dt.to_pyarrow_dataset().to_table(columns=[column], filter=pc.field("source_sha256") == sha)
    return set(t.column(column).to_pylist())


def _ids_in_ledger(lake: Lake, ids: list[str], version: int | None) -> set[str]:
    """Event ids already in the ledger as of `version`, the snapshot this batch will commit on
    (a newer snapshot could hold lines another writer just sealed: this batch's commit will
    fail and re-plan, but a batch of only "replays" would wrongly quarantine them)."""
    dt = lake.delta("ledger")
    if dt is None or not ids or version is None:
        return set()
    if dt.version() != version:
        dt.load_as_version(version)
    t = dt.to_pyarrow_dataset().to_table(columns=["event_id"], filter=pc.field("event_id").isin(ids))
    return set(t.column("event_id").to_pylist())


class _EventIndex:
    """64-bit hashes of the event ids in the ledger at the planned snapshot plus this run's own
    commits, sorted: a batch looks its ids up here and asks the ledger only about the hits
    (replays, or a rare hash collision), instead of scanning every event id per batch."""

    def __init__(self, lake: Lake, version: int | None):
        self._sorted = np.empty(0, np.uint64)
        self._recent: list[np.ndarray] = []
        if version is not None:
            dt = lake.delta("ledger")
            if dt.version() != version:
                dt.load_as_version(version)
            col = dt.to_pyarrow_dataset().to_table(columns=["event_id"]).column("event_id")
            self._sorted = np.sort(self._hash(col))

    @staticmethod
    def _hash(ids) -> np.ndarray:
        return pl.Series(ids, dtype=pl.Utf8).hash(seed=0).to_numpy()

    def add(self, ids: list[str]) -> None:
        self._recent.append(np.sort(self._hash(ids)))
        if len(self._recent) > 8:
            self._sorted = np.sort(np.concatenate([self._sorted, *self._recent]))
            self._recent = []

    def candidates(self, ids: list[str]) -> list[str]:
        """The ids that may already be in the ledger (a superset of those that are)."""
        if not ids:
            return []
        h = self._hash(ids)
        hit = np.zeros(len(ids), bool)
        for arr in (self._sorted, *self._recent):
            if len(arr):
                pos = np.searchsorted(arr, h).clip(max=len(arr) - 1)
                hit |= arr[pos] == h
        return [i for i, m in zip(ids, hit) if m]


# ----------------------------------------------------------------------------- batches
@dataclass
class _Candidate:
    file: str
    sha: str
    line: int
    event: dict
    occurred: datetime


@dataclass
class _Batch:
    candidates: list[_Candidate] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)  # quarantine rows without batch fields
    finished: list[tuple[landing.LandingFile, str, int]] = field(default_factory=list)  # (file, sha, lines)
    raw_bytes: int = 0

    @property
    def size(self) -> int:
        return len(self.candidates) + len(self.bad)


def _parse(raw: bytes | dict | landing.Unreadable) -> tuple[dict | None, str | None]:
    if isinstance(raw, dict):
        return raw, None
    if isinstance(raw, landing.Unreadable):
        return None, raw.reason
    if len(raw) > MAX_LINE_BYTES:
        return None, f"line larger than 64 KiB ({len(raw)} bytes)"
    if not raw.strip():
        return None, "empty line"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        return None, "not JSON (invalid syntax or UTF-8)"


def _batches(lake: Lake, files: list[landing.LandingFile], state: _State, report: IngestReport) -> Iterator[_Batch]:
    batch = _Batch()
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
        committed = _lines_of(lake, "ledger", sha, "source_line") if sha in state.seen_ledger else set()
        quarantined = _lines_of(lake, "quarantine", sha, "line") if sha in state.seen_quarantine else set()
        lines = 0
        for line, raw in lf.records():
            lines = line
            if line in committed or line in quarantined:
                continue
            event, reason = _parse(raw)
            if reason is None:
                occurred, reason = validate(event)
            if reason is None:
                batch.candidates.append(_Candidate(lf.name, sha, line, event, occurred))
            else:
                batch.bad.append(
                    {"source_file": lf.name, "source_sha256": sha, "line": line, "reason": reason,
                     "raw": "" if isinstance(raw, landing.Unreadable) else mask_raw(raw), "event_id": event.get("event_id") if isinstance(event, dict) and isinstance(event.get("event_id"), str) else None}
                )
            batch.raw_bytes += len(raw) if isinstance(raw, (bytes, bytearray)) else 1024
            if batch.size >= BATCH_LINES or batch.raw_bytes >= BATCH_BYTES:
                yield batch
                batch = _Batch()
        batch.finished.append((lf, sha, lines))
    if batch.size or batch.finished:
        yield batch


# ----------------------------------------------------------------------------- sealing
class _Sealer:
    def __init__(self, keys: KeyStore):
        self.keys = keys
        self.bidx_key = keys.bidx_key
        self._ciphers: dict[str, AESGCM | None] = {}

    def prepare(self, events: list[dict]) -> None:
        """Load (or create) the data keys of every person in these events, in bulk."""
        ids = set()
        for ev in events:
            if isinstance(ev.get("subject"), dict):
                ids.add(ev["subject"]["id"])
            if ev["actor"].get("ip"):
                ids.add(ev["actor"]["id"])
        ids -= self._ciphers.keys()
        if not ids:
            return
        erased = self.keys.is_erased(ids)
        for sid in erased:
            self._ciphers[sid] = None  # an erased person's new PII is not kept at all
        for sid, key in self.keys.data_keys(ids - erased).items():
            self._ciphers[sid] = AESGCM(key)

    def row(self, ev: dict, seq: int, ingested_at: str, source: _Candidate) -> tuple[tuple, bytes]:
        event_id = ev["event_id"]
        actor = ev["actor"]
        subject = ev.get("subject")
        pii_fields = []
        ip = actor.get("ip")
        ip_sealed = None
        if ip:
            pii_fields.append("actor.ip")
            cipher = self._ciphers[actor["id"]]
            ip_sealed = seal(cipher, canonical_with_fragments({"ip": ip}), aad(event_id, "actor")) if cipher else None
        subject_rec = None
        bidx = None
        if subject is not None:
            pii = {k: subject[k] for k in ("email", "name", "phone") if subject.get(k)}
            pii_fields.extend(f"subject.{k}" for k in pii)
            cipher = self._ciphers[subject["id"]]
            sealed = seal(cipher, canonical_with_fragments(pii), aad(event_id, "subject")) if pii and cipher else None
            if subject.get("phone"):
                bidx = blind_index(self.bidx_key, subject["phone"])
            subject_rec = {
                "id": subject["id"],
                "country": subject.get("country"),
                "region": subject.get("region"),
                "timezone": subject.get("timezone"),
                "pii": sealed,
                "phone_bidx": bidx,
            }
        pii_str = ",".join(sorted(pii_fields))
        data = canonical_json(ev["data"])
        lb = ev.get("lawful_basis")
        record = {
            "v": 1,
            "seq": seq,
            "event_id": event_id,
            "event_type": ev["event_type"],
            "occurred_at": ev["occurred_at"],
            "ingested_at": ingested_at,
            "source": ev["source"],
            "tenant_id": ev["tenant_id"],
            "actor": {"type": actor["type"], "id": actor["id"], "role": actor.get("role"), "ip": ip_sealed},
            "subject": subject_rec,
            "pii_fields": pii_str,
            "lawful_basis": lb,
            "data": fragment(data),
        }
        leaf = canonical_with_fragments(record)
        occurred = source.occurred
        # In ROW_COLUMNS order; hash, key_id and batch_id are added per batch.
        row = (
            seq, event_id, ev["event_type"], (occurred - _EPOCH) // _MICROSECOND, occurred.date().isoformat(),
            ev["source"], ev["tenant_id"], actor["type"], actor["id"], actor.get("role"), ip_sealed,
            subject_rec and subject_rec["id"], subject_rec and subject_rec["country"],
            subject_rec and subject_rec["region"], subject_rec and subject_rec["timezone"],
            subject_rec and subject_rec["pii"], pii_str, bidx, lb, data.decode(), leaf.decode(),
            source.file, source.sha, source.line,
        )
        return row, leaf


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


def _commit_batch(lake: Lake, keys: KeyStore, sealer: _Sealer, state: _State, batch: _Batch) -> tuple[int, int]:
    head = state.head
    batch_id = uuid.uuid4().hex
    now = _now()
    ingested_at = _iso(now)

    # Replays: an event_id already in the ledger, or repeated within this batch (first wins).
    ids = [c.event["event_id"] for c in batch.candidates]
    if state.event_index is None:
        state.event_index = _EventIndex(lake, head.ledger_version)
    in_ledger = _ids_in_ledger(lake, state.event_index.candidates(ids), head.ledger_version)
    seen: set[str] = set()
    accepted: list[_Candidate] = []
    for c in batch.candidates:
        eid = c.event["event_id"]
        if eid in in_ledger or eid in seen:
            reason = "replay: event_id already in the ledger" if eid in in_ledger else "replay: event_id repeated in this batch"
            batch.bad.append({"source_file": c.file, "source_sha256": c.sha, "line": c.line, "reason": reason,
                              "raw": mask_raw(c.event), "event_id": eid})
        else:
            seen.add(eid)
            accepted.append(c)

    rows, leaves = [], []
    sealer.prepare([c.event for c in accepted])
    seq = head.tree_size
    for c in accepted:
        try:
            row, leaf = sealer.row(c.event, seq, ingested_at, c)
        except CanonicalError as exc:
            batch.bad.append({"source_file": c.file, "source_sha256": c.sha, "line": c.line,
                              "reason": f"data has no canonical JSON form: {exc}", "raw": mask_raw(c.event),
                              "event_id": c.event["event_id"]})
            continue
        rows.append(row)
        leaves.append(leaf)
        seq += 1

    if rows:
        key_id = keys.chain_key_id
        hashes = chain.extend(keys.chain_keys(), head.chain_head, ((key_id, leaf) for leaf in leaves))
        columns = dict(zip(ROW_COLUMNS, zip(*rows)))
        n = len(rows)
        columns["occurred_at"] = pa.array(columns["occurred_at"], pa.int64()).cast(tables.TS)
        columns["ingested_at"] = pa.array([now] * n, tables.TS)
        columns["hash"] = [h.hex() for h in hashes]
        columns["key_id"] = [key_id] * n
        columns["batch_id"] = [batch_id] * n
        table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in tables.LEDGER})
        head.ledger_version = tables.append(lake, "ledger", table, head.ledger_version, {"batch_id": batch_id})
        head.frontier = proofs.extend_frontier(lake, head.frontier, leaves)  # also stores tiles
        head.chain_head = hashes[-1]
        head.tree_size = seq
        state.seen_ledger.update(c.sha for c in accepted)
        state.event_index.add(columns["event_id"])

    if batch.bad:
        for b in batch.bad:
            b["quarantined_at"] = now
            b["batch_id"] = batch_id
        qt = pa.Table.from_pylist(batch.bad, schema=tables.QUARANTINE)
        state.quarantine_version = tables.append(lake, "quarantine", qt, state.quarantine_version, {"batch_id": batch_id})
        state.seen_quarantine.update(b["source_sha256"] for b in batch.bad)

    if batch.finished:
        _log_files(lake, state, batch, batch_id, now)

    if head.tree_size > head.checkpoint_frontier_size:
        _checkpoint(lake, keys, head, batch_id)
    retention.lock_new(lake, keys)
    return len(rows), len(batch.bad)


def _counts(lake: Lake, name: str, shas: list[str], extra: str | None = None) -> dict[str, tuple[int, int | None, int | None]]:
    dt = lake.delta(name)
    if dt is None or not shas:
        return {}
    cols = ["source_sha256"] + ([extra] if extra else [])
    t = dt.to_pyarrow_dataset().to_table(columns=cols, filter=pc.field("source_sha256").isin(shas))
    if extra:
        g = t.group_by("source_sha256").aggregate([(extra, "count"), (extra, "min"), (extra, "max")])
        return {r["source_sha256"]: (r[f"{extra}_count"], r[f"{extra}_min"], r[f"{extra}_max"]) for r in g.to_pylist()}
    g = t.group_by("source_sha256").aggregate([("source_sha256", "count")])
    return {r["source_sha256"]: (r["source_sha256_count"], None, None) for r in g.to_pylist()}


def _log_files(lake: Lake, state: _State, batch: _Batch, batch_id: str, now: datetime) -> None:
    shas = [sha for _, sha, _ in batch.finished]
    acc = _counts(lake, "ledger", shas, "seq")
    quar = _counts(lake, "quarantine", shas)
    rows = []
    for lf, sha, lines in batch.finished:
        a, first, last = acc.get(sha, (0, None, None))
        q = quar.get(sha, (0, None, None))[0]
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
def ingest(lake: Lake, paths: list[str] | None = None, progress: Callable[[str], None] | None = None) -> IngestReport:
    """Ingest landing files (files or folders; default the lake's landing/)."""
    started = time.monotonic()
    keys = open_lake_keys(lake, create=True)
    files = landing.find(lake, paths)
    sealer = _Sealer(keys)
    retries = 0
    while True:
        report = IngestReport()
        try:
            state = _load_state(lake, keys)
            head = state.head
            if head.tree_size > head.checkpoint_frontier_size:  # a crash left an unsealed tail
                _checkpoint(lake, keys, head, "recovery")
            retention.lock_new(lake, keys)  # objects a crash left unlocked
            for batch in _batches(lake, files, state, report):
                a, q = _commit_batch(lake, keys, sealer, state, batch)
                report.batches += 1
                if progress:
                    progress(f"batch {report.batches}: {a} accepted, {q} quarantined, tree size {head.tree_size}")
            break
        except ConflictError:
            retries += 1
            if retries >= MAX_ATTEMPTS:
                raise AuditlakeError("gave up after repeated concurrent commits by other writers; run ingest again")
            time.sleep(random.uniform(0.05, 0.3) * min(retries, 10))
    _fill_report(lake, report, state)
    report.retries = retries
    report.duration_s = time.monotonic() - started
    return report


def _fill_report(lake: Lake, report: IngestReport, state: _State) -> None:
    log = lake.delta("ingest_log")
    by_sha = {}
    if log is not None:
        shas = [f.sha256 for f in report.files]
        t = log.to_pyarrow_dataset().to_table(filter=pc.field("source_sha256").isin(shas))
        by_sha = {r["source_sha256"]: r for r in t.to_pylist()}
    for f in report.files:
        r = by_sha.get(f.sha256)
        if r:
            f.lines_read, f.accepted, f.quarantined = r["lines_read"], r["accepted"], r["quarantined"]
            if not f.skipped:
                report.accepted += f.accepted
                report.quarantined += f.quarantined
    head = state.head
    report.tree_size = head.tree_size
    report.root = head.frontier.root().hex()
    report.checkpoint_hash = head.checkpoint.checkpoint_hash if head.checkpoint else ""
