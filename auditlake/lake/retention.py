"""Retention lock (rule RET-WORM) for local and S3 lakes.

What is sealed: every object a commit put under `tables/`: the Delta log entry
`_delta_log/<version>.json`, the data files its `add` actions name, and the Delta
checkpoints delta-rs writes into `_delta_log/`. Not sealed: `_delta_log/_last_checkpoint`
(delta-rs's rewritable hint) and files no commit references: a crashed or losing writer's
leftovers, which `sweep` removes once no writer can commit them any more.

Until when: at least `occurred_at + N years` (N from the lake's policy, `auditlake init
--retention-years`, default 7): the retain-until date is
`(latest of: the day the object was written, the day it is sealed, the event dates it holds)
+ 1 day + N years`.

- S3: COMPLIANCE-mode Object Lock on the object's original version (`s3.py`); the bucket has
  versioning and Object Lock (`auditlake init`). An overwrite or a delete cannot destroy that
  version; it adds a version or a delete marker, which `check` reports and `repair` undoes.
- Local: the file is made read-only and listed, with its size, SHA-256 and retain-until date,
  in a signed, read-only manifest under `_retention/`. `check` reports a committed object
  missing from the manifests, a writable or changed or deleted sealed object, and a forged
  manifest.

Both kinds of lake share the walk over the Delta logs; only the sealing differs.
"""
from __future__ import annotations

import bisect
import fcntl
import hashlib
import json
import os
import posixpath
import re
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

import pyarrow.fs as pafs

from ..errors import AuditlakeError
from ..inputs import MAX_DOCUMENT_BYTES, file_sha256
from ..keys import KeyStore, load_public_key, trust_dir
from ..ledger.canonical import canonical_json
from .store import Lake

MIN_YEARS = 7  # RET-WORM
UNLOCKED = "committed object is not under retention"
UNLOCKED_GRACE_S = 2.0  # a writer locks what it commits right after the commit
DEFAULT_COLD_AFTER_DAYS = 90
DEFAULT_ARCHIVE_AFTER_DAYS = 365
MANIFEST_DIR = "_retention"
KIND = "RET-WORM"

LOG_RE = re.compile(r"^(\d{20})\.json\Z")  # \Z: "$" also matches before a final newline
CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?\.parquet\Z")
# Files delta-rs writes: data files and, on a local disk, staging files of an unfinished
# write or commit. Only these are ever swept; anything else is left for verify to report.
DATA_RE = re.compile(r"^part-\d{5}-[0-9a-f-]{36}(-c\d{3})?(\.[a-z0-9]+)?\.parquet\Z")
STAGING_RE = re.compile(r"(^_commit_[0-9a-f-]+\.json\.tmp$|^\.tmp|\.tmp$|#\d+$)")


# ----------------------------------------------------------------------------- policy
_policy_cache: dict[str, dict] = {}


def policy(lake: Lake, refresh: bool = False) -> dict:
    """The lake's retention policy (`retention` in auditlake.json, set by `auditlake init`)."""
    if refresh or lake.uri not in _policy_cache:
        from .meta import meta_or_none

        meta = meta_or_none(lake)
        conf = (meta or {}).get("retention") or {}
        conf = conf if isinstance(conf, dict) else {}
        configured = int(conf.get("years") or os.environ.get("AUDITLAKE_RETENTION_YEARS") or MIN_YEARS)
        _policy_cache[lake.uri] = {
            # Writers never lock for less than RET-WORM's period, whatever auditlake.json
            # (which anyone who can write the lake can edit) says; verify reports a shorter one.
            "years": max(configured, MIN_YEARS),
            "configured_years": configured,
            "stated": meta is not None and bool(conf.get("years")),  # in auditlake.json, not from the environment
            "mode": "COMPLIANCE",
            "cold_after_days": int(conf.get("cold_after_days") or DEFAULT_COLD_AFTER_DAYS),
            "archive_after_days": int(conf.get("archive_after_days") or DEFAULT_ARCHIVE_AFTER_DAYS),
        }
    return _policy_cache[lake.uri]


def set_policy(lake: Lake, years: int, cold_after_days: int, archive_after_days: int | None = None) -> dict:
    """Record the policy in auditlake.json. The period can grow, never shrink."""
    from .meta import read_meta, write_meta

    meta = read_meta(lake, create=True)
    old = (meta.get("retention") or {}).get("years")
    if old and years < int(old):
        raise AuditlakeError(f"the lake's retention is {old} years; it cannot be shortened to {years}")
    if years < MIN_YEARS:
        raise AuditlakeError(f"--retention-years must be at least {MIN_YEARS} (RET-WORM)")
    meta["retention"] = {
        "years": years,
        "mode": "COMPLIANCE",
        "cold_after_days": cold_after_days,
        "archive_after_days": archive_after_days or max(DEFAULT_ARCHIVE_AFTER_DAYS, cold_after_days + 30),
    }
    write_meta(lake, meta)
    return policy(lake, refresh=True)


def add_years(d: date, years: int) -> date:
    """`d` plus `years`; the last representable day (9999-12-31) when that is later."""
    if d.year + years > date.max.year:
        return date.max
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February: the next day, so the period is never short
        return date(d.year + years, 3, 1)


def required_until(created: date, dates: tuple[date, ...] | list[date], years: int) -> date:
    """The earliest retain-until date RET-WORM accepts for an object written on `created`
    holding events of `dates`: the end of the latest such day, plus the period (at most
    9999-12-31: an event a producer dated near year 9999 is kept as long as a date goes)."""
    latest = max([created, *dates])
    return add_years(latest + timedelta(days=1), years) if latest < date.max else date.max


def retain_until(rel: str, now: datetime, years: int | None = None, dates: tuple[date, ...] = ()) -> str:
    """Retain-until date (ISO) for an object sealed at `now` (kept for callers of the old API)."""
    y = years if years is not None else int(os.environ.get("AUDITLAKE_RETENTION_YEARS") or MIN_YEARS)
    return required_until(now.date(), tuple(dates) + _partition_dates(rel), y).isoformat()


def _partition_dates(rel: str) -> tuple[date, ...]:
    out = []
    for part in rel.split("/"):
        if part.startswith("event_date="):
            try:
                out.append(date.fromisoformat(unquote(part.split("=", 1)[1])))
            except ValueError:
                pass
    return tuple(out)


# ----------------------------------------------------------------------------- the Delta logs
@dataclass
class Obj:
    """An object a commit put in the lake."""

    rel: str  # relative to the lake root
    table: str
    version: int  # the commit that wrote it
    kind: str  # "log", "data" or "checkpoint"
    dates: tuple[date, ...] = ()  # event dates it holds (ledger)
    action: dict | None = field(default=None, compare=False, repr=False)  # a data file's add, a log entry's commitInfo
    problem: str | None = field(default=None, compare=False)  # a log entry that is no commit the lake makes: why

    @property
    def partition(self) -> str | None:
        parts = self.rel.split("/")
        return next((p for p in parts if "=" in p), None)


def _root(lake: Lake) -> tuple[pafs.FileSystem, str]:
    return lake.filesystem()


def table_names(lake: Lake) -> list[str]:
    fs, root = _root(lake)
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/tables", allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


@dataclass
class LogListing:
    entries: dict[int, pafs.FileInfo]
    checkpoints: dict[str, tuple[int, pafs.FileInfo]]  # rel -> (version, info)
    others: list[pafs.FileInfo]  # anything else in _delta_log (staging leftovers, hints)

    @property
    def latest(self) -> int:
        return max(self.entries) if self.entries else -1


def list_log(lake: Lake, table: str) -> LogListing:
    fs, root = _root(lake)
    log = f"{root}/tables/{table}/_delta_log"
    out = LogListing({}, {}, [])
    try:
        infos = fs.get_file_info(pafs.FileSelector(log, allow_not_found=True))
    except FileNotFoundError:
        return out
    for i in infos:
        if i.type != pafs.FileType.File:
            continue
        name = posixpath.basename(i.path)
        if m := LOG_RE.match(name):
            out.entries[int(m.group(1))] = i
        elif m := CHECKPOINT_RE.match(name):
            out.checkpoints[f"tables/{table}/_delta_log/{name}"] = (int(m.group(1)), i)
        else:
            out.others.append(i)
    return out


def log_rel(table: str, version: int) -> str:
    return f"tables/{table}/_delta_log/{version:020d}.json"


_entries: dict[tuple, list[Obj]] = {}


def read_entry(lake: Lake, table: str, version: int, cache: bool = True, info: pafs.FileInfo | None = None) -> list[Obj]:
    """The log entry and the data files it adds (cached for writers: a log entry never
    changes; `check` reads afresh). The cache knows an entry by its file's write time and
    size (`info`, from the listing) too: a table made again at its path has new entries."""
    ck = (lake.uri, table, version, info.mtime_ns if info else None, info.size if info else None)
    if not cache:
        return _read_entry(lake, table, version)
    if ck not in _entries:
        _entries[ck] = _read_entry(lake, table, version)
    return _entries[ck]


def _read_entry(lake: Lake, table: str, version: int) -> list[Obj]:
    fs, root = _root(lake)
    rel = log_rel(table, version)
    with fs.open_input_stream(f"{root}/{rel}") as f:
        text = f.read().decode(errors="replace")  # a damaged entry: verify's history check reports it
    adds: list[Obj] = []
    commit_info = None
    problem = None
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError:
            problem = problem or "a line that is not JSON"
            continue  # a damaged entry: verify's history check reports it
        problem = problem or _action_problem(action, version)
        if isinstance(action, dict) and isinstance(action.get("commitInfo"), dict):
            commit_info = action["commitInfo"]
        add = action.get("add") if isinstance(action, dict) else None
        if isinstance(add, dict) and isinstance(add.get("path"), str):
            path = unquote(add["path"])
            dates = []
            values = add.get("partitionValues")
            ev = values.get("event_date") if isinstance(values, dict) else None
            if isinstance(ev, str):
                try:
                    dates.append(date.fromisoformat(ev))
                except ValueError:
                    pass
            adds.append(Obj(f"tables/{table}/{path}", table, version, "data", tuple(dates) or _partition_dates(path), add))
    entry_dates = tuple(sorted({d for a in adds for d in a.dates}))
    return [Obj(rel, table, version, "log", entry_dates, commit_info, problem), *adds]


def _action_problem(action, version: int) -> str | None:
    """Why a log line is no part of a blind append the lake makes (verify's history check
    says the same, in full): writers never seal such an entry, which would make it permanent."""
    if not isinstance(action, dict) or len(action) != 1 or not isinstance(next(iter(action.values())), dict):
        return "a line that is not one Delta action"
    kind, body = next(iter(action.items()))
    if kind == "commitInfo":
        params = body.get("operationParameters")
        mode = params.get("mode") if isinstance(params, dict) else None
        if body.get("operation") != "WRITE" or mode not in (("Append", "ErrorIfExists") if version == 0 else ("Append",)):
            return f"a {body.get('operation')} {mode or ''} commit".strip()
    elif kind in ("metaData", "protocol"):
        if version != 0:
            return f"a {kind} change"
    elif kind != "add":
        return f"a {kind} action"
    return None


_made: set[tuple[str, str, int]] = set()  # (lake, table, version) of the commits this process made


def made_here(lake: Lake, table: str, version: int) -> None:
    """Note a commit this process made (tables.append): its own, not looked into again."""
    _made.add((lake.uri, table, version))


def forged_why(lake: Lake, keys: KeyStore, log: Obj) -> str | None:
    """Why a log entry is no commit the lake makes: not a blind append; in a table whose
    commits the lake signs, not signed by the lake over the rows it adds; in the ledger, not
    the next rows of the chain."""
    from . import tables

    if log.problem:
        return log.problem
    if log.table == "ledger":
        return None if (lake.uri, "ledger", log.version) in _made else _ledger_commit_problem(lake, keys, log)
    if log.table == "checkpoints":  # its rows are signed one by one (verify checks them); a commit adds one
        return None if read_entry(lake, log.table, log.version, cache=False)[1:] else "a checkpoints commit that adds no checkpoint"
    if log.table not in tables.SIGNED_COMMITS:
        return None
    _, *adds = read_entry(lake, log.table, log.version, cache=False)  # a removed entry's number is reused
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    prefix = f"tables/{log.table}/"
    return tables.commit_signature_problem(lake, log.table, log.version, log.action or {},
                                           [(a.rel[len(prefix):], (a.action or {}).get("partitionValues")) for a in adds],
                                           public, keys.log_id)


def _ledger_commit_problem(lake: Lake, keys: KeyStore, log: Obj) -> str | None:
    """Why a ledger log entry another process made is no commit of the lake: ingest commits
    the next seqs of the log, each once, each row linked by the chain to the one before (the
    first to the chain head of the checkpoint at the log's size then, where there is one). A
    copy of sealed rows, or rows that do not chain, would otherwise be sealed for good."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..ledger import chain, packed
    from ..ledger.checkpoint import ZERO_HASH

    prior = 0
    for add in _log_adds(lake, "ledger", list_log(lake, "ledger"), log.version - 1).values():  # entries never change
        try:
            prior += json.loads(add.get("stats") or "")["numRecords"]
        except (ValueError, KeyError, TypeError):
            return None  # an earlier entry without row counts: verify judges the rows
    fs, root = _root(lake)
    _, *adds = read_entry(lake, "ledger", log.version, cache=False)
    if not adds:
        return "a ledger commit that adds no rows"
    try:
        rows = pa.concat_tables([pq.read_table(fs.open_input_file(f"{root}/{a.rel}"), columns=["seq", "hash", "key_id", "leaf"])
                                 for a in adds]).sort_by("seq")
    except FileNotFoundError:
        return None  # a committed file that is gone: verify reports it
    except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
        return f"a data file that does not read as ledger rows ({str(exc).splitlines()[0][:80] if str(exc) else exc})"
    n, seq = rows.num_rows, rows.column("seq")
    if seq.null_count or not np.array_equal(seq.to_numpy(), np.arange(prior, prior + n)):
        return f"its rows are not seq {prior}..{prior + n - 1}, the next of the log, each once"
    key_ids, stored = rows.column("key_id").to_pylist(), rows.column("hash").to_pylist()
    if rows.column("leaf").null_count or not set(key_ids) <= set(keys.chain_keys()):
        return "rows without a leaf, or chained with a key the lake does not hold"
    cps = lake.delta("checkpoints")
    heads = (cps.to_pyarrow_dataset().to_table(columns=["chain_head"], filter=pc.field("tree_size") == prior)
             .column("chain_head").to_pylist() if cps is not None and prior else [])
    first = 0 if not prior or heads else 1  # no checkpoint at its start: the links after its first row
    prev = ZERO_HASH if not prior else heads[0] if heads else stored[0]
    try:
        computed = chain.extend(keys.chain_keys(), bytes.fromhex(prev), key_ids[first:], rows.column("leaf").slice(first))
    except (ValueError, TypeError):
        return "rows whose stored hashes are not hex"
    if packed.hex_array(computed).to_pylist() != stored[first:]:
        return "its rows do not chain from the log before them"
    return None


def refuse_forged(lake: Lake, keys: KeyStore, objs: list[Obj]) -> None:
    """Stop before sealing a log entry that no writer of the lake made: sealed (S3 COMPLIANCE,
    local read-only plus manifest) it could never be removed, and later commits would build
    on it. Unsealed, it can be inspected and deleted."""
    for o in objs:
        if o.kind == "log" and (why := forged_why(lake, keys, o)):
            if locked := foreign_lock(lake, o.rel):
                raise AuditlakeError(f"{o.rel} is no commit the lake makes ({why}) and {locked}")
            raise AuditlakeError(f"{o.rel} is no commit the lake makes ({why}): not sealing it or writing "
                                 "after it; see `auditlake verify`, then `auditlake repair` removes it (it is not locked)")


def foreign_lock(lake: Lake, rel: str) -> str:
    """On S3, why a log entry no writer of the lake made cannot be removed: a version of it
    under retention its writer chose ("" when none). Its version number is taken until the
    lock ends: the table can take no commit, whatever repair does (a delete marker on it
    would only read as a hidden commit)."""
    if not lake.is_s3:
        return ""
    from . import s3

    for v in s3.history(lake, rel).versions:
        info = s3.lock_info(lake, rel, v.version_id)
        if info.mode or info.legal_hold:
            until = f" until {info.until.date()}" if info.until else " (a legal hold)"
            return (f"is locked by whoever wrote it ({info.mode or 'legal hold'}{until}): it cannot be removed, and the "
                    "table can take no commit before the lock ends; restore the lake's objects under a new prefix "
                    "(see STORAGE.md, 'A log entry locked by someone else')")
    return ""


def entries(lake: Lake, table: str) -> list[tuple[pafs.FileInfo, Obj, list[Obj]]]:
    """Each log entry of the table in version order: (its file, the entry, the data files it
    adds), read once per process (read_entry)."""
    listing = list_log(lake, table)
    out = []
    for v, info in sorted(listing.entries.items()):
        log, *data = read_entry(lake, table, v, True, info)
        out.append((info, log, data))
    return out


def any_between(ordered: list, lo, hi) -> bool:
    """Whether the sorted list holds a value in [lo, hi]."""
    i = bisect.bisect_left(ordered, lo)
    return i < len(ordered) and ordered[i] <= hi


def stats_allow(add: dict | None, values: dict[str, list]) -> bool:
    """Whether a data file's add-action statistics allow, for each column, one of its values
    (given sorted); a file without usable statistics may hold anything."""
    try:
        stats = json.loads((add or {}).get("stats") or "{}")
        low, high = stats["minValues"], stats["maxValues"]
        return all(any_between(ordered, low[column], high[column]) for column, ordered in values.items())
    except (ValueError, KeyError, TypeError):
        return True


def committed(lake: Lake, table: str, versions: list[int] | None = None, listing: LogListing | None = None,
              cache: bool = True) -> list[Obj]:
    """Objects committed by the given versions of a table (default: all), plus its Delta
    checkpoints that agree with the log (see checkpoint_problems)."""
    listing = listing or list_log(lake, table)
    vs = sorted(listing.entries) if versions is None else versions
    out: list[Obj] = []
    for v in vs:
        out.extend(read_entry(lake, table, v, cache, listing.entries.get(v)))
    forged = checkpoint_problems(lake, table, listing, cache) if listing.checkpoints else {}
    for rel, (v, _) in listing.checkpoints.items():
        if rel not in forged:
            out.append(Obj(rel, table, v, "checkpoint"))
    return out


# ----------------------------------------------------------------------------- Delta checkpoints
_verdicts: dict[tuple, str | None] = {}


def checkpoint_problems(lake: Lake, table: str, listing: LogListing, cache: bool = True) -> dict[str, str]:
    """{rel: why} for the Delta checkpoints in the table's `_delta_log` that do not hold
    exactly the table its log entries up to their version make (the files those entries
    added, no remove, version 0's metaData and protocol), and for a `_last_checkpoint` hint
    that points at no such checkpoint. Readers (delta-rs, DuckDB) start from the latest
    checkpoint, so a forged one hides committed files from them and from the sweep: it is
    never sealed, verify reports it and repair removes it."""
    parts: dict[int, list[str]] = {}
    for rel, (v, _) in listing.checkpoints.items():
        parts.setdefault(v, []).append(rel)
    out: dict[str, str] = {}
    for v, rels in parts.items():
        key = (lake.uri, table, v, tuple(sorted((r, listing.checkpoints[r][1].mtime_ns, listing.checkpoints[r][1].size)
                                              for r in rels)))
        why = _verdicts[key] if cache and key in _verdicts else _checkpoint_problem(lake, table, v, sorted(rels), listing, cache)
        _verdicts[key] = why
        if why:
            out.update(dict.fromkeys(rels, why))
    hint = next((i for i in listing.others if posixpath.basename(i.path) == "_last_checkpoint"), None)
    if hint is not None:
        rel = f"tables/{table}/_delta_log/_last_checkpoint"
        try:
            fs, root = _root(lake)
            with fs.open_input_stream(f"{root}/{rel}") as f:
                version = json.loads(f.read())["version"]
        except (OSError, ValueError, KeyError, TypeError):
            out[rel] = "the _last_checkpoint hint is unreadable"
        else:
            if version not in parts or any(r in out for r in parts[version]):
                out[rel] = f"the _last_checkpoint hint points at version {version}, which has no checkpoint that agrees with the log"
    return out


def _checkpoint_problem(lake: Lake, table: str, version: int, rels: list[str], listing: LogListing,
                        cache: bool) -> str | None:
    import pyarrow.parquet as pq

    m = CHECKPOINT_RE.match(posixpath.basename(rels[0]))
    expected_parts = int(m.group(2).rsplit(".", 1)[1]) if m and m.group(2) else 1
    if len(rels) != expected_parts:
        return f"checkpoint of version {version} has {len(rels)} of its {expected_parts} part(s)"
    if version not in listing.entries:
        return f"checkpoint of version {version}, which the log does not have"
    fs, root = _root(lake)
    rows: dict[str, list] = {}
    try:
        for rel in rels:
            t = pq.read_table(f"{root}/{rel}", filesystem=fs)
            for name in t.column_names:
                rows.setdefault(name, []).extend(r for r in t.column(name).to_pylist() if r is not None)
    except (OSError, ValueError) as exc:
        return f"checkpoint of version {version} is unreadable: {str(exc).splitlines()[0][:200]}"
    added = {f"tables/{table}/{unquote(a['path'])}" for a in rows.get("add", []) if a.get("path")}
    log_adds = _log_adds(lake, table, listing, version, cache)
    expected = set(log_adds)
    if added != expected or len(rows.get("add", [])) != len(expected):
        return (f"checkpoint of version {version} lists {len(rows.get('add', []))} data file(s) where the log has "
                f"{len(expected)} ({len(expected - added)} left out, {len(added - expected)} not in the log)")
    for a in rows.get("add", []):
        if not _same_add(a, log_adds[f"tables/{table}/{unquote(a['path'])}"]):
            return f"checkpoint of version {version} describes {unquote(a['path'])} otherwise than the log does"
    extra = sorted(name for name, found in rows.items() if found and name not in ("add", "metaData", "protocol"))
    if extra:
        return f"checkpoint of version {version} has {extra[0]} actions, which the log does not"
    first = _first_entry(lake, table)
    meta, protocol = rows.get("metaData", []), rows.get("protocol", [])
    if len(meta) != 1 or len(protocol) != 1:
        return f"checkpoint of version {version} does not hold one metaData and one protocol action"
    fields = ("id", "schemaString", "partitionColumns")
    config = meta[0].get("configuration") or {}
    if isinstance(config, list):  # a Parquet map reads as (key, value) pairs
        config = dict(config)
    if ({f: meta[0].get(f) for f in fields} != {f: first.get("metaData", {}).get(f) for f in fields}
            or config != (first.get("metaData", {}).get("configuration") or {})):
        return f"checkpoint of version {version} has a table metaData other than version 0's"
    if any(protocol[0].get(f) != first.get("protocol", {}).get(f) for f in ("minReaderVersion", "minWriterVersion")):
        return f"checkpoint of version {version} has a protocol other than version 0's"
    return None


def _first_entry(lake: Lake, table: str) -> dict:
    """The metaData and protocol actions of the table's log entry 0."""
    fs, root = _root(lake)
    out: dict = {}
    try:
        with fs.open_input_stream(f"{root}/{log_rel(table, 0)}") as f:
            for line in f.read().decode().split("\n"):
                action = json.loads(line) if line.strip() else {}
                for kind in ("metaData", "protocol"):
                    if isinstance(action, dict) and kind in action:
                        out[kind] = action[kind]
    except (OSError, ValueError):
        pass  # verify's history check reports a missing or damaged entry 0
    return out


def _data_files(lake: Lake, table: str, listing: LogListing, through: int, cache: bool = True) -> set[str]:
    """The data files the listed log entries up to version `through` add: read from the
    entries themselves, never from a Delta checkpoint, which someone could have forged to
    leave a file out."""
    return set(_log_adds(lake, table, listing, through, cache))


def _log_adds(lake: Lake, table: str, listing: LogListing, through: int, cache: bool = True) -> dict[str, dict]:
    """The add actions of the listed log entries up to version `through`, by data file."""
    return {o.rel: o.action for v in sorted(listing.entries) if v <= through
            for o in read_entry(lake, table, v, cache, listing.entries[v]) if o.kind == "data"}


def _same_add(checkpoint: dict, log: dict) -> bool:
    """Whether a checkpoint's add action says what the log's does: a reader takes the
    partition values, statistics (which let it skip the file), deletion vector and the rest
    from the checkpoint alone. Only dataChange, which no reader acts on, may differ."""
    def value(action: dict, key: str):
        v = action.get(key)
        if key in ("partitionValues", "tags") and isinstance(v, list):  # a Parquet map reads as pairs
            v = dict(v)
        if key == "tags" and not v:
            return None
        if key == "stats" and isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v

    return all(value(checkpoint, k) == value(log, k) for k in (set(checkpoint) | set(log)) - {"dataChange"})


# ----------------------------------------------------------------------------- uncommitted files
def _mtime_key(lake: Lake, info: pafs.FileInfo) -> float:
    """Comparable write time. S3 keeps LastModified to the second (and it is the time the
    upload started), so on S3 only whole seconds count."""
    t = info.mtime.timestamp() if info.mtime else 0.0
    return float(int(t)) if lake.is_s3 else t


def _remove(lake: Lake, rel: str, versions: bool = False) -> None:
    """Remove the object; with `versions`, on S3 every version of it that is not locked
    too (what repair removes as forged: left under a delete marker, it would read as a
    hidden commit and stop every writer)."""
    if lake.is_s3:
        from . import s3

        if versions:  # newest first: a locked one below stops it, with what was put on top gone
            h = s3.history(lake, rel)
            newest_first = h.markers[::-1] + h.versions[::-1]  # (S3 lists each newest first; times tie)
            if all(s3.delete_version(lake, h.key, v.version_id) is None for v in newest_first):
                return
        s3.delete_current(lake, rel)
    else:
        try:
            os.remove(os.path.join(lake.uri, rel))
        except FileNotFoundError:
            pass


# Per process and table: the version seen at the first sweep, and whether the table has been
# swept again since it moved past it. Sweeping lists the whole table, so a process does it at
# most twice per table: at its start, and after its first commit (which is what proves a
# crashed predecessor's leftovers dead).
_sweeps: dict[tuple[str, str], list] = {}


def sweep(lake: Lake, tables: list[str] | None = None, force: bool = False,
          listings: dict[str, "LogListing"] | None = None) -> list[str]:
    """Remove files no commit references and no writer can still commit.

    Every commit auditlake makes is `tables.append`: the writer loads the table at version r,
    writes its data files, then creates log entry r+1 with put-if-absent and no retry. So a
    file written before log entry L appeared (its write time is earlier than L's) comes from
    a writer that read version L-1 or older: its commit targets a version that exists, it can
    never succeed, and if the file is not referenced now it never will be. (S3 and the local
    disk each stamp both times with one clock.) A file newer than the latest entry may belong
    to a writer still at work and is left alone until a later commit passes it."""
    removed: list[str] = []
    fs, root = _root(lake)
    try:
        names = tables if tables is not None else table_names(lake)
    except (OSError, AuditlakeError):
        return removed
    for table in names:
        try:
            listing = (listings or {}).get(table) or list_log(lake, table)
            if listing.latest < 0:
                continue
            state = _sweeps.get((lake.uri, table))
            if not force and state is not None and (state[1] or listing.latest == state[0]):
                continue
            tdir = f"{root}/tables/{table}"
            files = [i for i in fs.get_file_info(pafs.FileSelector(tdir, recursive=True, allow_not_found=True))
                     if i.type == pafs.FileType.File]
            newest = _mtime_key(lake, listing.entries[listing.latest])
            referenced = _data_files(lake, table, listing, listing.latest)
            for i in files:
                rel = posixpath.relpath(i.path, root)
                name = posixpath.basename(rel)
                in_log = "/_delta_log/" in f"/{rel}"
                if in_log:
                    if not STAGING_RE.search(name):
                        continue
                elif rel in referenced or not (DATA_RE.match(name) or STAGING_RE.search(name)):
                    continue
                if _mtime_key(lake, i) < newest:
                    _remove(lake, rel)
                    removed.append(rel)
            _sweeps[(lake.uri, table)] = [listing.latest, state is not None]
        except (OSError, AuditlakeError):
            continue  # best effort: a later run sweeps again
    return removed


def discard_uncommitted(lake: Lake, table: str, rows) -> list[str]:
    """After a lost commit race: delete the data files this writer just wrote. They are the
    unreferenced files whose first row is one of `rows` (by batch id where the table has one);
    no other writer writes the same rows. Best effort: `sweep` catches anything left."""
    import pyarrow.parquet as pq

    if rows.num_rows == 0:
        return []
    by_batch = "batch_id" in rows.schema.names
    if by_batch:
        ours: set = {b for b in rows.column("batch_id").to_pylist() if b}
    elif rows.num_rows <= 200_000:
        ours = set()  # filled per file layout below
    else:
        return []
    removed = []
    try:
        fs, root = _root(lake)
        listing = list_log(lake, table)
        referenced = _data_files(lake, table, listing, listing.latest)
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/tables/{table}", recursive=True, allow_not_found=True))
        row_sets: dict[tuple[str, ...], set] = {}
        for i in infos:
            rel = posixpath.relpath(i.path, root)
            if i.type != pafs.FileType.File or "/_delta_log/" in f"/{rel}" or rel in referenced:
                continue
            if not DATA_RE.match(posixpath.basename(rel)):
                continue
            try:
                with fs.open_input_file(i.path) as f:
                    first = pq.ParquetFile(f).read_row_group(0).slice(0, 1)
            except Exception:  # noqa: BLE001 - being written by someone else, or not parquet
                continue
            if not first.num_rows:
                continue
            if by_batch:
                mine = first.column("batch_id")[0].as_py() in ours if "batch_id" in first.schema.names else False
            else:
                cols = tuple(c for c in first.schema.names if c in rows.schema.names)
                if cols not in row_sets:
                    row_sets[cols] = set(zip(*(rows.column(c).to_pylist() for c in cols)))
                mine = tuple(first.column(c)[0].as_py() for c in cols) in row_sets[cols]
            if mine:
                _remove(lake, rel)
                removed.append(rel)
    except Exception:  # noqa: BLE001 - best effort
        pass
    return removed


# ----------------------------------------------------------------------------- local manifests
_manifest_cache: dict[str, tuple[dict | None, str]] = {}


def sealed_rels(lake: Lake) -> set[str]:
    """The objects a local lake's manifests seal (none on S3, where Object Lock seals)."""
    return set() if lake.is_s3 else {rel for m, _ in _manifest_files(lake).values() if m for rel in m.get("objects", {})}


def _manifest_files(lake: Lake) -> dict[str, tuple[dict | None, str]]:
    """name -> (parsed manifest, None if unreadable or of another shape; SHA-256 of its
    bytes), each file read once: manifests are immutable, cached by path, size and mtime."""
    d = os.path.join(lake.uri, MANIFEST_DIR)
    out: dict[str, tuple[dict | None, str]] = {}
    if not os.path.isdir(d):
        return out
    for name in sorted(os.listdir(d)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(d, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        ck = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        if ck not in _manifest_cache:
            data = None  # unreadable: a link, a FIFO or a device (reading one would block or never end), or huge
            if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_DOCUMENT_BYTES:
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    pass
            try:
                m = json.loads(data) if data is not None else None
            except ValueError:
                m = None
            # Any other shape is no manifest the lake writes (its signature is checked later).
            objects = m.get("objects") if isinstance(m, dict) else None
            shaped = isinstance(objects, dict) and all(isinstance(e, dict) for e in objects.values())
            _manifest_cache[ck] = (m if shaped else None, hashlib.sha256(data).hexdigest() if data is not None else "")
        out[name] = _manifest_cache[ck]
    return out


def _manifests(lake: Lake) -> dict[str, dict | None]:
    """name -> parsed manifest (None if unreadable): a copy the caller may change."""
    return {name: None if m is None else json.loads(json.dumps(m)) for name, (m, _) in _manifest_files(lake).items()}


def manifest_digests(lake: Lake) -> dict[str, str]:
    """{name: SHA-256 of its bytes} of a local lake's retention manifests."""
    return {name: digest for name, (_, digest) in _manifest_files(lake).items()}


def seen_manifests_path(log_id: str) -> Path:
    """{name: SHA-256} of the retention manifests this host's writers sealed and its clean
    verify passes found, kept beside the trusted checkpoint (outside the lake): one deleted
    and its files sealed again by the next ingest or repair would otherwise pass, whatever
    was changed in them meanwhile, even before any verify saw them."""
    return trust_dir() / f"{log_id}.manifests.json"


def seen_manifests(log_id: str) -> dict[str, str]:
    path = seen_manifests_path(log_id)
    try:
        seen = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}  # unreadable memory: checked without it, and the next writer or clean pass rewrites it
    return {k: v for k, v in seen.items() if isinstance(v, str)} if isinstance(seen, dict) else {}


def remember_manifests(log_id: str, digests: dict[str, str]) -> None:
    """Add manifests to the seen ones (under a lock: writers and verify share the file)."""
    path = seen_manifests_path(log_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seen = seen_manifests(log_id)
        seen.update(digests)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(seen, indent=1, sort_keys=True))
        os.replace(tmp, path)


def _pending(lake: Lake, table: str, sealed: set[str], listing: LogListing) -> list[Obj]:
    versions = [v for v in sorted(listing.entries) if log_rel(table, v) not in sealed]
    objs = committed(lake, table, versions, listing)
    return [o for o in objs if o.rel not in sealed]


def seal_local(lake: Lake, keys: KeyStore, listings: dict[str, LogListing] | None = None) -> int:
    """Make every committed, not yet sealed object read-only and record it in a signed manifest."""
    sealed = sealed_rels(lake)
    years = policy(lake)["years"]
    now = datetime.now(timezone.utc)
    objects = {}
    listings = listings if listings is not None else {t: list_log(lake, t) for t in table_names(lake)}
    pending = {table: _pending(lake, table, sealed, listing) for table, listing in listings.items()}
    refuse_forged(lake, keys, [o for objs in pending.values() for o in objs])
    for objs in pending.values():
        for o in objs:
            path = os.path.join(lake.uri, o.rel)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # a committed file that is gone: verify reports it
            os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            created = datetime.fromtimestamp(st.st_mtime, timezone.utc).date()
            objects[o.rel] = {
                "size": st.st_size,
                "sha256": file_sha256(path),
                "created": created.isoformat(),
                "retain_until": required_until(max(created, now.date()), o.dates, years).isoformat(),
            }
    if not objects:
        return 0
    body = {"log_id": keys.log_id, "sealed_at": now.isoformat(), "key_id": keys.signing_key_id,
            "retention_years": years, "objects": objects}
    body["signature"] = keys.signing_key().sign(canonical_json(body)).hex()
    d = os.path.join(lake.uri, MANIFEST_DIR)
    os.makedirs(d, exist_ok=True)
    name = f"{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json"
    tmp = os.path.join(d, f".{name}.tmp")
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    os.rename(tmp, os.path.join(d, name))  # a crash leaves a hidden .tmp, never half a manifest
    remember_manifests(keys.log_id, {name: file_sha256(os.path.join(d, name))})
    return len(objects)


def _check_local(lake: Lake, keys: KeyStore, years: int) -> tuple[list[dict], int]:
    """The findings, and the longest retention a signed manifest was sealed under."""
    findings: list[dict] = []
    sealed_years = 0
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    sealed: dict[str, dict] = {}
    for name, m in _manifests(lake).items():
        if m is None:
            findings.append(_f(MANIFEST_DIR, f"{MANIFEST_DIR}/{name}", "retention manifest is unreadable"))
            continue
        sig = m.pop("signature", "")
        key = public.get(m.get("key_id"))
        try:
            ok = key is not None and (key.verify(bytes.fromhex(sig), canonical_json(m)) is None)
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            findings.append(_f(MANIFEST_DIR, f"{MANIFEST_DIR}/{name}", "retention manifest signature does not verify"))
            continue
        sealed_at = (m.get("sealed_at") or "")[:10]
        if isinstance(m.get("retention_years"), int):
            sealed_years = max(sealed_years, m["retention_years"])
        for rel, entry in m.get("objects", {}).items():
            entry.setdefault("created", sealed_at)
            sealed[rel] = entry
    objs: dict[str, Obj] = {}
    for table in table_names(lake):
        for o in committed(lake, table, cache=False):
            objs[o.rel] = o
    for rel, o in sorted(objs.items()):
        if rel not in sealed and os.path.exists(os.path.join(lake.uri, rel)):
            findings.append(_f(o.table, rel, f"{UNLOCKED} (not in a sealed manifest; "
                                 "the next ingest or `auditlake repair` seals it)", o.partition))
    real_root = os.path.realpath(lake.uri)
    for rel, entry in sorted(sealed.items()):
        table = _table_of(rel)
        path = os.path.join(lake.uri, rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            findings.append(_f(table, rel, "sealed object was deleted", _part(rel)))
            continue
        if os.path.realpath(path) != os.path.join(real_root, rel):
            # A link (the file's or a folder's on its path) puts the bytes where the lock is not.
            findings.append(_f(table, rel, "sealed object is replaced by a symbolic link", _part(rel)))
            continue
        if st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            findings.append(_f(table, rel, "sealed object is writable (retention lock lifted)", _part(rel)))
        if st.st_size != entry.get("size") or file_sha256(path) != entry.get("sha256"):
            findings.append(_f(table, rel, "object differs from its sealed version", _part(rel)))
        o = objs.get(rel)
        need = required_until(date.fromisoformat(entry["created"]) if entry.get("created") else date.min,
                              o.dates if o else _partition_dates(rel), years)
        if str(entry.get("retain_until", "")) < need.isoformat():
            findings.append(_f(table, rel, f"retained until {entry.get('retain_until')}, RET-WORM needs {need}", _part(rel)))
    return findings, sealed_years


def _table_of(rel: str) -> str:
    parts = rel.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "tables" else parts[0]


def _part(rel: str) -> str | None:
    return next((p for p in rel.split("/") if "=" in p), None)


def _f(table: str, rel: str | None, detail: str, partition: str | None = None) -> dict:
    return {"kind": KIND, "table": table, "file": rel, "partition": partition, "detail": detail}


# ----------------------------------------------------------------------------- S3
WATERMARK_DIR = f"{MANIFEST_DIR}/locked"


_marks: dict[tuple[str, str], dict] = {}


def _watermark(lake: Lake, table: str, keys: KeyStore) -> dict:
    """How far retention was applied: a hint that saves a writer re-locking every object
    (re-locking is idempotent, verify checks all). Signed by the lake: one edited or forged
    by anyone who can write the bucket (raised to stop writers locking) reads as none."""
    ck = (lake.uri, table)
    if ck not in _marks:
        try:
            mark = lake.read_json(f"{WATERMARK_DIR}/{table}.json") or {}
        except (ValueError, AuditlakeError):
            mark = {}
        _marks[ck] = mark if _watermark_signed(mark, table, keys) else {}
    return _marks[ck]


def _watermark_signed(mark: dict, table: str, keys: KeyStore) -> bool:
    from ..ledger import commits

    body = {k: v for k, v in mark.items() if k != "signature"}
    public = keys.public_keys().get(body.get("key_id"))
    return (bool(public) and body.get("log_id") == keys.log_id and body.get("table") == table
            and commits.signature_valid(load_public_key(public), mark.get("signature"), canonical_json(body)))


def _put_watermark(lake: Lake, table: str, body: dict, keys: KeyStore) -> None:
    from ..ledger import commits
    from . import s3

    body = {**body, "log_id": keys.log_id, "table": table, "key_id": keys.signing_key_id}
    body["signature"] = commits.sign(keys.signing_key(), canonical_json(body))
    _marks[(lake.uri, table)] = body
    s3.call("recording retention progress", s3.client(lake).put_object, Bucket=lake.bucket,
            Key=s3.key(lake, f"{WATERMARK_DIR}/{table}.json"), Body=json.dumps(body, sort_keys=True).encode())


def _held(lake: Lake):
    """A predicate: should this new object carry a legal hold (S3)?"""
    from .admin import active_holds

    # From _holds/ only: reading the ledger on every S3 commit would cost more than the
    # records it could add; a deleted record is a verify finding (admin.hold_problems).
    holds = active_holds(lake, with_ledger=False)
    if any(h["scope"] == "lake" for h in holds):
        return lambda rel: True
    subjects = {h["subject_id"] for h in holds if h["scope"] == "subject"}
    if not subjects:
        return None

    def pred(rel: str) -> bool:
        if not rel.startswith("tables/ledger/") or "/_delta_log/" in rel:
            return False
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        fs, root = _root(lake)
        with fs.open_input_file(f"{root}/{rel}") as f:
            col = pq.read_table(f, columns=["subject_id"]).column("subject_id")
        return bool(pc.any(pc.is_in(col, value_set=__import__("pyarrow").array(sorted(subjects)))).as_py())

    return pred


_worm_buckets: set[tuple[str, str]] = set()


def require_worm_bucket(lake: Lake) -> None:
    """Refuse to commit into a bucket without Object Lock (checked once per process)."""
    from . import s3

    ident = (lake.storage_options.get("AWS_ENDPOINT_URL", ""), lake.bucket)
    if ident in _worm_buckets:
        return
    if s3.object_lock_status(lake) != "Enabled":
        raise AuditlakeError(f"bucket {lake.bucket} has no Object Lock; run `auditlake init --lake {lake.uri}` first")
    _worm_buckets.add(ident)


def lock_s3(lake: Lake, keys: KeyStore, listings: dict[str, LogListing] | None = None) -> int:
    """COMPLIANCE retention on every object committed since the last pass."""
    from . import s3

    require_worm_bucket(lake)
    years = policy(lake)["years"]
    today = datetime.now(timezone.utc).date()
    held = _held(lake)
    n = 0
    listings = listings if listings is not None else {t: list_log(lake, t) for t in table_names(lake)}
    for table, listing in listings.items():
        if listing.latest < 0:
            continue
        mark = _watermark(lake, table, keys)
        through = int(mark.get("locked_through", -1))
        done_ckpts = set(mark.get("checkpoints", []))
        versions = [v for v in sorted(listing.entries) if v > through]
        objs = [o for o in committed(lake, table, versions, listing) if o.kind != "checkpoint" or o.rel not in done_ckpts]
        if not objs:
            continue
        refuse_forged(lake, keys, objs)

        def one(o: Obj) -> bool:
            vid, _ = s3.lock_object(lake, o.rel, None, years=years, dates=o.dates, today=today,
                                    legal_hold=bool(held and held(o.rel)))
            return vid is not None

        n += sum(s3._parallel(one, objs))
        _put_watermark(lake, table, {"locked_through": listing.latest,
                                     "checkpoints": sorted(set(listing.checkpoints) | done_ckpts)}, keys)
    return n


def _check_s3(lake: Lake, years: int) -> list[dict]:
    from . import s3
    from .admin import active_holds

    findings: list[dict] = []
    if s3.versioning_status(lake) != "Enabled":
        findings.append(_f("bucket", None, f"bucket {lake.bucket} does not have versioning enabled"))
    if s3.object_lock_status(lake) != "Enabled":
        findings.append(_f("bucket", None, f"bucket {lake.bucket} does not have Object Lock enabled"))
    findings += [_f("bucket", None, why) for why in s3.lifecycle_problems(lake, years)]
    # From _holds/ only: verify reports a record the ledger knows and _holds/ lost on its own
    # (admin.hold_problems), and must not stop on a ledger file it cannot read.
    holds = active_holds(lake, with_ledger=False)
    lake_hold = any(h["scope"] == "lake" for h in holds)
    subject_held: set[str] = set()  # the ledger files of the subjects under a hold
    if not lake_hold and any(h["scope"] == "subject" for h in holds):
        from .admin import subject_files

        try:
            subject_held = subject_files(lake, {h["subject_id"] for h in holds if h["scope"] == "subject"})
        except (AuditlakeError, OSError):
            pass  # an unreadable ledger is reported by the row checks
    todo: list[tuple[str, s3.ObjectHistory, Obj | None]] = []
    for table in table_names(lake):
        hist = s3.histories(lake, f"tables/{table}/")
        objs = {o.rel: o for o in committed(lake, table, cache=False)}
        for o in objs.values():
            h = hist.get(s3.key(lake, o.rel))
            if h is not None and h.versions:
                todo.append((o.rel, h, o))
        for k, h in hist.items():
            rel = s3.rel_of(lake, k)
            if rel in objs or not h.versions or h.latest is None or not h.latest.delete_marker:
                continue
            if rel.endswith("/_last_checkpoint"):
                continue
            todo.append((rel, h, None))  # deleted: was it sealed?

    def one(item) -> list[dict]:
        rel, h, o = item
        table = _table_of(rel)
        info = s3.lock_info(lake, rel, h.original.version_id)
        out = []
        if o is None:
            if info.mode:
                out.append(_f(table, rel, "sealed object was deleted (a delete marker hides it)", _part(rel)))
            elif LOG_RE.match(posixpath.basename(rel)):
                out.append(_f(table, rel, "a log entry nobody sealed, hidden under a delete marker: writers take it "
                                          "for a hidden commit and stop (`auditlake repair` removes it)"))
            return out
        if not h.intact:
            what = []
            if len(h.versions) > 1:
                what.append(f"{len(h.versions)} versions")
            if h.markers:
                what.append(f"{len(h.markers)} delete marker(s)")
            out.append(_f(table, rel, f"ledger object has {' and '.join(what)}: overwritten or deleted after it was committed", o.partition))
        if info.mode != s3.COMPLIANCE or info.until is None:
            out.append(_f(table, rel, f"{UNLOCKED} (Object Lock mode {info.mode or 'none'}; "
                                         "the next ingest or `auditlake repair` locks it)", o.partition))
        else:
            need = required_until(h.original.last_modified.astimezone(timezone.utc).date(), o.dates, years)
            if info.until.date() < need:
                out.append(_f(table, rel, f"retained until {info.until.date()}, RET-WORM needs {need}", o.partition))
        if lake_hold and not info.legal_hold:
            out.append(_f(table, rel, "a legal hold is active on the lake but not on this object", o.partition))
        elif rel in subject_held and not info.legal_hold:
            out.append(_f(table, rel, "a legal hold is active on a subject whose events this object holds, but not "
                                      "on this object", o.partition))
        return out

    for fs in s3._parallel(one, todo):
        findings.extend(fs)
    return findings


# ----------------------------------------------------------------------------- entry points
_lock = threading.Lock()


def lock_new(lake: Lake, keys: KeyStore) -> int:
    """Put every object committed since the last call under retention (after sweeping away
    uncommitted leftovers that no writer can commit any more)."""
    with _lock:
        if lake.is_s3:
            require_worm_bucket(lake)  # before anything is written
        try:
            names = table_names(lake)
        except FileNotFoundError:
            names = []
        policy(lake, refresh=True)
        listings = {t: list_log(lake, t) for t in names}
        sweep(lake, names, listings=listings)
        if lake.is_s3:
            return lock_s3(lake, keys, listings)
        return seal_local(lake, keys, listings)


def refuse_hidden_tail(lake: Lake, log_id: str) -> None:
    """Stop a writer at a table whose next log entry was written before: on S3 a version
    under a delete marker, locally one a manifest sealed. That is a commit hidden, not one
    never made: sweeping its data files as leftovers would delete sealed files, and writing
    that version again would fork the table. On S3 also at a log entry written over or
    hidden (its current version is not the one committed): the table read through it is not
    the lake's, and sweeping by it would delete sealed files. Locally also at a manifest this
    host sealed or a clean verify saw that is gone or changed: the tail it sealed may have
    gone with it."""
    if not lake.is_s3:
        seen = seen_manifests(log_id)  # first: one a writer seals meanwhile is then in both, or only listed
        present = manifest_digests(lake)
        if lost := sorted(n for n, digest in seen.items() if present.get(n) != digest):
            raise AuditlakeError(f"{MANIFEST_DIR}/{lost[0]} was sealed here and is gone or changed ({len(lost)} retention "
                                 "manifest(s)): not writing on a lake that may have lost sealed commits; run "
                                 "`auditlake verify`, and restore the lake from a backup (after a deliberate restore, "
                                 f"remove {seen_manifests_path(log_id)}, this host's memory of the manifests)")
    sealed = sealed_rels(lake)
    for table in table_names(lake):
        version = list_log(lake, table).latest + 1
        rel = log_rel(table, version)
        if lake.is_s3:
            from . import s3

            log = s3.histories(lake, f"tables/{table}/_delta_log/")
            changed = sorted(s3.rel_of(lake, k) for k, h in log.items()
                             if LOG_RE.match(posixpath.basename(k)) and h.versions and not h.intact
                             and s3.rel_of(lake, k) != rel)
            if changed:
                raise AuditlakeError(f"{changed[0]} was changed after it was committed ({len(changed)} log entr"
                                     f"{'y' if len(changed) == 1 else 'ies'} of {table}): not writing on a table "
                                     "read through it; run `auditlake verify`, then `auditlake repair`")
            # A version there, unless another writer committed it since the listing (listed now).
            tail = log.get(s3.key(lake, rel))
            hidden = bool(tail and tail.versions) and list_log(lake, table).latest < version
        else:
            hidden = rel in sealed
        if hidden:
            raise AuditlakeError(f"{rel} was committed and is gone (deleted or hidden): not writing over it; "
                                 "run `auditlake repair` (S3 restores it; a local lake needs it from a backup)")


def check(lake: Lake, keys: KeyStore) -> list[dict]:
    """RET-WORM findings for the whole lake. An object found committed but not locked is
    looked at again a moment later: a writer at work locks its commit right after making it,
    and a verify running beside it must not call that tampering."""
    found = _check_once(lake, keys)
    if any(f["detail"].startswith(UNLOCKED) for f in found):
        time.sleep(UNLOCKED_GRACE_S)
        still = {f["file"] for f in _check_once(lake, keys) if f["detail"].startswith(UNLOCKED)}
        found = [f for f in found if not f["detail"].startswith(UNLOCKED) or f["file"] in still]
    return found


def _check_once(lake: Lake, keys: KeyStore) -> list[dict]:
    pol = policy(lake, refresh=True)
    years = pol["years"]
    findings = []
    if pol["configured_years"] < MIN_YEARS:
        findings.append(_f("lake", "auditlake.json", f"the retention policy is {pol['configured_years']} years; "
                           f"RET-WORM needs at least {MIN_YEARS} (writers lock for {MIN_YEARS})"))
    from .admin import hold_problems

    findings += hold_problems(lake)
    if lake.is_s3:
        return findings + _shortened(_s3_policy_years(lake), pol) + _check_s3(lake, years)
    local, sealed_years = _check_local(lake, keys, years)
    return findings + _shortened(sealed_years, pol) + local


def _shortened(recorded_years: int, pol: dict) -> list[dict]:
    """A policy edited down in auditlake.json: new objects would be kept for less than the
    lake promised (set_policy only ever lengthens it)."""
    # Below RET-WORM's minimum is a finding of its own, and so is a lost identity file. A
    # policy auditlake.json does not state (writers took AUDITLAKE_RETENTION_YEARS) was never
    # the lake's promise: a verify without that variable must not call it shortened.
    if recorded_years <= pol["years"] or not pol["stated"]:
        return []
    return [_f("lake", "auditlake.json", f"the retention policy is {pol['configured_years']} years, shortened from "
               f"{recorded_years} (a lake's retention can grow, never shrink)")]


def _s3_policy_years(lake: Lake) -> int:
    """The longest retention any version of auditlake.json ever set (the bucket keeps them all)."""
    from . import s3

    longest = 0
    for v in s3.history(lake, "auditlake.json").versions:
        try:
            conf = json.loads(s3.read_version(lake, "auditlake.json", v.version_id)).get("retention") or {}
            longest = max(longest, int(conf.get("years") or 0))
        except (ValueError, TypeError, AttributeError):
            continue  # an unreadable version sets no policy; the current one is checked as read
    return longest
