"""Redacted export bundles with a signed manifest, and their offline check.

`auditlake export --format parquet,csv,jsonl --out DIR [filters]` writes

    DIR/data/part-00000.parquet   (and .csv / .jsonl: the same rows in each format)
    DIR/manifest.json

The rows are the ledger events of the lake's latest signed checkpoint that match the filters
(time range, event types, tenants, subjects), in seq order, shaped by a redaction profile
(`redaction.py`). Every column is a string (or null) except `seq`; columns are in sorted
order, so a row's RFC 8785 canonical JSON is simply its JSON object and each JSONL line
is exactly that.

The manifest lists every file with its SHA-256, size and row count, the filters, the
profile, the source checkpoint (signed), a Merkle root (RFC 6962) over the exported rows
(leaf = canonical JSON of each row, in file order; every format yields the same root), the
id of the `data.exported` audit event that logged the export, and an Ed25519 signature by
the lake's current signing key (whose public half and key id it carries).

`auditlake verify-export DIR [--public-key FILE]` needs nothing but the bundle (and the key
to pin): it catches an edited, added or removed row or file, and a forged manifest.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import shutil
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from .errors import AuditlakeError, NotIntactError
from .inputs import MAX_DOCUMENT_BYTES, read_document
from .keys import load_public_key, signing_key_id
from .lake.store import Lake
from .masking import mask_text
from . import _records
from .ledger import merkle, packed
from .ledger.canonical import canonical_json, loads_noting_repeats
from .ledger.seal import ip_owner_expr
from .redaction import MASK, PII_COLUMNS, PII_FIELD, Profile, load_profile

FORMATS = ("parquet", "csv", "jsonl")
# Rows read, redacted and written at a time (one part file per format): whole batches of the
# ledger, up to FRAME_ROWS, and no more than a _MIN_FRAMES-th of the export (down to
# SMALL_FRAME_ROWS), since the readers, the hasher and the writer overlap only across
# frames: at 1M rows, frames of one 75K-row batch took 7% less time than frames of three.
FRAME_ROWS = 250_000
SMALL_FRAME_ROWS = 50_000
_MIN_FRAMES = 12
MANIFEST = "manifest.json"
JSONL_BLOCK = 16 << 20  # bytes per block of arrow's JSON reader, which must hold whole lines (a row is far smaller)
DATA_DIR = "data"
BUNDLE_FORMAT = "auditlake-export"
BUNDLE_VERSION = 1
LEAF_RULE = "RFC 8785 canonical JSON of each exported row (a JSON object of its columns), in file order"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"
_LEDGER_NEEDS = {
    "seq": ["seq"], "event_id": ["event_id"], "event_type": ["event_type"], "occurred_at": ["occurred_at"],
    "ingested_at": ["ingested_at"], "source": ["source"], "tenant_id": ["tenant_id"],
    "actor_type": ["actor_type"], "actor_id": ["actor_id"], "actor_role": ["actor_role"],
    "subject_id": ["subject_id"], "subject_country": ["subject_country"], "subject_region": ["subject_region"],
    "subject_timezone": ["subject_timezone"], "lawful_basis": ["lawful_basis"], "pii_fields": ["pii_fields"],
    "data": ["data"],
}


# ============================================================================ filters
_FILTER_FLAGS = {"event_types": "event-type", "tenants": "tenant", "subjects": "subject"}


def normalise_filters(filters: dict | None) -> dict:
    """{"from", "to", "event_types", "tenants", "subjects"}, validated; unknown keys refused."""
    from .contract import EVENT_TYPES, parse_instant

    filters = dict(filters or {})
    aliases = {"time_from": "from", "time_to": "to", "event_type": "event_types", "tenant": "tenants",
               "tenant_id": "tenants", "subject": "subjects", "subject_id": "subjects"}
    out: dict = {"from": None, "to": None, "event_types": [], "tenants": [], "subjects": []}
    for k, v in filters.items():
        key = aliases.get(k, k)
        if key not in out:
            raise AuditlakeError(f"unknown export filter {k!r} (filters: from, to, event_types, tenants, subjects)")
        if v is None or (isinstance(v, (list, tuple)) and not v):
            continue  # not given; a value given blank is refused, never read as "everything"
        if key in ("from", "to"):
            if parse_instant(v) is None:
                raise AuditlakeError(f"--{key}: {v!r} is not an RFC 3339 instant (e.g. 2026-03-01T00:00:00Z)")
            out[key] = v
        else:
            vals = [v] if isinstance(v, str) else list(v)
            vals = sorted({part.strip() for x in vals for part in str(x).split(",") if part.strip()})
            if not vals:
                raise AuditlakeError(f"--{_FILTER_FLAGS[key]}: {v!r} names no value (leave the filter out to export all)")
            if key == "event_types":
                bad = [x for x in vals if x not in EVENT_TYPES]
                if bad:
                    raise AuditlakeError(f"unknown event type(s): {', '.join(bad)}")
            out[key] = vals
    if out["from"] and out["to"] and parse_instant(out["from"]) >= parse_instant(out["to"]):
        raise AuditlakeError("--from must be before --to")
    return out


def _predicate(filters: dict, size: int):
    """A polars predicate (values bound as literals, never spliced into query text)."""
    import polars as pl

    from .contract import parse_instant

    cond = pl.col("seq") < size
    if filters["from"]:
        cond = cond & (pl.col("occurred_at") >= pl.lit(parse_instant(filters["from"])))
    if filters["to"]:
        cond = cond & (pl.col("occurred_at") < pl.lit(parse_instant(filters["to"])))
    if filters["event_types"]:
        cond = cond & pl.col("event_type").is_in(filters["event_types"])
    if filters["tenants"]:
        cond = cond & pl.col("tenant_id").is_in(filters["tenants"])
    if filters["subjects"]:
        cond = cond & pl.col("subject_id").is_in(filters["subjects"])
    return cond


# ============================================================================ reading + redaction
def _hash_key(profile: Profile, keys) -> bytes:
    if profile.hash_salt == "profile":
        return hmac.new(keys.bidx_key, f"auditlake-export-hash|{keys.log_id}|{profile.name}".encode(), hashlib.sha256).digest()
    return secrets.token_bytes(32)


def _hmac_values(key: bytes, values: list) -> list:
    cache: dict[str, str] = {}
    out = []
    for v in values:
        if v is None or v == "[erased]" or v == "[undecryptable]":
            out.append(v)
            continue
        h = cache.get(v)
        if h is None:
            h = cache[v] = "h1." + hmac.new(key, v.encode(), hashlib.sha256).hexdigest()
        out.append(h)
    return out


class _Redactor:
    """Reads ledger files and shapes their rows by a profile (vectorised in polars)."""

    def __init__(self, lake: Lake, filters: dict, size: int, profile: Profile, keys):
        from .privacy import DECRYPT_COLUMNS, erased_subjects

        self.lake, self.filters, self.size, self.profile, self.keys = lake, filters, size, profile, keys
        self.cols = profile.columns
        need = {"seq"}
        for c in self.cols:
            need.update(_LEDGER_NEEDS.get(c, []))
        self.pii_cols = [c for c in self.cols if c in PII_COLUMNS]
        if self.pii_cols:
            need.update({"pii_fields", "subject_id", "actor_id", "actor_type"})
        if profile.needs_pii:
            need.update(DECRYPT_COLUMNS)
        self.need = sorted(need)
        # Read once per export: the erased are few, and a per-frame lookup of every person
        # in the frame cost more than the rest of the masking.
        self.erased = sorted(erased_subjects(lake, keys)) if self.pii_cols else []
        self.hash_key = _hash_key(profile, keys) if any(profile.actions[c] == "hash" for c in self.cols) else b""
        self.predicate = _predicate(filters, size)

    def frame(self, files: list[str]):
        """The redacted rows of these ledger files, in seq order (a polars DataFrame; kept
        instants stay timestamps, which _arrow writes as text)."""
        import polars as pl

        from .privacy import DECRYPT_COLUMNS, decrypt_columns
        from .proofs import polars_scan

        df = polars_scan(self.lake, "ledger", files).filter(self.predicate).select(self.need).collect().sort("seq")
        decrypted: dict[str, list] = {}
        if self.profile.needs_pii and df.height:
            decrypted = decrypt_columns(self.keys, {c: df.get_column(c).to_list() for c in DECRYPT_COLUMNS})
        exprs = []
        for c in self.cols:
            action = self.profile.actions[c]
            if c in PII_COLUMNS:
                owner = ip_owner_expr() if c == "actor_ip" else pl.col("subject_id")
                has = pl.col("pii_fields").str.contains(PII_FIELD[c], literal=True).fill_null(False)
                if action == "mask":
                    if self.erased:
                        gone = owner.is_in(self.erased).fill_null(False)
                        e = pl.when(has & gone).then(pl.lit("[erased]")).when(has).then(pl.lit(MASK))
                    else:
                        e = pl.when(has).then(pl.lit(MASK))
                    exprs.append(e.otherwise(pl.lit(None, pl.String)).alias(c))
                else:
                    vals = decrypted.get(c, [])
                    if action == "hash":
                        vals = _hmac_values(self.hash_key, vals)
                    exprs.append(pl.Series(c, vals, pl.String).alias(c))
                continue
            if c == "seq":
                exprs.append(pl.col("seq").cast(pl.Int64))
                continue
            src = pl.col(c)
            if c in ("occurred_at", "ingested_at"):
                if action == "keep":
                    exprs.append(src)
                    continue
                src = src.dt.strftime(_TS_FORMAT)
            src = src.cast(pl.String)
            if action == "keep":
                exprs.append(src.alias(c))
            elif action == "scrub":
                exprs.append(_scrubbed(df.select(src.alias(c)).to_series(), c == "data"))
            elif action == "mask":
                exprs.append(pl.when(src.is_not_null()).then(pl.lit(MASK)).otherwise(pl.lit(None, pl.String)).alias(c))
            elif action == "hash":
                vals = _hmac_values(self.hash_key, df.select(src).to_series().to_list())
                exprs.append(pl.Series(c, vals, pl.String).alias(c))
        return df.select(exprs)


def _require_intact(lake: Lake) -> None:
    from .verify import verify_settled

    report, _ = verify_settled(lake, incremental=True)  # (a writer in flight is no finding)
    if not report.ok:
        first = report.findings[0]
        raise NotIntactError(f"the lake did not verify ({len(report.findings)} finding(s), the first: {first.kind} in "
                             f"{first.table}: {first.detail}); nothing was exported: run `auditlake verify`")


def _scrubbed(values, is_json: bool):
    """The `scrub` action on a polars String series: only the values the prefilter (RE2, as
    the SQL console's) says may hold PII go through the (Python) masker."""
    import numpy as np

    from .masking import may_hold_pii, scrub_json_text, scrub_text

    rows = np.flatnonzero(may_hold_pii(values.to_arrow()).to_numpy(zero_copy_only=False))
    if not len(rows):
        return values
    scrub = scrub_json_text if is_json else scrub_text
    return values.scatter(rows, [scrub(v) for v in values.gather(rows).to_list()])


def _file_groups(lake: Lake, dt, size: int, filters: dict) -> list[list[str]]:
    """The ledger files needed for an export, in groups whose seq ranges do not overlap one
    another (a batch writes one file per day, so its files interleave), in seq order. Files
    wholly past the checkpoint or outside the time range are skipped by their statistics."""
    from .contract import parse_instant
    from .proofs import _add_actions

    acts = _add_actions(dt)
    cols = acts.column_names
    n = acts.num_rows
    get = lambda name: acts.column(name).to_pylist() if name in cols else [None] * n  # noqa: E731
    paths, lo, hi = get("path"), get("min.seq"), get("max.seq")
    t_lo, t_hi = get("min.occurred_at"), get("max.occurred_at")
    f_from = parse_instant(filters["from"]) if filters.get("from") else None
    f_to = parse_instant(filters["to"]) if filters.get("to") else None
    items = []
    for i in range(n):
        if lo[i] is not None and lo[i] >= size:
            continue
        if f_from is not None and t_hi[i] is not None and _aware(t_hi[i]) < f_from:
            continue
        if f_to is not None and t_lo[i] is not None and _aware(t_lo[i]) >= f_to:
            continue
        items.append((lo[i], hi[i], paths[i]))
    if any(a is None or b is None for a, b, _ in items):
        return [[p for _, _, p in items]] if items else []
    items.sort()
    groups: list[list[str]] = []
    end = None
    for a, b, p in items:
        if groups and a <= end:
            groups[-1].append(p)
            end = max(end, b)
        else:
            groups.append([p])
            end = b
    # Small groups (small batches) are read together, up to the frame size (see FRAME_ROWS).
    rows_of = dict(zip(paths, get("num_records")))
    total = sum(rows_of.get(p) or 0 for _, _, p in items)
    limit = min(FRAME_ROWS, max(SMALL_FRAME_ROWS, total // _MIN_FRAMES))
    merged: list[list[str]] = []
    merged_rows = 0
    for g in groups:
        g_rows = sum(rows_of.get(p) or 0 for p in g)
        if merged and merged_rows + g_rows <= limit:
            merged[-1].extend(g)
            merged_rows += g_rows
        else:
            merged.append(list(g))
            merged_rows = g_rows
    return merged


def _aware(t):
    from datetime import datetime as _dt

    if isinstance(t, _dt) and t.tzinfo is None:
        return t.replace(tzinfo=timezone.utc)
    return t


def iter_frames(lake: Lake, filters: dict, size: int, profile: Profile, keys, per_frame=None):
    """(arrow table, its rows' packed leaf hashes, future of per_frame(table, i) or None) for
    each group of ledger files, in seq order. Three stages overlap: two threads
    read, redact and hash the next two frames, another runs `per_frame` (writing the part
    files) on the current one; polars, the C row hasher and file I/O release the GIL."""
    dt = lake.latest("ledger")
    if dt is None:
        raise AuditlakeError("the lake has no ledger yet; nothing to export")
    red = _Redactor(lake, filters, size, profile, keys)
    groups = _file_groups(lake, dt, size, filters) or [None]

    def hashed(files):
        table = _arrow(_empty(red.cols) if files is None else red.frame(files))
        return table, row_leaf_hashes(table)

    with ThreadPoolExecutor(max_workers=1) as writer:
        for i, (table, hashes) in enumerate(_in_order(hashed, groups)):
            yield table, hashes, (writer.submit(per_frame, table, i) if per_frame else None)


def _in_order(fn, items: list, ahead: int = 2):
    """fn(item) of each item, in order, computed in `ahead` threads at most that many items
    ahead of the caller (pool.map would run them all and hold every result)."""
    with ThreadPoolExecutor(max_workers=ahead) as pool:
        pending = deque(pool.submit(fn, item) for item in items[:ahead])
        for i in range(len(items)):
            result = pending.popleft().result()
            if i + ahead < len(items):
                pending.append(pool.submit(fn, items[i + ahead]))
            yield result


def _arrow(df) -> pa.Table:
    """A redacted frame as arrow, its timestamps as RFC 3339 text (_TS_FORMAT), formatted in C:
    polars' strftime took a tenth of a default export's time."""
    table = df.to_arrow()
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            col = table.column(i).combine_chunks()
            values = packed.column_buffers(col)  # from offset 0, its validity too
            text = _records.instants_text(values, len(col))
            if text is None:  # a year outside 0000-9999: polars spells it
                import polars as pl

                strings = pl.from_arrow(col).dt.strftime(_TS_FORMAT).to_arrow()
            else:
                strings = pa.LargeStringArray.from_buffers(len(col), pa.py_buffer(text[1]), pa.py_buffer(text[0]),
                                                           values[2], col.null_count)
            table = table.set_column(i, f.name, strings)
    return table


def _empty(cols: list[str]):
    import polars as pl

    return pl.DataFrame({c: pl.Series(c, [], pl.Int64 if c == "seq" else pl.String) for c in cols})


def read_rows(lake: Lake, filters: dict, size: int, profile: Profile, keys):
    """The filtered ledger rows as one polars DataFrame of the profile's columns, redacted."""
    import polars as pl

    return pl.from_arrow(pa.concat_tables([t for t, _, _ in iter_frames(lake, filters, size, profile, keys)]))


def _row_columns(rows) -> tuple[tuple, tuple, int]:
    """A polars DataFrame or arrow Table (columns in sorted order, strings and integers only)
    as the C row encoder's arguments: the text before each value, the columns' buffers and
    the row count."""
    table = rows.to_arrow() if hasattr(rows, "to_arrow") else rows
    names = table.column_names
    if not names:
        raise AuditlakeError("an export needs at least one column")
    keys = tuple((("{" if i == 0 else ",") + canonical_json(c).decode() + ":").encode() for i, c in enumerate(names))
    columns = []
    for name in names:
        col = table.column(name)
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                or pa.types.is_string_view(col.type) or pa.types.is_null(col.type)):
            raise AuditlakeError(f"export column {name} is {col.type}, not a string or an integer")
        columns.append(packed.column_buffers(col.cast(pa.large_string()) if pa.types.is_null(col.type) else col))
    return keys, tuple(columns), table.num_rows


def row_json(rows) -> pa.LargeStringArray:
    """Each row's RFC 8785 JSON, written by the C encoder straight from the arrow buffers."""
    keys, columns, n = _row_columns(rows)
    data, offsets = _records.json_objects(keys, columns, n)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def row_leaf_hashes(rows) -> bytes:
    """Packed RFC 6962 leaf hashes SHA-256(0x00 || row JSON) of each row, exactly those of
    row_json's text, without keeping the text."""
    return _records.json_leaf_hashes(*_row_columns(rows))


# ============================================================================ writing
def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


# Export columns with many distinct values: written without a dictionary, which pyarrow
# would build per page only to drop it.
_DISTINCT_COLUMNS = frozenset({"seq", "event_id", "occurred_at", "ingested_at", "data", "subject_id", "actor_id"})
# The only columns given min/max statistics, which cost a sixth of the Parquet writer's time
# when every column has them: those whose ranges let a reader skip pages (event and subject
# ids are random, so theirs would not).
_STATISTICS_COLUMNS = frozenset({"seq", "occurred_at", "event_type", "tenant_id"})


def _write_parts(out: Path, fmts: list[str], table: pa.Table, i: int, first_row: int) -> list[dict]:
    """Part `i` of each format: the same rows as Parquet, CSV (null unquoted-empty, ""
    quoted) and JSON Lines (each line the row's canonical JSON)."""
    import polars as pl
    import pyarrow.parquet as pq

    entries = []
    for fmt in fmts:
        rel = f"{DATA_DIR}/part-{i:05d}.{fmt}"
        path = out / rel
        if fmt == "parquet":
            # pyarrow: about a third less CPU than polars' writer for these files, of the same size.
            # event_id (random hex) is left uncompressed and seq (one more each row) delta-encoded:
            # less of the writer's time for the same size.
            names = table.column_names
            pq.write_table(table, path, compression={c: "none" if c == "event_id" else "snappy" for c in names},
                           use_dictionary=[c for c in names if c not in _DISTINCT_COLUMNS],
                           column_encoding={"seq": "DELTA_BINARY_PACKED"} if "seq" in names else None,
                           write_statistics=[c for c in names if c in _STATISTICS_COLUMNS])
        elif fmt == "csv":
            pl.from_arrow(table).write_csv(path, quote_style="necessary", null_value="")
        else:
            with open(path, "wb") as f:
                f.write(_jsonl(row_json(table)))
        sha, size = _sha256_file(path)
        entries.append({"path": rel, "format": fmt, "rows": table.num_rows, "first_row": first_row, "bytes": size,
                        "sha256": sha})
    return entries


def _jsonl(json_rows: pa.Array):
    """The rows as JSON Lines: each row followed by a newline, as one buffer."""
    import numpy as np
    import pyarrow.compute as pc

    if not len(json_rows):
        return b""
    text = pa.large_string()
    lines = pc.binary_join_element_wise(json_rows.cast(text), pa.scalar("\n", text), pa.scalar("", text))
    offsets = np.frombuffer(lines.buffers()[1], np.int64, len(lines) + 1, 8 * lines.offset)
    return memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]]


def _formats(formats) -> list[str]:
    if isinstance(formats, str):
        formats = formats.split(",")
    out = []
    for f in formats:
        f = f.strip().lower()
        if not f:
            continue
        if f not in FORMATS:
            raise AuditlakeError(f"unknown export format {f!r} (formats: {', '.join(FORMATS)})")
        if f not in out:
            out.append(f)
    if not out:
        raise AuditlakeError("no export format given")
    return out


def build_export(lake: Lake, out_dir: str, formats, filters: dict | None = None, profile: str | Profile = "default",
                 profiles_file: str | None = None, reveal_reason: str | None = None, actor=None) -> dict:
    """Write a redacted export bundle to `out_dir`; return its (signed) manifest.

    A bundle is cut only from an intact lake: an incremental verify (the Delta history,
    checkpoints and retention in full, the rows after the trusted checkpoint), run beside
    the export, must find nothing before anything is recorded or signed, else
    NotIntactError and the rows written are removed (a signed bundle of tampered rows would
    carry the lake's word for them). PII is released only if the profile keeps
    it and `reveal_reason` is given (with the `default` profile a reason alone reveals it);
    the export, and any reveal with its reason, is recorded as a `data.exported` audit event
    before the manifest is written."""
    from .audit_events import current_actor, record_audit_event
    from .lake.meta import open_lake_keys
    from .privacy import MIN_REASON, visible_length
    from .proofs import latest_checkpoint

    fmts = _formats(formats)
    flt = normalise_filters(filters)
    prof = profile if isinstance(profile, Profile) else load_profile(profile, profiles_file)
    # Kept in the audit event and the signed manifest: PII-shaped text in it is masked.
    reason = mask_text((reveal_reason or "").strip()) or None
    if reason and visible_length(reason) < MIN_REASON:  # ten zero-width spaces are no reason
        raise AuditlakeError(f"--reveal-reason needs at least {MIN_REASON} visible characters (a case or ticket "
                             "number): it is logged")
    if reason and not prof.reveals_pii:
        if prof.name != "default":
            raise AuditlakeError(f"profile {prof.name!r} keeps no personal data; --reveal-reason needs a profile that "
                                 "keeps some (e.g. --profile privileged)")
        prof = prof.revealing()
    if prof.reveals_pii and not reason:
        raise AuditlakeError(f"profile {prof.name!r} releases personal data: a privileged export needs "
                             "--reveal-reason (it is logged)")
    lake.refuse_output_inside(out_dir, "the export folder", holds_pii=prof.reveals_pii)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AuditlakeError(f"{out} exists and is not an empty folder; choose a new one for the bundle")
    keys = open_lake_keys(lake)
    cp_row = latest_checkpoint(lake)
    if cp_row is None:
        raise AuditlakeError("the lake has no signed checkpoint yet; ingest first")
    from .ledger.checkpoint import Checkpoint

    cp = Checkpoint.from_dict(cp_row).to_dict()
    export_id = f"export-{uuid.uuid4()}"
    (out / DATA_DIR).mkdir(parents=True, exist_ok=True)
    frontier = merkle.Frontier.empty()
    files: list[dict] = []
    first_row = [0]

    def per_frame(table, i):
        if table.num_rows == 0:
            return []
        entries = _write_parts(out, fmts, table, i, first_row[0])
        first_row[0] += table.num_rows
        return entries

    # The lake's verify runs beside the export (its hashing and scans release the GIL), and
    # before anything is recorded or signed.
    side = ThreadPoolExecutor(1)
    intact = side.submit(_require_intact, lake)
    try:
        for _, hashes, written in iter_frames(lake, flt, cp["tree_size"], prof, keys, per_frame):
            frontier = frontier.extend(hashes)
            files.extend(written.result())
        if not files:  # nothing matched: one empty part per format
            files = _write_parts(out, fmts, _arrow(_empty(prof.columns)), 0, 0)
        files.sort(key=lambda e: (e["format"], e["path"]))
        n, root = frontier.size, frontier.root()
        intact.result()
        who = current_actor(actor)
        audit_id = record_audit_event(
            lake, "data.exported",
            {"export_id": export_id, "rows": n, "format": ",".join(fmts), "kind": "bundle", "profile": prof.name,
             "filters": flt, "revealed": bool(prof.reveals_pii), "reason": reason,
             "source_tree_size": cp["tree_size"], "merkle_root": root.hex()},
            actor=who,
        )
    except BaseException:
        shutil.rmtree(out / DATA_DIR, ignore_errors=True)
        raise
    finally:
        side.shutdown(wait=True)
    kid = keys.signing_key_id
    pubs = keys.public_keys()
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "export_id": export_id,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "log_id": keys.log_id,
        "actor": who,
        "audit_event_id": audit_id,
        "profile": prof.to_dict(),
        "revealed": bool(prof.reveals_pii),
        "reveal_reason": reason,
        "filters": flt,
        "source_checkpoint": cp,
        "columns": prof.columns,
        "rows": n,
        "merkle": {"algorithm": "RFC 6962 SHA-256", "leaf": LEAF_RULE, "size": n, "root": root.hex()},
        "files": files,
        "key_id": kid,
        "public_key": pubs[kid],
        "public_keys": {k: pubs[k] for k in sorted({kid, cp["key_id"]}) if k in pubs},
    }
    manifest["signature"] = base64.b64encode(keys.signing_key().sign(canonical_json(manifest))).decode()
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    os.replace(tmp, out / MANIFEST)
    return manifest


# ============================================================================ verifying
def _leaves_of(path: Path, fmt: str, columns: list[str]):
    """(packed leaf hashes of a data file's rows, None) or (None, why)."""
    import pyarrow.compute as pc

    try:
        if fmt == "jsonl":
            import pyarrow.json as pjson

            raw = path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                return None, "the last line is not terminated"
            lines = _jsonl_lines(raw)
            if len(lines) == 0:
                return b"", None
            types = pa.schema([pa.field(c, pa.int64() if c == "seq" else pa.string()) for c in columns])
            try:  # arrow's JSON reader: several times faster than polars' json_decode here
                rows = pjson.read_json(pa.BufferReader(raw), read_options=pjson.ReadOptions(block_size=JSONL_BLOCK),
                                       parse_options=pjson.ParseOptions(explicit_schema=types,
                                                                        unexpected_field_behavior="error"))
            except pa.ArrowException as exc:
                return None, f"a line is not JSON with the manifest's columns ({str(exc).splitlines()[0][:120]})"
            if rows.num_rows != len(lines):
                return None, "a line is empty or holds more than one JSON value"
            again = row_json(rows.select(columns))
            bad = pc.invert(pc.equal(again, lines)).to_numpy(zero_copy_only=False)
            if bad.any():
                return None, f"line {int(bad.argmax()) + 1} is not the canonical JSON of a row with the manifest's columns"
            return merkle.leaf_hashes(lines), None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            types = {c: (pa.int64() if c == "seq" else pa.string()) for c in columns}
            # Only an unquoted empty field is null: "NA" (Namibia), "N/A" or "null" are values.
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False))
        else:
            return None, f"unknown format {fmt}"
        if table.column_names != columns:
            return None, f"columns {table.column_names} differ from the manifest's"
        table = table.cast(pa.schema([pa.field(c, pa.int64() if c == "seq" else pa.string()) for c in columns]))
        return row_leaf_hashes(table), None
    except (OSError, UnicodeDecodeError, pa.ArrowException, TypeError, ValueError, AuditlakeError) as exc:
        return None, f"unreadable: {str(exc).splitlines()[0][:160]}"


def _jsonl_lines(raw: bytes) -> pa.LargeStringArray:
    """The lines of JSON Lines text (each ended by a newline) without their newlines, cut
    in arrow rather than as a Python string each; ArrowInvalid if the text is not UTF-8."""
    import numpy as np
    import pyarrow.compute as pc

    ends = np.flatnonzero(np.frombuffer(raw, np.uint8) == 0x0A)
    offsets = np.zeros(len(ends) + 1, np.int64)
    offsets[1:] = ends + 1
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(raw)]
    with_newlines = pa.Array.from_buffers(pa.large_binary(), len(ends), buffers)
    return pc.binary_slice(with_newlines, 0, -1).cast(pa.large_string())


def _listing(root: Path) -> tuple[set[str], list[str]]:
    """The bundle's regular files (relative paths), and its other entries: links, pipes,
    devices, empty folders (a bundle as written holds none of these)."""
    files, odd = set(), []
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            odd.append(f"{rel}: a symbolic link")
        elif p.is_dir():
            if not any(p.iterdir()):
                odd.append(f"{rel}: an empty folder")
        elif p.is_file():
            files.add(rel)
        else:
            odd.append(f"{rel}: not a regular file")
    return files, sorted(odd)


def verify_export(bundle_dir: str, public_keys: dict[str, str] | None = None) -> dict:
    """Check a bundle offline. Returns {"ok", "problems", "trust", "rows", "files", ...}.
    Raises AuditlakeError when the folder cannot be read; a bundle without a readable
    manifest, or with one of any unexpected shape, is not intact (a problem, like any other
    damage: anyone can make it, no key needed)."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise AuditlakeError(f"{bundle_dir} is not a folder")
    mpath = root / MANIFEST
    try:
        if mpath.is_symlink() or (mpath.exists() and not mpath.is_file()):
            return _not_intact(f"{MANIFEST} is not a regular file")
        if not mpath.exists():
            return _not_intact(f"the bundle has no {MANIFEST}")
        if mpath.stat().st_size > MAX_DOCUMENT_BYTES:
            return _not_intact(f"{MANIFEST} is larger than any manifest ({MAX_DOCUMENT_BYTES >> 20} MiB)")
        manifest, repeated = loads_noting_repeats(read_document(mpath, "the manifest").decode("utf-8"))
    except (ValueError, UnicodeError, RecursionError) as exc:
        return _not_intact(f"{MANIFEST} is not JSON: {str(exc)[:200] or exc.__class__.__name__}")
    except OSError as exc:
        raise AuditlakeError(f"cannot read {mpath}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        return _not_intact(f"{MANIFEST} is not an auditlake export manifest")
    try:
        return _verify_manifest(root, manifest, repeated, public_keys)
    except (TypeError, AttributeError, ValueError, KeyError, RecursionError, UnicodeError) as exc:
        return _not_intact(f"{MANIFEST} is malformed ({exc.__class__.__name__}: {str(exc)[:200]})")


def _verify_manifest(root: Path, manifest: dict, repeated: list[str], public_keys: dict[str, str] | None) -> dict:
    problems: list[str] = []
    if repeated:
        problems.append(f"the manifest repeats the key(s) {', '.join(sorted(set(repeated)))}")
    # -- signature ----------------------------------------------------------------------
    body = {k: v for k, v in manifest.items() if k != "signature"}
    kid = manifest.get("key_id")
    declared = manifest.get("public_keys") if isinstance(manifest.get("public_keys"), dict) else {}
    if isinstance(manifest.get("public_key"), str) and isinstance(kid, str):
        declared = {**declared, kid: manifest["public_key"]}
    if public_keys is not None:  # pinned, even to no key at all (then nothing verifies)
        keyring, trust = dict(public_keys), "pinned public key"
        if kid in declared and kid in keyring and declared[kid] != keyring[kid]:
            problems.append(f"the bundle declares a different public key for {kid} than the pinned one")
    else:
        keyring, trust = declared, "the bundle's own public key (not pinned: this proves integrity, not origin; pass --public-key)"

    def check_sig(key_id, signature, signed: bytes, what: str) -> None:
        b64 = keyring.get(key_id) if isinstance(key_id, str) else None
        if b64 is None:
            problems.append(f"{what} is signed with key {key_id!r}, which is not the {'pinned' if public_keys is not None else 'declared'} key")
            return
        try:
            pub = load_public_key(b64)
            if signing_key_id(pub) != key_id:
                problems.append(f"the public key given for {key_id} does not have that key id")
                return
            pub.verify(base64.b64decode(signature, validate=True), signed)
        except (ValueError, TypeError, binascii.Error):
            problems.append(f"{what}: malformed key or signature")
        except Exception:  # noqa: BLE001 - cryptography's InvalidSignature
            problems.append(f"{what}: the signature does not verify (the manifest was altered or forged)")

    try:
        signed = canonical_json(body)
    except ValueError:
        signed = b""
    check_sig(kid, manifest.get("signature", ""), signed, "the manifest")
    cp = manifest.get("source_checkpoint")
    if isinstance(cp, dict):
        from .ledger.checkpoint import Checkpoint
        from .proofs import pinned_limits

        try:
            c = Checkpoint.from_dict(cp)
            check_sig(c.key_id, c.signature, c.body(), "the source checkpoint")
            if c.log_id != manifest.get("log_id"):
                problems.append("the source checkpoint belongs to another log")
            # What the pinned key file says of its keys: their log, and when each was retired.
            problems += [f"{what} {why}" for what, key_id, log_id in (("the source checkpoint", c.key_id, c.log_id),
                                                                      ("the manifest", kid, manifest.get("log_id")))
                         if (why := pinned_limits(public_keys, log_id, key_id, c.tree_size))]
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"the source checkpoint is malformed: {exc}")
    else:
        problems.append("the manifest has no source checkpoint")
    # -- files --------------------------------------------------------------------------
    files = manifest.get("files") if isinstance(manifest.get("files"), list) else []
    columns = manifest.get("columns") if isinstance(manifest.get("columns"), list) else []
    listed = {}
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            problems.append("a malformed file entry in the manifest")
            continue
        listed[f["path"]] = f
    present, odd = _listing(root)
    present.discard(MANIFEST)
    problems.extend(odd)
    for rel in sorted(present - set(listed)):
        problems.append(f"{rel}: a file that the manifest does not list (added)")
    for rel in sorted(set(listed) - present):
        problems.append(f"{rel}: listed in the manifest but missing (removed)")
    by_format: dict[str, merkle.Frontier] = {}
    complete: dict[str, bool] = {}
    order = sorted(listed.items(), key=lambda kv: (str(kv[1].get("format")), kv[1].get("first_row", 0), kv[0]))
    readable = []
    for rel, f in order:
        fmt = f.get("format")
        complete.setdefault(fmt, True)
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"{rel}: a path outside the bundle")
            complete[fmt] = False
        elif rel not in present:
            complete[fmt] = False
        else:
            readable.append((rel, f))

    def examine(item):
        rel, f = item
        size = (root / rel).stat().st_size
        if size != f.get("bytes"):  # not read at all: a swapped-in file may be any size
            return (None, size), (None, "not read: its size differs from the manifest's")
        sha, size = _sha256_file(root / rel)
        if sha != f.get("sha256"):
            return (sha, size), (None, "not read: its SHA-256 differs from the manifest's")
        return (sha, size), _leaves_of(root / rel, f.get("format"), columns)

    # Two files at a time (reading, parsing and hashing release the GIL), taken in order.
    for (rel, f), ((sha, size), (hashes, why)) in zip(readable, _in_order(examine, readable)):
        fmt = f.get("format")
        if sha != f.get("sha256") or size != f.get("bytes"):
            problems.append(f"{rel}: content differs from the manifest ({size} bytes"
                            + (f", SHA-256 {sha[:16]}...)" if sha else ")"))
        if hashes is None:
            problems.append(f"{rel}: {why}")
            complete[fmt] = False
            continue
        rows = len(hashes) // merkle.HASH_SIZE
        if rows != f.get("rows"):
            problems.append(f"{rel}: {rows} rows, the manifest says {f.get('rows')} (rows added or removed)")
        by_format[fmt] = by_format.get(fmt, merkle.Frontier.empty()).extend(hashes)
    expect_root = (manifest.get("merkle") or {}).get("root")
    for fmt, frontier in sorted(by_format.items()):
        if not complete.get(fmt, True):
            continue
        if frontier.size != manifest.get("rows"):
            problems.append(f"{fmt}: {frontier.size} rows in all, the manifest says {manifest.get('rows')}")
        if frontier.root().hex() != expect_root:
            problems.append(f"{fmt}: the Merkle root of the rows does not match the manifest's (a row was edited, "
                            "added, removed or reordered)")
    return {
        "ok": not problems,
        "problems": problems,
        "trust": trust,
        "export_id": manifest.get("export_id"),
        "rows": manifest.get("rows"),
        "files": len(listed),
        "merkle_root": expect_root,
        "key_id": kid,
        "revealed": manifest.get("revealed"),
    }


def _not_intact(problem: str) -> dict:
    return {"ok": False, "problems": [problem], "trust": None, "export_id": None, "rows": None, "files": 0,
            "merkle_root": None, "key_id": None, "revealed": None}


# ============================================================================ CLI
def cli_export(args) -> int:
    from .cli import emit

    lake = Lake.open(args.lake)
    filters = {"from": args.time_from, "to": args.time_to, "event_types": args.event_type,
               "tenants": args.tenant, "subjects": args.subject}
    m = build_export(lake, args.out, args.format, filters, profile=args.profile, profiles_file=args.profiles,
                     reveal_reason=args.reveal_reason, actor=getattr(args, "actor", None))
    fmts = sorted({f["format"] for f in m["files"]})
    note = f"; PII REVEALED (reason logged: {m['reveal_reason']})" if m["revealed"] else ""
    emit(args, f"exported {m['rows']} rows ({', '.join(fmts)}, profile {m['profile']['name']}) to {args.out}; "
               f"Merkle root {m['merkle']['root'][:16]}..., signed by {m['key_id']}; logged as {m['export_id']}{note}",
         {k: v for k, v in m.items() if k != "signature"})
    return 0


def cli_verify_export(args) -> int:
    from .cli import emit
    from .masking import escape_controls
    from .proofs import pinned_public_keys

    res = verify_export(args.dir, pinned_public_keys(args))
    lines = [escape_controls(f"PROBLEM: {p}") for p in res["problems"]]  # the bundle is anyone's: one line each
    if res["ok"]:
        lines.append(f"intact: {res['rows']} rows in {res['files']} file(s), Merkle root {str(res['merkle_root'])[:16]}..., "
                     f"signature by {res['key_id']} checked with {res['trust']}")
    else:
        lines.append(f"NOT intact: {len(res['problems'])} problem(s)")
    emit(args, "\n".join(lines), res)
    return 0 if res["ok"] else 1
