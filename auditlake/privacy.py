"""Personal data in the ledger: reading it (decrypting), subject access (DSAR) and erasure
by crypto-shredding.

The ledger holds personal data only sealed under a per-subject data key (LEDGER.md 4).
Erasure destroys that key (`KeyStore.destroy_data_key`: SQLite secure_delete + VACUUM), so
every sealed copy, in the ledger, its history and every backup of the lake, becomes noise
while the records, hashes, Merkle tree and checkpoints stay intact and `verify` passes.
An erased subject's PII reads as ERASED everywhere; nothing caches data keys or plaintext
across calls, so no copy outlives the erasure.

Every disclosure (DSAR, reveal) and every erasure (or refusal) is itself an audit event in
the ledger (`audit_events`), recorded before any data is released.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pyarrow as pa

from .audit_events import record_audit_event
from .errors import AuditlakeError
from .keys import KeyStore
from .lake.meta import open_lake_keys
from .lake.store import Lake
from .masking import mask_json
from .ledger.seal import aad, ip_owner, unseal

ERASED = "[erased]"
UNAVAILABLE = "[undecryptable]"
SUBJECT_PII = ("phone", "email", "name")
PII_COLUMNS = ("subject_phone", "subject_email", "subject_name", "actor_ip")
# Ledger columns needed to decrypt a row's PII.
DECRYPT_COLUMNS = ["event_id", "subject_id", "subject_pii_sealed", "actor_type", "actor_id", "actor_ip_sealed", "pii_fields"]


# ============================================================================ decryption
def _open(key: bytes, sealed: str, associated: bytes) -> dict | None:
    """A sealed value's fields (ledger.seal.unseal, then JSON); None if it does not open."""
    if not isinstance(sealed, str):
        return None
    try:
        plain = unseal(key, sealed, associated)
        return None if plain is None else orjson.loads(plain)
    except ValueError:  # not base64, or not JSON (orjson's error is a ValueError)
        return None


def decrypt_columns(keys: KeyStore, cols: dict[str, list]) -> dict[str, list]:
    """PII columns (`subject_phone`, `subject_email`, `subject_name`, `actor_ip`) for ledger
    rows given as columns (DECRYPT_COLUMNS). A field the event did not carry is None; one
    of an erased person is ERASED; one that cannot be opened is UNAVAILABLE."""
    n = len(cols["event_id"])
    out: dict[str, list] = {c: [None] * n for c in PII_COLUMNS}
    fields_of = [set(filter(None, (f or "").split(","))) for f in cols["pii_fields"]]
    ip_owners = [ip_owner(t, a, s) for t, a, s in zip(cols["actor_type"], cols["actor_id"], cols["subject_id"])]
    people = set()
    for i in range(n):
        if fields_of[i] & {"subject.phone", "subject.email", "subject.name"} and cols["subject_id"][i]:
            people.add(cols["subject_id"][i])
        if "actor.ip" in fields_of[i] and ip_owners[i]:
            people.update(filter(None, (ip_owners[i], cols["actor_id"][i])))
    if not people:
        return out
    erased = keys.is_erased(people)
    ciphers = {sid: key for sid, key in keys.data_keys(people - erased, create=False).items()}
    for i in range(n):
        fields = fields_of[i]
        if not fields:
            continue
        eid = cols["event_id"][i]
        if fields & {"subject.phone", "subject.email", "subject.name"}:
            sid = cols["subject_id"][i]
            if sid in erased:
                plain: dict | str = ERASED
            else:
                key = ciphers.get(sid)
                sealed = cols["subject_pii_sealed"][i]
                opened = _open(key, sealed, aad(eid, "subject")) if key is not None and sealed else None
                plain = opened if isinstance(opened, dict) else UNAVAILABLE
            for f in SUBJECT_PII:
                if f"subject.{f}" in fields:
                    out[f"subject_{f}"][i] = plain if isinstance(plain, str) else plain.get(f)
        if "actor.ip" in fields:
            owner, aid = ip_owners[i], cols["actor_id"][i]
            if owner in erased:
                out["actor_ip"][i] = ERASED
            else:
                sealed = cols["actor_ip_sealed"][i]
                opened = None
                # The owner's key; then the actor's, which sealed every address before the
                # owner rule (lakes written by earlier versions).
                for who in dict.fromkeys((owner, aid)):
                    key = ciphers.get(who)
                    if opened is None and key is not None and sealed and who not in erased:
                        opened = _open(key, sealed, aad(eid, "actor"))
                out["actor_ip"][i] = opened.get("ip") if isinstance(opened, dict) else UNAVAILABLE
    return out


def erased_subjects(lake: Lake, keys: KeyStore | None = None) -> dict[str, str]:
    """Every erased person: {subject_id: erased_at} (for views that show ERASED)."""
    keys = keys or open_lake_keys(lake)
    con = keys._db()
    try:
        return dict(con.execute("SELECT subject_id, erased_at FROM erased").fetchall())
    finally:
        con.close()


def read_pii(lake: Lake, rows: list[dict], keys: KeyStore | None = None) -> list[dict]:
    """Copies of ledger rows (dicts with at least DECRYPT_COLUMNS) with `subject_phone`,
    `subject_email`, `subject_name` and `actor_ip` added: the plaintext, ERASED for an
    erased person, None where the event carried no such field. Not audited by itself:
    callers that show the result to a person use `reveal_subject` (or audit themselves)."""
    keys = keys or open_lake_keys(lake)
    cols = {c: [r.get(c) for r in rows] for c in DECRYPT_COLUMNS}
    pii = decrypt_columns(keys, cols)
    return [dict(r, **{c: pii[c][i] for c in PII_COLUMNS}) for i, r in enumerate(rows)]


# ============================================================================ subject reads
EVENT_COLUMNS = [
    "seq", "event_id", "event_type", "occurred_at", "ingested_at", "source", "tenant_id",
    "actor_type", "actor_id", "actor_role", "actor_ip_sealed", "subject_id", "subject_country",
    "subject_region", "subject_timezone", "subject_pii_sealed", "pii_fields", "lawful_basis", "data",
]


def subject_rows(lake: Lake, subject_id: str, include_actor: bool = True, keys: KeyStore | None = None) -> pa.Table:
    """Ledger rows about this person (as subject, or as actor whose IP was recorded), in seq
    order: their seqs and data files from the signed subject index (and a scan of the tail
    it does not cover yet), then those rows from those files only."""
    import pyarrow.compute as pc

    from .proofs import _ledger_schema, read_located, subject_locations

    dt = lake.latest("ledger")
    if dt is None:
        schema = _ledger_schema()
        return pa.table({c: pa.array([], schema.field(c).type) for c in EVENT_COLUMNS})
    keys = keys or open_lake_keys(lake)
    located = subject_locations(lake, subject_id, keys, dt)
    table = read_located(lake, located, EVENT_COLUMNS, dt).select(EVENT_COLUMNS)
    # Exactly the person's rows, whatever the index said.
    cond = pc.field("subject_id") == subject_id
    if include_actor:
        # Events whose address is this person's own (see ip_owner): they acted as a user.
        cond = cond | ((pc.field("actor_id") == subject_id) & pc.field("actor_ip_sealed").is_valid()
                       & ((pc.field("actor_type") == "user") | pc.field("subject_id").is_null()))
    return table.filter(cond).sort_by("seq")


def _iso(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(v)


OTHERS_DATA = "[another person's data]"


def events_with_pii(keys: KeyStore, table: pa.Table, person: str | None = None) -> list[dict]:
    """Ledger rows as contract-shaped events with their PII decrypted (or ERASED). Given
    `person` (a subject access or a reveal), only that person's own PII is decrypted: the
    subject's fields where they are the subject, the address where it is theirs (see
    ledger.seal.ip_owner); another person's (the customer an employee served, the
    employee who handled the person's call) reads OTHERS_DATA."""
    from .ledger.seal import ip_owner

    cols = {c: table.column(c).to_pylist() for c in table.column_names}
    if person is not None:
        others = [s is not None and s != person for s in cols["subject_id"]]
        ip_others = [ip is not None and ip_owner(t, a, s) != person for t, a, s, ip in
                     zip(cols["actor_type"], cols["actor_id"], cols["subject_id"], cols["actor_ip_sealed"])]
        cols["subject_pii_sealed"] = [None if o else v for o, v in zip(others, cols["subject_pii_sealed"])]
        cols["actor_ip_sealed"] = [None if o else v for o, v in zip(ip_others, cols["actor_ip_sealed"])]
    pii = decrypt_columns(keys, cols)
    if person is not None:  # what the event carried of another person: said, not shown
        carried = [set((f or "").split(",")) for f in cols["pii_fields"]]
        for field, withheld in (("subject_phone", others), ("subject_email", others), ("subject_name", others),
                                ("actor_ip", ip_others)):
            name = field.replace("_", ".", 1)
            pii[field] = [OTHERS_DATA if w and name in c else v for w, c, v in zip(withheld, carried, pii[field])]
    out = []
    for i in range(table.num_rows):
        subject = None
        if cols["subject_id"][i] is not None:
            subject = {
                "id": cols["subject_id"][i],
                "phone": pii["subject_phone"][i],
                "email": pii["subject_email"][i],
                "name": pii["subject_name"][i],
                "country": cols["subject_country"][i],
                "region": cols["subject_region"][i],
                "timezone": cols["subject_timezone"][i],
            }
        out.append({
            "seq": cols["seq"][i],
            "event_id": cols["event_id"][i],
            "occurred_at": _iso(cols["occurred_at"][i]),
            "ingested_at": _iso(cols["ingested_at"][i]),
            "event_type": cols["event_type"][i],
            "source": cols["source"][i],
            "tenant_id": cols["tenant_id"][i],
            "actor": {"type": cols["actor_type"][i], "id": cols["actor_id"][i], "role": cols["actor_role"][i],
                      "ip": pii["actor_ip"][i]},
            "subject": subject,
            "lawful_basis": cols["lawful_basis"][i],
            "data": _data_for(cols["data"][i], person is not None and others[i]),
        })
    return out


def _data_for(text: str | None, of_another: bool):
    """An event's `data` for a person's reveal or access request: as written, but on an
    event about another person with what mask_json masks (PII-named members, PII-shaped
    text) masked, as the explorer shows it: producers write what they like there."""
    data = orjson.loads(text) if text else {}
    return mask_json(data) if of_another else data


MIN_REASON = 10  # visible characters of a reveal's reason


def visible_length(text: str) -> int:
    """Characters that show: not spaces, controls or invisible format characters (ten
    zero-width spaces are no reason)."""
    import unicodedata

    return sum(1 for c in text if unicodedata.category(c)[0] not in "CZ")


def reveal_subject(lake: Lake, subject_id: str, reason: str, actor=None) -> list[dict]:
    """Every event of a subject with PII decrypted, for a person to see. Audited: a
    `data.exported` event (format `view`, the reason) is in the ledger before anything is
    decrypted. Returns contract-shaped events (PII ERASED for an erased subject)."""
    if visible_length(str(reason or "")) < MIN_REASON:
        raise AuditlakeError(f"revealing personal data needs a reason of at least {MIN_REASON} visible characters "
                             "(it is logged)")
    keys = open_lake_keys(lake)
    table = subject_rows(lake, subject_id, keys=keys)
    record_audit_event(
        lake, "data.exported",
        {"export_id": f"reveal-{uuid.uuid4()}", "rows": table.num_rows, "format": "view", "kind": "reveal",
         "reason": str(reason)},
        actor=actor, subject=subject_id,
    )
    return events_with_pii(keys, table, person=subject_id)


# ============================================================================ DSAR
CSV_COLUMNS = [
    "seq", "event_id", "occurred_at", "ingested_at", "event_type", "source", "tenant_id",
    "actor_type", "actor_id", "actor_role", "actor_ip", "subject_id", "subject_phone", "subject_email",
    "subject_name", "subject_country", "subject_region", "subject_timezone", "lawful_basis", "data",
]


def _flat(ev: dict) -> dict:
    s = ev["subject"] or {}
    a = ev["actor"]
    return {
        "seq": ev["seq"], "event_id": ev["event_id"], "occurred_at": ev["occurred_at"],
        "ingested_at": ev["ingested_at"], "event_type": ev["event_type"], "source": ev["source"],
        "tenant_id": ev["tenant_id"], "actor_type": a["type"], "actor_id": a["id"], "actor_role": a["role"],
        "actor_ip": a["ip"], "subject_id": s.get("id"), "subject_phone": s.get("phone"),
        "subject_email": s.get("email"), "subject_name": s.get("name"), "subject_country": s.get("country"),
        "subject_region": s.get("region"), "subject_timezone": s.get("timezone"),
        "lawful_basis": ev["lawful_basis"], "data": json.dumps(ev["data"], sort_keys=True, ensure_ascii=False),
    }


def dsar(lake: Lake, subject_id: str, out_dir: str, actor=None) -> dict:
    """Subject access: every event of the subject with its PII decrypted, as JSON and CSV in
    `out_dir`, recorded as a `data.exported` audit event before the files are written."""
    if not subject_id or not subject_id.strip():
        raise AuditlakeError("dsar needs a subject id")
    lake.refuse_output_inside(out_dir, "the subject access folder", holds_pii=True)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AuditlakeError(f"{out} is a file; choose a new folder for the subject access export")
    if out.exists() and any(out.iterdir()):
        raise AuditlakeError(f"{out} is not empty; choose a new folder for the subject access export")
    keys = open_lake_keys(lake)
    table = subject_rows(lake, subject_id, keys=keys)
    export_id = f"dsar-{uuid.uuid4()}"
    erased = bool(keys.is_erased([subject_id]))
    audit_id = record_audit_event(
        lake, "data.exported",
        {"export_id": export_id, "rows": table.num_rows, "format": "json,csv", "kind": "dsar",
         "subject_erased": erased},
        actor=actor, subject=subject_id,
    )
    events = events_with_pii(keys, table, person=subject_id)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc = {
        "subject_id": subject_id,
        "export_id": export_id,
        "generated_at": generated,
        "audit_event_id": audit_id,
        "erased": erased,
        "events": events,
        "quarantined": quarantined_lines(lake, subject_id),
    }
    # Written in a private folder beside `out` and moved into place whole: a stopped run
    # leaves no folder that looks finished, and the same folder can be tried again.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    def private(name: str):  # the person's data: 0600 files in a 0700 folder
        return os.fdopen(os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
                         newline="", encoding="utf-8")

    try:
        with private("subject_access.json") as f:
            f.write(json.dumps(doc, indent=2, ensure_ascii=False))
        with private("subject_access.csv") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            w.writeheader()
            for ev in events:
                w.writerow(_flat(ev))
        os.rename(staging, out)  # over an empty folder too
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise AuditlakeError(f"cannot write the subject access export to {out}: {exc.strerror or exc}") from exc
    return {"subject_id": subject_id, "export_id": export_id, "events": len(events), "erased": erased,
            "audit_event_id": audit_id, "files": [str(out / "subject_access.json"), str(out / "subject_access.csv")]}


def quarantined_lines(lake: Lake, subject_id: str) -> list[dict]:
    """Quarantined landing lines that name this subject id (as a JSON string, or as a word
    of a line that is no JSON): they are the person's data too, kept as the quarantine keeps
    them (PII masked)."""
    import re

    import pyarrow.compute as pc

    from .lake import tables

    dt = lake.latest("quarantine")
    if dt is None:
        return []
    t = tables.dataset(lake, "quarantine", dt).to_table(columns=["source_file", "line", "reason", "raw", "quarantined_at"])
    raw = t.column("raw")
    word = f"(^|[^A-Za-z0-9_.-]){re.escape(subject_id)}($|[^A-Za-z0-9_.-])"  # RE2: no look-arounds
    t = t.filter(pc.or_(pc.match_substring(raw, json.dumps(subject_id, ensure_ascii=False)),  # as orjson writes it
                        pc.match_substring_regex(raw, word)))
    return [{**r, "quarantined_at": _iso(r["quarantined_at"])} for r in t.sort_by([("source_file", "ascending"),
                                                                                   ("line", "ascending")]).to_pylist()]


# ============================================================================ erasure
def _legal_hold(lake: Lake, subject_id: str) -> str | None:
    """A description of the legal hold that blocks erasing this subject, or None."""
    try:
        from .lake import admin
    except ImportError as exc:  # the admin module ships with the storage work
        raise AuditlakeError(f"cannot check legal holds ({exc}); refusing to erase") from exc
    if not admin.legal_hold_active(lake, subject_id):
        return None
    try:
        holds = [h for h in admin.active_holds(lake)
                 if h.get("scope") == "lake" or (h.get("scope") == "subject" and h.get("subject_id") == subject_id)]
        parts = [f"{'lake-wide' if h.get('scope') == 'lake' else 'subject'} hold"
                 + (f" '{h['reason']}'" if h.get("reason") else "")
                 + (f" set {h['at'][:10]}" if h.get("at") else "") for h in holds]
        return "; ".join(parts) or "a legal hold is active"
    except Exception:  # noqa: BLE001 - the description is a courtesy; the hold itself is known
        return "a legal hold is active"


def erase(lake: Lake, subject_id: str, reason: str = "data subject request", actor=None) -> dict:
    """GDPR Art. 17 / CCPA deletion by crypto-shredding the subject's data key.

    Refused (AuditlakeError, and a `privacy.request_completed` event with outcome `denied`)
    while a legal hold covers the subject or the lake. Otherwise the key is destroyed and a
    `privacy.request_completed` event (outcome `fulfilled`, kind `erasure`) is recorded.
    Idempotent: erasing again records another event and finds no key."""
    if not subject_id or not subject_id.strip():
        raise AuditlakeError("erase needs a subject id")
    keys = open_lake_keys(lake)
    request_id = f"erase-{uuid.uuid4()}"
    hold = _legal_hold(lake, subject_id)
    if hold:
        detail = hold
        record_audit_event(
            lake, "privacy.request_completed",
            {"request_id": request_id, "outcome": "denied", "kind": "erasure",
             "denial_reason": f"legal hold: {detail}"},
            actor=actor, subject=subject_id,
        )
        raise AuditlakeError(
            f"cannot erase {subject_id}: it is under a legal hold ({detail}); "
            "lift the hold with `auditlake hold lift` first (the refusal was logged)"
        )
    before = erased_subjects(lake, keys).get(subject_id)
    erased_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    wrapped = _wrapped_key(keys, subject_id)
    existed = keys.destroy_data_key(subject_id, erased_at)
    # No key and no event (its erasure event is about to be the first): a request ahead of
    # the person's data, or a mistyped id, which leaves the right person unerased. Said, not refused.
    unknown = not existed and before is None and subject_rows(lake, subject_id, keys=keys).num_rows == 0
    if wrapped:
        shredded, left = _shred_copies(keys, subject_id, wrapped)
        keys.note_key_copies(subject_id, [path for path, _ in left])
        remaining = [why for _, why in left]
    else:  # erased before: the copies that erasure found, if they are still there
        shredded, remaining = [], keys.key_copies_left(subject_id)
    audit_id = record_audit_event(
        lake, "privacy.request_completed",
        {"request_id": request_id, "outcome": "fulfilled", "kind": "erasure", "method": "crypto-shredding",
         "reason": reason, "key_destroyed": existed, "erased_at": erased_at,
         "keystore_copies_shredded": len(shredded), "keystore_copies_remaining": len(remaining)},
        actor=actor, subject=subject_id,
    )
    from .catalog import refresh_erased

    return {"subject_id": subject_id, "request_id": request_id, "key_destroyed": existed,
            "erased_at": erased_at, "already_erased_at": before, "audit_event_id": audit_id,
            "in_ledger": not unknown,
            "copies_shredded": shredded, "copies_remaining": remaining, "catalog_note": refresh_erased(lake)}


def _wrapped_key(keys: KeyStore, subject_id: str) -> bytes | None:
    con = keys._db()
    try:
        row = con.execute("SELECT wrapped FROM datakeys WHERE subject_id = ?", (subject_id,)).fetchone()
    finally:
        con.close()
    return bytes(row[0]) if row else None


_DECOMPRESSED_MAX = 1 << 30  # a backup larger than this once inflated is reported, not read


def _key_forms(wrapped: bytes) -> list[bytes]:
    """The wrapped key as a copy may hold it: raw (SQLite files), hex (an SQL `.dump`),
    base64 (JSON exports)."""
    b64, url = base64.b64encode(wrapped), base64.urlsafe_b64encode(wrapped)
    return [wrapped, wrapped.hex().encode(), wrapped.hex().upper().encode(), b64.rstrip(b"="), url.rstrip(b"=")]


def _inflated(path: Path, head: bytes) -> bytes | None:
    """A compressed backup's content (gzip, bzip2, xz, zip members joined); None when it is
    none of those; ValueError when it cannot be read whole within _DECOMPRESSED_MAX."""
    import bz2
    import gzip
    import lzma
    import zipfile

    openers = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
    try:
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(path) as z:
                parts = [z.open(i).read(_DECOMPRESSED_MAX + 1) for i in z.infolist()]
            data = b"".join(parts)
        elif head.startswith(b"\x28\xb5\x2f\xfd"):  # zstd: no reader in the standard library
            raise ValueError("zstd")
        elif opener := next((o for magic, o in openers.items() if head.startswith(magic)), None):
            with opener(path) as f:
                data = f.read(_DECOMPRESSED_MAX + 1)
        else:
            return None
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise ValueError(str(exc)) from exc
    if len(data) > _DECOMPRESSED_MAX:
        raise ValueError("too large")
    return data


def _shred_copies(keys: KeyStore, subject_id: str, wrapped: bytes) -> tuple[list[str], list[tuple[Path, str]]]:
    """Find other copies of a destroyed wrapped key under the keystore folder (backups of
    datakeys.sqlite, dumps, compressed backups). SQLite copies are shredded like the live
    store (secure_delete + VACUUM); any other file still holding the key, in any form it
    searches for, and a compressed file it cannot read, is reported, never silently kept:
    returns (the files shredded, [(file, what it is)] of those left)."""
    import sqlite3

    forms = _key_forms(wrapped)
    shredded, remaining = [], []
    live = keys.dir / "datakeys.sqlite"
    for path in sorted(p for p in keys.dir.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not any(f in data for f in forms):
            try:
                inflated = _inflated(path, data[:8])
            except ValueError as exc:
                remaining.append((path, f"{path} (compressed, cannot be searched: {exc})"))
                continue
            if inflated is not None and any(f in inflated for f in forms):
                remaining.append((path, f"{path} (compressed)"))
            continue
        if path != live and data.startswith(b"SQLite format 3\x00"):
            try:
                con = sqlite3.connect(path, isolation_level=None)
                try:
                    con.execute("PRAGMA secure_delete=ON")
                    con.execute("PRAGMA journal_mode=DELETE")
                    con.execute("DELETE FROM datakeys WHERE subject_id = ?", (subject_id,))
                    con.execute("VACUUM")
                finally:
                    con.close()
            except sqlite3.Error:
                pass
            if not any(f in path.read_bytes() for f in forms):
                shredded.append(str(path))
                continue
        remaining.append((path, str(path)))
    return shredded, remaining


# ============================================================================ CLI
def cli_erase(args) -> int:
    from .cli import emit

    lake = Lake.open(args.lake)
    res = erase(lake, args.subject_id, reason=args.reason, actor=getattr(args, "actor", None))
    what = ("its data key was destroyed" if res["key_destroyed"]
            else f"it was already erased at {res['already_erased_at']}" if res["already_erased_at"]
            else "it had no data key: no event of it carried sealed personal data, and new ones will carry none")
    if res["copies_shredded"]:
        what += f", and {len(res['copies_shredded'])} keystore backup copy(ies) shredded"
    text = (f"erased {res['subject_id']}: {what}; its personal data now reads as {ERASED}. "
            f"Logged as {res['request_id']} (event {res['audit_event_id']}).")
    if res["catalog_note"]:
        text += f"\nNOTE: {res['catalog_note']}"
    if not res["in_ledger"]:
        text += (f"\nWARNING: no event of {res['subject_id']} is in the ledger: it is recorded as erased all the "
                 "same (its future events will carry no personal data); if the id is mistyped, the person is not erased")
    if res["copies_remaining"]:
        text += ("\nWARNING: copies of the destroyed key remain in: " + ", ".join(res["copies_remaining"])
                 + " (delete or re-create these backups)")
    emit(args, text, res)
    return 1 if res["copies_remaining"] else 0


def cli_dsar(args) -> int:
    from .cli import emit

    lake = Lake.open(args.lake)
    res = dsar(lake, args.subject_id, args.out, actor=getattr(args, "actor", None))
    note = " (the subject was erased: personal data reads as [erased])" if res["erased"] else ""
    emit(args, f"wrote {res['events']} event(s) of {res['subject_id']} to {', '.join(res['files'])}{note}; "
               f"logged as {res['export_id']}", res)
    return 0
