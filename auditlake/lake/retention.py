"""Retention lock (rule RET-WORM).

Local lake: every committed object under tables/ is made read-only and listed, with its
size, SHA-256 and retain-until date, in a signed, read-only manifest under _retention/.
(S3 lakes use Object Lock; see s3.py.)
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import uuid
from datetime import date, datetime, timedelta, timezone

from ..keys import KeyStore, load_public_key
from ..ledger.canonical import canonical_json
from .store import Lake

RETENTION_YEARS = int(os.environ.get("AUDITLAKE_RETENTION_YEARS", "7"))
MANIFEST_DIR = "_retention"


def retain_until(rel: str, now: datetime) -> str:
    """now + the retention period, or later for a partition dated in the future:
    at least occurred_at + RETENTION_YEARS for every event in the object."""
    base = now.date()
    for part in rel.split("/"):
        if part.startswith("event_date="):
            try:
                base = max(base, date.fromisoformat(part.split("=", 1)[1]) + timedelta(days=1))
            except ValueError:
                pass
    try:
        until = base.replace(year=base.year + RETENTION_YEARS)
    except ValueError:  # 29 February
        until = base.replace(year=base.year + RETENTION_YEARS, day=28)
    return until.isoformat()


def _objects(lake: Lake) -> dict[str, int]:
    """Relative path -> size of every object under tables/."""
    import pyarrow.fs as pafs

    fs, root = lake.filesystem()
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/tables", recursive=True))
    except FileNotFoundError:
        return {}
    # _last_checkpoint is delta-rs's rewritable hint to its newest checkpoint, not data.
    return {
        posixpath.relpath(i.path, root): i.size
        for i in infos
        if i.type == pafs.FileType.File and not i.path.endswith("/_last_checkpoint")
    }


def _manifests(lake: Lake) -> dict[str, dict]:
    d = os.path.join(lake.uri, MANIFEST_DIR)
    out: dict[str, dict] = {}
    if not os.path.isdir(d):
        return out
    for name in sorted(os.listdir(d)):
        if name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                out[name] = json.load(f)
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def seal_local(lake: Lake, keys: KeyStore) -> int:
    """Make every not-yet-sealed object read-only and record it in a signed manifest."""
    sealed = {rel for m in _manifests(lake).values() for rel in m["objects"]}
    new = sorted(set(_objects(lake)) - sealed)
    if not new:
        return 0
    now = datetime.now(timezone.utc)
    objects = {}
    for rel in new:
        path = os.path.join(lake.uri, rel)
        os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        objects[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path), "retain_until": retain_until(rel, now)}
    body = {"log_id": keys.log_id, "sealed_at": now.isoformat(), "key_id": keys.signing_key_id, "objects": objects}
    body["signature"] = keys.signing_key().sign(canonical_json(body)).hex()
    os.makedirs(os.path.join(lake.uri, MANIFEST_DIR), exist_ok=True)
    path = os.path.join(lake.uri, MANIFEST_DIR, f"{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json")
    with open(path, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return len(objects)


def lock_new(lake: Lake, keys: KeyStore) -> int:
    """Put every object committed since the last call under retention."""
    if lake.is_s3:
        from .s3 import lock_new_objects

        return lock_new_objects(lake, keys)
    return seal_local(lake, keys)


def check(lake: Lake, keys: KeyStore) -> list[dict]:
    """RET-WORM findings: objects not sealed, writable, changed, or manifests forged."""
    if lake.is_s3:
        from .s3 import check_object_lock

        return check_object_lock(lake, keys)
    findings = []
    public = {kid: load_public_key(b) for kid, b in keys.public_keys().items()}
    sealed: dict[str, dict] = {}
    for name, m in _manifests(lake).items():
        sig = m.pop("signature", "")
        key = public.get(m.get("key_id"))
        try:
            ok = key is not None and (key.verify(bytes.fromhex(sig), canonical_json(m)) is None)
        except Exception:
            ok = False
        if not ok:
            findings.append({"kind": "RET-WORM", "table": MANIFEST_DIR, "file": name, "detail": "retention manifest signature does not verify"})
            continue
        sealed.update(m["objects"])
    objects = _objects(lake)
    for rel, size in sorted(objects.items()):
        table = rel.split("/")[1] if rel.count("/") >= 1 else rel
        path = os.path.join(lake.uri, rel)
        entry = sealed.get(rel)
        if entry is None:
            findings.append({"kind": "RET-WORM", "table": table, "file": rel, "detail": "object is not under retention (not in a sealed manifest)"})
            continue
        if os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            findings.append({"kind": "RET-WORM", "table": table, "file": rel, "detail": "object is writable (retention lock lifted)"})
        if size != entry["size"] or _sha256(path) != entry["sha256"]:
            findings.append({"kind": "RET-WORM", "table": table, "file": rel, "detail": "object differs from its sealed version"})
    for rel in sorted(set(sealed) - set(objects)):
        findings.append({"kind": "RET-WORM", "table": rel.split("/")[1] if "/" in rel else rel, "file": rel, "detail": "sealed object was deleted"})
    return findings
