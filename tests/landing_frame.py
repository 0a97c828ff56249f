"""Test helper: landing files -> the rule engine's input frame.

A small stand-in for the real ingest: it reads landing files in sorted name order
(JSONL, JSONL.gz, Parquet), rejects lines that break EVENTS.md and replays (the first
copy wins), and projects the accepted events onto the ledger columns the rule engine
reads (docs/LEDGER.md section 2), with the phone replaced by a keyed blind index.
"""
from __future__ import annotations

import gzip
import hashlib
import hmac
import re
from datetime import datetime, timezone
from pathlib import Path

import orjson
import polars as pl
import pyarrow.parquet as pq

TEST_BIDX_KEY = b"auditlake-tests-blind-index-key"
MAX_LINE_BYTES = 64 * 1024

REQUIRED_DATA = {
    "consent.granted": ("consent_id", "method", "seller"),
    "consent.revoked": ("method",),
    "dnc.added": ("list",),
    "dnc.removed": ("list",),
    "call.started": ("call_id", "direction", "purpose", "campaign_id", "publisher_id"),
    "call.completed": ("call_id", "duration_s", "disposition"),
    "bid.placed": ("bid_id", "call_id", "buyer_id", "amount", "currency"),
    "lead.sold": ("call_id", "buyer_id", "price", "currency"),
    "optout.received": ("via",),
    "payout.recorded": ("payout_id", "call_id", "publisher_id", "amount", "currency"),
    "payout.approved": ("payout_id",),
    "config.changed": ("setting", "category", "old_value", "new_value"),
    "privacy.request_received": ("request_id", "regulation", "kind"),
    "privacy.request_extended": ("request_id",),
    "privacy.request_completed": ("request_id", "outcome"),
    "transfer.cross_border": ("destination_country", "recipient", "mechanism"),
    "user.login": ("method",),
    "user.login_failed": ("method", "reason"),
    "access.role_changed": ("target_user", "old_role", "new_role"),
    "data.exported": ("export_id", "rows", "format"),
}
SUBJECT_REQUIRED = {"optout.received", "privacy.request_received", "transfer.cross_border"}
PHONE_REQUIRED = {"consent.granted", "consent.revoked", "dnc.added", "dnc.removed", "call.started"}

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

COLUMNS = {
    "seq": pl.Int64, "event_id": pl.Utf8, "event_type": pl.Utf8,
    "occurred_at": pl.Datetime("us", "UTC"), "tenant_id": pl.Utf8, "actor_id": pl.Utf8,
    "subject_id": pl.Utf8, "subject_country": pl.Utf8, "subject_region": pl.Utf8,
    "subject_timezone": pl.Utf8, "phone_bidx": pl.Utf8, "pii_fields": pl.Utf8,
    "lawful_basis": pl.Utf8, "data": pl.Utf8,
}


def parse_instant(text: str) -> datetime | None:
    """RFC 3339 -> aware UTC datetime (microseconds), or None if not RFC 3339."""
    m = _RFC3339.match(text)
    if not m:
        return None
    day, clock, frac, offset = m.groups()
    frac = (frac or ".0")[:7]  # the ledger keeps microseconds
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{day}T{clock}{frac}{offset}").astimezone(timezone.utc)
    except ValueError:
        return None


def _str(value) -> bool:
    return isinstance(value, str) and value != ""


def _optional_str(value) -> bool:
    return value is None or isinstance(value, str)


def valid_event(obj) -> bool:
    """True when `obj` meets the envelope and catalog rules of EVENTS.md."""
    if not isinstance(obj, dict):
        return False
    if not (isinstance(obj.get("event_id"), str) and _UUID.match(obj["event_id"])):
        return False
    if not (isinstance(obj.get("occurred_at"), str) and parse_instant(obj["occurred_at"])):
        return False
    kind = obj.get("event_type")
    if kind not in REQUIRED_DATA:
        return False
    if not (_str(obj.get("source")) and _str(obj.get("tenant_id"))):
        return False
    actor = obj.get("actor")
    if not (isinstance(actor, dict) and actor.get("type") in ("user", "service", "system")
            and _str(actor.get("id")) and _optional_str(actor.get("ip"))
            and _optional_str(actor.get("role"))):
        return False
    subject = obj.get("subject")
    if subject is None:
        if kind in SUBJECT_REQUIRED or kind in PHONE_REQUIRED:
            return False
    else:
        if not (isinstance(subject, dict) and _str(subject.get("id"))):
            return False
        if not all(_optional_str(subject.get(f))
                   for f in ("phone", "email", "name", "country", "region", "timezone")):
            return False
        if kind in PHONE_REQUIRED and not _str(subject.get("phone")):
            return False
    if not _optional_str(obj.get("lawful_basis")):
        return False
    data = obj.get("data")
    if not isinstance(data, dict):
        return False
    return all(data.get(f) is not None for f in REQUIRED_DATA[kind])


def _jsonl_rows(raw: bytes) -> list:
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows = []
    for line in lines:
        if len(line) > MAX_LINE_BYTES:
            rows.append(None)
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            rows.append(None)
    return rows


def _parquet_rows(path: Path) -> list:
    rows = []
    for row in pq.read_table(path).to_pylist():
        try:
            for col in ("actor", "subject", "data"):
                if isinstance(row.get(col), str):
                    row[col] = orjson.loads(row[col])
        except orjson.JSONDecodeError:
            row = None
        rows.append(row)
    return rows


def read_landing(landing: str | Path, rejects: list | None = None) -> tuple[list[dict], dict[str, dict]]:
    """(accepted events in ledger order, {file name: {"lines", "bad"}}); rejected lines'
    (file name, 1-based line) are appended to `rejects` when given."""
    seen: set[str] = set()
    accepted: list[dict] = []
    quarantine: dict[str, dict] = {}
    for path in sorted(Path(landing).iterdir(), key=lambda p: p.name):
        if path.name.endswith(".parquet"):
            rows = _parquet_rows(path)
        elif path.name.endswith(".jsonl.gz"):
            rows = _jsonl_rows(gzip.decompress(path.read_bytes()))
        elif path.name.endswith(".jsonl"):
            rows = _jsonl_rows(path.read_bytes())
        else:
            continue
        bad = 0
        for number, row in enumerate(rows, 1):
            if not valid_event(row) or row["event_id"] in seen:
                bad += 1
                if rejects is not None:
                    rejects.append((path.name, number))
                continue
            seen.add(row["event_id"])
            accepted.append(row)
        quarantine[path.name] = {"lines": len(rows), "bad": bad}
    return accepted, quarantine


def blind_index(phone: str, key: bytes = TEST_BIDX_KEY) -> str:
    return "b1." + hmac.new(key, phone.encode(), hashlib.sha256).hexdigest()


def _present(value) -> bool:
    return value is not None and value != ""


def frame(events: list[dict], key: bytes = TEST_BIDX_KEY) -> pl.DataFrame:
    """The ledger projection the rule engine reads, one row per event, seq in list order."""
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for seq, e in enumerate(events):
        actor, subject = e.get("actor") or {}, e.get("subject") or {}
        occurred = e["occurred_at"]
        occurred = parse_instant(occurred) if isinstance(occurred, str) else occurred
        phone = subject.get("phone")
        pii = [name for name, value in (("actor.ip", actor.get("ip")), ("subject.email", subject.get("email")),
                                        ("subject.name", subject.get("name")), ("subject.phone", phone))
               if _present(value)]
        row = {
            "seq": seq, "event_id": e["event_id"], "event_type": e["event_type"],
            "occurred_at": occurred, "tenant_id": e.get("tenant_id"), "actor_id": actor.get("id"),
            "subject_id": subject.get("id"), "subject_country": subject.get("country"),
            "subject_region": subject.get("region"), "subject_timezone": subject.get("timezone"),
            "phone_bidx": blind_index(phone, key) if _present(phone) else None,
            "pii_fields": ",".join(pii), "lawful_basis": e.get("lawful_basis"),
            "data": orjson.dumps(e.get("data") or {}, option=orjson.OPT_SORT_KEYS).decode(),
        }
        for c in COLUMNS:
            cols[c].append(row[c])
    return pl.DataFrame(cols, schema=COLUMNS)
