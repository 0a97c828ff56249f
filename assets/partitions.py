"""Daily partitions of the landing zone, and which landing file belongs to which day.

The ledger is ONE append-only log; what is partitioned by day is the work that feeds it:
landing day D's files -> the ledger (ingest) and the per-day views of that work (quarantine).

A landing file's day is the first valid `YYYY-MM-DD` in its path relative to `landing/`
(a day folder `landing/2026-03-02/...`, a Hive-style `date=2026-03-02/`, or a file name
such as `calls-2026-03-02.jsonl`); a file with no date in its path belongs to the UTC date
of its modification time. The mapping is a pure function of the landing zone, so
re-materialising a day always picks the same files.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone

import dagster as dg

from auditlake import landing
from auditlake.lake.store import Lake

# The first day of the partitions (override for older landing zones).
PARTITIONS_START = os.environ.get("AUDITLAKE_PARTITIONS_START", "2024-01-01")

# end_offset=1: today's partition exists, so a file dropped today is ingested today.
DAILY = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1, timezone="UTC")

_DATE = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")


def day_from_name(name: str) -> str | None:
    for m in _DATE.finditer(name):
        try:
            date.fromisoformat(m.group(1))
        except ValueError:
            continue
        return m.group(1)
    return None


def _mtimes(lake: Lake) -> dict[str, int]:
    """path -> modification time (ns) of everything under landing/, in one listing."""
    import pyarrow.fs as pafs

    fs, root = lake.fs_path(lake.child("landing"))
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return {}
    return {i.path: i.mtime_ns or 0 for i in infos if i.type == pafs.FileType.File}


def landing_day(lf: landing.LandingFile, mtime_ns: int | None = None) -> str:
    day = day_from_name(lf.name)
    if day:
        return day
    if mtime_ns is None:
        mtime_ns = lf.fs.get_file_info(lf.path).mtime_ns or 0
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Dropped:
    """A landing file as the sensor and the day mapping see it."""

    file: landing.LandingFile
    mtime_ns: int
    day: str

    @property
    def name(self) -> str:
        return self.file.name


def landing_listing(lake: Lake) -> list[Dropped]:
    """Every landing file in the lake's landing/ (names relative to landing/), with its day."""
    files = landing.find(lake, None)
    mtimes = _mtimes(lake) if files else {}
    out = []
    for lf in files:
        m = mtimes.get(lf.path, 0)
        out.append(Dropped(lf, m, landing_day(lf, m)))
    return out


def files_by_day(lake: Lake) -> dict[str, list[landing.LandingFile]]:
    out: dict[str, list[landing.LandingFile]] = defaultdict(list)
    for d in landing_listing(lake):
        out[d.day].append(d.file)
    return dict(out)


def files_for_day(lake: Lake, day: str) -> list[landing.LandingFile]:
    return files_by_day(lake).get(day, [])


def file_uri(lf: landing.LandingFile) -> str:
    """The path `ingest` accepts for this file (S3 paths carry their scheme)."""
    from pyarrow.fs import LocalFileSystem

    return lf.path if isinstance(lf.fs, LocalFileSystem) else f"s3://{lf.path}"


def is_partition(day: str) -> bool:
    try:
        return DAILY.has_partition_key(day)
    except Exception:  # noqa: BLE001 - a malformed key is simply not a partition
        return False


def digest(values: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(values)).encode()).hexdigest()
