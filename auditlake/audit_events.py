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
import posixpath
import uuid
from datetime import datetime, timezone

import orjson

from .contract import check_event
from .errors import AuditlakeError
from .lake import tables
from .lake.store import AUDIT_DIR, Lake
from .masking import mask_text

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
    before = tables.version(lake, "ledger")
    lake.write_bytes(rel, body)  # whole or not at all: a crash may leave it for later (pending_files), never torn
    # A new file of new events (see ingest()), unless another ingest takes it meanwhile.
    report = ingest(lake, [lake.child(rel)], fresh_since=-1 if before is None else before)
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


def rotation_change(rotation: dict, keys) -> dict:
    """The config.changed data of a key rotation ({"chain": [old, new], "signing": [old, new]})."""
    (old_chain, new_chain), (old_sk, new_sk) = rotation["chain"], rotation["signing"]
    return {"old_value": f"chain key {old_chain}, signing key {old_sk}",
            "new_value": f"chain key {new_chain}, signing key {new_sk}",
            "public_key": keys.public_keys()[new_sk]}


def log_unlogged_rotation(lake: Lake, keys) -> None:
    """Key rotations whose process stopped before their audit event: logged now, late and
    without a change ticket (so SOX-CHANGE reports them), before anything else is written."""
    for rotation in keys.unlogged_rotations(abandoned=True):
        change = {"setting": "keys", "category": "security", **rotation_change(rotation, keys),
                  "note": "recorded late: the rotating process stopped before it logged the rotation"}
        record_audit_event(lake, "config.changed", change, actor={"type": "system", "id": SOURCE})
        keys.rotation_logged(rotation)


PENDING_DAYS = 7  # how far back the next ingest looks for audit files a crash left


def pending_files(lake: Lake) -> list[str]:
    """The lake's audit event files of the last PENDING_DAYS days that no ingest has logged
    (URIs): a crash after the erasure, hold or export an event records, before its ingest
    finished, left them. Every ingest that is not itself an audit event's ingests them, so
    the record catches up. Bounded by day, so a lake of years of exports is not listed and
    looked up on every ingest."""
    from datetime import timedelta

    import pyarrow.compute as pc
    import pyarrow.fs as pafs

    from .lake import tables

    since = datetime.now(timezone.utc) - timedelta(days=PENDING_DAYS)
    fs, root = lake.fs_path(lake.child(AUDIT_DIR))
    days = [i.path for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
            if i.type == pafs.FileType.Directory and posixpath.basename(i.path) >= since.strftime("%Y-%m-%d")]
    found = [i.path for d in days for i in fs.get_file_info(pafs.FileSelector(d))
             if i.type == pafs.FileType.File and i.path.endswith(".jsonl") and not posixpath.basename(i.path).startswith(".")]
    if not found:
        return []
    # An audit file is ingested alone, so its log row is named by its file name, and logged
    # after it was written (the filter skips the log's older files by their statistics).
    logged = set() if lake.delta("ingest_log") is None else set(
        tables.dataset(lake, "ingest_log").to_table(columns=["source_file"], filter=pc.field("completed_at") >= since)
        .column("source_file").to_pylist())
    return [lake.child(f"{AUDIT_DIR}/{p[len(root) + 1:]}") for p in sorted(found) if posixpath.basename(p) not in logged]
