"""Great Expectations 1.x suites over the lake's tables: the ledger, the quarantine and the
compliance findings. Pure logic; `quality/checks.py` wraps it in Dagster asset checks and
`auditlake compliance` runs it after an evaluation.

How GX is used (GX 1.24, no dagster-ge: that integration only supports GX < 1.0):
an ephemeral context (`gx.get_context(project_config=DataContextConfig(...),
mode="ephemeral")`), one pandas data source, one dataframe asset + whole-dataframe batch
definition per validated frame, an `ExpectationSuite`, a `ValidationDefinition` and a
`Checkpoint` (which stores the result in a filesystem results store); the Data Docs site
is rendered once per `Session` by `context.build_data_docs(resource_identifiers=...)`
(an `UpdateDataDocsAction` per checkpoint would re-render the index 8 times). Progress
bars and analytics are off; GX itself is imported on first use (it takes seconds).

GX runs on pandas, so the heavy lifting is done in polars and GX validates the resulting
frames, which stay small enough for pandas even for a 10M-event ledger:

* ledger (integrity; blocking in Dagster):
  - `ledger.schema`: one row per column of the Delta table (name, Arrow type);
  - `ledger.keys`: every row's `seq`, `seq_step` (seq minus the previous seq in seq order;
    the first row's previous is -1) and `event_id`: non-null, unique, seq contiguous from 0;
  - `ledger.partitions`: one row per `event_date` partition with per-partition counts of
    nulls in required columns, malformed event ids and hashes, `occurred_at` after
    `ingested_at` + 1 day or before 2000, rows in the wrong partition and (a warning)
    e-mail addresses or phone numbers written into `data` (all must be 0);
  - `ledger.values`: one row per distinct (event_type, subject_timezone, subject_country,
    key_id) with its row count: known event types, valid IANA zone names, ISO 3166-1
    country codes, well-formed key ids;
  - `ledger.money`: one row per distinct (event_type, currency) of the events with money
    (EVENTS.md: bid.placed, lead.sold, payout.recorded) with its row count: ISO 4217 codes.
* quarantine: `quarantine.rows` (reason non-null and of a known family, line >= 1, ...)
  and `quarantine.text` (raw and reason hold no e-mail address or phone number; run with
  no unexpected-value samples, so a leak is never copied into the Data Docs).
* findings: `findings.rows` (the latest evaluation's findings: known rule ids and
  severities, unique (evaluation_id, rule_id, event_id)) and `findings.evaluations` (one
  marker row per evaluation).

Bad data is a failed expectation, never an exception: an unknown time zone, a malformed
hash, even a missing column (the schema expectation fails, and the derived columns read as
null). An expectation GX itself could not evaluate also counts as failed, with the error.

Severity: every expectation is an *error* (the table is broken or leaks PII: schema,
seq, uniqueness, hash/key formats, nulls, unknown event types, unmasked quarantine text,
bad findings) or a *warning* (producer data the lake keeps as sent and the rules cope
with: an unknown time zone, which gets the four-US-zone check; a country or currency code
of the right shape that ISO 3166-1 or ISO 4217 does not list (ingest checks the shape; the
lists, from pycountry, change, and data kept for seven years outlives a code);
occurred_at more than a day after ingested_at or before 2000; a quarantine reason of an
unknown family).
`SuiteResult.success` is false on any failure, `ok` is false only on an error, and `severity` says
which ("error"/"warn"): Dagster checks fail with that severity (a WARN does not block),
and `auditlake compliance` exits 1 only on errors.

Each suite returns a `SuiteResult`: success, per-expectation `ExpectationResult`s with
GX's unexpected counts and the number of table rows affected (for aggregated frames, the
sum of the counts behind the unexpected aggregate rows), and the Data Docs location.

Data Docs go to `<lake>/reports/data_docs/` (index.html). Validation results are kept in
`<lake>/reports/gx/validations/` (the newest KEEP_RESULTS), so the index lists runs of
every process. For an S3 lake both are mirrored in a temporary folder and uploaded with
`Lake.write_bytes` (unchanged files are skipped through a manifest).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from .contract import EVENT_TYPES
from .lake import tables
from .lake.store import Lake
from .masking import mask_table

UTC = timezone.utc

HASH_RE = r"^[0-9a-f]{64}$"
UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
KEY_ID_RE = r"^hk-[0-9a-f]{12}$"  # chain HMAC key ids (auditlake/keys.py)
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_SKEW = timedelta(days=1)  # occurred_at may be at most this much after ingested_at
SEVERITIES = ("low", "medium", "high")
NOT_ZONES = frozenset({"Factory", "localtime"})  # in the tz database, but not zones

# Event types whose data carries a `currency` (EVENTS.md).
MONEY_EVENTS = ("bid.placed", "lead.sold", "payout.recorded")

# Ledger columns that are never null (tables.LEDGER; the nullable ones are the optional
# actor/subject fields, lawful_basis and phone_bidx). leaf and data are left to verify.
LEDGER_REQUIRED = (
    "event_id", "event_type", "occurred_at", "event_date", "ingested_at", "source", "tenant_id",
    "actor_type", "actor_id", "pii_fields", "hash", "key_id", "batch_id", "source_file",
    "source_sha256", "source_line",
)
# Reasons the ingest gives a quarantined line (auditlake/contract.py, ingest.py, landing.py).
REASON_FAMILIES: dict[str, str] = {
    "oversized": r"^line larger than 64 KiB",
    "empty": r"^empty line$",
    "not_json": r"^not JSON",
    "repeated_name": r"^not I-JSON: ",
    "not_object": r"^not a JSON object$",
    "unknown_field": r"^unknown (envelope|actor|subject) field: ",
    "missing_field": r"^missing required field: ",
    "wrong_type": r"^wrong type: ",
    "bad_value": r"^bad [A-Za-z0-9_.]+: ",
    "unknown_event_type": r"^unknown event_type: ",
    "replay": r"^replay: ",
    "not_canonical": r"^data has no canonical JSON form",
    "unreadable": r"^(unreadable|cannot read|corrupt|truncated|not a valid|invalid (gzip|parquet)|gzip stream cut off"
                  r"|data after the end of the gzip stream)",
}
# Personal data that must never be left in quarantine text (masking.py masks it). Bare
# digit runs are not listed: UUIDs and hashes, which the masker keeps, contain them.
PII_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "e164_phone": r"\+[1-9]\d{6,14}\b",
    "formatted_phone": r"\+\d[\d ().-]{6,}\d|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b",
}

_PII_ANY = "|".join(f"(?:{p})" for p in PII_PATTERNS.values())
ERROR, WARN = "error", "warn"
SITE = "auditlake"
DOCS_DIR = "reports/data_docs"
RESULTS_DIR = "reports/gx/validations"
KEEP_RESULTS = 120
SAMPLE = 10

log = logging.getLogger(__name__)


# =============================================================================== results

@dataclass
class ExpectationResult:
    frame: str  # the validated frame, e.g. "ledger.keys"
    expectation: str  # GX type, e.g. "expect_column_values_to_be_unique"
    column: str | None
    description: str
    success: bool
    severity: str = ERROR  # what a failure means: "error" (integrity, PII) or "warn" (data quality)
    element_count: int | None = None
    unexpected_count: int | None = None  # rows of the validated frame
    affected_rows: int | None = None  # rows of the table behind them
    observed_value: Any = None
    sample: list[str] = field(default_factory=list)  # unexpected values (never quarantine text)
    error: str | None = None  # GX could not evaluate it (counts as failed)

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class SuiteResult:
    suite: str  # "ledger", "quarantine" or "findings"
    success: bool
    rows: int  # rows of the table validated
    expectations: list[ExpectationResult] = field(default_factory=list)
    data_docs_uri: str | None = None  # the site's index.html
    data_docs_pages: dict[str, str] = field(default_factory=dict)  # frame -> its validation page
    details: dict = field(default_factory=dict)  # suite-specific figures (e.g. quarantine reasons)
    note: str | None = None  # e.g. "no quarantine table yet"
    duration_s: float = 0.0

    @property
    def failed(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.success]

    @property
    def errors(self) -> list[ExpectationResult]:
        """Failed expectations of severity error: the table is broken (integrity, PII)."""
        return [e for e in self.failed if e.severity == ERROR]

    @property
    def ok(self) -> bool:
        """No error-severity failure (warnings allowed)."""
        return not self.errors

    @property
    def severity(self) -> str | None:
        """None when every expectation passed, else "error" or "warn" (the worst failure)."""
        return None if self.success else (ERROR if self.errors else WARN)

    @property
    def unexpected_rows(self) -> int:
        return sum(e.affected_rows or 0 for e in self.failed)

    def summary(self) -> str:
        n, errors, warns = len(self.expectations), len(self.errors), len(self.failed) - len(self.errors)
        if self.success:
            state = "OK"
        elif errors:
            state = f"FAILED ({errors} error(s)" + (f", {warns} warning(s)" if warns else "") + f" of {n} expectations)"
        else:
            state = f"WARN ({warns} warning(s) of {n} expectations)"
        return f"{self.suite}: {state}, {self.rows} rows" + (f" ({self.note})" if self.note else "")

    def failures_text(self) -> list[str]:
        out = []
        for e in self.failed:
            what = f"{e.severity.upper()} {e.frame} {e.expectation}" + (f"[{e.column}]" if e.column else "")
            count = e.error or f"{e.affected_rows if e.affected_rows is not None else e.unexpected_count} row(s)"
            sample = f"; e.g. {', '.join(e.sample[:3])}" if e.sample else ""
            out.append(f"{what}: {e.description} -- {count}{sample}")
        return out

    def markdown(self) -> str:
        head = "| frame | expectation | column | ok | unexpected | rows affected |\n|---|---|---|---|---|---|\n"
        body = "".join(
            f"| {e.frame} | {e.expectation} | {e.column or ''} | "
            f"{'yes' if e.success else ('**no**' if e.severity == ERROR else 'warn')} | "
            f"{'' if e.unexpected_count is None else e.unexpected_count} | "
            f"{'' if e.affected_rows is None else e.affected_rows} |\n"
            for e in self.expectations)
        return head + body

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata (quality/checks.py wraps them)."""
        return {
            "suite": self.suite,
            "rows": self.rows,
            "expectations": len(self.expectations),
            "failed_expectations": len(self.failed),
            "failed_errors": len(self.errors),
            "unexpected_rows": self.unexpected_rows,
            "failures": self.failures_text(),
            "data_docs": self.data_docs_uri,
            "note": self.note,
            **{f"detail_{k}": v for k, v in self.details.items()},
        }

    def to_dict(self) -> dict:
        return {
            "suite": self.suite, "success": self.success, "ok": self.ok, "severity": self.severity,
            "rows": self.rows, "note": self.note,
            "failed": self.failures_text(), "unexpected_rows": self.unexpected_rows,
            "data_docs": self.data_docs_uri, "data_docs_pages": self.data_docs_pages,
            "details": self.details, "duration_s": round(self.duration_s, 3),
            "expectations": [e.to_dict() for e in self.expectations],
        }


# =============================================================================== GX glue

@lru_cache(maxsize=1)
def _gx():
    """Import GX once (it takes seconds), quietly."""
    import os

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
    for name in ("great_expectations", "great_expectations.render", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return gx


@dataclass
class _Spec:
    expectation: Any  # a gx.expectations.Expectation
    weight: str | None = None  # column of the frame: its values at the unexpected rows sum to the rows affected
    severity: str = ERROR  # WARN: producer data the lake keeps as sent (the rules cope with it)


@dataclass
class _Frame:
    name: str
    data: pl.DataFrame
    specs: list[_Spec]
    samples: bool = True  # False: never keep unexpected values (text that might hold PII)


def _E():
    return _gx().expectations


class _Docs:
    """Where the Data Docs site and the validation results live for one lake."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._tmp: str | None = None
        if lake.is_s3:
            self._tmp = tempfile.mkdtemp(prefix="auditlake-gx-")
            self.site_dir = Path(self._tmp) / "site"
            self.results_dir = Path(self._tmp) / "results"
            self._downloaded = self._download_results()
        else:
            self.site_dir = Path(lake.uri) / DOCS_DIR
            self.results_dir = Path(lake.uri) / RESULTS_DIR
            self._prune_local()

    # -- locations
    def uri(self, local: str | Path | None) -> str | None:
        if local is None:
            return None
        from urllib.parse import unquote

        local = Path(unquote(str(local).removeprefix("file://")))
        if self.lake.is_s3:
            return self.lake.child(f"{DOCS_DIR}/{local.relative_to(self.site_dir).as_posix()}")
        return local.as_uri()

    @property
    def index_uri(self) -> str:
        return self.uri(self.site_dir / "index.html")

    # -- results kept
    @staticmethod
    def _run_time(rel: str) -> str:
        parts = rel.split("/")
        return parts[-2] if len(parts) >= 2 else ""

    def _prune_local(self) -> None:
        if not self.results_dir.exists():
            return
        files = [p for p in self.results_dir.rglob("*.json")]
        files.sort(key=lambda p: self._run_time(p.relative_to(self.results_dir).as_posix()), reverse=True)
        for old in files[KEEP_RESULTS:]:
            old.unlink(missing_ok=True)

    def _download_results(self) -> set[str]:
        import pyarrow.fs as pafs

        fs, root = self.lake.filesystem()
        base = f"{root}/{RESULTS_DIR}"
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError:
            return set()
        rels = [i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File and i.path.endswith(".json")]
        rels.sort(key=self._run_time, reverse=True)
        got = set()
        for rel in rels[:KEEP_RESULTS]:
            data = self.lake.read_bytes(f"{RESULTS_DIR}/{rel}")
            if data is not None:
                dest = self.results_dir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                got.add(rel)
        return got

    # -- building and publishing
    def publish(self, context, identifiers: list) -> None:
        """Render this session's pages and the index; for S3, render every kept result
        (the temporary site starts empty) and upload what changed."""
        if not identifiers:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not self.lake.is_s3:
                context.build_data_docs(site_names=[SITE], resource_identifiers=identifiers)
                return
            context.build_data_docs(site_names=[SITE])
        manifest_rel = f"{DOCS_DIR}/.manifest.json"
        manifest = self.lake.read_json(manifest_rel) or {}
        fresh = {}
        for path in sorted(self.site_dir.rglob("*")):
            if path.is_file():
                rel = path.relative_to(self.site_dir).as_posix()
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                fresh[rel] = digest
                if manifest.get(rel) != digest:
                    self.lake.write_bytes(f"{DOCS_DIR}/{rel}", data)
        self.lake.write_json(manifest_rel, {**manifest, **fresh})
        for path in sorted(self.results_dir.rglob("*.json")):
            rel = path.relative_to(self.results_dir).as_posix()
            if rel not in self._downloaded:
                self.lake.write_bytes(f"{RESULTS_DIR}/{rel}", path.read_bytes())

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


class Session:
    """One GX ephemeral context (and, with a lake, its Data Docs site) for one or more
    suites. Use as a context manager; results are published to the lake on exit."""

    def __init__(self, lake: Lake | None = None, docs: bool = True, run_name: str | None = None):
        gx = _gx()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.docs = _Docs(lake) if (lake is not None and docs) else None
        self.run_time = datetime.now(UTC)
        self.run_name = run_name or f"auditlake-{self.run_time:%Y%m%dT%H%M%S}"
        self._built: list = []  # identifiers of this session's validation results
        defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
        sites = {}
        if self.docs is not None:
            defaults.stores[defaults.validation_results_store_name] = {
                "class_name": "ValidationResultsStore",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(self.docs.results_dir)},
            }
            sites = {SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(self.docs.site_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                       "validation_results_limit": KEEP_RESULTS},
                # Validation pages (which show every expectation with its description and
                # result) and the index; no separate suite or profiling pages.
                "site_section_builders": {"expectations": "None", "profiling": "None"},
            }}
        config = DataContextConfig(
            store_backend_defaults=defaults,
            data_docs_sites=sites,
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.context = gx.get_context(project_config=config, mode="ephemeral")
            self._source = self.context.data_sources.add_pandas("auditlake")

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        docs, self.docs = self.docs, None
        if docs is not None:
            try:
                docs.publish(self.context, self._built)
            finally:
                docs.close()

    # ----------------------------------------------------------------- one frame
    def validate(self, frame: _Frame) -> tuple[list[ExpectationResult], str | None]:
        gx = _gx()
        from great_expectations.core.run_identifier import RunIdentifier

        ctx = self.context
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            asset = self._source.add_dataframe_asset(name=frame.name)
            batch_def = asset.add_batch_definition_whole_dataframe("whole")
            suite = ctx.suites.add(gx.ExpectationSuite(  # one store write, not one per expectation
                name=frame.name, expectations=[s.expectation for s in frame.specs]))
            by_id = {e.id: spec for spec, e in zip(frame.specs, suite.expectations)}
            vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name=frame.name, data=batch_def, suite=suite))
            # The Checkpoint stores each result in the (filesystem) results store; the Data
            # Docs are built once per session in close() instead of by an
            # UpdateDataDocsAction per checkpoint (each of which re-renders the index).
            actions = []
            has_weights = any(s.weight for s in frame.specs)
            result_format = (
                {"result_format": "SUMMARY", "partial_unexpected_count": 0} if not frame.samples
                else {"result_format": "COMPLETE"} if has_weights
                else {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE}
            )
            checkpoint = ctx.checkpoints.add(gx.Checkpoint(
                name=frame.name, validation_definitions=[vdef], actions=actions, result_format=result_format))
            pdf = frame.data.to_pandas()
            run = checkpoint.run(batch_parameters={"dataframe": pdf},
                                 run_id=RunIdentifier(run_name=self.run_name, run_time=self.run_time))
        out: list[tuple[int, ExpectationResult]] = []
        order = {id(s): i for i, s in enumerate(frame.specs)}
        page = None
        for key, vres in run.run_results.items():
            if self.docs is not None:
                self._built.append(key)
                try:
                    urls = ctx.get_docs_sites_urls(resource_identifier=key, site_names=[SITE], only_if_exists=False)
                    page = self.docs.uri(urls[0]["site_url"]) if urls and urls[0].get("site_url") else None
                except Exception:  # noqa: BLE001 - a missing link is not a quality problem
                    page = None
            for er in vres.results:
                spec = by_id.get(er.expectation_config.id)
                out.append((order.get(id(spec), len(order)), _outcome(frame, spec, er)))
        out.sort(key=lambda pair: pair[0])
        return [r for _, r in out], page


def _error_of(info) -> str | None:
    if not info:
        return None
    if isinstance(info, dict) and "raised_exception" in info:
        return (info.get("exception_message") or "GX raised an exception") if info.get("raised_exception") else None
    if isinstance(info, dict):
        for v in info.values():
            msg = _error_of(v)
            if msg:
                return msg
    return None


def _outcome(frame: _Frame, spec: _Spec | None, er) -> ExpectationResult:
    cfg = er.expectation_config
    kwargs = cfg.kwargs or {}
    column = kwargs.get("column") or (
        ",".join(kwargs["column_list"]) if kwargs.get("column_list") else
        f"{kwargs['column_A']},{kwargs['column_B']}" if kwargs.get("column_A") else None)
    res = er.result or {}
    unexpected = res.get("unexpected_count")
    affected = unexpected
    if spec is not None and spec.weight and unexpected is not None:
        idx = res.get("unexpected_index_list") or []
        weights = frame.data[spec.weight].to_list()
        affected = int(sum((weights[i] or 0) for i in idx if isinstance(i, int) and 0 <= i < len(weights)))
    sample = []
    if frame.samples:
        values = res.get("partial_unexpected_list") or res.get("unexpected_list") or []
        sample = list(dict.fromkeys(str(v) for v in values))[:SAMPLE]
    observed = res.get("observed_value")
    if observed is not None and not isinstance(observed, (int, float, str, bool, list)):
        observed = str(observed)
    error = _error_of(er.exception_info)
    return ExpectationResult(
        frame=frame.name, expectation=cfg.type, column=column,
        description=getattr(spec.expectation, "description", None) or cfg.type if spec else cfg.type,
        success=bool(er.success) and error is None, severity=spec.severity if spec else ERROR,
        element_count=res.get("element_count"),
        unexpected_count=None if unexpected is None else int(unexpected),
        affected_rows=None if affected is None else int(affected),
        observed_value=_plain(observed), sample=sample, error=error,
    )


def _plain(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def _run_suite(session: Session, suite: str, rows: int, frames: list[_Frame], details: dict | None = None,
               note: str | None = None) -> SuiteResult:
    started = time.monotonic()
    results: list[ExpectationResult] = []
    pages: dict[str, str] = {}
    for frame in frames:
        res, page = session.validate(frame)
        results.extend(res)
        if page:
            pages[frame.name] = page
    return SuiteResult(
        suite=suite, success=all(r.success for r in results), rows=rows, expectations=results,
        data_docs_uri=session.docs.index_uri if session.docs else None, data_docs_pages=pages,
        details=details or {}, note=note, duration_s=time.monotonic() - started,
    )


# =============================================================================== helpers

def _lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _with_columns(lf: pl.LazyFrame, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """Missing columns read as null (the schema expectation reports them); present
    columns are cast to the expected type where they can be (else null)."""
    have = lf.collect_schema()
    exprs = []
    for name, dtype in schema.items():
        if name not in have:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif have[name] != dtype:
            exprs.append(pl.col(name).cast(dtype, strict=False))
    return lf.with_columns(exprs) if exprs else lf


def _polars_schema(arrow: pa.Schema) -> dict[str, pl.DataType]:
    return dict(pl.from_arrow(arrow.empty_table()).schema)


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    return str(t)


def _schema_frame(schema: pa.Schema | dict) -> pl.DataFrame:
    if isinstance(schema, pa.Schema):
        pairs = [(f.name, _type_name(f.type)) for f in schema]
    else:  # a polars schema
        arrow = pl.DataFrame(schema=schema).to_arrow().schema
        pairs = [(f.name, _type_name(f.type)) for f in arrow]
    return pl.DataFrame({"column": [p[0] for p in pairs], "type": [p[1] for p in pairs]},
                        schema={"column": pl.Utf8, "type": pl.Utf8})


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - NOT_ZONES


def valid_zone(name: str | None) -> bool:
    """A real IANA zone that zoneinfo and polars can both load (same test as the rules)."""
    if not name or name not in _zone_names():
        return False
    try:
        zoneinfo.ZoneInfo(name)
        pl.Series([EARLIEST]).dt.convert_time_zone(name)
    except Exception:  # noqa: BLE001
        return False
    return True


@lru_cache(maxsize=1)
def iso_countries() -> tuple[str, ...]:
    """ISO 3166-1 alpha-2 codes (pycountry's copy of the iso-codes data)."""
    import pycountry

    return tuple(sorted(c.alpha_2 for c in pycountry.countries))


@lru_cache(maxsize=1)
def iso_currencies() -> tuple[str, ...]:
    """ISO 4217 alphabetic codes (pycountry)."""
    import pycountry

    return tuple(sorted(c.alpha_3 for c in pycountry.currencies))


def _zone_value_set(present: list[str | None]) -> list[str]:
    unusable = {n for n in present if n and n in _zone_names() and not valid_zone(n)}
    return sorted(_zone_names() - unusable)


def _count(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null(False).sum().cast(pl.Int64)


def _zero(column: str, description: str, severity: str = ERROR) -> _Spec:
    return _Spec(_E().ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=0,
                                                   description=description), weight=column, severity=severity)


# =============================================================================== ledger

def _ledger_frames(lf: pl.LazyFrame, schema: pa.Schema | dict) -> list[_Frame]:
    E = _E()
    lf = _with_columns(lf, _polars_schema(tables.LEDGER))
    keys = (
        lf.select("seq", "event_id").sort("seq", nulls_last=False)
        .with_columns(seq_step=pl.col("seq") - pl.col("seq").shift(1, fill_value=-1))
        .select("seq", "seq_step", "event_id").collect()
    )
    occ, ing = pl.col("occurred_at"), pl.col("ingested_at")
    parts = (
        lf.group_by("event_date").agg(
            rows=pl.len().cast(pl.Int64),
            first_occurred_at=occ.min(), last_occurred_at=occ.max(),
            null_required=_count(pl.any_horizontal([pl.col(c).is_null() for c in LEDGER_REQUIRED])),
            bad_event_id=_count(~pl.col("event_id").str.contains(UUID_RE)),
            bad_hash=_count(~pl.col("hash").str.contains(HASH_RE)),
            occurred_after_ingest=_count(occ > ing + MAX_SKEW),
            occurred_before_2000=_count(occ < EARLIEST),
            wrong_partition=_count(occ.dt.strftime("%Y-%m-%d") != pl.col("event_date")),
            pii_in_data=_count(pl.col("data").str.contains(_PII_ANY)),
        ).sort("event_date", nulls_last=False).collect()
    )
    values = (
        lf.group_by("event_type", "subject_timezone", "subject_country", "key_id").agg(rows=pl.len().cast(pl.Int64))
        .sort("rows", "event_type", "subject_timezone", "subject_country", "key_id",
              descending=[True, False, False, False, False], nulls_last=True).collect()
    )
    money = (
        lf.filter(pl.col("event_type").is_in(MONEY_EVENTS))
        .group_by("event_type", currency=pl.col("data").str.json_path_match("$.currency"))
        .agg(rows=pl.len().cast(pl.Int64)).sort("rows", "event_type", "currency", descending=[True, False, False],
                                                  nulls_last=True).collect()
    )
    # Producers' free text (a time zone, a country, a currency): a failing check keeps sample
    # values in its report, GX's results store and the Data Docs, so PII-shaped ones are
    # masked first (none is a valid code or zone, so no check's outcome changes).
    values, money = (pl.from_arrow(mask_table(f.to_arrow())) for f in (values, money))
    zones = _zone_value_set(values["subject_timezone"].unique().to_list())
    expected_pairs = [(f.name, _type_name(f.type)) for f in tables.LEDGER]
    schema_frame = _Frame("ledger.schema", _schema_frame(schema), [
        _Spec(E.ExpectColumnDistinctValuesToEqualSet(
            column="column", value_set=[n for n, _ in expected_pairs],
            description="the ledger has exactly the columns of docs/LEDGER.md section 2")),
        _Spec(E.ExpectColumnPairValuesToBeInSet(
            column_A="column", column_B="type", value_pairs_set=expected_pairs,
            description="every ledger column has its documented Arrow type")),
    ])
    keys_frame = _Frame("ledger.keys", keys, [
        _Spec(E.ExpectColumnValuesToNotBeNull(column="seq", description="every row has a seq")),
        _Spec(E.ExpectColumnValuesToBeUnique(column="seq", description="seq is unique")),
        _Spec(E.ExpectColumnValuesToBeBetween(
            column="seq_step", min_value=1, max_value=1,
            description="seq is contiguous from 0: in seq order each is the previous + 1 (0 first); "
                        "0 marks a duplicate, more than 1 a gap")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="event_id", description="every row has an event_id")),
        _Spec(E.ExpectColumnValuesToBeUnique(column="event_id", description="event_id is unique across the ledger")),
    ])
    part_specs = [
        _Spec(E.ExpectColumnValuesToNotBeNull(column="event_date", description="every row has a partition date"),
              weight="rows"),
        _Spec(E.ExpectColumnValuesToMatchRegex(column="event_date", regex=DATE_RE,
                                               description="partition values are YYYY-MM-DD"), weight="rows"),
        _zero("null_required", "no required column is null (" + ", ".join(LEDGER_REQUIRED) + ")"),
        _zero("bad_event_id", "event_id is a canonical lowercase UUID"),
        _zero("bad_hash", "hash is 64 lowercase hex digits"),
        _zero("occurred_after_ingest", "occurred_at is at most 1 day after ingested_at (clock skew)", WARN),
        _zero("occurred_before_2000", "occurred_at is not before 2000-01-01", WARN),
        _zero("wrong_partition", "event_date is the UTC date of occurred_at"),
        # The contract's PII fields are sealed; the same data written into `data` is kept as
        # sent (it is the record) and shown to every reader: a producer to fix.
        _zero("pii_in_data", "data holds no e-mail address or phone number (personal data belongs in subject, "
                             "where it is sealed)", WARN),
    ]
    values_specs = [
        _Spec(E.ExpectColumnValuesToBeInSet(column="event_type", value_set=sorted(EVENT_TYPES),
                                            description="event_type is in the EVENTS.md catalog"), weight="rows"),
        _Spec(E.ExpectColumnValuesToBeInSet(column="subject_timezone", value_set=zones,
                                            description="subject_timezone, when present, is a valid IANA zone name"),
              weight="rows", severity=WARN),
        _Spec(E.ExpectColumnValuesToBeInSet(column="subject_country", value_set=list(iso_countries()),
                                            description="subject_country, when present, is an ISO 3166-1 alpha-2 code"),
              weight="rows", severity=WARN),
        _Spec(E.ExpectColumnValuesToMatchRegex(column="key_id", regex=KEY_ID_RE,
                                               description="key_id names a chain key (hk- and 12 hex digits)"),
              weight="rows"),
    ]
    money_specs = [
        _Spec(E.ExpectColumnValuesToNotBeNull(column="currency", description="every money event names its currency"),
              weight="rows"),
        _Spec(E.ExpectColumnValuesToBeInSet(column="currency", value_set=list(iso_currencies()),
                                            description="currency is an ISO 4217 code"),
              weight="rows", severity=WARN),
    ]
    return [schema_frame, keys_frame, _Frame("ledger.partitions", parts, part_specs),
            _Frame("ledger.values", values, values_specs), _Frame("ledger.money", money, money_specs)]


def validate_ledger_frame(frame: pl.DataFrame | pl.LazyFrame, schema: pa.Schema | None = None,
                          session: Session | None = None) -> SuiteResult:
    """The ledger suite over rows with the columns of tables.LEDGER (`leaf` is not read,
    `data` only for the currency of money events). `schema` is the table's Arrow schema
    (default: the frame's own)."""
    lf = _lazy(frame)
    schema = schema if schema is not None else lf.collect_schema()
    lf = _with_columns(lf, _polars_schema(tables.LEDGER))
    own = session is None
    session = session or Session(docs=False)
    try:
        frames = _ledger_frames(lf, schema)
        rows = frames[1].data.height
        details = {"partitions": frames[2].data.height,
                   "time_zones": frames[3].data["subject_timezone"].drop_nulls().n_unique()}
        if frames[2].data["null_required"].sum():
            nulls = lf.select([pl.col(c).null_count().alias(c) for c in LEDGER_REQUIRED]).collect().row(0, named=True)
            details["nulls"] = {c: int(n) for c, n in nulls.items() if n}
        return _run_suite(session, "ledger", rows, frames, details)
    finally:
        if own:
            session.close()


def validate_ledger(lake: Lake, docs: bool = True, session: Session | None = None) -> SuiteResult:
    dt = lake.delta("ledger")
    if dt is None:
        return SuiteResult("ledger", True, 0, note="no ledger table yet")
    from .compliance.run import scan

    schema = pa.schema(dt.schema().to_arrow())
    cols = [c for c in tables.LEDGER.names if c != "leaf" and c in schema.names]
    lf = scan(dt).select(cols)
    own = session is None
    session = session or Session(lake, docs=docs, run_name="ledger")
    try:
        return validate_ledger_frame(lf, schema, session)
    finally:
        if own:
            session.close()


# =============================================================================== quarantine

def reason_family(expr: pl.Expr) -> pl.Expr:
    """The REASON_FAMILIES name of a reason (null when none matches)."""
    out = pl.lit(None, dtype=pl.Utf8)
    for name, pattern in reversed(list(REASON_FAMILIES.items())):
        out = pl.when(expr.str.contains(pattern)).then(pl.lit(name)).otherwise(out)
    return out


def _mask_pii(expr: pl.Expr) -> pl.Expr:
    for pattern in PII_PATTERNS.values():
        expr = expr.str.replace_all(pattern, "***")
    return expr


def _quarantine_frames(lf: pl.LazyFrame) -> tuple[list[_Frame], dict]:
    E = _E()
    lf = _with_columns(lf, _polars_schema(tables.QUARANTINE))
    df = lf.select("source_file", "line", "reason", "raw", "event_id", "quarantined_at", "batch_id").collect()
    rows = df.select(
        "source_file", "line", "event_id", "quarantined_at", "batch_id",
        # A reason that leaks PII fails quarantine.text; here it is shown masked.
        reason=_mask_pii(pl.col("reason")),
    )
    text = df.select("raw", "reason")
    fam = df.select(family=reason_family(pl.col("reason")).fill_null("unknown")).group_by("family").len()
    details = {"by_reason_family": {r: int(n) for r, n in sorted(fam.iter_rows(), key=lambda x: (-x[1], x[0]))}}
    rows_specs = [
        _Spec(E.ExpectColumnValuesToNotBeNull(column="source_file", description="every line names its landing file")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="line", description="every line has its line number")),
        _Spec(E.ExpectColumnValuesToBeBetween(column="line", min_value=1, description="line numbers are 1-based")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="quarantined_at", description="every line has its time")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="reason", description="every quarantined line has a reason")),
        _Spec(E.ExpectColumnValuesToMatchRegexList(
            column="reason", regex_list=list(REASON_FAMILIES.values()), match_on="any",
            description="the reason is one of the known families (" + ", ".join(REASON_FAMILIES) + ")"),
              severity=WARN),
    ]
    pii = list(PII_PATTERNS.values())
    text_specs = [
        _Spec(E.ExpectColumnValuesToNotMatchRegexList(
            column="raw", regex_list=pii, description="the raw line is masked: no e-mail address or phone number")),
        _Spec(E.ExpectColumnValuesToNotMatchRegexList(
            column="reason", regex_list=pii, description="the reason holds no e-mail address or phone number")),
    ]
    return [_Frame("quarantine.rows", rows, rows_specs),
            _Frame("quarantine.text", text, text_specs, samples=False)], details


def validate_quarantine_frame(frame: pl.DataFrame | pl.LazyFrame, session: Session | None = None) -> SuiteResult:
    """The quarantine suite over rows with the columns of tables.QUARANTINE."""
    own = session is None
    session = session or Session(docs=False)
    try:
        frames, details = _quarantine_frames(_lazy(frame))
        return _run_suite(session, "quarantine", frames[0].data.height, frames, details)
    finally:
        if own:
            session.close()


def validate_quarantine(lake: Lake, docs: bool = True, session: Session | None = None) -> SuiteResult:
    dt = lake.delta("quarantine")
    if dt is None:
        return SuiteResult("quarantine", True, 0, note="no quarantine table yet (nothing was rejected)")
    own = session is None
    session = session or Session(lake, docs=docs, run_name="quarantine")
    try:
        from .compliance.run import scan

        return validate_quarantine_frame(scan(dt), session)
    finally:
        if own:
            session.close()


# =============================================================================== findings

def _findings_frames(lf: pl.LazyFrame, markers: pl.DataFrame | None = None) -> list[_Frame]:
    from .compliance.rules import RULE_IDS, SEVERITY

    E = _E()
    lf = _with_columns(lf, _polars_schema(tables.FINDINGS))
    rows = lf.filter(~(pl.col("rule_id").is_null() & pl.col("event_id").is_null())).select(
        "evaluation_id", "rule_id", "event_id", "tenant_id", "occurred_at", "severity").collect()
    if markers is None:
        markers = lf.filter(pl.col("rule_id").is_null() & pl.col("event_id").is_null()).select(
            "evaluation_id", "evaluated_at", "code_version", "tree_size").collect()
    specs = [
        _Spec(E.ExpectColumnValuesToNotBeNull(column="evaluation_id", description="every finding names its evaluation")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="rule_id", description="every finding names its rule")),
        _Spec(E.ExpectColumnValuesToBeInSet(column="rule_id", value_set=list(RULE_IDS),
                                            description="rule_id is one of the 11 rules of RULES.md")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="event_id", description="every finding names its event")),
        _Spec(E.ExpectColumnValuesToMatchRegex(column="event_id", regex=UUID_RE,
                                               description="event_id is a canonical lowercase UUID")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="tenant_id", description="every finding has its tenant")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="occurred_at", description="every finding has its event time")),
        _Spec(E.ExpectColumnValuesToBeInSet(column="severity", value_set=list(SEVERITIES),
                                            description="severity is low, medium or high")),
        _Spec(E.ExpectColumnPairValuesToBeInSet(
            column_A="rule_id", column_B="severity", value_pairs_set=sorted(SEVERITY.items()),
            description="each rule has its own severity")),
        _Spec(E.ExpectCompoundColumnsToBeUnique(
            column_list=["evaluation_id", "rule_id", "event_id"],
            description="one finding per (evaluation_id, rule_id, event_id)")),
    ]
    marker_specs = [
        _Spec(E.ExpectColumnValuesToNotBeNull(column="evaluation_id", description="every evaluation has an id")),
        _Spec(E.ExpectColumnValuesToBeUnique(column="evaluation_id",
                                             description="exactly one marker row per evaluation")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="evaluated_at", description="every evaluation has its time")),
        _Spec(E.ExpectColumnValuesToNotBeNull(column="code_version", description="every evaluation has its code version")),
        _Spec(E.ExpectColumnValuesToBeBetween(column="tree_size", min_value=0,
                                              description="tree_size is a count of ledger events")),
    ]
    return [_Frame("findings.rows", rows, specs), _Frame("findings.evaluations", markers, marker_specs)]


def validate_findings_frame(frame: pl.DataFrame | pl.LazyFrame, session: Session | None = None) -> SuiteResult:
    """The findings suite over rows with the columns of tables.FINDINGS (finding rows and
    evaluation marker rows: rule_id and event_id null)."""
    own = session is None
    session = session or Session(docs=False)
    try:
        frames = _findings_frames(_lazy(frame))
        details = {"evaluations": frames[1].data.height}
        return _run_suite(session, "findings", frames[0].data.height, frames, details)
    finally:
        if own:
            session.close()


def validate_findings(lake: Lake, evaluation_id: str | None = None, docs: bool = True,
                      session: Session | None = None, all_evaluations: bool = False) -> SuiteResult:
    """The findings suite over one evaluation's findings (default: the latest; every
    evaluation with `all_evaluations`) plus the marker rows of every evaluation."""
    import pyarrow.dataset as ds

    from .compliance.run import latest_evaluation_id

    dt = lake.delta("findings")
    if dt is None:
        return SuiteResult("findings", True, 0, note="no findings table yet (no evaluation)")
    dataset = dt.to_pyarrow_dataset()
    markers = pl.from_arrow(dataset.to_table(
        columns=["evaluation_id", "evaluated_at", "code_version", "tree_size"],
        filter=ds.field("rule_id").is_null() & ds.field("event_id").is_null()))
    if all_evaluations:
        lf = pl.scan_pyarrow_dataset(dataset)
    else:
        evaluation_id = evaluation_id or latest_evaluation_id(lake)
        lf = pl.from_arrow(dataset.to_table(filter=ds.field("evaluation_id") == evaluation_id)).lazy()
    own = session is None
    session = session or Session(lake, docs=docs, run_name="findings")
    try:
        frames = _findings_frames(lf, markers)
        details = {"evaluations": markers.height, "evaluation_id": evaluation_id if not all_evaluations else "all"}
        return _run_suite(session, "findings", frames[0].data.height, frames, details)
    finally:
        if own:
            session.close()


# =============================================================================== all

def validate_all(lake: Lake, evaluation_id: str | None = None, docs: bool = True,
                 run_name: str | None = None) -> dict[str, SuiteResult]:
    """The ledger, quarantine and findings suites in one GX session (one Data Docs build).
    A suite that cannot run at all (an I/O error, a GX bug) is reported as failed with the
    error instead of stopping the others."""
    runs = {
        "ledger": lambda s: validate_ledger(lake, session=s),
        "quarantine": lambda s: validate_quarantine(lake, session=s),
        "findings": lambda s: validate_findings(lake, evaluation_id=evaluation_id, session=s),
    }
    out: dict[str, SuiteResult] = {}
    with Session(lake, docs=docs, run_name=run_name) as session:
        for name, run in runs.items():
            try:
                out[name] = run(session)
            except Exception as exc:  # noqa: BLE001 - reported as a failed suite
                log.debug("suite %s could not run", name, exc_info=True)
                out[name] = SuiteResult(name, False, 0, expectations=[ExpectationResult(
                    frame=name, expectation="run_suite", column=None, description="the suite could not run",
                    success=False, error=f"{exc.__class__.__name__}: {exc}")], note="could not run")
    return out


# =============================================================================== quarantine rate

def quarantine_rate(lake: Lake) -> dict:
    """The share of landing lines quarantined, from the ingest log (lines read, accepted,
    quarantined per file): overall, per UTC day of ingest (`completed_at`), and for the
    latest such day. Without an ingest log it falls back to the two tables' row counts."""
    log = lake.delta("ingest_log")
    if log is None:
        q = lake.delta("quarantine")
        led = lake.delta("ledger")
        quarantined = 0 if q is None else q.to_pyarrow_dataset().count_rows()
        accepted = 0 if led is None else led.to_pyarrow_dataset().count_rows()
        lines = quarantined + accepted
        rate = quarantined / lines if lines else 0.0
        return {"lines_read": lines, "quarantined": quarantined, "rate": rate,
                "latest_day": None, "latest_day_lines": lines, "latest_day_quarantined": quarantined,
                "latest_day_rate": rate, "by_day": []}
    df = pl.from_arrow(log.to_pyarrow_dataset().to_table(columns=["lines_read", "quarantined", "completed_at"]))
    by_day = (
        df.group_by(day=pl.col("completed_at").dt.strftime("%Y-%m-%d"))
        .agg(lines_read=pl.col("lines_read").sum(), quarantined=pl.col("quarantined").sum())
        .with_columns(rate=pl.when(pl.col("lines_read") > 0)
                      .then(pl.col("quarantined") / pl.col("lines_read")).otherwise(0.0))
        .sort("day")
    )
    lines, quarantined = int(df["lines_read"].sum() or 0), int(df["quarantined"].sum() or 0)
    latest = by_day.tail(1).to_dicts()[0] if by_day.height else None
    return {
        "lines_read": lines, "quarantined": quarantined, "rate": quarantined / lines if lines else 0.0,
        "latest_day": latest and latest["day"],
        "latest_day_lines": int(latest["lines_read"]) if latest else 0,
        "latest_day_quarantined": int(latest["quarantined"]) if latest else 0,
        "latest_day_rate": float(latest["rate"]) if latest else 0.0,
        "by_day": by_day.tail(14).to_dicts(),
    }
