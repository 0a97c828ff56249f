"""Audit events written by the lake itself (erasures, exports, subject access, reveals).

They take the same road as every producer's event: a contract-valid JSON line in a
landing file, ingested into the ledger, so they are chained, sealed, Merkle-covered and
checkpointed like any other. The file lives in the lake's own `_audit/` folder (never in
`landing/`), is written once under a fresh name, and its content hash makes the ingest
exactly-once: a retry after a crash re-ingests nothing.

No plain PII goes into these events: the subject is referred to by its `subject.id` only.
"""
from __future__ import annotations

import getpass
import os
import uuid
from datetime import datetime, timezone

import orjson

from .contract import check_event
from .errors import AuditlakeError
from .lake.store import Lake
from .masking import mask_text

AUDIT_DIR = "_audit"
SOURCE = "auditlake"
SYSTEM_TENANT = "auditlake"


def current_actor(actor: str | dict | None = None) -> dict:
    """The contract actor for an operation: an explicit id (a user), a full actor object,
    else $AUDITLAKE_ACTOR / $USER (a user), else the system."""
    if isinstance(actor, dict):
        return {k: v for k, v in actor.items() if k in ("type", "id", "role") and v is not None}
    if actor:
        return {"type": "user", "id": str(actor)}
    name = os.environ.get("AUDITLAKE_ACTOR") or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry in a container
            name = None
    return {"type": "user", "id": name} if name else {"type": "system", "id": "auditlake"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_event(
    event_type: str,
    data: dict,
    actor: str | dict | None = None,
    subject: str | dict | None = None,
    tenant_id: str = SYSTEM_TENANT,
    lawful_basis: str | None = "legal_obligation",
) -> dict:
    """A contract-valid event (EVENTS.md) or AuditlakeError if it is not one."""
    if isinstance(subject, str):
        subject = {"id": subject}
    if subject is not None:
        # Only the pseudonymous id and non-identifying attributes: never phone, e-mail, name.
        subject = {k: v for k, v in subject.items() if k in ("id", "country", "region", "timezone") and v is not None}
    ev = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": _now(),
        "event_type": event_type,
        "source": SOURCE,
        "tenant_id": tenant_id,
        "actor": current_actor(actor),
        "subject": subject,
        "lawful_basis": lawful_basis,
        # A reason is typed by a person ("DSAR from jane@example.com"): masked like any text
        # the lake keeps for people, as the record is seen by every reader.
        "data": {**data, "reason": mask_text(data["reason"])} if isinstance(data.get("reason"), str) else data,
    }
    reason = check_event(ev)
    if reason is not None:
        raise AuditlakeError(f"internal audit event {event_type} does not meet the contract: {reason}")
    return ev


def record_events(lake: Lake, events: list[dict]) -> list[str]:
    """Write the events as one landing file in `_audit/` and ingest it; their event ids."""
    from .ingest import ingest

    if not events:
        return []
    day = events[0]["occurred_at"][:10]
    rel = f"{AUDIT_DIR}/{day}/{events[0]['event_id']}.jsonl"
    body = b"".join(orjson.dumps(ev) + b"\n" for ev in events)
    lake.write_bytes(rel, body)
    report = ingest(lake, [lake.child(rel)], fresh=True)  # a new file of new events: see ingest()
    if report.quarantined:
        raise AuditlakeError(f"the audit event file {rel} was quarantined; see the quarantine table")
    return [ev["event_id"] for ev in events]


def record_audit_event(
    lake: Lake,
    event_type: str,
    data: dict,
    actor: str | dict | None = None,
    subject: str | dict | None = None,
    tenant_id: str = SYSTEM_TENANT,
) -> str:
    """Build a contract-valid event, ingest it into the ledger, return its event id."""
    ev = build_event(event_type, data, actor=actor, subject=subject, tenant_id=tenant_id)
    return record_events(lake, [ev])[0]
