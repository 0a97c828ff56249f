"""`auditlake init`, `auditlake hold` and `auditlake repair`: preparing a lake for retention,
legal holds, and restoring tampered objects from their sealed versions.

Legal holds are recorded in the lake itself, as write-once signed records under `_holds/`
(a `set` starts a hold, a `lift` names the hold it ends; an unsigned or forged `lift` is
ignored, so a hold can only be lifted with the lake's signing key), and each as a
`config.changed` audit event in the ledger (setting `legal_hold`) that carries the signed
record, and is sealed: a deleted record still holds for erasure and is a RET-WORM finding.
A ledger `set` event without a record signed by the lake (written before events carried
one, or by a producer: any producer can write a `config.changed` line) still holds, as the
safe reading, until a signed lift names it; a ledger `lift` without one lifts nothing. On
S3 the held objects also carry an S3 legal hold, which blocks deleting them and their
expiry even after the retention period. `legal_hold_active(lake, subject_id)` is what erasure asks.
"""
from __future__ import annotations

import functools
import json
import os
import posixpath
import stat
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import AuditlakeError, ConflictError
from ..inputs import file_sha256
from ..keys import KeyStore, load_public_key
from ..ledger.canonical import canonical_json
from . import retention
from .store import HOLDS_DIR, Lake

HOLD_SETTING = "legal_hold"  # data.setting of the ledger's config.changed event of a hold record


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _actor() -> str:
    from ..audit_events import current_actor

    a = current_actor()
    return f"{a['type']}:{a['id']}"


# ----------------------------------------------------------------------------- write-once files
def _write_once(lake: Lake, rel: str, body: bytes) -> None:
    if lake.is_s3:
        from . import s3

        if not s3.put_if_absent(lake, rel, body):
            raise AuditlakeError(f"{rel} already exists")
        return
    path = os.path.join(lake.uri, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    with os.fdopen(fd, "wb") as f:
        f.write(body)


def _list(lake: Lake, rel_dir: str, folders: bool = False) -> list[str]:
    """The names of the files in a folder of the lake (and, with `folders`, its folders, as
    `name/`)."""
    fs, root = lake.filesystem()
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{rel_dir}", allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(i.path) + ("/" if i.type == pafs.FileType.Directory else "") for i in infos
                  if i.type == pafs.FileType.File or (folders and i.type == pafs.FileType.Directory))


# ----------------------------------------------------------------------------- legal holds
def _public_keys(lake: Lake) -> dict:
    """The lake's public keys (AuditlakeError without its keystore here: which holds are
    lifted cannot be told without them)."""
    from .meta import open_lake_keys

    return {kid: load_public_key(b) for kid, b in open_lake_keys(lake).public_keys().items()}


def _signed(rec, public: dict) -> bool:
    """Whether a hold record carries a valid signature of the lake."""
    if not isinstance(rec, dict):
        return False
    body = {k: v for k, v in rec.items() if k != "signature"}
    key = public.get(rec.get("key_id"))
    try:
        return key is not None and key.verify(bytes.fromhex(rec.get("signature", "")), canonical_json(body)) is None
    except Exception:  # noqa: BLE001
        return False


def _hold_files(lake: Lake, public: Callable[[], dict]) -> list[tuple[str, dict | None, bool]]:
    """Every file under `_holds/`: its name, its hold record (None when it is not a JSON
    object in a .json file) and whether the lake signed it (`public`: the lake's public
    keys, read when a record needs them)."""
    out = []
    for name in _list(lake, HOLDS_DIR, folders=True):  # a folder is no record either
        rec = None
        if name.endswith(".json"):
            try:
                rec = json.loads(lake.read_bytes(f"{HOLDS_DIR}/{name}") or b"{}")
            except ValueError:
                pass
        rec = rec if isinstance(rec, dict) else None
        out.append((name, rec, rec is not None and _signed(rec, public())))
    return out


def _hold_records(lake: Lake, public: Callable[[], dict]) -> list[tuple[dict, bool]]:
    """Every hold record with whether its signature verifies."""
    return [(rec, ok) for _, rec, ok in _hold_files(lake, public) if rec is not None]


def _ledger_holds(lake: Lake, public: Callable[[], dict], skip_unreadable: bool = False) -> list[tuple[dict, bool]]:
    """The hold records the ledger's audit events tell of, whatever `_holds/` still holds,
    with whether each is signed by the lake: the record an event carries, else (an event
    without one) a `set` built from its fields, unsigned. A ledger file that cannot be read
    is an error (erasure must not go ahead on a partial answer), or skipped for verify,
    which reports it anyway."""
    import pyarrow.compute as pc

    from ..audit_events import SOURCE
    from . import tables

    wanted = (pc.field("source") == SOURCE) & (pc.field("event_type") == "config.changed")
    # Only the files whose statistics allow such an event: opening the table and scanning
    # every file took most of a second at 1M.
    allowed = {"source": [SOURCE], "event_type": ["config.changed"]}
    paths = [d.rel.split("/", 2)[2] for _, _, data in retention.entries(lake, "ledger") for d in data
             if retention.stats_allow(d.action, allowed)]
    if not paths:
        return []

    def read(some: list[str]) -> list[str]:
        return tables.dataset(lake, "ledger", rel_paths=some).to_table(columns=["data"], filter=wanted).column("data").to_pylist()

    try:
        texts = read(paths)
    except (OSError, pa.ArrowException) as exc:
        if not skip_unreadable:
            raise AuditlakeError(f"cannot read the ledger to look for legal holds ({exc})") from exc
        texts = []
        for path in paths:  # file by file
            try:
                texts += read([path])
            except (OSError, pa.ArrowException):
                continue
    out = []
    for text in texts:
        data = json.loads(text)
        if data.get("setting") != HOLD_SETTING:
            continue
        if _signed(data.get("hold_record"), public()):
            out.append((data["hold_record"], True))
        elif data.get("new_value") == "on":
            out.append(({k: data.get(k) for k in ("hold_id", "scope", "subject_id", "at")}
                        | {"action": "set", "reason": "(known from the ledger only; not signed by the lake)"}, False))
    return out


def _lazy_public_keys(lake: Lake) -> Callable[[], dict]:
    """The lake's public keys, read once and only if a record is there to check (a writer
    asks for the holds on every S3 commit)."""
    return functools.cache(lambda: _public_keys(lake))


def _with_ledger(records: list[tuple[dict, bool]], told: list[tuple[dict, bool]]) -> list[tuple[dict, bool]]:
    """`_holds/`'s records and those the ledger tells of that `_holds/` no longer has."""
    kept = {rec.get("hold_id") for rec, ok in records if ok}
    return records + [({**h, "reason": "(its record under _holds/ is gone; known from the ledger)"} if ok else h, ok)
                      for h, ok in told if h.get("hold_id") not in kept]


def _in_force(records: list[tuple[dict, bool]]) -> list[dict]:
    """The holds in force: every `set` record (signed or not: the safe reading) not ended
    by a lift signed by the lake. A lift names the hold it ends, whenever either was
    written; a lift that names none (written before lifts named their hold) ends the holds
    of its scope set at or before it."""
    sets: dict[str, dict] = {}
    lifted: set[str] = set()
    scope_lifts: list[dict] = []
    for rec, ok in records:
        if rec.get("action") == "set":
            hold_id = str(rec.get("hold_id"))
            if hold_id not in sets or ok:  # a signed record of a hold wins over an unsigned telling
                sets[hold_id] = rec
        elif rec.get("action") == "lift" and ok:
            if rec.get("lifts") is not None:
                lifted.add(str(rec["lifts"]))
            else:
                scope_lifts.append(rec)

    def ended(h: dict) -> bool:
        return str(h.get("hold_id")) in lifted or any(
            (lf.get("scope"), lf.get("subject_id")) == (h.get("scope"), h.get("subject_id"))
            and str(lf.get("at") or "") >= str(h.get("at") or "") for lf in scope_lifts)

    return sorted((h for h in sets.values() if not ended(h)), key=lambda h: (str(h.get("at") or ""), str(h.get("hold_id"))))


def active_holds(lake: Lake, with_ledger: bool = True) -> list[dict]:
    """The holds in force (see _in_force). `with_ledger` also counts the records the
    ledger's audit events tell of that `_holds/` no longer has: deleting a record lifts
    nothing."""
    public = _lazy_public_keys(lake)
    records = _hold_records(lake, public)
    if with_ledger:
        records = _with_ledger(records, _ledger_holds(lake, public))
    return _in_force(records)


def legal_hold_active(lake: Lake, subject_id: str | None = None) -> bool:
    """True if a legal hold covers the whole lake, or (given a subject) that subject."""
    for h in active_holds(lake):
        if h.get("scope") == "lake":
            return True
        if subject_id is not None and h.get("scope") == "subject" and h.get("subject_id") == subject_id:
            return True
    return False


def _record_hold(lake: Lake, keys: KeyStore, action: str, subject_id: str | None, reason: str,
                 lifts: str | None = None) -> dict:
    from ..audit_events import build_event, record_events
    from ..masking import mask_text

    now = _now()
    rec = {
        "hold_id": uuid.uuid4().hex,
        "action": action,
        "scope": "subject" if subject_id else "lake",
        "subject_id": subject_id,
        "reason": mask_text(reason),  # the record is write-once: no personal data in it
        "at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": _actor(),
        "log_id": keys.log_id,
        "key_id": keys.signing_key_id,
    }
    if lifts is not None:
        rec["lifts"] = lifts
    rec["signature"] = keys.signing_key().sign(canonical_json(rec)).hex()
    # The audit event is built (and checked) before the record is written: a record the
    # ledger could not take would be a hold, or a lift, no audit event tells of.
    event = build_event("config.changed", {
        "setting": HOLD_SETTING, "category": "other", "old_value": "on" if action == "lift" else "off",
        "new_value": "on" if action == "set" else "off", **{k: rec[k] for k in ("hold_id", "scope", "subject_id", "at")},
        "hold_record": rec,
    }, subject=subject_id)
    name = _record_name(rec)
    _write_once(lake, f"{HOLDS_DIR}/{name}", json.dumps(rec, indent=1, sort_keys=True).encode())
    record_events(lake, [event])
    if lake.is_s3:  # write-once in fact: its versions cannot be deleted either (COMPLIANCE retention)
        from . import s3

        s3.lock_object(lake, f"{HOLDS_DIR}/{name}", years=retention.policy(lake)["years"])
    return rec


def _record_name(rec: dict) -> str | None:
    """A hold record's file name under _holds/: its time and the start of its id (None for
    a record told without a time of the form the lake writes)."""
    try:
        at = datetime.strptime(str(rec.get("at")), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return f"{at.strftime('%Y%m%dT%H%M%S%f')}-{str(rec.get('hold_id'))[:8]}.json"


def hold_problems(lake: Lake) -> list[dict]:
    """RET-WORM findings: hold records the ledger tells of that `_holds/` does not hold
    with a valid signature (a deleted record would otherwise lift its hold in silence),
    holds in force on an unsigned telling or record, named with how to end them, and any
    other file under `_holds/` that is no record the lake signed (a forged lift lifts
    nothing, but someone wrote it), but an unsigned hold that a signed lift has ended."""
    public = _lazy_public_keys(lake)
    files = _hold_files(lake, public)
    records = [(rec, ok) for _, rec, ok in files if rec is not None]
    kept = {rec.get("hold_id") for rec, ok in records if ok}
    told = [(h, ok) for h, ok in _ledger_holds(lake, public, skip_unreadable=True) if h.get("hold_id") not in kept]
    active = {h.get("hold_id") for h in _in_force(_with_ledger(records, told))}

    def where(h: dict) -> str:
        return f"{'subject ' + str(h.get('subject_id')) if h.get('scope') == 'subject' else 'the lake'} at {h.get('at')}"

    out = [{"kind": "RET-WORM", "table": HOLDS_DIR, "file": f"{HOLDS_DIR}/{name}" if (name := _record_name(h)) else None,
            "detail": f"the legal hold record {h['hold_id']} ({h['action']} on {where(h)}) that the ledger records is "
                      "missing from _holds/ or not signed by the lake"}
           for h, ok in told if ok or h.get("hold_id") in active]
    for name, rec, ok in files:
        if ok:
            continue
        if rec is None or rec.get("action") != "set":
            detail = "an entry under _holds/ that is no legal hold record signed by the lake"
        elif rec.get("hold_id") in active:
            detail = (f"the legal hold record {rec.get('hold_id')} (set on {where(rec)}) is not signed by the lake; it "
                      f"holds until `auditlake hold lift --hold-id {rec.get('hold_id')}` ends it")
        else:
            continue  # an unsigned hold a signed lift has ended: dealt with, and the lift says so
        out.append({"kind": "RET-WORM", "table": HOLDS_DIR, "file": f"{HOLDS_DIR}/{name}", "detail": detail})
    return out


def _committed_rels(lake: Lake) -> list[str]:
    return [o.rel for t in retention.table_names(lake) for o in retention.committed(lake, t)]


def subject_files(lake: Lake, subjects: set[str]) -> set[str]:
    """Ledger data files holding events of these subjects (relative to the lake root)."""
    import pyarrow.compute as pc

    dt = lake.delta("ledger")
    if dt is None or not subjects:
        return set()
    _, root = lake.filesystem()
    out = set()
    values = pa.array(sorted(subjects))
    for frag in dt.to_pyarrow_dataset().get_fragments():
        t = frag.to_table(columns=["subject_id"], filter=pc.field("subject_id").isin(values))
        if t.num_rows:
            p = frag.path  # absolute, or relative to the table (S3 datasets use a SubTreeFileSystem)
            out.add(posixpath.relpath(p, root) if p.startswith(root) else f"tables/ledger/{p.lstrip('/')}")
    return out


def _apply_s3_holds(lake: Lake) -> tuple[int, int, list[tuple[str, bool]]]:
    """Make the S3 legal holds of committed objects match the holds in force: (objects held,
    objects not, [(object, held now)] of those it switched)."""
    from . import s3

    holds = active_holds(lake)
    rels = _committed_rels(lake)
    if any(h["scope"] == "lake" for h in holds):
        want = set(rels)
    else:
        want = subject_files(lake, {h["subject_id"] for h in holds if h["scope"] == "subject"})

    def one(rel: str) -> tuple[bool, bool]:
        orig = s3.history(lake, rel).original
        if orig is None:
            return False, False
        on = rel in want
        info = s3.lock_info(lake, rel, orig.version_id)
        if info.legal_hold != on:
            s3.set_legal_hold(lake, rel, on, orig.version_id)
        return on, info.legal_hold != on

    done = s3._parallel(one, rels)
    on = sum(held for held, _ in done)
    return on, len(rels) - on, [(rel, held) for rel, (held, switched) in zip(rels, done) if switched]


def _check_subject(subject_id: str | None) -> None:
    if subject_id is not None and not subject_id.strip():
        raise AuditlakeError("--subject must not be empty (leave it out to hold the whole lake)")


def set_hold(lake: Lake, subject_id: str | None = None, reason: str = "") -> dict:
    from .meta import open_lake_keys

    _check_subject(subject_id)
    keys = open_lake_keys(lake)
    rec = _record_hold(lake, keys, "set", subject_id, reason)
    held = None
    if lake.is_s3:
        held, _, _ = _apply_s3_holds(lake)
    return {"hold": rec, "objects_held": held}


def lift_hold(lake: Lake, subject_id: str | None = None, reason: str = "", hold_id: str | None = None) -> dict:
    """End one hold: the one given by `hold_id`, else the only one on the scope (the lake,
    or the subject); several there must be told apart by id."""
    from .meta import open_lake_keys

    _check_subject(subject_id)
    keys = open_lake_keys(lake)
    what = f"subject {subject_id}" if subject_id else "the lake"
    scope = "subject" if subject_id else "lake"
    holds = active_holds(lake)
    if hold_id is not None:
        target = [h for h in holds if h.get("hold_id") == hold_id]
        if not target:
            raise AuditlakeError(f"no active legal hold has the id {hold_id}")
        if (target[0]["scope"], target[0].get("subject_id")) != (scope, subject_id):
            named = f"subject {target[0].get('subject_id')}" if target[0]["scope"] == "subject" else "the whole lake"
            raise AuditlakeError(f"the hold {hold_id} is on {named}, not on {what}: give --subject to match it (or leave "
                                 "it out for a lake-wide hold)")
    else:
        target = [h for h in holds if h["scope"] == scope and h.get("subject_id") == subject_id]
        if not target:
            raise AuditlakeError(f"no legal hold is active on {what}")
        if len(target) > 1:
            ids = ", ".join(str(h.get("hold_id")) for h in target)
            raise AuditlakeError(f"{len(target)} legal holds are active on {what} ({ids}); name one with --hold-id")
    hold = target[0]
    rec = _record_hold(lake, keys, "lift", hold.get("subject_id") if hold["scope"] == "subject" else None, reason,
                       lifts=str(hold.get("hold_id")))
    held = None
    if lake.is_s3:
        held, _, _ = _apply_s3_holds(lake)
    return {"hold": rec, "objects_held": held}


# ----------------------------------------------------------------------------- init
def init_lake(lake: Lake, retention_years: int | None = None, cold_after_days: int | None = None) -> dict:
    """Prepare a lake: S3 bucket with versioning, Object Lock and lifecycle; the lake's
    identity, keystore and retention policy; and retention on anything already committed.
    What is left out stays as the lake has it (a new lake: RET-WORM's 7 years, a cold tier
    after 90 days), so running it again never asks to shorten a raised period."""
    from ..commands import publish_public_keys
    from .meta import open_lake_keys

    if retention_years is not None and retention_years < retention.MIN_YEARS:
        raise AuditlakeError(f"--retention-years must be at least {retention.MIN_YEARS} (RET-WORM)")
    if cold_after_days is not None and cold_after_days < 30:  # the policy file would say what S3 does not do
        raise AuditlakeError("--cold-after-days must be at least 30 (S3 moves nothing to STANDARD_IA sooner)")
    doc: dict = {"lake": lake.uri}
    if lake.is_s3:
        from . import s3

        state = s3.ensure_bucket(lake)
        doc["bucket"] = {"name": lake.bucket, "created": state.created, "versioning": state.versioning,
                         "object_lock": state.object_lock}
    else:
        os.makedirs(lake.uri, exist_ok=True)
    keys = open_lake_keys(lake, create=True)
    now = retention.policy(lake, refresh=True)
    if retention_years is None:
        retention_years = max(now["configured_years"], retention.MIN_YEARS) if now["stated"] else retention.MIN_YEARS
    archive_after_days = None if cold_after_days is not None or not now["stated"] else now["archive_after_days"]
    if cold_after_days is None:
        cold_after_days = now["cold_after_days"] if now["stated"] else retention.DEFAULT_COLD_AFTER_DAYS
    pol = retention.set_policy(lake, retention_years, cold_after_days, archive_after_days)
    publish_public_keys(lake, keys)
    doc["log_id"] = keys.log_id
    doc["retention"] = pol
    if lake.is_s3:
        from . import s3

        rules = s3.lifecycle_rules(lake, pol["cold_after_days"], pol["archive_after_days"],
                                   retention_days=retention_years * 366 + 1)
        s3.put_lifecycle(lake, rules)
        doc["lifecycle"] = rules
    doc["sealed_now"] = retention.lock_new(lake, keys)
    return doc


# ----------------------------------------------------------------------------- repair
def _append_incidents(lake: Lake, rows: list[dict]) -> None:
    from . import tables

    if not rows:
        return
    t = pa.Table.from_pylist(rows, schema=tables.INCIDENTS)
    for attempt in range(40):
        try:
            tables.append(lake, "incidents", t, tables.version(lake, "incidents"), {"auditlake_incidents": str(len(rows))})
            return
        except ConflictError:
            time.sleep(0.05 * (attempt + 1))
    raise AuditlakeError("could not record the repair incidents after repeated concurrent commits; run repair again")


def _incident(kind: str, obj: str | None, detail: str) -> dict:
    return {"incident_id": uuid.uuid4().hex, "at": _now(), "kind": kind, "object": obj, "detail": detail}


def _repair_s3(lake: Lake) -> tuple[list[dict], list[str]]:
    from . import s3

    incidents: list[dict] = []
    failed: list[str] = []
    for table in retention.table_names(lake):
        hist = s3.histories(lake, f"tables/{table}/")
        committed = {o.rel: o for o in retention.committed(lake, table)}
        for k, h in sorted(hist.items()):
            rel = s3.rel_of(lake, k)
            if h.intact or h.original is None or rel.endswith("/_last_checkpoint"):
                continue
            info = s3.lock_info(lake, rel, h.original.version_id)
            if not info.mode and rel not in committed:
                # Never sealed nor committed: a writer's leftover, not a ledger object; a log
                # entry of that kind (hidden under a marker) goes whole, or writers would
                # take it for a hidden commit.
                if retention.LOG_RE.match(posixpath.basename(rel)) and h.latest is not None and h.latest.delete_marker:
                    retention._remove(lake, rel, versions=True)
                    incidents.append(_incident("log_entry_removed", rel, "removed: a log entry nobody sealed, "
                                                                        "hidden under a delete marker"))
                continue
            _restore_original(lake, k, h, incidents, failed)
    # Legal hold records are written once each: what is on top of one (a delete marker that
    # would lift the hold for every reader) goes. Only records the lake signed come back: a
    # planted entry an operator deleted stays deleted.
    public = _lazy_public_keys(lake)
    for k, h in sorted(s3.histories(lake, f"{HOLDS_DIR}/").items()):
        if not h.intact and h.original is not None and _signed_version(lake, s3.rel_of(lake, k), h.original.version_id, public):
            _restore_original(lake, k, h, incidents, failed)
    return incidents, failed


def _signed_version(lake: Lake, rel: str, version_id: str, public: Callable[[], dict]) -> bool:
    """Whether one version of a file under `_holds/` is a hold record the lake signed."""
    from . import s3

    try:
        rec = json.loads(s3.read_version(lake, rel, version_id) or b"{}")
    except ValueError:
        return False
    return isinstance(rec, dict) and _signed(rec, public())


def _relock_s3(lake: Lake) -> list[dict]:
    """The committed objects' locks as RET-WORM needs them (after the forged commits are
    gone: locking one would keep it for years)."""
    from . import s3

    years = retention.policy(lake, refresh=True)["years"]
    incidents: list[dict] = []
    for table in retention.table_names(lake):
        hist = s3.histories(lake, f"tables/{table}/")
        committed = {o.rel: o for o in retention.committed(lake, table)}
        locked = [(rel, h) for k, h in hist.items() if (rel := s3.rel_of(lake, k)) in committed and h.original]
        incidents += [i for i in s3._parallel(lambda item: _extend_lock(lake, *item, committed, years), locked) if i]
    return incidents


def _extend_lock(lake: Lake, rel: str, h, committed: dict, years: int) -> dict | None:
    """Lock a committed object whose COMPLIANCE lock is shorter than RET-WORM needs (set
    under a shorter policy: such a lock can be lengthened, never shortened), or is not there
    or in GOVERNANCE mode (removed or weakened with the bypass permission, in the moment
    between a commit and its lock: lock_new locks only what came after its mark)."""
    from . import s3

    info = s3.lock_info(lake, rel, h.original.version_id)
    need = retention.required_until(h.original.last_modified.astimezone(timezone.utc).date(), committed[rel].dates, years)
    if info.mode == s3.COMPLIANCE and info.until is not None and info.until.date() >= need:
        return None
    s3.lock_object(lake, rel, until=need)
    if info.mode == s3.COMPLIANCE:
        return _incident("lock_extended", rel, f"retention extended from {info.until.date()} to {need}")
    was = f"{info.mode} until {info.until.date()}" if info.mode and info.until else "no retention"
    return _incident("lock_restored", rel, f"COMPLIANCE retention until {need} put back (it had {was})")


def _restore_original(lake: Lake, k: str, h, incidents: list[dict], failed: list[str]) -> None:
    """Make an object's original version its current one again: remove what was put on top,
    or, where that cannot be removed (locked by whoever wrote it), copy the original over it."""
    from . import s3

    rel = s3.rel_of(lake, k)
    later = h.newer_than_original()
    errors = [(v, s3.delete_version(lake, k, v.version_id)) for v in reversed(later)]
    bad = [(v, e) for v, e in errors if e]
    what = f"{sum(1 for v in later if not v.delete_marker)} later version(s), {sum(1 for v in later if v.delete_marker)} delete marker(s)"
    if not bad:
        incidents.append(_incident("object_restored", rel,
                                   f"restored the sealed version {h.original.version_id} by removing {what}"))
        return
    try:
        s3.copy_version(lake, k, h.original.version_id)
        incidents.append(_incident("object_restored", rel,
                                   f"copied the sealed version {h.original.version_id} over {what}; "
                                   f"{len(bad)} could not be removed ({bad[0][1]})"))
    except AuditlakeError as exc:
        failed.append(f"{rel}: {exc}")
        incidents.append(_incident("restore_failed", rel, str(exc)))


def _unhide_s3_meta(lake: Lake) -> list[dict]:
    """auditlake.json under a delete marker: the lake never deletes its identity, so every
    marker on it goes and its newest version reads again."""
    from . import s3
    from .meta import META

    h = s3.history(lake, META)
    if not h.versions or not h.markers:
        return []
    for m in reversed(h.markers):
        if err := s3.delete_version(lake, h.key, m.version_id):
            raise AuditlakeError(f"cannot remove the delete marker on {META} ({err}): restore it by hand")
    return [_incident("object_restored", META, f"removed {len(h.markers)} delete marker(s): its version "
                                               f"{h.versions[-1].version_id} reads again")]


def _repair_local(lake: Lake) -> tuple[list[dict], list[str]]:
    """A local lake keeps no second copy of its files: repair restores the read-only lock of
    objects whose content still matches the sealed manifest, and reports the ones it cannot
    restore (changed or deleted: restore them from a backup, then run repair again)."""
    incidents: list[dict] = []
    failed: list[str] = []
    sealed = {}
    for m in retention._manifests(lake).values():
        if m:
            sealed.update(m.get("objects", {}))
    for rel, entry in sorted(sealed.items()):
        path = os.path.join(lake.uri, rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            failed.append(f"{rel}: deleted (no sealed copy in a local lake)")
            incidents.append(_incident("restore_failed", rel, "sealed object was deleted; a local lake keeps no copy"))
            continue
        same = st.st_size == entry.get("size") and file_sha256(path) == entry.get("sha256")
        if not same:
            failed.append(f"{rel}: content differs from the sealed version (no sealed copy in a local lake)")
            incidents.append(_incident("restore_failed", rel, "object differs from its sealed version; a local lake keeps no copy"))
            continue
        if st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            incidents.append(_incident("lock_restored", rel, "the object was writable; made read-only again"))
    return incidents + _restore_hold_records(lake), failed


def _restore_hold_records(lake: Lake) -> list[dict]:
    """A local lake's hold records deleted from `_holds/`: each is in the ledger too, signed,
    in the audit event that set or lifted it, and is written back from there."""
    incidents = []
    for rec, ok in _ledger_holds(lake, _lazy_public_keys(lake), skip_unreadable=True):
        name = _record_name(rec)
        if not ok or name is None or os.path.lexists(os.path.join(lake.uri, HOLDS_DIR, name)):
            continue
        _write_once(lake, f"{HOLDS_DIR}/{name}", json.dumps(rec, indent=1, sort_keys=True).encode())
        incidents.append(_incident("hold_record_restored", f"{HOLDS_DIR}/{name}",
                                   "written back from the ledger's audit event, which carries it signed"))
    return incidents


def _remove_forged_checkpoints(lake: Lake, failed: list[str]) -> list[dict]:
    """Remove the Delta checkpoints (and `_last_checkpoint` hints) that disagree with their
    table's log: readers then rebuild the table from the log entries. A local one a manifest
    seals (an older auditlake sealed whatever delta-rs wrote) is left and reported."""
    sealed = retention.sealed_rels(lake)
    incidents = []
    for table in retention.table_names(lake):
        problems = retention.checkpoint_problems(lake, table, retention.list_log(lake, table), cache=False)
        for rel, why in sorted(problems.items()):
            if rel in sealed:
                failed.append(f"{rel}: {why}; it is sealed, so it stays (restore the table from a backup)")
                incidents.append(_incident("restore_failed", rel, why))
                continue
            retention._remove(lake, rel)
            incidents.append(_incident("checkpoint_removed", rel, f"removed: {why}"))
    return incidents


def _remove_forged_log_entries(lake: Lake, keys, failed: list[str]) -> list[dict]:
    """Remove each table's newest log entries that are no commit the lake makes (writers
    refuse to seal them, so they are not locked; see retention.forged_why): the table is
    again what the lake committed, and its writers carry on. One that is sealed stays and
    is reported."""
    sealed = retention.sealed_rels(lake)
    incidents = []
    for table in retention.table_names(lake):
        listing = retention.list_log(lake, table)
        locked_through = int(retention._watermark(lake, table, keys).get("locked_through", -1)) if lake.is_s3 else -1
        added: set[str] = set()
        for version in sorted(listing.entries, reverse=True):
            log, *adds = retention.read_entry(lake, table, version, cache=False)
            why = retention.forged_why(lake, keys, log)
            if not why:
                break
            if log.rel in sealed or version <= locked_through:
                failed.append(f"{log.rel}: {why}; it is sealed, so it stays (restore the table from a backup)")
                incidents.append(_incident("restore_failed", log.rel, why))
                break
            if locked := retention.foreign_lock(lake, log.rel):
                failed.append(f"{log.rel}: {why}, and it {locked}")
                incidents.append(_incident("restore_failed", log.rel, f"{why}; {locked}"))
                break
            retention._remove(lake, log.rel, versions=True)
            incidents.append(_incident("log_entry_removed", log.rel, f"removed: {why}"))
            added.update(a.rel for a in adds)
        if added:  # the files they added, unless a commit of the lake adds them too
            now = retention.list_log(lake, table)
            kept = retention._data_files(lake, table, now, now.latest, cache=False) if now.latest >= 0 else set()
            for rel in sorted(added - kept - sealed):
                retention._remove(lake, rel)
    return incidents


def repair(lake: Lake) -> dict:
    """Verify, restore what can be restored, record each repair in the incidents table,
    seal anything committed but not sealed, and verify again."""
    from ..verify import verify
    from .meta import open_lake_keys

    before = verify(lake, update_trust=False)
    if before.ok:
        return {"ok": True, "repaired": [], "failed": [], "findings_before": 0, "findings_after": 0, "incidents": 0}
    unhidden = _unhide_s3_meta(lake) if lake.is_s3 else []
    keys = open_lake_keys(lake)  # a local lake's lost identity file stops here: it keeps no copy
    incidents, failed = _repair_s3(lake) if lake.is_s3 else _repair_local(lake)
    incidents = unhidden + incidents
    incidents += _remove_forged_checkpoints(lake, failed)
    incidents += _remove_forged_log_entries(lake, keys, failed)
    if lake.is_s3:
        incidents += _relock_s3(lake)
    sealed = retention.lock_new(lake, keys)
    if sealed:
        incidents.append(_incident("object_locked", None, f"put {sealed} committed object(s) under retention that were not"))
    if lake.is_s3:
        # The objects' S3 legal holds as the holds in force say (a restored hold record, an
        # object whose legal hold was switched off, objects committed while a record was hidden).
        incidents += [_incident("legal_hold_restored" if on else "legal_hold_lifted", rel,
                                "its S3 legal hold put back as the holds in force say" if on else
                                "its S3 legal hold removed: no hold in force covers it")
                      for rel, on in _apply_s3_holds(lake)[2]]
    _append_incidents(lake, incidents)
    retention.lock_new(lake, keys)  # the incidents commit itself (held as the holds in force say)
    after = verify(lake)
    return {
        "ok": after.ok,
        "repaired": [i["object"] or i["detail"] for i in incidents if i["kind"] != "restore_failed"],
        "failed": failed,
        "findings_before": len(before.findings),
        "findings_after": len(after.findings),
        "remaining": [f"{f.kind}: {f.detail} [{f.table} {f.file or ''}]".strip() for f in after.findings],
        "incidents": len(incidents),
    }


# ----------------------------------------------------------------------------- commands
def cli_init(args) -> int:
    from ..cli import emit

    lake = Lake.open(args.lake)
    doc = init_lake(lake, args.retention_years, args.cold_after_days)
    pol = doc["retention"]
    lines = [f"lake {lake.uri} ready: log {doc['log_id']}, COMPLIANCE retention {pol['years']} years from each event"]
    if lake.is_s3:
        b = doc["bucket"]
        lines.append(f"bucket {b['name']} ({'created' if b['created'] else 'existing'}): versioning {b['versioning']}, "
                     f"Object Lock {b['object_lock']}; lifecycle: STANDARD_IA after {max(30, pol['cold_after_days'])} days, "
                     f"GLACIER_IR after {max(max(30, pol['cold_after_days']) + 30, pol['archive_after_days'])} days, "
                     "no expiry of retained objects")
    else:
        lines.append("local lake: committed files are made read-only and listed in signed manifests under _retention/")
    if pol["years"] < retention.MIN_YEARS:
        lines.append(f"warning: RET-WORM needs at least {retention.MIN_YEARS} years; verify will report this lake")
    if doc["sealed_now"]:
        lines.append(f"put {doc['sealed_now']} existing object(s) under retention")
    emit(args, "\n".join(lines), doc)
    return 0


def cli_hold(args) -> int:
    from ..cli import emit

    from .meta import read_meta

    lake = Lake.open(args.lake)
    subject = getattr(args, "subject", None)
    if args.action == "status":
        read_meta(lake)  # a mistyped path holds no lake, not "no hold"
        holds = active_holds(lake)
        human = "\n".join(
            f"hold {h.get('hold_id')} on {'subject ' + str(h['subject_id']) if h['scope'] == 'subject' else 'the whole lake'}"
            f" since {h['at']} by {h.get('actor')}: {h.get('reason') or '(no reason given)'}" for h in holds
        ) or "no legal hold is active"
        emit(args, human, {"holds": holds, "active": bool(holds)})
        return 0
    if args.action == "set":
        doc = set_hold(lake, subject, args.reason)
        what = f"subject {subject}" if subject else "the whole lake"
        extra = f"; S3 legal hold on {doc['objects_held']} object(s)" if doc["objects_held"] is not None else ""
        emit(args, f"legal hold {doc['hold']['hold_id']} set on {what}{extra}", doc)
        return 0
    doc = lift_hold(lake, subject, args.reason, getattr(args, "hold_id", None))
    what = f"subject {doc['hold']['subject_id']}" if doc["hold"]["subject_id"] else "the whole lake"
    extra = f"; {doc['objects_held']} object(s) stay held by other holds" if doc["objects_held"] else ""
    emit(args, f"legal hold lifted on {what}{extra}", doc)
    return 0


def cli_repair(args) -> int:
    from ..cli import emit
    from ..masking import escape_controls

    lake = Lake.open(args.lake)
    doc = repair(lake)
    if doc["findings_before"] == 0:
        emit(args, "intact: nothing to repair", doc)
        return 0
    lines = [f"repaired {len(doc['repaired'])} object(s); {doc['incidents']} incident(s) recorded in the incidents table"]
    # Names of files planted in the lake are anyone's: escaped, one line each.
    lines += [escape_controls(f"cannot restore {f}") for f in doc["failed"]]
    lines += [escape_controls(f"FINDING {r}") for r in doc.get("remaining", [])]
    lines.append("verify: intact" if doc["ok"] else f"verify: {doc['findings_after']} finding(s) remain")
    emit(args, "\n".join(lines), doc)
    return 0 if doc["ok"] else 1
