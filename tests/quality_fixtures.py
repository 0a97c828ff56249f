"""Test helper for the quality tests: a small clean lake built through the real ingest.

Clean means every Great Expectations suite passes: valid IANA time zones, known event
types, and quarantined lines whose raw text the ingest masked.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl

from auditlake.ingest import ingest
from auditlake.lake import tables
from auditlake.lake.store import Lake

ZONES = ["America/Chicago", "America/New_York", "Europe/Berlin", None]


def clean_events(n: int = 40) -> list[dict]:
    events = []
    for i in range(n):
        kind = ("call.started", "consent.granted", "user.login", "payout.recorded", "payout.approved")[i % 5]
        data = {
            "call.started": {"call_id": f"call-{i}", "direction": "outbound", "purpose": "telemarketing",
                             "campaign_id": f"camp-{i % 3}", "publisher_id": f"pub-{i % 2}"},
            "consent.granted": {"consent_id": f"c-{i}", "method": "web_form", "seller": "acme"},
            "user.login": {"method": "password"},
            "payout.recorded": {"payout_id": f"p-{i}", "call_id": f"call-{i - 3}", "publisher_id": "pub-1",
                                "amount": "12.50", "currency": "USD"},
            "payout.approved": {"payout_id": f"p-{i - 1}"},
        }[kind]
        subject = None
        if kind in ("call.started", "consent.granted"):
            subject = {"id": f"subj-{i % 7}", "phone": f"+1312555{i % 10000:04d}", "email": f"p{i}@example.com",
                       "name": f"Person {i}", "country": "US", "region": "IL", "timezone": ZONES[i % len(ZONES)]}
        events.append({
            "event_id": str(uuid.UUID(int=i + 1, version=4)),
            "occurred_at": f"2026-03-{1 + i % 20:02d}T{(i * 7) % 24:02d}:{i % 60:02d}:22.123Z",
            "event_type": kind,
            "source": "routing-engine",
            "tenant_id": f"tenant-{'ab'[i % 2]}",
            "actor": {"type": "user", "id": "u-1" if kind == "payout.approved" and i % 10 == 4 else f"u-{i % 4}",
                      "ip": f"10.1.{i % 250}.{i % 200}"},
            "subject": subject,
            "lawful_basis": "consent",
            "data": data,
        })
    return events


def write_jsonl(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for item in lines:
            f.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
    return path


def build_clean_lake(root: Path, extra: list | None = None) -> Lake:
    """A lake with ~40 clean events and 2 quarantined lines (one carrying PII, which the
    ingest masks), plus `extra` landing lines."""
    bad_with_pii = {"event_id": str(uuid.uuid4()), "event_type": "call.teleported", "occurred_at": "2026-03-02T10:00:00Z",
                    "source": "x", "tenant_id": "t", "actor": {"type": "user", "id": "u"},
                    "subject": {"id": "s", "email": "leak@example.com", "phone": "+13125550199"}, "data": {}}
    lines = clean_events() + ["this is not json at all", bad_with_pii] + (extra or [])
    landing = write_jsonl(root / "landing" / "events-2026-03-01.jsonl", lines)
    lake = Lake.open(str(root / "lake"))
    ingest(lake, [str(landing.parent)])
    return lake


def ledger_frame(lake: Lake) -> pl.DataFrame:
    """The ledger's rows (without leaf) as the suites read them."""
    cols = [c for c in tables.LEDGER.names if c != "leaf"]
    return pl.from_arrow(lake.delta("ledger").to_pyarrow_dataset().to_table(columns=cols)).sort("seq")


def quarantine_frame(lake: Lake) -> pl.DataFrame:
    return pl.from_arrow(lake.delta("quarantine").to_pyarrow_dataset().to_table())
