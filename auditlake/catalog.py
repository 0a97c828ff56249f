"""The DuckDB catalog over the lake (INTERFACES.md), the explorer's read-only connection,
its users file, and the `auditlake catalog` / `auditlake explore` commands.

Views (every one masks PII; sealed columns are never exposed):
  events       one row per ledger event: plain projection columns, `*_phone/_email/_name/
               actor_ip` shown as '***' when the event carried them ('[erased]' once the
               person was erased), `pii` = masked|none
  findings     the latest compliance evaluation only
  quarantine   rejected landing lines (the raw text is masked at ingest)
  checkpoints  one row per signed checkpoint
  ingest_log   one row per ingested landing file
and a table macro `events_between(from, to)` that adds the `event_date` partition filter
to an `occurred_at` range, so time-range queries read only the days they need.

Local lake: views call the signed delta extension (`delta_scan('<abs table path>')`), which
`auditlake catalog` installs from the `duckdb-extension-delta` package into DuckDB's
extension directory, so the plain `duckdb` CLI autoloads it. Reads are live: every query
sees the latest Delta version.

S3 lake: delta_scan needs DuckDB's httpfs extension for S3 secrets, which cannot be
downloaded here; unless it is installed, `auditlake catalog` writes the views over a local
Parquet snapshot (partitioned by event_date) of the masked projection, refreshed on every
run. The explorer itself reads S3 lakes live through deltalake's Arrow datasets.
"""
from __future__ import annotations

import argparse
import base64
import getpass
import glob
import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets
import shutil
import sqlite3
import stat
import sys
import tempfile
import threading
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from .errors import AuditlakeError
from .lake.store import Lake
from .ledger.seal import IP_OWNER_SQL
from .masking import PII_MEMBER_RE2

VIEWS = ("events", "findings", "findings_history", "quarantine", "checkpoints", "ingest_log")
CATALOG_FORMAT = 5  # 3: the events view reads erased_subjects; 4: an address is erased with its owner (ip_owner);
# 5: the quarantine view keeps ingest's cut note

# ----------------------------------------------------------------------------- extension

def delta_extension_path() -> str:
    """The signed delta extension shipped by the duckdb-extension-delta package."""
    import duckdb

    spec = importlib.util.find_spec("duckdb_extension_delta")
    if spec is None or not spec.submodule_search_locations:
        raise AuditlakeError("the duckdb-extension-delta package is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    version = duckdb.__version__.split("-")[0].lstrip("v")
    path = root / "extensions" / f"v{version}" / "delta.duckdb_extension"
    if not path.exists():
        found = sorted(root.glob("extensions/*/delta.duckdb_extension"))
        if not found:
            raise AuditlakeError(f"no delta extension file in {root}")
        path = found[-1]
    return str(path)


def install_delta_extension(con) -> None:
    """INSTALL the packaged delta extension into DuckDB's extension directory (once; the
    plain CLI then autoloads it for views that call delta_scan) and LOAD it here."""
    path = delta_extension_path()
    row = con.execute(
        "SELECT installed, install_path FROM duckdb_extensions() WHERE extension_name = 'delta'"
    ).fetchone()
    if not (row and row[0] and row[1] and os.path.exists(row[1]) and os.path.getsize(row[1]) == os.path.getsize(path)):
        con.execute(f"INSTALL '{_sql_str(path)}'")
    con.execute("LOAD delta")


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


def httpfs_available(con) -> bool:
    try:
        row = con.execute("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'httpfs'").fetchone()
        return bool(row and row[0])
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------- view SQL

def _events_select(ref: str, data: str = "data") -> str:
    def pii(field: str, col: str, owner: str) -> str:
        # The sealed value of an erased person is noise: say so, as exports and DSAR do.
        return (f"CASE WHEN contains(coalesce(pii_fields, ''), '{field}') THEN CASE WHEN {owner} IN "
                f"(SELECT subject_id FROM {ERASED_TABLE}) THEN '[erased]' ELSE '***' END END AS {col}")

    return f"""SELECT seq, event_id, event_type, occurred_at, event_date, ingested_at, source, tenant_id,
  actor_type, actor_id, actor_role,
  {pii('actor.ip', 'actor_ip', f'({IP_OWNER_SQL})')},
  subject_id, subject_country, subject_region, subject_timezone,
  {pii('subject.phone', 'subject_phone', 'subject_id')}, {pii('subject.email', 'subject_email', 'subject_id')},
  {pii('subject.name', 'subject_name', 'subject_id')},
  CASE WHEN coalesce(pii_fields, '') = '' THEN 'none' ELSE 'masked' END AS pii,
  pii_fields, phone_bidx, lawful_basis, {data} AS data, hash, key_id, batch_id, source_file, source_sha256, source_line
FROM {ref}"""


def latest_findings_sql(table_ref: str) -> str:
    """DuckDB SELECT of the latest evaluation's findings from the findings table
    `table_ref` (a table name, a view or e.g. `delta_scan('<uri>')`). The latest
    evaluation is the greatest (evaluated_at, evaluation_id) not dated in the future; its
    marker row (rule_id null) is dropped. Columns: rule_id, event_id, tenant_id, occurred_at, severity,
    detail, evaluation_id, as_of, evaluated_at, code_version, tree_size."""
    return (
        "SELECT f.rule_id, f.event_id, f.tenant_id, f.occurred_at, f.severity, f.detail,\n"
        "       f.evaluation_id, f.as_of, f.evaluated_at, f.code_version, f.tree_size\n"
        f"FROM {table_ref} AS f\n"
        "WHERE f.rule_id IS NOT NULL\n"
        "  AND f.evaluation_id = (\n"
        f"    SELECT e.evaluation_id FROM {table_ref} AS e\n"
        "    WHERE e.evaluated_at IS NULL OR e.evaluated_at <= now()\n"
        "    ORDER BY e.evaluated_at DESC NULLS LAST, e.evaluation_id DESC LIMIT 1)"
    )


def _findings_select(ref: str) -> str:
    return (f"SELECT rule_id, event_id, tenant_id, occurred_at, severity, detail, evaluation_id, as_of, "
            f"evaluated_at, tree_size FROM ({latest_findings_sql(ref)}) AS latest")


_PEOPLES_DATA = f"""regexp_replace(data, '{PII_MEMBER_RE2}', '\\1"***"', 'g')"""
# Ingest masks `raw`; PII-named JSON members are masked here as well (rows of older lakes).
# A value cut off by ingest's size limit ends at its "... [cut; ..." note, which is kept.
_RAW_PII = r'"(name|email|phone|ip)"(\s*):(\s*)"(\\.|[^"\\])*?("|\.\.\. \[cut; |$)'


def _findings_history_select(ref: str) -> str:
    return (f"SELECT rule_id, event_id, tenant_id, occurred_at, severity, detail, evaluation_id, as_of, evaluated_at, "
            f"tree_size FROM {ref} WHERE rule_id IS NOT NULL")


def _quarantine_select(ref: str) -> str:
    raw = f"regexp_replace(raw, '{_RAW_PII}', '\"\\1\":\"***\\5', 'g')"
    return (f"SELECT source_file, line, reason, {raw} AS raw, event_id, quarantined_at, batch_id, source_sha256 "
            f"FROM {ref}")


def _checkpoints_select(ref: str) -> str:
    return (f"SELECT log_id, tree_size, root, chain_head, CAST(time AS TIMESTAMPTZ) AS time, time AS time_text, "
            f"prev_checkpoint_hash, key_id, signature, checkpoint_hash, batch_id FROM {ref}")


def _ingest_log_select(ref: str) -> str:
    return (f"SELECT source_file, source_sha256, format, lines_read, accepted, quarantined, first_seq, last_seq, "
            f"completed_at, batch_id FROM {ref}")


SELECTS = {
    "events": _events_select,
    "findings": _findings_select,
    "findings_history": _findings_history_select,
    "quarantine": _quarantine_select,
    "checkpoints": _checkpoints_select,
    "ingest_log": _ingest_log_select,
}
TABLE_OF_VIEW = {"events": "ledger", "findings": "findings", "findings_history": "findings", "quarantine": "quarantine",
                 "checkpoints": "checkpoints", "ingest_log": "ingest_log"}

_DUCK_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
               "list<item: string>": "VARCHAR[]"}


def _empty_ref(table: str) -> str:
    """A typed empty relation with the table's columns (a view over a table not created yet)."""
    from .lake.tables import SCHEMAS

    cols = ", ".join(
        f"CAST(NULL AS {_DUCK_TYPES.get(str(f.type), 'VARCHAR')}) AS {f.name}" for f in SCHEMAS[table]
    )
    return f"(SELECT {cols} WHERE false)"


ERASED_TABLE = "erased_subjects"


def erased_ids(lake: Lake) -> list[str] | None:
    """The erased people's subject ids (sorted) from the lake's keystore, or None if the
    keystore cannot be opened here (their PII then shows as '***', still masked)."""
    try:
        from .privacy import erased_subjects

        return sorted(erased_subjects(lake))
    except (ImportError, AuditlakeError, OSError, sqlite3.Error):
        return None


def store_erased(con, ids: list[str]) -> None:
    """(Re)write the erased_subjects table the events view reads."""
    import pyarrow as pa

    con.register("erased_source", pa.table({"subject_id": pa.array(ids, pa.string())}))
    try:
        con.execute(f"CREATE OR REPLACE TABLE {ERASED_TABLE} AS SELECT subject_id FROM erased_source")
    finally:
        con.unregister("erased_source")


def refresh_erased(lake: Lake) -> str | None:
    """Rewrite the erased people in the lake's default catalog file, if there is one, so
    analysts see '[erased]' at once; None when done (or no catalog), else why not (then
    `auditlake catalog` does it). A copy is changed and moved over the file, as a build
    is, so a reader holding it open (the duckdb CLI, the explorer) never blocks it; not
    while a writer has it open (what it writes would be lost)."""
    import duckdb

    db = default_db_path(lake)
    ids = erased_ids(lake)
    if not db.exists() or ids is None:
        return None
    tmp = db.with_name(f".{db.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        duckdb.connect(str(db), read_only=True).close()  # refused while a writer holds it
        shutil.copyfile(db, tmp)
        con = duckdb.connect(str(tmp))
        try:
            store_erased(con, ids)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, db)
    except (duckdb.Error, OSError) as exc:
        tmp.unlink(missing_ok=True)
        return f"the catalog {db} could not be updated ({str(exc).splitlines()[0][:120]}): run `auditlake catalog`"
    return None


def refresh_views(lake: Lake) -> str | None:
    """Rebuild the lake's default catalog file, if there is one, when a view in it stands for
    a table that did not exist when it was built (a typed empty placeholder) and does now:
    else analysts would read nothing through it for good. Writers that create tables
    (ingest, compliance) call this. None when there is nothing to do or it is done, else
    why not (and `auditlake catalog` does it)."""
    import duckdb

    db = default_db_path(lake)
    if lake.is_s3 or not db.exists():
        return None
    try:
        con = duckdb.connect(str(db), read_only=True)
        try:
            versions = json.loads(con.execute("SELECT value FROM auditlake_catalog WHERE key = 'versions'").fetchone()[0])
        finally:
            con.close()
    except (duckdb.Error, TypeError, ValueError):
        return None  # not a catalog auditlake wrote: verify says so
    if not any(v is None and _local_table_path(lake, t) for t, v in versions.items()):
        return None
    try:
        build_catalog(lake)  # a new file moved over the old one: readers never block it
    except (duckdb.Error, OSError, AuditlakeError) as exc:
        return f"the catalog {db} could not be rebuilt ({str(exc).splitlines()[0][:120]}): run `auditlake catalog`"
    return None


def view_statements(refs: dict[str, str | None], people: bool = False) -> list[str]:
    """CREATE VIEW statements; `refs` maps a lake table name to a SQL table reference
    (None: the table does not exist yet, the view is empty). For the explorer's `people`,
    the members of producers' `data` named for a person's data (customer_name,
    caller_email) are masked as well, so `data->>'customer_name'` is; analysts' catalog
    keeps `data` as sealed."""
    out = []
    for view in VIEWS:
        table = TABLE_OF_VIEW[view]
        ref = refs.get(table) or _empty_ref(table)
        select = _events_select(ref, _PEOPLES_DATA) if view == "events" and people else SELECTS[view](ref)
        out.append(f"CREATE OR REPLACE VIEW {view} AS {select}")
    out.append(
        "CREATE OR REPLACE MACRO events_between(t_from, t_to) AS TABLE "
        "SELECT * FROM events WHERE event_date >= strftime(CAST(t_from AS TIMESTAMPTZ) AT TIME ZONE 'UTC', '%Y-%m-%d') "
        "AND event_date <= strftime(CAST(t_to AS TIMESTAMPTZ) AT TIME ZONE 'UTC', '%Y-%m-%d') "
        "AND occurred_at >= CAST(t_from AS TIMESTAMPTZ) AND occurred_at < CAST(t_to AS TIMESTAMPTZ)"
    )
    return out


def _local_table_path(lake: Lake, table: str) -> str | None:
    path = Path(lake.table_uri(table))
    return str(path) if (path / "_delta_log").is_dir() else None


# ----------------------------------------------------------------------------- catalog file

def default_db_path(lake: Lake) -> Path:
    if not lake.is_s3:
        return Path(lake.uri) / "catalog.duckdb"
    from .keys import auditlake_home

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{lake.bucket}_{lake.prefix}").strip("_") or "lake"
    return auditlake_home() / "catalogs" / f"{name}.duckdb"


def _write_meta(con, lake: Lake, log_id: str, mode: str, versions: dict) -> None:
    con.execute("CREATE OR REPLACE TABLE auditlake_catalog (key VARCHAR, value VARCHAR)")
    meta = {"lake": lake.uri, "log_id": log_id, "mode": mode, "format": str(CATALOG_FORMAT),
            "built_at": datetime.now(timezone.utc).isoformat(), "versions": json.dumps(versions)}
    con.executemany("INSERT INTO auditlake_catalog VALUES (?, ?)", list(meta.items()))


def build_catalog(lake: Lake, db_path: str | os.PathLike | None = None) -> dict:
    """Write the DuckDB catalog file. The new file is built beside the old one and moved
    over it, so readers holding the old file open (the explorer, a CLI) are never blocked
    and never block this."""
    import duckdb

    from .lake.meta import read_meta

    log_id = str(read_meta(lake).get("log_id"))  # a lake, whole: not a mistyped path, nor tables that lost their identity
    db = Path(db_path).expanduser().resolve() if db_path else default_db_path(lake)
    if db != default_db_path(lake):
        lake.refuse_output_inside(db, "the catalog file")
    if why := _not_replaceable(db, db == default_db_path(lake), lake.uri, log_id):
        raise AuditlakeError(f"{db} {why}: give the catalog another path")
    db.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(db)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    versions = {}
    for table in set(TABLE_OF_VIEW.values()):
        dt = lake.delta(table)
        versions[table] = None if dt is None else dt.version()
    con = duckdb.connect(str(tmp))
    try:
        install_delta_extension(con)
        if not lake.is_s3:
            refs = {t: (f"delta_scan('{_sql_str(p)}')" if (p := _local_table_path(lake, t)) else None)
                    for t in TABLE_OF_VIEW.values()}
            mode = "live"
        else:
            refs = _s3_snapshot(lake, con, db)
            mode = "snapshot"
        store_erased(con, erased_ids(lake) or [])  # as of this build; the explorer keeps it current
        for stmt in view_statements(refs):
            con.execute(stmt)
        _write_meta(con, lake, log_id, mode, versions)
        counts = {v: con.execute(f"SELECT count(*) FROM {v}").fetchone()[0] for v in VIEWS}
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, db)
    if lake.is_s3:
        _prune_snapshots(db)
    return {"db": str(db), "lake": lake.uri, "mode": mode, "views": list(VIEWS), "counts": counts,
            "versions": versions, "delta_extension": delta_extension_path()}


def _not_replaceable(db: Path, own: bool, lake_uri: str, log_id: str) -> str | None:
    """Why the file at `db` is not a catalog this may write over (None if it is one of this
    lake, by its log id, wherever the lake was moved; or there is none): a folder, another
    lake's catalog (its analysts would read this lake), or anything else a user keeps
    there. The lake's own catalog file (`own`) is rebuilt whoever holds it open."""
    import duckdb

    if db.is_dir():
        return "is a folder"
    if own or not db.exists():
        return None
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:
        with open(db, "rb") as f:
            duck = f.read(12)[8:] == b"DUCK"  # DuckDB's file header
        return "is a DuckDB database open for writing elsewhere" if duck else "exists and is no auditlake catalog"
    try:
        meta = dict(con.execute("SELECT key, value FROM auditlake_catalog WHERE key IN ('lake', 'log_id')").fetchall())
    except duckdb.Error:
        return "exists and is a DuckDB database that is no auditlake catalog"
    finally:
        con.close()
    if meta.get("log_id", log_id) != log_id or ("log_id" not in meta and meta.get("lake", lake_uri) != lake_uri):
        return f"is the catalog of another lake ({meta.get('lake')})"
    return None


def _remove_dead_builds(db: Path) -> None:
    """The half-built files (and their WAL) of builds whose process is gone (killed)."""
    for stale in db.parent.glob(f".{glob.escape(db.name)}.*.tmp*"):
        pid = stale.name[len(db.name) + 2:].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except PermissionError:
            pass  # another user's live process


# Named with their schema (and a macro with its parameters): the same name in another schema,
# or an overload, is another object, never one that a name alone would let stand in.
_VIEWS_SQL = "SELECT schema_name || '.' || view_name, sql FROM duckdb_views() WHERE NOT internal"
_MACROS_SQL = ("SELECT schema_name || '.' || function_name || '(' || array_to_string(parameters, ', ') || ')', "
               "macro_definition FROM duckdb_functions() WHERE NOT internal AND function_type IN ('macro', 'table_macro')")


def _objects(con) -> dict[str, str]:
    """{qualified name: definition} of the views and macros; a name listed twice maps to None."""
    rows = [*con.execute(_VIEWS_SQL).fetchall(), *con.execute(_MACROS_SQL).fetchall()]
    seen = Counter(k for k, _ in rows)
    return {k: (v if seen[k] == 1 else None) for k, v in rows}


def _plain(key: str) -> str:
    """A qualified name's object name (main.events -> events, main.events_between(a, b) -> events_between)."""
    return key.split(".", 1)[-1].split("(", 1)[0]


def catalog_problems(lake: Lake) -> list[str]:
    """Where a local lake's catalog file (what analysts open) defines a view
    or macro otherwise than `auditlake catalog` writes it: a view redefined could hide events
    or findings from everyone who reads through it. Compared as DuckDB itself normalizes
    them: a table's view over the table, empty only while there is no such table (one built
    before the table existed reads nothing once it does). S3 catalogs live outside the lake,
    in the user's home."""
    import duckdb

    db = default_db_path(lake)
    if lake.is_s3 or not db.exists():
        return []
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        return [f"the catalog cannot be opened: {str(exc).splitlines()[0][:160]}"]
    try:
        found = _objects(con)
        try:
            listed = Counter(r[0] for r in con.execute(f"SELECT subject_id FROM {ERASED_TABLE}").fetchall())
        except duckdb.Error:
            listed = None
    finally:
        con.close()
    # The people the events view labels as erased must be ones the keystore has erased (when
    # it opens here): a row added would label someone's data erased. (One missing reads '***',
    # still masked: an erasure updates the keystore first and the catalog last, and a verify
    # in between must not call that tampering.)
    erased = erased_ids(lake)
    stale = [] if erased is None or (listed is not None and not listed - Counter(erased)) else [
        f"{ERASED_TABLE} lists people the keystore has not erased (rebuild it with `auditlake catalog`)"]
    present = {t: f"delta_scan('{_sql_str(p)}')" for t in TABLE_OF_VIEW.values() if (p := _local_table_path(lake, t))}
    try:
        expected, placeholder = _definitions(present), None
    except duckdb.Error:
        # A view binds its table's Delta log: one DuckDB cannot read is reported by the
        # history checks; the views are compared once it reads again.
        return stale
    if found.keys() == expected.keys() and all(found[k] == expected[k] for k in found):
        return stale  # the usual case
    problems = []
    for key in sorted(set(found) | set(expected)):
        name = _plain(key)
        if key not in found:
            problems.append(f"{name} is missing from the catalog")
        elif key not in expected:
            problems.append(f"{name if key.startswith('main.') else key} is in the catalog, but auditlake writes "
                            "no such view or macro")
        elif found[key] is None:
            problems.append(f"{key} is defined more than once in the catalog")
        elif found[key] != expected[key]:
            placeholder = placeholder or _definitions({})
            problems.append(f"the view {name} was built before its table existed and reads nothing" if
                            name in TABLE_OF_VIEW and found[key] == placeholder.get(key)
                            else f"the view {name} reads another folder than this lake (a lake moved since, or a "
                                 "view pointed elsewhere)" if name in TABLE_OF_VIEW and "delta_scan(" in found[key]
                            and _sql_str(lake.uri) not in found[key]
                            else f"{name} is not defined as auditlake writes it")
    return [f"{p} (rebuild it with `auditlake catalog`)" for p in problems] + stale


def _definitions(refs: dict[str, str | None]) -> dict[str, str]:
    """{name: SQL} of the views and macros `auditlake catalog` writes over these refs, as
    DuckDB prints them from a file (written and read back: it prints a definition it loaded
    otherwise than one it has just parsed, type names quoted or not)."""
    import duckdb

    with tempfile.TemporaryDirectory(prefix="auditlake-catalog-") as scratch:
        path = f"{scratch}/reference.duckdb"
        ref = duckdb.connect(path)
        try:
            install_delta_extension(ref)
            store_erased(ref, [])
            for stmt in view_statements(refs):
                ref.execute(stmt)
        finally:
            ref.close()
        ref = duckdb.connect(path, read_only=True)
        try:
            return _objects(ref)
        finally:
            ref.close()


def _snapshot_root(db: Path) -> Path:
    return db.with_name(db.name + ".snapshot")


def _s3_snapshot(lake: Lake, con, db: Path) -> dict[str, str | None]:
    """Copy the masked projection of every table into local Parquet (events partitioned by
    event_date) under a new generation folder and return refs over it."""
    gen = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    root = _snapshot_root(db) / gen
    root.mkdir(parents=True)
    refs: dict[str, str | None] = {}
    for table in set(TABLE_OF_VIEW.values()):
        dt = lake.delta(table)
        if dt is None:
            refs[table] = None
            continue
        name = f"src_{table}"
        con.register(name, dt.to_pyarrow_dataset())
        out = root / table
        if table == "ledger":
            # Only the columns the events view reads: the sealed ones never leave S3.
            from .lake.tables import LEDGER

            keep = [c for c in LEDGER.names if c not in ("actor_ip_sealed", "subject_pii_sealed", "leaf")]
            con.execute(f"COPY (SELECT {', '.join(keep)} FROM {name}) TO '{_sql_str(str(out))}' "
                        "(FORMAT parquet, PARTITION_BY (event_date))")
            refs[table] = f"read_parquet('{_sql_str(str(out))}/*/*.parquet', hive_partitioning = true, hive_types_autocast = false)"
        else:
            out.mkdir()
            cols = "* EXCLUDE (frontier)" if table == "checkpoints" else "*"
            con.execute(f"COPY (SELECT {cols} FROM {name}) TO '{_sql_str(str(out / 'data.parquet'))}' (FORMAT parquet)")
            refs[table] = f"read_parquet('{_sql_str(str(out / 'data.parquet'))}')"
        con.unregister(name)
    return refs


def _prune_snapshots(db: Path, keep: int = 2) -> None:
    root = _snapshot_root(db)
    gens = sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
    for old in gens[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- explorer connection

ANALYST_BYTES = 64 << 20  # a console result's size, besides its 10,000 rows
ANALYST_BATCH = 256  # rows fetched at a time: the size cap is checked between fetches


class Explorer:
    """The explorer's read-only view of the lake: an in-memory DuckDB database with the
    catalog's views, defined here (never read from the catalog file, which anyone who can
    write the lake folder could redefine), with file access limited to the lake's tables.
    Use `query()`; it runs on a fresh cursor (thread-safe)."""

    def __init__(self, lake: Lake):
        import duckdb

        self.lake = lake
        self._lock = threading.RLock()
        self._spill: tempfile.TemporaryDirectory | None = None  # removed on close() or when collected
        self._s3_versions: dict[str, int | None] = {}
        self.con = duckdb.connect(":memory:")
        self.source = "in-memory views over the lake (read-only)"
        self._missing: set[str] = set()
        self._setup()
        self._erased_at: int | None = None  # the ledger version the erased set was read at
        self._erased: list[str] = []
        self._refresh_views()
        self._check_erased(table_version(lake, "ledger"))

    def _setup(self) -> None:
        """UTC, the delta extension, and no file access beyond the lake's tables."""
        self.con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: the queries' cursors too
        if not self.lake.is_s3:
            loaded = self.con.execute(
                "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'delta'").fetchone()
            if not (loaded and loaded[0]):
                self.con.execute(f"LOAD '{_sql_str(delta_extension_path())}'")
        self._restrict()

    def _restrict(self) -> None:
        # A console query is bounded in memory too (beside its time limit), and spills to a
        # private folder, never beside the catalog in the lake.
        self.con.execute(f"SET memory_limit = '{EXPLORER_MEMORY}'")
        self._spill = tempfile.TemporaryDirectory(prefix="auditlake-explorer-")
        self.con.execute(f"SET temp_directory = '{_sql_str(self._spill.name)}'")
        if self.lake.is_s3:
            self.con.execute("SET enable_external_access = false")
        else:
            tables = str(Path(self.lake.uri) / "tables") + "/"
            self.con.execute(f"SET allowed_directories = ['{_sql_str(tables)}']")
            self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _refresh_views(self) -> None:
        """(Re)create the in-memory views; for S3, re-register the Arrow datasets of the
        tables' latest versions."""
        refs: dict[str, str | None] = {}
        store_erased(self.con, self._erased)
        for table in set(TABLE_OF_VIEW.values()):
            if self.lake.is_s3:
                dt = self.lake.delta(table)
                v = None if dt is None else dt.version()
                if dt is not None:
                    from .lake.tables import LEDGER

                    ds = dt.to_pyarrow_dataset()
                    if table == "ledger":
                        keep = [c for c in LEDGER.names if c not in ("actor_ip_sealed", "subject_pii_sealed", "leaf")]
                        self.con.register(f"src_{table}", ds)
                        refs[table] = f"(SELECT {', '.join(keep)} FROM src_{table})"
                    else:
                        self.con.register(f"src_{table}", ds)
                        refs[table] = f"src_{table}"
                self._s3_versions[table] = v
            else:
                p = _local_table_path(self.lake, table)
                refs[table] = f"delta_scan('{_sql_str(p)}')" if p else None
        for stmt in view_statements(refs, people=True):
            self.con.execute(stmt)
        self._missing = {t for t, r in refs.items() if r is None}

    def versions(self) -> dict[str, int | None]:
        """Delta versions of the tables (the cache key of every query)."""
        out = {}
        for table in set(TABLE_OF_VIEW.values()):
            out[table] = table_version(self.lake, table)
        with self._lock:
            appeared = any(out[t] is not None for t in self._missing)
            moved = self.lake.is_s3 and any(out[t] != self._s3_versions.get(t) for t in out)
            if appeared or moved:
                self._refresh_views()
            self._check_erased(out["ledger"])
        return out

    def _check_erased(self, ledger_version: int | None) -> None:
        """Bring the erased set up to date when the ledger moved (an erasure is logged in
        it after the key is destroyed)."""
        if ledger_version == self._erased_at and self._erased_at is not None:
            return
        self._erased_at = ledger_version
        ids = erased_ids(self.lake)
        if ids is None or ids == self._erased:
            return
        self._erased = ids
        store_erased(self.con, ids)

    def close(self) -> None:
        """Close the connection and remove its spill folder."""
        self.con.close()
        if self._spill is not None:
            self._spill.cleanup()

    def _cursor(self):
        """A cursor of its own (thread-safe) for a local lake; for S3 the Arrow datasets
        are registered on the main connection only, so queries share it under a lock."""
        if self.lake.is_s3:
            self._lock.acquire()
            return _Shared(self.con, self._lock)
        return self.con.cursor()

    def query(self, sql: str, params: Iterable | None = None, timeout_s: float | None = None):
        """Run one parameterised query; returns a pyarrow Table."""
        cur = self._cursor()
        timer = None
        if timeout_s:
            timer = threading.Timer(timeout_s, cur.interrupt)
            timer.start()
        try:
            return cur.execute(sql, list(params or [])).to_arrow_table()
        finally:
            if timer:
                timer.cancel()
            cur.close()

    def analyst_query(self, sql: str, limit: int = 10_000, timeout_s: float = 30.0, max_bytes: int = ANALYST_BYTES):
        """The SQL console: one SELECT over the catalog views only (no table functions, no
        other tables), on a connection that cannot write or read other files. The result
        stops at `limit` rows or `max_bytes` (one query must not fill the server's memory; a
        single row larger than that is refused), and PII-shaped text in it is masked (see
        masking.mask_table). Returns (table, capped). The explorer runs it in a worker
        process of bounded memory (auditlake.console)."""
        import pyarrow as pa

        from .masking import mask_table

        check_analyst_sql(self.con, sql)
        cur = self._cursor()
        timer = threading.Timer(timeout_s, cur.interrupt)
        timer.start()
        try:
            cur.execute(sql)
            reader = cur.to_arrow_reader(batch_size=ANALYST_BATCH)
            batches, rows, size, capped = [], 0, 0, False
            for b in reader:
                if size + b.nbytes > max_bytes:  # the rows that fit (a value may be huge)
                    fit = _rows_within(b, max_bytes - size)
                    if not rows and not fit:
                        raise AnalystSQLError(f"a row of the result is larger than the console's {max_bytes >> 20} MB")
                    b, capped = b.slice(0, fit), True
                batches.append(b)
                rows, size = rows + b.num_rows, size + b.nbytes
                if capped or rows >= limit:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema) if batches else reader.schema.empty_table()
            table = mask_table(table.slice(0, limit))
            if table.nbytes > max_bytes:  # masking writes nested values as JSON text: it can grow
                fit = _rows_within(table, max_bytes)
                if not fit:
                    raise AnalystSQLError(f"a row of the result is larger than the console's {max_bytes >> 20} MB")
                table, capped = table.slice(0, fit), True
            return table, capped or rows >= limit
        finally:
            timer.cancel()
            cur.close()


def _rows_within(table, max_bytes: int) -> int:
    """How many of the first rows of a table or record batch take at most max_bytes."""
    lo, hi = 0, table.num_rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if table.slice(0, mid).nbytes <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _Shared:
    """The main connection used as a cursor while holding the explorer's lock."""

    def __init__(self, con, lock):
        self._con, self._lock = con, lock

    def __getattr__(self, name):
        return getattr(self._con, name)

    def close(self):
        self._lock.release()


def table_version(lake: Lake, table: str) -> int | None:
    """The latest Delta version of a table, cheaply: the newest log file name locally."""
    if not lake.is_s3:
        log = Path(lake.table_uri(table)) / "_delta_log"
        try:
            names = [n for n in os.listdir(log) if n.endswith(".json") and n[:20].isdigit()]
        except FileNotFoundError:
            return None
        return max(int(n[:20]) for n in names) if names else None
    dt = lake.delta(table)
    return None if dt is None else dt.version()


ALLOWED_RELATIONS = set(VIEWS)
EXPLORER_MEMORY = "2GB"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


class AnalystSQLError(AuditlakeError):
    pass


def check_analyst_sql(con, sql: str) -> None:
    """Refuse anything but SELECT statements over the catalog views (and their CTEs)."""
    if len(sql) > 20_000:
        raise AnalystSQLError("query too long")
    cur = con.cursor()
    try:
        tree = json.loads(cur.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        cur.close()
    if tree.get("error"):
        raise AnalystSQLError("only SELECT queries are allowed: " + str(tree.get("error_message", ""))[:200])
    stmts = tree.get("statements") or []
    if len(stmts) != 1:
        raise AnalystSQLError("exactly one SELECT statement, please")
    ctes: set[str] = set()
    tables: list[str] = []
    funcs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            cte = node.get("cte_map")
            if isinstance(cte, dict):
                for item in cte.get("map", []):
                    ctes.add(str(item.get("key", "")).lower())
            t = node.get("type")
            if t == "BASE_TABLE":
                name = str(node.get("table_name", "")).lower()
                if node.get("catalog_name") or node.get("schema_name") not in ("", None):
                    # Qualified names skip CTEs: main.erased_subjects is the table whatever a CTE is called.
                    plain_view = not node.get("catalog_name") and node.get("schema_name") == "main" and name in ALLOWED_RELATIONS
                    tables.append(name if plain_view else f"{node.get('catalog_name') or ''}.{node.get('schema_name') or ''}.{name}")
                else:
                    tables.append(name)
            elif t == "TABLE_FUNCTION":
                funcs.append(str((node.get("function") or {}).get("function_name", "?")))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(stmts)
    if funcs:
        raise AnalystSQLError(f"table functions are not allowed here: {', '.join(sorted(set(funcs)))}")
    # A CTE is visible only in its own query, so its name must be harmless anywhere else: a
    # plain identifier (a quoted "x/*.parquet" outside it would read files) that names no
    # relation of the database but the views (outside it, that relation would be read).
    cur = con.cursor()
    try:
        existing = {r[0].lower() for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()}
    finally:
        cur.close()
    unsafe = sorted(c for c in ctes if not _IDENTIFIER.fullmatch(c) or (c in existing and c not in ALLOWED_RELATIONS))
    if unsafe:
        raise AnalystSQLError(f"a WITH name must be a new plain identifier: {', '.join(unsafe)}")
    bad = [t for t in tables if t not in ALLOWED_RELATIONS and t not in ctes]
    if bad:
        raise AnalystSQLError(f"unknown relation(s): {', '.join(sorted(set(bad)))}; use {', '.join(VIEWS)}")


# ----------------------------------------------------------------------------- users

ROLES = ("auditor", "privacy_officer", "admin")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}\Z")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def users_path(explicit: str | None = None) -> Path:
    """--users FILE, else $AUDITLAKE_EXPLORER_USERS, else <AUDITLAKE_HOME>/explorer_users.toml."""
    from .keys import auditlake_home

    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("AUDITLAKE_EXPLORER_USERS")
    return Path(env).expanduser() if env else auditlake_home() / "explorer_users.toml"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH = None


def load_users(path: str | os.PathLike | None = None) -> dict:
    """{"users": {name: {"role", "password"}}, "oidc": {email: role, "default_role": role?}}"""
    p = Path(path) if path else users_path()
    if not p.exists():
        return {"users": {}, "oidc": {}}
    try:
        info = p.stat()
        # Whoever can write the file can make themselves admin or privacy officer.
        if info.st_mode & 0o022 or info.st_uid not in (os.getuid(), 0):
            raise AuditlakeError(f"the users file {p} can be changed by another account "
                                 f"(mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}); chmod 600 it")
        doc = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise AuditlakeError(f"cannot read the users file {p}: {exc}") from exc
    users = {}
    for name, u in (doc.get("users") or {}).items():
        if isinstance(u, dict) and u.get("role") in ROLES and isinstance(u.get("password"), str):
            users[name] = {"role": u["role"], "password": u["password"]}
    oidc = {k: v for k, v in (doc.get("oidc") or {}).items() if isinstance(v, str) and v in ROLES}
    return {"users": users, "oidc": oidc}


def authenticate(users: dict, name: str, password: str) -> str | None:
    """The user's role if the password matches, else None (constant work either way)."""
    global _DUMMY_HASH
    u = users.get("users", {}).get(name)
    if u is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password(secrets.token_hex(8))
        verify_password(password, _DUMMY_HASH)
        return None
    return u["role"] if verify_password(password, u["password"]) else None


def oidc_role(users: dict, email: str | None) -> str | None:
    if not email:
        return None
    oidc = users.get("oidc", {})
    return oidc.get(email) or oidc.get(email.lower()) or oidc.get("default_role")


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def add_user(name: str, role: str, password: str, path: str | os.PathLike | None = None) -> Path:
    """Add or replace a user in the users file (mode 0600)."""
    if not _NAME_RE.match(name):
        raise AuditlakeError("user names are 1-64 characters of letters, digits and _.@+-")
    if role not in ROLES:
        raise AuditlakeError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise AuditlakeError("passwords are at least 8 characters")
    p = Path(path) if path else users_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = tomllib.loads(p.read_text()) if p.exists() else {}
    users = doc.get("users") or {}
    users[name] = {"role": role, "password": hash_password(password)}
    lines = ["# auditlake explorer users: scrypt password hashes (python -m auditlake.catalog add-user NAME ROLE)", ""]
    for n in sorted(users):
        u = users[n]
        lines += [f"[users.{_toml_str(n)}]", f"role = {_toml_str(u['role'])}", f"password = {_toml_str(u['password'])}", ""]
    oidc = doc.get("oidc") or {}
    if oidc:
        lines.append("[oidc]")
        lines += [f"{_toml_str(k)} = {_toml_str(v)}" for k, v in sorted(oidc.items())]
        lines.append("")
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, p)
    return p


# ----------------------------------------------------------------------------- file names

def safe_filename(name: str, default: str = "download", max_len: int = 100) -> str:
    """A download name made only of [A-Za-z0-9._-], never starting with a dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+|\.{2,}", "_", name or "")
    cleaned = re.sub(r"_{2,}", "_", cleaned).strip("._-")[:max_len]
    return cleaned or default


# ----------------------------------------------------------------------------- commands

def cli_catalog(args) -> int:
    from .cli import emit

    lake = Lake.open(args.lake)
    if lake.delta("ledger") is None and not lake.is_s3 and not Path(lake.uri).exists():
        raise AuditlakeError(f"no lake at {lake.uri}")
    doc = build_catalog(lake, getattr(args, "db", None))
    counts = ", ".join(f"{k} {v}" for k, v in doc["counts"].items())
    how = "live views over the Delta tables" if doc["mode"] == "live" else "views over a local snapshot of the S3 lake"
    emit(args, f"wrote {doc['db']} ({how}): {counts}\nopen it with: duckdb -readonly {doc['db']}", doc)
    return 0


def app_path() -> Path:
    spec = importlib.util.find_spec("dashboards")
    if spec is not None and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / "app.py"
        if p.exists():
            return p
    p = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
    if not p.exists():
        raise AuditlakeError("the explorer app (dashboards/app.py) is not installed")
    return p


def explore_command(lake_uri: str, port: int = 8501, address: str = "127.0.0.1", headless: bool = True) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true" if headless else "false",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--server.fileWatcherType", "none", "--client.showErrorDetails", "none"]  # no tracebacks in the browser


def _die_with_parent() -> None:
    """In the explorer's process, before exec: Linux sends it SIGTERM when `auditlake
    explore` dies, even by SIGKILL, so no server is left serving the lake unseen."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cli_explore(args) -> int:
    import signal
    import subprocess

    from .lake.meta import read_meta

    lake = Lake.open(args.lake)
    read_meta(lake)  # a lake, not a mistyped path the explorer would show as empty
    port, address = args.port, args.address or "127.0.0.1"
    _check_listen(address, port)
    env = dict(os.environ, AUDITLAKE_LAKE=lake.uri)
    users = getattr(args, "users", None)
    if users:
        env["AUDITLAKE_EXPLORER_USERS"] = str(Path(users).expanduser().resolve())
    upath = users_path(users)
    if not load_users(upath)["users"]:
        print(f"auditlake: no explorer users in {upath}; add one with "
              f"`python -m auditlake.catalog add-user NAME admin` (or configure OIDC)", file=sys.stderr)
    cmd = explore_command(lake.uri, port, address, headless=bool(getattr(args, "headless", True)))
    print(f"explorer for {lake.uri}: http://{address}:{port}", file=sys.stderr)
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    stopped = []

    def stop(signum, _frame):  # `kill` of this command stops the server too
        stopped.append(signum)
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the server too (same process group)
        proc.wait()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code and not stopped:
        raise AuditlakeError(f"the explorer (streamlit) stopped with exit code {code}")
    return 0


def _check_listen(address: str, port: int) -> None:
    """The explorer's address and port can be listened on: a clear line now, not a
    streamlit traceback later."""
    import socket

    if not 1 <= port <= 65535:
        raise AuditlakeError(f"--port {port}: not a TCP port (1-65535)")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AuditlakeError(f"--address {address}: {exc.strerror or exc}") from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(where)
        except OSError as exc:
            raise AuditlakeError(f"cannot listen on {address}:{port}: {exc.strerror or exc}") from None


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m auditlake.catalog", description="explorer users and the catalog")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add-user", help="add or replace an explorer user (password from $AUDITLAKE_PASSWORD, else prompted, else stdin)")
    a.add_argument("name")
    a.add_argument("role", choices=ROLES)
    a.add_argument("--users", help="users file (default $AUDITLAKE_EXPLORER_USERS or <AUDITLAKE_HOME>/explorer_users.toml)")
    sub.add_parser("list-users").add_argument("--users")
    args = p.parse_args(argv)
    try:
        if args.cmd == "add-user":
            pw = os.environ.get("AUDITLAKE_PASSWORD")
            if pw is None:
                pw = getpass.getpass(f"password for {args.name}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
            path = add_user(args.name, args.role, pw, users_path(args.users))
            print(f"{args.name} ({args.role}) written to {path}")
        else:
            for name, u in sorted(load_users(users_path(args.users))["users"].items()):
                print(f"{name}\t{u['role']}")
    except AuditlakeError as exc:
        print(f"auditlake: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
