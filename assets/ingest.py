"""Landing files -> ledger (+ quarantine): the daily partitioned ingest.

Thin assets over the engine (`auditlake.ingest.ingest`). Re-materialising a day is
idempotent because the engine ingests each file *content* (SHA-256) exactly once: a
second run over the same day finds every file in the ingest log and appends nothing.
Days run in parallel safely: every append is an optimistic Delta commit that fails if
another writer committed first, and the engine then re-plans and retries, so the log's
append itself stays serial while everything around it runs side by side.
"""

from collections import Counter

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from auditlake.head import read_checkpoints
from auditlake.ingest import ingest
from auditlake.lake.store import Lake
from pipelines.resources import LakeResource

from . import md
from .partitions import DAILY, day_from_name, digest, file_uri, files_by_day, files_for_day

GROUP = "ingest"


# ----------------------------------------------------------------------------- helpers
def _table(lake: Lake, name: str, columns: list[str], day: str, files: dict[str, str]) -> pa.Table | None:
    """The table's rows from the contents of this day's landing files ({name: sha256}) as
    first ingested: a copy re-dropped on another day is accounted for once, on the day of
    the name it was first ingested under (another day's landing file now, or a name dated
    another day); a file renamed within its day still counts there."""
    dt = lake.delta(name)
    if dt is None or not files:
        return None
    t = dt.to_pyarrow_dataset().to_table(columns=sorted({*columns, "source_file"}),
                                         filter=pc.field("source_sha256").isin(list(files.values())))
    renamed = [n for n in t.column("source_file").unique().to_pylist() if n not in files]
    # (The landing listing only when a first name is not one of this day's: usually none is.)
    elsewhere = {f.name for d, fs in files_by_day(lake).items() if d != day for f in fs} if renamed else set()
    other_day = [n for n in renamed if n in elsewhere or day_from_name(n) not in (None, day)]
    if other_day:
        t = t.filter(pc.invert(pc.is_in(t.column("source_file"), pa.array(other_day, pa.string()))))
    return t.select(columns)


def _table_rows(lake: Lake, name: str, columns: list[str], day: str, files: dict[str, str]) -> list[dict]:
    t = _table(lake, name, columns, day, files)
    return [] if t is None else t.to_pylist()


def ingest_log_rows(lake: Lake, day: str, files: dict[str, str]) -> dict[str, dict]:
    """The ingest log's row per file content (stable across re-runs)."""
    rows = _table_rows(lake, "ingest_log", ["source_sha256", "lines_read", "accepted", "quarantined"], day, files)
    return {r["source_sha256"]: r for r in rows}


def day_totals(lake: Lake, day: str, files: dict[str, str], logged: dict[str, dict] | None = None) -> dict:
    done = ingest_log_rows(lake, day, files) if logged is None else logged
    return {
        "files_ingested": len(done),
        "lines_read": sum(r["lines_read"] for r in done.values()),
        "events": sum(r["accepted"] for r in done.values()),
        "quarantined": sum(r["quarantined"] for r in done.values()),
    }


def day_events(lake: Lake, day: str, files: dict[str, str], first: int = 10) -> tuple[list[tuple[str, int]], list[dict]]:
    """(events per type, the first events) sealed from these landing files."""
    t = _table(lake, "ledger", ["seq", "event_type", "occurred_at", "tenant_id"], day, files)
    if t is None:
        return [], []
    counts = t.group_by("event_type").aggregate([("seq", "count")]).sort_by([("seq_count", "descending")])
    by_type = list(zip(counts.column("event_type").to_pylist(), counts.column("seq_count").to_pylist()))
    return by_type, t.sort_by("seq").slice(0, first).to_pylist()


def head_summary(lake: Lake) -> dict:
    rows = read_checkpoints(lake) if lake.read_json("auditlake.json") is not None else []
    if not rows:
        return {"tree_size": 0, "root": "", "checkpoint_hash": "", "checkpoint_time": ""}
    cp = rows[-1]
    return {"tree_size": cp["tree_size"], "root": cp["root"], "checkpoint_hash": cp["checkpoint_hash"],
            "checkpoint_time": cp["time"]}


# ----------------------------------------------------------------------------- landing files
@dg.observable_source_asset(
    name="landing_files",
    group_name=GROUP,
    description=(
        "Producers' landing files (JSON Lines / Parquet) in `<lake>/landing/`, grouped by landing day. "
        "Nothing here is trusted yet: the ingest checks every line against the event contract."
    ),
    tags={"dagster/kind/jsonl": "", "dagster/kind/parquet": ""},
)
def landing_files(lake: LakeResource) -> dg.ObserveResult:
    by_day = files_by_day(lake.lake())
    listing = [f"{lf.name}\t{lf.size}" for files in by_day.values() for lf in files]
    rows = [(day, len(files), sum(f.size for f in files)) for day, files in sorted(by_day.items(), reverse=True)]
    return dg.ObserveResult(
        data_version=dg.DataVersion(digest(listing)),
        metadata={
            "files": len(listing),
            "bytes": sum(r[2] for r in rows),
            "days": len(rows),
            "preview": dg.MetadataValue.md(
                "### Landing files by day\n\n" + md.table(["day", "files", "bytes"], rows, limit=31)
            ),
        },
    )


# ----------------------------------------------------------------------------- ledger
class IngestConfig(dg.Config):
    files: list[str] = Field(
        default_factory=list,
        description="Only these landing files of the day (names relative to landing/); empty: all of the day's files.",
    )


@dg.asset(
    partitions_def=DAILY,
    deps=[landing_files],
    group_name=GROUP,
    kinds={"delta", "python"},
    description=(
        "The sealed, hash-chained, append-only ledger. A partition is one landing day: materialising it "
        "ingests that day's landing files (each file content exactly once), seals and chains the events, "
        "and signs a checkpoint over the new Merkle tree. Bad lines go to the quarantine."
    ),
)
def ledger(context: dg.AssetExecutionContext, config: IngestConfig, lake: LakeResource) -> dg.MaterializeResult:
    day = context.partition_key
    lk = lake.lake()
    day_files = files_for_day(lk, day)
    chosen = day_files
    if config.files:
        wanted = set(config.files)
        chosen = [f for f in day_files if f.name in wanted]
        missing = sorted(wanted - {f.name for f in chosen})
        if missing:
            raise dg.Failure(f"not landing files of {day}: {', '.join(missing)}")

    report = None
    if chosen:
        context.log.info(f"ingesting {len(chosen)} landing file(s) of {day} into {lk.uri}")
        report = ingest(lk, [file_uri(f) for f in chosen], progress=context.log.info)
        for f in report.files:
            if f.name_held_other:
                context.log.warning(f"{f.file} held other content when it was ingested before: landing files are "
                                    "immutable; its lines were ingested as a new file's")
    elif lk.delta("ledger") is not None:
        # No file (the sensor's request after a failed run, or an empty day): ingest of no
        # landing file still seals what a failed run left unsealed.
        context.log.info(f"no landing files for {day} in {lk.uri}/landing; completing what earlier runs left")
        report = ingest(lk, [], progress=context.log.info)
    else:
        context.log.info(f"no landing files for {day} in {lk.uri}/landing")

    shas = {f.name: f.sha256() for f in day_files}
    logged = ingest_log_rows(lk, day, shas)
    totals = day_totals(lk, day, shas, logged)
    if report is not None:  # the head right after this run's commits
        head = {"tree_size": report.tree_size, "root": report.root, "checkpoint_hash": report.checkpoint_hash,
                "checkpoint_time": ""}
    else:
        head = head_summary(lk)
    skipped = {f.sha256 for f in report.files if f.skipped} if report else set()
    chosen_names = {f.name for f in chosen}
    file_rows = []
    for name, sha in sorted(shas.items()):
        r = logged.get(sha)
        status = "not in this run" if name not in chosen_names else (
            "already ingested" if sha in skipped else "ingested")
        file_rows.append((name, md.short(sha, 12), r and r["lines_read"], r and r["accepted"], r and r["quarantined"], status))
    by_type, events = day_events(lk, day, shas)

    accepted = report.accepted if report else 0
    quarantined = report.quarantined if report else 0
    preview = "\n\n".join([
        f"### Landing day {day}: {totals['events']} events sealed, {totals['quarantined']} lines quarantined",
        f"This run: **{accepted}** accepted, **{quarantined}** quarantined "
        f"({'no files' if not chosen else f'{len(chosen)} file(s), {len(skipped)} already ingested'}).",
        "#### Files\n\n" + md.table(["file", "sha256", "lines", "accepted", "quarantined", "this run"], file_rows),
        "#### Event types\n\n" + md.table(["event_type", "events"], by_type),
        "#### First events (PII is sealed; none shown)\n\n"
        + md.table(["seq", "event_type", "occurred_at", "tenant_id"],
                   [(e["seq"], e["event_type"], e["occurred_at"], e["tenant_id"]) for e in events]),
        f"#### Ledger head after this run\n\ntree size **{head['tree_size']}**, root `{head['root']}`, "
        f"signed checkpoint `{head['checkpoint_hash']}`",
    ])
    return dg.MaterializeResult(
        data_version=dg.DataVersion(digest(list(shas.values()))),
        metadata={
            "dagster/row_count": totals["events"],
            "accepted": accepted,
            "quarantined": quarantined,
            "day_events": totals["events"],
            "day_quarantined": totals["quarantined"],
            "files": len(day_files),
            "files_already_ingested": len(skipped),
            "tree_size": head["tree_size"],
            "root": head["root"],
            "checkpoint_id": head["checkpoint_hash"],
            "duration_s": round(report.duration_s, 3) if report else 0.0,
            "commit_retries": report.retries if report else 0,
            "lake": lk.uri,
            "preview": dg.MetadataValue.md(preview),
        },
    )


# ----------------------------------------------------------------------------- quarantine
QUARANTINE_RATE = "quarantine_rate"


@dg.asset(
    partitions_def=DAILY,
    deps=[ledger],
    group_name=GROUP,
    kinds={"delta"},
    description=(
        "Landing lines that broke the event contract (not JSON, missing or wrong fields, unknown type, "
        "replayed event_id, > 64 KiB), with file, line, reason and the PII-masked raw line. Never dropped. "
        "A partition is the quarantine of one landing day's files."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            QUARANTINE_RATE,
            asset="quarantine",
            description="Warns when more than the configured share of the day's landing lines was quarantined.",
        )
    ],
)
def quarantine(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    day = context.partition_key
    lk = lake.lake()
    files = {f.name: f.sha256() for f in files_for_day(lk, day)}
    rows = _table_rows(lk, "quarantine", ["source_file", "source_sha256", "line", "reason", "raw"], day, files)
    rows.sort(key=lambda r: (r["source_file"], r["line"]))
    totals = day_totals(lk, day, files)
    lines = totals["lines_read"]
    n = len(rows)
    rate = n / lines if lines else 0.0
    share = lake.quarantine_warn_share
    reasons = Counter(r["reason"] for r in rows)
    preview = "\n\n".join([
        f"### Quarantine of landing day {day}: {n} of {lines} lines ({rate:.2%})",
        "#### Reasons\n\n" + md.table(["reason", "lines"], reasons.most_common()),
        "#### Lines (raw is PII-masked)\n\n"
        + md.table(["file", "line", "reason", "raw"], [(r["source_file"], r["line"], r["reason"], r["raw"]) for r in rows],
                   limit=15, width=100),
    ])
    check = dg.AssetCheckResult(
        check_name=QUARANTINE_RATE,
        passed=rate <= share,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{n} of {lines} lines quarantined ({rate:.2%}); warn above {share:.2%}",
        metadata={"quarantined": n, "lines_read": lines, "rate": round(rate, 6), "warn_above": share},
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "quarantined": n,
            "lines_read": lines,
            "rate": round(rate, 6),
            "reasons": len(reasons),
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[check],
    )
